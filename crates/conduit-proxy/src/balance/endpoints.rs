//! The endpoint set of every target the outbound side sends to, each with its
//! [`Balancer`]: a target's set follows its Destination stream ([`Discovery`]) and is
//! picked from per request or connection. A first lookup waits (boundedly) for the
//! control plane's first answer; when the control plane is unreachable the last known
//! endpoints keep serving; with none known (or a name the control plane does not know)
//! the caller uses the original destination. Which targets are followed, and for how
//! long, is [`FollowedTargets`]' (at most [`MAX_TARGETS`], forgotten when idle).

use super::{Accrual, Balancer, EndpointLoad};
use crate::control::{
    discovery::{Discovery, Resolution},
    followed::{first_answer, FollowedTargets},
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::sync::watch;

pub use crate::control::followed::MAX_TARGETS;

struct Target {
    rx: watch::Receiver<Resolution>,
    balancer: Arc<Balancer>,
}

/// Every followed target's endpoints.
pub struct EndpointSets {
    discovery: Discovery,
    first_answer: Duration,
    accrual: Accrual,
    targets: Arc<FollowedTargets<Target>>,
}

impl EndpointSets {
    /// Endpoint sets from `discovery`; a first answer is awaited at most `first_answer`;
    /// failing endpoints are ejected as `accrual` says.
    pub fn new(
        discovery: Discovery,
        first_answer: Duration,
        accrual: Accrual,
    ) -> Arc<EndpointSets> {
        Arc::new(EndpointSets {
            discovery,
            first_answer,
            accrual,
            targets: FollowedTargets::new(),
        })
    }

    /// Whether discovery knows `target` (it resolved to endpoints, maybe none ready).
    pub fn knows(&self, target: &str) -> bool {
        self.targets
            .get(target, |t| {
                matches!(&*t.rx.borrow(), Resolution::Endpoints { .. })
            })
            .unwrap_or(false)
    }

    /// The Service (`<name>.<namespace>`) that `target` is, as discovery says once it has
    /// answered (waited for as [`pick`](Self::pick) does); `None` when it names none.
    pub async fn service_of(&self, target: &str) -> Option<Arc<str>> {
        self.answered(target, Target::service).await?
    }

    /// The Service that `target` is, as discovery says now, without waiting: for a
    /// connection that was made before discovery had answered.
    pub fn known_service(&self, target: &str) -> Option<Arc<str>> {
        self.targets.get(target, |t| t.service())?
    }

    /// The endpoint for the next request or connection to `target` (another than `avoid`
    /// if there is one), or `None` when the original destination should be used.
    pub async fn pick(&self, target: &str, avoid: Option<SocketAddr>) -> Option<Arc<EndpointLoad>> {
        self.answered(target, |t| t.pick(avoid)).await?
    }

    /// Resolves once discovery says that `target`'s server speaks first (a proxy learned
    /// it, and the controller handed it on); never otherwise. Follows `target`.
    pub async fn server_first(&self, target: &str) {
        if let Some(mut rx) = self.answered(target, |t| t.rx.clone()).await {
            let said = rx.wait_for(|r| matches!(r, Resolution::Endpoints { opaque: true, .. }));
            if said.await.is_ok() {
                return;
            }
        }
        std::future::pending().await
    }

    /// Follows `target` (marking it used) and returns `f` of it once it has a first answer,
    /// waited for boundedly; `None` when no more targets may be followed. A target that
    /// has answered (every request but a target's first few) costs one lookup.
    async fn answered<R>(&self, target: &str, f: impl Fn(&mut Target) -> R) -> Option<R> {
        let start = || Target {
            rx: self.discovery.resolve(target),
            balancer: Arc::new(Balancer::new(self.accrual.clone())),
        };
        let now = self.targets.use_or_start(target, start, |t| {
            if matches!(*t.rx.borrow(), Resolution::Pending) {
                Err(t.rx.clone())
            } else {
                Ok(f(t))
            }
        })?;
        let mut rx = match now {
            Ok(answer) => return Some(answer),
            Err(rx) => rx,
        };
        first_answer(&mut rx, self.first_answer, |r| *r == Resolution::Pending).await;
        self.targets.get(target, f)
    }
}

impl Target {
    /// The Service discovery names for the target, if any.
    fn service(&mut self) -> Option<Arc<str>> {
        match &*self.rx.borrow() {
            Resolution::Endpoints { service, .. } => service.clone(),
            _ => None,
        }
    }

    /// The balancer's pick among the target's endpoints as discovery last said them;
    /// `None` when discovery does not know the target.
    fn pick(&mut self, avoid: Option<SocketAddr>) -> Option<Arc<EndpointLoad>> {
        if self.rx.has_changed().unwrap_or(false) || self.balancer.is_empty() {
            if let Resolution::Endpoints { endpoints, .. } = &*self.rx.borrow_and_update() {
                self.balancer.update(endpoints);
            }
        }
        let known = matches!(&*self.rx.borrow(), Resolution::Endpoints { .. });
        if known {
            self.balancer.pick_avoiding(avoid)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_api::destination::{
        destination_server::{Destination, DestinationServer},
        update, Endpoint, EndpointSet, GetDestination, NoEndpoints, Update,
    };
    use std::pin::Pin;
    use tokio::sync::mpsc;
    use tokio_stream::{wrappers::ReceiverStream, Stream};

    type Updates = mpsc::Receiver<Result<Update, tonic::Status>>;

    fn sets(addr: &str, first_answer: Duration) -> Arc<EndpointSets> {
        EndpointSets::new(
            Discovery::new(addr, "emojivoto".into(), None),
            first_answer,
            Accrual::default(),
        )
    }

    /// A Destination server whose answers the test writes by hand.
    struct Scripted {
        updates: Arc<std::sync::Mutex<Option<Updates>>>,
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

        async fn report_server_first(
            &self,
            _: tonic::Request<conduit_api::destination::ServerFirstReport>,
        ) -> Result<tonic::Response<conduit_api::destination::ServerFirstAck>, tonic::Status>
        {
            Err(tonic::Status::unimplemented(
                "these tests script endpoints only",
            ))
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
        server_first(addrs, false)
    }

    fn server_first(addrs: &[&str], opaque: bool) -> Update {
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
                opaque,
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
            updates: Arc::new(std::sync::Mutex::new(Some(rx))),
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
    async fn the_server_first_hint_resolves_when_discovery_says_so_and_only_then() {
        let (addr, tx, _server) = server().await;
        let d = sets(&addr, Duration::from_secs(5));
        tx.send(Ok(endpoints(&["198.19.0.3:13306"]))).await.unwrap();
        let hint = d.server_first("198.19.0.3:13306");
        tokio::pin!(hint);
        let not_yet = tokio::time::timeout(Duration::from_millis(300), &mut hint).await;
        assert!(
            not_yet.is_err(),
            "no hint while discovery says nothing of it"
        );
        tx.send(Ok(server_first(&["198.19.0.3:13306"], true)))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), hint)
            .await
            .expect("the hint, once discovery says the server speaks first");
    }

    #[tokio::test]
    async fn follows_updates_and_keeps_the_last_endpoints_when_the_controller_goes() {
        let (addr, tx, server) = server().await;
        let d = sets(&addr, Duration::from_secs(5));
        tx.send(Ok(endpoints(&["198.18.0.4:8080"]))).await.unwrap();
        assert_eq!(
            d.pick("web-svc:80", None)
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
                if d.pick("web-svc:80", None)
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
                d.pick("web-svc:80", None)
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
    async fn the_service_a_target_is_comes_from_its_endpoint_set() {
        let (addr, tx, _server) = server().await;
        let d = sets(&addr, Duration::from_secs(5));
        let mut set = endpoints(&["198.18.0.4:8080"]);
        if let Some(update::Update::Endpoints(s)) = &mut set.update {
            s.labels = [("namespace", "emojivoto"), ("service", "web-svc")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into();
        }
        tx.send(Ok(set)).await.unwrap();
        assert_eq!(
            d.service_of("198.18.0.10:80").await.as_deref(),
            Some("web-svc.emojivoto")
        );
        // The same followed target serves picks.
        assert!(d.pick("198.18.0.10:80", None).await.is_some());
        assert_eq!(d.targets.len(), 1);
    }

    #[tokio::test]
    async fn only_so_many_targets_are_followed_at_once() {
        let nothing = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let d = sets(&nothing.to_string(), Duration::from_millis(1));
        for i in 0..MAX_TARGETS + 50 {
            assert!(d
                .pick(&format!("name-{i}.example:80"), None)
                .await
                .is_none());
        }
        assert_eq!(d.targets.len(), MAX_TARGETS);
        assert!(d.targets.contains("name-0.example:80"));
        assert!(!d
            .targets
            .contains(&format!("name-{MAX_TARGETS}.example:80")));
    }

    #[tokio::test]
    async fn unknown_names_and_an_unreachable_controller_mean_the_original_destination() {
        let (addr, tx, _server) = server().await;
        let d = sets(&addr, Duration::from_secs(5));
        tx.send(Ok(Update {
            update: Some(update::Update::NoEndpoints(NoEndpoints { exists: false })),
        }))
        .await
        .unwrap();
        assert!(d.pick("example.com:443", None).await.is_none());

        let nothing = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The first-answer wait is far longer than the test allows: a refused connection
        // must end it.
        let d = sets(&nothing.to_string(), Duration::from_secs(3600));
        let picked =
            tokio::time::timeout(Duration::from_secs(60), d.pick("web-svc:80", None)).await;
        assert!(picked
            .expect("a refused controller is not waited for")
            .is_none());
    }
}
