//! Where a Prometheus is, as `--prometheus-url` (the controller's, `conduit local up`'s and
//! `conduit install --set prometheusUrl=`) spells it: `http://HOST[:PORT][/PREFIX]`. Read
//! here once so that every launcher refuses a bad one before anything starts, with the
//! words the controller would use.

/// A Prometheus' address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusUrl {
    /// A name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// A path prefix (a Prometheus behind `--web.route-prefix`), without a trailing `/`.
    pub prefix: String,
}

impl PrometheusUrl {
    /// `host:port`, as a `Host` header says it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for PrometheusUrl {
    type Err = String;

    fn from_str(raw: &str) -> Result<PrometheusUrl, String> {
        let expected = "expected http://HOST:PORT, like http://prometheus.monitoring:9090";
        let rest = match raw.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "{raw:?}: the scheme is {scheme}; only http:// is accepted (a Prometheus in the cluster's network, or a proxy in front of it)"
                ))
            }
            None => return Err(format!("{raw:?}: {expected}")),
        };
        if rest.contains(['?', '#', '@']) {
            return Err(format!(
                "{raw:?}: a query, fragment or user has no place in Prometheus' address; {expected}"
            ));
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("{raw:?}: an IPv6 address without its closing ]"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("{raw:?} names no host; {expected}"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{raw:?}: {p:?} is not a port (1-65535)"))?,
        };
        Ok(PrometheusUrl {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }
}

impl std::fmt::Display for PrometheusUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_with_their_port_and_prefix() {
        let url: PrometheusUrl = "http://prometheus.monitoring:9090/prom/".parse().unwrap();
        assert_eq!(
            url,
            PrometheusUrl {
                host: "prometheus.monitoring".into(),
                port: 9090,
                prefix: "/prom".into()
            }
        );
        assert_eq!(url.to_string(), "http://prometheus.monitoring:9090/prom");
        let v6: PrometheusUrl = "http://[fd00::1]".parse().unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::1", 80));
        assert_eq!(v6.authority(), "[fd00::1]:80");
    }

    #[test]
    fn bad_addresses_say_what_is_expected() {
        for (raw, says) in [
            ("https://p:9090", "only http://"),
            ("p:9090", "expected http://HOST:PORT"),
            ("http://:9090", "names no host"),
            ("http://p:99999", "not a port"),
            ("http://p:9090/?x=1", "no place"),
            ("http://[fd00::1:9090", "closing ]"),
        ] {
            let err = raw.parse::<PrometheusUrl>().unwrap_err();
            assert!(err.contains(says), "{raw}: {err}");
        }
    }
}
