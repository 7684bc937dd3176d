//! The proxy injector's admission logic: an AdmissionReview v1 for a pod in, the response
//! out. A pod annotated `conduit.io/inject: enabled` (or in a namespace so annotated) gets
//! the proxy through the very code `conduit inject` uses, as a JSONPatch. Anything the
//! injector cannot or should not handle is allowed unchanged, with a warning saying why:
//! the webhook never stands between a user and their pod.

use crate::inject::{self, InjectOptions};
use conduit_api::names::{INJECT_ANNOTATION, INJECT_DISABLED, INJECT_ENABLED};
use serde_json::{json, Value};

/// What the injector decided for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The patch that meshes the pod.
    Inject(Value),
    /// Unchanged, and why.
    Skip(String),
}

/// Answers an AdmissionReview (the request body); `namespace_enabled` says whether a
/// namespace is annotated `conduit.io/inject: enabled`.
pub fn review(
    body: &[u8],
    opts: &InjectOptions,
    namespace_enabled: impl Fn(&str) -> bool,
) -> Value {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let uid = request["request"]["uid"].clone();
    let api_version = request["apiVersion"]
        .as_str()
        .unwrap_or("admission.k8s.io/v1")
        .to_string();
    let mut response = json!({ "uid": uid, "allowed": true });
    match decide(&request["request"], opts, namespace_enabled) {
        Verdict::Inject(patch) => {
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(crate::install::base64(patch.to_string().as_bytes()));
        }
        Verdict::Skip(reason) => {
            response["warnings"] = json!([format!("conduit: not injected: {reason}")]);
        }
    }
    json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": response })
}

/// Whether and how to mesh the pod of an admission request.
pub fn decide(
    request: &Value,
    opts: &InjectOptions,
    namespace_enabled: impl Fn(&str) -> bool,
) -> Verdict {
    let skip = |why: &str| Verdict::Skip(why.to_string());
    if request["kind"]["kind"] != "Pod" || request["operation"] != "CREATE" {
        return skip("only pods being created are injected");
    }
    let mut pod = request["object"].clone();
    if !pod.is_object() {
        return skip("the request holds no pod");
    }
    let annotation = pod["metadata"]["annotations"][INJECT_ANNOTATION].as_str();
    let namespace = request["namespace"]
        .as_str()
        .or(pod["metadata"]["namespace"].as_str())
        .unwrap_or("default");
    let wanted = match annotation {
        Some(INJECT_ENABLED) => true,
        Some(INJECT_DISABLED) => false,
        _ => namespace_enabled(namespace),
    };
    if !wanted {
        return skip(&format!(
            "neither the pod nor namespace {namespace} is annotated {INJECT_ANNOTATION}: enabled"
        ));
    }
    // The objects an API server sends may lack apiVersion and kind.
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    let injected = match inject::inject(&pod.to_string(), "admission request", opts) {
        Ok(t) => t,
        Err(e) => return Verdict::Skip(e.to_string()),
    };
    match injected.report.first().map(|o| &o.action) {
        Some(inject::Action::Injected) => {}
        Some(inject::Action::Skipped(why)) => return Verdict::Skip(why.clone()),
        _ => return skip("the pod already has a proxy"),
    }
    let new: Value = match crate::manifest::parse(&injected.output, "injected pod")
        .ok()
        .and_then(|mut docs| docs.pop())
    {
        Some(doc) => doc.value,
        None => return skip("the injected pod could not be read back"),
    };
    Verdict::Inject(json!([
        { "op": "replace", "path": "/metadata", "value": new["metadata"] },
        { "op": "replace", "path": "/spec", "value": new["spec"] },
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(annotations: Value, operation: &str) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "namespace": "emojivoto",
                "operation": operation,
                "object": {
                    "metadata": { "generateName": "web-5d4f8b8c7-", "namespace": "emojivoto", "annotations": annotations },
                    "spec": { "containers": [{ "name": "web", "image": "web:1" }] },
                },
            },
        })
    }

    #[test]
    fn annotated_pods_get_a_patch_and_others_pass_unchanged() {
        let opts = InjectOptions::default();
        let enabled = request(json!({ "conduit.io/inject": "enabled" }), "CREATE");
        let answer = review(enabled.to_string().as_bytes(), &opts, |_| false);
        assert_eq!(
            answer["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");

        let plain = request(json!({}), "CREATE");
        let answer = review(plain.to_string().as_bytes(), &opts, |_| false);
        assert!(answer["response"].get("patch").is_none());
        assert!(answer["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("annotated conduit.io/inject: enabled"));
        // The namespace's annotation is enough; the pod's own "disabled" wins over it.
        assert!(matches!(
            decide(&plain["request"], &opts, |ns| ns == "emojivoto"),
            Verdict::Inject(_)
        ));
        let opted_out = request(json!({ "conduit.io/inject": "disabled" }), "CREATE");
        assert!(matches!(
            decide(&opted_out["request"], &opts, |_| true),
            Verdict::Skip(_)
        ));

        // What it cannot handle is allowed, never an error.
        for body in [
            &b"not json"[..],
            b"{}",
            request(json!({}), "UPDATE").to_string().as_bytes(),
        ] {
            let answer = review(body, &opts, |_| true);
            assert_eq!(answer["response"]["allowed"], true, "{answer}");
            assert!(answer["response"].get("patch").is_none());
        }
        let host = json!({ "kind": { "kind": "Pod" }, "operation": "CREATE", "namespace": "x",
            "object": { "metadata": {}, "spec": { "hostNetwork": true, "containers": [{ "name": "a", "image": "a" }] } } });
        assert!(
            matches!(decide(&host, &opts, |_| true), Verdict::Skip(why) if why.contains("host network"))
        );
    }
}
