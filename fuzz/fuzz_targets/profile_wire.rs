//! What a proxy does with a GetProfile answer (`control/profile.rs`): any bytes decoded as
//! the `conduit.destination.v1.Profile` message, turned into routes by the proxy's own
//! `profile`, then requests matched against them as `http/routes.rs` does. Checks that a
//! profile is refused only for what the proxy cannot use (too many routes, a name no label
//! may have, a method that is none, a gRPC status that is none, a regex that does not compile), that a kept one has
//! every route in order, and that a request's route is the first whose method and whole
//! path match, as each route's own regex says on its own (one `RegexSet` pass must agree
//! with trying the routes one by one), else the default route, and that its route
//! retries exactly the gRPC statuses it names (none named: UNAVAILABLE). A profile with
//! HTTPRoute backend routes must be read without a panic, and kept whole or refused.
#![no_main]

use conduit_api::{
    destination::Profile,
    profile::{is_route_name, DEFAULT_ROUTE, MAX_ROUTES},
};
use conduit_proxy::control::profile::profile;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Compiling many arbitrary regexes is slow, not wrong: larger profiles are left out.
const MAX_FUZZED_ROUTES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Profile::decode(data) else {
        return;
    };
    if message.routes.len() > MAX_FUZZED_ROUTES && message.routes.len() <= MAX_ROUTES {
        return;
    }
    if !message.backend_routes.is_empty() {
        if message.backend_routes.len() > MAX_FUZZED_ROUTES {
            return;
        }
        let sent = message.backend_routes.len();
        if let Ok(kept) = profile(message) {
            assert_eq!(kept.backends.len(), sent);
        }
        return;
    }
    let sent = message.clone();
    let regexes: Vec<Option<regex::Regex>> = sent
        .routes
        .iter()
        .map(|r| regex::Regex::new(&format!("^(?:{})$", r.path_regex)).ok())
        .collect();
    let usable = sent.routes.len() <= MAX_ROUTES
        && sent.routes.iter().all(|r| {
            is_route_name(&r.name)
                && (r.method.is_empty() || http::Method::from_bytes(r.method.as_bytes()).is_ok())
                && r.retry_grpc_codes.iter().all(|c| (1..=16).contains(c))
        })
        && regexes.iter().all(Option::is_some);
    let kept = match profile(message) {
        Ok(p) => p,
        Err(error) => {
            // A set of regexes can exceed the size limit that each alone meets.
            assert!(!usable || error.to_string().contains("regex"), "{error}");
            return;
        }
    };
    assert!(usable, "kept a profile it cannot use: {sent:?}");
    let names: Vec<&str> = kept.names().collect();
    let sent_names: Vec<&str> = sent.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, sent_names);

    // Paths to match: each route's regex text itself, and a few common ones.
    let mut paths: Vec<&str> = sent.routes.iter().map(|r| r.path_regex.as_str()).collect();
    paths.extend(["/", "/api/list", ""]);
    for method in [http::Method::GET, http::Method::POST] {
        for path in &paths {
            let expected = sent.routes.iter().zip(&regexes).find(|(r, re)| {
                (r.method.is_empty() || r.method == method.as_str())
                    && re.as_ref().is_some_and(|re| re.is_match(path))
            });
            let got = kept.route(&method, path);
            let name = expected.map_or(DEFAULT_ROUTE, |(r, _)| r.name.as_str());
            assert_eq!(&*got.name, name, "{method} {path:?}");
            // A retryable route retries the gRPC statuses it names, else UNAVAILABLE.
            for code in 0..20 {
                let retried = expected.is_some_and(|(r, _)| {
                    r.retryable
                        && if r.retry_grpc_codes.is_empty() {
                            code == 14
                        } else {
                            r.retry_grpc_codes.contains(&code)
                        }
                });
                assert_eq!(got.retries_grpc(code), retried, "{name}: code {code}");
            }
        }
    }
});
