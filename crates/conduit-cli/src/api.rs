//! Talking to the control plane's API, wherever it runs: `--api-addr unix:/path`; a
//! cluster's, as an aggregated API of the Kubernetes API server with the user's
//! kubeconfig (`--kubeconfig`, `--context`), so the API server authenticates the user and
//! RBAC decides (`conduit_api::public_api`: each endpoint's path, verb and role); or, by
//! default, the local runtime's socket when one runs here and the kubeconfig's cluster
//! otherwise. Queries and answers are `conduit_api::http`'s types, as the controller
//! serves them; an answer that does not read as one is an error saying so, and a refusal
//! names the ClusterRole to bind.

use anyhow::{bail, Context as _};
use clap::Args;
use conduit_api::{
    control_plane::{self, API_SERVICE},
    http::{ApiError, Endpoint, NAMESPACE_PARAM},
    public_api::{self, Access},
};
use conduit_local::layout::Layout;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;

/// The `message` of a Kubernetes API `Status` body, if that is what `body` is.
pub fn status_message(body: &[u8]) -> Option<String> {
    let status: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(status["message"].as_str()?.to_string())
}

/// Where the control plane is: the flags every command that talks to it takes.
#[derive(Args, Clone, Debug, Default)]
pub struct ControlPlaneArgs {
    /// The control plane's API: unix:/path (default: the local runtime's when one runs
    /// here, else the kubeconfig's cluster's, through its API server).
    #[arg(long)]
    pub api_addr: Option<String>,
    /// The kubeconfig to reach a cluster with (default: $KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// The control plane's namespace on the cluster.
    #[arg(long, default_value = control_plane::NAMESPACE)]
    pub control_plane_namespace: String,
}

impl ControlPlaneArgs {
    /// Where the API is, by the flags, else the local runtime if it runs, else the cluster.
    pub fn api(&self) -> anyhow::Result<ApiAddr> {
        if let Some(a) = &self.api_addr {
            return match a.strip_prefix("unix:") {
                Some(path) => Ok(ApiAddr::Unix(PathBuf::from(path))),
                None => bail!(
                    "--api-addr {a}: expected unix:/path; on a cluster the API is reached through the Kubernetes API server, which authenticates you (give --kubeconfig or --context)"
                ),
            };
        }
        if !self.is_cluster() {
            return Ok(ApiAddr::local());
        }
        Ok(ApiAddr::Cluster {
            config: Box::new(self.kube_config()?),
            namespace: self.control_plane_namespace.clone(),
        })
    }

    /// Whether these flags point at a cluster: `--kubeconfig` or `--context`, or no
    /// `--api-addr`, no local runtime here and a kubeconfig where kubectl looks.
    pub fn is_cluster(&self) -> bool {
        if self.api_addr.is_some() {
            return false;
        }
        let socket = Layout::from_env().api_socket();
        self.kubeconfig.is_some()
            || self.context.is_some()
            || (!socket.exists() && kubeconfig_exists())
    }

    /// The client configuration of the kubeconfig and context asked for.
    pub fn kube_config(&self) -> anyhow::Result<kube::Config> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut config = runtime.block_on(async {
            match &self.kubeconfig {
                Some(path) => {
                    let file = kube::config::Kubeconfig::read_from(path)
                        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
                    kube::Config::from_custom_kubeconfig(file, &options)
                        .await
                        .with_context(|| format!("using the kubeconfig {}", path.display()))
                }
                None => kube::Config::from_kubeconfig(&options).await.context(
                    "no usable kubeconfig ($KUBECONFIG, ~/.kube/config): give --kubeconfig FILE",
                ),
            }
        })?;
        // A command says at once what fails; the client's own retries of 503s would
        // take minutes to give up.
        config.default_retry = false;
        Ok(config)
    }
}

/// Whether a kubeconfig is where kubectl looks for one.
fn kubeconfig_exists() -> bool {
    if let Some(paths) = std::env::var_os("KUBECONFIG") {
        return std::env::split_paths(&paths).any(|p| p.exists());
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".kube/config"))
        .is_some_and(|p| p.exists())
}

/// Where the API is.
#[derive(Clone)]
pub enum ApiAddr {
    Unix(PathBuf),
    /// A cluster's, through its API server, as an aggregated API.
    Cluster {
        config: Box<kube::Config>,
        namespace: String,
    },
}

impl ApiAddr {
    /// The local runtime's control plane.
    pub fn local() -> ApiAddr {
        ApiAddr::Unix(Layout::from_env().api_socket())
    }
}

/// A response body from any of the places the API can be.
pub type AnyBody = UnsyncBoxBody<bytes::Bytes, anyhow::Error>;

/// The path and query string of `query`.
fn uri<E: Endpoint>(query: &E) -> anyhow::Result<String> {
    let query = serde_urlencoded::to_string(query)
        .with_context(|| format!("writing the query for {}", E::PATH))?;
    Ok(if query.is_empty() {
        E::PATH.to_string()
    } else {
        format!("{}?{query}", E::PATH)
    })
}

/// The path and query string of `query` through the API server: its resource's path in
/// the query's namespace, the rest as the query, and `watch=true` for a watch.
fn cluster_uri<E: Endpoint>(query: &E) -> anyhow::Result<(String, Option<String>)> {
    let text = serde_urlencoded::to_string(query)
        .with_context(|| format!("writing the query for {}", E::PATH))?;
    cluster_target(E::ACCESS, serde_urlencoded::from_str(&text)?)
}

/// The path and query string through the API server of an endpoint of `access` asked
/// with the query `pairs`, and the namespace it names.
pub fn cluster_target(
    access: Access,
    mut pairs: Vec<(String, String)>,
) -> anyhow::Result<(String, Option<String>)> {
    let namespace = pairs
        .iter()
        .position(|(k, _)| k == NAMESPACE_PARAM)
        .map(|i| pairs.remove(i).1);
    if access.verb == public_api::WATCH {
        let (k, v) = public_api::WATCH_PARAM;
        pairs.push((k.to_string(), v.to_string()));
    }
    let path = access.path(namespace.as_deref());
    let query = serde_urlencoded::to_string(&pairs)?;
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    Ok((uri, namespace))
}

/// Reads `text` as what `E` answers, or says what is wrong with it.
pub fn read_answer<E: Endpoint>(text: &[u8]) -> anyhow::Result<E::Answer> {
    serde_json::from_slice(text).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => {
                "JSON this conduit cannot read (are the CLI and the control plane of one version?)"
            }
            _ => "something that is not JSON",
        };
        anyhow::anyhow!("the control plane answered {} with {what}: {e}", E::PATH)
    })
}

/// The error of a refused request: the control plane's own words when it gave them.
async fn refused(rsp: http::Response<AnyBody>) -> anyhow::Error {
    let body = match rsp.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return e.context("reading the control plane's refusal"),
    };
    match serde_json::from_slice::<ApiError>(&body) {
        Ok(refusal) => anyhow::anyhow!("{}", refusal.error),
        Err(_) => anyhow::anyhow!("the control plane refused the request"),
    }
}

/// Asks the API `query`; its answer, or an error saying what to do.
pub fn get<E: Endpoint>(addr: &ApiAddr, query: &E) -> anyhow::Result<E::Answer> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let rsp = send(addr, query).await?;
        if !rsp.status().is_success() {
            return Err(refused(rsp).await);
        }
        let body = rsp.into_body().collect().await?.to_bytes();
        read_answer::<E>(&body)
    })
}

/// Asks the API `query`, whose answer is a stream of JSON lines, handing each line (as
/// read and as sent) to `line` until it returns false or the stream ends.
pub fn stream<E: Endpoint>(
    addr: &ApiAddr,
    query: &E,
    mut line: impl FnMut(E::Answer, &str) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let rsp = send(addr, query).await?;
        if !rsp.status().is_success() {
            return Err(refused(rsp).await);
        }
        let mut body = rsp.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let text = String::from_utf8_lossy(&pending[..i]).into_owned();
                pending.drain(..=i);
                if !line(read_answer::<E>(text.as_bytes())?, &text)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    })
}

async fn send<E: Endpoint>(addr: &ApiAddr, query: &E) -> anyhow::Result<http::Response<AnyBody>> {
    match addr {
        ApiAddr::Unix(p) => {
            let s = connect_local(p).await?;
            request(TokioIo::new(s), &uri(query)?).await
        }
        ApiAddr::Cluster { config, namespace } => {
            let (path, query_namespace) = cluster_uri(query)?;
            let rsp = cluster_get(config, &path).await?;
            let status = rsp.status();
            if !is_refusal(status) {
                return Ok(rsp);
            }
            let body = rsp.into_body().collect().await?.to_bytes();
            bail!(
                "{}",
                refusal_through_api_server(
                    status,
                    &body,
                    E::ACCESS,
                    query_namespace.as_deref(),
                    namespace,
                )
            )
        }
    }
}

/// A connection to the control plane's socket, or an error saying what to do.
pub async fn connect_local(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixStream> {
    tokio::net::UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach the control plane at {} (is the local runtime up? start it with `conduit local up` or `conduit demo`, or point --api-addr at a control plane; only its owner, root, may use it)",
            path.display()
        )
    })
}

/// `GET path` on the cluster's API server, with the kubeconfig's credentials.
pub async fn cluster_get(
    config: &kube::Config,
    path: &str,
) -> anyhow::Result<http::Response<AnyBody>> {
    let client = cluster_client(config)?;
    let req = http::Request::get(path).body(kube::client::Body::empty())?;
    cluster_send(&client, &config.cluster_url.to_string(), req).await
}

/// A client of the cluster's API server with the kubeconfig's credentials.
pub fn cluster_client(config: &kube::Config) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(config.clone())
        .with_context(|| format!("cannot make a client for {}", config.cluster_url))
}

/// Sends `req` to the API server at `cluster`; its answer as it streams.
pub async fn cluster_send(
    client: &kube::Client,
    cluster: &str,
    req: http::Request<kube::client::Body>,
) -> anyhow::Result<http::Response<AnyBody>> {
    let rsp = client
        .send(req)
        .await
        .with_context(|| format!("cannot reach the Kubernetes API at {cluster}"))?;
    Ok(rsp.map(|b| b.map_err(anyhow::Error::from).boxed_unsync()))
}

/// Whether an answer through the API server with `status` is a refusal, the control
/// plane's or the API server's own: [`refusal_through_api_server`] tells which.
pub fn is_refusal(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403 | 404 | 503)
}

/// What a refusal through the API server (`body`, with a status [`is_refusal`] accepts)
/// of a request for `access` says: the control plane's own words (JSON with "error"), or
/// what the API server's `Status` means and what to do.
pub fn refusal_through_api_server(
    status: http::StatusCode,
    body: &[u8],
    access: Access,
    namespace: Option<&str>,
    control_plane: &str,
) -> String {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(refusal) => refusal.error,
        Err(_) => {
            let message = status_message(body).unwrap_or_default();
            cluster_refusal(status, &message, access, namespace, control_plane)
        }
    }
}

/// What the API server's refusal (401, 403, 404 or 503, with `message`) of a request
/// for `access` means, and what to do.
fn cluster_refusal(
    status: http::StatusCode,
    message: &str,
    access: Access,
    namespace: Option<&str>,
    control_plane: &str,
) -> String {
    match status.as_u16() {
        401 => format!(
            "the Kubernetes API did not authenticate you ({message}): check the kubeconfig's credentials"
        ),
        403 => format!(
            "the Kubernetes API refused the request: {message}: {}",
            access.grant("YOUR-USER", namespace)
        ),
        404 => format!(
            "the Kubernetes API does not serve {}/{} ({message}): is the control plane installed? `conduit check` tells",
            public_api::GROUP,
            public_api::VERSION
        ),
        _ => format!(
            "the control plane in namespace {control_plane} is not reachable ({message}): is it installed and ready? `conduit check` tells"
        ),
    }
}

async fn request<I>(io: I, path: &str) -> anyhow::Result<http::Response<AnyBody>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, API_SERVICE)
        .body(Empty::<bytes::Bytes>::new())?;
    let rsp = sender.send_request(req).await?;
    Ok(rsp.map(|b| b.map_err(anyhow::Error::from).boxed_unsync()))
}
