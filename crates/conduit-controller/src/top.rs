//! Top: the busiest paths of a resource over a window, from its live tap events (as
//! `linkerd top` does): requests per path and direction, their success rate, and their
//! latency to the response head.

use crate::store::histogram_quantile;
use conduit_api::http::{TapLine, TapLineKind, TopRow};
use std::collections::HashMap;

/// Builds top rows from events as they arrive.
#[derive(Default)]
pub struct Top {
    /// Requests seen, by id: their row key.
    open: HashMap<String, (RowKey, Option<u32>)>,
    rows: HashMap<RowKey, Agg>,
}

type RowKey = (String, String, String, String);

#[derive(Default)]
struct Agg {
    requests: u64,
    ended: u64,
    succeeded: u64,
    latencies_ms: Vec<f64>,
}

impl Top {
    /// Adds one event.
    pub fn add(&mut self, l: &TapLine) {
        match l.kind {
            TapLineKind::Request => {
                // An unknown peer is its address without the (ephemeral) port.
                let ip = |addr: &str| addr.rsplit_once(':').map_or(addr, |(ip, _)| ip).to_string();
                let peer = if l.direction == "inbound" {
                    l.src_resource.clone().unwrap_or_else(|| ip(&l.src))
                } else {
                    l.dst_resource.clone().unwrap_or_else(|| ip(&l.dst))
                };
                let path = l.path.as_deref().unwrap_or("/");
                let path = path.split('?').next().unwrap_or(path).to_string();
                let key = (
                    l.direction.clone(),
                    peer,
                    l.authority.clone().unwrap_or_default(),
                    path,
                );
                self.rows.entry(key.clone()).or_default().requests += 1;
                self.open.insert(l.id.clone(), (key, None));
            }
            TapLineKind::Response => {
                if let Some((key, status)) = self.open.get_mut(&l.id) {
                    *status = l.status;
                    if let (Some(us), Some(agg)) = (l.latency_us, self.rows.get_mut(key)) {
                        agg.latencies_ms.push(us as f64 / 1000.0);
                    }
                }
            }
            TapLineKind::End => {
                if let Some((key, status)) = self.open.remove(&l.id) {
                    let ok = match (l.grpc_status, status) {
                        (Some(g), _) => g == 0,
                        (None, Some(s)) => s < 500,
                        (None, None) => false,
                    } && l.proxy_error.is_none();
                    if let Some(agg) = self.rows.get_mut(&key) {
                        agg.ended += 1;
                        agg.succeeded += u64::from(ok);
                    }
                }
            }
            TapLineKind::Denied
            | TapLineKind::Ejected
            | TapLineKind::Restored
            | TapLineKind::Error => {}
        }
    }

    /// The rows, busiest first.
    pub fn rows(self) -> Vec<TopRow> {
        let mut rows: Vec<TopRow> = self
            .rows
            .into_iter()
            .map(|((direction, peer, authority, path), mut agg)| {
                agg.latencies_ms.sort_by(f64::total_cmp);
                // Exact quantiles over the samples, expressed as cumulative buckets.
                let buckets: Vec<(f64, f64)> = agg
                    .latencies_ms
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (*v, (i + 1) as f64))
                    .collect();
                TopRow {
                    direction,
                    peer,
                    authority,
                    path,
                    requests: agg.requests,
                    success_rate: (agg.ended > 0).then(|| agg.succeeded as f64 / agg.ended as f64),
                    latency_ms_p50: histogram_quantile(0.5, &buckets),
                    latency_ms_max: agg.latencies_ms.last().copied(),
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.requests
                .cmp(&a.requests)
                .then_with(|| a.path.cmp(&b.path))
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: TapLineKind, id: &str, path: &str) -> TapLine {
        let request = kind == TapLineKind::Request;
        TapLine {
            id: id.into(),
            direction: "inbound".into(),
            src: "198.18.0.5:1".into(),
            src_resource: Some("deploy/vote-bot".into()),
            path: request.then(|| path.to_string()),
            authority: request.then(|| "web-svc".to_string()),
            ..TapLine::new(kind)
        }
    }

    #[test]
    fn groups_by_path_and_counts_success() {
        let mut top = Top::default();
        for (i, (path, status)) in [
            ("/api/vote?choice=:joy:", 200),
            ("/api/vote?choice=:doughnut:", 500),
            ("/api/list", 200),
            ("/api/vote?choice=:cat:", 200),
        ]
        .into_iter()
        .enumerate()
        {
            let id = i.to_string();
            top.add(&event(TapLineKind::Request, &id, path));
            let mut rsp = event(TapLineKind::Response, &id, path);
            rsp.status = Some(status);
            rsp.latency_us = Some(1000 * (i as u64 + 1));
            top.add(&rsp);
            top.add(&event(TapLineKind::End, &id, path));
        }
        let rows = top.rows();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].path.as_str(), rows[0].requests), ("/api/vote", 3));
        assert_eq!(rows[0].peer, "deploy/vote-bot");
        assert!((rows[0].success_rate.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(rows[0].latency_ms_max, Some(4.0));
        assert_eq!(
            (rows[1].path.as_str(), rows[1].success_rate),
            ("/api/list", Some(1.0))
        );
    }
}
