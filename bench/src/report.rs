//! Turns the JSON lines written by the scenarios into a markdown report with
//! absolute figures, ratios to direct, ratios to bottle and bottle's targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::load::Record;

/// The order of columns; other labels follow in the order first seen.
const KNOWN: [&str; 4] = ["direct", "bottle", "squid", "mitmproxy"];

/// Reads a JSONL results file (blank lines and lines starting with `#` are skipped).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read results file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a result record", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// Which way is better for a metric.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

/// One row: how to extract a value (None = not measured) from a label's records.
struct Metric {
    name: &'static str,
    unit: &'static str,
    better: Better,
    /// Ratio to direct is meaningful (throughput-like metrics).
    vs_direct: bool,
    get: fn(&Results, &str) -> Option<f64>,
}

/// Records indexed by (label, scenario).
pub struct Results {
    labels: Vec<String>,
    by: BTreeMap<(String, String), Record>,
    unavailable: BTreeMap<String, String>,
}

impl Results {
    /// Indexes records; a later record for the same (label, scenario) wins.
    pub fn new(records: Vec<Record>) -> Self {
        let mut labels: Vec<String> = Vec::new();
        let mut by = BTreeMap::new();
        let mut unavailable = BTreeMap::new();
        for r in records {
            if !labels.contains(&r.label) {
                labels.push(r.label.clone());
            }
            if r.scenario == "unavailable" {
                unavailable.insert(r.label.clone(), r.first_error.clone().unwrap_or_default());
                continue;
            }
            by.insert((r.label.clone(), r.scenario.clone()), r);
        }
        labels.sort_by_key(|l| KNOWN.iter().position(|k| k == l).unwrap_or(KNOWN.len()));
        Self {
            labels,
            by,
            unavailable,
        }
    }

    fn get(&self, label: &str, scenario: &str) -> Option<&Record> {
        self.by.get(&(label.to_string(), scenario.to_string()))
    }

    /// A throughput figure, only if the scenario completed requests.
    fn rps(&self, label: &str, scenario: &str) -> Option<f64> {
        self.get(label, scenario)
            .filter(|r| r.requests > 0)
            .map(|r| r.rps)
    }

    fn latency(&self, label: &str, scenario: &str, p99: bool) -> Option<f64> {
        self.get(label, scenario)
            .filter(|r| r.requests > 0)
            .map(|r| if p99 { r.p99_us } else { r.p50_us } as f64 / 1000.0)
    }

    fn added(&self, label: &str, scenario: &str, p99: bool) -> Option<f64> {
        if label == "direct" {
            return None;
        }
        Some(self.latency(label, scenario, p99)? - self.latency("direct", scenario, p99)?)
    }
}

fn metrics() -> Vec<Metric> {
    vec![
        Metric {
            name: "keep-alive req/s, 8 conns",
            unit: "req/s",
            better: Better::Higher,
            vs_direct: true,
            get: |r, l| r.rps(l, "ka8"),
        },
        Metric {
            name: "keep-alive req/s, 64 conns",
            unit: "req/s",
            better: Better::Higher,
            vs_direct: true,
            get: |r, l| r.rps(l, "ka64"),
        },
        Metric {
            name: "new-connection req/s (full TLS handshake each)",
            unit: "req/s",
            better: Better::Higher,
            vs_direct: true,
            get: |r, l| r.rps(l, "newconn"),
        },
        Metric {
            name: "bulk download",
            unit: "MB/s",
            better: Better::Higher,
            vs_direct: true,
            get: |r, l| {
                r.get(l, "bulk")
                    .filter(|b| b.requests > 0)
                    .map(|b| b.mb_per_s)
            },
        },
        Metric {
            name: "added p50 latency, 8 conns paced",
            unit: "ms",
            better: Better::Lower,
            vs_direct: false,
            get: |r, l| r.added(l, "lat8", false),
        },
        Metric {
            name: "added p99 latency, 8 conns paced",
            unit: "ms",
            better: Better::Lower,
            vs_direct: false,
            get: |r, l| r.added(l, "lat8", true),
        },
        Metric {
            name: "added p50 latency, 8 conns saturated",
            unit: "ms",
            better: Better::Lower,
            vs_direct: false,
            get: |r, l| r.added(l, "ka8", false),
        },
        Metric {
            name: "added p99 latency, 8 conns saturated",
            unit: "ms",
            better: Better::Lower,
            vs_direct: false,
            get: |r, l| r.added(l, "ka8", true),
        },
        Metric {
            name: "idle RSS",
            unit: "MB",
            better: Better::Lower,
            vs_direct: false,
            get: |r, l| r.get(l, "idle").and_then(|x| x.rss_kb).map(kb_to_mb),
        },
        Metric {
            name: "peak RSS during the bulk download",
            unit: "MB",
            better: Better::Lower,
            vs_direct: false,
            get: |r, l| r.get(l, "bulk").and_then(|x| x.rss_kb).map(kb_to_mb),
        },
    ]
}

fn kb_to_mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        let s = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 {
            format!("-{out}")
        } else {
            out
        }
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.1}×")
    } else if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        format!("{r:.3}×")
    }
}

/// Bottle's targets from issue 2: (metric name, threshold, description).
struct Goal {
    what: &'static str,
    need: &'static str,
    check: fn(&Results) -> Option<(String, bool)>,
}

fn ratio_goal(r: &Results, scenario: &str, min: f64) -> Option<(String, bool)> {
    let b = r.rps("bottle", scenario)?;
    let d = r.rps("direct", scenario)?;
    let x = b / d;
    Some((fmt_ratio(x), x >= min))
}

fn goals() -> Vec<Goal> {
    vec![
        Goal {
            what: "keep-alive, 8 conns",
            need: "≥ 0.45× direct",
            check: |r| ratio_goal(r, "ka8", 0.45),
        },
        Goal {
            what: "keep-alive, 64 conns",
            need: "≥ 0.45× direct",
            check: |r| ratio_goal(r, "ka64", 0.45),
        },
        Goal {
            what: "new connections",
            need: "≥ 0.6× direct",
            check: |r| ratio_goal(r, "newconn", 0.6),
        },
        Goal {
            what: "bulk 1 GiB",
            need: "≥ 0.6× direct",
            check: |r| {
                let b = r.get("bottle", "bulk").filter(|x| x.requests > 0)?.mb_per_s;
                let d = r.get("direct", "bulk").filter(|x| x.requests > 0)?.mb_per_s;
                Some((fmt_ratio(b / d), b / d >= 0.6))
            },
        },
        Goal {
            what: "added p50, 8 conns (paced)",
            need: "≤ 0.3 ms",
            check: |r| {
                let a = r.added("bottle", "lat8", false)?;
                Some((format!("{a:.3} ms"), a <= 0.3))
            },
        },
        Goal {
            what: "idle RSS",
            need: "≤ 20 MB",
            check: |r| {
                let m = kb_to_mb(r.get("bottle", "idle")?.rss_kb?);
                Some((format!("{m:.1} MB"), m <= 20.0))
            },
        },
        Goal {
            what: "peak RSS, bulk download",
            need: "≤ 64 MB",
            check: |r| {
                let m = kb_to_mb(r.get("bottle", "bulk")?.rss_kb?);
                Some((format!("{m:.1} MB"), m <= 64.0))
            },
        },
    ]
}

/// Renders the markdown report.
pub fn render(r: &Results) -> String {
    let mut s = String::new();
    let labels = &r.labels;
    let has_direct = labels.iter().any(|l| l == "direct");

    let _ = writeln!(s, "### Absolute figures (ratio to direct in parentheses)\n");
    let _ = write!(s, "| metric |");
    for l in labels {
        let _ = write!(s, " {l} |");
    }
    let _ = write!(s, "\n|---|");
    for _ in labels {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    for m in metrics() {
        let _ = write!(s, "| {} ({}) |", m.name, m.unit);
        let direct = if has_direct {
            (m.get)(r, "direct")
        } else {
            None
        };
        for l in labels {
            let cell = if r.unavailable.contains_key(l) {
                "not run".to_string()
            } else {
                match (m.get)(r, l) {
                    None => "—".to_string(),
                    Some(v) => match direct {
                        Some(d) if m.vs_direct && l != "direct" && d > 0.0 => {
                            format!("{} ({})", fmt_num(v), fmt_ratio(v / d))
                        }
                        _ => fmt_num(v),
                    },
                }
            };
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    let _ = write!(s, "| errors (all scenarios) |");
    for l in labels {
        let errs: u64 =
            r.by.iter()
                .filter(|((lab, _), _)| lab == l)
                .map(|(_, x)| x.errors)
                .sum();
        let _ = write!(s, " {errs} |");
    }
    s.push('\n');

    let others: Vec<&String> = labels
        .iter()
        .filter(|l| *l != "direct" && *l != "bottle")
        .collect();
    if labels.iter().any(|l| l == "bottle") && !others.is_empty() {
        let _ = writeln!(
            s,
            "\n### Other proxies relative to bottle (> 1× means better than bottle)\n"
        );
        let _ = write!(s, "| metric |");
        for l in &others {
            let _ = write!(s, " {l} vs bottle |");
        }
        let _ = write!(s, "\n|---|");
        for _ in &others {
            let _ = write!(s, "---:|");
        }
        s.push('\n');
        for m in metrics()
            .into_iter()
            .filter(|m| !m.name.starts_with("added"))
        {
            let _ = write!(s, "| {} |", m.name);
            for l in &others {
                let cell = match ((m.get)(r, l), (m.get)(r, "bottle")) {
                    (Some(v), Some(b)) if v > 0.0 && b > 0.0 => match m.better {
                        Better::Higher => fmt_ratio(v / b),
                        Better::Lower => fmt_ratio(b / v),
                    },
                    _ => "—".to_string(),
                };
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
    }

    let _ = writeln!(s, "\n### bottle against its targets (issue 2)\n");
    if let Some(why) = r.unavailable.get("bottle") {
        let _ = writeln!(s, "bottle-sidecar was not measured: {why}");
    } else {
        let _ = writeln!(s, "| target | required | measured | |\n|---|---|---:|---|");
        for g in goals() {
            let (v, ok) = match (g.check)(r) {
                Some((v, ok)) => (v, if ok { "met" } else { "**MISSED**" }),
                None => ("—".to_string(), "not measured"),
            };
            let _ = writeln!(s, "| {} | {} | {v} | {ok} |", g.what, g.need);
        }
    }

    let mut notes = Vec::new();
    for (l, why) in &r.unavailable {
        notes.push(format!("- {l}: not run — {why}"));
    }
    for ((l, sc), x) in &r.by {
        if let Some(e) = &x.first_error {
            notes.push(format!(
                "- {l} / {sc}: {} error(s){}; first: {e}",
                x.errors,
                if x.timed_out { " (timed out)" } else { "" }
            ));
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\n### Errors and notes\n");
        for n in notes {
            let _ = writeln!(s, "{n}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(label: &str, scenario: &str, rps: f64) -> Record {
        Record {
            label: label.into(),
            scenario: scenario.into(),
            requests: 10,
            rps,
            p50_us: 1000,
            p99_us: 2000,
            ..Record::default()
        }
    }

    #[test]
    fn ratios_and_goals() {
        let mut b = rec("bottle", "ka8", 500.0);
        b.p50_us = 1200;
        let r = Results::new(vec![
            rec("direct", "ka8", 1000.0),
            b,
            rec("squid", "ka8", 200.0),
            Record {
                label: "mitmproxy".into(),
                scenario: "unavailable".into(),
                first_error: Some("mitmdump not installed".into()),
                ..Record::default()
            },
        ]);
        let md = render(&r);
        assert!(
            md.contains("| 1,000 | 500 (0.50×) | 200 (0.20×) | not run |"),
            "{md}"
        );
        assert!(
            md.contains("| keep-alive, 8 conns | ≥ 0.45× direct | 0.50× | met |"),
            "{md}"
        );
        assert!(md.contains("0.40×"), "squid vs bottle: {md}");
        assert!(
            md.contains("mitmproxy: not run — mitmdump not installed"),
            "{md}"
        );
        assert!(
            md.contains("| added p50 latency, 8 conns saturated (ms) | — | 0.20 |"),
            "{md}"
        );
    }

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_num(1234567.0), "1,234,567");
        assert_eq!(fmt_num(-1500.0), "-1,500");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_ratio(0.0141), "0.014×");
    }
}
