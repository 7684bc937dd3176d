//! Graceful shutdown: a [`Signal`] tells every connection's [`Watch`] to finish its
//! in-flight work, then waits until every `Watch` is gone.

use tokio::sync::watch;

/// Starts a drain and learns when it is complete.
#[derive(Debug)]
pub struct Signal(watch::Sender<bool>);

/// Held by every piece of in-flight work; learns when to wind down.
#[derive(Clone, Debug)]
pub struct Watch(watch::Receiver<bool>);

/// A new signal with its first watch.
pub fn channel() -> (Signal, Watch) {
    let (tx, rx) = watch::channel(false);
    (Signal(tx), Watch(rx))
}

impl Signal {
    /// Tells every watch to wind down.
    pub fn start(&self) {
        self.0.send_replace(true);
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once a drain has started.
    pub async fn started(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|draining| *draining).await;
    }

    /// Resolves when every watch has been dropped.
    pub async fn drained(&self) {
        self.0.closed().await
    }
}

impl Watch {
    /// Resolves once a drain has started (at once if it already has).
    pub async fn signaled(&mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::Duration,
    };

    #[tokio::test]
    async fn drain_waits_for_every_watch() {
        let (signal, watch) = channel();
        let mut w2 = watch.clone();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        tokio::spawn(async move {
            w2.signaled().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.store(true, Ordering::SeqCst);
            drop(w2);
        });
        drop(watch);
        assert!(!signal.is_draining());
        signal.start();
        signal.started().await;
        signal.drained().await;
        assert!(
            finished.load(Ordering::SeqCst),
            "drained before the last watch finished its work"
        );
    }
}
