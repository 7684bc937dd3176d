//! HTTP/2 to an upstream over one shared connection, with the h2 library itself: each
//! request is sent, and its response awaited, from the request's own task; only a request
//! body still to be sent gets a task of its own, and the connection's task only reads and
//! writes frames. hyper's HTTP/2 client hands every request to the connection's task over a
//! channel, spawns a task per request to wait for its response and wraps every body once
//! more; on the carried hop between meshed proxies, where every HTTP/1 request takes this
//! path, that hand-off cost a tenth of the client proxy's instructions (`docs/benchmarks.md`,
//! "The upstream HTTP/2 client").
//!
//! A connection, idle or not, is proven alive by a PING every [`KEEPALIVE`] (so that a
//! request does not find a dead peer first); one unanswered for as long closes it. One
//! that went away (a GOAWAY: its server is draining) finishes the requests it has and
//! takes no more: [`Connection::ready`] fails before a request is given to it, so the
//! pool opens another rather than failing requests until the old one closes. Windows and
//! buffers are hyper's defaults, so the memory a connection may hold for a slow reader is
//! as bounded as before.

use super::body::RequestBodyError;
use bytes::Bytes;
use futures_util::future::poll_fn;
use http::{header, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

/// How often an upstream HTTP/2 connection is pinged, and how long an answer may take.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// Each stream's receive window (hyper's default).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// The connection's receive window (hyper's default).
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Request body bytes buffered per stream before waiting for the peer's window.
const MAX_SEND_BUFFER: usize = 1024 * 1024;

/// What went wrong in an exchange with the upstream.
#[derive(Debug, thiserror::Error)]
pub enum Http2Error {
    #[error("{0}")]
    H2(#[from] h2::Error),
    /// The client's request body failed (or stalled) while it was being sent.
    #[error(transparent)]
    RequestBody(RequestBodyError),
}

/// One multiplexed connection to an upstream: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Connection {
    send: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Opens HTTP/2 over `io` (to `addr`, for logs) and drives it from a task of its own,
    /// pinging it every `keepalive` ([`KEEPALIVE`]).
    pub async fn handshake<I>(
        io: I,
        addr: SocketAddr,
        keepalive: Duration,
    ) -> Result<Connection, h2::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let ping = conn.ping_pong();
        let ended = SetOnDrop(closed.clone());
        // The connection's task polls only the connection: it wakes for every frame, the
        // pings' task every ten seconds.
        let driven = tokio::spawn(async move {
            let _ended = ended;
            if let Err(error) = conn.await {
                debug!(%addr, %error, "upstream HTTP/2 connection failed");
            }
        });
        if let Some(ping) = ping {
            tokio::spawn(async move {
                if keep_alive(ping, keepalive).await == Liveness::Unanswered {
                    debug!(%addr, "upstream HTTP/2 connection answered no ping for {keepalive:?}: closed");
                    driven.abort();
                }
            });
        }
        Ok(Connection { send, closed })
    }

    /// Whether the connection has ended: the next request needs another.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until the connection takes one more stream. An error means that no request
    /// was sent on it: it is marked closed (it went away, or ended), so that the next
    /// request opens another.
    pub async fn ready(&self) -> Result<Ready, h2::Error> {
        match self.send.clone().ready().await {
            Ok(send) => Ok(Ready(send)),
            Err(e) => {
                self.closed.store(true, Ordering::Release);
                Err(e)
            }
        }
    }
}

/// A connection ready to take one request.
pub struct Ready(h2::client::SendRequest<Bytes>);

impl Ready {
    /// Sends `req` and waits for the response head; the request body, if any, is sent
    /// from a task of its own while the response arrives.
    pub async fn send<B>(mut self, req: Request<B>) -> Result<Response<ResponseBody>, Http2Error>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<RequestBodyError> + Send,
    {
        let (mut head, body) = req.into_parts();
        // The proxy's stages took every other hop-by-hop header off already; HTTP/2
        // frames the body itself.
        if head.headers.contains_key(header::TRANSFER_ENCODING) {
            head.headers.remove(header::TRANSFER_ENCODING);
        }
        let eos = body.is_end_stream();
        let (response, stream) = self.0.send_request(Request::from_parts(head, ()), eos)?;
        let failed = (!eos).then(|| {
            let failed = Arc::new(Mutex::new(None));
            tokio::spawn(send_body(body, stream, failed.clone()));
            failed
        });
        match response.await {
            Ok(rsp) => Ok(rsp.map(ResponseBody::new)),
            // A body that failed first is why the stream ended.
            Err(e) => Err(match failed.and_then(|f| f.lock().take()) {
                Some(body) => Http2Error::RequestBody(body),
                None => Http2Error::H2(e),
            }),
        }
    }
}

/// How a connection's pings ended.
#[derive(PartialEq, Eq)]
enum Liveness {
    /// The connection ended (its own task says why).
    Ended,
    /// A ping went unanswered for the interval.
    Unanswered,
}

/// Pings every `interval` until a ping goes unanswered as long or the connection ends.
async fn keep_alive(mut ping: h2::PingPong, interval: Duration) -> Liveness {
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(interval, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Liveness::Ended,
            Err(_) => return Liveness::Unanswered,
        }
    }
}

/// Marks a connection closed when its task ends, however it ends (aborted included).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Sends a request body on its stream, waiting for the peer's window as needed (the
/// body is read a chunk at a time, so at most a chunk waits here); stops when the peer
/// resets the stream. A body's own failure resets the stream and is left
/// in `failed`, for the response's error.
async fn send_body<B>(
    mut body: B,
    mut stream: h2::SendStream<Bytes>,
    failed: Arc<Mutex<Option<RequestBodyError>>>,
) where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<RequestBodyError>,
{
    loop {
        let frame = tokio::select! {
            biased;
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return,
            frame = body.frame() => frame,
        };
        let frame = match frame {
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(e)) => {
                *failed.lock() = Some(e.into());
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    stream.reserve_capacity(0);
                    let _ = stream.send_trailers(trailers);
                }
                return;
            }
        };
        let eos = body.is_end_stream();
        if !data.is_empty() {
            // Waits for some window, then hands h2 the whole chunk (it sends as the
            // window allows). Claiming only a byte while waiting keeps a stream whose
            // peer is slow from pinning the connection's window.
            stream.reserve_capacity(1);
            while stream.capacity() == 0 {
                match poll_fn(|cx| stream.poll_capacity(cx)).await {
                    Some(Ok(_)) => {}
                    // The stream was reset, or the connection ended.
                    _ => return,
                }
            }
        }
        if stream.send_data(data, eos).is_err() || eos {
            return;
        }
    }
}

/// An upstream HTTP/2 response body: its data, whose window is handed back as it is
/// read, then its trailers.
pub struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl ResponseBody {
    fn new(recv: h2::RecvStream) -> Self {
        ResponseBody {
            recv,
            data_done: false,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The window reopens as the client reads: a slow client holds at
                    // most a window of the upstream's bytes.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures_util::stream;
    use http::{HeaderMap, HeaderValue, StatusCode};
    use http_body_util::{BodyExt, Empty, StreamBody};
    use hyper::{body::Incoming, service::service_fn};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::convert::Infallible;
    use tokio::net::{TcpListener, TcpStream};

    type Echo = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

    /// hyper's HTTP/2 server on loopback, answering each request with `answer`.
    async fn server<F>(answer: F) -> SocketAddr
    where
        F: Fn(Request<Incoming>) -> Response<Echo> + Clone + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let answer = answer.clone();
                let service = service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req)) }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        addr
    }

    async fn connect(addr: SocketAddr) -> Connection {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Connection::handshake(tcp, addr, KEEPALIVE).await.unwrap()
    }

    /// The request's body streamed back as it arrives, its trailers after it.
    fn echo(req: Request<Incoming>) -> Response<Echo> {
        Response::new(req.into_body().boxed())
    }

    fn frames(
        chunks: usize,
        size: usize,
        trailers: Option<HeaderMap>,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
        let data = (0..chunks).map(move |i| Ok(Frame::data(Bytes::from(vec![i as u8; size]))));
        let trailers = trailers.map(|t| Ok(Frame::trailers(t)));
        StreamBody::new(stream::iter(data.chain(trailers)))
    }

    #[tokio::test]
    async fn bodies_and_trailers_cross_both_ways_beyond_the_windows() {
        let addr = server(echo).await;
        let conn = connect(addr).await;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        // 8 MiB each way: more than the stream's and the connection's windows.
        let req = Request::post("http://upstream/echo")
            .body(frames(128, 64 * 1024, Some(trailers)))
            .unwrap();
        let rsp = conn.ready().await.unwrap().send(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        let body = rsp.into_body().collect().await.unwrap();
        let got_trailers = body.trailers().cloned();
        let bytes = body.to_bytes();
        assert_eq!(bytes.len(), 128 * 64 * 1024);
        assert!(bytes
            .chunks(64 * 1024)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| *b == i as u8)));
        assert_eq!(got_trailers.unwrap()["grpc-status"], "0");
    }

    #[tokio::test]
    async fn requests_share_the_connection_and_one_without_a_body_sends_none() {
        let addr = server(|req: Request<Incoming>| {
            let eos = req.body().is_end_stream();
            Response::new(
                http_body_util::Full::new(Bytes::from(format!("{} {eos}", req.uri().path())))
                    .map_err(|never: Infallible| match never {})
                    .boxed(),
            )
        })
        .await;
        let conn = connect(addr).await;
        let sends = (0..20).map(|i| {
            let conn = conn.clone();
            async move {
                let req = Request::get(format!("http://upstream/{i}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let rsp = conn.ready().await.unwrap().send(req).await.unwrap();
                rsp.into_body().collect().await.unwrap().to_bytes()
            }
        });
        let answers = futures_util::future::join_all(sends).await;
        for (i, answer) in answers.iter().enumerate() {
            assert_eq!(&answer[..], format!("/{i} true").as_bytes());
        }
    }

    #[tokio::test]
    async fn a_request_bodys_failure_is_the_exchanges() {
        // The server waits for the whole body before it answers.
        let addr = server(|req: Request<Incoming>| {
            let body = async move {
                let _ = req.into_body().collect().await?;
                Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"done")))
            };
            Response::new(StreamBody::new(stream::once(body)).boxed())
        })
        .await;
        let conn = connect(addr).await;
        let failing = StreamBody::new(stream::iter([
            Ok(Frame::data(Bytes::from_static(b"part"))),
            Err(RequestBodyError::Idle(Duration::from_secs(5))),
        ]));
        let req = Request::post("http://upstream/").body(failing).unwrap();
        let failed = conn
            .ready()
            .await
            .unwrap()
            .send(req)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(failed, Http2Error::RequestBody(RequestBodyError::Idle(_))),
            "the body's stall is why, not the stream's reset: {failed:?}"
        );
    }

    /// A body that never ends, and says when it is dropped.
    struct Endless(Option<tokio::sync::oneshot::Sender<()>>);

    impl Body for Endless {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    impl Drop for Endless {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }

    #[tokio::test]
    async fn a_body_is_no_longer_read_once_the_server_has_answered_and_reset_it() {
        // Answers at once, without reading the body: hyper then resets the stream.
        let addr =
            server(|_| Response::new(Empty::new().map_err(|n: Infallible| match n {}).boxed()))
                .await;
        let conn = connect(addr).await;
        let (dropped, was_dropped) = tokio::sync::oneshot::channel();
        let req = Request::post("http://upstream/")
            .body(Endless(Some(dropped)))
            .unwrap();
        let rsp = conn.ready().await.unwrap().send(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        drop(rsp);
        tokio::time::timeout(Duration::from_secs(10), was_dropped)
            .await
            .expect("the body's task ends with the stream")
            .unwrap();
    }

    /// hyper's HTTP/2 server whose first connection drains (sends GOAWAY) once `drain` is
    /// notified, its responses' bodies held until `release` is; later connections answer
    /// at once. `accepted` counts connections.
    pub(crate) struct DrainingServer {
        pub(crate) addr: SocketAddr,
        pub(crate) accepted: Arc<std::sync::atomic::AtomicUsize>,
        pub(crate) drain: Arc<tokio::sync::Notify>,
        pub(crate) release: Arc<tokio::sync::Notify>,
    }

    pub(crate) async fn draining_server() -> DrainingServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = DrainingServer {
            addr: listener.local_addr().unwrap(),
            accepted: Arc::default(),
            drain: Arc::default(),
            release: Arc::default(),
        };
        let (accepted, drain, release) = (
            server.accepted.clone(),
            server.drain.clone(),
            server.release.clone(),
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let first = accepted.fetch_add(1, Ordering::SeqCst) == 0;
                let (drain, release) = (drain.clone(), release.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_| {
                        let release = release.clone();
                        async move {
                            let body = stream::once(async move {
                                if first {
                                    release.notified().await;
                                }
                                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"ok")))
                            });
                            Ok::<_, Infallible>(Response::new(StreamBody::new(body)))
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service);
                    tokio::pin!(conn);
                    if first {
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            () = drain.notified() => conn.as_mut().graceful_shutdown(),
                        }
                    }
                    let _ = conn.await;
                });
            }
        });
        server
    }

    #[tokio::test]
    async fn a_connection_that_went_away_takes_no_more_requests_and_finishes_its_own() {
        let DrainingServer {
            addr,
            drain,
            release,
            ..
        } = draining_server().await;
        let conn = connect(addr).await;
        let req = Request::get("http://upstream/slow")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let slow = conn.ready().await.unwrap().send(req).await.unwrap();
        drain.notify_one();
        // The server's GOAWAY arrives: the connection takes no new request, and says so.
        let mut refused = false;
        for _ in 0..100 {
            if conn.ready().await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(refused, "no GOAWAY seen in 5 s");
        assert!(
            conn.is_closed(),
            "the next request opens another connection"
        );
        release.notify_one();
        let body = slow.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok", "the request in flight finished on it");
    }

    #[tokio::test]
    async fn a_connection_whose_peer_answers_no_ping_is_closed() {
        // A peer that accepts the connection and then says nothing at all.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let conn = Connection::handshake(tcp, addr, Duration::from_millis(100))
            .await
            .unwrap();
        let _held = silent.await.unwrap();
        assert!(!conn.is_closed());
        for _ in 0..100 {
            if conn.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("a ping unanswered for 5 s and the connection still looks open");
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_says_so() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let service =
                service_fn(|_| async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            // Serves the handshake, then closes gracefully.
            let _ = tokio::time::timeout(Duration::from_millis(200), conn.as_mut()).await;
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
        let conn = connect(addr).await;
        assert!(!conn.is_closed());
        server.await.unwrap();
        for _ in 0..100 {
            if conn.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the connection was closed by the server 5 s ago and still looks open");
    }
}
