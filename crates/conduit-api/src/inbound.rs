//! The words of inbound policy the mesh's parts share: the default policies, whose names
//! are the values of the default-policy annotation, of the controller's
//! `--default-inbound-policy`, of the proxy's `CONDUIT_PROXY_DEFAULT_INBOUND_POLICY` and
//! of `conduit install`'s `policy.defaultInbound`; and the probe paths a pod's policy
//! always allows. How a policy is evaluated is `conduit-policy`'s.

use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};

/// What happens on ports no Server selects.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Anyone may connect, with or without mesh TLS.
    #[default]
    AllUnauthenticated,
    /// Only clients with a mesh identity (over mutual TLS).
    AllAuthenticated,
    /// Clients with a mesh identity, and anyone from the cluster's networks.
    ClusterAuthenticated,
    /// Nobody (but probes).
    Deny,
}

impl DefaultPolicy {
    /// Every policy's name, for messages.
    pub const NAMES: &'static str =
        "all-unauthenticated, all-authenticated, cluster-authenticated or deny";

    /// The name, as in annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
        }
    }

    /// What a connection let in by this default is authorized by: `default:<name>`.
    pub fn authz_name(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "default:all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "default:all-authenticated",
            DefaultPolicy::ClusterAuthenticated => "default:cluster-authenticated",
            DefaultPolicy::Deny => "default:deny",
        }
    }
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A default policy name that is not one.
#[derive(Debug, thiserror::Error)]
#[error("unknown default inbound policy {0:?}: expected {names}", names = DefaultPolicy::NAMES)]
pub struct UnknownPolicy(pub String);

impl FromStr for DefaultPolicy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, UnknownPolicy> {
        Ok(match s.trim() {
            "all-unauthenticated" => DefaultPolicy::AllUnauthenticated,
            "all-authenticated" => DefaultPolicy::AllAuthenticated,
            "cluster-authenticated" => DefaultPolicy::ClusterAuthenticated,
            "deny" => DefaultPolicy::Deny,
            other => return Err(UnknownPolicy(other.to_string())),
        })
    }
}

/// An HTTP path a prober GETs on a port: always allowed, so that policy never makes a pod
/// unready.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The port the prober connects to.
    pub port: u16,
    /// The path it GETs.
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_parse_and_say_what_is_expected() {
        for p in [
            DefaultPolicy::AllUnauthenticated,
            DefaultPolicy::AllAuthenticated,
            DefaultPolicy::ClusterAuthenticated,
            DefaultPolicy::Deny,
        ] {
            assert_eq!(p.as_str().parse::<DefaultPolicy>().unwrap(), p);
            assert_eq!(p.authz_name(), format!("default:{p}"));
        }
        let err = "allow-all".parse::<DefaultPolicy>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown default inbound policy \"allow-all\": expected all-unauthenticated, all-authenticated, cluster-authenticated or deny"
        );
    }
}
