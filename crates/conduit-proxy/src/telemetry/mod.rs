//! What the proxy tells about the traffic it carries: Prometheus metrics ([`metrics`],
//! with the names their labels may carry: [`labels`]), live request events for the
//! controller ([`tap`]), the admin server that serves metrics, readiness and shutdown
//! ([`admin`]), and the rate limit of logs that clients can trigger ([`log_limit`]).

pub mod admin;
pub mod labels;
pub mod log_limit;
pub mod metrics;
pub mod tap;
