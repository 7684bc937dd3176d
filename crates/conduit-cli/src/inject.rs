//! `conduit inject` and `conduit uninject`: manifests in, manifests out (stdout), one
//! report line per object on stderr, as `linkerd inject` does.

use anyhow::Context as _;
use clap::Args;
use conduit_init::PortList;
use conduit_k8s::inject::{self, InjectOptions, Transformed};
use std::io::{Read, Write};

#[derive(Args)]
pub struct InjectArgs {
    /// The manifest: a file (YAML or JSON), a directory of them, or - for standard input.
    file: String,
    /// The proxy image to inject.
    #[arg(long)]
    proxy_image: Option<String>,
    /// Inbound ports the proxy must not intercept, like 22,9000-9010.
    #[arg(long, default_value = "")]
    skip_inbound_ports: PortList,
    /// Outbound ports the proxy must not intercept, like 25,3306.
    #[arg(long, default_value = "")]
    skip_outbound_ports: PortList,
    /// The injected proxy's log filter.
    #[arg(long)]
    proxy_log_level: Option<String>,
    /// Inject the proxy as a native sidecar (Kubernetes 1.29+); `false` makes it a regular
    /// first container that holds the others until it is ready.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    native_sidecar: bool,
}

#[derive(Args)]
pub struct UninjectArgs {
    /// The manifest: a file (YAML or JSON), a directory of them, or - for standard input.
    file: String,
}

/// The manifests `file` names: itself, or for a directory every `.yaml`, `.yml` and
/// `.json` file in it (not below it), in name order.
fn read_inputs(file: &str) -> anyhow::Result<Vec<(String, String)>> {
    let path = std::path::Path::new(file);
    if file == "-" || !path.is_dir() {
        return Ok(vec![read_input(file)?]);
    }
    let mut files: Vec<_> = std::fs::read_dir(path)
        .with_context(|| format!("reading the directory {file}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("{file} holds no .yaml, .yml or .json file");
    }
    files
        .iter()
        .map(|p| read_input(&p.display().to_string()))
        .collect()
}

/// Transforms every input, and only if all succeed, prints them as one manifest.
fn transform_all(
    file: &str,
    f: impl Fn(&str, &str) -> Result<Transformed, conduit_k8s::manifest::ManifestError>,
) -> anyhow::Result<()> {
    let mut output = String::new();
    let mut report = Vec::new();
    for (i, (source, text)) in read_inputs(file)?.iter().enumerate() {
        let t = f(text, source)?;
        if i > 0 && !t.output.is_empty() {
            if !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str("---\n");
        }
        output.push_str(&t.output);
        report.extend(t.report);
    }
    emit(Transformed { output, report })
}

/// Reads `file` (or stdin for `-`), naming it in errors.
pub fn read_input(file: &str) -> anyhow::Result<(String, String)> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        return Ok(("-".to_string(), text));
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    Ok((file.to_string(), text))
}

fn emit(t: Transformed) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    for outcome in &t.report {
        writeln!(err, "{outcome}")?;
    }
    std::io::stdout().lock().write_all(t.output.as_bytes())?;
    Ok(())
}

pub fn inject(args: InjectArgs) -> anyhow::Result<()> {
    let mut opts = InjectOptions::default();
    if let Some(image) = args.proxy_image {
        opts.proxy_image = image;
    }
    if let Some(log) = args.proxy_log_level {
        opts.log = log;
    }
    opts.native_sidecar = args.native_sidecar;
    opts.skip_inbound_ports = args
        .skip_inbound_ports
        .0
        .iter()
        .map(|p| p.to_string().replace(':', "-"))
        .collect();
    opts.skip_outbound_ports = args
        .skip_outbound_ports
        .0
        .iter()
        .map(|p| p.to_string().replace(':', "-"))
        .collect();
    transform_all(&args.file, |text, source| {
        inject::inject(text, source, &opts)
    })
}

pub fn uninject(args: UninjectArgs) -> anyhow::Result<()> {
    transform_all(&args.file, inject::uninject)
}
