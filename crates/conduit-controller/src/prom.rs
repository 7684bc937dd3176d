//! Reading the Prometheus/OpenMetrics text a proxy serves on `/metrics`: one sample per
//! line, `name{label="value",...} value`. Only what the metrics API needs is kept; lines
//! it cannot read are skipped, never fatal, because a scrape must not fail on one line.

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample in `text` whose metric name passes `keep`.
pub fn parse(text: &str, keep: impl Fn(&str) -> bool) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            let name = &l[..name_end];
            if !keep(name) {
                return None;
            }
            let (labels, rest) = if l[name_end..].starts_with('{') {
                let (labels, rest) = parse_labels(&l[name_end + 1..])?;
                (labels, rest)
            } else {
                (Vec::new(), &l[name_end..])
            };
            let value = rest.split_whitespace().next()?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some(Sample {
                name: name.to_string(),
                labels,
                value,
            })
        })
        .collect()
}

/// Parses `a="x",b="y"}` and returns the labels and what follows the brace.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(',').trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key, value));
        rest = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_labels_and_escapes() {
        let text = r#"# HELP request HTTP requests received.
# TYPE request counter
request_total{namespace="emojivoto",direction="inbound",authority="web:80"} 7
response_latency_ms_bucket{le="0.5",direction="inbound",authority="a\"b"} 3
response_latency_ms_bucket{le="+Inf",direction="inbound"} 4
tcp_open_total 2
garbage line without value
# EOF
"#;
        let all = parse(text, |_| true);
        assert_eq!(all.len(), 4, "{all:?}");
        assert_eq!(all[0].name, "request_total");
        assert_eq!(all[0].label("authority"), Some("web:80"));
        assert_eq!(all[0].value, 7.0);
        assert_eq!(all[1].label("authority"), Some("a\"b"));
        assert_eq!(all[2].label("le"), Some("+Inf"));
        assert_eq!(all[3].labels, vec![]);
        let only = parse(text, |n| n == "tcp_open_total");
        assert_eq!(only.len(), 1);
    }
}
