//! What a ServiceProfile (the `Profile` of Destination.GetProfile) may hold, and what a
//! proxy assumes where it says nothing: the controller refuses what breaks these, and the
//! proxy checks them again on what it receives.

/// The route of requests no route of a profile matches (and of names without one):
/// the `route` label's value for them.
pub const DEFAULT_ROUTE: &str = "[default]";
/// The most routes a profile may have: each is a regex every request is matched
/// against.
pub const MAX_ROUTES: usize = 4096;
/// The longest route name (a metrics label value).
pub const MAX_ROUTE_NAME: usize = 256;
/// The most backends an HTTPRoute rule may send to (the Gateway API's `backendRefs`
/// limit).
pub const MAX_BACKENDS: usize = 16;
/// The largest weight an HTTPRoute backend may have (the Gateway API's).
pub const MAX_BACKEND_WEIGHT: u32 = 1_000_000;
/// The retry budget of a Service whose profile sets none: retries may add 20% to
/// the requests of the last 10 s, plus 10 per second.
pub const DEFAULT_RETRY_RATIO_PERMILLE: u32 = 200;
pub const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 10;
pub const DEFAULT_RETRY_TTL_MS: u64 = 10_000;

/// Whether `name` may name a route: a short printable text, not the default's.
pub fn is_route_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROUTE_NAME
        && name != DEFAULT_ROUTE
        && !name.chars().any(char::is_control)
}

/// The gRPC status a retryable route is retried on when its profile names none.
pub const DEFAULT_RETRY_GRPC_CODE: u32 = 14;

/// The gRPC status codes by name, as a profile may write them (`UNAVAILABLE`, or
/// `unavailable`, `resource-exhausted`).
pub const GRPC_CODES: [(&str, u32); 16] = [
    ("CANCELLED", 1),
    ("UNKNOWN", 2),
    ("INVALID_ARGUMENT", 3),
    ("DEADLINE_EXCEEDED", 4),
    ("NOT_FOUND", 5),
    ("ALREADY_EXISTS", 6),
    ("PERMISSION_DENIED", 7),
    ("RESOURCE_EXHAUSTED", 8),
    ("FAILED_PRECONDITION", 9),
    ("ABORTED", 10),
    ("OUT_OF_RANGE", 11),
    ("UNIMPLEMENTED", 12),
    ("INTERNAL", 13),
    ("UNAVAILABLE", 14),
    ("DATA_LOSS", 15),
    ("UNAUTHENTICATED", 16),
];

/// The code a gRPC status name (any case, `-` for `_`) or number (1-16) stands for.
pub fn grpc_code(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return (1..=16).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase().replace('-', "_");
    GRPC_CODES
        .iter()
        .find(|(n, _)| *n == upper)
        .map(|(_, c)| *c)
}
