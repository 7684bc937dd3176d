//! Who may connect inbound: the pod's policy, followed from the control plane's
//! InboundPolicy API (and kept when the control plane goes away), or the configured
//! default until the first answer and without a control plane. Connections are
//! authorized when they arrive; HTTP requests again each, so that a policy change applies
//! to connections already open.

use crate::control::{self, ControlPlane, ControlTls, Followed};
use conduit_api::policy::{inbound_policy_client::InboundPolicyClient, WatchPod};
use conduit_policy::{wire, DefaultPolicy, PodPolicy};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The pod's inbound policy as it stands.
pub struct InboundPolicy {
    rx: watch::Receiver<Option<Arc<PodPolicy>>>,
    /// Until the control plane answers, or without one.
    fallback: Arc<PodPolicy>,
    /// How long a first connection waits for the control plane's answer.
    first_answer: Duration,
    /// Set once a connection has waited that long: later ones do not wait again.
    waited: AtomicBool,
    /// Keeps the watch open when nothing follows it.
    _fixed: Option<watch::Sender<Option<Arc<PodPolicy>>>>,
}

impl InboundPolicy {
    /// A policy that is always `default`.
    pub fn fixed(default: DefaultPolicy) -> Arc<InboundPolicy> {
        Self::fixed_policy(PodPolicy {
            default,
            ..PodPolicy::default()
        })
    }

    /// A policy that is always `policy`.
    pub fn fixed_policy(policy: PodPolicy) -> Arc<InboundPolicy> {
        let (tx, rx) = watch::channel(None);
        Arc::new(InboundPolicy {
            rx,
            fallback: Arc::new(policy),
            first_answer: Duration::ZERO,
            waited: AtomicBool::new(true),
            _fixed: Some(tx),
        })
    }

    /// Follows pod `namespace/pod`'s policy from the InboundPolicy API at `addr` (with
    /// `tls`, over mutual TLS once the proxy is certified); `default` applies until it
    /// answers (waited for at most `first_answer`).
    pub fn follow(
        addr: &str,
        tls: Option<ControlTls>,
        namespace: &str,
        pod: &str,
        default: DefaultPolicy,
        first_answer: Duration,
    ) -> Arc<InboundPolicy> {
        let (tx, rx) = watch::channel(None);
        let client = InboundPolicyClient::new(ControlPlane::new(addr, tls.map(|t| t.mutual())));
        let request = WatchPod {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
        };
        tokio::spawn(async move {
            let open = || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.watch(request).await }
            };
            let on = |event| match event {
                Followed::Message(p) => match wire::from_proto(p) {
                    Ok(policy) => {
                        debug!(?policy, "inbound policy");
                        tx.send_replace(Some(Arc::new(policy)));
                    }
                    Err(error) => {
                        warn!(%error, "the control plane sent a policy that makes no sense; keeping the last one")
                    }
                },
                Followed::Failed(status) => {
                    debug!(error = %status, "inbound policy lookup failed")
                }
                Followed::Lost => {
                    info!("lost the inbound policy stream; keeping the last policy")
                }
            };
            // The side holds the receiver for the proxy's life: follow until it is gone.
            let closed = async { tx.closed().await };
            control::follow(open, on, closed).await
        });
        Arc::new(InboundPolicy {
            rx,
            fallback: Arc::new(PodPolicy {
                default,
                ..PodPolicy::default()
            }),
            first_answer,
            waited: AtomicBool::new(false),
            _fixed: None,
        })
    }

    /// The policy now, without waiting.
    pub fn latest(&self) -> Arc<PodPolicy> {
        self.rx
            .borrow()
            .clone()
            .unwrap_or_else(|| self.fallback.clone())
    }

    /// The policy now; before the control plane's first answer, waits for it a little,
    /// once: with the control plane unreachable, later connections do not wait.
    pub async fn current(&self) -> Arc<PodPolicy> {
        if self.rx.borrow().is_none() && !self.waited.load(Ordering::Relaxed) {
            let mut rx = self.rx.clone();
            let _ = tokio::time::timeout(self.first_answer, rx.wait_for(Option::is_some)).await;
            self.waited.store(true, Ordering::Relaxed);
        }
        self.latest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_api::policy::{
        inbound_policy_server::{InboundPolicy as Api, InboundPolicyServer},
        PodPolicy as Wire,
    };
    use std::pin::Pin;
    use tokio::sync::mpsc;
    use tokio_stream::{wrappers::ReceiverStream, Stream};

    struct Scripted(std::sync::Mutex<Option<mpsc::Receiver<Result<Wire, tonic::Status>>>>);

    #[tonic::async_trait]
    impl Api for Scripted {
        type WatchStream = Pin<Box<dyn Stream<Item = Result<Wire, tonic::Status>> + Send>>;
        async fn watch(
            &self,
            req: tonic::Request<WatchPod>,
        ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
            assert_eq!(req.get_ref().pod, "voting-1");
            let rx = self
                .0
                .lock()
                .unwrap()
                .take()
                .ok_or_else(|| tonic::Status::unavailable("one stream only"))?;
            Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }

    #[tokio::test]
    async fn follows_the_control_plane_and_keeps_the_last_policy_without_it() {
        let (tx, rx) = mpsc::channel(4);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(InboundPolicyServer::new(Scripted(std::sync::Mutex::new(
                    Some(rx),
                ))))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let p = InboundPolicy::follow(
            &addr,
            None,
            "emojivoto",
            "voting-1",
            DefaultPolicy::AllUnauthenticated,
            Duration::from_secs(5),
        );
        // Nothing yet: the configured default.
        assert_eq!(p.latest().default, DefaultPolicy::AllUnauthenticated);
        let deny = PodPolicy {
            default: DefaultPolicy::Deny,
            ..PodPolicy::default()
        };
        tx.send(Ok(wire::to_proto(&deny))).await.unwrap();
        assert_eq!(p.current().await.default, DefaultPolicy::Deny);
        // The control plane goes away: the last policy stays.
        server.abort();
        drop(tx);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(p.latest().default, DefaultPolicy::Deny);

        // Without any answer, a first connection waits a little, then uses the default.
        let nothing = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let p = InboundPolicy::follow(
            &nothing,
            None,
            "emojivoto",
            "voting-1",
            DefaultPolicy::AllAuthenticated,
            Duration::from_millis(100),
        );
        assert_eq!(p.current().await.default, DefaultPolicy::AllAuthenticated);
        assert_eq!(
            InboundPolicy::fixed(DefaultPolicy::Deny).latest().default,
            DefaultPolicy::Deny
        );
    }
}
