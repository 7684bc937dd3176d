//! Protocol detection: reads the first bytes of a connection and decides between HTTP/1,
//! HTTP/2, TLS and opaque TCP. The bytes read are kept so they can be replayed to whatever
//! serves the connection. Knows nothing about routing, forwarding or metrics.

use bytes::BytesMut;
use std::{io, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    time::Instant,
};

/// What a connection speaks, as far as the proxy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
    Tls,
    Opaque,
}

impl Protocol {
    /// The name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1",
            Protocol::Http2 => "http/2",
            Protocol::Tls => "tls",
            Protocol::Opaque => "opaque",
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a prefix of a connection's first bytes says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    /// The protocol is decided.
    Known(Protocol),
    /// More bytes are needed; `http1` says whether they so far start an HTTP/1 request line.
    NeedMore { http1: bool },
}

/// Classifies the first bytes of a connection. Pure: the same bytes always give the same
/// answer, and a longer prefix never contradicts a decided shorter one.
pub fn classify(buf: &[u8]) -> Prefix {
    if buf.is_empty() {
        return Prefix::NeedMore { http1: false };
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Prefix::Known(Protocol::Http2)
        } else {
            // "PRI " is also a valid HTTP/1 method; the preface decides.
            Prefix::NeedMore { http1: false }
        };
    }
    if buf[0] == 0x16 {
        return classify_tls(buf);
    }
    match http1_request_line(buf) {
        LineMatch::Yes => Prefix::Known(Protocol::Http1),
        LineMatch::Maybe => Prefix::NeedMore { http1: true },
        LineMatch::No => Prefix::Known(Protocol::Opaque),
    }
}

/// A TLS record header (type 22 handshake, version 3.x) followed by a ClientHello.
fn classify_tls(buf: &[u8]) -> Prefix {
    let version_ok = buf.get(1).is_none_or(|b| *b == 3) && buf.get(2).is_none_or(|b| *b <= 4);
    let hello_ok = buf.get(5).is_none_or(|b| *b == 1);
    match (version_ok && hello_ok, buf.len() >= 6) {
        (true, true) => Prefix::Known(Protocol::Tls),
        (true, false) => Prefix::NeedMore { http1: false },
        (false, _) => Prefix::Known(Protocol::Opaque),
    }
}

enum LineMatch {
    Yes,
    Maybe,
    No,
}

/// The longest method token taken for HTTP/1 (the registered ones are far shorter).
const MAX_METHOD: usize = 32;

/// Matches `method SP request-target SP HTTP/1.x CRLF` (RFC 9112 §3) on a prefix.
fn http1_request_line(buf: &[u8]) -> LineMatch {
    let mut i = 0;
    while i < buf.len() && is_tchar(buf[i]) {
        i += 1;
    }
    // Checked before the end of the bytes is: a long token must be refused whether or not
    // the space after it has arrived, or the answer would depend on how reads were cut.
    if i > MAX_METHOD {
        return LineMatch::No;
    }
    if i == buf.len() {
        return LineMatch::Maybe;
    }
    if i == 0 || buf[i] != b' ' {
        return LineMatch::No;
    }
    i += 1;
    let target_start = i;
    while i < buf.len() && buf[i] > b' ' && buf[i] != 0x7f {
        i += 1;
    }
    if i == buf.len() {
        return LineMatch::Maybe;
    }
    if i == target_start || buf[i] != b' ' {
        return LineMatch::No;
    }
    let rest = &buf[i + 1..];
    const VERSION: &[u8] = b"HTTP/1.";
    let n = rest.len().min(VERSION.len());
    if rest[..n] != VERSION[..n] {
        return LineMatch::No;
    }
    match rest.get(VERSION.len()) {
        None => LineMatch::Maybe,
        Some(d) if d.is_ascii_digit() => match rest.get(VERSION.len() + 1) {
            None => LineMatch::Maybe,
            Some(b'\r') | Some(b'\n') => LineMatch::Yes,
            Some(_) => LineMatch::No,
        },
        Some(_) => LineMatch::No,
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How detection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    /// The bytes read name a protocol.
    Detected(Protocol),
    /// The client sent nothing within the timeout: maybe the server speaks first.
    TimedOutSilent,
    /// The client sent a partial HTTP/1 request line and then stalled.
    TimedOutHttp1,
    /// The client sent bytes that decide nothing, then stalled.
    TimedOutPartial,
    /// The client closed its side before the protocol was clear.
    Closed,
}

/// Reads from `io` into `buf` until the protocol is known, the client stops sending for
/// `timeout`, or `max_bytes` have been read (then a started HTTP/1 request line counts as
/// HTTP/1, so that the oversized head can be refused properly, and anything else as opaque).
pub async fn detect<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    timeout: Duration,
    max_bytes: usize,
) -> io::Result<Detection> {
    let deadline = Instant::now() + timeout;
    loop {
        let http1 = match classify(buf) {
            Prefix::Known(p) => return Ok(Detection::Detected(p)),
            Prefix::NeedMore { http1 } => http1,
        };
        if buf.len() >= max_bytes {
            let p = if http1 {
                Protocol::Http1
            } else {
                Protocol::Opaque
            };
            return Ok(Detection::Detected(p));
        }
        let room = max_bytes - buf.len();
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().max(512).min(room));
        }
        let mut limited = (&mut *io).take(room as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(buf)).await {
            Ok(Ok(0)) => return Ok(Detection::Closed),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_elapsed) if buf.is_empty() => return Ok(Detection::TimedOutSilent),
            Err(_elapsed) if http1 => return Ok(Detection::TimedOutHttp1),
            Err(_elapsed) => return Ok(Detection::TimedOutPartial),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Protocol::*;

    fn known(p: Protocol) -> Prefix {
        Prefix::Known(p)
    }

    #[test]
    fn http2_preface_needs_all_24_bytes() {
        assert_eq!(classify(H2_PREFACE), known(Http2));
        for n in 1..H2_PREFACE.len() {
            assert_eq!(
                classify(&H2_PREFACE[..n]),
                Prefix::NeedMore { http1: false },
                "{n}"
            );
        }
        let mut with_frames = H2_PREFACE.to_vec();
        with_frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(classify(&with_frames), known(Http2));
    }

    #[test]
    fn http1_request_lines() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /api/v1/x?y=z HTTP/1.0\r\nHost: a\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"M-SEARCH * HTTP/1.1\n",
            b"GET http://example.com/ HTTP/1.1\r\n",
        ] {
            assert_eq!(
                classify(line),
                known(Http1),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn http1_prefixes_wait_for_more() {
        let line = b"GET /index.html HTTP/1.1\r\n";
        for n in 1..line.len() - 1 {
            assert_eq!(
                classify(&line[..n]),
                Prefix::NeedMore { http1: true },
                "{n}"
            );
        }
    }

    #[test]
    fn other_protocols_are_opaque() {
        for bytes in [
            &b"*1\r\n$4\r\nPING\r\n"[..],     // redis
            b"PING\r\n",                      // redis inline
            b"get key\r\n",                   // memcached
            b"GET / HTTP/2.0\r\n",            // not HTTP/1
            b"GET /\r\n",                     // HTTP/0.9
            b"GET  / HTTP/1.1\r\n",           // empty target
            b"\x00\x00\x00\x08\x04\xd2\x16/", // postgres SSLRequest
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"\x16\x03\x01\x02\x00\x02", // TLS record, not a ClientHello
            b"\x16\x07",                 // not TLS 3.x
        ] {
            assert_eq!(classify(bytes), known(Opaque), "{bytes:?}");
        }
    }

    #[test]
    fn tls_client_hello() {
        let hello = [
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        assert_eq!(classify(&hello), known(Tls));
        for n in 1..6 {
            assert_eq!(
                classify(&hello[..n]),
                Prefix::NeedMore { http1: false },
                "{n}"
            );
        }
    }

    #[test]
    fn long_method_tokens_are_not_http() {
        assert_eq!(classify(&[b'A'; 33]), known(Opaque));
        assert_eq!(classify(&[b'A'; 20]), Prefix::NeedMore { http1: true });
    }

    /// Found by the `detect` fuzzer: 33 token bytes were opaque, but with the space after
    /// them a request line again, so a client's bytes were HTTP/1 or opaque depending on
    /// how its reads were cut.
    #[test]
    fn a_long_method_token_stays_opaque_when_the_space_arrives() {
        for line in [
            &b"bbbbbbbbbbeeeeeeeeeeeeeeeeeeeeeeeeeeDeeeeeeeeebbb'bbbbb%bbbPRI *y"[..],
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1\r\n",
        ] {
            assert_eq!(classify(&line[..33]), known(Opaque));
            assert_eq!(
                classify(line),
                known(Opaque),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(classify(&[b'A'; 32]), Prefix::NeedMore { http1: true });
        assert_eq!(
            classify(b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1\r\n"),
            known(Http1)
        );
    }

    proptest::proptest! {
        /// Detection reads a connection in arbitrary segments, so a decision made on a
        /// prefix must stand however the rest arrives.
        #[test]
        fn a_decided_prefix_is_never_contradicted(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), cut in 0usize..64) {
            let cut = cut.min(bytes.len());
            if let Prefix::Known(p) = classify(&bytes[..cut]) {
                proptest::prop_assert_eq!(classify(&bytes), Prefix::Known(p));
            }
        }

        #[test]
        fn http_request_lines_are_http_however_they_end(method in "[A-Z]{1,10}", path in "/[a-zA-Z0-9/?=&%._-]{0,40}", minor in 0u8..2, rest in "[ -~]{0,20}") {
            let line = format!("{method} {path} HTTP/1.{minor}\r\n{rest}");
            proptest::prop_assert_eq!(classify(line.as_bytes()), Prefix::Known(Http1));
        }
    }

    #[tokio::test]
    async fn detect_reads_across_segments() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            client.write_all(b"GET /a ").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            client
                .write_all(b"HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            client
        });
        let mut buf = BytesMut::new();
        let d = detect(&mut server, &mut buf, Duration::from_secs(5), 1024)
            .await
            .unwrap();
        assert_eq!(d, Detection::Detected(Http1));
        assert!(buf.starts_with(b"GET /a HTTP/1.1\r\n"));
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn detect_times_out_by_kind() {
        use tokio::io::AsyncWriteExt;
        for (sent, expected) in [
            (&b""[..], Detection::TimedOutSilent),
            (b"GET /slow", Detection::TimedOutHttp1),
            (b"\x16\x03", Detection::TimedOutPartial),
        ] {
            let (mut client, mut server) = tokio::io::duplex(64);
            client.write_all(sent).await.unwrap();
            let mut buf = BytesMut::new();
            let d = detect(&mut server, &mut buf, Duration::from_secs(10), 1024)
                .await
                .unwrap();
            assert_eq!(d, expected);
            assert_eq!(&buf[..], sent);
        }
    }

    #[tokio::test]
    async fn detect_reports_a_closed_client() {
        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        let mut buf = BytesMut::new();
        let d = detect(&mut server, &mut buf, Duration::from_secs(5), 1024)
            .await
            .unwrap();
        assert_eq!(d, Detection::Closed);
    }

    #[tokio::test]
    async fn detect_stops_at_the_size_limit() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(4096);
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', 3000));
        client.write_all(&line).await.unwrap();
        let mut buf = BytesMut::new();
        let d = detect(&mut server, &mut buf, Duration::from_secs(5), 2048)
            .await
            .unwrap();
        assert_eq!(d, Detection::Detected(Http1));
        assert_eq!(buf.len(), 2048);
    }
}
