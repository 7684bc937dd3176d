//! Configuration from environment variables, parsed once at start into typed structs.
//! A bad value is an error that names the variable and the accepted form.

/// The default port of every server (web and gRPC).
pub const DEFAULT_PORT: u16 = 8080;

/// A variable whose value could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value:?}: expected {expected}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: &'static str,
    /// What it was set to.
    pub value: String,
    /// The accepted form.
    pub expected: &'static str,
}

/// Settings of the emoji and voting gRPC services.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcConfig {
    /// `GRPC_PORT`: port to listen on, on 0.0.0.0 (0 picks a free port).
    pub port: u16,
}

/// Settings of the web front end.
#[derive(Debug, Clone, PartialEq)]
pub struct WebConfig {
    /// `WEB_PORT`: port to listen on, on 0.0.0.0 (0 picks a free port).
    pub port: u16,
    /// `EMOJISVC_HOST`: `host:port` of the emoji service.
    pub emoji_addr: String,
    /// `VOTINGSVC_HOST`: `host:port` of the voting service.
    pub voting_addr: String,
}

/// Settings of the vote bot.
#[derive(Debug, Clone, PartialEq)]
pub struct BotConfig {
    /// `WEB_HOST`: `host:port` of the web front end.
    pub web_addr: String,
    /// `VOTE_BOT_RPS`: requests per second, all endpoints together.
    pub rps: f64,
}

impl GrpcConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            port: read(&lookup, "GRPC_PORT", DEFAULT_PORT, PORT, parse_port)?,
        })
    }
}

impl WebConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            port: read(&lookup, "WEB_PORT", DEFAULT_PORT, PORT, parse_port)?,
            emoji_addr: read_addr(&lookup, "EMOJISVC_HOST", "emoji-svc.emojivoto:8080")?,
            voting_addr: read_addr(&lookup, "VOTINGSVC_HOST", "voting-svc.emojivoto:8080")?,
        })
    }
}

impl BotConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(env)
    }

    /// Reads variables through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Self {
            web_addr: read_addr(&lookup, "WEB_HOST", "web-svc.emojivoto:80")?,
            rps: read(&lookup, "VOTE_BOT_RPS", 4.0, RPS, parse_rps)?,
        })
    }
}

const PORT: &str = "a port number from 0 to 65535";
const ADDR: &str = "host:port, like emoji-svc.emojivoto:8080";
const RPS: &str = "a positive number of requests per second, like 4 or 0.5";

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// Reads `var`: unset or empty means `default`; otherwise `parse` must accept it.
fn read<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
    expected: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, ConfigError> {
    match lookup(var) {
        None => Ok(default),
        Some(value) if value.trim().is_empty() => Ok(default),
        Some(value) => parse(value.trim()).ok_or(ConfigError {
            var,
            value,
            expected,
        }),
    }
}

fn read_addr(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<String, ConfigError> {
    read(lookup, var, default.to_string(), ADDR, parse_addr)
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse().ok()
}

fn parse_addr(s: &str) -> Option<String> {
    let (host, port) = s.rsplit_once(':')?;
    let valid_host = !host.is_empty() && !host.contains(['/', ' ', '@']);
    (valid_host && port.parse::<u16>().is_ok_and(|p| p != 0)).then(|| s.to_string())
}

fn parse_rps(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|r| r.is_finite() && *r > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |var| pairs.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_point_at_the_kubernetes_services() {
        let web = WebConfig::from_lookup(vars(&[])).unwrap();
        assert_eq!(web.port, 8080);
        assert_eq!(web.emoji_addr, "emoji-svc.emojivoto:8080");
        assert_eq!(web.voting_addr, "voting-svc.emojivoto:8080");
        let bot = BotConfig::from_lookup(vars(&[])).unwrap();
        assert_eq!(bot.web_addr, "web-svc.emojivoto:80");
        assert_eq!(bot.rps, 4.0);
        assert_eq!(GrpcConfig::from_lookup(vars(&[])).unwrap().port, 8080);
    }

    #[test]
    fn values_are_read() {
        let bot = BotConfig::from_lookup(vars(&[
            ("WEB_HOST", "127.0.0.1:9000"),
            ("VOTE_BOT_RPS", "0.5"),
        ]))
        .unwrap();
        assert_eq!(bot.web_addr, "127.0.0.1:9000");
        assert_eq!(bot.rps, 0.5);
        let grpc = GrpcConfig::from_lookup(vars(&[("GRPC_PORT", " 0 ")])).unwrap();
        assert_eq!(grpc.port, 0);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_form() {
        let err = GrpcConfig::from_lookup(vars(&[("GRPC_PORT", "80a")])).unwrap_err();
        assert_eq!(err.var, "GRPC_PORT");
        assert_eq!(
            err.to_string(),
            "GRPC_PORT=\"80a\": expected a port number from 0 to 65535"
        );
        for (var, value) in [
            ("WEB_PORT", "65536"),
            ("EMOJISVC_HOST", "emoji-svc"),
            ("VOTINGSVC_HOST", ":8080"),
            ("VOTINGSVC_HOST", "http://voting:8080"),
        ] {
            let err = WebConfig::from_lookup(vars(&[(var, value)])).unwrap_err();
            assert_eq!((err.var, err.value.as_str()), (var, value));
        }
        for rps in ["0", "-1", "fast", "inf", "NaN"] {
            let err = BotConfig::from_lookup(vars(&[("VOTE_BOT_RPS", rps)])).unwrap_err();
            assert_eq!(err.var, "VOTE_BOT_RPS");
        }
    }
}
