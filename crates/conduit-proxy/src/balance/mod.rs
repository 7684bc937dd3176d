//! Load balancing across a service's endpoints: the power of two choices over peak-EWMA
//! latency. Each pick samples two endpoints at random and takes the one whose cost (its
//! latency estimate times its requests in flight, plus one) is lower. The estimate jumps
//! up to any slower observation at once (peak) and decays back toward faster ones over
//! about ten seconds, so a slowing endpoint is avoided quickly and forgiven slowly; it
//! also decays while idle, so an endpoint is tried again. A failure (an HTTP 5xx, a failed
//! connect) counts as a response [`FAILURE_PENALTY`] times as slow as the estimate, never
//! as its own fast latency: failures in a row compound, so an endpoint that fails fast
//! does not look cheap, while one error among many is soon forgotten (the penalty alone
//! would space an always-failing endpoint's failures out, not end them). Failures also
//! accrue toward ejection ([`accrual`]): ejected endpoints are not picked, unless every
//! endpoint is out. [`endpoints`] keeps each target's endpoint set, from discovery, with
//! its balancer. Knows nothing about HTTP.

pub mod accrual;
pub mod endpoints;
pub mod random;

use crate::transport::connect::Endpoint;
use accrual::{Admission, Change, FailureAccrual, Health, Outcome};
use parking_lot::Mutex;
use random::Random;
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// How fast the estimate forgets: the time constant of its exponential decay.
const DECAY: Duration = Duration::from_secs(10);
/// The estimate of an endpoint nothing is known about yet.
const DEFAULT_RTT: Duration = Duration::from_millis(1);
/// A failure counts as a response this many times slower than the endpoint's estimate:
/// enough that failures in a row make it the costlier, little enough that an endpoint
/// failing everything is still tried (and so ejected) soon.
pub const FAILURE_PENALTY: f64 = 1.25;
/// The most a failure's penalty makes an endpoint's estimate.
const MAX_PENALTY: Duration = Duration::from_secs(10);

/// Hears of endpoints ejected and restored (to count and log them).
pub type OnChange = Arc<dyn Fn(&Endpoint, Change) + Send + Sync>;

/// How a balancer treats failing endpoints, and who hears of it.
#[derive(Clone, Default)]
pub struct Accrual {
    pub policy: FailureAccrual,
    pub on_change: Option<OnChange>,
}

impl std::fmt::Debug for Accrual {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.policy.fmt(f)
    }
}

/// One endpoint's load.
#[derive(Debug)]
pub struct EndpointLoad {
    pub endpoint: Endpoint,
    pending: AtomicUsize,
    estimate: Mutex<(f64, Instant)>,
    health: Health,
    accrual: Accrual,
}

impl EndpointLoad {
    /// An endpoint with no history, under the default failure accrual.
    pub fn new(endpoint: Endpoint) -> Arc<EndpointLoad> {
        EndpointLoad::with_accrual(endpoint, Accrual::default())
    }

    /// An endpoint with no history, under `accrual`.
    pub fn with_accrual(endpoint: Endpoint, accrual: Accrual) -> Arc<EndpointLoad> {
        Arc::new(EndpointLoad {
            endpoint,
            pending: AtomicUsize::new(0),
            estimate: Mutex::new((DEFAULT_RTT.as_secs_f64(), Instant::now())),
            health: Health::default(),
            accrual,
        })
    }

    /// Records how a request or connection here went: a failure counts as a response
    /// [`FAILURE_PENALTY`] times as slow as the estimate, and accrues toward ejection. A
    /// restored endpoint starts afresh, its penalties forgiven.
    pub fn record(&self, outcome: Outcome) {
        let now = Instant::now();
        if outcome == Outcome::Failure {
            let penalty = (self.rtt(now) * FAILURE_PENALTY).min(MAX_PENALTY.as_secs_f64());
            self.observe(Duration::from_secs_f64(penalty), now);
        }
        if let Some(change) = self.health.record(outcome, self.accrual.policy, now) {
            if change == Change::Restored {
                *self.estimate() = (DEFAULT_RTT.as_secs_f64(), now);
            }
            if let Some(on_change) = &self.accrual.on_change {
                on_change(&self.endpoint, change);
            }
        }
    }

    /// Whether the endpoint is out of its balancer.
    pub fn is_ejected(&self) -> bool {
        self.health.is_out()
    }

    fn estimate(&self) -> parking_lot::MutexGuard<'_, (f64, Instant)> {
        self.estimate.lock()
    }

    /// The latency estimate now, in seconds, decayed for the time since the last sample.
    pub fn rtt(&self, now: Instant) -> f64 {
        let (rtt, at) = *self.estimate();
        rtt * decay(now.saturating_duration_since(at))
    }

    /// What a new request here is expected to cost.
    pub fn cost(&self, now: Instant) -> f64 {
        self.rtt(now) * (self.pending.load(Ordering::Relaxed) + 1) as f64
    }

    /// Records one observed latency.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let mut e = self.estimate();
        let sample = rtt.as_secs_f64();
        let current = e.0 * decay(now.saturating_duration_since(e.1));
        e.0 = if sample > current {
            sample
        } else {
            let w = decay(now.saturating_duration_since(e.1));
            current * w + sample * (1.0 - w)
        };
        e.1 = now;
    }

    /// Counts a request in flight until the guard is dropped; `complete` records its latency.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.pending.fetch_add(1, Ordering::Relaxed);
        InFlight {
            load: self.clone(),
            started: Instant::now(),
        }
    }

    /// Requests in flight.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

/// What became of a sampled endpoint.
enum Sampled {
    /// Compare this one (the sample, or what replaced it).
    Use(usize),
    /// The sample's probe is due: it is the pick.
    Probe(usize),
}

/// The sample `sampled` if it is in, its probe if one is due, else the next endpoint that
/// is in (not `other`, the other sample), else `other`.
fn admitted(eps: &[Arc<EndpointLoad>], sampled: usize, other: usize, now: Instant) -> Sampled {
    match eps[sampled].health.admits(now) {
        Admission::In => Sampled::Use(sampled),
        Admission::Probe => Sampled::Probe(sampled),
        Admission::Out => Sampled::Use(next_in(eps, sampled, other).unwrap_or(other)),
    }
}

/// The first endpoint after `from` (wrapping) that is in and is not `other`.
fn next_in(eps: &[Arc<EndpointLoad>], from: usize, other: usize) -> Option<usize> {
    (1..eps.len())
        .map(|i| (from + i) % eps.len())
        .find(|&i| i != other && !eps[i].is_ejected())
}

fn decay(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

/// A request (or connection) in flight to an endpoint.
pub struct InFlight {
    load: Arc<EndpointLoad>,
    started: Instant,
}

impl InFlight {
    /// The response head arrived: record the latency.
    pub fn complete(&self) {
        let now = Instant::now();
        self.load.observe(now.duration_since(self.started), now);
    }

    /// Records how it went (see [`EndpointLoad::record`]).
    pub fn record(&self, outcome: Outcome) {
        self.load.record(outcome);
    }

    /// The endpoint it is in flight to.
    pub fn addr(&self) -> SocketAddr {
        self.load.endpoint.addr
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of one service, and the choice between them.
#[derive(Debug, Default)]
pub struct Balancer {
    endpoints: Mutex<Vec<Arc<EndpointLoad>>>,
    random: Random,
    accrual: Accrual,
}

impl Balancer {
    /// A balancer without endpoints yet, treating failing ones as `accrual` says.
    pub fn new(accrual: Accrual) -> Balancer {
        Balancer {
            accrual,
            ..Balancer::default()
        }
    }

    /// Replaces the endpoint set, keeping what is known of endpoints that stay. Removed
    /// endpoints are no longer picked; requests in flight to them finish.
    pub fn update(&self, endpoints: &[Endpoint]) {
        let mut eps = self.endpoints.lock();
        let kept: Vec<Arc<EndpointLoad>> = endpoints
            .iter()
            .map(|a| {
                eps.iter()
                    .find(|e| e.endpoint == *a)
                    .cloned()
                    .unwrap_or_else(|| EndpointLoad::with_accrual(a.clone(), self.accrual.clone()))
            })
            .collect();
        *eps = kept;
    }

    /// The endpoint for the next request, or `None` without endpoints. An ejected
    /// endpoint sampled is replaced by the next one that is in, unless its probe is due
    /// (then it is the pick); with every endpoint out, all are used.
    pub fn pick(&self) -> Option<Arc<EndpointLoad>> {
        self.pick_avoiding(None)
    }

    /// [`pick`](Self::pick), among the endpoints other than `avoid` when there are any
    /// (a retry goes elsewhere than the attempt that failed).
    pub fn pick_avoiding(&self, avoid: Option<SocketAddr>) -> Option<Arc<EndpointLoad>> {
        let eps = self.endpoints.lock();
        match avoid {
            Some(addr) if eps.len() > 1 && eps.iter().any(|e| e.endpoint.addr == addr) => {
                let others: Vec<_> = eps
                    .iter()
                    .filter(|e| e.endpoint.addr != addr)
                    .cloned()
                    .collect();
                drop(eps);
                self.choose(&others)
            }
            _ => self.choose(&eps),
        }
    }

    fn choose(&self, eps: &[Arc<EndpointLoad>]) -> Option<Arc<EndpointLoad>> {
        match eps.len() {
            0 => None,
            1 => Some(eps[0].clone()),
            n => {
                let r = self.random.next_u64();
                let mut a = (r % n as u64) as usize;
                let mut b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
                let now = Instant::now();
                match admitted(eps, a, b, now) {
                    Sampled::Probe(i) => return Some(eps[i].clone()),
                    Sampled::Use(i) => a = i,
                }
                match admitted(eps, b, a, now) {
                    Sampled::Probe(i) => return Some(eps[i].clone()),
                    Sampled::Use(i) => b = i,
                }
                let (ea, eb) = (&eps[a], &eps[b]);
                let (ca, cb) = (ea.cost(now), eb.cost(now));
                // Costs within a thousandth are a tie (estimates made microseconds apart
                // differ by a hair of decay); the sampled order already is random.
                Some(if ca <= cb * 1.001 {
                    ea.clone()
                } else {
                    eb.clone()
                })
            }
        }
    }

    /// Whether it has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.lock().is_empty()
    }

    /// The endpoints' addresses (for tests and the fuzz targets).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.endpoints
            .lock()
            .iter()
            .map(|e| e.endpoint.addr)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, n], 8080))
    }

    fn ep(n: u8) -> Endpoint {
        Endpoint::plain(addr(n))
    }

    #[test]
    fn peaks_at_once_and_decays_slowly() {
        let e = EndpointLoad::new(ep(1));
        let t0 = Instant::now();
        e.observe(Duration::from_millis(100), t0);
        assert!(
            (e.rtt(t0) - 0.1).abs() < 1e-9,
            "a slower sample is taken at once"
        );
        e.observe(Duration::from_millis(1), t0 + Duration::from_millis(100));
        let after = e.rtt(t0 + Duration::from_millis(100));
        assert!(after > 0.09, "one fast sample barely moves a peak: {after}");
        let much_later = e.rtt(t0 + Duration::from_secs(60));
        assert!(
            much_later < 0.001,
            "idle endpoints decay toward zero: {much_later}"
        );
    }

    #[test]
    fn prefers_the_fast_and_the_idle() {
        let b = Balancer::default();
        b.update(&[ep(1), ep(2)]);
        let eps = b.endpoints.lock().clone();
        eps[0].observe(Duration::from_millis(50), Instant::now());
        eps[1].observe(Duration::from_millis(1), Instant::now());
        // With two endpoints both are always sampled: the faster one always wins.
        for _ in 0..100 {
            assert_eq!(b.pick().unwrap().endpoint.addr, addr(2));
        }
        // Load counts too: enough requests in flight make the fast one the costlier.
        let _held: Vec<InFlight> = (0..60).map(|_| eps[1].start()).collect();
        assert_eq!(b.pick().unwrap().endpoint.addr, addr(1));
    }

    #[test]
    fn spreads_across_equal_endpoints_and_forgets_removed_ones() {
        let b = Balancer::default();
        b.update(&[ep(1), ep(2), ep(3)]);
        let mut seen = std::collections::HashMap::new();
        for _ in 0..3000 {
            *seen.entry(b.pick().unwrap().endpoint.addr).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|n| *n > 600), "{seen:?}");
        let survivor = b.endpoints.lock()[1].clone();
        survivor.observe(Duration::from_millis(7), Instant::now());
        b.update(&[ep(2)]);
        assert_eq!(b.addrs(), [addr(2)]);
        let kept = b.pick().unwrap();
        assert!(
            Arc::ptr_eq(&kept, &survivor),
            "what is known of a kept endpoint stays"
        );
        b.update(&[]);
        assert!(b.pick().is_none());
    }

    /// A balancer ejecting after `failures` in a row, telling nobody.
    fn ejecting_after(failures: u32) -> Balancer {
        Balancer::new(Accrual {
            policy: FailureAccrual { failures },
            on_change: None,
        })
    }

    #[test]
    fn an_endpoint_that_fails_fast_is_not_preferred_for_it() {
        let b = ejecting_after(0);
        b.update(&[ep(1), ep(2)]);
        let eps = b.endpoints.lock().clone();
        eps[0].observe(Duration::from_millis(5), Instant::now());
        // The second answers errors in a tenth of the first's time: each one makes its
        // estimate a quarter higher, so enough in a row make it the costlier.
        eps[1].observe(Duration::from_micros(500), Instant::now());
        let before = eps[1].rtt(Instant::now());
        eps[1].record(Outcome::Failure);
        let once = eps[1].rtt(Instant::now());
        assert!(
            (once / before - FAILURE_PENALTY).abs() < 0.01,
            "{before} then {once}"
        );
        for _ in 0..10 {
            eps[1].record(Outcome::Failure);
        }
        for _ in 0..100 {
            assert_eq!(b.pick().unwrap().endpoint.addr, addr(1));
        }
    }

    #[test]
    fn ejected_endpoints_are_not_picked_until_their_probe_and_never_all_at_once() {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let heard = changes.clone();
        let b = Balancer::new(Accrual {
            policy: FailureAccrual { failures: 3 },
            on_change: Some(Arc::new(move |e: &Endpoint, c| {
                heard.lock().push((e.addr, c))
            })),
        });
        b.update(&[ep(1), ep(2), ep(3)]);
        let eps = b.endpoints.lock().clone();
        for _ in 0..3 {
            eps[0].record(Outcome::Failure);
        }
        assert_eq!(
            *changes.lock(),
            [(addr(1), Change::Ejected(accrual::MIN_BACKOFF))]
        );
        // Its penalty alone would not keep it out once the others are busy: make them so.
        let _busy: Vec<InFlight> = (0..2000)
            .flat_map(|_| [eps[1].start(), eps[2].start()])
            .collect();
        for _ in 0..300 {
            assert_ne!(b.pick().unwrap().endpoint.addr, addr(1));
        }
        // Every endpoint out: all are used.
        for e in &eps[1..] {
            for _ in 0..3 {
                e.record(Outcome::Failure);
            }
        }
        let picked: std::collections::HashSet<_> =
            (0..300).map(|_| b.pick().unwrap().endpoint.addr).collect();
        assert!(!picked.is_empty());
        assert!(eps.iter().all(|e| e.is_ejected()));
    }

    #[test]
    fn a_due_probe_is_the_pick_and_its_success_restores() {
        let b = ejecting_after(1);
        b.update(&[ep(1), ep(2)]);
        let eps = b.endpoints.lock().clone();
        eps[0].record(Outcome::Failure);
        assert!(eps[0].is_ejected());
        // Pretend the backoff is over.
        eps[0].health.admits(Instant::now() + accrual::MIN_BACKOFF);
        // That claimed the probe due then; the next one is due a backoff later.
        assert_eq!(
            eps[0]
                .health
                .admits(Instant::now() + accrual::MIN_BACKOFF * 3),
            Admission::Probe
        );
        eps[0].record(Outcome::Success);
        assert!(!eps[0].is_ejected());
        // The other endpoint is the slower one, so that the pick does not hang on how far
        // two fresh estimates decayed apart while the test ran (a busy machine made it flaky).
        eps[1].observe(Duration::from_millis(100), Instant::now());
        let picked: std::collections::HashSet<_> =
            (0..300).map(|_| b.pick().unwrap().endpoint.addr).collect();
        assert!(picked.contains(&addr(1)), "{picked:?}");
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let e = EndpointLoad::new(ep(1));
        let g = e.start();
        assert_eq!(e.pending(), 1);
        g.complete();
        drop(g);
        assert_eq!(e.pending(), 0);
    }
}
