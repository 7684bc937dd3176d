//! `conduit install` and `conduit uninstall`: the control plane's manifests on stdout, for
//! `kubectl apply -f -` (and `kubectl delete -f -`). Everything is checked before
//! anything is printed, so a mistake never leaves half a manifest behind.

use anyhow::Context as _;
use clap::Args;
use conduit_api::{control_plane, public_api};
use conduit_identity::ca::{self, TrustFiles};
use conduit_k8s::{
    install::{self, IdentityMaterial, ServingTls, Values},
    manifest,
};
use serde_json::{json, Value};
use std::{io::Write, path::PathBuf, time::Duration};

#[derive(Args)]
pub struct InstallArgs {
    /// Print only the CustomResourceDefinitions (Server, AuthorizationPolicy, ServiceProfile,
    /// HTTPRoute).
    #[arg(long)]
    crds: bool,
    /// Print only the Prometheus scrape configuration that finds every proxy (job
    /// conduit-proxies, for --set prometheusUrl=URL), to merge into prometheus.yml.
    #[arg(long, conflicts_with = "crds")]
    prometheus_scrape_config: bool,
    /// Three controller replicas on different nodes, and a PodDisruptionBudget.
    #[arg(long)]
    ha: bool,
    /// Change one value, like controller.replicas=2 or logLevel=debug (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// A values file (YAML) applied before --set (repeatable).
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    values: Vec<PathBuf>,
    #[command(flatten)]
    identity: crate::trust::IdentityFiles,
}

/// Documents as one multi-document YAML text.
fn yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| format!("---\n{}", manifest::to_yaml(d)))
        .collect()
}

pub fn install(args: InstallArgs) -> anyhow::Result<()> {
    if args.crds {
        return print(&yaml(&install::crds()));
    }
    if args.prometheus_scrape_config {
        return print(&format!(
            "# Conduit's proxies, for the controller's --prometheus-url (conduit install --set prometheusUrl=URL).\n{}",
            manifest::to_yaml(&install::scrape_config())
        ));
    }
    let files = args
        .values
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the values file {}", p.display()))?;
            Ok((p.display().to_string(), text))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut sets = args.set.clone();
    if args.ha {
        sets.push("ha=true".into());
    }
    let values = Values::build(&files, &sets)?;
    let trust = match args.identity.load()? {
        Some(files) => files,
        None => ca::generate(
            Duration::from_secs(10 * 365 * 86_400),
            Duration::from_secs(365 * 86_400),
        )
        .context("generating the trust anchor and issuer")?,
    };
    let TrustFiles {
        anchor_pem,
        issuer_cert_pem,
        issuer_key_pem,
    } = trust;
    let serving = |dns_name: String, what: &str| -> anyhow::Result<ServingTls> {
        let (ca_pem, cert_pem, key_pem) =
            ca::serving_certificate(&[dns_name], Duration::from_secs(10 * 365 * 86_400))
                .with_context(|| format!("generating the {what}'s certificate"))?;
        Ok(ServingTls {
            ca_pem,
            cert_pem,
            key_pem,
        })
    };
    let docs = install::render(
        &values,
        &IdentityMaterial {
            anchors_pem: anchor_pem,
            issuer_cert_pem,
            issuer_key_pem,
        },
        &serving(
            control_plane::webhook_dns_name(&values.namespace),
            "injector webhook",
        )?,
        &serving(control_plane::api_dns_name(&values.namespace), "API")?,
    );
    print(&yaml(&docs))
}

#[derive(Args)]
pub struct UninstallArgs {
    /// The control plane's namespace.
    #[arg(long, default_value = control_plane::NAMESPACE)]
    namespace: String,
}

/// What to delete: the cluster-wide objects and the namespace (which holds the rest).
pub fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let named = |api: &str, kind: &str, name: &str| json!({ "apiVersion": api, "kind": kind, "metadata": { "name": name } });
    let rbac = "rbac.authorization.k8s.io/v1";
    let mut docs = vec![
        named(
            "apiregistration.k8s.io/v1",
            "APIService",
            public_api::API_SERVICE,
        ),
        named(rbac, "ClusterRole", public_api::VIEWER_ROLE),
        named(rbac, "ClusterRole", public_api::TAP_ROLE),
        named(
            rbac,
            "ClusterRoleBinding",
            control_plane::AUTH_DELEGATOR_BINDING,
        ),
        json!({ "apiVersion": rbac, "kind": "RoleBinding", "metadata": {
            "name": control_plane::AUTHENTICATION_READER_BINDING,
            "namespace": public_api::AUTHENTICATION_NAMESPACE,
        } }),
        named(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            control_plane::INJECTOR_WEBHOOK,
        ),
        named(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            control_plane::CONTROLLER,
        ),
        named(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            control_plane::CONTROLLER,
        ),
    ];
    for crd in install::crds() {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        docs.push(named(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            name,
        ));
    }
    docs.push(named("v1", "Namespace", &args.namespace));
    print(&yaml(&docs))
}

fn print(text: &str) -> anyhow::Result<()> {
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
