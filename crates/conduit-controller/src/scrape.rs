//! Scraping: every interval, fetch `/metrics` from every meshed pod's proxy (on its
//! admin port) and add the reduced scrape to the store. A pod that does not answer
//! simply has no new sample; it is logged at debug level, never fatal.

use crate::{
    discovery::{PodInfo, Workloads},
    prom,
    store::{self, PodScrape, Store},
};
use conduit_api::admin;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tracing::debug;

/// Scrapes every `interval` until the workloads channel closes.
pub fn spawn(
    workloads: watch::Receiver<Arc<Workloads>>,
    store: Arc<Mutex<Store>>,
    interval: Duration,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            if workloads.has_changed().is_err() {
                return;
            }
            let current = workloads.borrow().clone();
            let mut scrapes = tokio::task::JoinSet::new();
            for pod in current.pods.iter().filter(|p| p.meshed).cloned() {
                let timeout = interval.min(Duration::from_secs(5));
                scrapes.spawn(async move {
                    let result =
                        tokio::time::timeout(timeout, fetch(&pod, admin::METRICS_PATH)).await;
                    (pod, result)
                });
            }
            while let Some(Ok((pod, result))) = scrapes.join_next().await {
                match result {
                    Ok(Ok(text)) => {
                        let scrape = PodScrape::from_samples(
                            Instant::now(),
                            &prom::parse(&text, store::wanted),
                        );
                        store.lock().record(&pod.namespace, &pod.name, scrape);
                    }
                    Ok(Err(error)) => debug!(pod = %pod.name, %error, "scrape failed"),
                    Err(_) => debug!(pod = %pod.name, "scrape timed out"),
                }
            }
            store
                .lock()
                .retain_pods(|ns, name| current.pod(ns, name).is_some());
        }
    });
}

/// GET `path` from a pod's proxy admin server.
pub async fn fetch(pod: &PodInfo, path: &str) -> Result<String, String> {
    let addr = pod.admin_addr();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let rsp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if !rsp.status().is_success() {
        return Err(format!("{addr} answered {}", rsp.status()));
    }
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("{addr} sent metrics that are not UTF-8"))
}
