//! The control plane's names and addresses: its default namespace, the controller's name
//! (binary, ServiceAccount, Deployment), the Services `conduit install` puts in front of
//! it and the names proxies, the CLI and the API server reach it by, the Secrets it
//! mounts and its injector's webhook. `conduit install` writes them; the injector,
//! `conduit check`, the CLI and the local runtime use them.

use crate::ports;

/// The control plane's namespace unless one is given.
pub const NAMESPACE: &str = "conduit";
/// The controller's name: its binary, ServiceAccount (hence its identity), Deployment and
/// RBAC objects.
pub const CONTROLLER: &str = "conduit-controller";

/// The ClusterRoleBinding of the controller to `system:auth-delegator` (it reviews its
/// API's callers' tokens and access).
pub const AUTH_DELEGATOR_BINDING: &str = "conduit-controller:auth-delegator";
/// The RoleBinding (in `kube-system`) that lets the controller read the front proxy's CA.
pub const AUTHENTICATION_READER_BINDING: &str = "conduit-controller:authentication-reader";

/// The Service in front of the Destination and InboundPolicy APIs.
pub const DESTINATION_SERVICE: &str = "conduit-destination";
/// The Service in front of the Identity API.
pub const IDENTITY_SERVICE: &str = "conduit-identity";
/// The Service in front of the HTTP JSON API, which the API server's aggregator calls
/// (see `public_api`).
pub const API_SERVICE: &str = "conduit-api";
/// The Service in front of the proxy injector.
pub const WEBHOOK_SERVICE: &str = "conduit-webhook";

/// The Secret with the issuer's certificate and key, which sign proxies' certificates.
pub const ISSUER_SECRET: &str = "conduit-identity-issuer";
/// The Secret with the injector's serving certificate.
pub const WEBHOOK_TLS_SECRET: &str = "conduit-webhook-tls";
/// The Secret with the API's serving certificate, which the aggregator checks.
pub const API_TLS_SECRET: &str = "conduit-api-tls";
/// The MutatingWebhookConfiguration that sends new pods to the injector.
pub const INJECTOR_WEBHOOK: &str = "conduit-proxy-injector";
/// The injector's path: AdmissionReviews are POSTed here.
pub const INJECTOR_PATH: &str = "/inject";

/// The cluster DNS name of `service` in `namespace`.
pub fn service_fqdn(service: &str, namespace: &str) -> String {
    format!("{service}.{namespace}.svc.cluster.local")
}

/// Where proxies reach the Destination and InboundPolicy APIs of the control plane in
/// `namespace`, `host:port`.
pub fn destination_addr(namespace: &str) -> String {
    grpc_addr(DESTINATION_SERVICE, namespace)
}

/// Where proxies reach the Identity API of the control plane in `namespace`, `host:port`.
pub fn identity_addr(namespace: &str) -> String {
    grpc_addr(IDENTITY_SERVICE, namespace)
}

fn grpc_addr(service: &str, namespace: &str) -> String {
    format!(
        "{}:{}",
        service_fqdn(service, namespace),
        ports::CONTROLLER_GRPC
    )
}

/// The injector Service's DNS name in `namespace`: what its certificate must name.
pub fn webhook_dns_name(namespace: &str) -> String {
    format!("{WEBHOOK_SERVICE}.{namespace}.svc")
}

/// The API Service's DNS name in `namespace`: what its certificate must name, and what
/// the aggregator checks it for.
pub fn api_dns_name(namespace: &str) -> String {
    format!("{API_SERVICE}.{namespace}.svc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_reach_the_grpc_services_by_their_cluster_names() {
        assert_eq!(
            destination_addr("conduit"),
            "conduit-destination.conduit.svc.cluster.local:8086"
        );
        assert_eq!(
            identity_addr("mesh"),
            "conduit-identity.mesh.svc.cluster.local:8086"
        );
        assert_eq!(webhook_dns_name("conduit"), "conduit-webhook.conduit.svc");
    }
}
