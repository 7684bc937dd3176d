//! The targets a side follows on the control plane (a Destination or a GetProfile stream
//! each), by name: bounded, because the names come from what the application or a client
//! sends (their `Host` headers, say) and each followed one holds a stream open on the
//! control plane, and forgotten once unused for a while, which drops what they hold and so
//! closes their streams.

use hashbrown::HashMap;
use parking_lot::Mutex;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// Targets unused for this long are forgotten, and their streams closed.
const IDLE: Duration = Duration::from_secs(300);

/// The most targets a side follows at once (per kind of stream); a new one past it is
/// not followed, and its caller does without (the original destination, no routes).
pub const MAX_TARGETS: usize = 1000;

struct Entry<V> {
    value: V,
    last_used: Instant,
}

/// What is followed of each target: a `V` per name.
pub struct FollowedTargets<V> {
    targets: Mutex<HashMap<String, Entry<V>>>,
}

impl<V: Send + 'static> FollowedTargets<V> {
    /// An empty set, swept for idle targets while it lives.
    pub fn new() -> Arc<FollowedTargets<V>> {
        let set = Arc::new(FollowedTargets {
            targets: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&set);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE / 5).await;
                let Some(set) = weak.upgrade() else { return };
                set.targets
                    .lock()
                    .retain(|_, e| e.last_used.elapsed() < IDLE);
            }
        });
        set
    }

    /// Marks `target` used and returns `f` of its value, following it first (`start`)
    /// when it is new; `None` when it is new and [`MAX_TARGETS`] are followed already.
    pub fn use_or_start<R>(
        &self,
        target: &str,
        start: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        let mut targets = self.targets.lock();
        let now = Instant::now();
        // A followed target (every request but a target's first) costs one lookup.
        if let Some(entry) = targets.get_mut(target) {
            entry.last_used = now;
            return Some(f(&mut entry.value));
        }
        if targets.len() >= MAX_TARGETS {
            tracing::debug!(target, "following as many targets as allowed");
            return None;
        }
        let entry = targets.entry_ref(target).or_insert(Entry {
            value: start(),
            last_used: now,
        });
        Some(f(&mut entry.value))
    }

    /// `f` of a followed target's value; `None` when it is not followed.
    pub fn get<R>(&self, target: &str, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        self.targets.lock().get_mut(target).map(|e| f(&mut e.value))
    }

    /// How many targets are followed.
    pub fn len(&self) -> usize {
        self.targets.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.targets.lock().is_empty()
    }

    /// Whether `target` is followed.
    pub fn contains(&self, target: &str) -> bool {
        self.targets.lock().contains_key(target)
    }
}

/// Waits, at most `wait`, until `rx` holds more than `pending` says: a first answer, or
/// the news that none is coming.
pub async fn first_answer<T>(
    rx: &mut watch::Receiver<T>,
    wait: Duration,
    pending: impl Fn(&T) -> bool,
) {
    if pending(&rx.borrow()) {
        let _ = tokio::time::timeout(wait, rx.wait_for(|v| !pending(v))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_so_many_targets_are_followed_and_each_is_started_once() {
        let set = FollowedTargets::<u32>::new();
        let mut started = 0;
        for i in 0..MAX_TARGETS + 50 {
            let got = set.use_or_start(
                &format!("name-{i}:80"),
                || {
                    started += 1;
                    7
                },
                |v| *v,
            );
            assert_eq!(got.is_some(), i < MAX_TARGETS);
        }
        assert_eq!((set.len(), started), (MAX_TARGETS, MAX_TARGETS));
        // A followed one is still served, and not started again.
        assert_eq!(set.use_or_start("name-0:80", || 8, |v| *v), Some(7));
        assert_eq!(set.get(&format!("name-{MAX_TARGETS}:80"), |v| *v), None);
    }
}
