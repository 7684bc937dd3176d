//! `conduit-controller`: Conduit's control plane in one binary. It owns discovery (a
//! `Discovery` trait with two backends: the local runtime's state file and the Kubernetes
//! API's watchers), the gRPC port proxies call (TLS with the controller's own identity,
//! callers known by their certificates, limits per client) and its APIs (Destination:
//! endpoint sets and ServiceProfiles; Identity: certificates for CSRs, with local tokens or TokenReviews;
//! InboundPolicy: each pod's resolved policy), tap through the control plane and top on
//! top of it, scraping every meshed proxy into the in-memory metrics store and its stat
//! and edges queries, the proxy injector's admission webhook, publishing the trust
//! anchors into every namespace, and the HTTP JSON API the CLI and the web dashboard read (its types are
//! `conduit-api`'s; the dashboard's pages are served beside it), on TCP only behind Kubernetes authentication and RBAC. Knows nothing about how pods are run.

pub mod api;
pub mod api_auth;
pub mod dashboard;
pub mod destination;
pub mod discovery;
pub mod grpc;
pub mod https;
pub mod identity;
pub mod kubernetes;
pub mod metrics;
pub mod policy;
pub mod prom;
pub mod prometheus;
pub mod scrape;
pub mod store;
pub mod tap;
pub mod tap_client;
pub mod tls;
pub mod top;
pub mod trust_roots;
pub mod webhook;
