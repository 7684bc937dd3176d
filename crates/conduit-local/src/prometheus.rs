//! A real Prometheus on the local runtime, when `conduit local up --prometheus` asks for
//! one: Debian's `prometheus`, supervised in the node namespace beside the controller,
//! with a configuration written here that scrapes every meshed proxy's admin port. Its
//! targets are a file (`file_sd_configs`) the supervisor rewrites as pods come and go,
//! each labelled `namespace`, `deployment` and `pod` as a cluster's pod discovery would
//! label them (the proxies put the same labels on their own series, which are kept:
//! `honor_labels`). It listens on the node namespace's loopback only: the controller
//! reaches it there, pods cannot.

use crate::{control_plane::SCRAPE_INTERVAL, layout::Layout, state::PodState};
use conduit_api::{admin, ports};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;

/// Where the runtime's control plane reads metrics from; chosen when the runtime starts
/// (`conduit local up`), kept until `down`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metrics {
    /// The controller's embedded store.
    #[default]
    Embedded,
    /// A Prometheus run here, in the node namespace (`--prometheus`).
    Run,
    /// A Prometheus elsewhere, reached from the node namespace (`--prometheus-url`).
    Url(String),
}

impl Metrics {
    /// The Prometheus the controller queries, if any.
    pub fn prometheus_url(&self) -> Option<String> {
        match self {
            Metrics::Embedded => None,
            Metrics::Run => Some(Files::url()),
            Metrics::Url(url) => Some(url.clone()),
        }
    }
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Metrics::Embedded => write!(f, "the controller's embedded store"),
            Metrics::Run => write!(f, "a Prometheus of its own (--prometheus)"),
            Metrics::Url(url) => write!(f, "the Prometheus at {url} (--prometheus-url)"),
        }
    }
}

/// The program, found on PATH (Debian's package installs it as `/usr/bin/prometheus`).
pub const PROGRAM: &str = "prometheus";

/// Where it listens, in the node namespace.
pub const LISTEN: (std::net::Ipv4Addr, u16) = (std::net::Ipv4Addr::LOCALHOST, 9090);

/// Its files under the runtime's directory.
pub struct Files {
    dir: PathBuf,
}

impl Files {
    pub fn new(layout: &Layout) -> Files {
        Files {
            dir: layout.dir().join("prometheus"),
        }
    }

    /// Where they are.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("prometheus.yml")
    }

    /// The targets file the configuration names.
    pub fn targets(&self) -> PathBuf {
        self.dir.join("targets.json")
    }

    /// Its database.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Writes the configuration and an empty target list.
    pub fn write_config(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.data())?;
        std::fs::write(self.config(), config(&self.targets()))?;
        self.write_targets(&targets(&[]))
    }

    /// Replaces the target list ([`targets`]), atomically: Prometheus watches the file
    /// and must never read half of it.
    pub fn write_targets(&self, targets: &serde_json::Value) -> std::io::Result<()> {
        let tmp = self.targets().with_extension("json.tmp");
        std::fs::write(&tmp, targets.to_string())?;
        std::fs::rename(tmp, self.targets())
    }

    /// The command line that runs it.
    pub fn argv(&self, program: &std::path::Path) -> Vec<String> {
        vec![
            program.display().to_string(),
            format!("--config.file={}", self.config().display()),
            format!("--storage.tsdb.path={}", self.data().display()),
            format!("--web.listen-address={}:{}", LISTEN.0, LISTEN.1),
            // A local runtime's history: a day is plenty, and bounds the disk it takes.
            "--storage.tsdb.retention.time=1d".to_string(),
        ]
    }

    /// The URL the controller queries it at.
    pub fn url() -> String {
        format!("http://{}:{}", LISTEN.0, LISTEN.1)
    }
}

/// The configuration: one job over the targets file.
pub fn config(targets: &std::path::Path) -> String {
    format!(
        "# Written by conduit local up --prometheus; rewritten on each start.\n\
         global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n\
         scrape_configs:\n  - job_name: {job}\n    honor_labels: true\n    metrics_path: {path}\n    \
         file_sd_configs:\n      - files: [{targets:?}]\n        refresh_interval: {SCRAPE_INTERVAL}\n",
        job = admin::SCRAPE_JOB,
        path = admin::METRICS_PATH,
        targets = targets.display().to_string(),
    )
}

/// The meshed pods as file_sd targets: each proxy's admin address, with its pod's names.
pub fn targets(pods: &[PodState]) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = pods
        .iter()
        .filter(|p| p.meshed)
        .map(|p| {
            json!({
                "targets": [format!("{}:{}", p.ip, ports::PROXY_ADMIN)],
                "labels": { "namespace": p.namespace, "deployment": p.deployment, "pod": p.name },
            })
        })
        .collect();
    serde_json::Value::Array(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, meshed: bool, ip: [u8; 4]) -> PodState {
        PodState {
            namespace: "emojivoto".into(),
            name: name.into(),
            deployment: name.split('-').next().unwrap_or_default().into(),
            index: 1,
            ip: ip.into(),
            netns: String::new(),
            meshed,
            service_account: String::new(),
            labels: Default::default(),
            named_ports: Default::default(),
            probes: Vec::new(),
            default_policy: None,
            phase: "Running".into(),
            ready: true,
            containers: Vec::new(),
            message: String::new(),
        }
    }

    #[test]
    fn every_meshed_proxy_is_a_target_with_its_pods_names() {
        let pods = [
            pod("web-abc12", true, [198, 18, 0, 4]),
            pod("plain-xyz98", false, [198, 18, 0, 5]),
        ];
        assert_eq!(
            targets(&pods),
            json!([{
                "targets": ["198.18.0.4:4191"],
                "labels": {"namespace": "emojivoto", "deployment": "web", "pod": "web-abc12"},
            }])
        );
        let text = config(std::path::Path::new("/run/x/targets.json"));
        assert!(text.contains("files: [\"/run/x/targets.json\"]"), "{text}");
        assert!(text.contains("honor_labels: true"), "{text}");
        assert!(text.contains("metrics_path: /metrics"), "{text}");
    }
}
