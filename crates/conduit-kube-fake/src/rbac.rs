//! RBAC as the API server evaluates it for a user: the ClusterRoleBindings and, in a
//! namespace, the RoleBindings whose subjects name the user, one of their groups or their
//! ServiceAccount, each granting its role's rules (`*` matches anything); the group
//! `system:masters` may do anything. `resourceNames` and non-resource URLs are not
//! modelled: no test needs them.

use serde_json::Value;

/// Who asks, as authentication named them.
#[derive(Clone, Debug)]
pub(crate) struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// What is asked: a verb on a resource of a group, in a namespace or cluster-wide.
pub(crate) struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
}

/// The RBAC objects a decision reads.
pub(crate) struct Objects<'a> {
    pub cluster_roles: Vec<&'a Value>,
    pub cluster_role_bindings: Vec<&'a Value>,
    pub roles: Vec<&'a Value>,
    pub role_bindings: Vec<&'a Value>,
}

fn has(list: &Value, item: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == item || v == "*"))
}

/// Whether one rule (as in a role's `rules`) grants `attrs`.
pub(crate) fn rule_allows(rule: &Value, verb: &str, group: &str, resource: &str) -> bool {
    has(&rule["apiGroups"], group) && has(&rule["resources"], resource) && has(&rule["verbs"], verb)
}

fn names(subjects: &Value, user: &UserInfo) -> bool {
    subjects.as_array().into_iter().flatten().any(|s| {
        let name = s["name"].as_str().unwrap_or_default();
        match s["kind"].as_str() {
            Some("User") => user.name == name,
            Some("Group") => user.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => {
                let ns = s["namespace"].as_str().unwrap_or_default();
                user.name == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    })
}

fn named<'a>(objects: &[&'a Value], name: &str, namespace: Option<&str>) -> Option<&'a Value> {
    objects.iter().copied().find(|o| {
        o["metadata"]["name"] == name && namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns)
    })
}

/// Whether RBAC allows `user` what `attrs` asks.
pub(crate) fn allows(objects: &Objects<'_>, user: &UserInfo, attrs: &Attributes<'_>) -> bool {
    if user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    let grants = |role: Option<&Value>| {
        role.and_then(|r| r["rules"].as_array())
            .is_some_and(|rules| {
                rules
                    .iter()
                    .any(|r| rule_allows(r, attrs.verb, attrs.group, attrs.resource))
            })
    };
    let cluster_wide = objects
        .cluster_role_bindings
        .iter()
        .filter(|b| names(&b["subjects"], user))
        .any(|b| {
            let role = b["roleRef"]["name"].as_str().unwrap_or_default();
            grants(named(&objects.cluster_roles, role, None))
        });
    if cluster_wide {
        return true;
    }
    let Some(ns) = attrs.namespace else {
        return false;
    };
    objects
        .role_bindings
        .iter()
        .filter(|b| b["metadata"]["namespace"] == ns && names(&b["subjects"], user))
        .any(|b| {
            let role = b["roleRef"]["name"].as_str().unwrap_or_default();
            match b["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => grants(named(&objects.cluster_roles, role, None)),
                _ => grants(named(&objects.roles, role, Some(ns))),
            }
        })
}

/// The API server's message for a request RBAC forbids.
pub(crate) fn forbidden_message(user: &str, attrs: &Attributes<'_>) -> String {
    let qualified = if attrs.group.is_empty() {
        attrs.resource.to_string()
    } else {
        format!("{}.{}", attrs.resource, attrs.group)
    };
    let scope = match attrs.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    format!(
        "{qualified} is forbidden: User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        attrs.verb, attrs.resource, attrs.group
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bindings_grant_their_roles_rules_where_they_apply() {
        let viewer = json!({"metadata": {"name": "viewer"},
            "rules": [{"apiGroups": ["g"], "resources": ["stats"], "verbs": ["list"]}]});
        let in_a = json!({"metadata": {"name": "b", "namespace": "a"},
            "roleRef": {"kind": "ClusterRole", "name": "viewer"},
            "subjects": [{"kind": "Group", "name": "readers"},
                         {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"}]});
        let objects = Objects {
            cluster_roles: vec![&viewer],
            cluster_role_bindings: vec![],
            roles: vec![],
            role_bindings: vec![&in_a],
        };
        let user = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let asks = |verb, namespace| Attributes {
            verb,
            group: "g",
            resource: "stats",
            namespace,
        };
        let reader = user("alice", &["readers"]);
        assert!(allows(&objects, &reader, &asks("list", Some("a"))));
        assert!(!allows(&objects, &reader, &asks("list", Some("b"))));
        assert!(!allows(&objects, &reader, &asks("list", None)));
        assert!(!allows(&objects, &reader, &asks("watch", Some("a"))));
        let ci = user("system:serviceaccount:tools:ci", &[]);
        assert!(allows(&objects, &ci, &asks("list", Some("a"))));
        assert!(!allows(
            &objects,
            &user("bob", &[]),
            &asks("list", Some("a"))
        ));
        assert!(allows(
            &objects,
            &user("root", &["system:masters"]),
            &asks("delete", None)
        ));
    }
}
