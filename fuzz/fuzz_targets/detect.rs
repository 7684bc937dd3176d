//! The proxy's protocol detection (`transport/detect.rs`) on any first bytes, arriving in
//! any chunks, from a client that then closes or stalls. Checks that detection keeps
//! exactly the bytes the client sent, in order and never more than its limit, that its
//! answer is the one the kept bytes give, and that a decision on a prefix stands for the
//! whole input.
#![no_main]

use bytes::BytesMut;
use conduit_fuzz::{assert_kept_prefix, block_on, Shaped};
use conduit_proxy::{
    config::Config,
    transport::detect::{self, classify, Detection, Prefix, Protocol},
};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Shaped::new(data) else {
        return;
    };
    let limit = [Config::default().max_header_bytes, 16, 64, 512][input.choice()];
    let mut client = input.client();
    let stalls = client.stalls();
    let mut buf = BytesMut::new();
    let detection = block_on(detect::detect(
        &mut client,
        &mut buf,
        Duration::from_secs(10),
        limit,
    ))
    .expect("an in-memory client never fails");

    let sent = input.payload;
    assert_kept_prefix(&buf, sent, limit);

    let kept = classify(&buf);
    match (detection, kept) {
        (Detection::Detected(p), Prefix::Known(q)) => assert_eq!(p, q),
        (Detection::Detected(p), Prefix::NeedMore { http1 }) => {
            assert_eq!(buf.len(), limit, "undecided bytes below the limit");
            assert_eq!(
                p,
                if http1 {
                    Protocol::Http1
                } else {
                    Protocol::Opaque
                }
            );
        }
        (_, Prefix::Known(p)) => panic!("{detection:?}, but the kept bytes say {p:?}"),
        (Detection::Closed, _) => {
            assert!(!stalls, "a stalling client never closes");
            assert_eq!(buf.len(), sent.len(), "closed before all bytes were read");
        }
        (Detection::TimedOutSilent, _) => assert!(buf.is_empty() && stalls),
        (Detection::TimedOutHttp1, Prefix::NeedMore { http1 }) => {
            assert!(http1 && stalls && buf.len() == sent.len())
        }
        (Detection::TimedOutPartial, Prefix::NeedMore { http1 }) => {
            assert!(!http1 && stalls && !buf.is_empty() && buf.len() == sent.len())
        }
    }
    // Bytes arrive in arbitrary segments: what a prefix decided, the whole input says too.
    if let Prefix::Known(p) = kept {
        assert_eq!(
            classify(sent),
            Prefix::Known(p),
            "a longer input contradicts its prefix"
        );
    }
});
