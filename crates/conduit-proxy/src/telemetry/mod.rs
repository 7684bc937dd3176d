//! What the proxy tells about the traffic it carries: Prometheus metrics ([`metrics`],
//! with the names their labels may carry: [`labels`]), live request events for the
//! controller ([`tap`]), and the admin server that serves metrics, readiness and shutdown
//! ([`admin`]).

pub mod admin;
pub mod labels;
pub mod metrics;
pub mod tap;
