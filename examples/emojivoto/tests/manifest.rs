//! Checks `emojivoto.yml`: the expected Deployments and Services, wired to each other by
//! name and port, each container running one of this crate's binaries.

use serde_json::Value;

const BINARIES: [&str; 4] = [
    "emojivoto-emoji-svc",
    "emojivoto-voting-svc",
    "emojivoto-web",
    "emojivoto-vote-bot",
];

fn documents() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/emojivoto.yml");
    let text = std::fs::read_to_string(path).expect("read emojivoto.yml");
    serde_saphyr::from_multiple(&text).expect("emojivoto.yml is multi-document YAML")
}

fn str_at<'a>(doc: &'a Value, pointer: &str) -> &'a str {
    doc.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[test]
fn has_the_expected_kinds_and_names() {
    let mut found: Vec<(String, String)> = documents()
        .iter()
        .map(|doc| {
            assert_eq!(str_at(doc, "/metadata/namespace"), "emojivoto");
            (
                str_at(doc, "/kind").into(),
                str_at(doc, "/metadata/name").into(),
            )
        })
        .collect();
    found.sort();
    let expected = [
        ("Deployment", "emoji"),
        ("Deployment", "vote-bot"),
        ("Deployment", "voting"),
        ("Deployment", "web"),
        ("Service", "emoji-svc"),
        ("Service", "voting-svc"),
        ("Service", "web-svc"),
        ("ServiceAccount", "emoji"),
        ("ServiceAccount", "vote-bot"),
        ("ServiceAccount", "voting"),
        ("ServiceAccount", "web"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn every_container_runs_one_of_the_binaries() {
    let docs = documents();
    let deployments = docs.iter().filter(|d| str_at(d, "/kind") == "Deployment");
    for deployment in deployments {
        let app = str_at(deployment, "/metadata/name");
        assert_eq!(str_at(deployment, "/spec/selector/matchLabels/app"), app);
        assert_eq!(
            str_at(deployment, "/spec/template/metadata/labels/app"),
            app
        );
        let containers = deployment.pointer("/spec/template/spec/containers");
        let containers = containers.and_then(Value::as_array).expect("containers");
        for container in containers {
            let command = container["command"].as_array().expect("a command");
            let binary = command.first().and_then(Value::as_str).unwrap_or_default();
            assert!(BINARIES.contains(&binary), "{app} runs {binary:?}");
            assert!(str_at(container, "/image").ends_with(&format!("{binary}:v1")));
        }
    }
}

#[test]
fn services_select_deployments_and_env_names_services() {
    let docs = documents();
    let env = |app: &str, var: &str| -> String {
        let deployment = docs
            .iter()
            .find(|d| str_at(d, "/kind") == "Deployment" && str_at(d, "/metadata/name") == app);
        let env = deployment.and_then(|d| d.pointer("/spec/template/spec/containers/0/env"));
        let env = env.and_then(Value::as_array).expect("env");
        let entry = env.iter().find(|e| e["name"] == var).expect(var);
        str_at(entry, "/value").to_string()
    };
    assert_eq!(env("web", "EMOJISVC_HOST"), "emoji-svc.emojivoto:8080");
    assert_eq!(env("web", "VOTINGSVC_HOST"), "voting-svc.emojivoto:8080");
    assert_eq!(env("vote-bot", "WEB_HOST"), "web-svc.emojivoto:80");
    for (service, app, port) in [
        ("emoji-svc", "emoji", 8080),
        ("voting-svc", "voting", 8080),
        ("web-svc", "web", 80),
    ] {
        let svc = docs
            .iter()
            .find(|d| str_at(d, "/metadata/name") == service)
            .expect(service);
        assert_eq!(str_at(svc, "/spec/selector/app"), app);
        assert_eq!(svc.pointer("/spec/ports/0/port"), Some(&Value::from(port)));
        assert_eq!(
            svc.pointer("/spec/ports/0/targetPort"),
            Some(&Value::from(8080))
        );
    }
}
