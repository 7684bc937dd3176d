//! `conduit check` of a Kubernetes cluster, through the API server with the user's
//! kubeconfig as kubectl reaches it: the API and its version; with `--pre`, that the user
//! may create what `conduit install` writes (SelfSubjectAccessReviews); else the control
//! plane as installed (namespace, CRDs, pods, API, injector, trust anchor and issuer)
//! and, with `--proxy`, the meshed pods' proxies (ready, of this version, certified).

use super::{opaque_ports_check, proxy_certificates, trust_checks, Check, CheckArgs, Section};
use crate::api::ApiAddr;
use conduit_api::{
    control_plane::{CONTROLLER, INJECTOR_WEBHOOK, ISSUER_SECRET},
    names::{PROXY_CONTAINER, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY, VERSION_ANNOTATION},
    proxy_env,
};
use conduit_identity::ca::TrustFiles;
use conduit_k8s::{
    httproute,
    inject::PROXY_VERSION,
    manifest::{Document, ManifestError},
    policy, profile,
};
use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::{ConfigMap, Container, Namespace, Pod, Secret},
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams},
    Api, Client, ResourceExt,
};

/// The oldest Kubernetes the mesh supports: native sidecars are on by default from 1.29.
const MIN_MINOR: u32 = 29;
/// What `conduit install` creates, as (group, resource, namespaced).
const INSTALLS: &[(&str, &str, bool)] = &[
    ("", "namespaces", false),
    ("apiextensions.k8s.io", "customresourcedefinitions", false),
    ("rbac.authorization.k8s.io", "clusterroles", false),
    ("rbac.authorization.k8s.io", "clusterrolebindings", false),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        false,
    ),
    ("", "serviceaccounts", true),
    ("", "configmaps", true),
    ("", "secrets", true),
    ("", "services", true),
    ("apps", "deployments", true),
];

/// The label selector of the controller's pods, as `conduit install` labels them.
fn controller_selector() -> String {
    format!("app.kubernetes.io/name={CONTROLLER}")
}

/// The only section when there is no client to check with.
fn no_client(why: String, hint: &str) -> Vec<Section> {
    let check = Check::failed("can initialize the client", why, hint);
    vec![("kubernetes-api", vec![check])]
}

pub(super) fn checks(args: &CheckArgs) -> Vec<Section> {
    let config = match args.control_plane.kube_config() {
        Ok(config) => config,
        Err(e) => return no_client(
            format!("{e:#}"),
            "point --kubeconfig at a kubeconfig (or set KUBECONFIG), and --context at one of its contexts",
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => return no_client(e.to_string(), "the system refused a thread or timer"),
    };
    let (mut sections, certificates) = runtime.block_on(cluster_checks(args, config));
    // The control plane's API client runs its own runtime: ask it outside this one.
    if let Some((api, namespaces)) = certificates {
        if let Some((_, checks)) = sections.last_mut() {
            checks.push(proxy_certificates(&api, &namespaces));
        }
    }
    sections
}

/// The meshed pods' namespaces whose proxies' certificates are still to check, and where.
type Certificates = Option<(ApiAddr, Vec<String>)>;

async fn cluster_checks(args: &CheckArgs, config: kube::Config) -> (Vec<Section>, Certificates) {
    let cluster = config.cluster_url.to_string();
    let ns = args.control_plane.control_plane_namespace.clone();
    let client = match Client::try_from(config.clone()) {
        Ok(client) => client,
        Err(e) => {
            return (
                no_client(e.to_string(), "check the kubeconfig's credentials"),
                None,
            )
        }
    };
    let version = client.apiserver_version().await;
    let mut api_checks = vec![
        Check::ok("can initialize the client"),
        Check::of(
            "can query the Kubernetes API",
            &version,
            &format!("is {cluster} up and reachable from here? `kubectl version` should answer"),
        ),
    ];
    let Ok(version) = version else {
        return (vec![("kubernetes-api", api_checks)], None);
    };
    let minor: Option<u32> = version
        .minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok();
    let what = format!("is running the minimum Kubernetes version (1.{MIN_MINOR})");
    api_checks.push(match (version.major.as_str(), minor) {
        ("1", Some(m)) if m >= MIN_MINOR => Check::ok(what),
        _ => Check::failed(
            what,
            format!("the API server is {}", version.git_version),
            "upgrade the cluster: the proxy runs as a native sidecar, which needs 1.29 or newer",
        ),
    });
    let mut sections = vec![("kubernetes-api", api_checks)];
    if args.pre {
        sections.push(("pre-kubernetes-setup", pre_checks(&client, &ns).await));
        return (sections, None);
    }
    sections.push((
        "conduit-control-plane",
        control_plane_checks(&client, &ns).await,
    ));
    let api = ApiAddr::Cluster {
        config: Box::new(config),
        namespace: ns.clone(),
    };
    sections.push(("conduit-identity", identity_checks(&client, &ns).await));
    if !args.proxy {
        return (sections, None);
    }
    let (checks, namespaces) = data_plane_checks(&client, args.namespace.as_deref()).await;
    sections.push(("conduit-data-plane", checks));
    (sections, namespaces.map(|ns| (api, ns)))
}

/// The control plane's namespace is free and the user may create what install writes.
async fn pre_checks(client: &Client, ns: &str) -> Vec<Check> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut checks = vec![match namespaces.get_opt(ns).await {
        Ok(None) => Check::ok(format!(
            "the control plane namespace {ns} does not exist yet"
        )),
        Ok(Some(_)) => Check::failed(
            format!("the control plane namespace {ns} does not exist yet"),
            "it exists",
            "the control plane is installed already: run `conduit check` without --pre",
        ),
        Err(e) => Check::failed(
            format!("the control plane namespace {ns} does not exist yet"),
            e.to_string(),
            "the kubeconfig's user may not read namespaces",
        ),
    }];
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    for (group, resource, namespaced) in INSTALLS {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.to_string()),
                    resource: Some(resource.to_string()),
                    verb: Some("create".into()),
                    namespace: namespaced.then(|| ns.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let what = format!("can create {resource}");
        checks.push(
            match reviews.create(&PostParams::default(), &review).await {
                Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => Check::ok(what),
                Ok(r) => Check::failed(
                    what,
                    r.status
                        .and_then(|s| s.reason)
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "RBAC does not allow it".into()),
                    "install with a user who may (cluster-admin, usually)",
                ),
                Err(e) => Check::failed(what, e.to_string(), "the API refused the access review"),
            },
        );
    }
    checks
}

/// A kind users write for the mesh, and the reader the controller takes it through.
type Reader = fn(&Document) -> Result<(), ManifestError>;

/// Servers, AuthorizationPolicies, ServiceProfiles and HTTPRoutes that the controller
/// would refuse (and so ignore: a profile or route keeps its last good version), read by
/// the same readers.
async fn user_resources_check(client: &Client) -> Check {
    let what = "the Servers, AuthorizationPolicies, ServiceProfiles and HTTPRoutes can be used";
    let kinds: [(&str, &str, Reader); 4] = [
        (policy::API_VERSION, "Server", |d| {
            policy::server(d).map(drop)
        }),
        (policy::API_VERSION, "AuthorizationPolicy", |d| {
            policy::authorization_policy(d).map(drop)
        }),
        (profile::API_VERSION, "ServiceProfile", |d| {
            profile::service_profile(d).map(drop)
        }),
        (httproute::API_VERSION, "HTTPRoute", |d| {
            httproute::http_route(d).map(drop)
        }),
    ];
    let mut refused = Vec::new();
    for (api_version, kind, read) in kinds {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        // A kind that cannot be listed is the CRD check's to report.
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for object in list.items {
            let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
            let Ok(value) = serde_json::to_value(&object) else {
                continue;
            };
            if let Err(e) = read(&Document::from_api(kind, &namespace, &name, value)) {
                refused.push(e.to_string());
            }
        }
    }
    if refused.is_empty() {
        Check::ok(what)
    } else {
        Check::failed(
            what,
            refused.join("\n"),
            "the controller ignores these (a ServiceProfile or HTTPRoute keeps its last good version): fix the fields named",
        )
    }
}

/// The control plane as installed: namespace, CRDs, ready pods, API, injector.
async fn control_plane_checks(client: &Client, ns: &str) -> Vec<Check> {
    let install = "`conduit install | kubectl apply -f -`";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut checks = vec![match namespaces.get_opt(ns).await {
        Ok(Some(_)) => Check::ok(format!("the control plane namespace {ns} exists")),
        Ok(None) => {
            return vec![Check::failed(
                format!("the control plane namespace {ns} exists"),
                "it does not",
                format!("install the control plane: {install} (or give --control-plane-namespace)"),
            )]
        }
        Err(e) => Check::failed(
            format!("the control plane namespace {ns} exists"),
            e.to_string(),
            "the kubeconfig's user may not read namespaces",
        ),
    }];
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    let names = conduit_k8s::install::crds();
    let names = (names.iter()).filter_map(|crd| crd["metadata"]["name"].as_str());
    for name in names {
        match crds.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(name.to_string()),
            Err(e) => missing.push(format!("{name} ({e})")),
        }
    }
    checks.push(if missing.is_empty() {
        Check::ok("the CRDs are installed")
    } else {
        Check::failed(
            "the CRDs are installed",
            format!("missing: {}", missing.join(", ")),
            format!("`conduit install --crds | kubectl apply -f -`, or {install}"),
        )
    });
    checks.push(user_resources_check(client).await);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = controller_selector();
    let listed = pods.list(&ListParams::default().labels(&selector)).await;
    let what = "the control plane pods are ready";
    checks.push(match listed {
        Err(e) => Check::failed(
            what,
            e.to_string(),
            "the kubeconfig's user may not list pods",
        ),
        Ok(list) if list.items.is_empty() => Check::failed(
            what,
            format!("no pod in {ns} matches {selector}"),
            format!("`kubectl -n {ns} describe deploy/{CONTROLLER}` says why"),
        ),
        Ok(list) => {
            let unready: Vec<String> = list
                .items
                .iter()
                .filter(|p| !pod_ready(p))
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect();
            if unready.is_empty() {
                Check::ok(format!("{what} ({})", list.items.len()))
            } else {
                Check::failed(
                    what,
                    format!("not ready: {}", unready.join(", ")),
                    format!(
                        "`kubectl -n {ns} describe pod {}` and its logs say why",
                        unready[0]
                    ),
                )
            }
        }
    });
    // The API's discovery document, through the API server as the other commands reach
    // it: the APIService is registered and the controller answers it.
    let path = conduit_api::public_api::group_path();
    let what = "the control plane API answers";
    checks.push(match service_get(client, &path).await {
        Ok((200, _)) => Check::ok(what),
        Ok((code, body)) => Check::failed(
            what,
            format!("{code}: {}", body.trim().replace('\n', "; ")),
            format!("`kubectl -n {ns} logs deploy/{CONTROLLER}` says why"),
        ),
        Err(e) => Check::failed(
            what,
            e.to_string(),
            format!(
                "`kubectl get apiservice {}` says whether the API server reaches it",
                conduit_api::public_api::API_SERVICE
            ),
        ),
    });
    let webhooks: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(client.clone());
    let what = "the proxy injector is configured";
    checks.push(match webhooks.get_opt(INJECTOR_WEBHOOK).await {
        Ok(Some(w))
            if w.webhooks
                .iter()
                .flatten()
                .any(|h| h.client_config.ca_bundle.is_some()) =>
        {
            Check::ok(what)
        }
        Ok(Some(_)) => Check::failed(what, "it has no CA bundle", install),
        Ok(None) => Check::failed(
            what,
            format!("no MutatingWebhookConfiguration {INJECTOR_WEBHOOK}"),
            install,
        ),
        Err(e) => Check::failed(
            what,
            e.to_string(),
            "the kubeconfig's user may not read webhook configurations",
        ),
    });
    checks
}

/// `GET path` on the API server: the status code and body.
async fn service_get(client: &Client, path: &str) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt;
    let req = http::Request::get(path).body(kube::client::Body::empty())?;
    let rsp = client.send(req).await?;
    let code = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    // The API server's own refusals are a Status; say its message.
    let text = crate::api::status_message(&body);
    Ok((
        code,
        text.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
    ))
}

fn pod_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The trust anchor (the ConfigMap proxies read) and the issuer (the Secret the
/// controller signs with).
async fn identity_checks(client: &Client, ns: &str) -> Vec<Check> {
    let rotate = "replace them: `conduit install` with new --identity-*-file flags, `kubectl apply`, then restart the control plane and the meshed pods";
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let anchors = match config_maps.get(TRUST_ROOTS_CONFIGMAP).await {
        Ok(cm) => cm.data.and_then(|d| d.get(TRUST_ROOTS_KEY).cloned()),
        Err(e) => {
            return vec![Check::failed(
                "the trust anchor can be read",
                e.to_string(),
                format!(
                    "the ConfigMap {ns}/{TRUST_ROOTS_CONFIGMAP} is written by `conduit install`"
                ),
            )]
        }
    };
    let issuer = match secrets.get(ISSUER_SECRET).await {
        Ok(secret) => secret.data.map(|d| {
            let text = |k: &str| d.get(k).map(|b| String::from_utf8_lossy(&b.0).into_owned());
            (text("tls.crt"), text("tls.key"))
        }),
        Err(e) => {
            return vec![Check::failed(
                "the issuer can be read",
                e.to_string(),
                "reading the issuer's Secret needs get on secrets in the control plane namespace",
            )]
        }
    };
    match (anchors, issuer) {
        (Some(anchor_pem), Some((Some(issuer_cert_pem), Some(issuer_key_pem)))) => trust_checks(
            &TrustFiles {
                anchor_pem,
                issuer_cert_pem,
                issuer_key_pem,
            },
            rotate,
        ),
        _ => vec![Check::failed(
            "the trust anchor and issuer can be read",
            format!("{ns}/{TRUST_ROOTS_CONFIGMAP} or the Secret {ISSUER_SECRET} lacks its keys"),
            rotate,
        )],
    }
}

/// The pod's proxy container (a native sidecar among its init containers, or a container).
fn proxy_container(pod: &Pod) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    (spec.containers.iter())
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == PROXY_CONTAINER)
}

/// Every meshed pod's proxy: ready and of the CLI's version; and the namespaces whose
/// proxies' certificates to check.
async fn data_plane_checks(
    client: &Client,
    namespace: Option<&str>,
) -> (Vec<Check>, Option<Vec<String>>) {
    let pods: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let pods = match pods.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            let hint = "the kubeconfig's user may not list pods";
            return (
                vec![Check::failed("can list pods", e.to_string(), hint)],
                None,
            );
        }
    };
    let meshed: Vec<&Pod> = pods
        .iter()
        .filter(|p| proxy_container(p).is_some())
        .collect();
    let name = |p: &Pod| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        )
    };
    let unready: Vec<String> = meshed
        .iter()
        .filter(|p| {
            let statuses = p.status.as_ref().map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            });
            !statuses
                .into_iter()
                .flatten()
                .any(|c| c.name == PROXY_CONTAINER && c.ready)
        })
        .map(|p| name(p))
        .collect();
    let other_version: Vec<String> = meshed
        .iter()
        .filter_map(|p| {
            let v = p.metadata.annotations.as_ref()?.get(VERSION_ANNOTATION)?;
            (v != PROXY_VERSION).then(|| format!("{} ({v})", name(p)))
        })
        .collect();
    let opaque = meshed.iter().map(|p| {
        let set = (proxy_container(p).into_iter())
            .flat_map(|proxy| proxy.env.iter().flatten())
            .find(|e| e.name == proxy_env::OPAQUE_PORTS)
            .and_then(|e| e.value.as_deref());
        (name(p), set)
    });
    let opaque = opaque_ports_check(opaque);
    let checks = vec![
        if unready.is_empty() {
            Check::ok(format!(
                "the meshed pods' proxies are ready ({})",
                meshed.len()
            ))
        } else {
            Check::failed(
                "the meshed pods' proxies are ready",
                unready.join(", "),
                format!("`kubectl logs POD -c {PROXY_CONTAINER}` says why"),
            )
        },
        if other_version.is_empty() {
            Check::ok(format!("the proxies run this version ({PROXY_VERSION})"))
        } else {
            Check::failed(
                format!("the proxies run this version ({PROXY_VERSION})"),
                other_version.join(", "),
                "restart their workloads (`kubectl rollout restart`) to get the current proxy",
            )
        },
        opaque,
    ];
    let mut namespaces: Vec<String> = meshed
        .iter()
        .filter_map(|p| p.metadata.namespace.clone())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    (checks, Some(namespaces))
}
