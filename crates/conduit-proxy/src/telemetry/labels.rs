//! What the metrics' labels may say of where traffic goes, so that their values come from
//! bounded sets: what the control plane knows, not what clients send.
//!
//! - `authority` (HTTP): a request's authority is the client's to choose (any text, up to
//!   the header limit), so the label takes it only when the proxy can vouch for the name:
//!   the connection's own original destination address, or a name its side knows
//!   ([`KnownAuthorities`]: outbound, a Service that discovery resolved; inbound, one of
//!   the pod's own Services, from its policy). Anything else is `unknown`.
//! - [`Target`] (HTTP and TCP): the port a connection was made to, and what the control
//!   plane calls its destination: inbound, the Server that governs the port
//!   (`srv_name`); outbound, the Service discovery says the original destination is
//!   (`dst_service`) and, upstream, the workload behind the endpoint (`dst_workload`).
//!   Never an address: the application (outbound) or a client (inbound) picks those.

use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// The label of an authority (or a destination) the proxy cannot vouch for.
pub const UNKNOWN: &str = "unknown";

/// The label value of series that did not fit their family.
pub const OVERFLOW: &str = "overflow";

/// The Server label of a port no Server selects.
pub const DEFAULT_SERVER: &str = "default";

/// Where a connection goes, as its series say: the port it was made to (`target_port`)
/// and what the control plane calls the destination.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Target {
    /// `None` only in overflow series.
    port: Option<u16>,
    name: TargetName,
}

/// What the control plane calls a connection's destination.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum TargetName {
    /// Inbound from a client: the Server that governs the port, or `default` (`srv_name`).
    Server(Arc<str>),
    /// Outbound from the application: the Service (`<name>.<namespace>`) discovery says
    /// the original destination is, or `unknown` (`dst_service`).
    Service(Arc<str>),
    /// Outbound, upstream: the workload (`<deployment>.<namespace>`) discovery says serves
    /// the endpoint, or `unknown` (`dst_workload`).
    Workload(Arc<str>),
    /// Inbound, to the application: the pod's own port says it all.
    App,
}

impl Target {
    /// A connection to `port` that `server` governs (`None`: no Server selects it).
    pub fn server(port: u16, server: Option<&str>) -> Target {
        let name = server.unwrap_or(DEFAULT_SERVER);
        Target::new(port, TargetName::Server(name.into()))
    }

    /// A connection to `port` of `service` (`None`: discovery names no Service).
    pub fn service(port: u16, service: Option<Arc<str>>) -> Target {
        Target::new(port, TargetName::Service(service.unwrap_or_else(unknown)))
    }

    /// A connection to `port` of an endpoint that `workload` serves (`None`: unknown).
    pub fn workload(port: u16, workload: Option<Arc<str>>) -> Target {
        Target::new(port, TargetName::Workload(workload.unwrap_or_else(unknown)))
    }

    /// A connection to the application's own `port`.
    pub fn app(port: u16) -> Target {
        Target::new(port, TargetName::App)
    }

    fn new(port: u16, name: TargetName) -> Target {
        Target {
            port: Some(port),
            name,
        }
    }

    /// Whether it is a Service that discovery did not name (when asked, or yet).
    pub fn is_unknown_service(&self) -> bool {
        matches!(&self.name, TargetName::Service(name) if &**name == UNKNOWN)
    }

    /// The same port of `service`.
    pub fn of_service(&self, service: Arc<str>) -> Target {
        Target {
            port: self.port,
            name: TargetName::Service(service),
        }
    }

    /// The same kind of target, its port and name replaced by `overflow`.
    pub fn overflow(&self) -> Target {
        let name = match &self.name {
            TargetName::Server(_) => TargetName::Server(OVERFLOW.into()),
            TargetName::Service(_) => TargetName::Service(OVERFLOW.into()),
            TargetName::Workload(_) => TargetName::Workload(OVERFLOW.into()),
            TargetName::App => TargetName::App,
        };
        Target { port: None, name }
    }
}

fn unknown() -> Arc<str> {
    UNKNOWN.into()
}

/// `target_port`: a number, or `overflow`.
struct Port(Option<u16>);

impl EncodeLabelValue for Port {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self.0 {
            Some(port) => write!(encoder, "{port}"),
            None => encoder.write_str(OVERFLOW),
        }
    }
}

impl EncodeLabelSet for Target {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabel::encode(&("target_port", Port(self.port)), encoder.encode_label())?;
        let (key, name) = match &self.name {
            TargetName::Server(name) => ("srv_name", name),
            TargetName::Service(name) => ("dst_service", name),
            TargetName::Workload(name) => ("dst_workload", name),
            TargetName::App => return Ok(()),
        };
        EncodeLabel::encode(&(key, &**name), encoder.encode_label())
    }
}

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
