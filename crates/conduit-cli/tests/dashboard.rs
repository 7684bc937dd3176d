//! `conduit dashboard` for real, on the meshed sample app: the pages in a real browser
//! (Debian's chromium driven by playwright: `browser/dashboard.py`), the API through its
//! port, the refusals that keep the port as private as the socket behind it (another
//! user, a page of another site's name, a wider address, a port in use), Schemathesis (a
//! third-party API tester, from PyPI) run against the served OpenAPI document, and taps a
//! client drops ending on the proxies. Root only.

mod common;
use common::*;
use serde_json::Value;
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

/// The meshed sample app on a runtime of its own, and a dashboard of it.
fn sample_app_with_dashboard(name: &str) -> (Runtime, Dashboard) {
    let runtime = Runtime::new(name);
    let meshed = runtime.meshed_manifest();
    runtime.ok(&["local", "up", "-f", meshed.to_str().unwrap()]);
    let dash = dashboard(&runtime);
    (runtime, dash)
}

/// `curl ARGS URL` as root, or as `user`: its status code and body.
fn curl(user: Option<&str>, args: &[&str], url: &str) -> (u16, String) {
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    let out = cmd
        .args([
            "--silent",
            "--max-time",
            "10",
            "--write-out",
            "\n%{http_code}",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn error_of(body: &str) -> String {
    let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["error"].as_str().unwrap().to_string()
}

#[test]
fn the_dashboard_serves_the_api_to_its_user_only_and_passes_schemathesis() {
    let (runtime, dash) = sample_app_with_dashboard("dashboard");

    let (code, body) = curl(None, &[], &format!("{}/api/v1/version", dash.url));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["version"],
        env!("CARGO_PKG_VERSION")
    );
    let (code, body) = curl(None, &[], &format!("{}/api/v1/nothing", dash.url));
    assert_eq!(code, 404);
    assert!(error_of(&body).contains("no such path: /api/v1/nothing"));

    // Another user of this host: refused, though the port is open to every local user.
    let (code, body) = curl(Some("nobody"), &[], &format!("{}/api/v1/version", dash.url));
    assert_eq!(code, 403, "{body}");
    assert!(
        error_of(&body).contains("this connection is uid 65534's"),
        "{body}"
    );
    // A page of another site whose name resolves to loopback (DNS rebinding).
    let (code, body) = curl(
        None,
        &["--header", "Host: attacker.example"],
        &format!("{}/api/v1/version", dash.url),
    );
    assert_eq!(code, 403, "{body}");
    assert!(error_of(&body).contains("\"attacker.example\" is not this dashboard's address"));

    // The port taken: a clear error. A non-loopback address: refused.
    let port = dash.url.rsplit(':').next().unwrap();
    let out = runtime.conduit(&["dashboard", "--port", port, "--show", "url"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("port {port} on 127.0.0.1 is in use")) && err.contains("--port"),
        "{err}"
    );
    let out = runtime.conduit(&["dashboard", "--address", "0.0.0.0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listens only on loopback"));

    // Schemathesis: every operation's examples, edge cases and random inputs, each answer
    // checked against the document: no server error, only documented statuses and
    // content types, every body valid. Tap and top stream or wait for a window, so
    // they are left to the tests that read them.
    // It keeps a cache in its working directory: one that goes with the test.
    let workdir = runtime.dir.with_extension("schemathesis");
    std::fs::create_dir_all(&workdir).unwrap();
    let out = Command::new("schemathesis")
        .current_dir(&workdir)
        .args(["run", &format!("{}/api/v1/openapi.json", dash.url)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--exclude-path-regex",
            "/(tap|top)$",
            "--max-examples",
            "40",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis (scripts/install-test-deps installs it)");
    let _ = std::fs::remove_dir_all(&workdir);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("Tested: 8"), "{report}");
}

#[test]
fn a_tap_the_client_drops_ends_on_the_proxies() {
    let (_runtime, dash) = sample_app_with_dashboard("dashboard-tap");
    let url = format!(
        "{}/api/v1/tap?resource=deploy&name=web&namespace=emojivoto",
        dash.url
    );
    // A proxy serves at most 16 observers at once: were a dropped tap kept on the
    // proxies, the taps after the sixteenth would get no requests.
    for round in 0..20 {
        let mut tap = Command::new("curl")
            .args(["--silent", "--no-buffer", "--max-time", "30", &url])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = tap.stdout.take().unwrap();
        let tap = KillOnDrop(tap);
        let first_request = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                let line: Value = serde_json::from_str(&l).ok()?;
                (line["type"] == "request" || line["type"] == "error").then_some(line)
            });
        drop(tap);
        let line = first_request.unwrap_or_else(|| panic!("tap {round} ended without a line"));
        assert_eq!(line["type"], "request", "tap {round}: {line}");
    }
}

#[test]
fn the_pages_show_the_sample_app_live_in_a_browser() {
    let (runtime, dash) = sample_app_with_dashboard("dashboard-pages");
    // Screenshots of every page, for people to look at.
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/dashboard");
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/dashboard.py"
        ))
        .args([&dash.url, shots, CONDUIT])
        .env("CONDUIT_LOCAL_DIR", &runtime.dir)
        .output()
        .expect("python3 with playwright (scripts/install-test-deps installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert!(report.contains("the dashboard's pages passed"), "{report}");
}
