//! The vote bot: a load generator that uses the web front end like a visitor would,
//! reading the emoji list now and then and voting for a random emoji at a steady rate.
//! Failures are logged and never stop it.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::BotConfig;

/// One request in this many reads the emoji list; the others vote.
const LIST_EVERY: u64 = 10;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between attempts while the web is not answering yet.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why one request of the bot failed.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// The URL could not be built.
    #[error("bad URL")]
    Uri(#[from] http::uri::InvalidUri),
    /// No connection, or the connection broke.
    #[error("request failed")]
    Request(#[from] hyper_util::client::legacy::Error),
    /// The response body could not be read.
    #[error("reading the response failed")]
    Body(#[from] hyper::Error),
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("no answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
    /// The web answered with an error status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: StatusCode,
        /// The body, usually a JSON error.
        body: String,
    },
    /// The emoji list was not the expected JSON.
    #[error("bad emoji list")]
    Json(#[from] serde_json::Error),
}

#[derive(Debug, Deserialize)]
struct ListedEmoji {
    shortcode: String,
}

/// An HTTP/1.1 client of the web front end, with keep-alive connections.
#[derive(Debug, Clone)]
pub struct WebClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
}

impl WebClient {
    /// A client for the web at `host:port`.
    pub fn new(web_addr: &str) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{web_addr}"),
        }
    }

    /// GETs `path_and_query`; a non-2xx status is an error.
    pub async fn get(&self, path_and_query: &str) -> Result<Bytes, BotError> {
        let uri: Uri = format!("{}{path_and_query}", self.base).parse()?;
        let exchange = async {
            let response = self.client.get(uri).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                let body = String::from_utf8_lossy(&body).into_owned();
                return Err(BotError::Status { status, body });
            }
            Ok(body)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| BotError::Timeout)?
    }

    /// The shortcodes of every emoji, from `GET /api/list`.
    pub async fn list(&self) -> Result<Vec<String>, BotError> {
        let body = self.get("/api/list").await?;
        let list: Vec<ListedEmoji> = serde_json::from_slice(&body)?;
        Ok(list.into_iter().map(|e| e.shortcode).collect())
    }

    /// Votes with `GET /api/vote?choice=<shortcode>`.
    pub async fn vote(&self, shortcode: &str) -> Result<(), BotError> {
        let path = format!("/api/vote?choice={}", percent_encode(shortcode));
        self.get(&path).await.map(drop)
    }
}

/// Sends `config.rps` requests per second to the web until `shutdown` resolves.
pub async fn run(config: BotConfig, shutdown: impl Future<Output = ()>) {
    let web = WebClient::new(&config.web_addr);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rps));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let (mut shortcodes, mut backoff) = (Vec::new(), Duration::ZERO);
    let (mut sent, mut failed) = (0u64, 0u64);
    tracing::info!(web = %config.web_addr, rps = config.rps, "voting");
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let result = if shortcodes.is_empty() || sent % LIST_EVERY == 0 {
            web.list().await.map(|list| shortcodes = list)
        } else {
            web.vote(&shortcodes[random_below(shortcodes.len())]).await
        };
        sent += 1;
        match result {
            Ok(()) => backoff = Duration::ZERO,
            Err(err) if shortcodes.is_empty() => {
                // The web is not up yet: wait a little longer each time.
                backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                let err = anyhow::Error::new(err);
                tracing::info!("web not ready ({err:#}); retrying in {backoff:?}");
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(backoff) => {}
                }
            }
            Err(err) => {
                failed += 1;
                tracing::warn!("{:#}", anyhow::Error::new(err));
            }
        }
        if sent % 100 == 0 {
            tracing::info!(sent, failed, "progress");
        }
    }
}

/// A random number in `0..n` (n > 0), from the standard library's randomly keyed hasher.
fn random_below(n: usize) -> usize {
    (RandomState::new().hash_one(0u8) % n as u64) as usize
}

/// Escapes everything but unreserved characters and `:` for use in a query value.
fn percent_encode(s: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-_.~:".contains(&b);
    s.bytes()
        .map(|b| match keep(b) {
            true => (b as char).to_string(),
            false => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcodes_are_escaped_for_the_query() {
        assert_eq!(percent_encode(":joy:"), ":joy:");
        assert_eq!(percent_encode(":+1:"), ":%2B1:");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn random_picks_stay_in_range_and_vary() {
        let picks: Vec<usize> = (0..200).map(|_| random_below(30)).collect();
        assert!(picks.iter().all(|&i| i < 30));
        let mut distinct = picks.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 10, "{distinct:?}");
    }
}
