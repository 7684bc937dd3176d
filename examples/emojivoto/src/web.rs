//! The web front end: a small HTTP/1.1 JSON API over the emoji and voting services.
//! Each API request becomes one or two gRPC calls; [`WebError`] is the one place that
//! maps failures to HTTP statuses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

use crate::config::WebConfig;
use crate::proto::emoji_service_client::EmojiServiceClient;
use crate::proto::voting_service_client::VotingServiceClient;
use crate::proto::{FindByShortcodeRequest, ListAllEmojiRequest, ResultsRequest, VoteRequest};

const INDEX_HTML: &str = include_str!("index.html");

/// Why a request failed; [`WebError::status`] decides the HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// `/api/vote` without a usable `choice` parameter.
    #[error("missing or malformed query parameter: expected choice=:shortcode:")]
    MissingChoice,
    /// The emoji service does not know the shortcode.
    #[error("no emoji {0:?}")]
    UnknownEmoji(String),
    /// A gRPC call failed.
    #[error("{call} failed: {} ({})", .status.message(), .status.code())]
    Backend {
        /// The gRPC method, like `VotingService/Vote`.
        call: &'static str,
        /// What the service answered.
        status: tonic::Status,
    },
    /// No page at this path.
    #[error("no such page")]
    NoSuchPage,
    /// Only GET is served.
    #[error("only GET is allowed")]
    MethodNotAllowed,
}

impl WebError {
    /// The HTTP status this failure is reported with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingChoice => StatusCode::BAD_REQUEST,
            Self::UnknownEmoji(_) | Self::NoSuchPage => StatusCode::NOT_FOUND,
            Self::Backend { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn backend(call: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Backend { call, status }
    }
}

/// An emoji as the API shows it.
#[derive(Debug, Serialize)]
struct EmojiJson {
    unicode: String,
    shortcode: String,
}

/// One leaderboard row.
#[derive(Debug, Serialize)]
struct LeaderJson {
    shortcode: String,
    unicode: String,
    votes: u64,
}

/// gRPC clients for the two services behind the web.
#[derive(Debug, Clone)]
pub struct Backends {
    emoji: EmojiServiceClient<Channel>,
    voting: VotingServiceClient<Channel>,
}

impl Backends {
    /// Clients for the configured addresses; they connect on first use, over h2c.
    pub fn connect_lazy(config: &WebConfig) -> Result<Self, tonic::transport::Error> {
        let channel = |addr: &str| {
            Ok::<_, tonic::transport::Error>(
                Endpoint::from_shared(format!("http://{addr}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(5))
                    .connect_lazy(),
            )
        };
        Ok(Self {
            emoji: EmojiServiceClient::new(channel(&config.emoji_addr)?),
            voting: VotingServiceClient::new(channel(&config.voting_addr)?),
        })
    }

    /// Answers one HTTP request; never fails, errors become error responses.
    pub async fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET {
            return error_response(&WebError::MethodNotAllowed);
        }
        let uri = request.uri();
        let result = match uri.path() {
            "/" => Ok(with_type(
                StatusCode::OK,
                "text/html; charset=utf-8",
                INDEX_HTML,
            )),
            "/healthz" => Ok(with_type(StatusCode::OK, "text/plain", "ok\n")),
            "/api/list" => self.list().await,
            "/api/vote" => self.vote(uri.query()).await,
            "/api/leaderboard" => self.leaderboard().await,
            _ => Err(WebError::NoSuchPage),
        };
        result.unwrap_or_else(|err| {
            tracing::warn!(path = uri.path(), "{err}");
            error_response(&err)
        })
    }

    async fn list(&self) -> Result<Response<Full<Bytes>>, WebError> {
        let list = self.emoji.clone().list_all(ListAllEmojiRequest {}).await;
        let list = list.map_err(WebError::backend("EmojiService/ListAll"))?;
        let emojis: Vec<EmojiJson> = (list.into_inner().list.into_iter())
            .map(|e| EmojiJson {
                unicode: e.unicode,
                shortcode: e.shortcode,
            })
            .collect();
        Ok(json(StatusCode::OK, &emojis))
    }

    async fn vote(&self, query: Option<&str>) -> Result<Response<Full<Bytes>>, WebError> {
        let shortcode = choice(query).ok_or(WebError::MissingChoice)?;
        let request = FindByShortcodeRequest {
            shortcode: shortcode.clone(),
        };
        let emoji = match self.emoji.clone().find_by_shortcode(request).await {
            Ok(found) => found.into_inner().emoji,
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => return Err(WebError::backend("EmojiService/FindByShortcode")(status)),
        };
        let emoji = emoji.ok_or(WebError::UnknownEmoji(shortcode))?;
        let request = VoteRequest {
            shortcode: emoji.shortcode.clone(),
        };
        let voted = self.voting.clone().vote(request).await;
        voted.map_err(WebError::backend("VotingService/Vote"))?;
        let body = EmojiJson {
            unicode: emoji.unicode,
            shortcode: emoji.shortcode,
        };
        Ok(json(StatusCode::OK, &body))
    }

    async fn leaderboard(&self) -> Result<Response<Full<Bytes>>, WebError> {
        let (mut emoji, mut voting) = (self.emoji.clone(), self.voting.clone());
        let (list, results) = tokio::join!(
            emoji.list_all(ListAllEmojiRequest {}),
            voting.results(ResultsRequest {})
        );
        let list = list.map_err(WebError::backend("EmojiService/ListAll"))?;
        let results = results.map_err(WebError::backend("VotingService/Results"))?;
        let unicode: HashMap<String, String> = (list.into_inner().list.into_iter())
            .map(|e| (e.shortcode, e.unicode))
            .collect();
        let rows: Vec<LeaderJson> = (results.into_inner().results.into_iter())
            .map(|r| LeaderJson {
                unicode: unicode.get(&r.shortcode).cloned().unwrap_or_default(),
                shortcode: r.shortcode,
                votes: r.votes,
            })
            .collect();
        Ok(json(StatusCode::OK, &rows))
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, backends: Backends, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // As for the gRPC servers: no waiting on delayed ACKs between small writes.
        let _ = stream.set_nodelay(true);
        let backends = backends.clone();
        let service = hyper::service::service_fn(move |request| {
            let backends = backends.clone();
            async move { Ok::<_, Infallible>(backends.respond(request).await) }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                tracing::debug!(%peer, %err, "connection failed");
            }
        });
    }
}

/// The shortcode in a query string's `choice` parameter, percent-decoded; None if absent,
/// empty or malformed.
pub fn choice(query: Option<&str>) -> Option<String> {
    let value = (query?.split('&')).find_map(|pair| pair.strip_prefix("choice="))?;
    percent_decode(value).filter(|v| !v.is_empty())
}

/// Decodes `%XX` escapes (RFC 3986); None on a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let value = HeaderValue::from_static(content_type);
    response.headers_mut().insert(header::CONTENT_TYPE, value);
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, "application/json", body),
        Err(err) => with_type(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            err.to_string(),
        ),
    }
}

fn error_response(err: &WebError) -> Response<Full<Bytes>> {
    json(
        err.status(),
        &serde_json::json!({ "error": err.to_string() }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_is_read_and_decoded() {
        assert_eq!(choice(Some("choice=:joy:")).as_deref(), Some(":joy:"));
        assert_eq!(
            choice(Some("x=1&choice=%3Ajoy%3A")).as_deref(),
            Some(":joy:")
        );
        assert_eq!(choice(Some("choice=%F0%9F%8D%A9")).as_deref(), Some("🍩"));
    }

    #[test]
    fn missing_or_bad_choice_is_none() {
        for query in [None, Some(""), Some("choice="), Some("pick=:joy:")] {
            assert_eq!(choice(query), None, "{query:?}");
        }
        for bad in ["choice=%3", "choice=%zz", "choice=%FF"] {
            assert_eq!(choice(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn errors_map_to_statuses() {
        let failed = WebError::backend("VotingService/Vote")(tonic::Status::unknown("ERROR"));
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            failed.to_string(),
            "VotingService/Vote failed: ERROR (Unknown error)"
        );
        assert_eq!(WebError::MissingChoice.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            WebError::UnknownEmoji(":x:".into()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
