//! The proxy's check of a connection's first HTTP/1 request head (`http/head.rs`) on any
//! bytes, read in any chunks from a client that then closes or stalls. Checks that the
//! read keeps only what was sent and never more than the limit, that an accepted head is
//! one the check accepts, that every refusal is a client error the proxy can write as a
//! response, and that a head accepted or refused on a prefix stays so for the whole input.
#![no_main]

use bytes::BytesMut;
use conduit_fuzz::{assert_kept_prefix, block_on, Shaped};
use conduit_proxy::{
    config::Config,
    errors::ProxyError,
    http::head::{self, HeadError},
};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio::time::Instant;

/// A refusal is answered, before hyper runs, with one of these statuses.
const REFUSALS: [u16; 4] = [400, 408, 414, 431];

fn check_refusal(e: &ProxyError) {
    let status = e.status().as_u16();
    assert!(REFUSALS.contains(&status), "{e}: status {status}");
    let bytes = e.to_http1_bytes();
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut rsp = httparse::Response::new(&mut headers);
    let parsed = rsp.parse(&bytes);
    assert!(
        matches!(parsed, Ok(httparse::Status::Complete(_))) && rsp.code == Some(status),
        "the response to {e} is not a complete HTTP/1 response: {parsed:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Shaped::new(data) else {
        return;
    };
    let limit = [Config::default().max_header_bytes, 32, 256, 4096][input.choice()];
    let sent = input.payload;

    let mut client = input.client();
    let mut buf = BytesMut::new();
    let timeout = Duration::from_secs(10);
    let read = block_on(head::read(
        &mut client,
        &mut buf,
        limit,
        Instant::now() + timeout,
        timeout,
    ));
    assert_kept_prefix(&buf, sent, limit);
    match &read {
        Ok(()) => assert!(matches!(head::check(&buf, limit), Ok(true))),
        Err(HeadError::Refused(e)) => check_refusal(e),
        Err(HeadError::Closed) => assert_eq!(buf.len(), sent.len()),
        Err(HeadError::Io(e)) => panic!("an in-memory client never fails: {e}"),
    }

    // A decided head does not change its mind when more bytes follow it.
    let cut = usize::from(input.shape >> 5) * sent.len() / 7;
    let prefix = head::check(&sent[..cut], limit);
    let whole = head::check(sent, limit);
    if let Err(e) = &whole {
        check_refusal(e);
    }
    match prefix {
        Ok(true) => assert!(matches!(whole, Ok(true)), "accepted prefix, then {whole:?}"),
        Err(e) => {
            check_refusal(&e);
            assert!(whole.is_err(), "refused prefix ({e}), then {whole:?}");
        }
        Ok(false) => {}
    }
});
