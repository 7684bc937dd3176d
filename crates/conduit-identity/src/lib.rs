//! Workload identity, shared by the controller (which issues), the proxy (which asks) and
//! the local runtime (which vouches for its pods). Identities are DNS-like names,
//! `<serviceaccount>.<namespace>.serviceaccount.identity.conduit.cluster.local`, carried
//! as the only SAN of short-lived ECDSA P-256 certificates signed by an issuer that a
//! trust anchor signed. Knows nothing about the network.

pub mod ca;
pub mod request;
pub mod token;

/// The suffix every identity name ends with.
pub const IDENTITY_SUFFIX: &str = "serviceaccount.identity.conduit.cluster.local";

/// The identity of ServiceAccount `sa` in `namespace`.
pub fn identity_name(sa: &str, namespace: &str) -> String {
    format!("{sa}.{namespace}.{IDENTITY_SUFFIX}")
}

/// The ServiceAccount and namespace an identity name stands for.
pub fn parse_identity(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_suffix(IDENTITY_SUFFIX)?.strip_suffix('.')?;
    let (sa, ns) = rest.split_once('.')?;
    (!sa.is_empty() && !ns.is_empty() && !ns.contains('.')).then_some((sa, ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = identity_name("web", "emojivoto");
        assert_eq!(
            n,
            "web.emojivoto.serviceaccount.identity.conduit.cluster.local"
        );
        assert_eq!(parse_identity(&n), Some(("web", "emojivoto")));
        assert_eq!(
            parse_identity("web.serviceaccount.identity.conduit.cluster.local"),
            None
        );
        assert_eq!(
            parse_identity("a.b.c.serviceaccount.identity.conduit.cluster.local"),
            None
        );
        assert_eq!(parse_identity("web.emojivoto.example.com"), None);
    }
}
