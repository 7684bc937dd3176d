//! Refuses requests whose headers exceed `CONDUIT_PROXY_MAX_HEADER_BYTES`, measured as
//! HTTP/2 measures a header list (RFC 9113 §6.5.2: name + value + 32 per field). This is
//! the HTTP/2 counterpart of the HTTP/1 head check, and answers with the proxy's 431.

use crate::errors::ProxyError;
use futures_util::future::{self, Either, Ready};
use http::Request;
use std::task::{Context, Poll};

/// Passes requests whose header list fits in `max_bytes`.
#[derive(Clone)]
pub struct LimitHeaders<S> {
    inner: S,
    max_bytes: usize,
}

impl<S> LimitHeaders<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, max_bytes: usize) -> Self {
        LimitHeaders { inner, max_bytes }
    }
}

/// The size of a request's header list, pseudo-headers included.
pub fn header_list_size<B>(req: &Request<B>) -> usize {
    let pseudo = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len())
        + 4 * 32;
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum::<usize>()
        + pseudo
}

impl<S, B> tower::Service<Request<B>> for LimitHeaders<S>
where
    S: tower::Service<Request<B>, Error = ProxyError>,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = Either<Ready<Result<S::Response, ProxyError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if header_list_size(&req) > self.max_bytes {
            return Either::Left(future::ready(Err(ProxyError::HeadersTooLarge {
                limit: self.max_bytes,
            })));
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn oversized_header_lists_get_431() {
        let svc = LimitHeaders::new(
            service_fn(|_req: Request<()>| async { Ok::<_, ProxyError>("passed") }),
            1024,
        );
        let small = Request::get("/").header("x", "y").body(()).unwrap();
        assert_eq!(svc.clone().oneshot(small).await.unwrap(), "passed");
        let big = Request::get("/")
            .header("x", "y".repeat(1024))
            .body(())
            .unwrap();
        let err = svc.oneshot(big).await.unwrap_err();
        assert_eq!(err.status().as_u16(), 431);
    }
}
