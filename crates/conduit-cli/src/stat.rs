//! `conduit stat` and `conduit edges`: golden metrics per resource, and who calls whom,
//! as tables (or JSON with `-o json`), kubectl-style.

use crate::api::{get, ApiAddr, ControlPlaneArgs};
use clap::{Args, ValueEnum};
use conduit_api::http::{EdgeRow, EdgesQuery, Resource, StatQuery, StatRow};
use std::io::Write;

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
}

#[derive(Args)]
pub struct StatArgs {
    /// deploy, pod or ns (their long forms work too).
    resource: String,
    /// Only this resource.
    name: Option<String>,
    #[command(flatten)]
    query: Query,
}

#[derive(Args)]
pub struct EdgesArgs {
    /// deploy (edges are between deployments).
    resource: String,
    #[command(flatten)]
    query: Query,
}

/// What every metrics query takes: where, over what window, printed how, asked of whom.
#[derive(Args)]
pub struct Query {
    /// The namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// The time window the metrics cover, like 30s, 1m, 10m.
    #[arg(long, default_value = "1m")]
    window: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

impl Query {
    fn namespace(&self) -> Option<&str> {
        (!self.all_namespaces).then_some(self.namespace.as_str())
    }

    fn api(&self) -> anyhow::Result<ApiAddr> {
        self.control_plane.api()
    }
}

/// Fetches stat rows.
pub fn fetch_stat(
    api: &ApiAddr,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    window: &str,
) -> anyhow::Result<Vec<StatRow>> {
    let query = StatQuery {
        resource: resource.to_string(),
        window: Some(window.to_string()),
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
    };
    get(api, &query)
}

pub fn stat(args: StatArgs) -> anyhow::Result<()> {
    let q = &args.query;
    let ns = q.namespace();
    let rows = fetch_stat(
        &q.api()?,
        &args.resource,
        ns,
        args.name.as_deref(),
        &q.window,
    )?;
    let mut out = std::io::stdout().lock();
    match q.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Output::Table | Output::Wide => {
            if rows.is_empty() {
                writeln!(
                    out,
                    "No resources found{}.",
                    ns.map(|n| format!(" in namespace {n}")).unwrap_or_default()
                )?;
            } else {
                let wide = matches!(q.output, Output::Wide);
                print_stat(&rows, q.all_namespaces || wide, wide, &mut out)?;
            }
        }
    }
    Ok(())
}

pub fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x < 10.0 => format!("{x:.1}ms"),
        Some(x) => format!("{x:.0}ms"),
    }
}

/// A rate of 0..1 as a percentage with `decimals`, `-` when there is none.
pub fn percent(rate: Option<f64>, decimals: usize) -> String {
    rate.map_or("-".into(), |s| format!("{:.decimals$}%", s * 100.0))
}

/// Prints stat rows as the table of `conduit stat`; `wide`: the success rate as the
/// resource's clients saw it (effective, after retries) beside every attempt's (actual).
pub fn print_stat(
    rows: &[StatRow],
    with_namespace: bool,
    wide: bool,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = Vec::new();
            if with_namespace {
                row.push(r.namespace.clone());
            }
            row.push(r.name.clone());
            row.push(r.meshed.clone());
            if wide {
                row.push(percent(r.effective_success_rate, 2));
            }
            row.push(percent(r.success_rate, 2));
            row.push(if r.success_rate.is_none() {
                "-".into()
            } else {
                format!("{:.1}rps", r.request_rate)
            });
            row.push(ms(r.latency_ms_p50));
            row.push(ms(r.latency_ms_p95));
            row.push(ms(r.latency_ms_p99));
            row.push(percent(r.tls_rate, 0));
            row.push(r.tcp_connections.to_string());
            row
        })
        .collect();
    let mut header = vec![
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TLS",
        "TCP_CONN",
    ];
    if wide {
        header.splice(2..3, ["EFFECTIVE_SUCCESS", "ACTUAL_SUCCESS"]);
    }
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    print_table(&header, &table, out)
}

/// Left-aligned columns, three spaces apart, as kubectl prints them.
pub fn print_table(
    header: &[&str],
    rows: &[Vec<String>],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>, out: &mut dyn Write| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s.push_str(&format!("{c:<w$}   ", w = widths[i]));
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(header.to_vec(), out)?;
    for r in rows {
        line(r.iter().map(String::as_str).collect(), out)?;
    }
    Ok(())
}

pub fn edges(args: EdgesArgs) -> anyhow::Result<()> {
    if Resource::parse(&args.resource) != Some(Resource::Deployment) {
        anyhow::bail!("edges are between deployments: use `conduit edges deploy`");
    }
    let query = &args.query;
    let edges = EdgesQuery {
        window: Some(query.window.clone()),
        namespace: query.namespace().map(str::to_string),
    };
    let rows = get(&query.api()?, &edges)?;
    let mut out = std::io::stdout().lock();
    if let Output::Json = query.output {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "No edges found (no meshed traffic in the window).")?;
        return Ok(());
    }
    print_edges(&rows, matches!(query.output, Output::Wide), &mut out)?;
    Ok(())
}

/// Prints edge rows as the table of `conduit edges`; `wide` adds both ends' identities.
pub fn print_edges(rows: &[EdgeRow], wide: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.src.clone(),
                r.dst.clone(),
                r.src_namespace.clone(),
                r.dst_namespace.clone(),
                format!("{:.1}rps", r.request_rate),
                percent(r.success_rate, 2),
                // Secured: all of it over mutual TLS, none of it, or the share that was.
                match r.tls_rate {
                    t if t >= 1.0 => "√".to_string(),
                    t if t <= 0.0 => "×".to_string(),
                    t => format!("{:.0}%", t * 100.0),
                },
            ];
            if wide {
                row.push(r.client_id.clone().unwrap_or_else(|| "-".into()));
                row.push(if r.server_ids.is_empty() {
                    "-".to_string()
                } else {
                    r.server_ids.join(",")
                });
            }
            row
        })
        .collect();
    let mut header = vec![
        "SRC", "DST", "SRC_NS", "DST_NS", "RPS", "SUCCESS", "SECURED",
    ];
    if wide {
        header.extend(["CLIENT_ID", "SERVER_ID"]);
    }
    print_table(&header, &table, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_tables_show_percentages_rates_and_dashes() {
        let rows: Vec<StatRow> = serde_json::from_str(
            r#"[{"namespace":"emojivoto","name":"voting","meshed":"1/1","success_rate":0.9667,"request_rate":2.04,
                 "latency_ms_p50":0.73,"latency_ms_p95":4.2,"latency_ms_p99":12.6,"tls_rate":0.996,"tcp_connections":2},
                {"namespace":"emojivoto","name":"vote-bot","meshed":"0/1","success_rate":null,"request_rate":0.0,
                 "latency_ms_p50":null,"latency_ms_p95":null,"latency_ms_p99":null,"tls_rate":null,"tcp_connections":0}]"#,
        )
        .unwrap();
        let mut out = Vec::new();
        print_stat(&rows, false, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME       MESHED   SUCCESS   RPS      LATENCY_P50   LATENCY_P95   LATENCY_P99   TLS    TCP_CONN"
        );
        assert_eq!(
            lines[1],
            "voting     1/1      96.67%    2.0rps   0.7ms         4.2ms         13ms          100%   2"
        );
        assert_eq!(
            lines[2],
            "vote-bot   0/1      -         -        -             -             -             -      0"
        );
    }

    #[test]
    fn wide_stat_tables_split_effective_and_actual_success() {
        let rows: Vec<StatRow> = serde_json::from_str(
            r#"[{"namespace":"shop","name":"flaky","meshed":"3/3","success_rate":0.8,"request_rate":85.0,
                 "latency_ms_p50":4.0,"latency_ms_p95":20.0,"latency_ms_p99":30.0,"tls_rate":1.0,"tcp_connections":3,
                 "effective_success_rate":0.999}]"#,
        )
        .unwrap();
        let mut out = Vec::new();
        print_stat(&rows, true, true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header[..5],
            [
                "NAMESPACE",
                "NAME",
                "MESHED",
                "EFFECTIVE_SUCCESS",
                "ACTUAL_SUCCESS"
            ]
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[..5], ["shop", "flaky", "3/3", "99.90%", "80.00%"]);
    }

    #[test]
    fn edges_say_whether_traffic_was_secured_and_wide_names_both_ends() {
        let rows: Vec<EdgeRow> = serde_json::from_str(
            r#"[{"src":"web","dst":"voting","src_namespace":"emojivoto","dst_namespace":"emojivoto",
                 "request_rate":2.0,"success_rate":1.0,"tls_rate":1.0,
                 "client_id":"web.emojivoto.serviceaccount.identity.conduit.cluster.local",
                 "server_ids":["voting.emojivoto.serviceaccount.identity.conduit.cluster.local"]},
                {"src":"web","dst":"legacy","src_namespace":"emojivoto","dst_namespace":"emojivoto",
                 "request_rate":1.0,"success_rate":1.0,"tls_rate":0.0,"client_id":null,"server_ids":[]}]"#,
        )
        .unwrap();
        let mut out = Vec::new();
        print_edges(&rows, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SRC   DST      SRC_NS      DST_NS      RPS      SUCCESS   SECURED"
        );
        assert_eq!(
            lines[1],
            "web   voting   emojivoto   emojivoto   2.0rps   100.00%   √"
        );
        assert_eq!(
            lines[2],
            "web   legacy   emojivoto   emojivoto   1.0rps   100.00%   ×"
        );
        let mut out = Vec::new();
        print_edges(&rows, true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines().next().unwrap().ends_with(
                "SECURED   CLIENT_ID                                                     SERVER_ID"
            ),
            "{text}"
        );
        assert!(text.contains("√         web.emojivoto.serviceaccount.identity.conduit.cluster.local   voting.emojivoto.serviceaccount.identity.conduit.cluster.local"), "{text}");
        assert!(
            text.lines().nth(2).unwrap().ends_with(
                "×         -                                                             -"
            ),
            "{text}"
        );
    }
}
