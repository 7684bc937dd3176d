//! `conduit dashboard`: the control plane's web dashboard and API on a local port, for a
//! browser (or any HTTP client) on this host: `http://ADDRESS:PORT` forwards, until
//! interrupted, to the local runtime's API socket, or on a cluster through the Kubernetes
//! API server with the user's kubeconfig (each API path to its aggregated resource in the
//! query's namespace, the pages' files to `conduit_api::dashboard`'s), so the API server
//! authenticates the user and RBAC decides as for the other commands. Either way the port
//! holds someone's access, so it must not widen it: it listens on loopback only, answers only the users it runs for
//! (its own user and, under sudo, the one who ran sudo; the kernel's socket table names
//! the user behind each connection), and only requests addressed to it by its own name
//! (`Host`), which keeps other web pages out even when their names resolve to loopback
//! (DNS rebinding). Everything refused gets a JSON `ApiError` naming why.

use crate::api::{ApiAddr, ControlPlaneArgs};
use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use conduit_api::{
    control_plane::API_SERVICE,
    dashboard,
    http::{ApiError, ENDPOINTS, V1},
    public_api::Access,
};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt as _, Full};
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

/// The dashboard's port unless `--port` says otherwise, as Linkerd's.
pub const DEFAULT_PORT: u16 = 50750;

/// What to do once the dashboard serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Show {
    /// Print its URL.
    Url,
    /// Print its URL and open it in a browser when there is a display to open one on.
    Browser,
}

#[derive(Args)]
pub struct DashboardArgs {
    /// The local port to serve on (0: any free one; the URL printed names it).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// The loopback address to serve on.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Print the URL, or also open it in a browser.
    #[arg(long, value_enum, default_value_t = Show::Browser)]
    show: Show,
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

/// Who may use the port, and under which names it is addressed.
struct Gate {
    /// The users whose connections are served.
    users: Vec<u32>,
    /// The `Host` values requests may carry: `localhost`, the address, with the port.
    hosts: Vec<String>,
}

impl Gate {
    fn new(local: SocketAddr, me: u32) -> Gate {
        let mut users = vec![me];
        // `sudo conduit dashboard`: the browser runs as the user who ran sudo.
        if let Some(uid) = std::env::var("SUDO_UID").ok().and_then(|u| u.parse().ok()) {
            users.push(uid);
        }
        let port = local.port();
        let mut hosts = vec![format!("localhost:{port}"), local.to_string()];
        if port == 80 {
            hosts.extend(["localhost".to_string(), local.ip().to_string()]);
        }
        Gate { users, hosts }
    }

    /// Why a connection from `peer` to `local` is refused, if it is.
    fn refuse_connection(&self, peer: SocketAddr, local: SocketAddr) -> Option<String> {
        match connection_owner(peer, local) {
            Some(uid) if self.users.contains(&uid) => None,
            Some(uid) => Some(format!(
                "the dashboard serves only the users it runs for ({}); this connection is uid {uid}'s: that user may run a dashboard of their own (as root, or with sudo, for the local runtime)",
                self.users.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            )),
            None => Some("the dashboard cannot tell which user this connection is from, so it does not serve it".into()),
        }
    }

    /// Why a request is refused, if it is: it must name the dashboard by its own address.
    fn refuse_request<B>(&self, req: &Request<B>) -> Option<String> {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return None;
        }
        Some(format!(
            "Host {host:?} is not this dashboard's address ({}): the dashboard answers only requests addressed to it, so that other web pages cannot read it",
            self.hosts.join(" or ")
        ))
    }
}

/// This process's effective user: the owner of `/proc/self`.
fn effective_uid() -> anyhow::Result<u32> {
    let meta = std::fs::metadata("/proc/self").context("finding this process's user")?;
    Ok(std::os::unix::fs::MetadataExt::uid(&meta))
}

/// The user owning the client end of the loopback connection `peer` → `local`, from the
/// kernel's socket tables.
fn connection_owner(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let table = if local.is_ipv4() {
        procfs::net::tcp()
    } else {
        procfs::net::tcp6()
    };
    table
        .ok()?
        .into_iter()
        .find(|e| e.local_address == peer && e.remote_address == local)
        .map(|e| e.uid)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<bytes::Bytes, BoxError>;

/// A JSON refusal.
fn refusal(status: StatusCode, error: String) -> Response<Body> {
    let body = serde_json::to_vec(&ApiError { error }).unwrap_or_default();
    let mut rsp = Response::new(
        Full::new(bytes::Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    rsp
}

/// Sends `req` to the control plane's socket and hands back its answer as it streams.
async fn forward(socket: &std::path::Path, mut req: Request<Incoming>) -> Response<Body> {
    let stream = match crate::api::connect_local(socket).await {
        Ok(s) => s,
        Err(e) => return refusal(StatusCode::BAD_GATEWAY, format!("{e:#}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => {
            return refusal(
                StatusCode::BAD_GATEWAY,
                format!("talking to the control plane: {e}"),
            )
        }
    };
    // The connection ends with the response: a browser that goes away ends a tap here,
    // which ends it on the proxies.
    tokio::spawn(conn);
    req.headers_mut().insert(
        hyper::header::HOST,
        hyper::header::HeaderValue::from_static(API_SERVICE),
    );
    match sender.send_request(req).await {
        Ok(rsp) => rsp.map(|b| b.map_err(BoxError::from).boxed_unsync()),
        Err(e) => refusal(
            StatusCode::BAD_GATEWAY,
            format!("the control plane did not answer: {e}"),
        ),
    }
}

/// Where requests go.
enum Backend {
    /// The local runtime's socket.
    Socket(PathBuf),
    /// A cluster's API server.
    Cluster {
        client: kube::Client,
        /// Its URL, for errors.
        url: String,
        /// The control plane's namespace, for errors.
        control_plane: String,
    },
}

/// The request headers worth passing to the API server: the browser's cache validator
/// and what it accepts.
const PASSED_HEADERS: [hyper::header::HeaderName; 2] =
    [hyper::header::IF_NONE_MATCH, hyper::header::ACCEPT];

/// Hop-by-hop headers of the API server's answer, which the port's own connection frames.
const HOP_HEADERS: [hyper::header::HeaderName; 3] = [
    hyper::header::CONNECTION,
    hyper::header::TRANSFER_ENCODING,
    hyper::header::UPGRADE,
];

/// Where a request for `path?query` goes through the API server: an API endpoint to its
/// resource in the query's namespace, a page's file to the dashboard's resource, any other
/// path to the page (whose script tells an unknown page). The access it needs and the
/// namespace it names, for refusals; or the refusal when the path or query is not one.
fn cluster_target(
    path: &str,
    query: Option<&str>,
) -> Result<(String, Access, Option<String>), (StatusCode, String)> {
    if path == V1 || path.starts_with(&format!("{V1}/")) {
        let Some((_, access)) = ENDPOINTS.iter().find(|(local, _)| *local == path) else {
            return Err((
                StatusCode::NOT_FOUND,
                format!("no such path: {path}; the API's paths are in {V1}/openapi.json"),
            ));
        };
        let pairs = serde_urlencoded::from_str(query.unwrap_or("")).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("the query string is not form-encoded: {e}"),
            )
        })?;
        let (target, namespace) = crate::api::cluster_target(*access, pairs)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e:#}")))?;
        return Ok((target, *access, namespace));
    }
    let name = dashboard::asset_of_path(path).unwrap_or(dashboard::INDEX);
    Ok((dashboard::cluster_path(name), dashboard::ACCESS, None))
}

/// Sends `req` through the cluster's API server and hands back its answer as it streams;
/// the API server's own refusals become JSON saying what to do.
async fn forward_cluster(
    client: &kube::Client,
    url: &str,
    control_plane: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{}: the dashboard and the API only read (GET)",
                req.method()
            ),
        );
    }
    let (target, access, namespace) = match cluster_target(req.uri().path(), req.uri().query()) {
        Ok(t) => t,
        Err((status, why)) => return refusal(status, why),
    };
    let mut out = Request::builder().method(req.method()).uri(&target);
    for name in PASSED_HEADERS {
        if let Some(v) = req.headers().get(&name) {
            out = out.header(name, v);
        }
    }
    let out = match out.body(kube::client::Body::empty()) {
        Ok(r) => r,
        Err(e) => return refusal(StatusCode::BAD_REQUEST, format!("{target}: {e}")),
    };
    let rsp = match crate::api::cluster_send(client, url, out).await {
        Ok(rsp) => rsp,
        Err(e) => return refusal(StatusCode::BAD_GATEWAY, format!("{e:#}")),
    };
    let status = rsp.status();
    if crate::api::is_refusal(status) {
        let body = rsp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let why = crate::api::refusal_through_api_server(
            status,
            &body,
            access,
            namespace.as_deref(),
            control_plane,
        );
        return refusal(status, why);
    }
    let mut rsp = rsp.map(|b| b.map_err(BoxError::from).boxed_unsync());
    for name in HOP_HEADERS {
        rsp.headers_mut().remove(name);
    }
    rsp
}

pub fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let api = args.control_plane.api()?;
    if !args.address.is_loopback() {
        bail!(
            "--address {}: the dashboard listens only on loopback (127.0.0.1 or ::1), where it can tell which user connects; to reach it from another machine, forward the port there (ssh -L {port}:127.0.0.1:{port})",
            args.address,
            port = args.port
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let backend = match api {
            ApiAddr::Unix(path) => Backend::Socket(path),
            ApiAddr::Cluster { config, namespace } => Backend::Cluster {
                client: crate::api::cluster_client(&config)?,
                url: config.cluster_url.to_string(),
                control_plane: namespace,
            },
        };
        serve(args, backend).await
    })
}

async fn serve(args: DashboardArgs, backend: Backend) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((args.address, args.port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "port {} on {} is in use (another conduit dashboard?): choose another with --port",
                args.port,
                args.address
            ),
            _ => anyhow::Error::new(e)
                .context(format!("listening on {}:{}", args.address, args.port)),
        })?;
    let local = listener.local_addr()?;
    let url = format!("http://{local}");
    println!("Conduit dashboard available at {url}");
    if args.show == Show::Browser {
        open_browser(&url);
    }
    std::io::stdout().flush()?;
    let gate = Arc::new(Gate::new(local, effective_uid()?));
    let backend = Arc::new(backend);
    let serving = async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a dashboard connection");
                    continue;
                }
            };
            let refused = gate.refuse_connection(peer, local);
            let (gate, backend) = (gate.clone(), backend.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (gate, backend, refused) = (gate.clone(), backend.clone(), refused.clone());
                    async move {
                        let rsp = if let Some(why) = refused {
                            refusal(StatusCode::FORBIDDEN, why)
                        } else if let Some(why) = gate.refuse_request(&req) {
                            refusal(StatusCode::FORBIDDEN, why)
                        } else {
                            match &*backend {
                                Backend::Socket(socket) => forward(socket, req).await,
                                Backend::Cluster {
                                    client,
                                    url,
                                    control_plane,
                                } => forward_cluster(client, url, control_plane, req).await,
                            }
                        };
                        Ok::<_, std::convert::Infallible>(rsp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::select! {
        () = serving => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        () = terminated() => Ok(()),
    }
}

/// Resolves on SIGTERM.
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            term.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Opens `url` with the desktop's opener when there is a display; says so otherwise.
fn open_browser(url: &str) {
    let display =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opened = display
        && std::process::Command::new("xdg-open")
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .is_ok();
    if !opened {
        println!("(no browser to open here: open the URL in one)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_paths_are_the_aggregated_resources() {
        let target = |path: &str, query: Option<&str>| {
            let (t, access, ns) = cluster_target(path, query).unwrap();
            (t, access.resource, ns)
        };
        assert_eq!(
            target("/api/v1/stat", Some("resource=deploy&namespace=emojivoto&window=1m")),
            (
                "/apis/api.conduit.io/v1alpha1/namespaces/emojivoto/stats?resource=deploy&window=1m".into(),
                "stats",
                Some("emojivoto".into())
            )
        );
        assert_eq!(
            target("/api/v1/tap", Some("resource=deploy&name=web&namespace=emojivoto")).0,
            "/apis/api.conduit.io/v1alpha1/namespaces/emojivoto/taps?resource=deploy&name=web&watch=true"
        );
        assert_eq!(
            target("/assets/app.js", None),
            (
                "/apis/api.conduit.io/v1alpha1/dashboard/app.js".into(),
                "dashboard",
                None
            )
        );
        for page in [
            "/",
            "/namespaces/emojivoto/deployments/web",
            "/assets/",
            "/assets/a/b",
        ] {
            assert_eq!(
                target(page, Some("window=5m")).0,
                "/apis/api.conduit.io/v1alpha1/dashboard/index.html",
                "{page}"
            );
        }
        let (status, why) = cluster_target("/api/v1/secrets", None).unwrap_err();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(why.contains("no such path: /api/v1/secrets"), "{why}");
    }

    #[test]
    fn requests_must_name_the_dashboard() {
        let gate = Gate::new("127.0.0.1:50750".parse().unwrap(), 0);
        let with_host = |host: &str| {
            Request::get("/")
                .header(hyper::header::HOST, host)
                .body(())
                .unwrap()
        };
        for ok in ["127.0.0.1:50750", "localhost:50750", "LOCALHOST:50750"] {
            assert_eq!(gate.refuse_request(&with_host(ok)), None, "{ok}");
        }
        for refused in ["evil.example:50750", "127.0.0.1:8080", "localhost", ""] {
            let why = gate.refuse_request(&with_host(refused)).unwrap();
            assert!(why.contains("other web pages cannot read it"), "{why}");
        }
    }
}
