//! Golden HTTP metrics: counts each request, times it to the response head, and counts
//! the response once its body ends, classified as success or failure. gRPC calls are
//! classified by `grpc-status` (from trailers, or headers for trailers-only responses);
//! other responses fail on 5xx. The same points feed tap, when someone taps: one wrapper
//! around the response body serves both.
//!
//! A request is counted when its response head is known, which is after authorization and
//! routing: a request that policy denied is tapped but counted only as a denial, and the
//! `authority` label is decided ([`AuthorityLabels`]) once its side knows the name.

use super::{
    body::{BodyEnd, OnBodyEnd, WatchEnd},
    forward::Served,
    headers::{grpc_status, is_grpc},
    respond::DeniedByPolicy,
    routes::RouteMatch,
};
use crate::{
    errors::PROXY_ERROR_HEADER,
    peer::{Direction, PeerTls},
    telemetry::{
        labels::{AuthorityLabels, Target, UNKNOWN},
        metrics::{Classification, HttpMetrics, LatencyLabels, RequestLabels, ResponseLabels},
        tap::{TappedRequest, Taps},
    },
};
use bytes::Bytes;
use http::{header, uri::Authority, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use parking_lot::{Mutex, MutexGuard};
use pin_project_lite::pin_project;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::ready,
    task::{Context, Poll},
    time::Instant,
};

/// Asks discovery again which Service a connection goes to (`None`: still not known).
pub type ServiceOf = Arc<dyn Fn() -> Option<Arc<str>> + Send + Sync>;

/// Records metrics for every request that passes, and taps it when someone observes.
#[derive(Clone)]
pub struct RecordHttp<S> {
    inner: S,
    series: Arc<ConnSeries>,
    tap: Option<Arc<ConnTap>>,
}

/// What tap needs of a connection.
pub struct ConnTap {
    pub taps: Arc<Taps>,
    /// The client.
    pub source: std::net::SocketAddr,
    /// Where the client was going.
    pub destination: std::net::SocketAddr,
}

impl<S> RecordHttp<S> {
    /// Wraps `inner` for a connection to `target`; `labels` decides requests' `authority`
    /// labels.
    pub fn new(
        inner: S,
        direction: Direction,
        metrics: HttpMetrics,
        labels: AuthorityLabels,
        target: Target,
    ) -> Self {
        RecordHttp {
            inner,
            series: Arc::new(ConnSeries {
                direction,
                families: metrics,
                labels,
                service_of: None,
                tls: PeerTls::None,
                cache: Mutex::new(SeriesCache {
                    target,
                    authority: None,
                    latency: Vec::new(),
                    responses: Vec::new(),
                }),
            }),
            tap: None,
        }
    }

    /// Labels responses with the connection's client identity (inbound mesh TLS).
    /// Responses that carry a [`PeerTls`] extension (outbound: the endpoint's) use that.
    pub fn with_peer(mut self, tls: PeerTls) -> Self {
        if let Some(series) = Arc::get_mut(&mut self.series) {
            series.tls = tls;
        }
        self
    }

    /// Labels requests with the Service that `service_of` names once it does, when the
    /// connection was made before discovery knew (a keep-alive connection opened as its
    /// pods started would otherwise say `unknown` for its whole life).
    pub fn with_service_of(mut self, service_of: Option<ServiceOf>) -> Self {
        if let Some(series) = Arc::get_mut(&mut self.series) {
            series.service_of = service_of;
        }
        self
    }

    /// Also reports requests to tap observers.
    pub fn with_tap(mut self, tap: ConnTap) -> Self {
        self.tap = Some(Arc::new(tap));
        self
    }
}

/// One connection's handles into the HTTP families. A keep-alive connection nearly
/// always talks to one authority, so its series are looked up once and then reused,
/// without building labels, hashing them or taking the families' locks per request.
struct ConnSeries {
    direction: Direction,
    families: HttpMetrics,
    labels: AuthorityLabels,
    /// How to ask again what the control plane calls the connection's destination.
    service_of: Option<ServiceOf>,
    /// How the connection's client was authenticated.
    tls: PeerTls,
    cache: Mutex<SeriesCache>,
}

/// A response series within one authority: status code, classification, gRPC status, peer.
type ResponseKey = (u16, Classification, Option<u32>, PeerTls);

/// The series of the connection's current authority and route.
struct SeriesCache {
    /// Where the connection goes: its port, and what the control plane calls it.
    target: Target,
    authority: Option<CurrentAuthority>,
    latency: Vec<((u16, PeerTls), Histogram)>,
    responses: Vec<(ResponseKey, Counter)>,
}

/// The authority and route the connection's last request named, and their labels.
struct CurrentAuthority {
    named: Option<Box<str>>,
    key: SeriesKey,
    requests: Counter,
}

/// What a request's series are labelled with, besides the connection's: its authority
/// label and its route.
#[derive(Clone)]
struct SeriesKey {
    authority: Arc<str>,
    route: Arc<str>,
}

impl SeriesKey {
    fn is(&self, other: &SeriesKey) -> bool {
        Arc::ptr_eq(&self.authority, &other.authority) && self.route == other.route
    }
}

impl ConnSeries {
    fn cache(&self) -> MutexGuard<'_, SeriesCache> {
        self.cache.lock()
    }

    /// Counts a request that named `named` on `route`, returning its series' key. A name
    /// or a Service that was unknown is asked about again: discovery may have answered
    /// since.
    fn request(&self, named: Option<&str>, route: &Arc<str>) -> SeriesKey {
        let mut cache = self.cache();
        self.learn_service(&mut cache);
        if let Some(current) = &cache.authority {
            if current.named.as_deref() == named
                && &*current.key.authority != UNKNOWN
                && current.key.route == *route
            {
                current.requests.inc();
                return current.key.clone();
            }
        }
        let key = SeriesKey {
            authority: self.labels.label(named),
            route: route.clone(),
        };
        if let Some(current) = cache
            .authority
            .as_mut()
            .filter(|c| c.key.authority == key.authority && c.key.route == key.route)
        {
            current.named = named.map(Box::from);
            current.requests.inc();
            return current.key.clone();
        }
        let requests = self.families.requests.get(&RequestLabels {
            direction: self.direction,
            authority: key.authority.clone(),
            route: key.route.clone(),
            target: cache.target.clone(),
        });
        requests.inc();
        cache.latency.clear();
        cache.responses.clear();
        cache.authority = Some(CurrentAuthority {
            named: named.map(Box::from),
            key: key.clone(),
            requests,
        });
        key
    }

    /// Asks again which Service the connection goes to while its series say `unknown`;
    /// once discovery names it, the series cached for `unknown` are forgotten (a request
    /// in flight across the change may be counted under the new name).
    fn learn_service(&self, cache: &mut SeriesCache) {
        let Some(service_of) = &self.service_of else {
            return;
        };
        if !cache.target.is_unknown_service() {
            return;
        }
        if let Some(service) = service_of() {
            cache.target = cache.target.of_service(service);
            cache.authority = None;
        }
    }

    fn is_current(cache: &SeriesCache, key: &SeriesKey) -> bool {
        cache.authority.as_ref().is_some_and(|c| c.key.is(key))
    }

    fn latency(&self, key: &SeriesKey, status_code: u16, tls: &PeerTls, ms: f64) {
        let mut cache = self.cache();
        if let Some((_, h)) = cache
            .latency
            .iter()
            .find(|((s, t), _)| *s == status_code && t == tls)
        {
            if Self::is_current(&cache, key) {
                return h.observe(ms);
            }
        }
        let histogram = self.families.latency.get(&LatencyLabels {
            direction: self.direction,
            authority: key.authority.clone(),
            route: key.route.clone(),
            target: cache.target.clone(),
            status_code,
            tls: tls.clone(),
        });
        histogram.observe(ms);
        if Self::is_current(&cache, key) {
            cache.latency.push(((status_code, tls.clone()), histogram));
        }
    }

    fn response(
        &self,
        series: &SeriesKey,
        status_code: u16,
        class: Classification,
        grpc_status: Option<u32>,
        tls: PeerTls,
    ) {
        let key = (status_code, class, grpc_status, tls);
        let mut cache = self.cache();
        if let Some((_, c)) = cache.responses.iter().find(|(k, _)| *k == key) {
            if Self::is_current(&cache, series) {
                c.inc();
                return;
            }
        }
        let counter = self.families.responses.get(&ResponseLabels {
            direction: self.direction,
            authority: series.authority.clone(),
            route: series.route.clone(),
            target: cache.target.clone(),
            status_code,
            classification: class,
            grpc_status,
            tls: key.3.clone(),
        });
        counter.inc();
        if Self::is_current(&cache, series) {
            cache.responses.push((key, counter));
        }
    }
}

/// The authority a request named, held until its response: the URI's (HTTP/2, or an
/// absolute-form HTTP/1 target) or the `Host` header's. Both are cheap to clone.
enum Named {
    Uri(Authority),
    Host(HeaderValue),
}

impl Named {
    fn of<B>(req: &Request<B>) -> Option<Named> {
        match req.uri().authority() {
            Some(a) => Some(Named::Uri(a.clone())),
            None => req.headers().get(header::HOST).cloned().map(Named::Host),
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Named::Uri(a) => Some(a.as_str()),
            Named::Host(h) => h.to_str().ok(),
        }
    }
}

impl<S, B, RB> tower::Service<Request<B>> for RecordHttp<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    RB: Body<Data = Bytes>,
{
    type Response = Response<RecordBody<RB>>;
    type Error = S::Error;
    type Future = RecordFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let named = Named::of(&req);
        let route = RouteMatch::name_of(&req);
        let grpc = is_grpc(req.headers());
        let tapped = self.tap.as_ref().and_then(|t| {
            t.taps
                .start(self.series.direction, &req, t.source, t.destination)
        });
        RecordFuture {
            inner: self.inner.call(req),
            request: Some(Recorded {
                start,
                named,
                route,
                grpc,
                tapped,
                series: self.series.clone(),
            }),
        }
    }
}

pin_project! {
    /// A request on its way: the inner service's future, and what the request said, for
    /// when its response head arrives. (Named rather than boxed: one allocation less on
    /// every request.)
    pub struct RecordFuture<F> {
        #[pin]
        inner: F,
        request: Option<Recorded>,
    }
}

/// What [`RecordHttp`] keeps of a request until its response head.
struct Recorded {
    start: Instant,
    named: Option<Named>,
    route: Arc<str>,
    grpc: bool,
    tapped: Option<TappedRequest>,
    series: Arc<ConnSeries>,
}

impl<F, RB, E> Future for RecordFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: Body<Data = Bytes>,
{
    type Output = Result<Response<RecordBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let rsp = ready!(this.inner.poll(cx))?;
        match this.request.take() {
            Some(request) => Poll::Ready(Ok(request.response(rsp))),
            None => Poll::Pending, // polled after it completed
        }
    }
}

impl Recorded {
    /// Counts the response head and wraps its body to count its end.
    fn response<RB: Body<Data = Bytes>>(self, rsp: Response<RB>) -> Response<RecordBody<RB>> {
        let Recorded {
            start,
            named,
            route,
            grpc,
            tapped,
            series,
        } = self;
        let status_code = rsp.status().as_u16();
        let tls = match rsp.extensions().get::<Served>() {
            Some(s) if s.tls != PeerTls::None => s.tls.clone(),
            _ => series.tls.clone(),
        };
        let counted = rsp.extensions().get::<DeniedByPolicy>().is_none().then(|| {
            let key = series.request(named.as_ref().and_then(Named::as_str), &route);
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            series.latency(&key, status_code, &tls, ms);
            (series, key)
        });
        let grpc_status = grpc.then(|| grpc_status(rsp.headers())).flatten();
        let tap = tapped.map(|t| {
            t.response_init(status_code);
            let proxy_error = rsp
                .headers()
                .get(PROXY_ERROR_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (t, proxy_error, 0)
        });
        let outcome = Outcome {
            counted,
            tls,
            status_code,
            grpc,
            grpc_status,
            tap,
        };
        rsp.map(|inner| WatchEnd::new(inner, outcome))
    }
}

/// What is known of a response until its body ends.
pub struct Outcome {
    /// The connection's series and the request's; `None` for a request policy denied.
    counted: Option<(Arc<ConnSeries>, SeriesKey)>,
    tls: PeerTls,
    status_code: u16,
    grpc: bool,
    grpc_status: Option<u32>,
    /// When tapped: the tap, the proxy's error text if it made the response, bytes so far.
    tap: Option<(TappedRequest, String, u64)>,
}

impl Outcome {
    fn record(self, body_failed: bool) {
        let failed = match (self.grpc, self.grpc_status) {
            _ if body_failed => true,
            (true, Some(code)) => code != 0,
            _ => self.status_code >= 500,
        };
        let class = if failed {
            Classification::Failure
        } else {
            Classification::Success
        };
        if let Some((series, key)) = &self.counted {
            series.response(key, self.status_code, class, self.grpc_status, self.tls);
        }
        if let Some((tap, proxy_error, bytes)) = self.tap {
            tap.response_end(self.grpc_status, bytes, proxy_error);
        }
    }
}

/// The response is counted when its body ends, fails, or is dropped.
impl OnBodyEnd for Outcome {
    fn frame(&mut self, frame: &Frame<Bytes>) {
        if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
            self.grpc_status = Some(code);
        }
        if let (Some(data), Some((_, _, bytes))) = (frame.data_ref(), self.tap.as_mut()) {
            *bytes += data.len() as u64;
        }
    }

    fn end(self, end: BodyEnd) {
        self.record(end == BodyEnd::Failed);
    }
}

/// A response body that counts its response when it ends.
pub type RecordBody<B> = WatchEnd<B, Outcome>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::PodIdentity,
        telemetry::{
            labels::{KnownAuthorities, NoNames},
            metrics::Metrics,
        },
    };
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use tower::{service_fn, Service, ServiceExt};

    /// Vouches for every name: these tests are about counting, not naming.
    struct AnyName;

    impl KnownAuthorities for AnyName {
        fn knows(&self, _: &str, _: SocketAddr) -> bool {
            true
        }
    }

    fn any_name(orig_dst: &str) -> AuthorityLabels {
        AuthorityLabels::new(orig_dst.parse().unwrap(), Arc::new(AnyName))
    }

    type TestBody = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>,
    >;

    fn body(frames: Vec<Frame<Bytes>>) -> TestBody {
        StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>(),
        ))
    }

    async fn run(
        req: Request<()>,
        status: u16,
        headers: &[(&str, &str)],
        frames: Vec<Frame<Bytes>>,
    ) -> String {
        let metrics = Metrics::new(&PodIdentity::default());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let frames = std::sync::Mutex::new(Some(frames));
        let inner = service_fn(move |_req: Request<()>| {
            let mut rsp = Response::builder().status(status);
            for (k, v) in &headers {
                rsp = rsp.header(k, v);
            }
            let frames = frames.lock().unwrap().take().expect("one request per test");
            let rsp = rsp.body(body(frames)).unwrap();
            async move { Ok::<_, Infallible>(rsp) }
        });
        let mut svc = RecordHttp::new(
            inner,
            Direction::Inbound,
            metrics.http.clone(),
            any_name("198.18.0.2:80"),
            Target::server(80, None),
        );
        let rsp = svc.ready().await.unwrap().call(req).await.unwrap();
        rsp.into_body().collect().await.unwrap();
        metrics.encode()
    }

    fn trailers(pairs: &[(&'static str, &'static str)]) -> Frame<Bytes> {
        let mut map = http::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        Frame::trailers(map)
    }

    #[tokio::test]
    async fn http_status_classifies_plain_responses() {
        let req = Request::get("/").header("host", "web:80").body(()).unwrap();
        let text = run(req, 503, &[], vec![Frame::data(Bytes::from_static(b"x"))]).await;
        assert!(
            text.contains(r#"request_total{direction="inbound",authority="web:80",route="[default]",target_port="80",srv_name="default"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"response_total{direction="inbound",authority="web:80",route="[default]",target_port="80",srv_name="default",status_code="503",classification="failure",grpc_status="",tls="false"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"response_latency_ms_count{direction="inbound",authority="web:80",route="[default]",target_port="80",srv_name="default",status_code="503",tls="false"} 1"#), "{text}");
    }

    #[tokio::test]
    async fn grpc_status_in_trailers_classifies_grpc() {
        let req = || {
            Request::post("http://emoji:8080/Emoji/List")
                .header("content-type", "application/grpc")
                .body(())
                .unwrap()
        };
        let ok = run(
            req(),
            200,
            &[],
            vec![
                Frame::data(Bytes::from_static(b"m")),
                trailers(&[("grpc-status", "0")]),
            ],
        )
        .await;
        assert!(
            ok.contains(
                r#"status_code="200",classification="success",grpc_status="0",tls="false"} 1"#
            ),
            "{ok}"
        );
        let failed = run(req(), 200, &[], vec![trailers(&[("grpc-status", "14")])]).await;
        assert!(
            failed.contains(
                r#"status_code="200",classification="failure",grpc_status="14",tls="false"} 1"#
            ),
            "{failed}"
        );
        let trailers_only = run(req(), 200, &[("grpc-status", "5")], vec![]).await;
        assert!(
            trailers_only.contains(r#"classification="failure",grpc_status="5",tls="false"} 1"#),
            "{trailers_only}"
        );
    }

    #[tokio::test]
    async fn requests_without_authority_use_the_fallback() {
        let req = Request::get("/")
            .version(http::Version::HTTP_10)
            .body(())
            .unwrap();
        let text = run(req, 200, &[], vec![]).await;
        assert!(
            text.contains(r#"request_total{direction="inbound",authority="198.18.0.2:80",route="[default]",target_port="80",srv_name="default"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"classification="success""#), "{text}");
    }

    #[tokio::test]
    async fn a_connection_made_before_discovery_answered_is_labelled_once_it_has() {
        let metrics = Metrics::new(&PodIdentity::default());
        let inner = service_fn(|_: Request<()>| async move {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let service_of: ServiceOf = {
            let answered = answered.clone();
            Arc::new(move || {
                answered
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then(|| "web-svc.emojivoto".into())
            })
        };
        let mut svc = RecordHttp::new(
            inner,
            Direction::Outbound,
            metrics.http.clone(),
            any_name("198.19.0.3:80"),
            Target::service(80, None),
        )
        .with_service_of(Some(service_of));
        for round in 0..5 {
            answered.store(round >= 2, std::sync::atomic::Ordering::SeqCst);
            let req = Request::get("/")
                .header("host", "web-svc.emojivoto")
                .body(())
                .unwrap();
            let rsp = svc.ready().await.unwrap().call(req).await.unwrap();
            rsp.into_body().collect().await.unwrap();
        }
        let text = metrics.encode();
        for (service, n) in [("unknown", 2), ("web-svc.emojivoto", 3)] {
            let series = format!(
                r#"response_total{{direction="outbound",authority="web-svc.emojivoto",route="[default]",target_port="80",dst_service="{service}",status_code="200",classification="success",grpc_status="",tls="false"}} {n}"#
            );
            assert!(text.contains(&series), "{series}:\n{text}");
            let series = format!(
                r#"response_latency_ms_count{{direction="outbound",authority="web-svc.emojivoto",route="[default]",target_port="80",dst_service="{service}",status_code="200",tls="false"}} {n}"#
            );
            assert!(text.contains(&series), "{series}:\n{text}");
        }
    }

    #[tokio::test]
    async fn one_connection_counts_every_authority_and_status_apart() {
        let metrics = Metrics::new(&PodIdentity::default());
        let inner = service_fn(|req: Request<()>| async move {
            let status = if req.uri().path() == "/fail" {
                503
            } else {
                200
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        });
        let mut svc = RecordHttp::new(
            inner,
            Direction::Outbound,
            metrics.http.clone(),
            any_name("198.18.0.9:1"),
            Target::service(1, Some("web-svc.emojivoto".into())),
        );
        for (host, path) in [
            ("a:80", "/"),
            ("a:80", "/fail"),
            ("b:80", "/"),
            ("a:80", "/"),
            ("a:80", "/fail"),
        ] {
            let req = Request::get(path).header("host", host).body(()).unwrap();
            let rsp = svc.ready().await.unwrap().call(req).await.unwrap();
            rsp.into_body().collect().await.unwrap();
        }
        let text = metrics.encode();
        for (series, n) in [
            (
                r#"request_total{direction="outbound",authority="a:80",route="[default]",target_port="1",dst_service="web-svc.emojivoto"}"#,
                4,
            ),
            (
                r#"request_total{direction="outbound",authority="b:80",route="[default]",target_port="1",dst_service="web-svc.emojivoto"}"#,
                1,
            ),
            (
                r#"response_total{direction="outbound",authority="a:80",route="[default]",target_port="1",dst_service="web-svc.emojivoto",status_code="200",classification="success",grpc_status="",tls="false"}"#,
                2,
            ),
            (
                r#"response_total{direction="outbound",authority="a:80",route="[default]",target_port="1",dst_service="web-svc.emojivoto",status_code="503",classification="failure",grpc_status="",tls="false"}"#,
                2,
            ),
            (
                r#"response_total{direction="outbound",authority="b:80",route="[default]",target_port="1",dst_service="web-svc.emojivoto",status_code="200",classification="success",grpc_status="",tls="false"}"#,
                1,
            ),
            (
                r#"response_latency_ms_count{direction="outbound",authority="a:80",route="[default]",target_port="1",dst_service="web-svc.emojivoto",status_code="503",tls="false"}"#,
                2,
            ),
            (
                r#"response_latency_ms_count{direction="outbound",authority="b:80",route="[default]",target_port="1",dst_service="web-svc.emojivoto",status_code="200",tls="false"}"#,
                1,
            ),
        ] {
            assert!(
                text.contains(&format!("{series} {n}\n")),
                "{series} should be {n}:\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn requests_are_counted_by_their_route() {
        use crate::http::routes::{BudgetPolicy, Profile, ProfileRoute, RouteMatch};
        let metrics = Metrics::new(&PodIdentity::default());
        let inner = service_fn(|_: Request<()>| async move {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
        let mut svc = RecordHttp::new(
            inner,
            Direction::Outbound,
            metrics.http.clone(),
            any_name("198.18.0.9:1"),
            Target::service(1, Some("web-svc.emojivoto".into())),
        );
        let route = |name: &str| ProfileRoute {
            name: name.into(),
            method: None,
            timeout: None,
            retryable: false,
            retry_grpc: 1 << 14,
        };
        let profile = Arc::new(
            Profile::new(
                vec![
                    (route("list"), "/api/list".into()),
                    (route("vote"), "/api/vote".into()),
                ],
                BudgetPolicy::default(),
            )
            .unwrap(),
        );
        // Routes alternate on one connection: each is counted apart, and a request
        // nobody named a route for is the default's.
        for path in ["/api/list", "/api/vote", "/api/list", "/", "/api/list"] {
            let mut req = Request::get(path).header("host", "a:80").body(()).unwrap();
            if path != "/" {
                let matched = RouteMatch {
                    route: profile.route(req.method(), path).clone(),
                    profile: profile.clone(),
                    budget: None,
                    backend: None,
                };
                req.extensions_mut().insert(matched);
            }
            let rsp = svc.ready().await.unwrap().call(req).await.unwrap();
            rsp.into_body().collect().await.unwrap();
        }
        let text = metrics.encode();
        for (route, n) in [("list", 3), ("vote", 1), ("[default]", 1)] {
            let requests = format!(
                r#"request_total{{direction="outbound",authority="a:80",route="{route}",target_port="1",dst_service="web-svc.emojivoto"}} {n}"#
            );
            let responses = format!(
                r#"response_total{{direction="outbound",authority="a:80",route="{route}",target_port="1",dst_service="web-svc.emojivoto",status_code="200",classification="success",grpc_status="",tls="false"}} {n}"#
            );
            assert!(text.contains(&requests), "{requests}:\n{text}");
            assert!(text.contains(&responses), "{responses}:\n{text}");
        }
    }

    #[tokio::test]
    async fn names_nobody_vouches_for_share_one_series_and_denied_requests_are_not_traffic() {
        let metrics = Metrics::new(&PodIdentity::default());
        let inner = service_fn(|req: Request<()>| async move {
            let mut rsp = Response::new(Full::new(Bytes::new()));
            if req.uri().path() == "/denied" {
                *rsp.status_mut() = http::StatusCode::FORBIDDEN;
                rsp.extensions_mut().insert(DeniedByPolicy);
            }
            Ok::<_, Infallible>(rsp)
        });
        let labels = AuthorityLabels::new("198.18.0.2:8080".parse().unwrap(), Arc::new(NoNames));
        let target = Target::server(8080, Some("web-http"));
        let mut svc = RecordHttp::new(
            inner,
            Direction::Inbound,
            metrics.http.clone(),
            labels,
            target,
        );
        // A client flooding distinct Host headers, each as long as a header may be.
        for i in 0..2000 {
            let host = format!("{i}-{}.example", "x".repeat(200));
            let req = Request::get("/").header("host", host).body(()).unwrap();
            let rsp = svc.ready().await.unwrap().call(req).await.unwrap();
            rsp.into_body().collect().await.unwrap();
        }
        let req = Request::get("/denied")
            .header("host", "a.example")
            .body(())
            .unwrap();
        let rsp = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(rsp.status(), 403);
        rsp.into_body().collect().await.unwrap();
        let text = metrics.encode();
        assert!(
            text.contains(&format!(
                "request_total{{direction=\"inbound\",authority=\"{UNKNOWN}\",route=\"[default]\",target_port=\"8080\",srv_name=\"web-http\"}} 2000\n"
            )),
            "{text}"
        );
        assert!(!text.contains(".example"), "{text}");
        assert!(!text.contains("status_code=\"403\""), "{text}");
        assert!(text.len() < 8 * 1024, "{} bytes:\n{text}", text.len());
    }

    #[tokio::test]
    async fn a_body_dropped_early_is_still_counted() {
        let metrics = Metrics::new(&PodIdentity::default());
        let inner = service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"abc"))))
        });
        let mut svc = RecordHttp::new(
            inner,
            Direction::Outbound,
            metrics.http.clone(),
            any_name("198.18.0.9:1"),
            Target::service(1, Some("web-svc.emojivoto".into())),
        );
        let rsp = svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        drop(rsp);
        assert!(metrics.encode().contains(r#"response_total{direction="outbound",authority="198.18.0.9:1",route="[default]",target_port="1",dst_service="web-svc.emojivoto",status_code="200",classification="success",grpc_status="",tls="false"} 1"#));
    }
}
