//! The Destination API: proxies ask who serves a name (a Service in any of its forms, a
//! Service's virtual IP, or a pod's IP) and get a stream of complete endpoint sets, a new
//! one whenever discovery changes what they would get. Unknown names get `NoEndpoints`,
//! so the proxy uses the original destination.

use crate::discovery::{follow, split_authority, when_changed, Input, Workloads};
use conduit_api::destination::{
    destination_server::{Destination, DestinationServer},
    update, Endpoint, EndpointSet, GetDestination, NoEndpoints, Update,
};
use std::{collections::HashMap, pin::Pin, sync::Arc};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Serves endpoint sets from discovery's snapshots.
pub struct DestinationService {
    workloads: watch::Receiver<Arc<Workloads>>,
}

impl DestinationService {
    /// A tonic service answering from `workloads`.
    pub fn server(
        workloads: watch::Receiver<Arc<Workloads>>,
    ) -> DestinationServer<DestinationService> {
        DestinationServer::new(DestinationService { workloads })
    }
}

/// What a proxy asking for `path` from namespace `context_ns` should get now.
pub fn update_for(w: &Workloads, path: &str, context_ns: &str) -> Update {
    if let Some((service, port)) = w.resolve(path, context_ns) {
        if port.endpoints.is_empty() {
            return no_endpoints(true);
        }
        let endpoints = port
            .endpoints
            .iter()
            .map(|e| endpoint(e.addr, w.pod_by_ip(e.addr.ip()).map(|p| &**p)))
            .collect();
        let labels = HashMap::from([
            ("namespace".to_string(), service.namespace.clone()),
            ("service".to_string(), service.name.clone()),
        ]);
        return Update {
            update: Some(update::Update::Endpoints(EndpointSet { endpoints, labels })),
        };
    }
    // A pod's own address: the pod is its only endpoint.
    let pod = split_authority(path)
        .and_then(|(host, port)| Some((host.parse().ok()?, port)))
        .and_then(|(ip, port)| Some((w.pod_by_ip(ip)?, port)));
    match pod {
        Some((pod, port)) if pod.ready => Update {
            update: Some(update::Update::Endpoints(EndpointSet {
                endpoints: vec![endpoint(
                    std::net::SocketAddr::new(pod.ip, port),
                    Some(&**pod),
                )],
                labels: HashMap::new(),
            })),
        },
        _ => no_endpoints(false),
    }
}

/// What [`update_for`] reads: the Service (or pod) the name resolves to and the pods
/// behind its endpoints.
fn inputs_of(w: &Workloads, path: &str, context_ns: &str) -> Vec<Input> {
    if let Some((service, port)) = w.resolve(path, context_ns) {
        let pods = port.endpoints.iter().map(|e| w.pod_by_ip(e.addr.ip()));
        let mut inputs = vec![Input::Service(Some(service.clone()))];
        inputs.extend(pods.map(|p| Input::Pod(p.cloned())));
        return inputs;
    }
    let pod = split_authority(path)
        .and_then(|(host, _)| host.parse().ok())
        .and_then(|ip| w.pod_by_ip(ip));
    vec![Input::Service(None), Input::Pod(pod.cloned())]
}

/// An endpoint at `addr`, served by `pod` when discovery knows it. A meshed pod's proxy
/// proves its ServiceAccount's identity; clients' proxies expect exactly that one.
fn endpoint(addr: std::net::SocketAddr, pod: Option<&crate::discovery::PodInfo>) -> Endpoint {
    let meshed = pod.filter(|p| p.meshed);
    Endpoint {
        addr: addr.to_string(),
        labels: pod.map(pod_labels).unwrap_or_default(),
        meshed: meshed.is_some(),
        identity: meshed
            .map(|p| conduit_identity::identity_name(&p.service_account, &p.namespace))
            .unwrap_or_default(),
    }
}

fn pod_labels(p: &crate::discovery::PodInfo) -> HashMap<String, String> {
    HashMap::from([
        ("namespace".to_string(), p.namespace.clone()),
        ("deployment".to_string(), p.deployment.clone()),
        ("pod".to_string(), p.name.clone()),
    ])
}

fn no_endpoints(exists: bool) -> Update {
    Update {
        update: Some(update::Update::NoEndpoints(NoEndpoints { exists })),
    }
}

#[tonic::async_trait]
impl Destination for DestinationService {
    type GetStream = Pin<Box<dyn Stream<Item = Result<Update, Status>> + Send>>;

    async fn get(&self, req: Request<GetDestination>) -> Result<Response<Self::GetStream>, Status> {
        let GetDestination {
            path,
            context_namespace,
        } = req.into_inner();
        if split_authority(&path).is_none() {
            return Err(Status::invalid_argument(format!(
                "path {path:?}: expected a host:port authority or ip:port"
            )));
        }
        let (p, ns) = (path.clone(), context_namespace.clone());
        let inputs = move |w: &Workloads| inputs_of(w, &p, &ns);
        let answer = move |w: &Workloads| Some(update_for(w, &path, &context_namespace));
        Ok(Response::new(follow(
            self.workloads.clone(),
            when_changed(inputs, answer),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::tests::sample;

    fn endpoints(u: &Update) -> Vec<String> {
        match &u.update {
            Some(update::Update::Endpoints(set)) => {
                set.endpoints.iter().map(|e| e.addr.clone()).collect()
            }
            other => panic!("expected endpoints, got {other:?}"),
        }
    }

    #[test]
    fn names_ips_and_unknowns() {
        let w = sample();
        assert_eq!(
            endpoints(&update_for(
                &w,
                "web-svc.emojivoto.svc.cluster.local:80",
                "x"
            )),
            ["198.18.0.4:8080"]
        );
        assert_eq!(
            endpoints(&update_for(&w, "198.19.0.2:8080", "x")),
            ["198.18.0.3:8080"]
        );
        assert_eq!(
            endpoints(&update_for(&w, "198.18.0.5:9000", "x")),
            ["198.18.0.5:9000"],
            "a pod IP"
        );
        let u = update_for(&w, "web-svc:80", "emojivoto");
        let Some(update::Update::Endpoints(set)) = u.update else {
            panic!()
        };
        assert_eq!(set.endpoints[0].labels["deployment"], "web");
        assert!(set.endpoints[0].meshed);
        assert_eq!(
            set.endpoints[0].identity,
            "web.emojivoto.serviceaccount.identity.conduit.cluster.local",
            "a meshed endpoint names the identity its proxy must prove"
        );
        assert_eq!(
            update_for(&w, "example.com:443", "emojivoto"),
            no_endpoints(false)
        );
        let mut empty = w.clone();
        Arc::make_mut(&mut empty.services[0]).ports[0]
            .endpoints
            .clear();
        assert_eq!(
            update_for(&empty, "web-svc.emojivoto:80", "x"),
            no_endpoints(true)
        );
    }

    #[tokio::test]
    async fn streams_a_new_set_when_endpoints_change() {
        use conduit_api::destination::destination_client::DestinationClient;
        let (tx, rx) = watch::channel(Arc::new(sample()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DestinationService::server(rx))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut client = DestinationClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let mut stream = client
            .get(GetDestination {
                path: "web-svc.emojivoto:80".into(),
                context_namespace: "emojivoto".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(endpoints(&first), ["198.18.0.4:8080"]);
        // A second web pod becomes ready.
        let mut w = sample();
        Arc::make_mut(&mut w.services[0]).ports[0]
            .endpoints
            .push(crate::discovery::EndpointInfo {
                addr: "198.18.0.9:8080".parse().unwrap(),
                pod: "web-2".into(),
            });
        tx.send(Arc::new(w)).unwrap();
        let second = stream.message().await.unwrap().unwrap();
        assert_eq!(endpoints(&second), ["198.18.0.4:8080", "198.18.0.9:8080"]);
        // Bad paths are refused with a reason.
        let err = client
            .get(GetDestination {
                path: "".into(),
                context_namespace: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("expected a host:port"));
    }
}
