//! Resumption of mesh TLS sessions: the state a proxy keeps so that a peer's next
//! connection skips the certificate exchange and its signatures (two thirds of a full
//! handshake's cost). Both sides bound it: a few sessions, each for at most
//! [`SESSION_LIFETIME`]; the server also refuses a resumed session whose client
//! certificate has expired since (`MeshTls` checks that, as the resumed handshake has no
//! certificate to verify).

use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// How long a server remembers a session. rustls promises clients a day for stateful
/// tickets; this store forgets sooner, and the client then does a full handshake.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(3600);

/// Sessions a server proxy keeps at most (each holds its client's certificate chain,
/// about 1.5 KB): bounded whatever clients do; the oldest are dropped first.
pub const SERVER_SESSIONS: usize = 256;

/// Peers a client proxy keeps tickets for (rustls keeps a few tickets per peer).
pub const CLIENT_PEERS: usize = 64;

/// Tickets a server sends per handshake: one, used by the client's next connection (a
/// ticket is good for one resumption) and replaced by that connection's.
pub const TICKETS_PER_HANDSHAKE: usize = 1;

/// A server's sessions, each forgotten [`SESSION_LIFETIME`] after it was stored.
#[derive(Debug)]
pub struct ExpiringSessions {
    inner: Arc<ServerSessionMemoryCache>,
    /// The clock's origin: a stored session begins with its expiry, in milliseconds since.
    epoch: Instant,
    lifetime: Duration,
}

impl ExpiringSessions {
    /// At most `capacity` sessions, each for at most `lifetime`.
    pub fn new(capacity: usize, lifetime: Duration) -> ExpiringSessions {
        ExpiringSessions {
            inner: ServerSessionMemoryCache::new(capacity),
            epoch: Instant::now(),
            lifetime,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The session stored as `stored`, unless it has expired.
    fn unexpired(&self, stored: Vec<u8>) -> Option<Vec<u8>> {
        let (expiry, session) = stored.split_first_chunk::<8>()?;
        (u64::from_be_bytes(*expiry) > self.now_ms()).then(|| session.to_vec())
    }
}

impl StoresServerSessions for ExpiringSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let lifetime = u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX);
        let expiry = self.now_ms().saturating_add(lifetime);
        let mut stored = Vec::with_capacity(8 + value.len());
        stored.extend_from_slice(&expiry.to_be_bytes());
        stored.extend_from_slice(&value);
        self.inner.put(key, stored)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key).and_then(|s| self.unexpired(s))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.take(key).and_then(|s| self.unexpired(s))
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_returned_until_it_expires_and_taken_once() {
        let sessions = ExpiringSessions::new(4, Duration::from_millis(200));
        assert!(sessions.put(b"a".to_vec(), b"session a".to_vec()));
        assert_eq!(sessions.get(b"a").as_deref(), Some(&b"session a"[..]));
        assert_eq!(sessions.take(b"a").as_deref(), Some(&b"session a"[..]));
        assert_eq!(sessions.take(b"a"), None, "a ticket resumes one connection");

        sessions.put(b"b".to_vec(), b"session b".to_vec());
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(sessions.get(b"b"), None, "expired");
        assert_eq!(sessions.take(b"b"), None, "expired");
    }

    #[test]
    fn the_store_is_bounded() {
        let sessions = ExpiringSessions::new(4, SESSION_LIFETIME);
        for i in 0..100u8 {
            sessions.put(vec![i], vec![i; 100]);
        }
        let kept = (0..100u8).filter(|i| sessions.get(&[*i]).is_some()).count();
        assert!(kept <= 4, "{kept} sessions kept of at most 4");
        assert!(sessions.get(&[99]).is_some(), "the newest is kept");
    }
}
