//! The first HTTP/1 request head of a connection, read and checked before hyper sees it,
//! so that a malformed, oversized or stalled head is answered by the proxy with a
//! `conduit-proxy-error` header rather than hyper's bare status line. Later heads on a
//! keep-alive connection are checked by hyper itself (same limits, no header).

use super::headers::ends_chunked;
use crate::errors::ProxyError;
use bytes::BytesMut;
use std::time::Duration;
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    time::Instant,
};

const MAX_HEADERS: usize = 128;

/// Whether `buf` holds a complete, acceptable request head (`Ok(true)`), needs more bytes
/// (`Ok(false)`), or must be refused.
pub fn check(buf: &[u8], max_bytes: usize) -> Result<bool, ProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > max_bytes => {
            Err(ProxyError::HeadersTooLarge { limit: max_bytes })
        }
        Ok(httparse::Status::Complete(_)) => check_framing(&req).map(|()| true),
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => {
            if buf.contains(&b'\n') {
                Err(ProxyError::HeadersTooLarge { limit: max_bytes })
            } else {
                Err(ProxyError::UriTooLong { limit: max_bytes })
            }
        }
        Ok(httparse::Status::Partial) => Ok(false),
        Err(httparse::Error::TooManyHeaders) => {
            Err(ProxyError::HeadersTooLarge { limit: max_bytes })
        }
        Err(e) => Err(ProxyError::MalformedRequest {
            reason: e.to_string(),
        }),
    }
}

/// The message-framing rules of RFC 9112 §6 that hyper also enforces.
fn check_framing(req: &httparse::Request<'_, '_>) -> Result<(), ProxyError> {
    let malformed = |reason: &str| {
        Err(ProxyError::MalformedRequest {
            reason: reason.into(),
        })
    };
    let mut content_length: Option<&[u8]> = None;
    let mut chunked_last = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            if h.value.is_empty() || !h.value.iter().all(u8::is_ascii_digit) {
                return malformed("content-length is not a number");
            }
            if content_length.is_some_and(|cl| cl != h.value) {
                return malformed("conflicting content-length headers");
            }
            content_length = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if req.version == Some(0) {
                return malformed("transfer-encoding is not allowed in HTTP/1.0");
            }
            chunked_last = Some(ends_chunked(h.value));
        }
    }
    if chunked_last == Some(false) {
        return malformed("transfer-encoding must end with chunked");
    }
    Ok(())
}

/// Reads into `buf` until it holds a complete request head; `deadline` bounds the wait.
pub async fn read<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    max_bytes: usize,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), HeadError> {
    loop {
        if check(buf, max_bytes)? {
            return Ok(());
        }
        let room = max_bytes.saturating_sub(buf.len()).max(1);
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().max(512).min(room));
        }
        let mut limited = (&mut *io).take(room as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(buf)).await {
            Ok(Ok(0)) => return Err(HeadError::Closed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(HeadError::Io(e)),
            Err(_elapsed) => return Err(ProxyError::RequestHeadTimeout { timeout }.into()),
        }
    }
}

/// Why a first request head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The client should be told, with a response.
    #[error(transparent)]
    Refused(#[from] ProxyError),
    /// The client went away mid-head.
    #[error("client closed the connection in the middle of a request head")]
    Closed,
    /// The socket failed.
    #[error("reading the request head failed: {0}")]
    Io(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(head: &[u8]) -> Result<bool, u16> {
        check(head, 1024).map_err(|e| e.status().as_u16())
    }

    #[test]
    fn accepts_complete_heads_and_waits_for_partial_ones() {
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(true));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(false));
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok(true)
        );
    }

    #[test]
    fn refuses_malformed_heads_with_400() {
        for head in [
            &b"GET / HTTP/1.1\r\nbad header\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        ] {
            assert_eq!(status(head), Err(400), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn refuses_oversized_heads() {
        let mut long_header = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long_header.resize(1024, b'a');
        assert_eq!(status(&long_header), Err(431));
        let mut long_uri = b"GET /".to_vec();
        long_uri.resize(1024, b'a');
        assert_eq!(status(&long_uri), Err(414));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(check(&many, 64 * 1024).unwrap_err().status().as_u16(), 431);
    }

    proptest::proptest! {
        /// Whatever a client sends, the check answers and never panics.
        #[test]
        fn any_bytes_get_an_answer(head in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = check(&head, 256);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_head_times_out() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let mut buf = BytesMut::new();
        let timeout = Duration::from_secs(10);
        let err = read(
            &mut server,
            &mut buf,
            1024,
            Instant::now() + timeout,
            timeout,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                HeadError::Refused(ProxyError::RequestHeadTimeout { .. })
            ),
            "{err}"
        );
    }
}
