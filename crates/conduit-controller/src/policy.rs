//! The InboundPolicy API: each meshed pod's proxy asks for its pod's policy and gets it
//! again whenever Servers, AuthorizationPolicies, default policies or the pod change. A
//! pod discovery does not know yet gets nothing until it does; its proxy uses its own
//! default meanwhile. With identities, a proxy gets its own pod's policy only: the pod at
//! the caller's address, whose ServiceAccount's identity the caller's certificate proves.

use crate::discovery::{follow, when_changed, Input, ServiceInfo, Workloads};
use crate::grpc::{holding, Access, Caller};
use conduit_api::policy::{
    inbound_policy_server::{InboundPolicy, InboundPolicyServer},
    PodPolicy, WatchPod,
};
use conduit_k8s::policy::{pod_policy, PodFacts};
use conduit_policy::{wire, DefaultPolicy, PodService};
use ipnet::IpNet;
use std::{pin::Pin, sync::Arc, time::Duration};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The cluster-wide part of policy: the default for pods and namespaces that set none,
/// and the networks `cluster-authenticated` trusts.
#[derive(Clone, Debug)]
pub struct ClusterPolicy {
    pub default: DefaultPolicy,
    pub networks: Vec<IpNet>,
}

/// How long a caller's pod may be unknown to discovery (a proxy starting before the
/// watch has seen its pod) before its call is refused as unavailable, to be retried.
const CALLER_POD_WAIT: Duration = Duration::from_secs(5);

/// Serves pods' policies from discovery's snapshots.
pub struct PolicyService {
    workloads: watch::Receiver<Arc<Workloads>>,
    cluster: Arc<ClusterPolicy>,
    access: Access,
}

impl PolicyService {
    /// A tonic service answering from `workloads` the callers `access` admits.
    pub fn server(
        workloads: watch::Receiver<Arc<Workloads>>,
        cluster: ClusterPolicy,
        access: Access,
    ) -> InboundPolicyServer<PolicyService> {
        InboundPolicyServer::new(PolicyService {
            workloads,
            cluster: Arc::new(cluster),
            access,
        })
    }

    /// Refuses `caller` unless it is the proxy of pod `namespace/name`: the pod at its
    /// address, with the identity its certificate proved.
    async fn check_caller(
        &self,
        caller: &Caller,
        namespace: &str,
        name: &str,
    ) -> Result<(), Status> {
        let ip = caller.addr.ip();
        let mut workloads = self.workloads.clone();
        let known = tokio::time::timeout(
            CALLER_POD_WAIT,
            workloads.wait_for(|w| w.pod_by_ip(ip).is_some()),
        )
        .await;
        let pod = match known {
            Ok(Ok(w)) => w.pod_by_ip(ip).cloned(),
            _ => None,
        };
        let Some(pod) = pod else {
            return Err(Status::unavailable(format!(
                "no pod is known at {ip} (the caller's address) yet: try again"
            )));
        };
        let refuse = |why: String| {
            tracing::info!(client = %caller.addr, identity = caller.identity.as_deref().unwrap_or(""), asked = %format!("{namespace}/{name}"), "policy refused: {why}");
            Err(Status::permission_denied(format!(
                "{why}: a proxy gets its own pod's policy only"
            )))
        };
        if pod.namespace != namespace || pod.name != name {
            return refuse(format!(
                "the caller at {ip} is pod {}/{}, not {namespace}/{name}",
                pod.namespace, pod.name
            ));
        }
        let expected = conduit_identity::identity_name(&pod.service_account, &pod.namespace);
        if caller.identity.as_deref() != Some(expected.as_str()) {
            return refuse(format!(
                "pod {namespace}/{name} runs as {expected}, but the caller proved {}",
                caller.identity.as_deref().unwrap_or("no identity")
            ));
        }
        Ok(())
    }
}

/// The policy of pod `namespace/name`, if discovery knows the pod.
pub fn policy_for(
    w: &Workloads,
    cluster: &ClusterPolicy,
    namespace: &str,
    name: &str,
) -> Option<PodPolicy> {
    let pod = w.pod(namespace, name)?;
    let facts = PodFacts {
        namespace: &pod.namespace,
        labels: &pod.labels,
        named_ports: &pod.named_ports,
        probes: &pod.probes,
        default: pod.default_policy,
    };
    let mut policy = pod_policy(&facts, &w.policy, cluster.default, &cluster.networks);
    policy.services = services_of(w, &pod.namespace, &pod.name)
        .flat_map(|s| {
            s.ports.iter().flat_map(move |p| {
                p.endpoints
                    .iter()
                    .filter(|e| e.pod == pod.name)
                    .map(move |e| PodService {
                        name: s.name.clone(),
                        namespace: s.namespace.clone(),
                        port: p.port,
                        target_port: e.addr.port(),
                    })
            })
        })
        .collect();
    Some(wire::to_proto(&policy))
}

/// The Services with pod `namespace/name` among their endpoints.
fn services_of<'w>(
    w: &'w Workloads,
    namespace: &'w str,
    name: &'w str,
) -> impl Iterator<Item = &'w Arc<ServiceInfo>> + 'w {
    w.services.iter().filter(move |s| {
        s.namespace == namespace
            && s.ports
                .iter()
                .any(|p| p.endpoints.iter().any(|e| e.pod == name))
    })
}

#[tonic::async_trait]
impl InboundPolicy for PolicyService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<PodPolicy, Status>> + Send>>;

    async fn watch(&self, req: Request<WatchPod>) -> Result<Response<Self::WatchStream>, Status> {
        let (caller, admitted) = self.access.watch(&req, "InboundPolicy")?;
        let WatchPod { namespace, pod } = req.into_inner();
        if namespace.is_empty() || pod.is_empty() {
            return Err(Status::invalid_argument(
                "name the pod: namespace and pod are required",
            ));
        }
        if self.access.identities {
            self.check_caller(&caller, &namespace, &pod).await?;
        }
        let cluster = self.cluster.clone();
        let (ns, name) = (namespace.clone(), pod.clone());
        // A pod's policy depends on the pod, the policy resources and its Services.
        let inputs = move |w: &Workloads| {
            [
                Input::Pod(w.pod(&ns, &name).cloned()),
                Input::Policy(w.policy.clone()),
            ]
            .into_iter()
            .chain(services_of(w, &ns, &name).map(|s| Input::Service(Some(s.clone()))))
            .collect()
        };
        let answer = move |w: &Workloads| policy_for(w, &cluster, &namespace, &pod);
        Ok(Response::new(holding(
            follow(self.workloads.clone(), when_changed(inputs, answer)),
            admitted,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::tests::sample;
    use conduit_k8s::policy::{Allow, AuthorizationPolicy, PortRef, Server};
    use std::collections::BTreeMap;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn pods_get_their_policy_and_every_change_to_it() {
        let (tx, rx) = watch::channel(Arc::new(sample()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cluster = ClusterPolicy {
            default: DefaultPolicy::AllUnauthenticated,
            networks: vec!["10.0.0.0/8".parse().unwrap()],
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PolicyService::server(
                    rx,
                    cluster,
                    crate::grpc::tests::open(),
                ))
                .serve_with_incoming(crate::grpc::incoming(listener, None).unwrap()),
        );
        let mut client = conduit_api::policy::inbound_policy_client::InboundPolicyClient::connect(
            format!("http://{addr}"),
        )
        .await
        .unwrap();
        let mut stream = client
            .watch(WatchPod {
                namespace: "emojivoto".into(),
                pod: "voting-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = wire::from_proto(stream.next().await.unwrap().unwrap()).unwrap();
        assert_eq!(first.default, DefaultPolicy::AllUnauthenticated);
        assert!(first.servers.is_empty());
        assert_eq!(
            first.cluster_networks,
            ["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        // The Services that send to the pod, and no other: what its proxy may label with.
        assert_eq!(
            first.services,
            [PodService {
                name: "voting-svc".into(),
                namespace: "emojivoto".into(),
                port: 8080,
                target_port: 8080,
            }]
        );

        // A Server for voting's port, a policy for web, and a stricter namespace default.
        let mut w = sample();
        Arc::make_mut(&mut w.policy).servers.push(Server {
            namespace: "emojivoto".into(),
            name: "voting-grpc".into(),
            pod_selector: BTreeMap::from([("app".into(), "voting-svc".into())]),
            port: PortRef::Number(8080),
            protocol: None,
        });
        Arc::make_mut(&mut w.policy)
            .authorization_policies
            .push(AuthorizationPolicy {
                namespace: "emojivoto".into(),
                name: "voting-from-web".into(),
                server: "voting-grpc".into(),
                allow: vec![Allow::ServiceAccount {
                    namespace: "emojivoto".into(),
                    name: "web".into(),
                }],
            });
        Arc::make_mut(&mut w.policy)
            .namespace_defaults
            .insert("emojivoto".into(), DefaultPolicy::Deny);
        // The web's Service now sends to voting too, on another port.
        let mut web_svc = (*w.services[0]).clone();
        web_svc.ports[0].endpoints[0].pod = "voting-1".into();
        w.services[0] = Arc::new(web_svc);
        tx.send(Arc::new(w)).unwrap();
        let next = wire::from_proto(stream.next().await.unwrap().unwrap()).unwrap();
        assert_eq!(next.services.len(), 2, "{:?}", next.services);
        assert!(next.names_own_service("web-svc.emojivoto", 8080));
        assert_eq!(next.default, DefaultPolicy::Deny);
        assert_eq!(next.servers[0].name, "emojivoto/voting-grpc");
        assert_eq!(
            next.servers[0].authorizations[0].identities,
            ["web.emojivoto.serviceaccount.identity.conduit.cluster.local"]
        );

        // Unknown pods get nothing yet; malformed requests are refused.
        let err = client
            .watch(WatchPod::default())
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
