//! The metrics API on a Prometheus (`--prometheus-url`), for meshes whose history does
//! not fit in the controller's memory. Every query is PromQL over the proxies' series
//! (job [`admin::SCRAPE_JOB`]): per pod, the `increase` over the window of the counters
//! the store keeps (`sum by` the labels its reductions read), and the open connections
//! now. Those answers become [`Increases`], two scrapes per pod and moment (zero at the
//! window's start, the increases at its end), which the store's own reductions
//! ([`Queries`](crate::store::Queries)) turn into rows: one reduction, two sources, the
//! same answers. A Prometheus that is down, slow or answers something else is a
//! [`PrometheusError`] naming it, which the API serves as a 503; what it sends is read up
//! to [`MAX_ANSWER_BYTES`].

use crate::{
    prom::Sample,
    store::{series, History, PodScrape},
};
use conduit_api::{admin, prometheus::PrometheusUrl};
use futures_util::future::try_join_all;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// The most an answer may hold: the samples of every pod of a large mesh, with room.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// How long a query may take unless `--prometheus-timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong asking Prometheus, said so that the reader knows where to look.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("the Prometheus at {url} did not answer within {}; it may be overloaded (the controller's --prometheus-timeout)", humantime::format_duration(*.timeout))]
    Timeout { url: String, timeout: Duration },
    #[error("cannot reach the Prometheus at {url}: {reason}; check that it runs and that the controller's --prometheus-url points at it")]
    Unreachable { url: String, reason: String },
    #[error("the Prometheus at {url} refused a query ({status}): {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the Prometheus at {url} answered something that is not its query API's: {reason}")]
    Malformed { url: String, reason: String },
}

/// A Prometheus the metrics API queries.
pub struct Prometheus {
    url: PrometheusUrl,
    timeout: Duration,
}

/// Which proxies' series a query reads: label matchers on the pods' names.
#[derive(Clone, Debug, Default)]
pub struct Scope<'a> {
    /// `(label, value)` pairs, like `("namespace", "emojivoto")`.
    pub matchers: Vec<(&'static str, &'a str)>,
}

/// The label sets the store's reductions read, per metric, beside the pod's names.
const RESPONSES_BY: &str =
    "direction, authority, route, dst_service, classification, tls, server_id";
const LATENCY_BY: &str = "direction, authority, route, dst_service, le";
const ATTEMPTS_BY: &str = "direction, route, dst_service, classification";

impl Prometheus {
    pub fn new(url: PrometheusUrl, timeout: Duration) -> Prometheus {
        Prometheus { url, timeout }
    }

    /// Every pod's increases over the `window` before now, and its open connections.
    pub async fn increases(
        &self,
        scope: &Scope<'_>,
        window: Duration,
    ) -> Result<Increases, PrometheusError> {
        let (at, wall) = (Instant::now(), unix_seconds(SystemTime::now()));
        let moment = [("time", format!("{wall:.3}"))];
        let queries = counter_queries(scope, window);
        let tcp = format!("{}|{}", series::TCP_OPEN, series::TCP_CLOSE);
        let connections = format!(
            "sum by (__name__, namespace, pod, direction, peer) ({{{}}})",
            selector(
                scope,
                &[
                    ("__name__", "=~", &tcp),
                    ("direction", "=", "inbound"),
                    ("peer", "=", "src"),
                ]
            )
        );
        let (answers, connections) = tokio::try_join!(
            try_join_all(queries.iter().map(|(_, q)| self.vector(q, &moment))),
            self.vector(&connections, &moment),
        )?;
        let mut by_pod: HashMap<(String, String), Vec<Sample>> = HashMap::new();
        let counted = queries
            .iter()
            .zip(&answers)
            .flat_map(|((name, _), answer)| answer.iter().map(move |s| (*name, s)));
        let open = connections.iter().map(|s| {
            let name = s.metric.get("__name__").map_or("", String::as_str);
            (name, s)
        });
        for (name, s) in counted.chain(open) {
            if let Some((pod, sample)) = sample_of(name, &s.metric, &s.value.1) {
                by_pod.entry(pod).or_default().push(sample);
            }
        }
        let mut increases = Increases::default();
        for (pod, samples) in by_pod {
            increases.add(pod, at, window, &samples);
        }
        Ok(increases)
    }

    /// Every pod's increases over `range` at `points` moments `step` apart, the last now.
    pub async fn increases_over_time(
        &self,
        scope: &Scope<'_>,
        points: u32,
        step: Duration,
        range: Duration,
    ) -> Result<Increases, PrometheusError> {
        let (at, end) = (Instant::now(), unix_seconds(SystemTime::now()));
        let start = end - step.as_secs_f64() * f64::from(points.saturating_sub(1));
        let form = [
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{:.3}", step.as_secs_f64())),
        ];
        // A series shows responses and latency: route attempts are not asked for.
        let queries = &counter_queries(scope, range)[..2];
        let answers = try_join_all(queries.iter().map(|(_, q)| self.matrix(q, &form))).await?;
        // Per pod and moment, the samples at that moment.
        let mut moments: HashMap<((String, String), u64), Vec<Sample>> = HashMap::new();
        for ((name, _), answer) in queries.iter().zip(answers) {
            for s in answer {
                for (ts, value) in &s.values {
                    if let Some((pod, sample)) = sample_of(name, &s.metric, value) {
                        let ts_ms = (ts * 1000.0).round() as u64;
                        moments.entry((pod, ts_ms)).or_default().push(sample);
                    }
                }
            }
        }
        let mut increases = Increases::default();
        for ((pod, ts_ms), samples) in moments {
            let ago = Duration::from_secs_f64((end - ts_ms as f64 / 1000.0).max(0.0));
            if let Some(moment) = at.checked_sub(ago) {
                increases.add(pod, moment, range, &samples);
            }
        }
        Ok(increases)
    }

    /// `/api/v1/query` for `query`: an instant vector.
    async fn vector(
        &self,
        query: &str,
        form: &[(&str, String)],
    ) -> Result<Vec<InstantSample>, PrometheusError> {
        match self.ask("/api/v1/query", query, form).await? {
            QueryData::Vector(v) => Ok(v),
            other => Err(self.malformed(format!("expected a vector, got {}", other.kind()))),
        }
    }

    /// `/api/v1/query_range` for `query`: a matrix.
    async fn matrix(
        &self,
        query: &str,
        form: &[(&str, String)],
    ) -> Result<Vec<RangeSeries>, PrometheusError> {
        match self.ask("/api/v1/query_range", query, form).await? {
            QueryData::Matrix(m) => Ok(m),
            other => Err(self.malformed(format!("expected a matrix, got {}", other.kind()))),
        }
    }

    /// POSTs `query` (and `form`) to `path`, within the timeout, and reads the answer.
    async fn ask(
        &self,
        path: &str,
        query: &str,
        form: &[(&str, String)],
    ) -> Result<QueryData, PrometheusError> {
        let mut fields: Vec<(&str, &str)> = vec![("query", query)];
        let timeout = format!("{}ms", self.timeout.as_millis());
        fields.push(("timeout", &timeout));
        fields.extend(form.iter().map(|(k, v)| (*k, v.as_str())));
        let body =
            serde_urlencoded::to_string(&fields).map_err(|e| self.malformed(e.to_string()))?;
        let url = self.url.to_string();
        let answer = tokio::time::timeout(self.timeout, self.post(path, body))
            .await
            .map_err(|_| PrometheusError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })??;
        let (status, bytes) = answer;
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| {
            if status.is_success() {
                self.malformed(e.to_string())
            } else {
                PrometheusError::Refused {
                    url: url.clone(),
                    status: status.as_u16(),
                    message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into(),
                }
            }
        })?;
        match (answer.status.as_str(), answer.data) {
            ("success", Some(data)) => Ok(data),
            _ => Err(PrometheusError::Refused {
                url,
                status: status.as_u16(),
                message: format!(
                    "{}: {}",
                    answer.error_type.unwrap_or_else(|| "error".into()),
                    answer.error.unwrap_or_default()
                ),
            }),
        }
    }

    /// One HTTP/1.1 request on its own connection: queries are seconds apart, and a
    /// Prometheus that restarts must not leave a dead pooled connection behind.
    async fn post(
        &self,
        path: &str,
        body: String,
    ) -> Result<(http::StatusCode, bytes::Bytes), PrometheusError> {
        let unreachable = |reason: String| PrometheusError::Unreachable {
            url: self.url.to_string(),
            reason,
        };
        let tcp = tokio::net::TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(conn);
        let req = http::Request::post(format!("{}{path}", self.url.prefix))
            .header(http::header::HOST, self.url.authority())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = rsp.status();
        let bytes = http_body_util::Limited::new(rsp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| self.malformed(format!("reading its answer: {e}")))?
            .to_bytes();
        Ok((status, bytes))
    }

    fn malformed(&self, reason: String) -> PrometheusError {
        PrometheusError::Malformed {
            url: self.url.to_string(),
            reason,
        }
    }
}

/// The three counter queries over `window`, each with the series it reads: responses,
/// latency buckets, route attempts.
fn counter_queries(scope: &Scope<'_>, window: Duration) -> [(&'static str, String); 3] {
    let range = format!("{}ms", window.as_millis().max(1));
    [
        (series::RESPONSES, RESPONSES_BY),
        (series::LATENCY_BUCKETS, LATENCY_BY),
        (series::ROUTE_ATTEMPTS, ATTEMPTS_BY),
    ]
    .map(|(name, by)| {
        let query = format!(
            "sum by (namespace, pod, {by}) (increase({name}{{{}}}[{range}]))",
            selector(scope, &[])
        );
        (name, query)
    })
}

/// The label matchers of the proxies' job, the scope and `extra`, quoted for PromQL.
fn selector(scope: &Scope<'_>, extra: &[(&str, &str, &str)]) -> String {
    let job = [("job", "=", admin::SCRAPE_JOB)];
    let scoped: Vec<(&str, &str, &str)> = scope
        .matchers
        .iter()
        .map(|(label, value)| (*label, "=", *value))
        .collect();
    job.iter()
        .chain(&scoped)
        .chain(extra)
        .map(|(label, op, value)| format!("{label}{op}{}", quote(value)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `value` as a PromQL string literal.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An answered sample as the sample the store would have scraped, with its pod's names;
/// `None` for one without a pod or a finite value.
fn sample_of(
    name: &str,
    metric: &BTreeMap<String, String>,
    value: &str,
) -> Option<((String, String), Sample)> {
    let value = value.parse::<f64>().ok().filter(|v| v.is_finite())?;
    let pod = (metric.get("namespace")?.clone(), metric.get("pod")?.clone());
    let labels = metric
        .iter()
        .filter(|(k, v)| !matches!(k.as_str(), "namespace" | "pod" | "__name__") && !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let name = name.to_string();
    Some((
        pod,
        Sample {
            name,
            labels,
            value,
        },
    ))
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Pods' increases over windows ending at given moments, as the store's scrapes: for
/// each pod and moment, an empty scrape at the window's start and one holding the
/// increases (and the open connections) at its end.
#[derive(Default)]
pub struct Increases {
    /// By pod (namespace, name), its moments in order.
    pods: HashMap<(String, String), Vec<Moment>>,
}

/// A moment, and the two scrapes whose difference is the increase over its window.
type Moment = (Instant, [PodScrape; 2]);

impl Increases {
    fn add(&mut self, pod: (String, String), at: Instant, window: Duration, samples: &[Sample]) {
        let start = at.checked_sub(window).unwrap_or(at);
        let moments = self.pods.entry(pod).or_default();
        let pair = [
            PodScrape::from_samples(start, &[]),
            PodScrape::from_samples(at, samples),
        ];
        let i = moments.partition_point(|(t, _)| *t < at);
        moments.insert(i, (at, pair));
    }
}

impl History for Increases {
    /// The moment nearest `now`: queries take their own `now` a moment after the one
    /// Prometheus was asked for.
    fn window(&self, namespace: &str, name: &str, now: Instant, _: Duration) -> &[PodScrape] {
        let Some(moments) = self.pods.get(&(namespace.to_string(), name.to_string())) else {
            return &[];
        };
        let distance = |t: &Instant| {
            if *t > now {
                *t - now
            } else {
                now - *t
            }
        };
        moments
            .iter()
            .min_by_key(|(t, _)| distance(t))
            .map_or(&[][..], |(_, pair)| &pair[..])
    }
}

/// Prometheus' answer to a query.
#[derive(Deserialize)]
struct Answer {
    status: String,
    data: Option<QueryData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum QueryData {
    Vector(Vec<InstantSample>),
    Matrix(Vec<RangeSeries>),
    Scalar(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

impl QueryData {
    fn kind(&self) -> &'static str {
        match self {
            QueryData::Vector(_) => "a vector",
            QueryData::Matrix(_) => "a matrix",
            QueryData::Scalar(_) => "a scalar",
            QueryData::String(_) => "a string",
        }
    }
}

#[derive(Deserialize)]
struct InstantSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct RangeSeries {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn at(addr: std::net::SocketAddr, timeout: Duration) -> Prometheus {
        let url = format!("http://{addr}").parse().unwrap();
        Prometheus::new(url, timeout)
    }

    /// A server that answers every connection with `status` and `body`.
    async fn answering(status: &'static str, body: &'static str) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut head = [0u8; 4096];
                let _ = tcp.read(&mut head).await;
                let rsp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(rsp.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_prometheus_that_is_down_is_named_with_the_flag_to_check() {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let err = at(addr, DEFAULT_TIMEOUT)
            .increases(&Scope::default(), Duration::from_secs(60))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, PrometheusError::Unreachable { .. }), "{err}");
        let said = err.to_string();
        assert!(said.contains(&format!("http://{addr}")), "{said}");
        assert!(said.contains("--prometheus-url"), "{said}");
    }

    #[tokio::test]
    async fn a_prometheus_that_does_not_answer_is_a_timeout_not_a_hang() {
        // Accepts (the kernel does) and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let err = at(addr, Duration::from_millis(300))
            .increases(&Scope::default(), Duration::from_secs(60))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, PrometheusError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("within 300ms"), "{err}");
        drop(listener);
    }

    #[tokio::test]
    async fn refusals_and_answers_of_another_kind_say_what_prometheus_said() {
        let addr = answering(
            "400 Bad Request",
            r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#,
        )
        .await;
        let err = at(addr, DEFAULT_TIMEOUT)
            .increases(&Scope::default(), Duration::from_secs(60))
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("(400): bad_data: parse error at char 3"),
            "{err}"
        );
        let addr = answering(
            "200 OK",
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}"#,
        )
        .await;
        let err = at(addr, DEFAULT_TIMEOUT)
            .increases(&Scope::default(), Duration::from_secs(60))
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("expected a vector, got a scalar"),
            "{err}"
        );
        let addr = answering("200 OK", "<html>a login page</html>").await;
        let err = at(addr, DEFAULT_TIMEOUT)
            .increases(&Scope::default(), Duration::from_secs(60))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, PrometheusError::Malformed { .. }), "{err}");
    }

    #[test]
    fn selectors_name_the_proxies_job_and_quote_what_they_match() {
        let scope = Scope {
            matchers: vec![("namespace", "a\"b\\c")],
        };
        assert_eq!(
            selector(&scope, &[("peer", "=", "src")]),
            r#"job="conduit-proxies", namespace="a\"b\\c", peer="src""#
        );
        let [(_, responses), ..] = counter_queries(&Scope::default(), Duration::from_secs(90));
        assert_eq!(
            responses,
            format!("sum by (namespace, pod, {RESPONSES_BY}) (increase(response_total{{job=\"conduit-proxies\"}}[90000ms]))")
        );
    }
}
