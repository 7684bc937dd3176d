//! The two facts every layer labels a connection's work with: which side of the pod it
//! belongs to ([`Direction`]) and how its other end proved who it is ([`PeerTls`]).
//! A leaf module: it knows nothing of sockets, protocols or metrics.

use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use std::{fmt::Write as _, sync::Arc};

/// Which side of the pod a connection belongs to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// Arriving at the pod's application.
    Inbound,
    /// Leaving the pod's application.
    Outbound,
}

impl Direction {
    /// `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// How the other end of a connection was authenticated: mesh TLS with the peer's
/// identity (`tls="true"` and `client_id` inbound, `server_id` outbound), or not at all
/// (`tls="false"`).
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub enum PeerTls {
    #[default]
    None,
    /// Inbound mesh TLS: the client's identity.
    Client(Arc<str>),
    /// Outbound mesh TLS: the server's identity, verified.
    Server(Arc<str>),
}

impl PeerTls {
    /// The peer's identity, if it proved one.
    pub fn identity(&self) -> Option<&str> {
        match self {
            PeerTls::None => None,
            PeerTls::Client(id) | PeerTls::Server(id) => Some(id),
        }
    }
}

impl EncodeLabelSet for PeerTls {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let (tls, id) = match self {
            PeerTls::None => ("false", None),
            PeerTls::Client(id) => ("true", Some(("client_id", id))),
            PeerTls::Server(id) => ("true", Some(("server_id", id))),
        };
        EncodeLabel::encode(&("tls", tls), encoder.encode_label())?;
        if let Some((key, id)) = id {
            EncodeLabel::encode(&(key, &**id), encoder.encode_label())?;
        }
        Ok(())
    }
}
