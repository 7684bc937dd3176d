//! The Destination API: proxies ask who serves a name (a Service in any of its forms, a
//! Service's virtual IP, or a pod's IP) and get a stream of complete endpoint sets, a new
//! one whenever discovery changes what they would get. Unknown names get `NoEndpoints`,
//! so the proxy uses the original destination. Profiles (a Service's routes with their
//! timeouts and retries, from its ServiceProfile, and where its requests go, from the
//! HTTPRoutes attached to it, in the Gateway API's order) stream the same way. Proxies
//! report the ports they learn to be server-speaks-first; each Service port reported so
//! is marked `opaque` in every answer about it, so that a new client's proxy skips
//! detection on its very first connection.

use crate::discovery::{
    follow, split_authority, when_changed, Input, PodInfo, ServiceInfo, ServicePortInfo,
    ServicePortKey, Workloads,
};
use crate::grpc::{holding, Access};
use conduit_api::destination::{
    destination_server::{Destination, DestinationServer},
    http_match, label, update, value_match, BackendRoute, Endpoint, EndpointSet, GetDestination,
    HttpMatch, NoEndpoints, Profile, RetryBudget, Route, ServerFirstAck, ServerFirstReport, Update,
    ValueMatch, WeightedBackend,
};
use conduit_api::{control_plane::service_fqdn, profile::MAX_ROUTES};
use conduit_k8s::{
    httproute::{self, HttpRoute, PathMatch, StringMatch},
    profile::ServiceProfile,
};
use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The most Service ports kept as server-speaks-first; reports of more are refused, so
/// that what proxies report cannot grow the controller without bound.
pub const MAX_SERVER_FIRST_PORTS: usize = 4096;

/// Serves endpoint sets from discovery's snapshots, with the server-speaks-first ports
/// proxies reported.
pub struct DestinationService {
    /// Discovery's snapshots with [`Workloads::server_first`] filled in.
    workloads: watch::Receiver<Arc<Workloads>>,
    server_first: watch::Sender<Arc<BTreeSet<ServicePortKey>>>,
    access: Access,
}

impl DestinationService {
    /// A tonic service answering from `workloads` the callers `access` admits.
    pub fn server(
        workloads: watch::Receiver<Arc<Workloads>>,
        access: Access,
    ) -> DestinationServer<DestinationService> {
        let (server_first, reported) = watch::channel(Arc::default());
        DestinationServer::new(DestinationService {
            workloads: with_server_first(workloads, reported),
            server_first,
            access,
        })
    }
}

/// `workloads`' snapshots, each with the latest of `reported` as its server-speaks-first
/// ports, published again whenever either changes. While none are reported, discovery's
/// own snapshots pass through (no copy, and their lookups are built once).
fn with_server_first(
    mut workloads: watch::Receiver<Arc<Workloads>>,
    mut reported: watch::Receiver<Arc<BTreeSet<ServicePortKey>>>,
) -> watch::Receiver<Arc<Workloads>> {
    let merged = |w: &Arc<Workloads>, ports: &Arc<BTreeSet<ServicePortKey>>| {
        if ports.is_empty() {
            return w.clone();
        }
        Arc::new(Workloads {
            server_first: ports.clone(),
            ..(**w).clone()
        })
    };
    let first = merged(
        &workloads.borrow_and_update(),
        &reported.borrow_and_update(),
    );
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = workloads.changed() => if changed.is_err() { return },
                changed = reported.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
            let next = merged(
                &workloads.borrow_and_update(),
                &reported.borrow_and_update(),
            );
            tx.send_replace(next);
        }
    });
    rx
}

/// The Service ports a client connecting to `addr` reaches: the Service port of a
/// virtual IP, or every Service port a pod's `addr` serves.
fn service_ports_at(w: &Workloads, addr: SocketAddr) -> Vec<ServicePortKey> {
    let key = |s: &ServiceInfo, port: u16| (s.namespace.clone(), s.name.clone(), port);
    if let Some((service, port)) = w.resolve(&addr.to_string(), "") {
        return vec![key(service, port.port)];
    }
    w.services
        .iter()
        .flat_map(|s| {
            s.ports
                .iter()
                .filter(|p| p.endpoints.iter().any(|e| e.addr == addr))
                .map(|p| key(s, p.port))
        })
        .collect()
}

/// Whether a proxy reported that the server of what `path` names speaks first.
fn server_first(w: &Workloads, named: &Named) -> bool {
    if w.server_first.is_empty() {
        return false;
    }
    match named {
        Named::Service(service, port) => {
            let key = (service.namespace.clone(), service.name.clone(), port.port);
            w.server_first.contains(&key)
        }
        Named::Pod(Some((pod, port))) => service_ports_at(w, SocketAddr::new(pod.ip, *port))
            .iter()
            .any(|k| w.server_first.contains(k)),
        Named::Pod(None) => false,
    }
}

/// What a name resolves to: a Service's port, or else a pod by its own address.
enum Named<'a> {
    Service(&'a Arc<ServiceInfo>, &'a ServicePortInfo),
    Pod(Option<(&'a Arc<PodInfo>, u16)>),
}

fn named<'a>(w: &'a Workloads, path: &str, context_ns: &str) -> Named<'a> {
    if let Some((service, port)) = w.resolve(path, context_ns) {
        return Named::Service(service, port);
    }
    let pod = split_authority(path)
        .and_then(|(host, port)| Some((w.pod_by_ip(host.parse().ok()?)?, port)));
    Named::Pod(pod)
}

/// What a proxy asking for `path` from namespace `context_ns` should get now.
pub fn update_for(w: &Workloads, path: &str, context_ns: &str) -> Update {
    let named = named(w, path, context_ns);
    let opaque = server_first(w, &named);
    let (endpoints, labels) = match named {
        Named::Service(_, port) if port.endpoints.is_empty() => return no_endpoints(true),
        Named::Service(service, port) => {
            let endpoints = port
                .endpoints
                .iter()
                .map(|e| endpoint(e.addr, w.pod_by_ip(e.addr.ip()).map(|p| &**p)))
                .collect();
            let labels = HashMap::from([
                (label::NAMESPACE.to_string(), service.namespace.clone()),
                (label::SERVICE.to_string(), service.name.clone()),
            ]);
            (endpoints, labels)
        }
        // A pod's own address: the pod is its only endpoint.
        Named::Pod(Some((pod, port))) if pod.ready => {
            let addr = std::net::SocketAddr::new(pod.ip, port);
            (vec![endpoint(addr, Some(&**pod))], HashMap::new())
        }
        Named::Pod(_) => return no_endpoints(false),
    };
    Update {
        update: Some(update::Update::Endpoints(EndpointSet {
            endpoints,
            labels,
            opaque,
        })),
    }
}

/// What [`update_for`] reads: the Service (or pod) the name resolves to and the pods
/// behind its endpoints.
fn inputs_of(w: &Workloads, path: &str, context_ns: &str) -> Vec<Input> {
    let named = named(w, path, context_ns);
    let mut inputs = vec![Input::ServerFirst(server_first(w, &named))];
    match named {
        Named::Service(service, port) => {
            let pods = port.endpoints.iter().map(|e| w.pod_by_ip(e.addr.ip()));
            inputs.push(Input::Service(Some(service.clone())));
            inputs.extend(pods.map(|p| Input::Pod(p.cloned())));
        }
        Named::Pod(pod) => inputs.extend([
            Input::Service(None),
            Input::Pod(pod.map(|(p, _)| p.clone())),
        ]),
    }
    inputs
}

/// An endpoint at `addr`, served by `pod` when discovery knows it. A meshed pod's proxy
/// proves its ServiceAccount's identity; clients' proxies expect exactly that one.
fn endpoint(addr: std::net::SocketAddr, pod: Option<&PodInfo>) -> Endpoint {
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

fn pod_labels(p: &PodInfo) -> HashMap<String, String> {
    HashMap::from([
        (label::NAMESPACE.to_string(), p.namespace.clone()),
        (label::DEPLOYMENT.to_string(), p.deployment.clone()),
        (label::POD.to_string(), p.name.clone()),
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
        let (_, admitted) = self.access.watch(&req, "Destination")?;
        let GetDestination {
            path,
            context_namespace,
        } = checked(req.into_inner())?;
        let (p, ns) = (path.clone(), context_namespace.clone());
        let inputs = move |w: &Workloads| inputs_of(w, &p, &ns);
        let answer = move |w: &Workloads| Some(update_for(w, &path, &context_namespace));
        Ok(Response::new(holding(
            follow(self.workloads.clone(), when_changed(inputs, answer)),
            admitted,
        )))
    }

    async fn report_server_first(
        &self,
        req: Request<ServerFirstReport>,
    ) -> Result<Response<ServerFirstAck>, Status> {
        let (caller, _admitted) = self.access.call(&req)?;
        if self.access.identities && caller.identity.is_none() {
            return Err(Status::unauthenticated(
                "only proxies that prove their identity report ports: connect with the \
                 proxy's certificate (mutual TLS)",
            ));
        }
        let ServerFirstReport { addr, server_first } = req.into_inner();
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| Status::invalid_argument(format!("addr {addr:?}: expected ip:port")))?;
        let keys = service_ports_at(&self.workloads.borrow(), addr);
        let mut full = false;
        // Read, changed and published whole under the channel's lock: one report at a time.
        let changed = self.server_first.send_if_modified(|published| {
            let mut ports = (**published).clone();
            for key in &keys {
                if !server_first {
                    ports.remove(key);
                } else if ports.contains(key) || ports.len() < MAX_SERVER_FIRST_PORTS {
                    ports.insert(key.clone());
                } else {
                    full = true;
                    return false;
                }
            }
            let changed = ports != **published;
            if changed {
                *published = Arc::new(ports);
            }
            changed
        });
        if full {
            return Err(Status::resource_exhausted(format!(
                "{MAX_SERVER_FIRST_PORTS} Service ports are known to be server-speaks-first, the most kept"
            )));
        }
        if changed {
            let services: Vec<String> = keys
                .iter()
                .map(|(ns, name, port)| format!("{name}.{ns}:{port}"))
                .collect();
            tracing::info!(%addr, server_first, reporter = caller.identity.as_deref().unwrap_or(""), ?services, "a proxy reported a server-speaks-first port");
        }
        Ok(Response::new(ServerFirstAck {}))
    }

    type GetProfileStream = Pin<Box<dyn Stream<Item = Result<Profile, Status>> + Send>>;

    async fn get_profile(
        &self,
        req: Request<GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let (_, admitted) = self.access.watch(&req, "Destination")?;
        let GetDestination {
            path,
            context_namespace,
        } = checked(req.into_inner())?;
        // The Service's profile and HTTPRoutes, and the Service port asked about.
        let of = move |w: &Workloads| {
            let (service, port) = w.service_of(&path, &context_namespace)?;
            let profile = w.profile(&service.namespace, &service.name).cloned();
            let routes = w.http_routes(&service.namespace, &service.name);
            Some((profile, routes, service.name.clone(), port))
        };
        let inputs = {
            let of = of.clone();
            move |w: &Workloads| match of(w) {
                Some((profile, routes, ..)) => {
                    vec![Input::Profile(profile), Input::HttpRoutes(routes)]
                }
                None => vec![Input::Profile(None)],
            }
        };
        let answer = move |w: &Workloads| {
            let Some((profile, routes, service, port)) = of(w) else {
                return Some(Profile::default());
            };
            let mut answer = profile_to_proto(profile.as_deref());
            answer.backend_routes = backend_routes(&routes, &service, port);
            Some(answer)
        };
        Ok(Response::new(holding(
            follow(self.workloads.clone(), when_changed(inputs, answer)),
            admitted,
        )))
    }
}

/// A request whose path is an authority.
fn checked(req: GetDestination) -> Result<GetDestination, Status> {
    if split_authority(&req.path).is_none() {
        return Err(Status::invalid_argument(format!(
            "path {:?}: expected a host:port authority or ip:port",
            req.path
        )));
    }
    Ok(req)
}

/// A profile as proxies get it; none is an empty one.
fn profile_to_proto(profile: Option<&ServiceProfile>) -> Profile {
    let Some(p) = profile else {
        return Profile::default();
    };
    Profile {
        routes: p
            .routes
            .iter()
            .map(|r| Route {
                name: r.name.clone(),
                method: r.method.clone().unwrap_or_default(),
                path_regex: r.path_regex.clone(),
                timeout_ms: r.timeout_ms.unwrap_or(0),
                retryable: r.retryable,
                retry_grpc_codes: r.retry_grpc_codes.clone(),
            })
            .collect(),
        retry_budget: p.retry_budget.as_ref().map(|b| RetryBudget {
            retry_ratio_permille: b.retry_ratio_permille,
            min_retries_per_second: b.min_retries_per_second,
            ttl_ms: b.ttl_ms,
        }),
        backend_routes: Vec::new(),
    }
}

/// The matches of the HTTPRoutes attached to a Service, for requests to its `port`, in
/// the Gateway API's order of precedence (at most a profile's number of routes: the
/// first of them win).
fn backend_routes(routes: &[Arc<HttpRoute>], service: &str, port: u16) -> Vec<BackendRoute> {
    let attached = httproute::attached(routes.iter().map(|r| &**r), service, port);
    if attached.len() > MAX_ROUTES {
        tracing::warn!(
            service,
            matches = attached.len(),
            "the Service's HTTPRoutes have more matches than a proxy takes: only the first {MAX_ROUTES} apply"
        );
    }
    let value = |v: &httproute::ValueMatch| ValueMatch {
        name: v.name.clone(),
        value: Some(match &v.value {
            StringMatch::Exact(s) => value_match::Value::Exact(s.clone()),
            StringMatch::Regex(s) => value_match::Value::Regex(s.clone()),
        }),
    };
    attached
        .iter()
        .take(MAX_ROUTES)
        .map(|a| {
            let rule = a.rule();
            BackendRoute {
                source: format!("{}/{}", a.route.namespace, a.route.name),
                rule: a.rule as u32,
                r#match: Some(HttpMatch {
                    path: Some(match &a.matched.path {
                        PathMatch::Exact(p) => http_match::Path::Exact(p.clone()),
                        PathMatch::Prefix(p) => http_match::Path::Prefix(p.clone()),
                        PathMatch::Regex(p) => http_match::Path::Regex(p.clone()),
                    }),
                    method: a.matched.method.clone().unwrap_or_default(),
                    headers: a.matched.headers.iter().map(value).collect(),
                    query_params: a.matched.query_params.iter().map(value).collect(),
                }),
                backends: (rule.backends.iter())
                    .map(|b| WeightedBackend {
                        authority: format!(
                            "{}:{}",
                            service_fqdn(&b.service, &a.route.namespace),
                            b.port
                        ),
                        weight: b.weight,
                    })
                    .collect(),
                timeout_ms: rule.timeout_ms,
            }
        })
        .collect()
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

    /// The Destination API answering from `rx` on a loopback port, and a client of it.
    async fn serve(
        rx: watch::Receiver<Arc<Workloads>>,
    ) -> conduit_api::destination::destination_client::DestinationClient<tonic::transport::Channel>
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DestinationService::server(rx, crate::grpc::tests::open()))
                .serve_with_incoming(crate::grpc::incoming(listener, None).unwrap()),
        );
        conduit_api::destination::destination_client::DestinationClient::connect(format!(
            "http://{addr}"
        ))
        .await
        .unwrap()
    }

    /// The sample, with a second web pod ready behind web-svc.
    fn with_second_web_pod() -> Workloads {
        let mut w = sample();
        Arc::make_mut(&mut w.services[0]).ports[0]
            .endpoints
            .push(crate::discovery::EndpointInfo {
                addr: "198.18.0.9:8080".parse().unwrap(),
                pod: "web-2".into(),
            });
        w
    }

    #[tokio::test]
    async fn streams_a_new_set_when_endpoints_change() {
        let (tx, rx) = watch::channel(Arc::new(sample()));
        let mut client = serve(rx).await;
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
        tx.send(Arc::new(with_second_web_pod())).unwrap();
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

    fn opaque(u: &Update) -> bool {
        match &u.update {
            Some(update::Update::Endpoints(set)) => set.opaque,
            other => panic!("expected endpoints, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_reported_server_first_port_is_handed_to_every_proxy_asking_of_it() {
        let (tx, rx) = watch::channel(Arc::new(sample()));
        let mut client = serve(rx).await;
        let asking = client.clone();
        let follow = |path: &str| {
            let mut client = asking.clone();
            let path = path.to_string();
            async move {
                let req = GetDestination {
                    path,
                    context_namespace: "emojivoto".into(),
                };
                client.get(req).await.unwrap().into_inner()
            }
        };
        // By name, by virtual IP, by the pod's own address.
        let mut by_name = follow("web-svc.emojivoto:80").await;
        let mut by_vip = follow("198.19.0.3:80").await;
        let mut by_pod = follow("198.18.0.4:8080").await;
        for s in [&mut by_name, &mut by_vip, &mut by_pod] {
            assert!(!opaque(&s.message().await.unwrap().unwrap()));
        }
        let report = |addr: &str, server_first: bool| ServerFirstReport {
            addr: addr.into(),
            server_first,
        };
        // The web pod's proxy learned its port 8080: the Service port behind it is.
        client
            .report_server_first(report("198.18.0.4:8080", true))
            .await
            .unwrap();
        for s in [&mut by_name, &mut by_vip, &mut by_pod] {
            assert!(opaque(&s.message().await.unwrap().unwrap()));
        }
        let mut later = follow("web-svc:80").await;
        assert!(
            opaque(&later.message().await.unwrap().unwrap()),
            "a new proxy gets it at once"
        );
        // Discovery changes: the hint stays with the Service port.
        tx.send(Arc::new(with_second_web_pod())).unwrap();
        let next = by_name.message().await.unwrap().unwrap();
        assert_eq!(endpoints(&next), ["198.18.0.4:8080", "198.18.0.9:8080"]);
        assert!(opaque(&next));
        for s in [&mut by_vip, &mut later] {
            assert!(opaque(&s.message().await.unwrap().unwrap()));
        }
        // A client spoke first there after all (reported by the virtual IP): forgotten.
        client
            .report_server_first(report("198.19.0.3:80", false))
            .await
            .unwrap();
        for s in [&mut by_name, &mut by_vip, &mut later] {
            assert!(!opaque(&s.message().await.unwrap().unwrap()));
        }
        let err = client
            .report_server_first(report("web-svc:80", true))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("expected ip:port"), "{err:?}");
    }

    #[tokio::test]
    async fn streams_a_services_profile_and_its_changes_only() {
        use conduit_k8s::profile::{Route as ProfileRoute, ServiceProfile};
        let profile = |timeout_ms: u64| {
            Arc::new(ServiceProfile {
                namespace: "emojivoto".into(),
                name: "web-svc.emojivoto.svc.cluster.local".into(),
                routes: vec![ProfileRoute {
                    name: "list".into(),
                    method: Some("GET".into()),
                    path_regex: "/api/list".into(),
                    timeout_ms: Some(timeout_ms),
                    retryable: true,
                    retry_grpc_codes: vec![8],
                }],
                retry_budget: None,
            })
        };
        let mut w = sample();
        w.profiles = vec![profile(300)];
        let (tx, rx) = watch::channel(Arc::new(w.clone()));
        let mut client = serve(rx).await;
        let ask = |path: &str| GetDestination {
            path: path.into(),
            context_namespace: "emojivoto".into(),
        };
        let mut web = client
            .get_profile(ask("web-svc:80"))
            .await
            .unwrap()
            .into_inner();
        let first = web.message().await.unwrap().unwrap();
        assert_eq!(
            first.routes,
            [Route {
                name: "list".into(),
                method: "GET".into(),
                path_regex: "/api/list".into(),
                timeout_ms: 300,
                retryable: true,
                retry_grpc_codes: vec![8],
            }]
        );
        // A server's proxy asks with its pod's port, not the Service's: the same profile.
        let mut own = client
            .get_profile(ask("web-svc.emojivoto.svc.cluster.local:8080"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(own.message().await.unwrap().unwrap().routes, first.routes);
        // A Service without a profile, and a name that is no Service: empty profiles.
        let mut voting = client
            .get_profile(ask("voting-svc:8080"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(voting.message().await.unwrap().unwrap(), Profile::default());
        let mut other = client
            .get_profile(ask("example.com:443"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(other.message().await.unwrap().unwrap(), Profile::default());

        // Endpoints change (the profile does not): nothing new; the profile changes: sent.
        Arc::make_mut(&mut w.services[0]).ports[0].endpoints.clear();
        tx.send(Arc::new(w.clone())).unwrap();
        w.profiles = vec![profile(500)];
        tx.send(Arc::new(w.clone())).unwrap();
        let second = web.message().await.unwrap().unwrap();
        assert_eq!(
            second.routes[0].timeout_ms, 500,
            "the next message is the change"
        );
    }

    #[tokio::test]
    async fn a_services_http_routes_come_with_its_profile_in_precedence_order() {
        use conduit_k8s::httproute::{Backend, ParentService, RequestMatch, Rule};
        let any_path = |path: PathMatch, headers: usize| RequestMatch {
            path,
            method: None,
            headers: (0..headers)
                .map(|i| httproute::ValueMatch {
                    name: format!("x-{i}"),
                    value: StringMatch::Exact("1".into()),
                })
                .collect(),
            query_params: Vec::new(),
        };
        let route = |name: &str, port: Option<u16>, matches, backends: &[(&str, u32)]| {
            Arc::new(HttpRoute {
                namespace: "emojivoto".into(),
                name: name.into(),
                created: None,
                parents: vec![ParentService {
                    name: "web-svc".into(),
                    port,
                }],
                rules: vec![Rule {
                    matches,
                    backends: (backends.iter())
                        .map(|(s, w)| Backend {
                            service: s.to_string(),
                            port: 80,
                            weight: *w,
                        })
                        .collect(),
                    timeout_ms: Some(0),
                }],
            })
        };
        let mut w = sample();
        w.http_routes = vec![
            route(
                "split",
                None,
                vec![any_path(PathMatch::Prefix("/".into()), 0)],
                &[("web-svc", 90), ("web-canary", 10)],
            ),
            route(
                "canary",
                Some(80),
                vec![any_path(PathMatch::Prefix("/".into()), 1)],
                &[("web-canary", 1)],
            ),
            route(
                "elsewhere",
                Some(81),
                vec![any_path(PathMatch::Exact("/".into()), 0)],
                &[],
            ),
        ];
        let (_tx, rx) = watch::channel(Arc::new(w));
        let mut client = serve(rx).await;
        let ask = |path: &str| GetDestination {
            path: path.into(),
            context_namespace: "emojivoto".into(),
        };
        let mut web = client
            .get_profile(ask("web-svc:80"))
            .await
            .unwrap()
            .into_inner();
        let routes = web.message().await.unwrap().unwrap().backend_routes;
        let summary: Vec<String> = routes
            .iter()
            .map(|r| {
                let m = r.r#match.as_ref().unwrap();
                let backends: Vec<String> = (r.backends.iter())
                    .map(|b| format!("{}*{}", b.authority, b.weight))
                    .collect();
                format!(
                    "{} headers={} {}",
                    r.source,
                    m.headers.len(),
                    backends.join(",")
                )
            })
            .collect();
        // The header match first; the route on another port not at all.
        assert_eq!(
            summary,
            [
                "emojivoto/canary headers=1 web-canary.emojivoto.svc.cluster.local:80*1",
                "emojivoto/split headers=0 web-svc.emojivoto.svc.cluster.local:80*90,web-canary.emojivoto.svc.cluster.local:80*10",
            ]
        );
        assert_eq!(routes[0].timeout_ms, Some(0));
        // Another Service's: none.
        let mut voting = client
            .get_profile(ask("voting-svc:8080"))
            .await
            .unwrap()
            .into_inner();
        assert!(voting
            .message()
            .await
            .unwrap()
            .unwrap()
            .backend_routes
            .is_empty());
    }
}
