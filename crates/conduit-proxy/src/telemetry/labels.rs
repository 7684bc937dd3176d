//! What the `authority` label of the HTTP metrics may say. A request's authority is the
//! client's to choose (any text, up to the header limit), so the label takes it only when
//! the proxy can vouch for the name: the connection's own original destination address,
//! or a name its side knows ([`KnownAuthorities`]: outbound, a Service that discovery
//! resolved; inbound, one of the pod's own Services, from its policy). Anything else is
//! `unknown`. The label's values are then bounded by what the control plane knows, not by
//! what clients send.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// The label of an authority the proxy cannot vouch for.
pub const UNKNOWN: &str = "unknown";

/// The names one side of the proxy can vouch for.
pub trait KnownAuthorities: Send + Sync {
    /// Whether `authority` (as the client sent it) names something known, on a
    /// connection to `orig_dst`.
    fn knows(&self, authority: &str, orig_dst: SocketAddr) -> bool;
}

/// Knows no names (no control plane to ask).
pub struct NoNames;

impl KnownAuthorities for NoNames {
    fn knows(&self, _: &str, _: SocketAddr) -> bool {
        false
    }
}

/// Labels one connection's requests.
#[derive(Clone)]
pub struct AuthorityLabels {
    orig_dst: SocketAddr,
    /// For requests that name no authority (HTTP/1.0 without `Host`).
    fallback: Arc<str>,
    unknown: Arc<str>,
    known: Arc<dyn KnownAuthorities>,
}

impl AuthorityLabels {
    /// Labels for a connection to `orig_dst`, vouching for what `known` knows.
    pub fn new(orig_dst: SocketAddr, known: Arc<dyn KnownAuthorities>) -> AuthorityLabels {
        AuthorityLabels {
            orig_dst,
            fallback: orig_dst.to_string().into(),
            unknown: UNKNOWN.into(),
            known,
        }
    }

    /// The label of a request that names `authority` (or none).
    pub fn label(&self, authority: Option<&str>) -> Arc<str> {
        match authority {
            None => self.fallback.clone(),
            Some(a) if names_address(a, self.orig_dst) || self.known.knows(a, self.orig_dst) => {
                a.to_ascii_lowercase().into()
            }
            Some(_) => self.unknown.clone(),
        }
    }
}

/// Whether `authority` is `orig_dst`'s address itself (`ip`, `ip:port`, `[v6]`,
/// `[v6]:port`), with its port or none.
fn names_address(authority: &str, orig_dst: SocketAddr) -> bool {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return addr == orig_dst;
    }
    let host = authority
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(authority);
    host.parse::<IpAddr>().is_ok_and(|ip| ip == orig_dst.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Only(&'static str);

    impl KnownAuthorities for Only {
        fn knows(&self, authority: &str, _: SocketAddr) -> bool {
            authority.eq_ignore_ascii_case(self.0)
        }
    }

    #[test]
    fn only_known_names_and_the_destinations_own_address_become_labels() {
        let labels = AuthorityLabels::new(
            "198.18.0.4:8080".parse().unwrap(),
            Arc::new(Only("web-svc.emojivoto")),
        );
        let label = |a: Option<&str>| labels.label(a).to_string();
        assert_eq!(label(Some("Web-Svc.emojivoto")), "web-svc.emojivoto");
        assert_eq!(label(Some("198.18.0.4:8080")), "198.18.0.4:8080");
        assert_eq!(label(Some("198.18.0.4")), "198.18.0.4");
        assert_eq!(label(None), "198.18.0.4:8080");
        for other in [
            "evil-0001.example",
            "198.18.0.4:9999",
            "198.18.0.5:8080",
            "web-svc.emojivoto:81",
            &"x".repeat(60_000),
        ] {
            assert_eq!(label(Some(other)), UNKNOWN, "{other}");
        }
        let v6 = AuthorityLabels::new("[2001:2::4]:80".parse().unwrap(), Arc::new(NoNames));
        assert_eq!(&*v6.label(Some("[2001:2::4]:80")), "[2001:2::4]:80");
        assert_eq!(&*v6.label(Some("[2001:2::4]")), "[2001:2::4]");
        assert_eq!(&*v6.label(Some("[2001:2::5]")), UNKNOWN);
    }
}
