//! How many retries a Service's clients may add ([`RetryBudget`]): within the last `ttl`,
//! retries may number `ratio` of the requests plus `min_per_second` per second of it, as
//! the Service's profile says (default 20% plus 10/s over 10 s). A retry beyond it is
//! skipped: when a Service fails everything, retries add a fifth to its load, not a
//! multiple of it. Counted in ten slots of `ttl / 10`, so that old requests age out.

use crate::http::routes::BudgetPolicy;
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// How many slots a window has.
const SLOTS: usize = 10;

/// One Service's budget, shared by all its requests from this proxy.
#[derive(Debug)]
pub struct RetryBudget {
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// Requests and retries per slot.
    slots: [(u64, u64); SLOTS],
    current: usize,
    /// When the current slot began.
    since: Instant,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(Instant::now())
    }
}

impl RetryBudget {
    fn new(now: Instant) -> RetryBudget {
        RetryBudget {
            window: Mutex::new(Window {
                slots: [(0, 0); SLOTS],
                current: 0,
                since: now,
            }),
        }
    }

    /// Counts a request (not a retry).
    pub fn request(&self, policy: &BudgetPolicy) {
        self.request_at(policy, Instant::now());
    }

    /// Takes one retry from the budget if it has one left.
    pub fn try_retry(&self, policy: &BudgetPolicy) -> bool {
        self.try_retry_at(policy, Instant::now())
    }

    fn request_at(&self, policy: &BudgetPolicy, now: Instant) {
        let mut w = self.window.lock();
        w.advance(policy.ttl, now);
        let current = w.current;
        w.slots[current].0 += 1;
    }

    fn try_retry_at(&self, policy: &BudgetPolicy, now: Instant) -> bool {
        let mut w = self.window.lock();
        w.advance(policy.ttl, now);
        let (requests, retries) = w
            .slots
            .iter()
            .fold((0u64, 0u64), |(a, b), (r, t)| (a + r, b + t));
        let allowed = requests.saturating_mul(u64::from(policy.ratio_permille)) / 1000
            + u64::from(policy.min_per_second).saturating_mul(policy.ttl.as_secs().max(1));
        if retries >= allowed {
            return false;
        }
        let current = w.current;
        w.slots[current].1 += 1;
        true
    }
}

impl Window {
    /// Moves to the slot `now` is in, emptying those passed.
    fn advance(&mut self, ttl: Duration, now: Instant) {
        let slot = (ttl / SLOTS as u32).max(Duration::from_millis(1));
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < slot {
            return;
        }
        let passed = (elapsed.as_nanos() / slot.as_nanos()).min(SLOTS as u128) as usize;
        for _ in 0..passed {
            self.current = (self.current + 1) % SLOTS;
            self.slots[self.current] = (0, 0);
        }
        self.since = if passed == SLOTS {
            now
        } else {
            self.since + slot * passed as u32
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ratio_permille: u32, min_per_second: u32) -> BudgetPolicy {
        BudgetPolicy {
            ratio_permille,
            min_per_second,
            ttl: Duration::from_secs(10),
        }
    }

    #[test]
    fn retries_are_a_ratio_of_requests_plus_a_floor_per_second() {
        let t0 = Instant::now();
        let p = policy(200, 1);
        let b = RetryBudget::new(t0);
        // The floor: 1/s over 10 s, with no requests at all.
        let floor = (0..100).filter(|_| b.try_retry_at(&p, t0)).count();
        assert_eq!(floor, 10);
        // 100 requests: 20 more.
        for _ in 0..100 {
            b.request_at(&p, t0);
        }
        let more = (0..100).filter(|_| b.try_retry_at(&p, t0)).count();
        assert_eq!(more, 20);
    }

    #[test]
    fn requests_and_retries_age_out_of_the_window() {
        let t0 = Instant::now();
        let p = policy(500, 0);
        let b = RetryBudget::new(t0);
        for _ in 0..10 {
            b.request_at(&p, t0);
        }
        assert_eq!((0..10).filter(|_| b.try_retry_at(&p, t0)).count(), 5);
        // Half the window later, still spent; a whole window later, both aged out.
        let half = t0 + Duration::from_secs(5);
        assert!(!b.try_retry_at(&p, half));
        let later = t0 + Duration::from_secs(11);
        assert!(!b.try_retry_at(&p, later), "the requests aged out too");
        for _ in 0..10 {
            b.request_at(&p, later);
        }
        assert_eq!((0..10).filter(|_| b.try_retry_at(&p, later)).count(), 5);
        // Long idle: everything is forgotten at once.
        let much_later = t0 + Duration::from_secs(3600);
        assert!(!b.try_retry_at(&p, much_later));
    }
}
