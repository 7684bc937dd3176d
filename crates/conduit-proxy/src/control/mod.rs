//! The proxy's clients of the control plane: endpoint [`discovery`], the pod's inbound
//! [`policy`] and its [`identity`] (certificates). This module owns the connection they
//! share: one HTTP/2 connection, opened on first use and reopened after it fails, carrying
//! the gRPC calls of the generated clients (hyper's client, which the proxy already has,
//! rather than a second HTTP stack), and [`follow`], which keeps a server stream open.

pub mod discovery;
pub mod identity;
pub mod policy;

use futures_util::future::BoxFuture;
use http::{uri::PathAndQuery, Request, Response, Uri};
use hyper::{body::Incoming, client::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

type Sender = http2::SendRequest<tonic::body::Body>;

/// A gRPC transport to `host:port`.
#[derive(Clone)]
pub struct ControlPlane {
    addr: Arc<str>,
    sender: Arc<tokio::sync::Mutex<Option<Sender>>>,
}

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("resolving the control plane's address {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to the control plane at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("the control plane at {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
}

impl ControlPlane {
    /// A transport to `addr` (`host:port`); nothing connects until the first call.
    pub fn new(addr: &str) -> ControlPlane {
        ControlPlane {
            addr: addr.into(),
            sender: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    async fn sender(&self) -> Result<Sender, ControlError> {
        let mut shared = self.sender.lock().await;
        if let Some(s) = shared.as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let addr = self.addr.to_string();
        let resolved = tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(|source| ControlError::Resolve {
                addr: addr.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| ControlError::Resolve {
                addr: addr.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let tcp = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(resolved),
        )
        .await
        .map_err(|_| ControlError::Connect {
            addr: addr.clone(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out after 2s"),
        })?
        .map_err(|source| ControlError::Connect {
            addr: addr.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|source| ControlError::Http {
                addr: addr.clone(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "control plane connection ended");
            }
        });
        *shared = Some(sender.clone());
        Ok(sender)
    }
}

impl tower::Service<Request<tonic::body::Body>> for ControlPlane {
    type Response = Response<Incoming>;
    type Error = ControlError;
    type Future = BoxFuture<'static, Result<Response<Incoming>, ControlError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ControlError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // HTTP/2 needs a scheme and an authority; the generated client gives a path.
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            if let Ok(uri) = Uri::builder()
                .scheme("http")
                .authority(&*this.addr)
                .path_and_query(path)
                .build()
            {
                *req.uri_mut() = uri;
            }
            let mut sender = this.sender().await?;
            sender
                .send_request(req)
                .await
                .map_err(|source| ControlError::Http {
                    addr: this.addr.to_string(),
                    source,
                })
        })
    }
}

/// What happened to a followed stream, for the follower to act on.
pub enum Followed<T> {
    /// A message arrived.
    Message(T),
    /// The call could not be made (the control plane is unreachable, say).
    Failed(tonic::Status),
    /// An open stream ended or broke; it is reopened.
    Lost,
}

/// Follows a server-streaming call until `closed` resolves: opens it with `open`, reports
/// every message, failure and loss to `on`, and reopens it after a failure or loss with
/// backoff (250 ms, doubling to 10 s, reset by a successful open).
pub async fn follow<T, Open, Fut>(
    mut open: Open,
    mut on: impl FnMut(Followed<T>),
    closed: impl std::future::Future<Output = ()>,
) where
    Open: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
{
    tokio::pin!(closed);
    let mut backoff = Duration::from_millis(250);
    loop {
        match open().await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                backoff = Duration::from_millis(250);
                loop {
                    tokio::select! {
                        msg = stream.message() => match msg {
                            Ok(Some(m)) => on(Followed::Message(m)),
                            Ok(None) | Err(_) => break,
                        },
                        () = &mut closed => return,
                    }
                }
                on(Followed::Lost);
            }
            Err(status) => on(Followed::Failed(status)),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = &mut closed => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
