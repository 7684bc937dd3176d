//! Who may call the public API. Locally, only the socket's owner: the socket is made
//! mode 0600 before it gets its name, in a directory only its owner may write (so nobody
//! else can replace it). Over TCP, on Kubernetes: TLS with the serving certificate
//! `conduit install` made, then every request (but the probes) authenticated and
//! authorized through the Kubernetes API, as an aggregated API server does. A caller is
//! either the API server's front proxy (a client certificate chained to the requestheader
//! CA of `kube-system/extension-apiserver-authentication`, with an allowed name; the user
//! from its headers) or holds a bearer token (checked with a TokenReview); anything else
//! gets 401. The user is then authorized with a SubjectAccessReview for the endpoint's
//! verb and resource (`conduit_api::public_api`), in the path's namespace; refused: 403
//! naming the role to bind. Decisions are cached briefly, so a dashboard does not flood
//! the API server. Paths are `/apis/<group>/<version>[/namespaces/<ns>]/<resource>`, the
//! aggregator's; a request that passes is handed to the API's router at the endpoint's
//! own path with the path's namespace as its query's (one it sent itself is dropped).
//! Knows nothing about what the endpoints answer.

use anyhow::Context as _;
use axum::{
    body::Body,
    http::{header, HeaderMap, Request, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json, Router,
};
use conduit_api::{
    http::{self as api_http, ApiError, NAMESPACE_PARAM},
    public_api::{self, Access},
};
use parking_lot::Mutex;
use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::net::TcpListener;
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer},
    server::WebPkiClientVerifier,
};
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

/// How long an authentication or an authorization decision is reused.
const DECISION_TTL: Duration = Duration::from_secs(5);
/// How many decisions of each kind are kept at most.
const DECISION_CAPACITY: usize = 4096;

/// Why the API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("reading the ConfigMap {}/{}, where the API server says how it authenticates to aggregated APIs (the controller's ServiceAccount needs the Role {} there): {}", public_api::AUTHENTICATION_NAMESPACE, public_api::AUTHENTICATION_CONFIGMAP, public_api::AUTHENTICATION_READER_ROLE, .0)]
    ConfigMap(kube::Error),
    #[error(
        "{key} in {}/{}: {message}",
        public_api::AUTHENTICATION_NAMESPACE,
        public_api::AUTHENTICATION_CONFIGMAP
    )]
    Key { key: &'static str, message: String },
}

/// How the API server's front proxy authenticates and names users: the
/// `requestheader-*` keys of `extension-apiserver-authentication`.
#[derive(Clone, Debug, Default)]
pub struct RequestHeader {
    /// The CA (PEM) front-proxy client certificates chain to.
    pub ca_pem: String,
    /// The common names a front-proxy certificate may have; any when empty.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}

impl RequestHeader {
    /// Reads it from the API server; `None` when it has no front proxy configured (only
    /// bearer tokens are accepted then).
    pub async fn load(client: &kube::Client) -> Result<Option<RequestHeader>, SetupError> {
        use k8s_openapi::api::core::v1::ConfigMap;
        let maps: kube::Api<ConfigMap> =
            kube::Api::namespaced(client.clone(), public_api::AUTHENTICATION_NAMESPACE);
        let map = maps
            .get(public_api::AUTHENTICATION_CONFIGMAP)
            .await
            .map_err(SetupError::ConfigMap)?;
        let data = map.data.unwrap_or_default();
        let Some(ca_pem) = data.get(public_api::REQUESTHEADER_CA_KEY).cloned() else {
            return Ok(None);
        };
        let list = |key: &'static str| -> Result<Vec<String>, SetupError> {
            match data.get(key) {
                None => Ok(Vec::new()),
                Some(text) => serde_json::from_str(text).map_err(|e| SetupError::Key {
                    key,
                    message: format!("expected a JSON list of strings: {e}"),
                }),
            }
        };
        Ok(Some(RequestHeader {
            ca_pem,
            allowed_names: list(public_api::REQUESTHEADER_ALLOWED_NAMES_KEY)?,
            username_headers: list(public_api::REQUESTHEADER_USERNAME_KEY)?,
            group_headers: list(public_api::REQUESTHEADER_GROUP_KEY)?,
            extra_prefixes: list(public_api::REQUESTHEADER_EXTRA_PREFIX_KEY)?,
        }))
    }
}

/// The API's TLS: the serving certificate of `dir`, and client certificates verified
/// against the front proxy's CA when there is one (optional: token callers have none).
pub fn tls_config(
    dir: &Path,
    requestheader: Option<&RequestHeader>,
) -> anyhow::Result<rustls::ServerConfig> {
    let (certs, key) = crate::webhook::serving_certificate(dir)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match requestheader {
        None => builder.with_no_client_auth(),
        Some(rh) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(rh.ca_pem.as_bytes()) {
                let cert = cert.context("the requestheader client CA is not PEM")?;
                roots
                    .add(cert)
                    .context("the requestheader client CA is not a CA certificate")?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("verifying front-proxy client certificates")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("the API's certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A user, as the API server names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// A small map whose entries expire; when full, expired entries go, then all.
struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock();
        let (at, value) = entries.get(key)?;
        (at.elapsed() < DECISION_TTL).then(|| value.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock();
        if entries.len() >= DECISION_CAPACITY {
            entries.retain(|_, (at, _)| at.elapsed() < DECISION_TTL);
            if entries.len() >= DECISION_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

/// A refused or failed request, as the caller sees it.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

fn unauthenticated() -> Refusal {
    Refusal(
        StatusCode::UNAUTHORIZED,
        "not authenticated: call the API through the Kubernetes API server (kubectl's \
         credentials; `conduit` does with your kubeconfig), or give a bearer token the API \
         server accepts"
            .into(),
    )
}

fn unavailable(what: &str, e: kube::Error) -> Refusal {
    Refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the Kubernetes API could not {what}: {e}; try again"),
    )
}

/// The client certificate a connection presented, verified by the TLS handshake.
#[derive(Clone)]
struct PeerCertificate(Option<CertificateDer<'static>>);

/// Authenticates and authorizes callers with the Kubernetes API.
pub struct Gate {
    client: kube::Client,
    requestheader: Option<RequestHeader>,
    tokens: Cache<String, Option<User>>,
    decisions: Cache<(User, Access, Option<String>), bool>,
}

impl Gate {
    pub fn new(client: kube::Client, requestheader: Option<RequestHeader>) -> Gate {
        Gate {
            client,
            requestheader,
            tokens: Cache::new(),
            decisions: Cache::new(),
        }
    }

    /// Who calls: the front proxy's user, a bearer token's, or nobody known (`None`
    /// for the front proxy without a user, which may read only discovery).
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: &PeerCertificate,
    ) -> Result<Option<User>, Refusal> {
        if let (Some(rh), Some(cert)) = (&self.requestheader, &peer.0) {
            if front_proxy_allowed(cert, &rh.allowed_names) {
                return Ok(user_from_headers(headers, rh));
            }
            debug!("a client certificate of the front-proxy CA with a name it does not allow");
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(unauthenticated)?;
        let user = match self.tokens.get(&token.to_string()) {
            Some(user) => user,
            None => {
                let user = self.review_token(token).await?;
                self.tokens.put(token.to_string(), user.clone());
                user
            }
        };
        user.map(Some).ok_or_else(unauthenticated)
    }

    /// Creates a review (cluster-scoped) and reads the API server's answer; `what` says
    /// what failed if it cannot.
    async fn create<K>(&self, review: &K, what: &str) -> Result<K, Refusal>
    where
        K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        kube::Api::<K>::all(self.client.clone())
            .create(&kube::api::PostParams::default(), review)
            .await
            .map_err(|e| unavailable(what, e))
    }

    async fn review_token(&self, token: &str) -> Result<Option<User>, Refusal> {
        let status = crate::identity::review_token(&self.client, token, None)
            .await
            .map_err(|e| unavailable("review the bearer token", e))?;
        if status.authenticated != Some(true) {
            debug!(error = ?status.error, "a bearer token the API server does not accept");
            return Ok(None);
        }
        let info = status.user.unwrap_or_default();
        Ok(Some(User {
            name: info.username.unwrap_or_default(),
            uid: info.uid.unwrap_or_default(),
            groups: info.groups.unwrap_or_default(),
            extra: info.extra.unwrap_or_default(),
        }))
    }

    /// Whether `user` may use `access` in `namespace` (every namespace when `None`).
    async fn authorize(
        &self,
        user: &User,
        access: Access,
        namespace: Option<&str>,
    ) -> Result<bool, Refusal> {
        let key = (user.clone(), access, namespace.map(str::to_string));
        if let Some(allowed) = self.decisions.get(&key) {
            return Ok(allowed);
        }
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone()).filter(|e| !e.is_empty()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(public_api::GROUP.into()),
                    version: Some(public_api::VERSION.into()),
                    resource: Some(access.resource.into()),
                    verb: Some(access.verb.into()),
                    namespace: namespace.map(str::to_string),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = self.create(&review, "authorize the request").await?;
        let allowed = reviewed.status.is_some_and(|s| s.allowed);
        self.decisions.put(key, allowed);
        Ok(allowed)
    }

    /// Answers one request: the probes as they are, discovery to anyone authenticated,
    /// an endpoint to those allowed it; else the refusal.
    async fn handle(&self, router: Router, peer: PeerCertificate, req: Request<Body>) -> Response {
        let path = req.uri().path();
        if path == api_http::HEALTHZ_PATH || path == api_http::READY_PATH {
            return call(router, req).await;
        }
        let user = match self.authenticate(req.headers(), &peer).await {
            Ok(user) => user,
            Err(refusal) => return refusal.into_response(),
        };
        let group = public_api::group_path();
        if path == group {
            return Json(discovery()).into_response();
        }
        let Some((namespace, local, access)) = endpoint_of(path) else {
            return Refusal(
                StatusCode::NOT_FOUND,
                format!("no such resource: the API's resources are listed at {group}"),
            )
            .into_response();
        };
        let Some(user) = user else {
            return unauthenticated().into_response();
        };
        match self.authorize(&user, access, namespace.as_deref()).await {
            Ok(true) => {}
            Ok(false) => {
                info!(user = %user.name, verb = access.verb, resource = access.resource, namespace = ?namespace, "API request forbidden");
                return Refusal(
                    StatusCode::FORBIDDEN,
                    access.refusal(&user.name, namespace.as_deref()),
                )
                .into_response();
            }
            Err(refusal) => return refusal.into_response(),
        }
        match local_uri(&local, req.uri(), namespace.as_deref()) {
            Some(uri) => {
                let (mut parts, body) = req.into_parts();
                parts.uri = uri;
                call(router, Request::from_parts(parts, body)).await
            }
            None => Refusal(
                StatusCode::BAD_REQUEST,
                "the query string is not form-encoded".into(),
            )
            .into_response(),
        }
    }
}

async fn call(router: Router, req: Request<Body>) -> Response {
    match router.oneshot(req).await {
        Ok(rsp) => rsp,
        Err(never) => match never {},
    }
}

/// Whether a verified client certificate is the front proxy's: its common name is allowed.
fn front_proxy_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let allowed_name = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .any(|cn| allowed.iter().any(|a| a == cn));
    allowed_name
}

/// The user the front proxy names in its headers; `None` without a name.
fn user_from_headers(headers: &HeaderMap, rh: &RequestHeader) -> Option<User> {
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let name = rh
        .username_headers
        .iter()
        .find_map(|h| values(h).into_iter().next())
        .filter(|n| !n.is_empty())?;
    let groups = rh.group_headers.iter().flat_map(|h| values(h)).collect();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (header, value) in headers {
        let lower = header.as_str();
        let Some(key) = rh
            .extra_prefixes
            .iter()
            .find_map(|p| lower.strip_prefix(&p.to_ascii_lowercase()))
        else {
            continue;
        };
        if let Ok(v) = value.to_str() {
            extra
                .entry(key.to_string())
                .or_default()
                .push(v.to_string());
        }
    }
    Some(User {
        name,
        uid: String::new(),
        groups,
        extra,
    })
}

/// The namespace, the endpoint's own path and its access of an aggregated path
/// (`/apis/<group>/<version>[/namespaces/<ns>]/<resource>`, or a dashboard file's
/// `/apis/<group>/<version>/dashboard/NAME`).
fn endpoint_of(path: &str) -> Option<(Option<String>, String, Access)> {
    if let Some(name) = conduit_api::dashboard::asset_of_cluster_path(path) {
        return Some((
            None,
            conduit_api::dashboard::asset_path(name),
            conduit_api::dashboard::ACCESS,
        ));
    }
    let rest = path.strip_prefix(&public_api::group_path())?;
    let rest = rest.strip_prefix('/')?;
    let (namespace, resource) = match rest.strip_prefix("namespaces/") {
        Some(rest) => {
            let (ns, resource) = rest.split_once('/')?;
            let ns = Some(ns).filter(|n| !n.is_empty())?;
            (Some(ns.to_string()), resource)
        }
        None => (None, rest),
    };
    let (local, access) = api_http::ENDPOINTS
        .iter()
        .find(|(_, a)| a.resource == resource)?;
    Some((namespace, local.to_string(), *access))
}

/// `local?query`, with the namespace the path named (if any) as the query's only one.
fn local_uri(local: &str, original: &Uri, namespace: Option<&str>) -> Option<Uri> {
    let mut pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(original.query().unwrap_or("")).ok()?;
    pairs.retain(|(k, _)| k != NAMESPACE_PARAM && k != public_api::WATCH_PARAM.0);
    if let Some(ns) = namespace {
        pairs.push((NAMESPACE_PARAM.to_string(), ns.to_string()));
    }
    let query = serde_urlencoded::to_string(&pairs).ok()?;
    let uri = if query.is_empty() {
        local.to_string()
    } else {
        format!("{local}?{query}")
    };
    uri.parse().ok()
}

/// The API's discovery document (an `APIResourceList`), which kubectl and the aggregator read.
fn discovery() -> serde_json::Value {
    let files = conduit_api::dashboard::ACCESS;
    let resources: Vec<serde_json::Value> = api_http::ENDPOINTS
        .iter()
        .map(|(_, a)| (a, true))
        .chain([(&files, false)])
        .map(|(a, namespaced)| {
            serde_json::json!({
                "name": a.resource, "singularName": "", "namespaced": namespaced,
                "kind": a.resource, "verbs": [a.verb],
            })
        })
        .collect();
    serde_json::json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{}/{}", public_api::GROUP, public_api::VERSION),
        "resources": resources,
    })
}

/// Serves `router` over TLS on `listener` behind the gate, until the process ends.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    gate: Arc<Gate>,
    router: Router,
) {
    if gate.requestheader.is_none() {
        warn!("the API server publishes no front-proxy CA: only bearer tokens are accepted");
    }
    crate::https::serve(listener, tls, "API", move |certificate| {
        let (router, gate) = (router.clone(), gate.clone());
        let certificate = PeerCertificate(certificate);
        tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (router, gate, certificate) = (router.clone(), gate.clone(), certificate.clone());
            async move {
                Ok::<_, std::convert::Infallible>(
                    gate.handle(router, certificate, req.map(Body::new)).await,
                )
            }
        })
    })
    .await;
}

/// Listens on `path`, which only this process's user may connect to: the directory must
/// be this user's and writable by nobody else, and the socket is bound under a temporary
/// name, made 0600, then renamed into place, so it is never reachable with a wider mode.
pub fn bind_private_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a socket path", path.display()))?;
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("the API socket's directory {}", dir.display()))?;
    // The owner of /proc/self is the process's effective user.
    let me = std::fs::metadata("/proc/self")
        .context("finding this process's user")?
        .uid();
    if meta.uid() != me {
        anyhow::bail!(
            "the API socket's directory {} belongs to uid {}, not to the controller's (uid {me}): its owner could replace the socket; use a directory of the controller's user",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        anyhow::bail!(
            "the API socket's directory {} is writable by others (mode {:o}): anyone could replace the socket; make it 0755 or 0700",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    let staging = dir.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&staging);
    let listener = tokio::net::UnixListener::bind(&staging)
        .with_context(|| format!("listening on {}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} 0600", staging.display()))?;
    if let Err(e) = std::fs::rename(&staging, path) {
        let _ = std::fs::remove_file(&staging);
        return Err(e).with_context(|| format!("moving the API socket to {}", path.display()));
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_api::http::Endpoint as _;

    #[test]
    fn aggregated_paths_name_the_endpoint_and_the_namespace() {
        let (ns, local, access) =
            endpoint_of("/apis/api.conduit.io/v1alpha1/namespaces/emojivoto/stats").unwrap();
        assert_eq!(ns.as_deref(), Some("emojivoto"));
        assert_eq!(local, api_http::StatQuery::PATH);
        assert_eq!(access.verb, "list");
        let (ns, local, access) = endpoint_of("/apis/api.conduit.io/v1alpha1/taps").unwrap();
        assert_eq!(
            (ns, local.as_str(), access.verb),
            (None, "/api/v1/tap", "watch")
        );
        let (ns, local, access) =
            endpoint_of("/apis/api.conduit.io/v1alpha1/dashboard/app.js").unwrap();
        assert_eq!(
            (ns, local.as_str(), access),
            (None, "/assets/app.js", conduit_api::dashboard::ACCESS)
        );
        assert!(endpoint_of("/apis/api.conduit.io/v1alpha1/namespaces//stats").is_none());
        assert!(endpoint_of("/apis/api.conduit.io/v1alpha1/secrets").is_none());
        assert!(endpoint_of("/api/v1/stat").is_none());
    }

    /// The path's namespace is the query's: a caller allowed in one namespace cannot ask
    /// for another's with a query parameter.
    #[test]
    fn the_paths_namespace_replaces_the_querys() {
        let original: Uri = "/apis/x?resource=deploy&namespace=kube-system&watch=true"
            .parse()
            .unwrap();
        let uri = local_uri("/api/v1/stat", &original, Some("emojivoto")).unwrap();
        assert_eq!(uri, "/api/v1/stat?resource=deploy&namespace=emojivoto");
        let uri = local_uri("/api/v1/stat", &original, None).unwrap();
        assert_eq!(uri, "/api/v1/stat?resource=deploy");
    }

    #[test]
    fn the_cache_forgets_after_its_ttl_and_stays_bounded() {
        let cache: Cache<usize, bool> = Cache::new();
        for i in 0..DECISION_CAPACITY + 10 {
            cache.put(i, true);
        }
        assert!(cache.entries.lock().len() <= DECISION_CAPACITY);
        assert_eq!(cache.get(&(DECISION_CAPACITY + 9)), Some(true));
        cache
            .entries
            .lock()
            .insert(1, (Instant::now() - DECISION_TTL, true));
        assert_eq!(cache.get(&1), None);
    }
}
