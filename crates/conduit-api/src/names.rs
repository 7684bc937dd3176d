//! The Kubernetes names of the mesh on a workload: the containers `conduit inject` adds,
//! the annotations and labels it reads and writes, and the identity material injected
//! proxies mount. The injector writes them; the controller's discovery, the webhook,
//! `conduit check`, `conduit install` and the local runtime read them back. Also the
//! rules Kubernetes names follow, which the local runtime and the proxy check.

/// Whether `s` is a DNS-1123 label, as Kubernetes requires of namespace, Service and
/// container names: at most 63 lowercase letters, digits and `-`, starting and ending
/// with a letter or digit. (So never `..`, `/` or anything else a path could be made of.)
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a DNS-1123 subdomain, as Kubernetes requires of most object names:
/// at most 253 characters of dot-separated DNS-1123 labels.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The proxy container's name; a pod that has it is meshed.
pub const PROXY_CONTAINER: &str = "conduit-proxy";
/// The name of the proxy container's admin port ([`crate::ports::PROXY_ADMIN`]), which
/// Prometheus' pod discovery keeps.
pub const PROXY_ADMIN_PORT_NAME: &str = "conduit-admin";
/// The init container's name; it writes the pod's iptables redirect.
pub const INIT_CONTAINER: &str = "conduit-init";

/// Annotation: whether to mesh a workload, its pods, or a namespace's new pods.
pub const INJECT_ANNOTATION: &str = "conduit.io/inject";
/// The value of [`INJECT_ANNOTATION`] that asks the injector webhook to mesh.
pub const INJECT_ENABLED: &str = "enabled";
/// The value of [`INJECT_ANNOTATION`] that opts out of injection.
pub const INJECT_DISABLED: &str = "disabled";
/// Annotation: the proxy version a pod was injected with.
pub const VERSION_ANNOTATION: &str = "conduit.io/proxy-version";
/// The prefix of the annotations that change one workload's proxy.
pub const CONFIG_PREFIX: &str = "config.conduit.io/";
/// Annotation (pod or namespace): the default inbound policy of its pods' ports.
pub const DEFAULT_POLICY_ANNOTATION: &str = "config.conduit.io/default-inbound-policy";

/// Label: the namespace of the control plane that the pod's proxy reports to.
pub const CONTROL_PLANE_NS_LABEL: &str = "conduit.io/control-plane-ns";
/// Label: the Deployment a pod belongs to.
pub const DEPLOYMENT_LABEL: &str = "conduit.io/proxy-deployment";
/// Label: on the control plane's namespace, whose pods the injector webhook never sees.
pub const IS_CONTROL_PLANE_LABEL: &str = "conduit.io/is-control-plane";

/// The audience of the ServiceAccount tokens proxies prove their identity with; only the
/// controller's Identity API accepts them.
pub const IDENTITY_AUDIENCE: &str = "identity.conduit.io";
/// The TokenReview's `user.extra` key naming the pod a bound ServiceAccount token was
/// issued for (kube-apiserver sets it for projected tokens).
pub const TOKEN_POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The TokenReview's `user.extra` key with that pod's UID.
pub const TOKEN_POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";
/// The ConfigMap (in every meshed namespace) that holds the mesh's trust anchors.
pub const TRUST_ROOTS_CONFIGMAP: &str = "conduit-identity-trust-roots";
/// Its key: the anchors as PEM.
pub const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_annotation_is_a_config_annotation() {
        assert_eq!(
            DEFAULT_POLICY_ANNOTATION.strip_prefix(CONFIG_PREFIX),
            Some("default-inbound-policy")
        );
    }
}
