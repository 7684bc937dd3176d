//! `conduit tap deploy/NAME`: live requests of a resource's pods (and the connections
//! their policy kept out), one line per event, until Ctrl-C or `--max` of them.

use crate::api::{stream, ControlPlaneArgs};
use anyhow::bail;
use clap::{Args, ValueEnum};
use conduit_api::http::{Resource, TapLine, TapLineKind, TapQuery};
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
pub fn format_line(e: &TapLine) -> String {
    let who = |addr: &str, resource: &Option<String>| match resource {
        Some(r) => format!("{addr} ({r})"),
        None => addr.to_string(),
    };
    let head = format!(
        "id={} proxy={} src={} dst={}",
        e.id,
        if e.direction == "inbound" {
            "in "
        } else {
            "out"
        },
        who(&e.src, &e.src_resource),
        who(&e.dst, &e.dst_resource)
    );
    // A number the line lacks shows as JSON shows a missing value.
    let number = |n: Option<u64>| n.map_or("null".to_string(), |n| n.to_string());
    let text = |t: &Option<String>| t.clone().unwrap_or_default();
    match e.kind {
        TapLineKind::Request => format!(
            "req {head} :method={} :authority={} :path={}",
            text(&e.method),
            text(&e.authority),
            text(&e.path)
        ),
        TapLineKind::Response => format!(
            "rsp {head} :status={} latency={}µs",
            number(e.status.map(u64::from)),
            number(e.latency_us)
        ),
        TapLineKind::End => {
            let mut line = format!(
                "end {head} duration={}µs response-length={}B",
                number(e.duration_us),
                number(e.response_bytes)
            );
            if let Some(g) = e.grpc_status {
                line.push_str(&format!(" grpc-status={g}"));
            }
            if let Some(err) = &e.proxy_error {
                line.push_str(&format!(" proxy-error={err:?}"));
            }
            line
        }
        TapLineKind::Denied => {
            let mut line = format!("deny {head}");
            if let Some(id) = &e.client_id {
                line.push_str(&format!(" client-id={id}"));
            }
            line.push_str(&format!(" proxy-error={:?}", text(&e.proxy_error)));
            line
        }
        TapLineKind::Ejected => format!(
            "eject proxy=out dst={} backoff={}ms",
            who(&e.dst, &e.dst_resource),
            number(e.backoff_ms)
        ),
        TapLineKind::Restored => format!("restore proxy=out dst={}", who(&e.dst, &e.dst_resource)),
        TapLineKind::Error => format!("error pod={} {}", e.pod, text(&e.error)),
    }
}

/// Splits `deploy/web` into its kind and name.
pub fn parse_target(target: &str) -> anyhow::Result<(Resource, &str)> {
    let Some((kind, name)) = target.split_once('/') else {
        bail!("{target:?}: expected KIND/NAME, like deploy/web");
    };
    let Some(kind) = Resource::parse(kind) else {
        bail!("{kind:?}: expected {}", Resource::EXPECTED);
    };
    Ok((kind, name))
}

/// The namespace a query about `kind` is asked in: none for a namespace itself.
pub fn target_namespace(kind: Resource, namespace: &str) -> Option<String> {
    (kind != Resource::Namespace).then(|| namespace.to_string())
}

pub fn run(args: TapArgs) -> anyhow::Result<()> {
    let (kind, name) = parse_target(&args.target)?;
    let query = TapQuery {
        resource: kind.short_name().to_string(),
        name: Some(name.to_string()),
        path: args.path.clone(),
        authority: args.authority.clone(),
        max: args.max.unwrap_or(0),
        namespace: target_namespace(kind, &args.namespace),
    };
    let mut out = std::io::stdout().lock();
    let json = matches!(args.output, Output::Json);
    stream(&args.control_plane.api()?, &query, |event, line| {
        if json {
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{}", format_line(&event))?;
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
        let req: TapLine = serde_json::from_str(
            r#"{"type":"request","id":"web-1:3","direction":"inbound","src":"198.18.0.6:4000","src_resource":"deploy/vote-bot","dst":"198.18.0.4:8080","method":"GET","authority":"web-svc.emojivoto","path":"/api/list"}"#,
        )
        .unwrap();
        assert_eq!(
            format_line(&req),
            "req id=web-1:3 proxy=in  src=198.18.0.6:4000 (deploy/vote-bot) dst=198.18.0.4:8080 :method=GET :authority=web-svc.emojivoto :path=/api/list"
        );
        let end: TapLine = serde_json::from_str(
            r#"{"type":"end","id":"web-1:3","direction":"outbound","src":"a","dst":"b","duration_us":812,"response_bytes":40,"grpc_status":2}"#,
        )
        .unwrap();
        assert_eq!(
            format_line(&end),
            "end id=web-1:3 proxy=out src=a dst=b duration=812µs response-length=40B grpc-status=2"
        );
        let denied: TapLine = serde_json::from_str(
            r#"{"type":"denied","id":"web-1:4","direction":"inbound","src":"198.18.0.6:4000","src_resource":"deploy/vote-bot","dst":"198.18.0.4:7000","client_id":"vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local","proxy_error":"forbidden by policy: no"}"#,
        )
        .unwrap();
        assert_eq!(
            format_line(&denied),
            "deny id=web-1:4 proxy=in  src=198.18.0.6:4000 (deploy/vote-bot) dst=198.18.0.4:7000 client-id=vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local proxy-error=\"forbidden by policy: no\""
        );
    }
}
