//! HTTP/1 requests that a client's proxy carries to a meshed endpoint's proxy over one
//! shared HTTP/2 connection, rather than one HTTP/1 connection per request in flight:
//! fewer connections, and under load several requests per read and write. The client's
//! proxy marks each carried request with the version the application sent
//! ([`mark`]); the server's proxy, trusting the mark only from an authenticated peer,
//! gives the request its version back ([`Restore`]) and sends it to the application over
//! HTTP/1, as it was sent. Everyone else's mark is removed: an application cannot choose
//! how its requests reach another.
//!
//! The request's target is untouched: an origin-form target travels without
//! `:authority` (its `Host` header with it, as h2 allows when forwarding HTTP/1), so the
//! application receives the request line the client wrote.

use http::{HeaderName, HeaderValue, Request, Version};
use std::task::{Context, Poll};

/// The header naming the HTTP/1 version of a carried request.
pub static ORIG_PROTO: HeaderName = HeaderName::from_static("conduit-orig-proto");

/// Whether `req` may be carried over HTTP/2: HTTP/1 without a protocol switch (an upgrade needs a connection of its own).
pub fn can_carry<B>(req: &Request<B>) -> bool {
    req.version() <= Version::HTTP_11 && !super::headers::is_upgrade(req)
}

/// Marks `req` as carried: the receiving proxy restores its version.
pub fn mark<B>(req: &mut Request<B>) {
    let value = match req.version() {
        Version::HTTP_10 => HeaderValue::from_static("HTTP/1.0"),
        _ => HeaderValue::from_static("HTTP/1.1"),
    };
    req.headers_mut().insert(ORIG_PROTO.clone(), value);
}

/// The version a carried request's mark names, if it is a valid one.
fn marked_version(value: &HeaderValue) -> Option<Version> {
    match value.as_bytes() {
        b"HTTP/1.1" => Some(Version::HTTP_11),
        b"HTTP/1.0" => Some(Version::HTTP_10),
        _ => None,
    }
}

/// Takes the mark off every request; where `trusted` (an authenticated proxy's HTTP/2
/// connection), gives a marked request its HTTP/1 version back first.
#[derive(Clone)]
pub struct Restore<S> {
    inner: S,
    trusted: bool,
}

impl<S> Restore<S> {
    /// Restores before `inner`, trusting marks when `trusted`.
    pub fn new(inner: S, trusted: bool) -> Self {
        Restore { inner, trusted }
    }
}

impl<S, B> tower::Service<Request<B>> for Restore<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(mark) = req.headers_mut().remove(&ORIG_PROTO) {
            if let Some(version) = marked_version(&mark).filter(|_| self.trusted) {
                *req.version_mut() = version;
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, Service, ServiceExt};

    async fn restored(trusted: bool, req: Request<()>) -> (Version, bool) {
        let mut svc = Restore::new(
            service_fn(|r: Request<()>| async move {
                Ok::<_, std::convert::Infallible>((
                    r.version(),
                    r.headers().contains_key(&ORIG_PROTO),
                ))
            }),
            trusted,
        );
        svc.ready().await.unwrap().call(req).await.unwrap()
    }

    fn carried(version: Version) -> Request<()> {
        let mut req = Request::builder()
            .version(version)
            .uri("/x")
            .body(())
            .unwrap();
        mark(&mut req);
        *req.version_mut() = Version::HTTP_2;
        req
    }

    #[tokio::test]
    async fn an_authenticated_proxys_mark_restores_the_version_and_is_removed() {
        assert_eq!(
            restored(true, carried(Version::HTTP_11)).await,
            (Version::HTTP_11, false)
        );
        assert_eq!(
            restored(true, carried(Version::HTTP_10)).await,
            (Version::HTTP_10, false)
        );
    }

    #[tokio::test]
    async fn anyone_elses_mark_is_removed_and_changes_nothing() {
        assert_eq!(
            restored(false, carried(Version::HTTP_11)).await,
            (Version::HTTP_2, false)
        );
        let mut bogus = carried(Version::HTTP_11);
        bogus
            .headers_mut()
            .insert(&ORIG_PROTO, HeaderValue::from_static("HTTP/3"));
        assert_eq!(restored(true, bogus).await, (Version::HTTP_2, false));
    }

    #[test]
    fn protocol_switches_and_http2_are_not_carried() {
        let plain = Request::builder().uri("/").body(()).unwrap();
        assert!(can_carry(&plain));
        let ws = Request::builder()
            .uri("/")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(!can_carry(&ws));
        let connect = Request::builder()
            .method(http::Method::CONNECT)
            .uri("db.example:5432")
            .body(())
            .unwrap();
        assert!(!can_carry(&connect), "a tunnel keeps its own connection");
        let h2 = Request::builder()
            .version(Version::HTTP_2)
            .uri("/")
            .body(())
            .unwrap();
        assert!(!can_carry(&h2));
    }
}
