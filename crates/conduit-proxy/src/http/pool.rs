//! Upstream HTTP connections, pooled per endpoint: HTTP/1 connections ([`h1`]) are reused
//! one request at a time and kept idle for a while; HTTP/2 shares one multiplexed
//! connection. A connection found closed by the upstream while idle is passed over before
//! anything is written on it. Knows nothing about how the endpoint was chosen.

use super::{
    body::RequestBodyError,
    h1::{self, Checkin, Http1Error},
    h2::{self, Http2Error},
    retry::replay::ReplayBody,
};
use crate::{
    errors::ProxyError,
    peer::PeerTls,
    transport::connect::{Connector, Endpoint},
};
use bytes::Bytes;
use hashbrown::{Equivalent, HashMap};
use http::{Request, Response};
use http_body::{Body, Frame};
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::{
    hash::{Hash, Hasher},
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::Instant;
use tracing::debug;

/// Which HTTP version to speak upstream.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

const MAX_IDLE_PER_ENDPOINT: usize = 128;

/// A pool's key by reference: hashes and compares as the `(Endpoint, HttpVersion)` it
/// stands for.
struct PoolKey<'a>(&'a Endpoint, HttpVersion);

impl Hash for PoolKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0, self.1).hash(state)
    }
}

impl Equivalent<(Endpoint, HttpVersion)> for PoolKey<'_> {
    fn equivalent(&self, key: &(Endpoint, HttpVersion)) -> bool {
        *self.0 == key.0 && self.1 == key.1
    }
}

/// Every endpoint's pool, for one side of the proxy.
pub struct EndpointPools {
    pools: Mutex<HashMap<(Endpoint, HttpVersion), Arc<EndpointPool>>>,
    connector: Connector,
    idle_timeout: Duration,
}

impl EndpointPools {
    /// Pools that connect with `connector` and close connections idle for `idle_timeout`.
    pub fn new(connector: Connector, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(EndpointPools {
            pools: Mutex::new(HashMap::new()),
            connector,
            idle_timeout,
        })
    }

    /// The pool of `endpoint` for `version`, created on first use.
    pub fn get(&self, endpoint: &Endpoint, version: HttpVersion) -> Arc<EndpointPool> {
        let mut pools = self.pools.lock();
        // The endpoint is only cloned into a new pool's key.
        if let Some(pool) = pools.get(&PoolKey(endpoint, version)) {
            return pool.clone();
        }
        let pool = Arc::new(EndpointPool {
            addr: endpoint.addr,
            tls: self.connector.peer_tls(endpoint),
            endpoint: endpoint.clone(),
            version,
            connector: self.connector.clone(),
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            last_used: Mutex::new(Instant::now()),
        });
        pools.insert((endpoint.clone(), version), pool.clone());
        pool
    }

    /// Whether `endpoint` is spoken to over mesh TLS: another proxy, authenticated.
    pub fn is_meshed(&self, endpoint: &Endpoint) -> bool {
        matches!(self.connector.peer_tls(endpoint), PeerTls::Server(_))
    }

    /// Closes idle connections and forgets endpoints nobody uses, every so often, until
    /// the pools are dropped.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let period = (self.idle_timeout / 2).max(Duration::from_millis(500));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pools) = weak.upgrade() else { return };
                pools.sweep(Instant::now());
            }
        });
    }

    fn sweep(&self, now: Instant) {
        let mut pools = self.pools.lock();
        pools.retain(|_, pool| {
            pool.close_idle(now, self.idle_timeout);
            let in_use = Arc::strong_count(pool) > 1;
            let recent = now.duration_since(*pool.last_used.lock()) < self.idle_timeout;
            in_use || recent || !pool.idle.lock().is_empty()
        });
    }

    /// How many endpoints currently have a pool.
    pub fn len(&self) -> usize {
        self.pools.lock().len()
    }

    /// Whether no endpoint has a pool.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The connections to one endpoint.
pub struct EndpointPool {
    addr: SocketAddr,
    endpoint: Endpoint,
    tls: PeerTls,
    version: HttpVersion,
    connector: Connector,
    idle: Mutex<Vec<(Box<h1::Connection>, Instant)>>,
    /// The shared HTTP/2 connection, once opened.
    h2: Mutex<Option<h2::Connection>>,
    /// Held while the HTTP/2 connection is opened, so that requests wait for one.
    h2_connecting: tokio::sync::Mutex<()>,
    last_used: Mutex<Instant>,
}

impl EndpointPool {
    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How the endpoint is authenticated.
    pub fn tls(&self) -> &PeerTls {
        &self.tls
    }

    /// Whether a request sent now would find a connection already open (an idle HTTP/1
    /// one, or the shared HTTP/2 one), rather than pay for connecting.
    pub fn is_warm(&self) -> bool {
        match self.version {
            HttpVersion::Http1 => !self.idle.lock().is_empty(),
            HttpVersion::Http2 => self.open_http2().is_some(),
        }
    }

    /// Sends `req` on a pooled connection.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<ReplayBody>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        *self.last_used.lock() = Instant::now();
        match self.version {
            HttpVersion::Http1 => {
                let conn = match self.checkout() {
                    Some(conn) => conn,
                    None => {
                        h1::Connection::new(self.connector.connect(&self.endpoint, false).await?)
                    }
                };
                let pool = Arc::downgrade(self) as Weak<dyn Checkin>;
                let rsp = h1::send(conn, req, pool)
                    .await
                    .map_err(|e| self.failed(e))?;
                Ok(rsp.map(PooledBody::Http1))
            }
            HttpVersion::Http2 => Ok(self.send_http2(req).await?.map(PooledBody::Http2)),
        }
    }

    /// Sends `req` on the shared HTTP/2 connection.
    async fn send_http2<B>(&self, req: Request<B>) -> Result<Response<h2::ResponseBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<RequestBodyError> + Send,
    {
        let ready = match self.http2_connection().await?.ready().await {
            Ok(ready) => ready,
            // It went away (GOAWAY: its server is draining) before this request was sent
            // on it: the request goes on a new connection.
            Err(_) => self
                .http2_connection()
                .await?
                .ready()
                .await
                .map_err(|e| self.failed(Http2Error::from(e)))?,
        };
        ready.send(req).await.map_err(|e| self.failed(e))
    }

    /// Sends a protocol-switching request (`Upgrade`, `CONNECT`) on a connection of its own,
    /// which becomes the tunnel if the upstream agrees.
    pub async fn send_upgrade(
        &self,
        req: Request<ReplayBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mut sender = self.connect_upgradable().await?;
        sender.send_request(req).await.map_err(|e| self.failed(e))
    }

    /// The most recently used idle connection the upstream has not closed.
    fn checkout(&self) -> Option<Box<h1::Connection>> {
        let mut idle = self.idle.lock();
        while let Some((mut conn, _)) = idle.pop() {
            if !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }

    fn close_idle(&self, now: Instant, idle_timeout: Duration) {
        self.idle.lock().retain_mut(|(conn, since)| {
            !conn.is_stale() && now.duration_since(*since) < idle_timeout
        });
    }

    /// A connection of its own for a protocol switch, which hyper's client hands over
    /// once the upstream agrees.
    async fn connect_upgradable(&self) -> Result<http1::SendRequest<ReplayBody>, ProxyError> {
        let io = TokioIo::new(self.connector.connect(&self.endpoint, false).await?);
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| self.failed(e))?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                debug!(%addr, %error, "upstream HTTP/1 connection failed");
            }
        });
        Ok(sender)
    }

    /// The endpoint's HTTP/2 connection, opened on first use (by one request, while the
    /// others wait for it) and again once it has closed.
    async fn http2_connection(&self) -> Result<h2::Connection, ProxyError> {
        if let Some(conn) = self.open_http2() {
            return Ok(conn);
        }
        let _connecting = self.h2_connecting.lock().await;
        if let Some(conn) = self.open_http2() {
            return Ok(conn);
        }
        let io = self.connector.connect(&self.endpoint, false).await?;
        let conn = h2::Connection::handshake(io, self.addr, h2::KEEPALIVE)
            .await
            .map_err(|e| self.failed(Http2Error::from(e)))?;
        *self.h2.lock() = Some(conn.clone());
        Ok(conn)
    }

    fn open_http2(&self) -> Option<h2::Connection> {
        self.h2.lock().as_ref().filter(|c| !c.is_closed()).cloned()
    }

    /// What a failed exchange with the upstream was: the client's stalled body (its
    /// fault, answered 408), or the upstream's failure.
    fn failed(&self, e: impl ExchangeError) -> ProxyError {
        match e.stalled_body() {
            Some(idle) => ProxyError::RequestBodyTimeout { idle },
            None => ProxyError::UpstreamFailed {
                addr: self.addr,
                reason: e.reason(),
            },
        }
    }
}

/// An error of one of the upstream clients, which may be the client's stalled body.
trait ExchangeError: std::fmt::Display {
    /// How long the request body had stalled, when that is what failed.
    fn stalled_body(&self) -> Option<Duration>;
    /// The failure in plain words.
    fn reason(&self) -> String {
        self.to_string()
    }
}

impl ExchangeError for Http1Error {
    fn stalled_body(&self) -> Option<Duration> {
        match self {
            Http1Error::RequestBody(RequestBodyError::Idle(idle)) => Some(*idle),
            _ => None,
        }
    }
}

impl ExchangeError for Http2Error {
    fn stalled_body(&self) -> Option<Duration> {
        match self {
            Http2Error::RequestBody(RequestBodyError::Idle(idle)) => Some(*idle),
            _ => None,
        }
    }
}

impl ExchangeError for hyper::Error {
    fn stalled_body(&self) -> Option<Duration> {
        match std::error::Error::source(self).and_then(|s| s.downcast_ref::<RequestBodyError>()) {
            Some(RequestBodyError::Idle(idle)) => Some(*idle),
            _ => None,
        }
    }

    /// In plain words, with its causes.
    fn reason(&self) -> String {
        let mut text = if self.is_incomplete_message() {
            "the connection closed before a complete response arrived".to_string()
        } else if self.is_canceled() {
            "the request was canceled before it was sent".to_string()
        } else {
            self.to_string()
        };
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

impl Checkin for EndpointPool {
    fn checkin(&self, conn: Box<h1::Connection>) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push((conn, Instant::now()));
        }
    }
}

/// An upstream response body: read from a pooled HTTP/1 connection, which it hands back
/// at its end ([`h1::ResponseBody`]), from a stream of the shared HTTP/2 connection, or
/// hyper's (protocol switches).
pub enum PooledBody {
    Http1(h1::ResponseBody),
    Http2(h2::ResponseBody),
    Hyper(Incoming),
}

/// Why an upstream response body failed.
#[derive(Debug, thiserror::Error)]
pub enum PooledBodyError {
    #[error(transparent)]
    Http1(#[from] Http1Error),
    #[error(transparent)]
    Http2(#[from] ::h2::Error),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = PooledBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            PooledBody::Http1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            PooledBody::Http2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            PooledBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::Http1(b) => b.is_end_stream(),
            PooledBody::Http2(b) => b.is_end_stream(),
            PooledBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            PooledBody::Http1(b) => b.size_hint(),
            PooledBody::Http2(b) => b.size_hint(),
            PooledBody::Hyper(b) => b.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{peer::Direction, telemetry::metrics::TcpMetrics};
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;

    fn connector() -> Connector {
        Connector::new(
            Direction::Outbound,
            Duration::from_secs(1),
            TcpMetrics::default(),
            None,
        )
    }

    #[tokio::test]
    async fn a_request_after_the_server_went_away_goes_on_a_new_http2_connection() {
        let super::h2::tests::DrainingServer {
            addr,
            accepted,
            drain,
            release,
        } = super::h2::tests::draining_server().await;
        let pools = EndpointPools::new(connector(), Duration::from_secs(60));
        let pool = pools.get(&Endpoint::plain(addr), HttpVersion::Http2);
        let get = || {
            Request::get(format!("http://{addr}/"))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap()
        };
        let in_flight = pool.send_http2(get()).await.unwrap();
        drain.notify_one();
        // Time for the GOAWAY to arrive; the pool is not told of it otherwise.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let next = pool
            .send_http2(get())
            .await
            .expect("sent on a new connection, not failed");
        assert_eq!(
            &next.into_body().collect().await.unwrap().to_bytes()[..],
            b"ok"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        release.notify_one();
        let body = in_flight.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            b"ok",
            "the request in flight finished on the old one"
        );
    }

    #[tokio::test]
    async fn an_endpoint_and_version_have_one_pool_and_anything_else_its_own() {
        let pools = EndpointPools::new(connector(), Duration::from_secs(60));
        let plain = Endpoint::plain("198.18.0.1:8080".parse().unwrap());
        let named = |identity: &str, workload: &str| Endpoint {
            identity: Some(identity.into()),
            workload: Some(workload.into()),
            ..plain.clone()
        };
        let first = pools.get(&plain, HttpVersion::Http1);
        assert!(Arc::ptr_eq(
            &first,
            &pools.get(&plain.clone(), HttpVersion::Http1)
        ));
        // The same address under another identity (a reused pod address), workload or
        // version is another pool.
        let others = [
            pools.get(&plain, HttpVersion::Http2),
            pools.get(&named("web.emojivoto", "web.emojivoto"), HttpVersion::Http1),
            pools.get(
                &named("vote.emojivoto", "web.emojivoto"),
                HttpVersion::Http1,
            ),
            pools.get(
                &named("web.emojivoto", "vote.emojivoto"),
                HttpVersion::Http1,
            ),
        ];
        for (i, pool) in others.iter().enumerate() {
            assert!(!Arc::ptr_eq(&first, pool), "{i}");
            assert!(others[..i].iter().all(|p| !Arc::ptr_eq(p, pool)), "{i}");
        }
        let again = pools.get(&named("web.emojivoto", "web.emojivoto"), HttpVersion::Http1);
        assert!(Arc::ptr_eq(&others[1], &again));
        assert_eq!(pools.len(), 5);
    }
}
