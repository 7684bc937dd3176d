//! `conduit-proxy`: the Conduit data plane, a transparent sidecar proxy.
//!
//! Every TCP connection into or out of a meshed pod is redirected here by iptables
//! (`conduit-proxy init`). The proxy finds where the connection was going, decides its
//! protocol, and forwards it: HTTP/1 and HTTP/2 (gRPC included) request by request through
//! a stack of small Tower layers that record golden metrics, anything else as opaque TCP.
//! Between meshed pods it all travels under mutual TLS.
//!
//! The folders are the concerns, lowest first:
//! - [`transport`]: sockets and bytes: original destination, protocol detection on byte
//!   prefixes, mesh TLS, upstream connections, splicing.
//! - [`telemetry`]: metrics, tap and the admin server.
//! - [`control`]: the control plane's clients: discovery, inbound policy, identity.
//! - [`balance`]: which endpoint of a service gets the next request or connection.
//! - [`http`]: serving HTTP connections and the request layers.
//! - [`connection`]: a connection's path as stages with typed values between them
//!   (`Accepted` → `Detected` → HTTP or opaque), and the forwarding both sides share.
//! - [`inbound`] and [`outbound`]: each side's own chain of stages; read these first.

pub mod app;
pub mod balance;
pub mod config;
pub mod connection;
pub mod control;
pub mod drain;
pub mod errors;
pub mod http;
pub mod inbound;
pub mod outbound;
pub mod peer;
pub mod telemetry;
pub mod transport;
