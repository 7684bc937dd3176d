//! The proxy's admin server (on [`crate::ports::PROXY_ADMIN`]), as its readers see it:
//! the paths the injector's probes, the controller's scraper and its identity query use,
//! and the JSON of `/identity`.

use serde::{Deserialize, Serialize};

/// Prometheus text: every metric of the proxy.
pub const METRICS_PATH: &str = "/metrics";
/// 200 once the proxy serves (and holds a certificate, when it has an identity).
pub const READY_PATH: &str = "/ready";
/// 200 while the proxy runs.
pub const LIVE_PATH: &str = "/live";
/// The proxy's identity and certificate, as [`ProxyIdentity`] JSON.
pub const IDENTITY_PATH: &str = "/identity";
/// `POST` from loopback: drain and stop.
pub const SHUTDOWN_PATH: &str = "/shutdown";

/// The Prometheus job that scrapes every proxy's [`METRICS_PATH`]: the controller's
/// PromQL selects it (`--prometheus-url`), and the scrape configurations that
/// `conduit install` and `conduit local up --prometheus` write name it.
pub const SCRAPE_JOB: &str = "conduit-proxies";

/// What a proxy says of its identity at `/identity`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyIdentity {
    /// The identity it proves, like `web.emojivoto.serviceaccount.identity.conduit.cluster.local`.
    pub identity: String,
    /// Whether it holds a certificate.
    pub certified: bool,
    /// When that certificate expires, in seconds since the Unix epoch.
    pub valid_until_unix: Option<u64>,
    /// Why its last request for a certificate failed, if it did.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_reads_what_the_proxy_writes() {
        // As the proxy's admin server writes it.
        let written = r#"{"identity":"web.emojivoto.serviceaccount.identity.conduit.cluster.local","certified":true,"valid_until_unix":1700000000,"last_error":null}"#;
        let read: ProxyIdentity = serde_json::from_str(written).unwrap();
        assert_eq!(
            read,
            ProxyIdentity {
                identity: "web.emojivoto.serviceaccount.identity.conduit.cluster.local".into(),
                certified: true,
                valid_until_unix: Some(1_700_000_000),
                last_error: None,
            }
        );
        assert_eq!(serde_json::to_string(&read).unwrap(), written);
    }
}
