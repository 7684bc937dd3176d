//! Tap through the control plane: observes the proxies of every pod of a resource at
//! once (their tap servers, on port 4190), names the pods and services behind the
//! addresses in each event, and streams the merged events as JSON lines, until the asked
//! number of requests has been seen or the client goes away.

use crate::discovery::{PodInfo, Workloads};
use crate::{tap_client, tls::ControllerTls};
use conduit_api::{
    http::{TapLine, TapLineKind},
    ports,
    tap::{tap_event, ObserveRequest, TapEvent},
};
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
};
use tokio::sync::mpsc;
use tracing::debug;

/// What an address is, in workload terms.
fn resource_of(w: &Workloads, addr: &str) -> Option<String> {
    let ip: IpAddr = addr.parse::<SocketAddr>().ok()?.ip();
    if let Some(p) = w.pod_by_ip(ip) {
        return Some(format!("deploy/{}", p.deployment));
    }
    w.services
        .iter()
        .find(|s| s.vip == ip)
        .map(|s| format!("svc/{}", s.name))
}

/// Turns a proxy's event into a line, naming what the addresses are.
pub fn line(w: &Workloads, pod: &PodInfo, e: TapEvent) -> Option<TapLine> {
    let event = e.event?;
    let kind = match &event {
        tap_event::Event::RequestInit(_) => TapLineKind::Request,
        tap_event::Event::ResponseInit(_) => TapLineKind::Response,
        tap_event::Event::ResponseEnd(_) => TapLineKind::End,
        tap_event::Event::ConnectionDenied(_) => TapLineKind::Denied,
        tap_event::Event::EndpointHealth(h) if h.ejected => TapLineKind::Ejected,
        tap_event::Event::EndpointHealth(_) => TapLineKind::Restored,
    };
    let mut l = TapLine {
        id: format!("{}:{}", pod.name, e.request_id),
        direction: e.direction.clone(),
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        src_resource: resource_of(w, &e.source),
        dst_resource: resource_of(w, &e.destination),
        src: e.source,
        dst: e.destination,
        ..TapLine::new(kind)
    };
    match event {
        tap_event::Event::RequestInit(r) => {
            l.method = Some(r.method);
            l.authority = Some(r.authority);
            l.path = Some(r.path);
        }
        tap_event::Event::ResponseInit(r) => {
            l.status = Some(r.status);
            l.latency_us = Some(r.latency_us);
        }
        tap_event::Event::ResponseEnd(r) => {
            l.grpc_status = r.grpc_status;
            l.duration_us = Some(r.duration_us);
            l.response_bytes = Some(r.response_bytes);
            l.proxy_error = (!r.proxy_error.is_empty()).then_some(r.proxy_error);
        }
        tap_event::Event::ConnectionDenied(d) => {
            l.proxy_error = Some(d.reason);
            l.client_id = (!d.client_id.is_empty()).then_some(d.client_id);
        }
        tap_event::Event::EndpointHealth(h) => l.backoff_ms = h.ejected.then_some(h.backoff_ms),
    }
    Some(l)
}

/// What to observe.
#[derive(Clone, Debug, Default)]
pub struct TapRequest {
    /// Stop after this many requests (0: until the client goes away).
    pub max: u32,
    pub authority: String,
    pub path_prefix: String,
}

/// Observes `pods` (over mesh TLS with `tls`) and sends their events to `tx` until `max` requests have ended (or
/// connections were denied)
/// (across all pods) or the receiver goes away.
pub fn spawn(
    workloads: Arc<Workloads>,
    pods: Vec<Arc<PodInfo>>,
    req: TapRequest,
    tls: Option<Arc<ControllerTls>>,
    tx: mpsc::Sender<TapLine>,
) {
    let ended = Arc::new(AtomicU32::new(0));
    for pod in pods {
        let (w, tx, req, ended) = (workloads.clone(), tx.clone(), req.clone(), ended.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let addr = SocketAddr::new(pod.ip, ports::PROXY_TAP);
            let identity = conduit_identity::identity_name(&pod.service_account, &pod.namespace);
            let failed = |error: String| {
                debug!(%addr, %error, "cannot observe a proxy");
                TapLine {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    error: Some(error),
                    ..TapLine::new(TapLineKind::Error)
                }
            };
            let mut client = match tap_client::connect(tls.as_ref(), addr, &identity).await {
                Ok(c) => c,
                Err(error) => {
                    let error = format!("cannot reach the proxy's tap server at {addr}: {error}");
                    let _ = tx.send(failed(error)).await;
                    return;
                }
            };
            let observe = ObserveRequest {
                limit: req.max,
                authority: req.authority.clone(),
                path_prefix: req.path_prefix.clone(),
            };
            let rsp = match client.observe(observe).await {
                Ok(rsp) => rsp,
                Err(status) => {
                    // A proxy that lets in another identity than this controller's closes
                    // the connection right after the handshake: say so, not just nothing.
                    let error = match tls.as_deref() {
                        // The proxy answered: its own words say why (too many observers).
                        _ if status.code() == tonic::Code::ResourceExhausted => format!(
                            "the proxy's tap server at {addr} refused: {}",
                            status.message()
                        ),
                        Some(tls) => format!(
                            "the proxy's tap server at {addr} did not let the controller ({}) observe: {}; its {} must name this controller",
                            tls.name(),
                            status.message(),
                            conduit_api::proxy_env::TAP_CLIENT_IDENTITY,
                        ),
                        None => format!(
                            "the proxy's tap server at {addr} did not answer: {}",
                            status.message()
                        ),
                    };
                    let _ = tx.send(failed(error)).await;
                    return;
                }
            };
            let mut stream = rsp.into_inner();
            loop {
                let event = tokio::select! {
                    e = stream.message() => e,
                    () = tx.closed() => return,
                };
                let Ok(Some(event)) = event else { return };
                let Some(l) = line(&w, &pod, event) else {
                    continue;
                };
                // A denied connection or an endpoint health change is over once reported.
                let is_end = matches!(
                    l.kind,
                    TapLineKind::End
                        | TapLineKind::Denied
                        | TapLineKind::Ejected
                        | TapLineKind::Restored
                );
                if tx.send(l).await.is_err() {
                    return;
                }
                if is_end && req.max > 0 && ended.fetch_add(1, Ordering::Relaxed) + 1 >= req.max {
                    // Enough requests: dropping every sender ends the response.
                    return;
                }
                if req.max > 0 && ended.load(Ordering::Relaxed) >= req.max {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::tests::sample;
    use conduit_api::tap::{ConnectionDenied, RequestInit, ResponseEnd};

    #[test]
    fn lines_name_the_workloads_behind_addresses() {
        let w = sample();
        let web = w.pods[0].clone();
        let e = TapEvent {
            source: "198.18.0.5:40000".into(),
            destination: "198.19.0.2:8080".into(),
            direction: "outbound".into(),
            request_id: 7,
            event: Some(tap_event::Event::RequestInit(RequestInit {
                method: "POST".into(),
                scheme: "http".into(),
                authority: "voting-svc.emojivoto:8080".into(),
                path: "/emojivoto.v1.VotingService/Vote".into(),
            })),
            ..TapEvent::default()
        };
        let l = line(&w, &web, e).unwrap();
        assert_eq!(l.kind, TapLineKind::Request);
        assert_eq!(l.id, "web-1:7");
        assert_eq!(l.src_resource.as_deref(), Some("deploy/vote-bot"));
        assert_eq!(l.dst_resource.as_deref(), Some("svc/voting-svc"));
        let end = TapEvent {
            source: "10.0.0.1:1".into(),
            destination: "198.18.0.3:8080".into(),
            event: Some(tap_event::Event::ResponseEnd(ResponseEnd {
                grpc_status: Some(2),
                duration_us: 900,
                response_bytes: 5,
                proxy_error: String::new(),
            })),
            ..TapEvent::default()
        };
        let l = line(&w, &web, end).unwrap();
        assert_eq!(
            (l.kind, l.grpc_status, l.src_resource.clone()),
            (TapLineKind::End, Some(2), None)
        );
        assert_eq!(l.dst_resource.as_deref(), Some("deploy/voting"));
        let json = serde_json::to_value(&l).unwrap();
        assert!(
            json.get("method").is_none() && json.get("proxy_error").is_none(),
            "{json}"
        );
        let denied = TapEvent {
            source: "198.18.0.5:40000".into(),
            destination: "198.18.0.3:7000".into(),
            event: Some(tap_event::Event::ConnectionDenied(ConnectionDenied {
                reason: "forbidden by policy: no".into(),
                client_id: "web.emojivoto.serviceaccount.identity.conduit.cluster.local".into(),
            })),
            ..TapEvent::default()
        };
        let l = line(&w, &web, denied).unwrap();
        assert_eq!(
            (l.kind, l.proxy_error.as_deref(), l.client_id.as_deref()),
            (
                TapLineKind::Denied,
                Some("forbidden by policy: no"),
                Some("web.emojivoto.serviceaccount.identity.conduit.cluster.local")
            )
        );
        assert_eq!(l.src_resource.as_deref(), Some("deploy/vote-bot"));
    }
}
