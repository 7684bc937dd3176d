//! Logs that a client can trigger at will (denials, refused connections, the proxy's own
//! error responses) are rate-limited: one line per period per kind of event, saying how
//! many were left out since the last one, so that a flood fills neither the disk nor the
//! log pipeline. Metrics still count every event.

use parking_lot::Mutex;
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// Lets one log line per kind through per period. Kinds are `&'static str`s (error codes,
/// event names): a fixed set, so the map stays small.
pub struct LogLimit {
    period: Duration,
    kinds: Mutex<Option<HashMap<&'static str, Kind>>>,
}

struct Kind {
    last: Instant,
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per kind per `period`.
    pub const fn new(period: Duration) -> LogLimit {
        LogLimit {
            period,
            kinds: Mutex::new(None),
        }
    }

    /// `Some(n)` when this event of `kind` may be logged, `n` being how many of its kind
    /// were not since the last one that was; `None` when it must not.
    pub fn admit(&self, kind: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut kinds = self.kinds.lock();
        match kinds.get_or_insert_with(HashMap::new).entry(kind) {
            std::collections::hash_map::Entry::Occupied(mut seen) => {
                let seen = seen.get_mut();
                if now.duration_since(seen.last) < self.period {
                    seen.suppressed += 1;
                    return None;
                }
                seen.last = now;
                Some(std::mem::take(&mut seen.suppressed))
            }
            std::collections::hash_map::Entry::Vacant(new) => {
                new.insert(Kind {
                    last: now,
                    suppressed: 0,
                });
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_period_then_the_count_of_those_left_out() {
        let limit = LogLimit::new(Duration::from_millis(200));
        assert_eq!(limit.admit("denied"), Some(0));
        for _ in 0..1000 {
            assert_eq!(limit.admit("denied"), None);
        }
        assert_eq!(limit.admit("refused"), Some(0), "kinds are limited apart");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limit.admit("denied"), Some(1000));
        assert_eq!(limit.admit("denied"), None);
    }
}
