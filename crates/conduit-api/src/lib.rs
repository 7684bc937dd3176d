//! What Conduit's parts agree on, in one place: the ports a meshed pod's proxy and the
//! controller listen on ([`ports`]), the proxy's UID ([`uid`]), the Kubernetes names of
//! injected pods ([`names`]), the control plane's names and addresses ([`control_plane`]),
//! the default inbound policies and probe paths ([`inbound`]), the controller's
//! command-line flags and the proxy's own ([`flags`]), the controller's HTTP JSON API
//! ([`http`], and its OpenAPI document, feature `openapi`: `openapi`) and who may call it on Kubernetes ([`public_api`]), where the web dashboard's files are ([`dashboard`]), the proxy's admin server ([`admin`]) and environment ([`proxy_env`]), a Prometheus' address ([`prometheus`]), the
//! local runtime's state file, which its supervisor writes and the controller's local
//! discovery reads ([`local_state`]), and (feature `grpc`, on by default) the gRPC
//! contracts between proxies and the control plane, generated from `proto/`: Destination
//! (endpoint discovery), Identity (certificates), InboundPolicy (who may connect) and Tap
//! (live request events). Behaviour belongs to the proxy, the controller, the injector
//! and the CLI; this crate only says what they share.

pub mod admin;
pub mod control_plane;
pub mod dashboard;
pub mod flags;
pub mod http;
pub mod inbound;
pub mod local_state;
pub mod names;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod ports;
pub mod profile;
pub mod prometheus;
pub mod proxy_env;
pub mod public_api;
pub mod uid;

/// Endpoint discovery: `conduit.destination.v1`.
#[cfg(feature = "grpc")]
pub mod destination {
    tonic::include_proto!("conduit.destination.v1");

    /// The keys of `EndpointSet.labels` and `Endpoint.labels`.
    pub mod label {
        /// The Service's or the pod's namespace.
        pub const NAMESPACE: &str = "namespace";
        /// The Service's name (an endpoint set's).
        pub const SERVICE: &str = "service";
        /// The Deployment behind an endpoint.
        pub const DEPLOYMENT: &str = "deployment";
        /// The pod behind an endpoint.
        pub const POD: &str = "pod";
    }
}

/// Workload certificates: `conduit.identity.v1`.
#[cfg(feature = "grpc")]
pub mod identity {
    tonic::include_proto!("conduit.identity.v1");
}

/// Who may connect to a pod: `conduit.policy.v1`.
#[cfg(feature = "grpc")]
pub mod policy {
    tonic::include_proto!("conduit.policy.v1");
}

/// Live request events: `conduit.tap.v1`.
#[cfg(feature = "grpc")]
pub mod tap {
    tonic::include_proto!("conduit.tap.v1");
}
