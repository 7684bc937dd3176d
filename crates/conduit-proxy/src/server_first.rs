//! Destination ports learned to carry server-speaks-first protocols (SMTP, MySQL, FTP...).
//!
//! A connection whose client stays silent through the detection timeout is forwarded as
//! opaque TCP; if the server then speaks first, its port is remembered so that the next
//! connection skips detection and its 10 s stall. If a client later speaks first on a
//! remembered port, the port is forgotten again: a misjudged port heals itself.
//! Knows nothing about sockets; the caller observes who spoke first.

use std::sync::atomic::{AtomicU64, Ordering};

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
}
