//! What the proxy reads of headers, and which it drops. Hop-by-hop headers (RFC 9110
//! §7.6.1), which describe one connection, are dropped when a message crosses the proxy,
//! except for the `Upgrade` handshake, which is passed through so that WebSockets and the
//! like work end to end. Read here once for every layer: a request's authority, whether
//! it is gRPC, and a gRPC status.

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request};

/// The authority a request names: its URI's (HTTP/2, or an absolute-form HTTP/1 target),
/// else its `Host` header.
pub fn authority_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Whether a message is gRPC (`content-type: application/grpc...`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` in `headers` (a trailers-only response's, or trailers), if any.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    // A name, not a string: a string is parsed into one on every lookup.
    static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    headers
        .get(&GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked` (RFC 9112 §6.1): what
/// decides whether a message so framed is chunked, requests and responses alike.
pub fn ends_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Whether the request asks to switch protocols (`Upgrade`) or open a tunnel (`CONNECT`).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        || (req.headers().contains_key(header::UPGRADE) && connection_has(req.headers(), "upgrade"))
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::CONNECTION).iter().flat_map(tokens)
}

/// The comma-separated tokens of one `Connection` value.
pub fn tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Which hop-by-hop headers a message has, found in one pass over its names: most
/// messages have none but `Connection`, and hashing each candidate name would cost more
/// than looking at the few names there are.
#[derive(Default)]
struct HopByHop {
    connection: bool,
    keep_alive: bool,
    proxy_connection: bool,
    upgrade: bool,
    te: bool,
}

impl HopByHop {
    fn of(headers: &HeaderMap) -> Self {
        let mut found = HopByHop::default();
        for name in headers.keys() {
            if name == header::CONNECTION {
                found.connection = true;
            } else if name == header::TE {
                found.te = true;
            } else if name == header::UPGRADE {
                found.upgrade = true;
            } else if name == KEEP_ALIVE {
                found.keep_alive = true;
            } else if name == PROXY_CONNECTION {
                found.proxy_connection = true;
            }
        }
        found
    }
}

/// Removes the hop-by-hop headers of a message. `TE` keeps only `trailers`, which gRPC
/// needs end to end. With `keep_upgrade`, the `Connection: upgrade` / `Upgrade` pair of a
/// protocol switch survives.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let found = HopByHop::of(headers);
    if found.connection {
        // Taken out first, so that the names it lists can be removed while its values
        // are read; a second value (rare) is the only thing collected.
        let (first, rest) = match headers.entry(header::CONNECTION) {
            header::Entry::Occupied(entry) => {
                let mut values = entry.remove_entry_mult().1;
                (values.next(), values.collect())
            }
            header::Entry::Vacant(_) => (None, Vec::new()),
        };
        for token in first.iter().chain(&rest).flat_map(tokens) {
            if !(keep_upgrade && token.eq_ignore_ascii_case("upgrade")) {
                headers.remove(token);
            }
        }
    }
    if found.keep_alive {
        headers.remove(KEEP_ALIVE);
    }
    if found.proxy_connection {
        headers.remove(PROXY_CONNECTION);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if found.upgrade {
        headers.remove(header::UPGRADE);
    }
    if found.te {
        let trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        headers.remove(header::TE);
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// The names `strip_hop_by_hop` leaves in `h`, sorted.
    fn stripped(h: &mut HeaderMap, keep_upgrade: bool) -> Vec<String> {
        strip_hop_by_hop(h, keep_upgrade);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn removes_connection_and_what_it_lists() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Trace"),
            ("keep-alive", "timeout=5"),
            ("x-trace", "1"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip, trailers"),
            ("upgrade", "h2c"),
            ("content-type", "text/plain"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(
            stripped(&mut h, false),
            ["content-type", "te", "transfer-encoding"]
        );
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn removes_only_what_is_there() {
        let mut h = headers(&[
            ("connection", "keep-alive"),
            ("content-length", "5"),
            ("server", "nginx"),
        ]);
        assert_eq!(stripped(&mut h, false), ["content-length", "server"]);
        // Every Connection value lists names to remove, not only the first.
        let mut h = headers(&[
            ("connection", "close"),
            ("connection", "x-a, x-b"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("x-c", "3"),
        ]);
        assert_eq!(stripped(&mut h, false), ["x-c"]);
    }

    #[test]
    fn only_a_last_coding_of_chunked_is_chunked() {
        for value in ["chunked", "gzip, chunked", "gzip,Chunked ", " CHUNKED"] {
            assert!(ends_chunked(value.as_bytes()), "{value}");
        }
        for value in ["", "gzip", "chunked, gzip", "chunkedx", "x-chunked"] {
            assert!(!ends_chunked(value.as_bytes()), "{value}");
        }
    }

    #[test]
    fn keeps_the_upgrade_handshake() {
        let mut h = headers(&[
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(h.contains_key("sec-websocket-key"));
        assert!(!h.contains_key("keep-alive"));
    }

    #[test]
    fn detects_upgrades_and_connect() {
        let ws = Request::get("/chat")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(is_upgrade(&ws));
        let connect = Request::connect("example.com:443").body(()).unwrap();
        assert!(is_upgrade(&connect));
        let plain = Request::get("/")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(
            !is_upgrade(&plain),
            "Upgrade without Connection: upgrade is not a handshake"
        );
    }
}
