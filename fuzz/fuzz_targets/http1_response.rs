//! The proxy's reading of an upstream's HTTP/1 response (`http/h1.rs`): the head, then
//! the body in its framing (length, chunked, trailers), on any bytes. The first byte picks
//! the request method (`GET` or `HEAD`) and where the bytes are split in two. Checks that
//! nothing panics, that what is read is the same however the bytes arrive (whole, or in
//! two parts), that a body never has more data than was sent, and that a body that ended
//! by its length has exactly that length.
#![no_main]

use conduit_proxy::http::h1::{read_buffered, Buffered};
use http::{header, Method};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, bytes)) = data.split_first() else {
        return;
    };
    let method = if shape & 1 == 0 { Method::GET } else { Method::HEAD };
    let cut = usize::from(shape >> 1) * bytes.len() / 127;
    let whole = read_buffered(&[bytes], &method);
    let split = read_buffered(&[&bytes[..cut], &bytes[cut..]], &method);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "split at {cut}"),
        (Err(_), Err(_)) => {}
        _ => panic!("whole: {whole:?}, split at {cut}: {split:?}"),
    }
    let Ok(Buffered {
        status: Some(_),
        headers,
        data,
        done,
        trailers,
    }) = whole
    else {
        return;
    };
    assert!(data.len() <= bytes.len());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if done && !chunked && method != Method::HEAD && !data.is_empty() {
        let length: usize = headers[header::CONTENT_LENGTH]
            .to_str()
            .ok()
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .expect("a body that ended by its length has a valid Content-Length");
        assert_eq!(data.len(), length);
    }
    if trailers.is_some() {
        assert!(chunked, "trailers without chunked framing");
    }
});
