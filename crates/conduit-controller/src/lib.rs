//! `conduit-controller`: Conduit's control plane in one binary. Discovery (what runs,
//! behind a trait with the local runtime as its first backend), the Destination API
//! proxies stream endpoint sets from, the metrics API (scrapes every meshed proxy, keeps
//! a window in memory, answers stat and edges queries), and its HTTP JSON API. Knows
//! nothing about how pods are run.

pub mod api;
pub mod destination;
pub mod discovery;
pub mod identity;
pub mod kubernetes;
pub mod policy;
pub mod prom;
pub mod scrape;
pub mod store;
pub mod tap;
pub mod tap_client;
pub mod top;
pub mod trust_roots;
pub mod webhook;
