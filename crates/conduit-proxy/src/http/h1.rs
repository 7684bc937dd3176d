//! HTTP/1.1 to an upstream, one exchange at a time on a pooled connection, driven by the
//! request's own task: the request head and body are written, the response head is
//! parsed, and the response body is read from the same connection, which goes back to its
//! pool once the body ends. hyper's client runs every connection as a task of its own and
//! hands each request, response and body chunk across channels; for a proxy, which
//! forwards one exchange at a time per connection, that hand-off cost more than parsing
//! the messages (`docs/benchmarks.md`, "The upstream HTTP/1 client"). Protocol switches
//! (`Upgrade`, `CONNECT`) and HTTP/2 stay with hyper.
//!
//! Framing follows RFC 9112 §6 as hyper's client does: a request body is sent with its
//! `Content-Length`, or chunked when its length is unknown (never for `GET`, `HEAD`); a
//! response body is empty for `HEAD` and 1xx/204/304, chunked when `Transfer-Encoding`
//! ends in `chunked`, else `Content-Length` long (differing values are refused), else read
//! to the connection's end. Parsing is strict where leniency would let two parties read
//! one message differently: CRLF line ends in chunked framing, no obsolete line folding.

use super::body::RequestBodyError;
use super::headers::{ends_chunked, tokens};
use super::retry::replay::ReplayBody;
use crate::transport::connect::Upstream;
use bytes::{Bytes, BytesMut};
use http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version,
};
use http_body::{Body, Frame, SizeHint};
use smallvec::SmallVec;
use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    sync::Weak,
    task::{ready, Context, Poll, Waker},
};
use tokio::io::AsyncWrite;

/// The most header fields a response head (or a trailer section) may have, as hyper's.
const MAX_HEADERS: usize = 100;
/// The largest response head (or trailer section) read, in bytes.
pub const MAX_HEAD_BYTES: usize = 256 * 1024;
/// How much room a read asks for at least.
const READ_RESERVE: usize = 8 * 1024;
/// Request body bytes gathered before they are written.
const WRITE_BATCH: usize = 64 * 1024;
/// The longest chunk-size line (size and extensions) of a chunked response body.
const MAX_CHUNK_LINE: usize = 4096;

/// What went wrong in an exchange with the upstream.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the connection closed before a complete response arrived")]
    Closed,
    #[error("the connection closed before the response body ended")]
    BodyCut,
    #[error("the response head is larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("malformed response head: {0}")]
    Parse(#[from] httparse::Error),
    #[error("malformed response: {0}")]
    Framing(&'static str),
    #[error("the request body does not match its Content-Length")]
    RequestLength,
    #[error(transparent)]
    RequestBody(RequestBodyError),
}

/// Where a connection goes back when its exchange ended cleanly: its pool.
pub trait Checkin: Send + Sync {
    /// Takes `conn` back for the next request.
    fn checkin(&self, conn: Box<Connection>);
}

/// One upstream HTTP/1 connection, with what was read from it but not used yet, and a
/// write buffer and a header map kept from one exchange to the next.
pub struct Connection {
    io: Upstream,
    read: BytesMut,
    write: Vec<u8>,
    /// The last request's header map, emptied once written: the next response's fields
    /// go in it without allocating a map of their own.
    spare_headers: Option<HeaderMap>,
}

impl Connection {
    /// A fresh connection over `io`.
    pub fn new(io: Upstream) -> Box<Connection> {
        Box::new(Connection {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
            spare_headers: None,
        })
    }

    /// Whether the upstream closed the connection (or sent something unasked) while it
    /// sat idle. Asks without waiting: tokio answers from the readiness it already knows,
    /// so a quiet connection costs no system call.
    pub fn is_stale(&mut self) -> bool {
        if !self.read.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        !matches!(self.poll_read(&mut cx), Poll::Pending)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_RESERVE / 4 {
            self.read.reserve(READ_RESERVE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// Writes out the write buffer, then flushes (TLS holds records until then).
    fn poll_write_all(&mut self, cx: &mut Context<'_>, from: &mut usize) -> Poll<io::Result<()>> {
        while *from < self.write.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write[*from..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *from += n;
        }
        self.write.clear();
        if self.write.capacity() > 2 * WRITE_BATCH {
            // A large upload's buffer is not kept while the connection sits idle.
            self.write = Vec::new();
        }
        *from = 0;
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// How a request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
enum SendFraming {
    /// Exactly this many bytes are still to come.
    Length(u64),
    Chunked,
}

/// A request body still being written.
struct Sending<B> {
    body: B,
    framing: SendFraming,
    /// The trailer fields the request announced (`Trailer`); others are not sent.
    trailers: Vec<HeaderName>,
}

/// One exchange in progress: the connection, and the request body still to send.
struct Exchange<B> {
    conn: Box<Connection>,
    /// How much of the write buffer is out.
    written: usize,
    /// Boxed: most requests have no body, and the exchange (in the response body) is moved
    /// through every layer on the way back.
    sending: Option<Box<Sending<B>>>,
    /// Whether writing failed after the head went out: the upstream may still answer (it
    /// may have refused the body and closed), but the connection is not reused.
    write_failed: Option<io::Error>,
}

impl<B> Exchange<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<RequestBodyError>,
{
    /// Writes what is buffered and as much of the request body as is ready; `Ready(Ok)`
    /// once all of it is out.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Http1Error>> {
        loop {
            ready!(self.conn.poll_write_all(cx, &mut self.written))?;
            let Some(sending) = &mut self.sending else {
                return Poll::Ready(Ok(()));
            };
            let buf = &mut self.conn.write;
            while buf.len() < WRITE_BATCH {
                let frame = match Pin::new(&mut sending.body).poll_frame(cx) {
                    Poll::Pending if buf.is_empty() => return Poll::Pending,
                    Poll::Pending => break,
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(Http1Error::RequestBody(e.into())))
                    }
                    Poll::Ready(Some(Ok(frame))) => frame,
                    Poll::Ready(None) => {
                        match sending.framing {
                            SendFraming::Chunked => buf.extend_from_slice(b"0\r\n\r\n"),
                            SendFraming::Length(0) => {}
                            SendFraming::Length(_) => {
                                return Poll::Ready(Err(Http1Error::RequestLength))
                            }
                        }
                        self.sending = None;
                        break;
                    }
                };
                match frame.into_data() {
                    Ok(data) => match &mut sending.framing {
                        _ if data.is_empty() => {}
                        SendFraming::Length(left) => {
                            let len = data.len() as u64;
                            if len > *left {
                                return Poll::Ready(Err(Http1Error::RequestLength));
                            }
                            *left -= len;
                            buf.extend_from_slice(&data);
                        }
                        SendFraming::Chunked => {
                            write_hex(buf, data.len() as u64);
                            buf.extend_from_slice(b"\r\n");
                            buf.extend_from_slice(&data);
                            buf.extend_from_slice(b"\r\n");
                        }
                    },
                    Err(frame) => {
                        if let (Ok(fields), SendFraming::Chunked) =
                            (frame.into_trailers(), sending.framing)
                        {
                            buf.extend_from_slice(b"0\r\n");
                            for name in &sending.trailers {
                                for value in fields.get_all(name) {
                                    write_field(buf, name, value);
                                }
                            }
                            buf.extend_from_slice(b"\r\n");
                            self.sending = None;
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Sends on while waiting for the response head; a failure to send after the head
    /// went out leaves the response to be read (the upstream may have answered early).
    fn drive_send(&mut self, cx: &mut Context<'_>) -> Result<(), Http1Error> {
        if self.sending.is_none() && self.conn.write.is_empty() {
            return Ok(());
        }
        match self.poll_send(cx) {
            Poll::Ready(Err(Http1Error::Io(e))) => {
                self.sending = None;
                self.conn.write.clear();
                self.written = 0;
                self.write_failed = Some(e);
                Ok(())
            }
            Poll::Ready(Err(e)) => Err(e),
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
        }
    }

    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
    ) -> Poll<Result<Head, Http1Error>> {
        loop {
            self.drive_send(cx)?;
            if !self.conn.read.is_empty() {
                let conn = &mut *self.conn;
                if let Some(head) = parse_head(&mut conn.read, method, &mut conn.spare_headers)? {
                    return Poll::Ready(Ok(head));
                }
            }
            if ready!(self.conn.poll_read(cx))? == 0 {
                return Poll::Ready(Err(match self.write_failed.take() {
                    Some(e) => Http1Error::Io(e),
                    None => Http1Error::Closed,
                }));
            }
        }
    }
}

/// Sends `req` on `conn` and reads the response head; the returned body reads the rest
/// and then hands `conn` back to `pool`, if the exchange left it fit for another.
pub async fn send<B>(
    mut conn: Box<Connection>,
    req: Request<B>,
    pool: Weak<dyn Checkin>,
) -> Result<Response<ResponseBody<B>>, Http1Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<RequestBodyError>,
{
    let (parts, body) = req.into_parts();
    let (method, version, mut headers) = (parts.method, parts.version, parts.headers);
    let sending = frame_request(&method, version, &mut headers, body);
    encode_head(&mut conn.write, &method, &parts.uri, version, &headers);
    headers.clear();
    conn.spare_headers = Some(headers);
    let mut exchange = Exchange {
        conn,
        written: 0,
        sending,
        write_failed: None,
    };
    let head = std::future::poll_fn(|cx| exchange.poll_head(cx, &method)).await?;
    let reusable = head.keep_alive && exchange.write_failed.is_none();
    let mut rsp = Response::new(ResponseBody {
        exchange: Some(exchange),
        decode: head.decode,
        reusable,
        pool,
    });
    *rsp.status_mut() = head.status;
    *rsp.version_mut() = head.version;
    *rsp.headers_mut() = head.headers;
    if let Some(reason) = head.reason {
        rsp.extensions_mut().insert(reason);
    }
    rsp.body_mut().end_if_done();
    Ok(rsp)
}

/// Decides how the request body goes on the wire, fixing the framing headers to match,
/// as hyper's client does: the headers a client set are respected where they are valid.
fn frame_request<B: Body>(
    method: &Method,
    version: Version,
    headers: &mut HeaderMap,
    body: B,
) -> Option<Box<Sending<B>>> {
    let (mut te, mut cl, mut trailer) = (false, false, false);
    for name in headers.keys() {
        te |= name == header::TRANSFER_ENCODING;
        cl |= name == header::CONTENT_LENGTH;
        trailer |= name == header::TRAILER;
    }
    let length = if cl {
        content_length(headers).ok().flatten()
    } else {
        None
    };
    if body.is_end_stream() {
        if te {
            headers.remove(header::TRANSFER_ENCODING);
        }
        return None;
    }
    let framing = if version == Version::HTTP_10 {
        // HTTP/1.0 has no chunked framing: without a length, no body can be sent.
        if te {
            headers.remove(header::TRANSFER_ENCODING);
        }
        match length.or(body.size_hint().exact()) {
            Some(n) => {
                if length.is_none() {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                }
                SendFraming::Length(n)
            }
            None => SendFraming::Length(0),
        }
    } else if te {
        if cl {
            headers.remove(header::CONTENT_LENGTH);
        }
        if !is_chunked(headers) {
            headers.append(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        SendFraming::Chunked
    } else if let Some(n) = length {
        SendFraming::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        SendFraming::Length(n)
    } else if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
        // These almost never have a body; a chunked empty one would only confuse.
        SendFraming::Length(0)
    } else {
        if cl {
            headers.remove(header::CONTENT_LENGTH);
        }
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        SendFraming::Chunked
    };
    if framing == SendFraming::Length(0) {
        return None;
    }
    let trailers = if trailer && framing == SendFraming::Chunked {
        headers
            .get_all(header::TRAILER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect()
    } else {
        Vec::new()
    };
    Some(Box::new(Sending {
        body,
        framing,
        trailers,
    }))
}

/// Writes the request line and header fields.
fn encode_head(
    buf: &mut Vec<u8>,
    method: &Method,
    uri: &http::Uri,
    version: Version,
    headers: &HeaderMap,
) {
    buf.extend_from_slice(method.as_str().as_bytes());
    buf.push(b' ');
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        // The origin form, nearly always: written without formatting machinery.
        (None, None, Some(pq)) => buf.extend_from_slice(pq.as_str().as_bytes()),
        (None, None, None) => buf.push(b'/'),
        _ => {
            use std::io::Write;
            let _ = write!(buf, "{uri}");
        }
    }
    buf.extend_from_slice(if version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in headers {
        write_field(buf, name, value);
    }
    buf.extend_from_slice(b"\r\n");
}

fn write_field(buf: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    buf.extend_from_slice(name.as_str().as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value.as_bytes());
    buf.extend_from_slice(b"\r\n");
}

fn write_hex(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Whether the last transfer coding is `chunked`.
fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| ends_chunked(v.as_bytes()))
}

/// The one length all `Content-Length` values agree on; `Err` if they differ or one is
/// not a number.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().map_err(drop)?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n: u64 = part.parse().map_err(drop)?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// A parsed response head, and how its body is framed.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    reason: Option<hyper::ext::ReasonPhrase>,
    keep_alive: bool,
    decode: Decode,
}

/// Parses the response head at the start of `buf`, taking it out; `None` if more bytes
/// are needed (and allowed: past [`MAX_HEAD_BYTES`] without its end, it is refused). Informational (1xx) responses before it are skipped, as hyper's client
/// does. Its fields go into `spare` if there is one.
fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    spare: &mut Option<HeaderMap>,
) -> Result<Option<Head>, Http1Error> {
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut fields,
        )? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial if buf.len() > MAX_HEAD_BYTES => {
                return Err(Http1Error::HeadTooLarge)
            }
            httparse::Status::Partial => return Ok(None),
        };
        if len > MAX_HEAD_BYTES {
            return Err(Http1Error::HeadTooLarge);
        }
        let code = parsed.code.ok_or(Http1Error::Framing("no status code"))?;
        let status =
            StatusCode::from_u16(code).map_err(|_| Http1Error::Framing("invalid status code"))?;
        let version = match parsed.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        let reason = parsed
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            .map(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes().to_vec()))
            .transpose()
            .map_err(|_| Http1Error::Framing("invalid reason phrase"))?;
        // Offsets first: the fields borrow `buf`, which is about to be split. (On the
        // stack, uninitialized past the fields there are: zeroing room for all of them
        // cost more than the parse.)
        let base = buf.as_ptr() as usize;
        let spans: SmallVec<[(usize, usize, usize, usize); 24]> = parsed
            .headers
            .iter()
            .map(|field| {
                let name = field.name.as_ptr() as usize - base;
                let value = field.value.as_ptr() as usize - base;
                (
                    name,
                    name + field.name.len(),
                    value,
                    value + field.value.len(),
                )
            })
            .collect();
        let count = spans.len();
        let head = buf.split_to(len).freeze();
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            if buf.is_empty() {
                return Ok(None);
            }
            continue;
        }
        let mut headers = spare.take().unwrap_or_default();
        headers.reserve(count);
        let mut keep_alive = version == Version::HTTP_11;
        let (mut close, mut te, mut cl) = (false, false, false);
        for &(n0, n1, v0, v1) in &spans {
            let name = HeaderName::from_bytes(&head[n0..n1])
                .map_err(|_| Http1Error::Framing("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
                .map_err(|_| Http1Error::Framing("invalid header value"))?;
            if name == header::CONNECTION {
                for token in tokens(&value) {
                    close |= token.eq_ignore_ascii_case("close");
                    keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                }
            }
            te |= name == header::TRANSFER_ENCODING;
            cl |= name == header::CONTENT_LENGTH;
            headers.append(name, value);
        }
        let decode = match status.as_u16() {
            101 | 204 | 304 => Decode::Done,
            _ if *method == Method::HEAD => Decode::Done,
            _ if te && version == Version::HTTP_10 => {
                return Err(Http1Error::Framing(
                    "Transfer-Encoding in an HTTP/1.0 response",
                ))
            }
            _ if te && is_chunked(&headers) => Decode::Chunked(Chunk::Size),
            _ if te => Decode::Eof,
            _ if cl => match content_length(&headers) {
                Ok(Some(0)) => Decode::Done,
                Ok(Some(n)) => Decode::Length(n),
                _ => return Err(Http1Error::Framing("invalid Content-Length")),
            },
            _ => Decode::Eof,
        };
        let keep_alive = keep_alive
            && !close
            && status != StatusCode::SWITCHING_PROTOCOLS
            && decode != Decode::Eof;
        return Ok(Some(Head {
            status,
            version,
            headers,
            reason,
            keep_alive,
            decode,
        }));
    }
}

/// How much of a response body is left, and how it is framed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Decode {
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Eof,
    Done,
}

/// Where a chunked body's reader is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, this much left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section, maybe empty.
    Trailers,
}

/// A response body read from its upstream connection, which it hands back to the pool
/// once read to its end (if the exchange left it fit for another request) and closes if
/// dropped or failed before.
pub struct ResponseBody<B = ReplayBody> {
    exchange: Option<Exchange<B>>,
    decode: Decode,
    reusable: bool,
    pool: Weak<dyn Checkin>,
}

impl<B> ResponseBody<B> {
    /// Once the body is read and the request fully sent, the connection goes back.
    fn end_if_done(&mut self) {
        if self.decode != Decode::Done {
            return;
        }
        let Some(exchange) = self.exchange.take() else {
            return;
        };
        let clean = exchange.sending.is_none()
            && exchange.conn.write.is_empty()
            && exchange.conn.read.is_empty();
        if let (true, Some(pool)) = (self.reusable && clean, self.pool.upgrade()) {
            pool.checkin(exchange.conn);
        }
    }
}

/// The next frame of a body framed as `state` says from what was read into `buf`, `None`
/// if more must be read first (or the body is done).
fn decode(state: &mut Decode, buf: &mut BytesMut) -> Result<Option<Frame<Bytes>>, Http1Error> {
    loop {
        match *state {
            Decode::Done => return Ok(None),
            Decode::Length(left) => {
                let Some((data, left)) = take_data(buf, left) else {
                    return Ok(None);
                };
                *state = match left {
                    0 => Decode::Done,
                    left => Decode::Length(left),
                };
                return Ok(Some(Frame::data(data)));
            }
            Decode::Eof => {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Frame::data(buf.split().freeze())));
            }
            Decode::Chunked(Chunk::Data(left)) => {
                let Some((data, left)) = take_data(buf, left) else {
                    return Ok(None);
                };
                *state = Decode::Chunked(match left {
                    0 => Chunk::DataEnd,
                    left => Chunk::Data(left),
                });
                return Ok(Some(Frame::data(data)));
            }
            Decode::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Http1Error::Framing("chunk data not followed by CRLF"));
                }
                let _ = buf.split_to(2);
                *state = Decode::Chunked(Chunk::Size);
            }
            Decode::Chunked(Chunk::Size) => {
                // The limit holds whether or not the line's end has arrived yet, so
                // that how the bytes were split never changes the verdict.
                let end = buf.windows(2).position(|w| w == b"\r\n");
                if end.unwrap_or(buf.len()) > MAX_CHUNK_LINE {
                    return Err(Http1Error::Framing("chunk-size line too long"));
                }
                let Some(end) = end else {
                    return Ok(None);
                };
                let size = chunk_size(&buf[..end])?;
                let _ = buf.split_to(end + 2);
                *state = Decode::Chunked(match size {
                    0 => Chunk::Trailers,
                    n => Chunk::Data(n),
                });
            }
            Decode::Chunked(Chunk::Trailers) => {
                if buf.starts_with(b"\r\n") {
                    let _ = buf.split_to(2);
                    *state = Decode::Done;
                    return Ok(None);
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(buf, &mut fields)? {
                    httparse::Status::Partial => {
                        if buf.len() > MAX_HEAD_BYTES {
                            return Err(Http1Error::HeadTooLarge);
                        }
                        return Ok(None);
                    }
                    httparse::Status::Complete((len, _)) if len > MAX_HEAD_BYTES => {
                        return Err(Http1Error::HeadTooLarge);
                    }
                    httparse::Status::Complete((len, fields)) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for field in fields {
                            let name = HeaderName::from_bytes(field.name.as_bytes())
                                .map_err(|_| Http1Error::Framing("invalid trailer name"))?;
                            let value = HeaderValue::from_bytes(field.value)
                                .map_err(|_| Http1Error::Framing("invalid trailer value"))?;
                            trailers.append(name, value);
                        }
                        let _ = buf.split_to(len);
                        *state = Decode::Done;
                        return Ok(Some(Frame::trailers(trailers)));
                    }
                }
            }
        }
    }
}

/// Up to `left` bytes of body data from `buf` (`None` if it is empty), and how many are
/// still to come after them.
fn take_data(buf: &mut BytesMut, left: u64) -> Option<(Bytes, u64)> {
    if buf.is_empty() {
        return None;
    }
    let take = left.min(buf.len() as u64);
    Some((buf.split_to(take as usize).freeze(), left - take))
}

/// The size of a chunk-size line (extensions ignored).
fn chunk_size(line: &[u8]) -> Result<u64, Http1Error> {
    if line.iter().any(|b| matches!(b, b'\r' | b'\n')) {
        return Err(Http1Error::Framing("a bare CR or LF in a chunk-size line"));
    }
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest_ok = rest.is_empty()
        || matches!(
            rest.iter().find(|b| !matches!(b, b' ' | b'\t')),
            None | Some(b';')
        );
    if digits == 0 || digits > 16 || !rest_ok {
        return Err(Http1Error::Framing("invalid chunk size"));
    }
    let text = std::str::from_utf8(&line[..digits])
        .map_err(|_| Http1Error::Framing("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| Http1Error::Framing("invalid chunk size"))
}

/// What a response reads as when its bytes arrive in `parts`, read as an exchange reads
/// them: the head, then the body's frames for as long as there are bytes. For the fuzz
/// target (`fuzz/fuzz_targets/http1_response.rs`), which checks that no bytes from an
/// upstream panic the reader and that how they were split never changes what it reads.
pub fn read_buffered(parts: &[&[u8]], method: &Method) -> Result<Buffered, Http1Error> {
    let mut buf = BytesMut::new();
    let mut spare = None;
    let mut read = Buffered::default();
    let mut state = None;
    for part in parts {
        buf.extend_from_slice(part);
        if state.is_none() {
            match parse_head(&mut buf, method, &mut spare)? {
                Some(head) => {
                    read.status = Some(head.status);
                    read.headers = head.headers;
                    state = Some(head.decode);
                }
                None => continue,
            }
        }
        if let Some(state) = &mut state {
            while let Some(frame) = decode(state, &mut buf)? {
                match frame.into_data() {
                    Ok(data) => read.data.extend_from_slice(&data),
                    Err(frame) => read.trailers = frame.into_trailers().ok(),
                }
            }
            read.done = *state == Decode::Done;
        }
    }
    Ok(read)
}

/// A response as [`read_buffered`] read it.
#[derive(Debug, Default, PartialEq)]
pub struct Buffered {
    pub status: Option<StatusCode>,
    pub headers: HeaderMap,
    pub data: Vec<u8>,
    pub trailers: Option<HeaderMap>,
    /// Whether the body ended (a body read to the connection's end never does here).
    pub done: bool,
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<RequestBodyError>,
{
    type Data = Bytes;
    type Error = Http1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Http1Error>>> {
        let this = self.get_mut();
        loop {
            let Some(exchange) = this.exchange.as_mut() else {
                return Poll::Ready(None);
            };
            if let Err(e) = exchange.drive_send(cx) {
                this.exchange = None;
                return Poll::Ready(Some(Err(e)));
            }
            if exchange.write_failed.is_some() {
                this.reusable = false;
            }
            match decode(&mut this.decode, &mut exchange.conn.read) {
                Err(e) => {
                    this.exchange = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(frame)) => {
                    this.end_if_done();
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) if this.decode == Decode::Done => {
                    this.end_if_done();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
            }
            match ready!(exchange.conn.poll_read(cx)) {
                Ok(0) if this.decode == Decode::Eof => {
                    this.decode = Decode::Done;
                    this.exchange = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.exchange = None;
                    return Poll::Ready(Some(Err(Http1Error::BodyCut)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.exchange = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decode == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Done => SizeHint::with_exact(0),
            Decode::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against real sockets: a scripted upstream writes exactly the bytes under test.
    use super::*;
    use crate::{
        peer::Direction,
        telemetry::metrics::TcpMetrics,
        transport::connect::{Connector, Endpoint},
    };
    use http_body_util::{BodyExt, Full, StreamBody};
    use parking_lot::Mutex;
    use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
        sync::mpsc,
    };

    /// One step of a scripted upstream connection.
    enum Step {
        /// Read until these bytes have arrived; what was read up to them is one request.
        Expect(&'static [u8]),
        Write(Vec<u8>),
        Close,
    }
    use Step::{Close, Expect, Write};

    fn write(bytes: &str) -> Step {
        Write(bytes.as_bytes().to_vec())
    }

    /// An upstream running one script per connection it accepts, in order; it reports
    /// each request it read. After its script a connection stays open until the client
    /// closes it.
    async fn upstream(scripts: Vec<Vec<Step>>) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for script in scripts {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for step in script {
                        match step {
                            Expect(marker) => loop {
                                if let Some(i) = buf.windows(marker.len()).position(|w| w == marker)
                                {
                                    let rest = buf.split_off(i + marker.len());
                                    let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                                    buf = rest;
                                    break;
                                }
                                let mut chunk = [0u8; 4096];
                                match tcp.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            },
                            Write(bytes) => {
                                if tcp.write_all(&bytes).await.is_err() {
                                    return;
                                }
                            }
                            Close => return,
                        }
                    }
                    let mut sink = [0u8; 4096];
                    while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        (addr, rx)
    }

    async fn connect(addr: SocketAddr) -> Box<Connection> {
        let connector = Connector::new(
            Direction::Outbound,
            Duration::from_secs(5),
            TcpMetrics::default(),
            None,
        );
        Connection::new(
            connector
                .connect(&Endpoint::plain(addr), false)
                .await
                .unwrap(),
        )
    }

    /// Where connections go back: kept for the test to look at.
    #[derive(Default)]
    #[allow(clippy::vec_box)] // as the pools hold them: handed over boxed
    struct Pool(Mutex<Vec<Box<Connection>>>);

    impl Checkin for Pool {
        fn checkin(&self, conn: Box<Connection>) {
            self.0.lock().push(conn);
        }
    }

    impl Pool {
        fn take(&self) -> Option<Box<Connection>> {
            self.0.lock().pop()
        }
    }

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path)
            .header("host", "a")
            .body(Full::default())
            .unwrap()
    }

    async fn exchange<B>(
        conn: Box<Connection>,
        req: Request<B>,
        pool: &Arc<Pool>,
    ) -> Result<(Response<()>, Bytes, Option<HeaderMap>), Http1Error>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<RequestBodyError>,
    {
        let weak = Arc::downgrade(pool) as Weak<dyn Checkin>;
        let rsp = send(conn, req, weak).await?;
        let (head, body) = rsp.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok((
            Response::from_parts(head, ()),
            collected.to_bytes(),
            trailers,
        ))
    }

    #[tokio::test]
    async fn one_connection_serves_exchange_after_exchange_from_its_pool() {
        let (addr, mut requests) = upstream(vec![vec![
            Expect(b"\r\n\r\n"),
            write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"),
            Expect(b"\r\n\r\n"),
            write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 7\r\n\r\n"),
            Expect(b"\r\n\r\n"),
            write("HTTP/1.1 204 No Content\r\n\r\n"),
            Expect(b"\r\n\r\n"),
            write("HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n"),
        ]])
        .await;
        let pool = Arc::new(Pool::default());
        let (rsp, body, _) = exchange(connect(addr).await, get("/one?x=1"), &pool)
            .await
            .unwrap();
        assert_eq!(
            requests.recv().await.unwrap(),
            "GET /one?x=1 HTTP/1.1\r\nhost: a\r\n\r\n"
        );
        assert_eq!(
            (rsp.status(), rsp.version(), &body[..]),
            (StatusCode::OK, Version::HTTP_11, &b"hello"[..])
        );
        assert_eq!(rsp.headers()["x-a"], "1");

        let conn = pool
            .take()
            .expect("a complete exchange gives its connection back");
        let (_, body, trailers) = exchange(conn, get("/two"), &pool).await.unwrap();
        assert_eq!(&body[..], b"hello world");
        assert_eq!(trailers.expect("trailers")["x-checksum"], "7");

        let conn = pool.take().expect("the chunked exchange gave it back too");
        let weak = Arc::downgrade(&pool) as Weak<dyn Checkin>;
        let rsp = send(conn, get("/three"), weak).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::NO_CONTENT);
        assert!(rsp.body().is_end_stream());
        assert!(
            pool.0.lock().len() == 1,
            "an empty body gives the connection back at once"
        );

        let (rsp, _, _) = exchange(pool.take().unwrap(), get("/four"), &pool)
            .await
            .unwrap();
        let reason = rsp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .expect("kept");
        assert_eq!(reason.as_bytes(), b"Fine Thanks");
    }

    #[tokio::test]
    async fn a_body_read_to_the_connection_end_or_a_close_keeps_the_connection_out() {
        let (addr, _requests) = upstream(vec![
            vec![
                Expect(b"\r\n\r\n"),
                write("HTTP/1.1 200 OK\r\n\r\nall of it"),
                Close,
            ],
            vec![
                Expect(b"\r\n\r\n"),
                write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
            ],
            vec![
                Expect(b"\r\n\r\n"),
                write("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            ],
        ])
        .await;
        let pool = Arc::new(Pool::default());
        let (_, body, _) = exchange(connect(addr).await, get("/"), &pool)
            .await
            .unwrap();
        assert_eq!(&body[..], b"all of it");
        let (_, body, _) = exchange(connect(addr).await, get("/"), &pool)
            .await
            .unwrap();
        assert_eq!(&body[..], b"ok");
        let (rsp, body, _) = exchange(connect(addr).await, get("/"), &pool)
            .await
            .unwrap();
        assert_eq!((rsp.version(), &body[..]), (Version::HTTP_10, &b"ok"[..]));
        assert!(pool.take().is_none(), "none of the three may be reused");
    }

    #[tokio::test]
    async fn head_and_informational_responses_have_no_body() {
        let (addr, _requests) = upstream(vec![vec![
            Expect(b"\r\n\r\n"),
            write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
            Expect(b"\r\n\r\n"),
            write("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ]])
        .await;
        let pool = Arc::new(Pool::default());
        let head = Request::head("/").body(Full::<Bytes>::default()).unwrap();
        let (rsp, body, _) = exchange(connect(addr).await, head, &pool).await.unwrap();
        assert_eq!(
            (rsp.headers()["content-length"].as_bytes(), body.len()),
            (&b"100"[..], 0)
        );
        let (rsp, body, _) = exchange(pool.take().unwrap(), get("/"), &pool)
            .await
            .unwrap();
        assert_eq!((rsp.status(), &body[..]), (StatusCode::OK, &b"ok"[..]));
    }

    #[tokio::test]
    async fn malformed_responses_fail_with_what_was_wrong() {
        let cases: [(&str, &str); 7] = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                "invalid Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "invalid chunk size",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
                "bare CR or LF",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
                "not followed by CRLF",
            ),
            (
                "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "HTTP/1.0",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                "before the response body ended",
            ),
        ];
        let scripts = cases
            .iter()
            .map(|(rsp, _)| vec![Expect(b"\r\n\r\n"), write(rsp), Close])
            .chain([vec![
                Expect(b"\r\n\r\n"),
                write("HTTP/1.1 200 OK\r\nConte"),
                Close,
            ]])
            .collect();
        let (addr, _requests) = upstream(scripts).await;
        let pool = Arc::new(Pool::default());
        for (_, why) in cases {
            let err = exchange(connect(addr).await, get("/"), &pool)
                .await
                .unwrap_err();
            assert!(err.to_string().contains(why), "{err} should say {why}");
        }
        let err = exchange(connect(addr).await, get("/"), &pool)
            .await
            .unwrap_err();
        assert!(matches!(err, Http1Error::Closed), "{err}");
        assert!(pool.take().is_none());
    }

    #[test]
    fn limits_hold_however_the_bytes_arrive() {
        // A chunk-size line and a trailer section past their limits, each whole and cut
        // before its end: refused either way, so a split can never change the verdict.
        let line = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\na\r\n0\r\n\r\n",
            "x".repeat(MAX_CHUNK_LINE)
        );
        let trailers = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-big: {}\r\n\r\n",
            "x".repeat(MAX_HEAD_BYTES)
        );
        for text in [line, trailers] {
            let bytes = text.as_bytes();
            let cut = bytes.len() - 10;
            assert!(read_buffered(&[bytes], &Method::GET).is_err());
            assert!(read_buffered(&[&bytes[..cut], &bytes[cut..]], &Method::GET).is_err());
        }
        let fine =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\n\r\n";
        let whole = read_buffered(&[fine], &Method::GET).unwrap();
        assert_eq!((&whole.data[..], whole.done), (&b"abc"[..], true));
        for cut in 0..fine.len() {
            let split = read_buffered(&[&fine[..cut], &fine[cut..]], &Method::GET).unwrap();
            assert_eq!(split, whole, "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn a_response_head_past_the_limit_is_refused() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        let (addr, _requests) =
            upstream(vec![vec![Expect(b"\r\n\r\n"), Write(big.into_bytes())]]).await;
        let pool = Arc::new(Pool::default());
        let err = exchange(connect(addr).await, get("/"), &pool)
            .await
            .unwrap_err();
        assert!(matches!(err, Http1Error::HeadTooLarge), "{err}");
    }

    type Frames = futures_util::stream::Map<
        tokio_stream::wrappers::UnboundedReceiverStream<Frame<Bytes>>,
        fn(Frame<Bytes>) -> Result<Frame<Bytes>, Infallible>,
    >;

    /// A request body of frames sent one by one, its length unknown.
    fn streamed() -> (mpsc::UnboundedSender<Frame<Bytes>>, StreamBody<Frames>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let ok: fn(Frame<Bytes>) -> Result<Frame<Bytes>, Infallible> = Ok;
        (
            tx,
            StreamBody::new(futures_util::StreamExt::map(stream, ok)),
        )
    }

    #[tokio::test]
    async fn request_bodies_go_with_their_length_or_chunked_with_announced_trailers() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (addr, mut requests) = upstream(vec![vec![
            Expect(b"\r\n\r\nabc"),
            write(ok),
            // The head, then the body up to the end of its trailer section (or of the
            // last chunk, if the trailers went missing).
            Expect(b"\r\n\r\n"),
            Expect(b"\r\n\r\n"),
            write(ok),
        ]])
        .await;
        let pool = Arc::new(Pool::default());
        let post = Request::post("/")
            .body(Full::new(Bytes::from_static(b"abc")))
            .unwrap();
        exchange(connect(addr).await, post, &pool).await.unwrap();
        assert_eq!(
            requests.recv().await.unwrap(),
            "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc"
        );

        let (tx, body) = streamed();
        let post = Request::post("/up")
            .header("trailer", "x-sum")
            .body(body)
            .unwrap();
        tx.send(Frame::data(Bytes::from_static(b"abc"))).unwrap();
        tx.send(Frame::data(Bytes::from_static(b"0123456789abcdefg")))
            .unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", HeaderValue::from_static("1"));
        trailers.insert("x-secret", HeaderValue::from_static("not announced"));
        tx.send(Frame::trailers(trailers)).unwrap();
        drop(tx);
        let conn = pool.take().expect("reused");
        exchange(conn, post, &pool).await.unwrap();
        assert_eq!(
            requests.recv().await.unwrap(),
            "POST /up HTTP/1.1\r\ntrailer: x-sum\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            requests.recv().await.unwrap(),
            "3\r\nabc\r\n11\r\n0123456789abcdefg\r\n0\r\nx-sum: 1\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn an_early_answer_arrives_while_the_body_is_still_being_sent() {
        let (addr, _requests) = upstream(vec![vec![
            Expect(b"\r\n\r\n"),
            write(
                "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            ),
            Close,
        ]])
        .await;
        let pool = Arc::new(Pool::default());
        let (tx, body) = streamed();
        tx.send(Frame::data(Bytes::from_static(b"part"))).unwrap();
        let post = Request::post("/").body(body).unwrap();
        let (rsp, _, _) = exchange(connect(addr).await, post, &pool).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            pool.take().is_none(),
            "its body was never finished: not reused"
        );
        drop(tx);
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_stale() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (addr, _requests) = upstream(vec![
            vec![Expect(b"\r\n\r\n"), write(ok), Close],
            vec![Expect(b"\r\n\r\n"), write(ok)],
        ])
        .await;
        let pool = Arc::new(Pool::default());
        exchange(connect(addr).await, get("/"), &pool)
            .await
            .unwrap();
        let mut closed = pool.take().expect("looked reusable when it was given back");
        exchange(connect(addr).await, get("/"), &pool)
            .await
            .unwrap();
        let mut open = pool.take().unwrap();
        // The FIN is seen once the runtime has polled for I/O again.
        let mut stale = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if closed.is_stale() {
                stale = true;
                break;
            }
        }
        assert!(stale, "the upstream's close was never noticed");
        assert!(!open.is_stale(), "a quiet open connection is not stale");
    }
}
