//! Destination ports learned to carry server-speaks-first protocols (SMTP, MySQL, FTP...).
//!
//! A connection whose client stays silent through the detection timeout is forwarded as
//! opaque TCP; if the server then speaks first, its port is remembered so that the next
//! connection skips detection and its 10 s stall. If a client later speaks first on a
//! remembered port, the port is forgotten again: a misjudged port heals itself.
//! Knows nothing about sockets; the caller observes who spoke first.

use crate::transport::splice::FirstSpeaker;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a spliced connection's first speaker is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// The client said nothing through detection: a server that speaks first teaches
    /// that its port is server-speaks-first.
    SilentClient,
    /// The port is thought server-speaks-first: a client that speaks first corrects that.
    KnownPort,
}

/// What a connection's first speaker changed about its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lesson {
    Learned,
    Forgotten,
}

/// A lock-free set of ports, one bit each.
pub struct ServerFirstPorts {
    bits: Box<[AtomicU64]>,
}

impl Default for ServerFirstPorts {
    fn default() -> Self {
        ServerFirstPorts {
            bits: (0..1024).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl ServerFirstPorts {
    fn slot(&self, port: u16) -> (&AtomicU64, u64) {
        (&self.bits[usize::from(port / 64)], 1 << (port % 64))
    }

    /// Whether `port` is known to be server-speaks-first.
    pub fn contains(&self, port: u16) -> bool {
        let (word, bit) = self.slot(port);
        word.load(Ordering::Relaxed) & bit != 0
    }

    /// Remembers `port`; returns true if it was not known before.
    pub fn learn(&self, port: u16) -> bool {
        let (word, bit) = self.slot(port);
        word.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// Forgets `port`; returns true if it was known.
    pub fn forget(&self, port: u16) -> bool {
        let (word, bit) = self.slot(port);
        word.fetch_and(!bit, Ordering::Relaxed) & bit != 0
    }

    /// Takes the lesson of one connection to `port`, watched for `why`, whose first
    /// speaker was `first`; returns what changed.
    pub fn observe(&self, port: u16, why: Watch, first: FirstSpeaker) -> Option<Lesson> {
        match (why, first) {
            (Watch::SilentClient, FirstSpeaker::Server) if self.learn(port) => {
                Some(Lesson::Learned)
            }
            (Watch::KnownPort, FirstSpeaker::Client) if self.forget(port) => {
                Some(Lesson::Forgotten)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_and_forgets_ports() {
        let ports = ServerFirstPorts::default();
        assert!(!ports.contains(25));
        assert!(ports.learn(25));
        assert!(!ports.learn(25), "second learn is not new");
        assert!(ports.contains(25));
        assert!(!ports.contains(24) && !ports.contains(26) && !ports.contains(89));
        assert!(ports.learn(65535) && ports.contains(65535));
        assert!(ports.forget(25));
        assert!(!ports.forget(25));
        assert!(!ports.contains(25) && ports.contains(65535));
    }

    #[test]
    fn who_speaks_first_teaches_the_port() {
        let ports = ServerFirstPorts::default();
        let (silent, known) = (Watch::SilentClient, Watch::KnownPort);
        assert_eq!(ports.observe(25, silent, FirstSpeaker::Client), None);
        assert_eq!(ports.observe(25, silent, FirstSpeaker::Neither), None);
        assert_eq!(
            ports.observe(25, silent, FirstSpeaker::Server),
            Some(Lesson::Learned)
        );
        assert!(ports.contains(25));
        assert_eq!(
            ports.observe(25, silent, FirstSpeaker::Server),
            None,
            "a port is learned once"
        );
        assert_eq!(ports.observe(25, known, FirstSpeaker::Server), None);
        assert_eq!(ports.observe(25, known, FirstSpeaker::Neither), None);
        assert_eq!(
            ports.observe(25, known, FirstSpeaker::Client),
            Some(Lesson::Forgotten)
        );
        assert!(!ports.contains(25));
        assert_eq!(
            ports.observe(25, known, FirstSpeaker::Client),
            None,
            "already forgotten by another connection"
        );
    }
}
