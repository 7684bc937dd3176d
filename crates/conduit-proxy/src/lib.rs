//! `conduit-proxy`: the Conduit data plane, a transparent sidecar proxy.
//!
//! Every TCP connection into or out of a meshed pod is redirected here by iptables
//! (`conduit-proxy init`). The proxy finds where the connection was going, detects its
//! protocol, and forwards it: HTTP/1 and HTTP/2 (gRPC included) request by request through
//! a stack of small Tower layers that record golden metrics, anything else as opaque TCP.
//! Between meshed pods it all travels under mutual TLS ([`tls`]).
//!
//! Read [`side`] first: it is the path of a connection, top to bottom. [`inbound`] and
//! [`outbound`] say where each side sends traffic; [`http`] holds the request layers.

pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod connect;
pub mod control;
pub mod detect;
pub mod discovery;
pub mod drain;
pub mod errors;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod io;
pub mod metrics;
pub mod orig_dst;
pub mod outbound;
pub mod policy;
pub mod server_first;
pub mod side;
pub mod tap;
pub mod tcp;
pub mod tls;
