//! Service discovery from the control plane: for each target (`host:port` authority, or
//! a virtual IP) the proxy follows a Destination stream and keeps the endpoints in a
//! [`Balancer`]. When the control plane is unreachable the last known endpoints keep
//! serving; with none known (or a name the control plane does not know) the caller uses
//! the original destination. Knows nothing about HTTP or sockets beyond addresses.

use crate::balance::{Balancer, EndpointLoad};
use crate::connect::Endpoint;
use crate::control::{self, ControlPlane, Followed};
use conduit_api::destination::{
    destination_client::DestinationClient, update, GetDestination, Update,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tracing::{debug, info};

/// What is known of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Asked, no answer yet.
    Pending,
    /// The control plane could not be reached, and nothing was ever known.
    Unavailable,
    /// The control plane does not know the name: use the original destination.
    Unknown,
    /// The endpoints to balance over (empty: the service exists but nothing is ready).
    Endpoints(Vec<Endpoint>),
}

struct Target {
    rx: watch::Receiver<Resolution>,
    balancer: Arc<Balancer>,
    last_used: Instant,
}

/// Follows Destination streams for every target the proxy forwards to.
pub struct Discovery {
    client: DestinationClient<ControlPlane>,
    context_namespace: String,
    first_answer: Duration,
    targets: Mutex<HashMap<String, Target>>,
}

/// Targets unused for this long are forgotten, and their streams closed.
const IDLE: Duration = Duration::from_secs(300);

impl Discovery {
    /// Discovery from the Destination API at `addr` (`host:port`), for a pod in
    /// `context_namespace`; a first answer is awaited at most `first_answer`.
    pub fn new(addr: &str, context_namespace: String, first_answer: Duration) -> Arc<Discovery> {
        let discovery = Arc::new(Discovery {
            client: DestinationClient::new(ControlPlane::new(addr)),
            context_namespace,
            first_answer,
            targets: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&discovery);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE / 5).await;
                let Some(d) = weak.upgrade() else { return };
                d.lock().retain(|_, t| t.last_used.elapsed() < IDLE);
            }
        });
        discovery
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Target>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint for the next request or connection to `target`, or `None` when the
    /// original destination should be used.
    pub async fn pick(&self, target: &str) -> Option<Arc<EndpointLoad>> {
        let mut rx = {
            let mut targets = self.lock();
            let t = targets
                .entry(target.to_string())
                .or_insert_with(|| self.follow(target));
            t.last_used = Instant::now();
            t.rx.clone()
        };
        if *rx.borrow() == Resolution::Pending {
            let _ = tokio::time::timeout(
                self.first_answer,
                rx.wait_for(|r| *r != Resolution::Pending),
            )
            .await;
        }
        let mut targets = self.lock();
        let t = targets.get_mut(target)?;
        if t.rx.has_changed().unwrap_or(false) || t.balancer.addrs().is_empty() {
            if let Resolution::Endpoints(addrs) = &*t.rx.borrow_and_update() {
                t.balancer.update(addrs);
            }
        }
        let known = matches!(&*t.rx.borrow(), Resolution::Endpoints(_));
        if known {
            t.balancer.pick()
        } else {
            None
        }
    }

    /// Starts following `target`'s endpoints.
    fn follow(&self, target: &str) -> Target {
        let (tx, rx) = watch::channel(Resolution::Pending);
        let request = GetDestination {
            path: target.to_string(),
            context_namespace: self.context_namespace.clone(),
        };
        tokio::spawn(follow(self.client.clone(), request, tx));
        Target {
            rx,
            balancer: Arc::new(Balancer::default()),
            last_used: Instant::now(),
        }
    }
}

fn resolution(update: Update) -> Option<Resolution> {
    match update.update? {
        update::Update::Endpoints(set) => Some(Resolution::Endpoints(
            set.endpoints
                .iter()
                .filter_map(|e| {
                    Some(Endpoint {
                        addr: e.addr.parse().ok()?,
                        // Only meshed endpoints have a proxy to speak mesh TLS with.
                        identity: (e.meshed && !e.identity.is_empty())
                            .then(|| Arc::from(e.identity.as_str())),
                    })
                })
                .collect(),
        )),
        update::Update::NoEndpoints(n) if n.exists => Some(Resolution::Endpoints(Vec::new())),
        update::Update::NoEndpoints(_) => Some(Resolution::Unknown),
    }
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
    use conduit_api::destination::{
        destination_server::{Destination, DestinationServer},
        Endpoint, EndpointSet, NoEndpoints,
    };
    use std::pin::Pin;
    use tokio::sync::mpsc;
    use tokio_stream::{wrappers::ReceiverStream, Stream};

    type Updates = mpsc::Receiver<Result<Update, tonic::Status>>;

    /// A Destination server whose answers the test writes by hand.
    struct Scripted {
        updates: Arc<Mutex<Option<Updates>>>,
    }

    #[tonic::async_trait]
    impl Destination for Scripted {
        type GetStream = Pin<Box<dyn Stream<Item = Result<Update, tonic::Status>> + Send>>;
        async fn get(
            &self,
            _: tonic::Request<GetDestination>,
        ) -> Result<tonic::Response<Self::GetStream>, tonic::Status> {
            let rx = self
                .updates
                .lock()
                .unwrap()
                .take()
                .ok_or_else(|| tonic::Status::unavailable("one stream only"))?;
            Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
        }

        type GetProfileStream = Pin<
            Box<dyn Stream<Item = Result<conduit_api::destination::Profile, tonic::Status>> + Send>,
        >;
        async fn get_profile(
            &self,
            _: tonic::Request<GetDestination>,
        ) -> Result<tonic::Response<Self::GetProfileStream>, tonic::Status> {
            Err(tonic::Status::unimplemented(
                "these tests script endpoints only",
            ))
        }
    }

    fn endpoints(addrs: &[&str]) -> Update {
        Update {
            update: Some(update::Update::Endpoints(EndpointSet {
                endpoints: addrs
                    .iter()
                    .map(|a| Endpoint {
                        addr: a.to_string(),
                        ..Endpoint::default()
                    })
                    .collect(),
                labels: Default::default(),
            })),
        }
    }

    async fn server() -> (
        String,
        mpsc::Sender<Result<Update, tonic::Status>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::channel(8);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let svc = DestinationServer::new(Scripted {
            updates: Arc::new(Mutex::new(Some(rx))),
        });
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        (addr, tx, task)
    }

    #[tokio::test]
    async fn follows_updates_and_keeps_the_last_endpoints_when_the_controller_goes() {
        let (addr, tx, server) = server().await;
        let d = Discovery::new(&addr, "emojivoto".into(), Duration::from_secs(5));
        tx.send(Ok(endpoints(&["198.18.0.4:8080"]))).await.unwrap();
        assert_eq!(
            d.pick("web-svc:80")
                .await
                .unwrap()
                .endpoint
                .addr
                .to_string(),
            "198.18.0.4:8080"
        );
        tx.send(Ok(endpoints(&["198.18.0.5:8080"]))).await.unwrap();
        let moved = async {
            loop {
                if d.pick("web-svc:80")
                    .await
                    .map(|e| e.endpoint.addr.to_string())
                    == Some("198.18.0.5:8080".into())
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), moved)
            .await
            .expect("the new endpoint set is used");
        // The controller dies: the last known endpoints keep serving.
        server.abort();
        drop(tx);
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..10 {
            assert_eq!(
                d.pick("web-svc:80")
                    .await
                    .unwrap()
                    .endpoint
                    .addr
                    .to_string(),
                "198.18.0.5:8080"
            );
        }
    }

    #[tokio::test]
    async fn unknown_names_and_an_unreachable_controller_mean_the_original_destination() {
        let (addr, tx, _server) = server().await;
        let d = Discovery::new(&addr, "emojivoto".into(), Duration::from_secs(5));
        tx.send(Ok(Update {
            update: Some(update::Update::NoEndpoints(NoEndpoints { exists: false })),
        }))
        .await
        .unwrap();
        assert!(d.pick("example.com:443").await.is_none());

        let nothing = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The first-answer wait is far longer than the test allows: a refused connection
        // must end it.
        let d = Discovery::new(
            &nothing.to_string(),
            "emojivoto".into(),
            Duration::from_secs(3600),
        );
        let picked = tokio::time::timeout(Duration::from_secs(60), d.pick("web-svc:80")).await;
        assert!(picked
            .expect("a refused controller is not waited for")
            .is_none());
    }
}
