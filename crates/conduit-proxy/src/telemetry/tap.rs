//! Tap: live request/response events for whoever observes, served over gRPC on the tap
//! port (4190). Nothing is recorded while no one observes: the data path checks one
//! atomic counter. Events go to observers through bounded channels and are dropped, never
//! waited for, when an observer is slow, so a tap can never slow traffic down. At most
//! [`MAX_OBSERVERS`] observe at once, so that what a tap costs the proxy is bounded.

use crate::{config::PodIdentity, peer::Direction, transport::tls::MeshTls};
use conduit_api::tap::{
    tap_event, tap_server::Tap, ConnectionDenied, EndpointHealth, ObserveRequest, RequestInit,
    ResponseEnd, ResponseInit, TapEvent,
};
use http::Request;
use parking_lot::Mutex;
use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tracing::info;

/// Events buffered per observer before new ones are dropped.
const BUFFER: usize = 1024;

/// The most observers at once; one more is refused (RESOURCE_EXHAUSTED).
pub const MAX_OBSERVERS: usize = 16;

/// Why an observer was not let in.
#[derive(Debug, thiserror::Error)]
#[error("{MAX_OBSERVERS} observers already tap this proxy; stop one of them first")]
pub struct TooManyObservers;

struct Observer {
    id: u64,
    authority: String,
    path_prefix: String,
    /// Requests still to report; `None` for no limit.
    remaining: Option<AtomicU32>,
    tx: mpsc::Sender<TapEvent>,
}

/// Everyone observing this proxy.
pub struct Taps {
    observers: Mutex<Vec<Arc<Observer>>>,
    active: AtomicUsize,
    next_observer: AtomicU64,
    next_request: AtomicU64,
    labels: HashMap<String, String>,
}

impl Taps {
    /// No observers yet; events carry the pod's identity.
    pub fn new(pod: &PodIdentity) -> Arc<Taps> {
        let labels = [
            ("namespace", &pod.namespace),
            ("deployment", &pod.deployment),
            ("pod", &pod.pod),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        Arc::new(Taps {
            observers: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            next_observer: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
            labels,
        })
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<Arc<Observer>>> {
        self.observers.lock()
    }

    /// Starts observing: events for matching requests arrive on the receiver.
    pub fn observe(
        &self,
        req: &ObserveRequest,
    ) -> Result<(u64, mpsc::Receiver<TapEvent>), TooManyObservers> {
        let mut observers = self.lock();
        if observers.len() >= MAX_OBSERVERS {
            return Err(TooManyObservers);
        }
        let (tx, rx) = mpsc::channel(BUFFER);
        let id = self.next_observer.fetch_add(1, Ordering::Relaxed);
        let observer = Arc::new(Observer {
            id,
            authority: req.authority.clone(),
            path_prefix: req.path_prefix.clone(),
            remaining: (req.limit > 0).then(|| AtomicU32::new(req.limit)),
            tx,
        });
        observers.push(observer);
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok((id, rx))
    }

    /// Stops observer `id`.
    pub fn forget(&self, id: u64) {
        let mut observers = self.lock();
        let before = observers.len();
        observers.retain(|o| o.id != id);
        if observers.len() < before {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether anyone observes.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// The observers that want an event with `authority` and `path`, each counting it
    /// against its limit.
    fn claim(&self, authority: &str, path: &str) -> Vec<mpsc::Sender<TapEvent>> {
        let mut exhausted = Vec::new();
        let senders = self
            .lock()
            .iter()
            .filter(|o| o.authority.is_empty() || authority.contains(&o.authority))
            .filter(|o| path.starts_with(&o.path_prefix))
            .filter(|o| match &o.remaining {
                None => true,
                Some(r) => {
                    let left =
                        r.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                    if left == Ok(1) {
                        exhausted.push(o.id);
                    }
                    left.is_ok()
                }
            })
            .map(|o| o.tx.clone())
            .collect();
        // An observer that has all its requests takes no new ones; its stream ends once
        // the ones in flight have been reported.
        for id in exhausted {
            self.forget(id);
        }
        senders
    }

    /// Reports a connection that policy kept out, if anyone wants it. Such a connection
    /// has no authority or path: observers filtering on a path don't see it, and one
    /// filtering on an authority sees it when the destination address contains it.
    pub fn connection_denied(
        &self,
        direction: Direction,
        source: SocketAddr,
        destination: SocketAddr,
        reason: &str,
        client_id: Option<&str>,
    ) {
        if !self.is_active() {
            return;
        }
        let senders = self.claim(&destination.to_string(), "");
        if senders.is_empty() {
            return;
        }
        self.tapped(senders, direction, source, destination).send(
            tap_event::Event::ConnectionDenied(ConnectionDenied {
                reason: reason.to_string(),
                client_id: client_id.unwrap_or_default().to_string(),
            }),
        );
    }

    /// Reports an endpoint ejected from its balancer for `backoff` (`None`: restored), if
    /// anyone wants it; observers see it as they see denied connections.
    pub fn endpoint_health(&self, endpoint: SocketAddr, backoff: Option<Duration>) {
        if !self.is_active() {
            return;
        }
        let senders = self.claim(&endpoint.to_string(), "");
        if senders.is_empty() {
            return;
        }
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut tapped = self.tapped(senders, Direction::Outbound, unspecified, endpoint);
        tapped.template.source.clear();
        tapped.send(tap_event::Event::EndpointHealth(EndpointHealth {
            ejected: backoff.is_some(),
            backoff_ms: backoff.map_or(0, |b| b.as_millis() as u64),
        }));
    }

    /// A new event stream for `senders`, numbered on this proxy.
    fn tapped(
        &self,
        senders: Vec<mpsc::Sender<TapEvent>>,
        direction: Direction,
        source: SocketAddr,
        destination: SocketAddr,
    ) -> TappedRequest {
        TappedRequest {
            senders,
            template: TapEvent {
                source: source.to_string(),
                destination: destination.to_string(),
                direction: direction.as_str().to_string(),
                proxy_labels: self.labels.clone(),
                peer_labels: HashMap::new(),
                request_id: self.next_request.fetch_add(1, Ordering::Relaxed),
                event: None,
            },
            started: Instant::now(),
        }
    }

    /// The tap of one request, if anyone wants it; reports its start.
    pub fn start<B>(
        self: &Arc<Self>,
        direction: Direction,
        req: &Request<B>,
        source: SocketAddr,
        destination: SocketAddr,
    ) -> Option<TappedRequest> {
        if !self.is_active() {
            return None;
        }
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let senders = self.claim(&authority, &path);
        if senders.is_empty() {
            return None;
        }
        let tapped = self.tapped(senders, direction, source, destination);
        tapped.send(tap_event::Event::RequestInit(RequestInit {
            method: req.method().to_string(),
            scheme: req.uri().scheme_str().unwrap_or("http").to_string(),
            authority,
            path,
        }));
        Some(tapped)
    }
}

/// One observed request: reports its response head and end.
pub struct TappedRequest {
    senders: Vec<mpsc::Sender<TapEvent>>,
    template: TapEvent,
    started: Instant,
}

impl TappedRequest {
    fn send(&self, event: tap_event::Event) {
        let mut e = self.template.clone();
        e.event = Some(event);
        for tx in &self.senders {
            // A full or closed observer loses this event; traffic never waits.
            let _ = tx.try_send(e.clone());
        }
    }

    /// The response head arrived.
    pub fn response_init(&self, status: u16) {
        self.send(tap_event::Event::ResponseInit(ResponseInit {
            status: status.into(),
            latency_us: self.started.elapsed().as_micros() as u64,
        }));
    }

    /// The response ended.
    pub fn response_end(&self, grpc_status: Option<u32>, response_bytes: u64, proxy_error: String) {
        self.send(tap_event::Event::ResponseEnd(ResponseEnd {
            grpc_status,
            duration_us: self.started.elapsed().as_micros() as u64,
            response_bytes,
            proxy_error,
        }));
    }
}

/// Who may observe.
#[derive(Clone)]
pub enum TapAccess {
    /// Anyone who reaches the port: a proxy without an identity has no way to tell.
    Open,
    /// Only `client`, proving it over mesh TLS: with an identity, the controller alone.
    MeshTls { tls: Arc<MeshTls>, client: Arc<str> },
}

/// How long a tap client has to finish its mesh TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves tap over HTTP/2 on `listener` to those `access` lets in, with the same hyper
/// server the proxy's own traffic uses (rather than a second HTTP stack from tonic's
/// transport).
pub async fn serve(listener: tokio::net::TcpListener, taps: Arc<Taps>, access: TapAccess) {
    let service = TapService::server(taps);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (service, access) = (service.clone(), access.clone());
        tokio::spawn(async move {
            let result = match access {
                TapAccess::Open => serve_h2(tcp, service).await,
                TapAccess::MeshTls { tls, client } => {
                    let Some(stream) = admit(&tls, &client, tcp, peer).await else {
                        return;
                    };
                    serve_h2(stream, service).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "tap connection ended");
            }
        });
    }
}

/// Terminates mesh TLS from a tap client and lets it in only if it proves `client`.
async fn admit(
    tls: &MeshTls,
    client: &str,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    if !tls
        .wait_certified(tokio::time::Instant::now() + HANDSHAKE_TIMEOUT)
        .await
    {
        info!(%peer, "tap refused: this proxy has no certificate yet to prove itself with");
        return None;
    }
    let accepted = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept_h2(tcp)).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(error)) => {
            info!(%peer, error = %crate::transport::connect::tls_reason(&error), "tap refused: the client did not prove a mesh identity over TLS");
            return None;
        }
        Err(_) => {
            info!(%peer, "tap refused: the client's TLS handshake timed out");
            return None;
        }
    };
    if &*accepted.client_id != client {
        info!(%peer, client_id = %accepted.client_id, allowed = client, "tap refused: only the controller may observe this proxy");
        return None;
    }
    Some(accepted.stream)
}

async fn serve_h2<I>(
    io: I,
    service: conduit_api::tap::tap_server::TapServer<TapService>,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(
            hyper_util::rt::TokioIo::new(io),
            hyper_util::service::TowerToHyperService::new(service),
        )
        .await
}

/// The gRPC side of tap.
#[derive(Clone)]
pub struct TapService {
    taps: Arc<Taps>,
}

impl TapService {
    /// Serves `taps`.
    pub fn server(taps: Arc<Taps>) -> conduit_api::tap::tap_server::TapServer<TapService> {
        conduit_api::tap::tap_server::TapServer::new(TapService { taps })
    }
}

/// Forgets its observer when the stream is dropped (the client went away).
struct ObserverStream {
    inner: ReceiverStream<TapEvent>,
    taps: Arc<Taps>,
    id: u64,
}

impl Stream for ObserverStream {
    type Item = Result<TapEvent, tonic::Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|e| e.map(Ok))
    }
}

impl Drop for ObserverStream {
    fn drop(&mut self) {
        self.taps.forget(self.id);
    }
}

#[tonic::async_trait]
impl Tap for TapService {
    type ObserveStream = Pin<Box<dyn Stream<Item = Result<TapEvent, tonic::Status>> + Send>>;

    async fn observe(
        &self,
        req: tonic::Request<ObserveRequest>,
    ) -> Result<tonic::Response<Self::ObserveStream>, tonic::Status> {
        let (id, rx) = self
            .taps
            .observe(req.get_ref())
            .map_err(|e| tonic::Status::resource_exhausted(e.to_string()))?;
        Ok(tonic::Response::new(Box::pin(ObserverStream {
            inner: ReceiverStream::new(rx),
            taps: self.taps.clone(),
            id,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodIdentity {
        PodIdentity {
            namespace: "emojivoto".into(),
            deployment: "web".into(),
            pod: "web-1".into(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn nothing_is_recorded_without_observers() {
        let taps = Taps::new(&pod());
        let req = Request::get("/api/list")
            .header("host", "web-svc")
            .body(())
            .unwrap();
        assert!(!taps.is_active());
        assert!(taps
            .start(
                Direction::Inbound,
                &req,
                addr("198.18.0.6:5000"),
                addr("198.18.0.4:8080")
            )
            .is_none());
    }

    #[tokio::test]
    async fn observers_are_capped_and_a_freed_place_is_taken_again() {
        let taps = Taps::new(&pod());
        let mut held: Vec<_> = (0..MAX_OBSERVERS)
            .map(|_| taps.observe(&ObserveRequest::default()).unwrap())
            .collect();
        assert!(taps.observe(&ObserveRequest::default()).is_err());
        let (id, _rx) = held.pop().unwrap();
        taps.forget(id);
        assert!(taps.observe(&ObserveRequest::default()).is_ok());
        assert!(taps.observe(&ObserveRequest::default()).is_err());
    }

    #[tokio::test]
    async fn observers_get_matching_requests_up_to_their_limit() {
        let taps = Taps::new(&pod());
        let (_, mut all) = taps.observe(&ObserveRequest::default()).unwrap();
        let (_, mut votes) = taps
            .observe(&ObserveRequest {
                limit: 1,
                path_prefix: "/api/vote".into(),
                ..ObserveRequest::default()
            })
            .unwrap();
        let vote = Request::get("/api/vote?choice=:joy:")
            .header("host", "web-svc")
            .body(())
            .unwrap();
        let list = Request::get("/api/list")
            .header("host", "web-svc")
            .body(())
            .unwrap();
        let t = taps
            .start(
                Direction::Inbound,
                &vote,
                addr("198.18.0.6:5000"),
                addr("198.18.0.4:8080"),
            )
            .unwrap();
        t.response_init(500);
        t.response_end(None, 12, String::new());
        drop(t);
        taps.start(
            Direction::Inbound,
            &vote,
            addr("198.18.0.6:5000"),
            addr("198.18.0.4:8080"),
        );
        taps.start(
            Direction::Inbound,
            &list,
            addr("198.18.0.6:5000"),
            addr("198.18.0.4:8080"),
        );

        let mut got = Vec::new();
        while let Ok(e) = votes.try_recv() {
            got.push(e);
        }
        assert_eq!(got.len(), 3, "one request: init, response, end");
        let Some(tap_event::Event::RequestInit(init)) = &got[0].event else {
            panic!("{got:?}")
        };
        assert_eq!(
            (
                init.method.as_str(),
                init.path.as_str(),
                init.authority.as_str()
            ),
            ("GET", "/api/vote?choice=:joy:", "web-svc")
        );
        assert_eq!(got[0].proxy_labels["deployment"], "web");
        let Some(tap_event::Event::ResponseInit(rsp)) = &got[1].event else {
            panic!()
        };
        assert_eq!(rsp.status, 500);
        let Some(tap_event::Event::ResponseEnd(end)) = &got[2].event else {
            panic!()
        };
        assert_eq!(end.response_bytes, 12);
        assert!(
            votes.recv().await.is_none(),
            "the limited observer's stream ends"
        );
        let mut inits = 0;
        while let Ok(e) = all.try_recv() {
            inits += usize::from(matches!(e.event, Some(tap_event::Event::RequestInit(_))));
        }
        assert_eq!(inits, 3, "the unlimited observer saw every request");
        assert!(taps.is_active());
    }

    #[tokio::test]
    async fn ejections_and_restorations_reach_observers_of_the_endpoint() {
        let taps = Taps::new(&pod());
        let (_, mut endpoint) = taps
            .observe(&ObserveRequest {
                authority: "198.18.0.5:8080".into(),
                ..ObserveRequest::default()
            })
            .unwrap();
        let (_, mut paths) = taps
            .observe(&ObserveRequest {
                path_prefix: "/".into(),
                ..ObserveRequest::default()
            })
            .unwrap();
        taps.endpoint_health(addr("198.18.0.6:8080"), Some(Duration::from_secs(1)));
        taps.endpoint_health(addr("198.18.0.5:8080"), Some(Duration::from_secs(2)));
        taps.endpoint_health(addr("198.18.0.5:8080"), None);
        let health = |e: TapEvent| match e.event {
            Some(tap_event::Event::EndpointHealth(h)) => {
                (e.destination, e.source, h.ejected, h.backoff_ms)
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            health(endpoint.try_recv().unwrap()),
            ("198.18.0.5:8080".into(), String::new(), true, 2000)
        );
        assert!(!health(endpoint.try_recv().unwrap()).2, "restored");
        assert!(
            endpoint.try_recv().is_err(),
            "the other endpoint's is not this observer's"
        );
        assert!(paths.try_recv().is_err(), "a path filter sees no ejection");
    }

    #[tokio::test]
    async fn denied_connections_reach_observers_that_filter_by_nothing_but_address() {
        let taps = Taps::new(&pod());
        let (_, mut all) = taps
            .observe(&ObserveRequest {
                limit: 1,
                ..ObserveRequest::default()
            })
            .unwrap();
        let (_, mut echo_port) = taps
            .observe(&ObserveRequest {
                authority: ":7000".into(),
                ..ObserveRequest::default()
            })
            .unwrap();
        let (_, mut paths) = taps
            .observe(&ObserveRequest {
                path_prefix: "/api".into(),
                ..ObserveRequest::default()
            })
            .unwrap();
        let id = "vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local";
        for port in [7000, 7001] {
            taps.connection_denied(
                Direction::Inbound,
                addr("198.18.0.6:5000"),
                SocketAddr::new(addr("198.18.0.4:0").ip(), port),
                "forbidden by policy: no",
                Some(id),
            );
        }

        let e = all.try_recv().unwrap();
        assert_eq!(e.destination, "198.18.0.4:7000");
        let Some(tap_event::Event::ConnectionDenied(d)) = &e.event else {
            panic!("{e:?}")
        };
        assert_eq!(
            (d.reason.as_str(), d.client_id.as_str()),
            ("forbidden by policy: no", id)
        );
        assert!(
            all.recv().await.is_none(),
            "a denial counts against a limit"
        );
        assert_eq!(echo_port.try_recv().unwrap().destination, "198.18.0.4:7000");
        assert!(
            echo_port.try_recv().is_err(),
            "port 7001 is not the observed address"
        );
        assert!(paths.try_recv().is_err(), "a connection has no path");
    }
}
