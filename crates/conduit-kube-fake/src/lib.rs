//! An in-memory Kubernetes API server for the tests and benchmarks of code that talks to
//! Kubernetes, where no cluster can run. It speaks the API's JSON over real HTTP the way
//! kube-apiserver does: lists (pages with `limit`/`continue`, items without their kind, a
//! collection resourceVersion), watches (JSON lines after a resourceVersion, `BOOKMARK`s
//! when asked, an `ERROR` 410 Gone for a version older than its history), get, create,
//! replace, merge/apply patch, delete, TokenReview (a bound token's review names its pod
//! in `user.extra`), SelfSubjectAccessReview and
//! SubjectAccessReview (evaluated against the RBAC objects it holds, `rbac.rs`), and the
//! aggregation of extension API servers (`aggregator.rs`: an `APIService`'s paths
//! authenticated by bearer token, authorized with RBAC and sent on over TLS with a
//! front-proxy client certificate and `X-Remote-*` headers, the front proxy's CA in
//! `kube-system/extension-apiserver-authentication`, with the built-in roles an
//! extension server's account is bound to). Tests change objects directly ([`FakeApiServer::apply`], [`FakeApiServer::delete`]) and inject
//! faults: expired watches, failing requests, an unreachable server.
//!
//! Objects are stored as given, so their fidelity is the test's: build them from
//! k8s-openapi types or copy real API payloads.

mod aggregator;
mod rbac;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};
use tokio::sync::{mpsc, watch};

/// A kind of resource the server knows: where it lives and whether it is namespaced.
struct Kind {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
}

impl Kind {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        group,
        version,
        plural,
        kind,
        namespaced,
    }
}

const KINDS: &[Kind] = &[
    kind("", "v1", "pods", "Pod", true),
    kind("", "v1", "services", "Service", true),
    kind("", "v1", "namespaces", "Namespace", false),
    kind("", "v1", "configmaps", "ConfigMap", true),
    kind("", "v1", "secrets", "Secret", true),
    kind("", "v1", "serviceaccounts", "ServiceAccount", true),
    kind("apps", "v1", "deployments", "Deployment", true),
    kind(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
    ),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    kind(
        "conduit.io",
        "v1alpha1",
        "serviceprofiles",
        "ServiceProfile",
        true,
    ),
    kind(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "HTTPRoute",
        true,
    ),
    kind(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
    ),
    kind("policy.conduit.io", "v1alpha1", "servers", "Server", true),
    kind(
        "policy.conduit.io",
        "v1alpha1",
        "authorizationpolicies",
        "AuthorizationPolicy",
        true,
    ),
    kind(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
    kind(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
    ),
    kind(
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        false,
    ),
    kind(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
    ),
    kind(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
    ),
    kind("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
    kind(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
    ),
    kind(
        "apiregistration.k8s.io",
        "v1",
        "apiservices",
        "APIService",
        false,
    ),
];

/// The token of the kubeconfig's user, a cluster admin (`system:masters`).
pub const ADMIN_TOKEN: &str = "fake-admin-token";

fn kind_of(api_version: &str, kind: &str) -> Option<usize> {
    KINDS
        .iter()
        .position(|k| k.api_version() == api_version && k.kind == kind)
}

/// An object's place: its kind, namespace (empty when cluster-scoped) and name.
type Key = (usize, String, String);

/// One change, as watches report it.
struct Change {
    rv: u64,
    key: Key,
    event: &'static str,
    object: Value,
}

/// A ServiceAccount token the server accepts in TokenReviews.
struct Token {
    namespace: String,
    service_account: String,
    audiences: Vec<String>,
    /// The pod a bound token was issued for: its name and UID.
    pod: Option<(String, String)>,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Change>,
    /// Watches from a resourceVersion older than this get 410 Gone.
    oldest: u64,
    /// Ends every open watch when it changes.
    epoch: u64,
    /// Status codes the next requests get instead of an answer.
    failures: VecDeque<u16>,
    unreachable: bool,
    bookmark_every: Option<Duration>,
    tokens: HashMap<String, Token>,
    /// Users' bearer tokens.
    users: HashMap<String, rbac::UserInfo>,
    /// (verb, group, resource) a SelfSubjectAccessReview denies.
    denied: Vec<(String, String, String)>,
    /// When set, RBAC rules (as in a ClusterRole) outside which requests are forbidden,
    /// and for each whether a request used it.
    rules: Option<Vec<(Value, bool)>>,
    /// Requests the rules forbade.
    forbidden: Vec<String>,
    /// The version `/version` reports.
    version: (u32, u32),
    /// Where the service proxy sends requests for a Service (namespace, name).
    proxied: HashMap<(String, String), SocketAddr>,
    requests: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    front_proxy: aggregator::FrontProxy,
    /// Wakes watches: bumped on every change and fault.
    wake: watch::Sender<u64>,
}

impl Shared {
    fn wake(&self) {
        self.wake.send_modify(|n| *n += 1);
    }
}

/// The running server; stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

impl FakeApiServer {
    /// Listens on a free loopback port.
    pub async fn start() -> std::io::Result<FakeApiServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let admin = rbac::UserInfo {
            name: "kubernetes-admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                version: (1, 33),
                users: HashMap::from([(ADMIN_TOKEN.to_string(), admin)]),
                ..State::default()
            }),
            front_proxy: aggregator::FrontProxy::generate().map_err(std::io::Error::other)?,
            wake: watch::channel(0).0,
        });
        for object in builtin_objects(&shared.front_proxy) {
            let key = key_of(&object, None).map_err(std::io::Error::other)?;
            store(&shared, key, object);
        }
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                if serving.state.lock().unreachable {
                    drop(tcp); // as a server that is gone: the connection closes at once
                    continue;
                }
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move {
                            if shared.state.lock().unreachable {
                                // Kept-alive connections break too.
                                return Err(std::io::Error::other("unreachable"));
                            }
                            Ok(handle(&shared, req).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(FakeApiServer { addr, shared, task })
    }

    /// The server's URL, like `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) for this server, with context `fake` and the admin's token.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_with(ADMIN_TOKEN)
    }

    /// A kubeconfig (YAML) for this server, with context `fake` and bearer `token`.
    pub fn kubeconfig_with(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\nusers:\n- name: tester\n  user: {{token: {token}}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: tester, namespace: default}}\n",
            self.url()
        )
    }

    /// Makes `token` a user's bearer token: `name`, in `groups` (and
    /// `system:authenticated`), as an authentication plugin would name them.
    pub fn add_user(&self, token: &str, name: &str, groups: &[&str]) {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        groups.push("system:authenticated".into());
        self.shared.state.lock().users.insert(
            token.to_string(),
            rbac::UserInfo {
                name: name.to_string(),
                groups,
            },
        );
    }

    /// The CA (PEM) of the front proxy's client certificate.
    pub fn front_proxy_ca(&self) -> String {
        self.shared.front_proxy.ca_pem.clone()
    }

    /// Creates or replaces an object (it must have `apiVersion`, `kind` and
    /// `metadata.name`); returns its new resourceVersion.
    ///
    /// # Panics
    /// On an object of a kind the server does not know: that is the test's mistake.
    pub fn apply(&self, object: Value) -> u64 {
        let key = key_of(&object, None).unwrap_or_else(|e| panic!("apply: {e}"));
        store(&self.shared, key, object).0
    }

    /// Deletes an object if it exists.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let Some(k) = kind_of(api_version, kind) else {
            return;
        };
        let ns = if KINDS[k].namespaced { namespace } else { "" };
        remove(&self.shared, (k, ns.to_string(), name.to_string()));
    }

    /// Forgets the change history and ends every open watch, as an API server does when
    /// its watch cache moves on: a client that resumes from a version before now gets
    /// 410 Gone and must list again (unless a bookmark brought it up to date).
    pub fn expire_watches(&self) {
        let mut state = self.shared.state.lock();
        state.log.clear();
        state.oldest = state.rv + 1;
        state.epoch += 1;
        drop(state);
        self.shared.wake();
    }

    /// The next `n` requests get `code` (a Status body) instead of an answer.
    pub fn fail_next(&self, n: usize, code: u16) {
        self.shared
            .state
            .lock()
            .failures
            .extend(std::iter::repeat_n(code, n));
    }

    /// While unreachable, connections close as soon as they open and open watches end.
    pub fn set_unreachable(&self, unreachable: bool) {
        let mut state = self.shared.state.lock();
        state.unreachable = unreachable;
        state.epoch += 1;
        drop(state);
        self.shared.wake();
    }

    /// Sends a BOOKMARK this often on watches that allow them (none by default).
    pub fn set_bookmark_interval(&self, every: Option<Duration>) {
        self.shared.state.lock().bookmark_every = every;
        self.shared.wake();
    }

    /// Makes `token` a projected token of ServiceAccount `namespace/service_account`
    /// valid for `audiences`; with none, the API server's own (a pod's usual token, which
    /// the API server accepts as that ServiceAccount's bearer token).
    pub fn add_token(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
    ) {
        self.shared.state.lock().tokens.insert(
            token.to_string(),
            Token {
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                pod: None,
            },
        );
    }

    /// Makes `token` a projected token of ServiceAccount `namespace/service_account` bound
    /// to pod `namespace/pod`, as the kubelet mounts one: its TokenReview names the pod
    /// (and the pod's UID, when the pod is stored) in `user.extra`, as kube-apiserver's
    /// does.
    pub fn add_pod_token(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
        pod: &str,
        audiences: &[&str],
    ) {
        let mut state = self.shared.state.lock();
        let uid = state
            .objects
            .values()
            .find(|o| {
                o["kind"] == "Pod"
                    && o["metadata"]["namespace"] == namespace
                    && o["metadata"]["name"] == pod
            })
            .and_then(|o| o["metadata"]["uid"].as_str())
            .unwrap_or_default()
            .to_string();
        state.tokens.insert(
            token.to_string(),
            Token {
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                pod: Some((pod.to_string(), uid)),
            },
        );
    }

    /// SelfSubjectAccessReviews of `verb` on `group`/`resource` say not allowed.
    pub fn deny(&self, verb: &str, group: &str, resource: &str) {
        self.shared.state.lock().denied.push((
            verb.to_string(),
            group.to_string(),
            resource.to_string(),
        ));
    }

    /// From now on, only what these RBAC rules (a ClusterRole's `rules`) allow: anything
    /// else gets 403 Forbidden, as for a ServiceAccount bound to that role.
    pub fn restrict_to(&self, rules: &Value) {
        let rules = rules.as_array().cloned().unwrap_or_default();
        self.shared.state.lock().rules = Some(rules.into_iter().map(|r| (r, false)).collect());
    }

    /// The rules given to [`FakeApiServer::restrict_to`] that no request has needed.
    pub fn unused_rules(&self) -> Vec<Value> {
        let state = self.shared.state.lock();
        let rules = state.rules.iter().flatten();
        rules
            .filter(|(_, used)| !used)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// `/version` reports this Kubernetes version (1.33 by default).
    pub fn set_version(&self, major: u32, minor: u32) {
        self.shared.state.lock().version = (major, minor);
    }

    /// The API server's service proxy (`/api/v1/namespaces/NS/services/NAME/proxy/...`)
    /// sends requests for Service `namespace/name` to `addr`, as it would to its endpoints.
    pub fn proxy_service(&self, namespace: &str, name: &str, addr: SocketAddr) {
        self.shared
            .state
            .lock()
            .proxied
            .insert((namespace.to_string(), name.to_string()), addr);
    }

    /// The requests the rules forbade, as `verb resource`.
    pub fn forbidden(&self) -> Vec<String> {
        self.shared.state.lock().forbidden.clone()
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.state.lock().requests.clone()
    }

    /// The objects of a kind, as stored.
    pub fn objects(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some(k) = kind_of(api_version, kind) else {
            return Vec::new();
        };
        let state = self.shared.state.lock();
        state
            .objects
            .iter()
            .filter(|((kk, _, _), _)| *kk == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// What a new cluster holds that tests of extension API servers need: the front proxy's
/// ConfigMap and the built-in roles that let an extension server delegate
/// authentication and authorization.
fn builtin_objects(front_proxy: &aggregator::FrontProxy) -> Vec<Value> {
    vec![
        front_proxy.config_map(),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:auth-delegator"},
            "rules": [
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "extension-apiserver-authentication-reader", "namespace": "kube-system"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                       "resourceNames": ["extension-apiserver-authentication"],
                       "verbs": ["get", "list", "watch"]}],
        }),
    ]
}

/// The user a request's bearer token names: a user's token, or a ServiceAccount's token
/// for the API server's own audience.
fn authenticate(state: &State, headers: &http::HeaderMap) -> Option<rbac::UserInfo> {
    let token = headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    if let Some(user) = state.users.get(token) {
        return Some(user.clone());
    }
    let sa = state.tokens.get(token).filter(|t| t.audiences.is_empty())?;
    Some(rbac::UserInfo {
        name: format!(
            "system:serviceaccount:{}:{}",
            sa.namespace, sa.service_account
        ),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", sa.namespace),
            "system:authenticated".into(),
        ],
    })
}

/// Whether RBAC (the stored roles and bindings) allows `user` `attrs`.
fn rbac_allows(state: &State, user: &rbac::UserInfo, attrs: &rbac::Attributes<'_>) -> bool {
    let of = |kind: &str| -> Vec<&Value> {
        let Some(k) = kind_of("rbac.authorization.k8s.io/v1", kind) else {
            return Vec::new();
        };
        state
            .objects
            .iter()
            .filter(|((kk, _, _), _)| *kk == k)
            .map(|(_, v)| v)
            .collect()
    };
    let objects = rbac::Objects {
        cluster_roles: of("ClusterRole"),
        cluster_role_bindings: of("ClusterRoleBinding"),
        roles: of("Role"),
        role_bindings: of("RoleBinding"),
    };
    rbac::allows(&objects, user, attrs)
}

fn key_of(object: &Value, namespace: Option<&str>) -> Result<Key, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let k = kind_of(api_version, kind).ok_or(format!("unknown kind {api_version} {kind}"))?;
    let name = object["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or("metadata.name: Required value")?;
    let ns = if KINDS[k].namespaced {
        object["metadata"]["namespace"]
            .as_str()
            .or(namespace)
            .unwrap_or("default")
    } else {
        ""
    };
    Ok((k, ns.to_string(), name.to_string()))
}

/// Stores an object with a new resourceVersion (and a uid and creation time when new),
/// recording the change for watches and waking them; returns the version and the object
/// as stored.
fn store(shared: &Shared, key: Key, mut object: Value) -> (u64, Value) {
    let mut state = shared.state.lock();
    state.rv += 1;
    let rv = state.rv;
    let existed = state.objects.get(&key);
    let uid = existed
        .and_then(|o| o["metadata"]["uid"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("00000000-0000-4000-8000-{rv:012}"));
    let created = existed
        .and_then(|o| o["metadata"]["creationTimestamp"].as_str())
        .unwrap_or("2026-11-26T00:00:00Z")
        .to_string();
    let event = if existed.is_some() {
        "MODIFIED"
    } else {
        "ADDED"
    };
    if KINDS[key.0].kind == "Secret" {
        string_data_to_data(&mut object);
    }
    let meta = &mut object["metadata"];
    meta["resourceVersion"] = json!(rv.to_string());
    meta["uid"] = json!(uid);
    meta["creationTimestamp"] = json!(created);
    if KINDS[key.0].namespaced {
        meta["namespace"] = json!(key.1);
    }
    state.objects.insert(key.clone(), object.clone());
    state.log.push_back(Change {
        rv,
        key,
        event,
        object: object.clone(),
    });
    drop(state);
    shared.wake();
    (rv, object)
}

/// A Secret's `stringData` is written into `data`, base64, as the API server does.
fn string_data_to_data(secret: &mut Value) {
    use base64::Engine as _;
    let Some(Value::Object(strings)) = secret.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    for (k, v) in strings {
        let text = v.as_str().unwrap_or_default();
        secret["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Deletes an object, recording the change for watches and waking them.
fn remove(shared: &Shared, key: Key) -> Option<Value> {
    let mut state = shared.state.lock();
    let mut object = state.objects.remove(&key)?;
    state.rv += 1;
    let rv = state.rv;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    state.log.push_back(Change {
        rv,
        key,
        event: "DELETED",
        object: object.clone(),
    });
    drop(state);
    shared.wake();
    Some(object)
}

/// `None` if the rules (if any) allow `verb` on `kind`; else the 403 the API server gives.
fn authorize(
    shared: &Shared,
    group: &str,
    resource: &str,
    verb: &str,
    namespace: Option<&str>,
) -> Option<Response<Body>> {
    let mut state = shared.state.lock();
    let rules = state.rules.as_mut()?;
    let rule = rules
        .iter_mut()
        .find(|(r, _)| rbac::rule_allows(r, verb, group, resource));
    if let Some((_, used)) = rule {
        *used = true;
        return None;
    }
    state.forbidden.push(format!("{verb} {resource}"));
    let scope = match namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    Some(status(
        403,
        "Forbidden",
        format!("{resource} is forbidden: User \"system:serviceaccount:conduit:conduit-controller\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"),
    ))
}

/// `/api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy/REST`: the namespace, the
/// Service's name and `/REST`.
fn service_proxy_path(path: &str) -> Option<(String, String, String)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (ns, rest) = rest.split_once("/services/")?;
    let (service, rest) = rest.split_once("/proxy")?;
    let parts: Vec<&str> = service.split(':').collect();
    let name = match parts.as_slice() {
        [name] | [name, _] => name,
        [_, name, _] => name,
        _ => return None,
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    Some((ns.to_string(), name.to_string(), rest.to_string()))
}

fn unavailable(e: impl std::fmt::Display) -> Response<Body> {
    status(
        503,
        "ServiceUnavailable",
        format!("error trying to reach service: {e}"),
    )
}

/// Sends a request on to a Service over `io`, streaming its answer back: without the
/// caller's credentials, and when aggregating, with `user` in the front proxy's headers
/// instead of any the caller sent.
async fn forward<I>(
    io: I,
    req: Request<Incoming>,
    path: &str,
    user: Option<&rbac::UserInfo>,
) -> Response<Body>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(e) => return unavailable(e),
    };
    tokio::spawn(conn);
    let (parts, body) = req.into_parts();
    let uri = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut out = Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        let remote = name.as_str().starts_with("x-remote-");
        if name != http::header::AUTHORIZATION && !(remote && user.is_some()) {
            out = out.header(name, value);
        }
    }
    if let Some(user) = user {
        out = out.header(aggregator::USER_HEADER, &user.name);
        for group in &user.groups {
            out = out.header(aggregator::GROUP_HEADER, group);
        }
    }
    let Ok(out) = out.body(body) else {
        return status(400, "BadRequest", "cannot forward this request");
    };
    match sender.send_request(out).await {
        Ok(rsp) => rsp.map(BodyExt::boxed),
        Err(e) => unavailable(e),
    }
}

/// The APIService serving `path`'s group and version, if any, with the path after them.
fn api_service_of(shared: &Shared, path: &str) -> Option<(Value, String)> {
    let rest = path.strip_prefix("/apis/")?;
    let k = kind_of("apiregistration.k8s.io/v1", "APIService")?;
    let state = shared.state.lock();
    state
        .objects
        .iter()
        .filter(|((kk, _, _), _)| *kk == k)
        .map(|(_, v)| v)
        .find_map(|svc| {
            let prefix = format!(
                "{}/{}",
                svc["spec"]["group"].as_str()?,
                svc["spec"]["version"].as_str()?
            );
            let after = rest.strip_prefix(&prefix)?;
            (after.is_empty() || after.starts_with('/')).then(|| (svc.clone(), after.to_string()))
        })
}

/// A request for an aggregated API: authenticated, authorized, then sent to its Service.
async fn aggregate(
    shared: &Shared,
    req: Request<Incoming>,
    api_service: Value,
    rest: &str,
) -> Response<Body> {
    let group = api_service["spec"]["group"].as_str().unwrap_or_default();
    let watch = query(&req)
        .get("watch")
        .is_some_and(|w| w == "true" || w == "1");
    let info = aggregator::request_info(req.method(), rest, watch);
    let (user, backend) = {
        let state = shared.state.lock();
        let Some(user) = authenticate(&state, req.headers()) else {
            return status(401, "Unauthorized", "Unauthorized");
        };
        if let Some(resource) = &info.resource {
            let attrs = rbac::Attributes {
                verb: info.verb,
                group,
                resource,
                namespace: info.namespace.as_deref(),
            };
            if !rbac_allows(&state, &user, &attrs) {
                return status(
                    403,
                    "Forbidden",
                    rbac::forbidden_message(&user.name, &attrs),
                );
            }
        }
        let service = &api_service["spec"]["service"];
        let (ns, name) = (
            service["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            service["name"].as_str().unwrap_or_default().to_string(),
        );
        let backend = state.proxied.get(&(ns.clone(), name.clone())).copied();
        (user, backend.map(|addr| (addr, format!("{name}.{ns}.svc"))))
    };
    let Some((addr, server_name)) = backend else {
        return status(503, "ServiceUnavailable", "service unavailable");
    };
    let ca_bundle = {
        use base64::Engine as _;
        let b64 = api_service["spec"]["caBundle"].as_str().unwrap_or_default();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_default();
        String::from_utf8_lossy(&pem).into_owned()
    };
    let tls = match shared
        .front_proxy
        .connect(addr, &ca_bundle, &server_name)
        .await
    {
        Ok(tls) => tls,
        Err(e) => return unavailable(e),
    };
    let path = req.uri().path().to_string();
    forward(tls, req, &path, Some(&user)).await
}

/// Whether an object's labels match an equality-based selector (`a=b,c=d`, `a==b`,
/// `a!=b`, `a`).
fn selects(selector: &str, object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            labels[k.trim()].as_str() == Some(v.trim_start_matches('=').trim())
        } else {
            labels.get(term.trim()).is_some()
        }
    })
}

/// Where a request points: a kind, a namespace (if the path names one), an object name.
struct Target {
    kind: usize,
    namespace: Option<String>,
    name: Option<String>,
}

fn target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name) = match rest {
        [plural] => (*plural, None),
        [plural, name] => (*plural, Some(name.to_string())),
        _ => return None,
    };
    let kind = KINDS
        .iter()
        .position(|k| k.group == group && k.version == version && k.plural == plural)?;
    Some(Target {
        kind,
        namespace,
        name,
    })
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

/// A `Status` object, as the API server answers every failure.
fn status(code: u16, reason: &str, message: impl Into<String>) -> Response<Body> {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &status_object(code.as_u16(), reason, message))
}

fn status_object(code: u16, reason: &str, message: impl Into<String>) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code,
    })
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let line = format!("{} {}", req.method(), req.uri());
    let failure = {
        let mut state = shared.state.lock();
        state.requests.push(line);
        state.failures.pop_front()
    };
    if let Some(code) = failure {
        let reason = match code {
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            _ => "InternalError",
        };
        return status(code, reason, format!("injected failure ({code})"));
    }
    if req.uri().path() == "/version" {
        let (major, minor) = shared.state.lock().version;
        return json_response(
            StatusCode::OK,
            &json!({"major": major.to_string(), "minor": minor.to_string(),
                    "gitVersion": format!("v{major}.{minor}.4"), "platform": "linux/amd64"}),
        );
    }
    if let Some((namespace, service, rest)) = service_proxy_path(req.uri().path()) {
        if let Some(forbidden) = authorize(shared, "", "services/proxy", "get", Some(&namespace)) {
            return forbidden;
        }
        let backend = shared
            .state
            .lock()
            .proxied
            .get(&(namespace, service.clone()))
            .copied();
        return match backend {
            Some(addr) => match tokio::net::TcpStream::connect(addr).await {
                Ok(tcp) => forward(tcp, req, &rest, None).await,
                Err(e) => unavailable(e),
            },
            None => status(
                503,
                "ServiceUnavailable",
                format!("no endpoints available for service \"{service}\""),
            ),
        };
    }
    if let Some((api_service, rest)) = api_service_of(shared, req.uri().path()) {
        return aggregate(shared, req, api_service, &rest).await;
    }
    let Some(t) = target(req.uri().path()) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let params = query(&req);
    let method = req.method().clone();
    let verb = match (&method, &t.name) {
        (&Method::GET, None) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            "watch"
        }
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => "unknown",
    };
    let kind = &KINDS[t.kind];
    if let Some(forbidden) = authorize(
        shared,
        kind.group,
        kind.plural,
        verb,
        t.namespace.as_deref(),
    ) {
        return forbidden;
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(400, "BadRequest", e.to_string()),
    };
    match (method, &t.name) {
        (Method::GET, None) if verb == "watch" => watch_collection(shared, &t, &params),
        (Method::GET, None) => list(shared, &t, &params),
        (Method::GET, Some(name)) => {
            let key = (t.kind, namespace_of(&t), name.clone());
            match shared.state.lock().objects.get(&key) {
                Some(o) => json_response(StatusCode::OK, o),
                None => not_found(kind, name),
            }
        }
        (Method::POST, None) => {
            let Ok(object) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "the request body is not JSON");
            };
            match kind.kind {
                "TokenReview" => token_review(shared, object),
                "SelfSubjectAccessReview" => access_review(shared, object),
                "SubjectAccessReview" => subject_access_review(shared, object),
                _ => create(shared, &t, object),
            }
        }
        (method @ (Method::PUT | Method::PATCH), Some(name)) => {
            let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "the request body is not JSON");
            };
            let key = (t.kind, namespace_of(&t), name.clone());
            let current = shared.state.lock().objects.get(&key).cloned();
            // PUT replaces an object that exists; PATCH merges into it (an apply patch
            // also creates it).
            let (object, code) = match (method == Method::PUT, current) {
                (true, None) => return not_found(kind, name),
                (true, Some(_)) => (body, StatusCode::OK),
                (false, None) => (body, StatusCode::CREATED),
                (false, Some(mut current)) => {
                    merge_patch(&mut current, body);
                    (current, StatusCode::OK)
                }
            };
            json_response(code, &store(shared, key, object).1)
        }
        (Method::DELETE, Some(name)) => {
            match remove(shared, (t.kind, namespace_of(&t), name.clone())) {
                Some(o) => json_response(StatusCode::OK, &o),
                None => not_found(kind, name),
            }
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
    }
}

fn namespace_of(t: &Target) -> String {
    if KINDS[t.kind].namespaced {
        t.namespace.clone().unwrap_or_else(|| "default".into())
    } else {
        String::new()
    }
}

fn not_found(kind: &Kind, name: &str) -> Response<Body> {
    let resource = if kind.group.is_empty() {
        kind.plural.to_string()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    };
    status(404, "NotFound", format!("{resource} \"{name}\" not found"))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in fields {
                if v.is_null() {
                    if let Some(map) = target.as_object_mut() {
                        map.remove(&k);
                    }
                } else {
                    merge_patch(&mut target[&k], v);
                }
            }
        }
        other => *target = other,
    }
}

fn create(shared: &Shared, t: &Target, object: Value) -> Response<Body> {
    let key = match key_of(&object, t.namespace.as_deref()) {
        Ok(key) if key.0 == t.kind => key,
        Ok(_) => {
            return status(
                400,
                "BadRequest",
                "the object's kind does not match the path",
            )
        }
        Err(e) => return status(422, "Invalid", e),
    };
    if shared.state.lock().objects.contains_key(&key) {
        let kind = &KINDS[t.kind];
        return status(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", kind.plural, key.2),
        );
    }
    json_response(StatusCode::CREATED, &store(shared, key, object).1)
}

fn list(shared: &Shared, t: &Target, params: &HashMap<String, String>) -> Response<Body> {
    let kind = &KINDS[t.kind];
    let state = shared.state.lock();
    let matching: Vec<&Value> = state
        .objects
        .iter()
        .filter(|((k, ns, _), _)| *k == t.kind && t.namespace.as_ref().is_none_or(|n| n == ns))
        .map(|(_, v)| v)
        .filter(|v| {
            params
                .get("labelSelector")
                .is_none_or(|sel| selects(sel, v))
        })
        .collect();
    let start: usize = params
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|o| {
            // Items of a list carry no kind of their own.
            let mut o = (*o).clone();
            if let Some(map) = o.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            o
        })
        .collect();
    let mut metadata = json!({ "resourceVersion": state.rv.to_string() });
    if start.saturating_add(limit) < matching.len() {
        metadata["continue"] = json!((start + limit).to_string());
        metadata["remainingItemCount"] = json!(matching.len() - start - limit);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version(),
            "metadata": metadata,
            "items": page,
        }),
    )
}

fn watch_collection(
    shared: &Arc<Shared>,
    t: &Target,
    params: &HashMap<String, String>,
) -> Response<Body> {
    let kind = t.kind;
    let namespace = t.namespace.clone();
    let mut from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = params.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let shared = shared.clone();
    let mut wake = shared.wake.subscribe();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let epoch = shared.state.lock().epoch;
        if from == 0 {
            from = shared.state.lock().rv;
        }
        loop {
            let (lines, gone, bookmark_every, current) = {
                let state = shared.state.lock();
                if state.epoch != epoch || state.unreachable {
                    return; // the watch ends, as when the server drops it
                }
                let gone = from + 1 < state.oldest;
                let start = state.log.partition_point(|c| c.rv <= from);
                let lines: Vec<(u64, String)> = state
                    .log
                    .range(start..)
                    .filter(|c| c.key.0 == kind)
                    .filter(|c| namespace.as_ref().is_none_or(|n| *n == c.key.1))
                    .map(|c| {
                        (
                            c.rv,
                            json!({"type": c.event, "object": c.object}).to_string(),
                        )
                    })
                    .collect();
                (lines, gone, state.bookmark_every, state.rv)
            };
            if gone {
                let error = status_object(
                    410,
                    "Expired",
                    format!("too old resource version: {from} ({})", current),
                );
                let line = json!({"type": "ERROR", "object": error}).to_string() + "\n";
                let _ = tx.send(Ok(Frame::data(Bytes::from(line)))).await;
                return;
            }
            for (rv, line) in lines {
                if tx
                    .send(Ok(Frame::data(Bytes::from(line + "\n"))))
                    .await
                    .is_err()
                {
                    return;
                }
                from = rv;
            }
            let bookmark = async {
                match bookmark_every.filter(|_| bookmarks) {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = wake.changed() => if changed.is_err() { return },
                () = bookmark => {
                    from = from.max(current);
                    let k = &KINDS[kind];
                    let line = json!({"type": "BOOKMARK", "object": {
                        "kind": k.kind, "apiVersion": k.api_version(),
                        "metadata": {"resourceVersion": from.to_string()},
                    }}).to_string() + "\n";
                    if tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = tx.closed() => return,
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .header("content-type", "application/json")
        .body(body.map_err(|never| match never {}).boxed())
        .unwrap_or_default()
}

fn token_review(shared: &Shared, review: Value) -> Response<Body> {
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let state = shared.state.lock();
    let user = state.users.get(token).filter(|_| wanted.is_empty());
    let status = match state.tokens.get(token) {
        // A user's token, for the API server's own audience.
        None if user.is_some() => json!({
            "authenticated": true,
            "user": user.map(|u| json!({"username": u.name, "uid": format!("uid-{}", u.name), "groups": u.groups})),
        }),
        None => json!({
            "authenticated": false,
            "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]",
        }),
        Some(t) if !wanted.is_empty() && !wanted.iter().any(|w| t.audiences.contains(w)) => json!({
            "authenticated": false,
            "error": format!(
                "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}, unknown]",
                t.audiences, wanted
            ),
        }),
        Some(t) => {
            let mut user = json!({
                "username": format!("system:serviceaccount:{}:{}", t.namespace, t.service_account),
                "uid": format!("uid-{}-{}", t.namespace, t.service_account),
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", t.namespace), "system:authenticated"],
            });
            if let Some((pod, uid)) = &t.pod {
                user["extra"] = json!({
                    "authentication.kubernetes.io/pod-name": [pod],
                    "authentication.kubernetes.io/pod-uid": [uid],
                });
            }
            json!({
                "authenticated": true,
                "user": user,
                "audiences": if wanted.is_empty() { t.audiences.clone() } else { wanted },
            })
        }
    };
    let mut answer = review;
    answer["metadata"] = json!({"creationTimestamp": null});
    answer["status"] = status;
    json_response(StatusCode::CREATED, &answer)
}

fn access_review(shared: &Shared, review: Value) -> Response<Body> {
    let attrs = &review["spec"]["resourceAttributes"];
    let get = |f: &str| attrs[f].as_str().unwrap_or_default().to_string();
    let asked = (get("verb"), get("group"), get("resource"));
    let denied = shared.state.lock().denied.contains(&asked);
    access_answer(
        review,
        !denied,
        "RBAC: allowed by ClusterRoleBinding \"cluster-admin\"",
    )
}

/// An access review with its decision, as the API server answers it.
fn access_answer(review: Value, allowed: bool, reason: &str) -> Response<Body> {
    let mut answer = review;
    answer["metadata"] = json!({"creationTimestamp": null});
    answer["status"] = if allowed {
        json!({"allowed": true, "reason": reason})
    } else {
        json!({"allowed": false, "reason": ""})
    };
    json_response(StatusCode::CREATED, &answer)
}

/// A SubjectAccessReview: whether RBAC allows the user it names what it asks.
fn subject_access_review(shared: &Shared, review: Value) -> Response<Body> {
    let spec = &review["spec"];
    let attrs = &spec["resourceAttributes"];
    let get = |f: &str| attrs[f].as_str().unwrap_or_default().to_string();
    let user = rbac::UserInfo {
        name: spec["user"].as_str().unwrap_or_default().to_string(),
        groups: spec["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(str::to_string))
            .collect(),
    };
    let (verb, group, resource, namespace) =
        (get("verb"), get("group"), get("resource"), get("namespace"));
    let asked = rbac::Attributes {
        verb: &verb,
        group: &group,
        resource: &resource,
        namespace: Some(namespace.as_str()).filter(|n| !n.is_empty()),
    };
    let allowed = rbac_allows(&shared.state.lock(), &user, &asked);
    access_answer(review, allowed, "RBAC: allowed by a binding")
}

/// The fake's own promises, seen through kube-rs as the controller sees them.
#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, ListParams, WatchEvent, WatchParams};
    use tokio_stream::StreamExt;

    fn config_map(name: &str, app: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "a", "labels": {"app": app}}, "data": {"k": "v"}})
    }

    async fn client(api: &FakeApiServer) -> kube::Client {
        let url = api.url().parse().expect("URL");
        kube::Client::try_from(kube::Config::new(url)).expect("client")
    }

    #[tokio::test]
    async fn lists_in_pages_and_by_label() {
        let api = FakeApiServer::start().await.expect("fake");
        for i in 0..5 {
            api.apply(config_map(
                &format!("cm-{i}"),
                if i % 2 == 0 { "even" } else { "odd" },
            ));
        }
        let maps: Api<ConfigMap> = Api::namespaced(client(&api).await, "a");
        let first = maps
            .list(&ListParams::default().limit(2))
            .await
            .expect("page 1");
        assert_eq!(first.items.len(), 2);
        let token = first.metadata.continue_.clone().expect("a continue token");
        let rest = maps
            .list(&ListParams::default().limit(10).continue_token(&token))
            .await
            .expect("page 2");
        assert_eq!(rest.items.len(), 3);
        assert!(rest.metadata.continue_.is_none());
        let even = maps
            .list(&ListParams::default().labels("app=even"))
            .await
            .expect("selected");
        assert_eq!(even.items.len(), 3);
        let missing = maps.get("nope").await.unwrap_err();
        assert!(matches!(missing, kube::Error::Api(s) if s.code == 404));
    }

    #[tokio::test]
    async fn watches_from_a_version_and_answers_410_for_an_expired_one() {
        let api = FakeApiServer::start().await.expect("fake");
        let rv = api.apply(config_map("one", "x"));
        let maps: Api<ConfigMap> = Api::namespaced(client(&api).await, "a");
        let events = maps
            .watch(&WatchParams::default(), &rv.to_string())
            .await
            .expect("watch");
        tokio::pin!(events);
        api.apply(config_map("two", "x"));
        match events.next().await {
            Some(Ok(WatchEvent::Added(cm))) => assert_eq!(cm.metadata.name.as_deref(), Some("two")),
            other => panic!("{other:?}"),
        }
        api.expire_watches();
        let expired = maps
            .watch(&WatchParams::default(), &rv.to_string())
            .await
            .expect("watch");
        tokio::pin!(expired);
        match expired.next().await {
            Some(Ok(WatchEvent::Error(status))) => assert_eq!(status.code, 410),
            other => panic!("{other:?}"),
        }
    }
}
