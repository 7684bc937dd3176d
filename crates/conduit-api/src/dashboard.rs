//! The web dashboard's files, which the controller serves beside the API: where they are
//! on the API's port ([`ASSETS_PATH`]; every page's URL gets [`INDEX`]) and how they are
//! reached through the Kubernetes API server ([`ACCESS`]: `get` on the resource
//! `dashboard`). The files hold no data (every number on the pages comes from the API,
//! under the user's own RBAC), so `conduit install` grants them to every authenticated
//! user with [`DASHBOARD_ROLE`](crate::public_api::DASHBOARD_ROLE).

use crate::public_api::{Access, DASHBOARD_ROLE, GET};

/// Where the pages' files are on the API's port: `/assets/NAME`.
pub const ASSETS_PATH: &str = "/assets";

/// The page itself, the same for every page's URL: its script draws the page the URL names.
pub const INDEX: &str = "index.html";

/// The files through the API server: `get` on `dashboard`, cluster-wide.
pub const ACCESS: Access = Access {
    resource: "dashboard",
    verb: GET,
    role: DASHBOARD_ROLE,
};

/// A file's path on the API's port.
pub fn asset_path(name: &str) -> String {
    format!("{ASSETS_PATH}/{name}")
}

/// A file's path through the API server: `/apis/<group>/<version>/dashboard/NAME`, which
/// the API server reads as `get` on `dashboard` (named `NAME`).
pub fn cluster_path(name: &str) -> String {
    format!("{}/{name}", ACCESS.path(None))
}

/// The file named by a path on the API's port, if it names one.
pub fn asset_of_path(path: &str) -> Option<&str> {
    file_under(path, ASSETS_PATH)
}

/// The file named by a path through the API server, if it names one.
pub fn asset_of_cluster_path(path: &str) -> Option<&str> {
    file_under(path, &ACCESS.path(None))
}

/// The `NAME` of `DIR/NAME`: one non-empty segment.
fn file_under<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    let name = path.strip_prefix(dir)?.strip_prefix('/')?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_through_the_api_server_are_gets_of_one_resource() {
        assert_eq!(asset_path("app.js"), "/assets/app.js");
        let path = cluster_path("app.js");
        assert_eq!(path, "/apis/api.conduit.io/v1alpha1/dashboard/app.js");
        assert_eq!(asset_of_cluster_path(&path), Some("app.js"));
        assert_eq!(asset_of_cluster_path(&cluster_path(INDEX)), Some(INDEX));
        assert_eq!(asset_of_path(&asset_path("app.js")), Some("app.js"));
        for other in ["/assets", "/assets/", "/assets/a/b", "/namespaces/x", "/"] {
            assert_eq!(asset_of_path(other), None, "{other}");
        }
        for other in [
            "/apis/api.conduit.io/v1alpha1/dashboard",
            "/apis/api.conduit.io/v1alpha1/dashboard/",
            "/apis/api.conduit.io/v1alpha1/dashboard/a/b",
            "/apis/api.conduit.io/v1alpha1/dashboards/app.js",
            "/apis/api.conduit.io/v1alpha1/stats",
            "/assets/app.js",
        ] {
            assert_eq!(asset_of_cluster_path(other), None, "{other}");
        }
    }
}
