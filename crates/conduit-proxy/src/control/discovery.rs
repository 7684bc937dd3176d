//! Service discovery from the control plane: for a target (`host:port` authority, or a
//! virtual IP) the proxy follows a Destination stream, and the latest [`Resolution`] is
//! published on a watch channel for as long as anyone holds its receiver. A lost stream
//! keeps its last answer and is re-established with backoff. Knows nothing about how an
//! endpoint is chosen, nor about HTTP or sockets beyond addresses.

use crate::control::{self, ControlPlane, ControlTls, Followed};
use crate::transport::connect::Endpoint;
use conduit_api::{
    destination::{
        destination_client::DestinationClient, label, update, GetDestination, ServerFirstReport,
        Update,
    },
    names::is_dns_label,
};
use std::{collections::HashMap, net::SocketAddr, sync::Arc};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info};

/// Reports of learned ports in flight at once; more are dropped (each is only a hint, and
/// a client flipping a port between speaking first and waiting must not queue calls).
const REPORTS_IN_FLIGHT: usize = 4;

/// What is known of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Asked, no answer yet.
    Pending,
    /// The control plane could not be reached, and nothing was ever known.
    Unavailable,
    /// The control plane does not know the name: use the original destination.
    Unknown,
    /// The endpoints to balance over (empty: the service exists but nothing is ready),
    /// the Service they serve (`<name>.<namespace>`) when the target is one, and whether
    /// its server speaks first (a proxy learned it: no detection).
    Endpoints {
        service: Option<Arc<str>>,
        endpoints: Vec<Endpoint>,
        opaque: bool,
    },
}

/// The Destination API, as seen from one pod (clones share its connection).
#[derive(Clone)]
pub struct Discovery {
    client: DestinationClient<ControlPlane>,
    context_namespace: String,
    reports: Arc<Semaphore>,
}

impl Discovery {
    /// Discovery from the Destination API at `addr` (`host:port`), for a pod in
    /// `context_namespace`; with `tls`, over mutual TLS once the proxy is certified.
    pub fn new(addr: &str, context_namespace: String, tls: Option<ControlTls>) -> Discovery {
        Discovery {
            client: DestinationClient::new(ControlPlane::new(addr, tls.map(|t| t.mutual()))),
            context_namespace,
            reports: Arc::new(Semaphore::new(REPORTS_IN_FLIGHT)),
        }
    }

    /// Tells the control plane, in the background, that the port `addr` (what a client
    /// connected to) was learned to be server-speaks-first, or forgotten.
    pub fn report_server_first(&self, addr: SocketAddr, server_first: bool) {
        let Ok(permit) = self.reports.clone().try_acquire_owned() else {
            return debug!(%addr, server_first, "too many reports in flight; this one is dropped");
        };
        let mut client = self.client();
        let report = ServerFirstReport {
            addr: addr.to_string(),
            server_first,
        };
        tokio::spawn(async move {
            let _permit = permit;
            match client.report_server_first(report).await {
                Ok(_) => debug!(%addr, server_first, "reported a server-speaks-first port"),
                Err(status) => {
                    info!(%addr, server_first, error = %status, "the control plane took no report of a server-speaks-first port")
                }
            }
        });
    }

    /// Starts following `target`: its resolution, kept current until the receiver and
    /// all its clones are dropped.
    pub fn resolve(&self, target: &str) -> watch::Receiver<Resolution> {
        let (tx, rx) = watch::channel(Resolution::Pending);
        tokio::spawn(follow(self.client(), self.request(target), tx));
        rx
    }

    /// The generated client, over the shared connection.
    pub(crate) fn client(&self) -> DestinationClient<ControlPlane> {
        self.client.clone()
    }

    /// The question about `target` (a Destination's or a profile's), as this pod asks it.
    pub(crate) fn request(&self, target: &str) -> GetDestination {
        GetDestination {
            path: target.to_string(),
            context_namespace: self.context_namespace.clone(),
        }
    }
}

/// What the proxy makes of one Destination update (`None`: it says nothing new). Public
/// so that the fuzzers (`fuzz/`) run exactly this on arbitrary messages.
pub fn resolution(update: Update) -> Option<Resolution> {
    match update.update? {
        update::Update::Endpoints(set) => Some(Resolution::Endpoints {
            service: named(&set.labels, label::SERVICE),
            opaque: set.opaque,
            endpoints: set
                .endpoints
                .iter()
                .filter_map(|e| {
                    Some(Endpoint {
                        addr: e.addr.parse().ok()?,
                        // Only meshed endpoints have a proxy to speak mesh TLS with.
                        identity: (e.meshed && !e.identity.is_empty())
                            .then(|| Arc::from(e.identity.as_str())),
                        workload: named(&e.labels, label::DEPLOYMENT),
                    })
                })
                .collect(),
        }),
        update::Update::NoEndpoints(n) if n.exists => Some(Resolution::Endpoints {
            service: None,
            endpoints: Vec::new(),
            opaque: false,
        }),
        update::Update::NoEndpoints(_) => Some(Resolution::Unknown),
    }
}

/// `<name>.<namespace>` from `labels`' `key` and namespace, when both are Kubernetes
/// names: what the metrics may label a destination with (a name, never a text of any
/// length).
fn named(labels: &HashMap<String, String>, key: &str) -> Option<Arc<str>> {
    let name = labels.get(key).filter(|n| is_dns_label(n))?;
    let namespace = labels.get(label::NAMESPACE).filter(|n| is_dns_label(n))?;
    Some(format!("{name}.{namespace}").into())
}

/// Keeps one target's resolution current until nobody asks about it any more. A lost
/// stream keeps the last answer and is re-established with backoff.
async fn follow(
    client: DestinationClient<ControlPlane>,
    request: GetDestination,
    tx: watch::Sender<Resolution>,
) {
    let path = request.path.clone();
    let open = || {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.get(request).await }
    };
    let on = |event| match event {
        Followed::Message(update) => {
            if let Some(r) = resolution(update) {
                debug!(target = %path, resolution = ?r, "destination update");
                tx.send_replace(r);
            }
        }
        Followed::Failed(status) => {
            debug!(target = %path, error = %status, "destination lookup failed");
            tx.send_if_modified(|r| {
                let first = *r == Resolution::Pending;
                if first {
                    *r = Resolution::Unavailable;
                }
                first
            });
        }
        Followed::Lost => {
            info!(target = %path, "lost the destination stream; keeping the last known endpoints")
        }
    };
    control::follow(open, on, tx.closed()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_api::destination::{self as api, EndpointSet};

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set(service: &[(&str, &str)], pod: &[(&str, &str)]) -> Update {
        Update {
            update: Some(update::Update::Endpoints(EndpointSet {
                endpoints: vec![api::Endpoint {
                    addr: "198.18.0.4:8080".into(),
                    labels: labels(pod),
                    ..api::Endpoint::default()
                }],
                labels: labels(service),
                opaque: false,
            })),
        }
    }

    fn names(update: Update) -> (Option<String>, Option<String>) {
        match resolution(update) {
            Some(Resolution::Endpoints {
                service, endpoints, ..
            }) => (
                service.map(|s| s.to_string()),
                endpoints[0].workload.as_ref().map(|w| w.to_string()),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn services_and_workloads_are_named_only_with_kubernetes_names() {
        let ns = (label::NAMESPACE, "emojivoto");
        assert_eq!(
            names(set(
                &[ns, (label::SERVICE, "web-svc")],
                &[ns, (label::DEPLOYMENT, "web"), (label::POD, "web-1")]
            )),
            (
                Some("web-svc.emojivoto".into()),
                Some("web.emojivoto".into())
            )
        );
        // A pod's own address: no Service; a pod without a Deployment: no workload.
        assert_eq!(names(set(&[], &[ns, (label::POD, "web-1")])), (None, None));
        // What no Kubernetes object could be called never becomes a label.
        let long = "x".repeat(64);
        for bad in ["a/b", "Web", "", "-a", long.as_str()] {
            assert_eq!(
                names(set(
                    &[ns, (label::SERVICE, bad)],
                    &[(label::NAMESPACE, bad), (label::DEPLOYMENT, "web")]
                )),
                (None, None),
                "{bad}"
            );
        }
    }
}
