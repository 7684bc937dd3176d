//! The controller binary: discovery from the local runtime or the Kubernetes API,
//! scraping, the API on a unix socket (for the CLI on this host) and/or TCP, the gRPC
//! APIs proxies use, and the proxy injector. Its flags are named by `conduit_api::flags`,
//! which every launcher renders its arguments from.

use anyhow::Context as _;
use clap::{ArgGroup, Parser};
use conduit_api::{control_plane, flags, names, prometheus::PrometheusUrl};
use conduit_controller::{
    api::{self, ApiState},
    api_auth,
    discovery::{Discovery, LocalRegistry},
    grpc::{self, Access, Limits},
    identity::{Authenticator, LocalTokens, TokenReviews},
    kubernetes::KubernetesDiscovery,
    metrics::MetricsSource,
    prometheus::Prometheus,
    scrape,
    store::Store,
    tls::ControllerTls,
};
use parking_lot::Mutex;
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

#[derive(Parser)]
#[command(
    name = control_plane::CONTROLLER,
    version,
    about = "Conduit's control plane"
)]
#[command(group(ArgGroup::new("source").required(true).args(["local_state", "kubernetes"])))]
struct Args {
    /// Discover workloads from the local runtime's state file.
    #[arg(long = flags::LOCAL_STATE.name())]
    local_state: Option<PathBuf>,
    /// Discover workloads from the Kubernetes API: in a pod, its ServiceAccount; elsewhere
    /// the kubeconfig ($KUBECONFIG or ~/.kube/config).
    #[arg(long = flags::KUBERNETES.name())]
    kubernetes: bool,
    /// Kubernetes: publish the trust anchors into every namespace, as the ConfigMap
    /// injected proxies read.
    #[arg(long = flags::PUBLISH_TRUST_ANCHORS.name(), requires_all = ["kubernetes", "identity_trust_anchors"])]
    publish_trust_anchors: bool,
    /// Kubernetes: the control plane's namespace.
    #[arg(long = flags::CONTROL_PLANE_NAMESPACE.name(), default_value = control_plane::NAMESPACE, env = flags::CONTROL_PLANE_NAMESPACE_ENV)]
    control_plane_namespace: String,
    /// Kubernetes: the audience of the ServiceAccount tokens proxies prove themselves with.
    #[arg(long = flags::TOKEN_AUDIENCE.name(), default_value = names::IDENTITY_AUDIENCE)]
    token_audience: String,
    /// Serve the API on this unix socket: only its owner may connect (mode 0600, in a
    /// directory only its owner may write).
    #[arg(long = flags::API_SOCKET.name())]
    api_socket: Option<PathBuf>,
    /// Kubernetes: serve the API on this TCP address, over TLS, every request
    /// authenticated and authorized through the Kubernetes API (an aggregated API).
    #[arg(long = flags::API_ADDR.name())]
    api_addr: Option<SocketAddr>,
    /// The API's serving certificate on TCP: a directory with tls.crt and tls.key.
    #[arg(long = flags::API_TLS_DIR.name())]
    api_tls_dir: Option<PathBuf>,
    /// Serve the Destination and InboundPolicy APIs (gRPC) to proxies on this address.
    #[arg(long = flags::DESTINATION_ADDR.name())]
    destination_addr: Option<SocketAddr>,
    /// How often every proxy's metrics are scraped (by the controller, or by the
    /// Prometheus of --prometheus-url): a series' points cover at least two scrapes.
    #[arg(long = flags::SCRAPE_INTERVAL.name(), default_value = flags::DEFAULT_SCRAPE_INTERVAL, value_parser = humantime::parse_duration)]
    scrape_interval: Duration,
    /// How much history to keep in memory [default: 15m]; with --prometheus-url, the
    /// longest window a query may ask for [default: 6h].
    #[arg(long = flags::RETENTION.name(), value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// A Prometheus that scrapes every proxy (job conduit-proxies), like
    /// http://prometheus.monitoring:9090: stat, series, edges and routes query it, and the
    /// controller scrapes nothing itself.
    #[arg(long = flags::PROMETHEUS_URL.name())]
    prometheus_url: Option<PrometheusUrl>,
    /// How long a query to that Prometheus may take before the API answers 503.
    #[arg(long = flags::PROMETHEUS_TIMEOUT.name(), default_value = "5s", value_parser = humantime::parse_duration)]
    prometheus_timeout: Duration,
    /// The issuer certificate (PEM) that signs proxies' certificates; with its key, this
    /// turns the Identity API on (served with Destination).
    #[arg(long = flags::IDENTITY_ISSUER_CERT.name(), requires = "identity_issuer_key")]
    identity_issuer_cert: Option<PathBuf>,
    /// The issuer's private key (PEM).
    #[arg(long = flags::IDENTITY_ISSUER_KEY.name(), requires = "identity_issuer_cert")]
    identity_issuer_key: Option<PathBuf>,
    /// The mesh's trust anchors (PEM), which the issuer chains to: proxies' tap servers
    /// are reached over mesh TLS, as the controller's identity, and must chain to them.
    #[arg(long = flags::IDENTITY_TRUST_ANCHORS.name())]
    identity_trust_anchors: Option<PathBuf>,
    /// The local runtime's token secret, which proves pods' identities.
    #[arg(long = flags::LOCAL_TOKEN_SECRET.name())]
    local_token_secret: Option<PathBuf>,
    /// The gRPC port: calls in flight on one connection; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long = flags::GRPC_MAX_STREAMS_PER_CONNECTION.name(), default_value_t = 1000)]
    grpc_max_streams_per_connection: usize,
    /// The gRPC port: Destination and InboundPolicy watches one client (its identity, else
    /// its address) may hold open; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long = flags::GRPC_MAX_WATCHES_PER_CLIENT.name(), default_value_t = 2000)]
    grpc_max_watches_per_client: usize,
    /// How long a proxy's certificate is valid.
    #[arg(long = flags::IDENTITY_LIFETIME.name(), default_value = "24h", value_parser = humantime::parse_duration)]
    identity_lifetime: Duration,
    /// Who may connect to ports of pods and namespaces that set no default:
    /// all-unauthenticated, all-authenticated, cluster-authenticated or deny.
    #[arg(long = flags::DEFAULT_INBOUND_POLICY.name(), default_value_t = conduit_policy::DefaultPolicy::default())]
    default_inbound_policy: conduit_policy::DefaultPolicy,
    /// The cluster's networks (comma-separated CIDRs), trusted by cluster-authenticated.
    #[arg(
        long = flags::CLUSTER_NETWORKS.name(),
        value_delimiter = ',',
        default_value = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"
    )]
    cluster_networks: Vec<ipnet::IpNet>,
    /// The injector: the proxy's image (default: this version's).
    #[arg(long = flags::PROXY_IMAGE.name())]
    proxy_image: Option<String>,
    /// The injector: the proxy as a native sidecar (Kubernetes 1.29+), or (false) as the
    /// first container, holding the others until it is ready.
    #[arg(long = flags::PROXY_NATIVE_SIDECAR.name(), default_value_t = true, action = clap::ArgAction::Set)]
    proxy_native_sidecar: bool,
    /// The injector: the proxy's log filter.
    #[arg(long = flags::PROXY_LOG_LEVEL.name(), default_value = "info")]
    proxy_log_level: String,
    /// Serve the proxy injector (HTTPS, POST /inject) on this address.
    #[arg(long = flags::WEBHOOK_ADDR.name(), requires = "webhook_tls_dir")]
    webhook_addr: Option<SocketAddr>,
    /// The injector's certificate: a directory with tls.crt and tls.key.
    #[arg(long = flags::WEBHOOK_TLS_DIR.name(), requires = "webhook_addr")]
    webhook_tls_dir: Option<PathBuf>,
}

/// The Identity API, when its issuer and a way to authenticate proxies are configured:
/// TokenReviews with `kubernetes`, the local runtime's tokens otherwise.
fn identity_service(
    args: &Args,
    kubernetes: Option<&kube::Client>,
    workloads: &tokio::sync::watch::Receiver<Arc<conduit_controller::discovery::Workloads>>,
    counts: Arc<conduit_controller::identity::Counts>,
    access: Access,
) -> anyhow::Result<
    Option<
        conduit_api::identity::identity_server::IdentityServer<
            conduit_controller::identity::IdentityService,
        >,
    >,
> {
    use conduit_controller::identity::IdentityService;
    let Some(issuer) = issuer(args)? else {
        return Ok(None);
    };
    let auth: Box<dyn Authenticator> = match kubernetes {
        Some(client) => Box::new(TokenReviews {
            client: client.clone(),
            audience: args.token_audience.clone(),
            workloads: workloads.clone(),
        }),
        None => {
            let secret_file = args.local_token_secret.as_ref().with_context(|| {
                format!(
                    "the Identity API needs a way to check proxies' tokens: give {} FILE",
                    flags::LOCAL_TOKEN_SECRET
                )
            })?;
            let secret = std::fs::read(secret_file)
                .with_context(|| format!("reading {}", secret_file.display()))?;
            Box::new(LocalTokens(conduit_identity::token::Tokens::new(&secret)))
        }
    };
    Ok(Some(IdentityService::server(
        issuer,
        auth,
        args.identity_lifetime,
        counts,
        access,
    )))
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The issuer of `--identity-issuer-cert` and `--identity-issuer-key`, when given.
fn issuer(args: &Args) -> anyhow::Result<Option<conduit_identity::ca::Issuer>> {
    let (Some(cert), Some(key)) = (&args.identity_issuer_cert, &args.identity_issuer_key) else {
        return Ok(None);
    };
    Ok(Some(conduit_identity::ca::Issuer::from_pem(
        &read(cert)?,
        &read(key)?,
    )?))
}

/// The controller's own identity, presented on the gRPC port and to proxies' tap
/// servers: needed whenever proxies have identities, which is when the issuer is
/// configured.
fn controller_tls(args: &Args) -> anyhow::Result<Option<Arc<ControllerTls>>> {
    let Some(issuer) = issuer(args)? else {
        return Ok(None);
    };
    let anchors = args.identity_trust_anchors.as_ref().with_context(|| {
        format!(
            "with identities the controller serves proxies over TLS and taps them over mesh TLS, as its own identity: give {} FILE (the anchors the issuer chains to)",
            flags::IDENTITY_TRUST_ANCHORS
        )
    })?;
    let name = conduit_identity::controller_identity(&args.control_plane_namespace);
    let tls = ControllerTls::new(issuer, name, &read(anchors)?)
        .with_context(|| format!("{} {}", flags::IDENTITY_TRUST_ANCHORS, anchors.display()))?;
    Ok(Some(Arc::new(tls)))
}

/// What the injector gives pods: this control plane's addresses and the proxy flags.
fn inject_options(args: &Args) -> conduit_k8s::inject::InjectOptions {
    let defaults =
        conduit_k8s::inject::InjectOptions::for_control_plane(&args.control_plane_namespace);
    conduit_k8s::inject::InjectOptions {
        proxy_image: args.proxy_image.clone().unwrap_or(defaults.proxy_image),
        native_sidecar: args.proxy_native_sidecar,
        log: args.proxy_log_level.clone(),
        ..defaults
    }
}

// Many threads: one slow task (a TokenReview, a big snapshot) must not stall identity,
// discovery and the injector behind it.
#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.api_socket.is_none() && args.api_addr.is_none() {
        anyhow::bail!(
            "nowhere to serve the API: give {} PATH and/or {} HOST:PORT",
            flags::API_SOCKET,
            flags::API_ADDR
        );
    }
    // The API on TCP is for callers the Kubernetes API authenticates and authorizes.
    let tcp_api = match (args.api_addr, &args.api_tls_dir, args.kubernetes) {
        (None, _, _) => None,
        (Some(addr), Some(dir), true) => Some((addr, dir.clone())),
        (Some(_), _, _) => anyhow::bail!(
            "{} serves the API on TCP, which needs TLS and Kubernetes authentication: give {} DIR (tls.crt, tls.key) and {}, or serve it on {} PATH",
            flags::API_ADDR,
            flags::API_TLS_DIR,
            flags::KUBERNETES,
            flags::API_SOCKET
        ),
    };
    let kubernetes = if args.kubernetes {
        let mut config = kube::Config::infer().await.context(
            "no Kubernetes API to talk to: run in a pod with a ServiceAccount, or set KUBECONFIG",
        )?;
        // Watches back off on their own and TokenReviews fail fast (the proxy retries):
        // the client's retries of 503s would hide an API server that is down for minutes.
        config.default_retry = false;
        Some(kube::Client::try_from(config).context("a client for the Kubernetes API")?)
    } else {
        None
    };
    let discovery: Box<dyn Discovery> = match (&kubernetes, &args.local_state) {
        (Some(client), _) => Box::new(KubernetesDiscovery::spawn(client.clone())),
        (None, Some(state)) => Box::new(LocalRegistry::spawn(
            state.clone(),
            Duration::from_millis(100),
        )),
        (None, None) => anyhow::bail!(
            "nowhere to discover workloads from: give {} or {} FILE",
            flags::KUBERNETES,
            flags::LOCAL_STATE
        ),
    };
    if let (Some(client), Some(file), true) = (
        &kubernetes,
        &args.identity_trust_anchors,
        args.publish_trust_anchors,
    ) {
        let anchors = read(file)?;
        tokio::spawn(conduit_controller::trust_roots::publish(
            client.clone(),
            discovery.watch(),
            anchors,
            args.control_plane_namespace.clone(),
        ));
    }
    let identity_counts = Arc::new(conduit_controller::identity::Counts::default());
    let own_tls = controller_tls(&args)?;
    let grpc_limits = Limits::new(
        args.grpc_max_streams_per_connection,
        args.grpc_max_watches_per_client,
    );
    let (metrics, max_window) = match &args.prometheus_url {
        None => {
            let retention = args.retention.unwrap_or(Duration::from_secs(15 * 60));
            let store = Arc::new(Mutex::new(Store::new(retention)));
            scrape::spawn(discovery.watch(), store.clone(), args.scrape_interval);
            (MetricsSource::Embedded(store), retention)
        }
        Some(url) => {
            tracing::info!(%url, "metrics from Prometheus");
            let prometheus = Prometheus::new(url.clone(), args.prometheus_timeout);
            let longest = args.retention.unwrap_or(Duration::from_secs(6 * 3600));
            (MetricsSource::Prometheus(Arc::new(prometheus)), longest)
        }
    };
    let router = api::router(ApiState {
        metrics,
        workloads: discovery.watch(),
        health: discovery.health(),
        max_window,
        scrape_interval: args.scrape_interval,
        identity_counts: identity_counts.clone(),
        tap_tls: own_tls.clone(),
        grpc_limits: grpc_limits.clone(),
    });
    let mut servers = tokio::task::JoinSet::new();
    if let Some(path) = &args.api_socket {
        let listener = api_auth::bind_private_socket(path)?;
        tracing::info!(socket = %path.display(), "API listening");
        let router = router.clone();
        servers.spawn(async move { axum::serve(listener, router).await });
    }
    if let (Some((addr, dir)), Some(client)) = (&tcp_api, &kubernetes) {
        let addr = *addr;
        let requestheader = api_auth::RequestHeader::load(client).await?;
        let tls = api_auth::tls_config(dir, requestheader.as_ref())
            .with_context(|| format!("{} {}", flags::API_TLS_DIR, dir.display()))?;
        let gate = Arc::new(api_auth::Gate::new(client.clone(), requestheader));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        tracing::info!(%addr, "API listening (TLS, Kubernetes authentication and RBAC)");
        servers.spawn(async move {
            api_auth::serve(listener, tls, gate, router).await;
            Ok(())
        });
    }
    if let Some(addr) = args.destination_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for the Destination API"))?;
        let access = Access {
            limits: grpc_limits,
            identities: own_tls.is_some(),
        };
        let service = conduit_controller::destination::DestinationService::server(
            discovery.watch(),
            access.clone(),
        );
        let identity = identity_service(
            &args,
            kubernetes.as_ref(),
            &discovery.watch(),
            identity_counts.clone(),
            access.clone(),
        )?;
        let policy = conduit_controller::policy::PolicyService::server(
            discovery.watch(),
            conduit_controller::policy::ClusterPolicy {
                default: args.default_inbound_policy,
                networks: args.cluster_networks.clone(),
            },
            access.clone(),
        );
        let tls = if own_tls.is_some() {
            "TLS"
        } else {
            "plaintext"
        };
        tracing::info!(%addr, tls, identity = identity.is_some(), "gRPC APIs (Destination, InboundPolicy, Identity) listening");
        let incoming = grpc::incoming(listener, own_tls.clone())?;
        // HTTP/2's own bound sits above the per-connection limit, so that a proxy hears
        // RESOURCE_EXHAUSTED (and the refusal is counted) rather than a refused stream.
        let max_streams = u32::try_from(args.grpc_max_streams_per_connection.saturating_add(16))
            .unwrap_or(u32::MAX);
        servers.spawn(async move {
            tonic::transport::Server::builder()
                .max_concurrent_streams(max_streams)
                .add_service(service)
                .add_service(policy)
                .add_optional_service(identity)
                .serve_with_incoming(incoming)
                .await
                .map_err(std::io::Error::other)
        });
    }
    if let (Some(addr), Some(dir)) = (args.webhook_addr, &args.webhook_tls_dir) {
        let tls = conduit_controller::webhook::tls_config(dir)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for the proxy injector"))?;
        tracing::info!(%addr, "proxy injector listening");
        let (workloads, health) = (discovery.watch(), discovery.health());
        let inject = inject_options(&args);
        servers.spawn(async move {
            conduit_controller::webhook::serve(listener, tls, inject, workloads, health).await;
            Ok(())
        });
    }
    // The kubelet stops a pod with SIGTERM; a terminal with SIGINT.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        Some(result) = servers.join_next() => result?.context("serving the API")?,
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::collections::BTreeSet;

    /// The parser declares exactly the contract's flags, each as the contract says (a
    /// switch takes no value, a flag does): a launcher that renders its arguments from
    /// `conduit_api::flags` gives the controller nothing it does not know.
    #[test]
    fn the_parser_declares_exactly_the_contracts_flags() {
        let command = Args::command();
        let declared: BTreeSet<&str> = command
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|long| !matches!(*long, "help" | "version"))
            .collect();
        let contract: BTreeSet<&str> = flags::all().collect();
        assert_eq!(declared, contract);
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let is_switch = flags::SWITCHES.iter().any(|s| s.name() == long);
            let is_flag = flags::FLAGS.iter().any(|f| f.name() == long);
            if is_switch {
                assert!(!arg.get_action().takes_values(), "--{long} is a switch");
            }
            if is_flag {
                assert!(arg.get_action().takes_values(), "--{long} takes a value");
            }
        }
    }

    #[test]
    fn rendered_arguments_parse() {
        let args = Args::try_parse_from([
            control_plane::CONTROLLER.to_string(),
            flags::KUBERNETES.arg(),
            flags::API_ADDR.arg("127.0.0.1:8085"),
            flags::PROXY_NATIVE_SIDECAR.arg(false),
            flags::CLUSTER_NETWORKS.arg("10.0.0.0/8,fd00::/8"),
            flags::SCRAPE_INTERVAL.arg("5s"),
        ])
        .expect("the rendered arguments parse");
        assert!(args.kubernetes);
        assert_eq!(
            args.api_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 8085)))
        );
        assert!(!args.proxy_native_sidecar);
        assert_eq!(args.cluster_networks.len(), 2);
        assert_eq!(args.scrape_interval, Duration::from_secs(5));
    }

    #[test]
    fn the_installed_deployments_arguments_parse() {
        use conduit_k8s::install::{self, IdentityMaterial, ServingTls, Values};
        let pem = || "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".to_string();
        let docs = install::render(
            &Values::default(),
            &IdentityMaterial {
                anchors_pem: pem(),
                issuer_cert_pem: pem(),
                issuer_key_pem: pem(),
            },
            &ServingTls {
                ca_pem: pem(),
                cert_pem: pem(),
                key_pem: pem(),
            },
            &ServingTls {
                ca_pem: pem(),
                cert_pem: pem(),
                key_pem: pem(),
            },
        );
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let argv = container["command"]
            .as_array()
            .into_iter()
            .chain(container["args"].as_array())
            .flatten()
            .map(|a| a.as_str().expect("arguments are strings").to_string());
        let args = Args::try_parse_from(argv).expect("the Deployment's arguments parse");
        assert!(args.kubernetes && args.publish_trust_anchors);
        assert_eq!(args.control_plane_namespace, control_plane::NAMESPACE);
        assert_eq!(args.token_audience, names::IDENTITY_AUDIENCE);
        assert!(args.api_addr.is_some() && args.api_tls_dir.is_some());
    }
}
