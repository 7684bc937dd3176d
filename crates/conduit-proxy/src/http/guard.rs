//! The checks a request must pass before it goes upstream, in one layer: [`Guard`] asks
//! each [`RequestGuard`] in turn, and the first that refuses answers for the request with
//! the proxy's own error. [`HeaderLimit`] guards every request; inbound authorization
//! guards inbound ones (its rule lives with the inbound side, `inbound::authorize`).

use crate::errors::ProxyError;
use futures_util::future::{self, Either, Ready};
use http::{HeaderMap, Method, Request, Uri};
use std::{
    sync::Arc,
    task::{Context, Poll},
};

/// What a guard may look at: a request's head.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// The head of `req`.
    pub fn of<B>(req: &'a Request<B>) -> Self {
        RequestHead {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
        }
    }
}

/// A rule a request must pass.
pub trait RequestGuard: Send + Sync {
    /// `Err` refuses the request with that error's response.
    fn check(&self, req: &RequestHead<'_>) -> Result<(), ProxyError>;
}

/// Passes the requests that every guard lets through.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    guards: Arc<[Arc<dyn RequestGuard>]>,
}

impl<S> Guard<S> {
    /// Wraps `inner`; `guards` are asked in order.
    pub fn new(inner: S, guards: Arc<[Arc<dyn RequestGuard>]>) -> Self {
        Guard { inner, guards }
    }
}

impl<S, B> tower::Service<Request<B>> for Guard<S>
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
        let head = RequestHead::of(&req);
        if let Some(refused) = self.guards.iter().find_map(|g| g.check(&head).err()) {
            return Either::Left(future::ready(Err(refused)));
        }
        Either::Right(self.inner.call(req))
    }
}

/// Refuses requests whose headers exceed `CONDUIT_PROXY_MAX_HEADER_BYTES`, measured as
/// HTTP/2 measures a header list (RFC 9113 §6.5.2: name + value + 32 per field): the
/// HTTP/2 counterpart of the HTTP/1 head check, answered with the proxy's 431.
pub struct HeaderLimit {
    pub max_bytes: usize,
}

impl RequestGuard for HeaderLimit {
    fn check(&self, req: &RequestHead<'_>) -> Result<(), ProxyError> {
        if header_list_size(req) > self.max_bytes {
            return Err(ProxyError::HeadersTooLarge {
                limit: self.max_bytes,
            });
        }
        Ok(())
    }
}

/// The size of a request's header list, pseudo-headers included.
fn header_list_size(req: &RequestHead<'_>) -> usize {
    let pseudo = req.method.as_str().len()
        + req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len())
        + 4 * 32;
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum::<usize>()
        + pseudo
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, ServiceExt};

    fn guarded(
        guards: Vec<Arc<dyn RequestGuard>>,
    ) -> Guard<impl tower::Service<Request<()>, Response = &'static str, Error = ProxyError> + Clone>
    {
        Guard::new(
            service_fn(|_req: Request<()>| async { Ok::<_, ProxyError>("passed") }),
            guards.into(),
        )
    }

    #[tokio::test]
    async fn oversized_header_lists_get_431() {
        let svc = guarded(vec![Arc::new(HeaderLimit { max_bytes: 1024 })]);
        let small = Request::get("/").header("x", "y").body(()).unwrap();
        assert_eq!(svc.clone().oneshot(small).await.unwrap(), "passed");
        let big = Request::get("/")
            .header("x", "y".repeat(1024))
            .body(())
            .unwrap();
        let err = svc.oneshot(big).await.unwrap_err();
        assert_eq!(err.status().as_u16(), 431);
    }

    /// Refuses every request, naming itself.
    struct Refuse(&'static str);

    impl RequestGuard for Refuse {
        fn check(&self, _: &RequestHead<'_>) -> Result<(), ProxyError> {
            Err(ProxyError::Unauthorized {
                reason: self.0.into(),
            })
        }
    }

    #[tokio::test]
    async fn the_first_guard_that_refuses_answers() {
        let svc = guarded(vec![
            Arc::new(HeaderLimit { max_bytes: 1024 }),
            Arc::new(Refuse("first")),
            Arc::new(Refuse("second")),
        ]);
        let err = svc
            .oneshot(Request::get("/").body(()).unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("first"), "{err}");
        let open = guarded(vec![]);
        assert_eq!(
            open.oneshot(Request::get("/").body(()).unwrap())
                .await
                .unwrap(),
            "passed"
        );
    }
}
