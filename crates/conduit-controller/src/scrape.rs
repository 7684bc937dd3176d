//! Scraping: every interval, fetch `/metrics` from every meshed pod's proxy (on its
//! admin port) and add the reduced scrape to the store. A pod that does not answer
//! simply has no new sample; it is logged at debug level, never fatal. What a pod sends is
//! not trusted to be small: a body past [`MAX_BODY_BYTES`] fails its scrape, and at most
//! [`MAX_SAMPLES`] samples are kept from one, so a pod serving gigabytes costs the
//! controller a bounded read and nothing more.

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

/// The most a pod's answer may hold; a proxy's `/metrics` is tens of kilobytes.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The most samples kept from one scrape.
pub const MAX_SAMPLES: usize = 20_000;

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
                        let mut samples = prom::parse(&text, store::wanted);
                        samples.truncate(MAX_SAMPLES);
                        let scrape = PodScrape::from_samples(Instant::now(), &samples);
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

/// GET `path` from a pod's proxy admin server: at most [`MAX_BODY_BYTES`] of it.
pub async fn fetch(pod: &PodInfo, path: &str) -> Result<String, String> {
    fetch_from(pod.admin_addr(), path).await
}

/// GET `path` from the admin server at `addr`: at most [`MAX_BODY_BYTES`] of it.
async fn fetch_from(addr: std::net::SocketAddr, path: &str) -> Result<String, String> {
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
    let body = http_body_util::Limited::new(rsp.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading {path} from {addr}: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("{addr} sent metrics that are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An admin server that answers with a body of `len` bytes, written as fast as the
    /// reader takes them; says how many it managed to write.
    async fn server(len: usize) -> (std::net::SocketAddr, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = tcp.read(&mut head).await;
            let header = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
            if tcp.write_all(header.as_bytes()).await.is_err() {
                return 0;
            }
            let chunk = "request_total{direction=\"inbound\"} 1\n".repeat(1024);
            let mut written = 0;
            while written < len {
                let n = chunk.len().min(len - written);
                if tcp.write_all(&chunk.as_bytes()[..n]).await.is_err() {
                    break;
                }
                written += n;
            }
            written
        });
        (addr, task)
    }

    #[tokio::test]
    async fn a_pod_serving_more_than_the_limit_fails_its_scrape_after_reading_the_limit() {
        let (addr, _) = server(64 * 1024).await;
        let small = fetch_from(addr, admin::METRICS_PATH).await.unwrap();
        assert_eq!(small.len(), 64 * 1024);

        let huge = 1024 * 1024 * 1024;
        let (addr, written) = server(huge).await;
        let err = fetch_from(addr, admin::METRICS_PATH).await.unwrap_err();
        assert!(err.contains("length limit exceeded"), "{err}");
        let written = written.await.unwrap();
        assert!(
            written < MAX_BODY_BYTES + 16 * 1024 * 1024,
            "the controller stopped reading near the limit: {written} bytes written"
        );
    }
}
