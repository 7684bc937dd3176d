//! A connection's path through the proxy, as stages with typed values between them.
//! Each side chains the stages in its own module (`inbound`, `outbound`); the ones both
//! sides use live here:
//!
//! 1. [`accept`]: a redirected connection and its original destination: [`Accepted`].
//! 2. [`protocol`]: a port configured opaque or learned server-speaks-first, or detection
//!    on the first bytes, decides the protocol: [`Detected`] (what was read kept for
//!    replay). Inbound then terminates mesh TLS, decides again inside, and authorizes.
//! 3. [`forward`]: the connection is counted and served as HTTP through the request
//!    stack, or spliced as opaque TCP to the upstream its side chose, watching who speaks
//!    first ([`server_first`]).
//!
//! Knows nothing of policy, discovery or identities beyond the [`PeerTls`] a side hands it.

pub mod accept;
pub mod forward;
pub mod protocol;
pub mod server_first;

pub use accept::Side;
pub use forward::{Forwarder, Forwarding};
pub use protocol::DetectProtocol;
pub use server_first::ServerFirstPorts;

use crate::{
    config::Config,
    peer::PeerTls,
    telemetry::{metrics::Metrics, tap::Taps},
    transport::{detect::Protocol, tls::MeshTls},
};
use bytes::BytesMut;
use std::{net::SocketAddr, sync::Arc};
use tokio::time::Instant;

/// What both sides share: the proxy's configuration, metrics, tap observers, and mesh
/// TLS and TLS to the control plane when the proxy has an identity.
#[derive(Clone)]
pub struct Shared {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub taps: Arc<Taps>,
    pub tls: Option<Arc<MeshTls>>,
    pub control: Option<crate::control::ControlTls>,
    /// With a control plane: the Destination API, and the profiles followed on it.
    pub discovery: Option<crate::control::discovery::Discovery>,
    pub profiles: Option<Arc<crate::control::profile::Profiles>>,
}

/// An accepted, redirected connection.
#[derive(Clone, Copy, Debug)]
pub struct Accepted {
    pub client: SocketAddr,
    pub orig_dst: SocketAddr,
    pub at: Instant,
}

/// How the protocol of a connection was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decided {
    Bytes(Protocol),
    OpaquePort,
    ServerFirstPort,
    /// The client stayed silent: maybe the server speaks first.
    Silence,
    /// The client sent bytes that decide nothing, then waited.
    Undecided,
    /// The client closed its side before the protocol was clear.
    ClientClosed,
    /// The client's proxy said over mesh TLS that the connection is opaque.
    PeerSaidOpaque,
    /// The client stalled in the middle of an HTTP/1 request line.
    StalledRequestLine,
}

impl Decided {
    /// The protocol the connection is served as, and what decided it (the labels of
    /// `protocol_detect_total`).
    pub fn protocol(self) -> (Protocol, &'static str) {
        match self {
            Decided::Bytes(p) => (p, "bytes"),
            Decided::OpaquePort => (Protocol::Opaque, "opaque_port"),
            Decided::ServerFirstPort => (Protocol::Opaque, "server_first_port"),
            Decided::PeerSaidOpaque => (Protocol::Opaque, "peer_proxy"),
            Decided::Silence | Decided::StalledRequestLine | Decided::Undecided => {
                (Protocol::Opaque, "timeout")
            }
            Decided::ClientClosed => (Protocol::Opaque, "client_closed"),
        }
    }

    /// Whether the connection is answered as HTTP, request by request (a stalled request
    /// line is answered too: with a 408).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Decided::Bytes(Protocol::Http1 | Protocol::Http2) | Decided::StalledRequestLine
        )
    }
}

/// A connection whose protocol is decided.
pub struct Detected<I> {
    pub accepted: Accepted,
    pub io: I,
    /// What was read while deciding: replayed to whatever serves the connection.
    pub read: BytesMut,
    pub decided: Decided,
    /// How the client was authenticated.
    pub peer: PeerTls,
}

impl<I> Detected<I> {
    /// The same connection over `f(io)`.
    pub fn map_io<J>(self, f: impl FnOnce(I) -> J) -> Detected<J> {
        Detected {
            accepted: self.accepted,
            io: f(self.io),
            read: self.read,
            decided: self.decided,
            peer: self.peer,
        }
    }
}
