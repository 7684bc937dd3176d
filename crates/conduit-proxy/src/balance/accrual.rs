//! Failure accrual (circuit breaking): an endpoint that fails [`FailureAccrual::failures`]
//! times in a row (an HTTP 5xx, a failed connect) leaves its balancer for a backoff, 1 s
//! doubling to 60 s. When the backoff ends, one request probes it: a success restores it,
//! a failure sends it out for twice as long. Which endpoints are out is the balancer's to
//! respect (`Balancer::pick`), and it never leaves none: with every endpoint out, all are
//! used. The healthy path costs two relaxed atomic operations per request.

use parking_lot::Mutex;
use std::{
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// The first backoff of an ejected endpoint.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// The longest backoff: a failing endpoint is probed at least this often.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// When endpoints are ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureAccrual {
    /// Consecutive failures that eject an endpoint; 0: never.
    pub failures: u32,
}

impl Default for FailureAccrual {
    fn default() -> Self {
        FailureAccrual { failures: 7 }
    }
}

/// How one request or connection to an endpoint went, as failure accrual sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// An HTTP 5xx, or no connection (refused, reset, timed out, TLS failed).
    Failure,
}

/// What an outcome changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Out of the balancer for this long (after its failures, or a failed probe).
    Ejected(Duration),
    /// Back in the balancer.
    Restored,
}

/// Whether the balancer may send to an endpoint now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    In,
    /// Out, but its backoff is over: this request is its probe (claimed: the next one
    /// waits another backoff, in case this one never reports).
    Probe,
    Out,
}

/// One endpoint's run of failures and, when out, its ejection.
#[derive(Debug, Default)]
pub struct Health {
    consecutive: AtomicU32,
    /// Set while ejected: the fast path reads only this.
    out: AtomicBool,
    ejection: Mutex<Ejection>,
}

#[derive(Debug)]
struct Ejection {
    /// No probe before this.
    until: Instant,
    backoff: Duration,
    /// A probe was sent and has not reported.
    probing: bool,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            until: Instant::now(),
            backoff: MIN_BACKOFF,
            probing: false,
        }
    }
}

impl Health {
    /// Whether the endpoint is out of its balancer.
    pub fn is_out(&self) -> bool {
        self.out.load(Ordering::Relaxed)
    }

    /// Whether a request may go to the endpoint at `now`; claims the probe when one is due.
    pub fn admits(&self, now: Instant) -> Admission {
        if !self.is_out() {
            return Admission::In;
        }
        let mut e = self.ejection.lock();
        if !self.is_out() {
            return Admission::In;
        }
        if now < e.until {
            return Admission::Out;
        }
        e.until = now + e.backoff;
        e.probing = true;
        Admission::Probe
    }

    /// Records how a request or connection went, under `policy`, at `now`.
    pub fn record(&self, outcome: Outcome, policy: FailureAccrual, now: Instant) -> Option<Change> {
        match outcome {
            Outcome::Success => {
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
                if !self.is_out() {
                    return None;
                }
                let mut e = self.ejection.lock();
                if !self.out.swap(false, Ordering::Relaxed) {
                    return None;
                }
                *e = Ejection::default();
                Some(Change::Restored)
            }
            Outcome::Failure => {
                let failures = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                if self.is_out() {
                    // Only a probe's failure says more: requests already in flight when
                    // the endpoint went out tell what is known.
                    let mut e = self.ejection.lock();
                    if !(self.is_out() && e.probing) {
                        return None;
                    }
                    e.probing = false;
                    e.backoff = (e.backoff * 2).min(MAX_BACKOFF);
                    e.until = now + e.backoff;
                    return Some(Change::Ejected(e.backoff));
                }
                if policy.failures == 0 || failures < policy.failures {
                    return None;
                }
                let mut e = self.ejection.lock();
                if self.out.swap(true, Ordering::Relaxed) {
                    return None;
                }
                *e = Ejection {
                    until: now + MIN_BACKOFF,
                    backoff: MIN_BACKOFF,
                    probing: false,
                };
                Some(Change::Ejected(MIN_BACKOFF))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;

    const SEVEN: FailureAccrual = FailureAccrual { failures: 7 };

    #[test]
    fn consecutive_failures_eject_and_a_success_in_between_starts_the_count_again() {
        let h = Health::default();
        let t0 = Instant::now();
        for _ in 0..6 {
            assert_eq!(h.record(Failure, SEVEN, t0), None);
        }
        assert_eq!(h.record(Success, SEVEN, t0), None);
        for _ in 0..6 {
            assert_eq!(h.record(Failure, SEVEN, t0), None);
        }
        assert_eq!(h.admits(t0), Admission::In);
        assert_eq!(
            h.record(Failure, SEVEN, t0),
            Some(Change::Ejected(MIN_BACKOFF))
        );
        assert_eq!(h.admits(t0), Admission::Out);
        // Requests that were in flight fail too: that says nothing new.
        assert_eq!(h.record(Failure, SEVEN, t0), None);
        assert_eq!(h.admits(t0 + Duration::from_millis(999)), Admission::Out);
    }

    #[test]
    fn failed_probes_double_the_backoff_up_to_a_minute_and_a_success_restores() {
        let h = Health::default();
        let mut now = Instant::now();
        for _ in 0..7 {
            h.record(Failure, SEVEN, now);
        }
        let mut backoffs = Vec::new();
        let mut backoff = MIN_BACKOFF;
        for _ in 0..8 {
            now += backoff;
            assert_eq!(h.admits(now), Admission::Probe);
            assert_eq!(h.admits(now), Admission::Out, "one probe at a time");
            match h.record(Failure, SEVEN, now) {
                Some(Change::Ejected(b)) => backoff = b,
                other => panic!("{other:?}"),
            }
            backoffs.push(backoff.as_secs());
        }
        assert_eq!(backoffs, [2, 4, 8, 16, 32, 60, 60, 60]);
        now += backoff;
        assert_eq!(h.admits(now), Admission::Probe);
        assert_eq!(h.record(Success, SEVEN, now), Some(Change::Restored));
        assert_eq!(h.admits(now), Admission::In);
        // Restored means forgiven: the next ejection starts from the first backoff.
        for _ in 0..6 {
            assert_eq!(h.record(Failure, SEVEN, now), None);
        }
        assert_eq!(
            h.record(Failure, SEVEN, now),
            Some(Change::Ejected(MIN_BACKOFF))
        );
    }

    #[test]
    fn a_probe_that_never_reports_does_not_keep_the_endpoint_out_for_good() {
        let h = Health::default();
        let now = Instant::now();
        for _ in 0..7 {
            h.record(Failure, SEVEN, now);
        }
        assert_eq!(h.admits(now + MIN_BACKOFF), Admission::Probe);
        assert_eq!(h.admits(now + MIN_BACKOFF * 2), Admission::Probe);
    }

    #[test]
    fn zero_failures_means_never_ejected() {
        let h = Health::default();
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(h.record(Failure, FailureAccrual { failures: 0 }, now), None);
        }
        assert_eq!(h.admits(now), Admission::In);
    }
}
