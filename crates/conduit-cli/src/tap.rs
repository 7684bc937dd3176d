//! `conduit tap deploy/NAME`: live requests of a resource's pods (and the connections
//! their policy kept out), one line per event, until Ctrl-C or `--max` of them.

use crate::api::{query_value as q, resource_kind, stream_lines, ControlPlaneArgs};
use anyhow::bail;
use clap::{Args, ValueEnum};
use serde_json::Value;
use std::io::Write;

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Args)]
pub struct TapArgs {
    /// What to tap: deploy/NAME, pod/NAME or ns/NAME.
    target: String,
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// Stop after this many requests.
    #[arg(long)]
    max: Option<u32>,
    /// Only requests whose path starts with this.
    #[arg(long, default_value = "")]
    path: String,
    /// Only requests whose authority contains this.
    #[arg(long, default_value = "")]
    authority: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

/// One event as a line, like `linkerd tap` prints it.
pub fn format_line(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    let who = |addr: &str, res: &str| {
        let r = e[res]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        format!("{}{r}", e[addr].as_str().unwrap_or(""))
    };
    let head = format!(
        "id={} proxy={} src={} dst={}",
        s("id"),
        if s("direction") == "inbound" {
            "in "
        } else {
            "out"
        },
        who("src", "src_resource"),
        who("dst", "dst_resource")
    );
    match e["type"].as_str().unwrap_or("") {
        "request" => format!(
            "req {head} :method={} :authority={} :path={}",
            s("method"),
            s("authority"),
            s("path")
        ),
        "response" => format!(
            "rsp {head} :status={} latency={}µs",
            e["status"], e["latency_us"]
        ),
        "end" => {
            let mut line = format!(
                "end {head} duration={}µs response-length={}B",
                e["duration_us"], e["response_bytes"]
            );
            if let Some(g) = e["grpc_status"].as_u64() {
                line.push_str(&format!(" grpc-status={g}"));
            }
            if let Some(err) = e["proxy_error"].as_str() {
                line.push_str(&format!(" proxy-error={err:?}"));
            }
            line
        }
        "denied" => {
            let mut line = format!("deny {head}");
            if let Some(id) = e["client_id"].as_str() {
                line.push_str(&format!(" client-id={id}"));
            }
            line.push_str(&format!(" proxy-error={:?}", s("proxy_error")));
            line
        }
        "error" => format!("error pod={} {}", s("pod"), s("error")),
        _ => e.to_string(),
    }
}

/// Splits `deploy/web` into the canonical kind and the name.
pub fn parse_target(target: &str) -> anyhow::Result<(&'static str, &str)> {
    let Some((kind, name)) = target.split_once('/') else {
        bail!("{target:?}: expected KIND/NAME, like deploy/web");
    };
    let Some(kind) = resource_kind(kind) else {
        bail!("{kind:?}: expected deploy, pod or ns");
    };
    Ok((kind, name))
}

pub fn run(args: TapArgs) -> anyhow::Result<()> {
    let (kind, name) = parse_target(&args.target)?;
    let mut path = format!(
        "/api/tap?resource={kind}&name={}&path={}&authority={}&max={}",
        q(name),
        q(&args.path),
        q(&args.authority),
        args.max.unwrap_or(0)
    );
    if kind != "ns" {
        path.push_str(&format!("&namespace={}", q(&args.namespace)));
    }
    let mut out = std::io::stdout().lock();
    let json = matches!(args.output, Output::Json);
    stream_lines(&args.control_plane.api()?, &path, |line| {
        if json {
            writeln!(out, "{line}")?;
        } else {
            let e: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            writeln!(out, "{}", format_line(&e))?;
        }
        out.flush()?;
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_linkerd_tap() {
        let req: Value = serde_json::from_str(
            r#"{"type":"request","id":"web-1:3","direction":"inbound","src":"198.18.0.6:4000","src_resource":"deploy/vote-bot","dst":"198.18.0.4:8080","method":"GET","authority":"web-svc.emojivoto","path":"/api/list"}"#,
        )
        .unwrap();
        assert_eq!(
            format_line(&req),
            "req id=web-1:3 proxy=in  src=198.18.0.6:4000 (deploy/vote-bot) dst=198.18.0.4:8080 :method=GET :authority=web-svc.emojivoto :path=/api/list"
        );
        let end: Value = serde_json::from_str(
            r#"{"type":"end","id":"web-1:3","direction":"outbound","src":"a","dst":"b","duration_us":812,"response_bytes":40,"grpc_status":2}"#,
        )
        .unwrap();
        assert_eq!(
            format_line(&end),
            "end id=web-1:3 proxy=out src=a dst=b duration=812µs response-length=40B grpc-status=2"
        );
        let denied: Value = serde_json::from_str(
            r#"{"type":"denied","id":"web-1:4","direction":"inbound","src":"198.18.0.6:4000","src_resource":"deploy/vote-bot","dst":"198.18.0.4:7000","client_id":"vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local","proxy_error":"forbidden by policy: no"}"#,
        )
        .unwrap();
        assert_eq!(
            format_line(&denied),
            "deny id=web-1:4 proxy=in  src=198.18.0.6:4000 (deploy/vote-bot) dst=198.18.0.4:7000 client-id=vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local proxy-error=\"forbidden by policy: no\""
        );
    }
}
