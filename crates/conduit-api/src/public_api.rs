//! Who may call the controller's public API on Kubernetes, and how it is reached there:
//! an aggregated API of the API server (group [`GROUP`], version [`VERSION`], the
//! `APIService` [`API_SERVICE`]), each endpoint a resource with the verb RBAC grants for
//! it ([`Access`]), the ClusterRoles `conduit install` writes for users to bind
//! ([`VIEWER_ROLE`], [`TAP_ROLE`], and [`DASHBOARD_ROLE`] for the dashboard's files), and the API server's `extension-apiserver-authentication`
//! ConfigMap, whose front-proxy CA and header names the controller trusts. The paths are
//! shaped so that the API server derives the same verb, resource and namespace from them
//! as the controller authorizes. Knows nothing about how either side enforces it.

/// The aggregated API's group.
pub const GROUP: &str = "api.conduit.io";
/// The aggregated API's version.
pub const VERSION: &str = "v1alpha1";
/// The `APIService` that registers it: `<version>.<group>`, as Kubernetes requires.
pub const API_SERVICE: &str = "v1alpha1.api.conduit.io";

/// The ClusterRole that reads metrics: stat, edges, workloads and identity.
pub const VIEWER_ROLE: &str = "conduit-viewer";
/// The ClusterRole that reads live requests: tap and top.
pub const TAP_ROLE: &str = "conduit-tap";
/// The ClusterRole that reads the web dashboard's files (which hold no data), bound to
/// every authenticated user.
pub const DASHBOARD_ROLE: &str = "conduit-dashboard";
/// The group of every user the API server authenticated.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The verb of reading answers computed from metrics.
pub const LIST: &str = "list";
/// The verb of reading one named thing: a dashboard file.
pub const GET: &str = "get";
/// The verb of reading live requests; the `watch=true` the CLI adds makes the API server
/// derive it too (and treat the request as long-running, so a tap is not cut at the
/// API server's request timeout).
pub const WATCH: &str = "watch";
/// The query parameter that makes a request a `watch`.
pub const WATCH_PARAM: (&str, &str) = ("watch", "true");

/// What RBAC must grant to call an endpoint: a verb on a resource of [`GROUP`], in the
/// request's namespace (or cluster-wide when it names none), which `role` grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// The resource, as it appears in the path and in RBAC rules.
    pub resource: &'static str,
    /// The verb.
    pub verb: &'static str,
    /// The ClusterRole of `conduit install` that grants it.
    pub role: &'static str,
}

impl Access {
    /// Reading metrics' answers: `list` on `resource`, granted by [`VIEWER_ROLE`].
    pub const fn viewer(resource: &'static str) -> Access {
        Access {
            resource,
            verb: LIST,
            role: VIEWER_ROLE,
        }
    }

    /// Reading live requests: `watch` on `resource`, granted by [`TAP_ROLE`].
    pub const fn tap(resource: &'static str) -> Access {
        Access {
            resource,
            verb: WATCH,
            role: TAP_ROLE,
        }
    }

    /// Its path through the API server: `/apis/<group>/<version>[/namespaces/<ns>]/<resource>`.
    pub fn path(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => format!("{}/namespaces/{ns}/{}", group_path(), self.resource),
            None => format!("{}/{}", group_path(), self.resource),
        }
    }

    /// What to tell `user`, whom RBAC does not grant this in `namespace`.
    pub fn refusal(&self, user: &str, namespace: Option<&str>) -> String {
        let scope = match namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "in every namespace".to_string(),
        };
        format!(
            "{user} may not {} {}.{GROUP} {scope}: {}",
            self.verb,
            self.resource,
            self.grant(user, namespace)
        )
    }

    /// How `user` is granted this in `namespace` (every namespace when `None`).
    pub fn grant(&self, user: &str, namespace: Option<&str>) -> String {
        let role = self.role;
        let binding = match namespace {
            Some(ns) => {
                format!(
                    "kubectl create rolebinding NAME -n {ns} --clusterrole={role} --user={user}"
                )
            }
            None => {
                format!("kubectl create clusterrolebinding NAME --clusterrole={role} --user={user}")
            }
        };
        format!("bind the ClusterRole {role} ({binding})")
    }
}

/// `/apis/<group>/<version>`: the API's discovery document, and the prefix of its paths.
pub fn group_path() -> String {
    format!("/apis/{GROUP}/{VERSION}")
}

/// The ConfigMap (in `kube-system`) in which the API server publishes how it
/// authenticates to aggregated APIs.
pub const AUTHENTICATION_CONFIGMAP: &str = "extension-apiserver-authentication";
/// Its namespace.
pub const AUTHENTICATION_NAMESPACE: &str = "kube-system";
/// Its key: the CA (PEM) of the front-proxy client certificates.
pub const REQUESTHEADER_CA_KEY: &str = "requestheader-client-ca-file";
/// Its key: the common names a front-proxy certificate may have (JSON list; empty: any).
pub const REQUESTHEADER_ALLOWED_NAMES_KEY: &str = "requestheader-allowed-names";
/// Its key: the headers that carry the user's name (JSON list).
pub const REQUESTHEADER_USERNAME_KEY: &str = "requestheader-username-headers";
/// Its key: the headers that carry the user's groups (JSON list).
pub const REQUESTHEADER_GROUP_KEY: &str = "requestheader-group-headers";
/// Its key: the prefixes of headers that carry the user's extra attributes (JSON list).
pub const REQUESTHEADER_EXTRA_PREFIX_KEY: &str = "requestheader-extra-headers-prefix";
/// The ClusterRole every delegating API server's account needs: TokenReviews and
/// SubjectAccessReviews.
pub const AUTH_DELEGATOR_ROLE: &str = "system:auth-delegator";
/// The Role (in `kube-system`) that reads [`AUTHENTICATION_CONFIGMAP`].
pub const AUTHENTICATION_READER_ROLE: &str = "extension-apiserver-authentication-reader";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_what_the_api_server_reads_resources_from() {
        let stats = Access::viewer("stats");
        assert_eq!(stats.path(None), "/apis/api.conduit.io/v1alpha1/stats");
        assert_eq!(
            stats.path(Some("emojivoto")),
            "/apis/api.conduit.io/v1alpha1/namespaces/emojivoto/stats"
        );
        assert_eq!(API_SERVICE, format!("{VERSION}.{GROUP}"));
        assert!(Access::tap("taps")
            .refusal("alice", Some("emojivoto"))
            .starts_with("alice may not watch taps.api.conduit.io in namespace emojivoto: bind the ClusterRole conduit-tap"));
    }
}
