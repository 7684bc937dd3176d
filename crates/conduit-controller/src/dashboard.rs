//! The web dashboard's pages, served beside the API on its port (so with its
//! authentication): one HTML page for every page's URL, and its scripts and styles, all
//! embedded in the binary at build time from `dashboard/` (plain ES modules and CSS,
//! written for the browser as they are: no CDN, no Node build, no third-party code). The
//! page reads everything it shows from `/api/v1`. Every answer carries a Content Security
//! Policy that lets the page load only its own scripts and talk only to its own origin.

use axum::{
    extract::Path,
    http::{header, HeaderMap, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use conduit_api::dashboard::{ASSETS_PATH, INDEX as INDEX_NAME};
use std::sync::LazyLock;

/// One embedded file.
struct Asset {
    /// Its path under `ASSETS_PATH`.
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../dashboard/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page and everything it loads. The page is the same for every page's URL: its
/// script draws the page the URL names (it is an asset too, for the API server's path to
/// it: `conduit_api::dashboard`).
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("table.js", JS),
    asset!("chart.js", JS),
    asset!("topology.js", JS),
    asset!("pages.js", JS),
    asset!("tap.js", JS),
    asset!("style.css", CSS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The URLs of the pages (axum's syntax): the namespaces overview, a namespace's
/// workloads, one deployment, a namespace's topology and its live tap. `dashboard/app.js`
/// routes the same paths.
pub const PAGES: &[&str] = &[
    "/",
    "/namespaces/{namespace}",
    "/namespaces/{namespace}/deployments/{name}",
    "/namespaces/{namespace}/topology",
    "/namespaces/{namespace}/tap",
];

/// Only the page's own scripts, styles and API: an injected script or a framing page has
/// nothing to run or show.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the pages and the assets to `router`.
pub fn routes<S: Clone + Send + Sync + 'static>(mut router: Router<S>) -> Router<S> {
    for page in PAGES {
        router = router.route(page, get(index));
    }
    router.route(&format!("{ASSETS_PATH}/{{name}}"), get(asset))
}

/// The headers every dashboard answer carries.
fn guarded(content_type: &'static str, etag: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Revalidated on each load (a new controller may serve new assets), but a 304 then.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, etag);
    }
    headers
}

/// A strong validator of each asset (by its index in [`ASSETS`]), computed once: the
/// bodies are the same for the life of the binary.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    use std::hash::{Hash as _, Hasher as _};
    ASSETS
        .iter()
        .map(|a| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            a.body.hash(&mut h);
            format!("\"{:016x}\"", h.finish())
        })
        .collect()
});

/// The asset named `name`, or 304 when the browser's copy is current, or a JSON 404.
async fn serve(name: &str, headers: &HeaderMap, uri: Uri) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return crate::api::no_such_path(uri).await.into_response();
    };
    let (asset, tag) = (&ASSETS[i], &ETAGS[i]);
    let current = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let answer = guarded(asset.content_type, tag);
    if current {
        (StatusCode::NOT_MODIFIED, answer).into_response()
    } else {
        (answer, asset.body).into_response()
    }
}

async fn index(headers: HeaderMap, uri: Uri) -> Response {
    serve(INDEX_NAME, &headers, uri).await
}

async fn asset(Path(name): Path<String>, headers: HeaderMap, uri: Uri) -> Response {
    serve(&name, &headers, uri).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Request;
    use tower::ServiceExt as _;

    async fn get(router: &Router, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        router
            .clone()
            .oneshot(req.body(axum::body::Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    async fn text(rsp: Response) -> String {
        let body = axum::body::to_bytes(rsp.into_body(), usize::MAX)
            .await
            .expect("body");
        String::from_utf8(body.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn every_page_url_serves_the_page_under_the_policy() {
        let router = routes(Router::new());
        for path in [
            "/",
            "/namespaces/emojivoto",
            "/namespaces/emojivoto/deployments/web",
            "/namespaces/emojivoto/topology",
            "/namespaces/emojivoto/tap",
        ] {
            let rsp = get(&router, path, &[]).await;
            assert_eq!(rsp.status(), StatusCode::OK, "{path}");
            assert_eq!(
                rsp.headers()[header::CONTENT_SECURITY_POLICY],
                CSP,
                "{path}"
            );
            assert!(text(rsp).await.contains("/assets/app.js"), "{path}");
        }
        let rsp = get(&router, "/namespaces/emojivoto/secrets", &[]).await;
        assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_page_loads_only_what_is_embedded() {
        let router = routes(Router::new());
        // Every asset the page or a module names is served, with its type.
        let mut named: Vec<String> = Vec::new();
        for body in ASSETS.iter().map(|a| a.body) {
            for quote in ['"', '\''] {
                for part in body.split(quote).skip(1).step_by(2) {
                    if let Some(name) = part.strip_prefix("/assets/").or(part.strip_prefix("./")) {
                        named.push(name.to_string());
                    }
                }
            }
        }
        assert!(named.len() >= ASSETS.len(), "{named:?}");
        for name in named {
            let rsp = get(&router, &format!("{ASSETS_PATH}/{name}"), &[]).await;
            assert_eq!(rsp.status(), StatusCode::OK, "{name}");
        }
        let rsp = get(&router, "/assets/app.js", &[]).await;
        assert_eq!(rsp.headers()[header::CONTENT_TYPE], JS);
        assert_eq!(rsp.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let rsp = get(
            &router,
            &conduit_api::dashboard::asset_path(INDEX_NAME),
            &[],
        )
        .await;
        assert!(text(rsp).await.contains("<main id=\"main\""));
        let rsp = get(&router, "/assets/nope.js", &[]).await;
        assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
        assert!(text(rsp).await.contains("no such path"));
    }

    #[tokio::test]
    async fn a_current_copy_is_not_sent_again() {
        let router = routes(Router::new());
        let rsp = get(&router, "/assets/style.css", &[]).await;
        let tag = rsp.headers()[header::ETAG]
            .to_str()
            .expect("ascii")
            .to_string();
        let rsp = get(&router, "/assets/style.css", &[("if-none-match", &tag)]).await;
        assert_eq!(rsp.status(), StatusCode::NOT_MODIFIED);
        assert!(text(rsp).await.is_empty());
        let rsp = get(
            &router,
            "/assets/style.css",
            &[("if-none-match", "\"other\"")],
        )
        .await;
        assert_eq!(rsp.status(), StatusCode::OK);
    }
}
