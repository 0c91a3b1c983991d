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

/// The order of the WebSocket table's columns; other labels follow in the order first seen.
const WS_KNOWN: [&str; 6] = [
    "direct",
    "bottle",
    "bottle-dlpoff",
    "bottle-noscan",
    "squid",
    "mitmproxy",
];

/// Is this a WebSocket scenario (`ws1k`, `ws64k`, ...)?
fn is_ws(scenario: &str) -> bool {
    scenario.starts_with("ws")
}

/// Records indexed by (label, scenario).
pub struct Results {
    /// Columns of the HTTP tables.
    labels: Vec<String>,
    /// Columns of the WebSocket table.
    ws_labels: Vec<String>,
    /// WebSocket scenarios in the order first seen.
    ws_scenarios: Vec<String>,
    /// Every record of a (label, scenario), in file order (WebSocket runs repeat).
    by: BTreeMap<(String, String), Vec<Record>>,
    unavailable: BTreeMap<String, String>,
    /// WebSocket columns that could not run (label → reason); written as label `NAME-ws`.
    ws_unavailable: BTreeMap<String, String>,
}

impl Results {
    /// Indexes records. HTTP figures use the last record of a (label, scenario); WebSocket
    /// scenarios, which run several alternating rounds, use the median and the range.
    pub fn new(records: Vec<Record>) -> Self {
        let mut labels: Vec<String> = Vec::new();
        let mut ws_labels: Vec<String> = Vec::new();
        let mut ws_scenarios: Vec<String> = Vec::new();
        let mut by: BTreeMap<(String, String), Vec<Record>> = BTreeMap::new();
        let mut unavailable = BTreeMap::new();
        let mut ws_unavailable = BTreeMap::new();
        for r in records {
            if r.scenario == "unavailable" {
                let why = r.first_error.clone().unwrap_or_default();
                if let Some(base) = r.label.strip_suffix("-ws") {
                    if !ws_labels.iter().any(|l| l == base) {
                        ws_labels.push(base.to_string());
                    }
                    ws_unavailable.insert(base.to_string(), why);
                } else {
                    if !r.label.starts_with("bottle-") && !labels.contains(&r.label) {
                        labels.push(r.label.clone());
                    }
                    if !ws_labels.contains(&r.label) {
                        ws_labels.push(r.label.clone());
                    }
                    unavailable.insert(r.label.clone(), why);
                }
                continue;
            }
            if is_ws(&r.scenario) {
                if !ws_labels.contains(&r.label) {
                    ws_labels.push(r.label.clone());
                }
                if !ws_scenarios.contains(&r.scenario) {
                    ws_scenarios.push(r.scenario.clone());
                }
            } else if !labels.contains(&r.label) {
                labels.push(r.label.clone());
            }
            by.entry((r.label.clone(), r.scenario.clone()))
                .or_default()
                .push(r);
        }
        labels.sort_by_key(|l| KNOWN.iter().position(|k| k == l).unwrap_or(KNOWN.len()));
        ws_labels.sort_by_key(|l| {
            WS_KNOWN
                .iter()
                .position(|k| k == l)
                .unwrap_or(WS_KNOWN.len())
        });
        Self {
            labels,
            ws_labels,
            ws_scenarios,
            by,
            unavailable,
            ws_unavailable,
        }
    }

    fn get(&self, label: &str, scenario: &str) -> Option<&Record> {
        self.by
            .get(&(label.to_string(), scenario.to_string()))
            .and_then(|v| v.last())
    }

    /// Median, minimum and maximum of `f` over the completed runs of a (label, scenario).
    fn spread(&self, label: &str, scenario: &str, f: Getter) -> Option<Spread> {
        let mut v: Vec<f64> = self
            .by
            .get(&(label.to_string(), scenario.to_string()))?
            .iter()
            .filter(|r| r.requests > 0)
            .map(f)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        })
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

/// Reads one figure from a record.
type Getter = fn(&Record) -> f64;

/// Median and range of repeated runs.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

impl Spread {
    fn cell(&self) -> String {
        if self.runs > 1 {
            format!(
                "{} ({}–{})",
                fmt_num(self.median),
                fmt_num(self.min),
                fmt_num(self.max)
            )
        } else {
            fmt_num(self.median)
        }
    }
}

/// Message size named by a WebSocket scenario (`ws64k` → "64 KiB").
fn ws_size(scenario: &str) -> String {
    match scenario
        .strip_prefix("ws")
        .and_then(|k| k.strip_suffix('k'))
    {
        Some(k) => format!("{k} KiB"),
        None => scenario.to_string(),
    }
}

/// The WebSocket section: messages/s and MB/s per column (median and range of the rounds,
/// median ratio to direct), scanning vs not, and the target.
fn render_ws(r: &Results, s: &mut String) {
    if r.ws_scenarios.is_empty() {
        return;
    }
    let labels = &r.ws_labels;
    let _ = writeln!(
        s,
        "\n### WebSocket echo (median (min–max) of the rounds; median ratio to direct)\n"
    );
    let _ = write!(s, "| metric |");
    for l in labels {
        let _ = write!(s, " {l} |");
    }
    let _ = write!(s, "\n|---|");
    for _ in labels {
        let _ = write!(s, "---:|");
    }
    s.push('\n');
    let getters: [(&str, Getter); 2] = [("messages/s", |x| x.rps), ("MB/s", |x| x.mb_per_s)];
    for sc in &r.ws_scenarios {
        for (unit, f) in getters {
            let _ = write!(s, "| {} messages, {unit} |", ws_size(sc));
            let direct = r.spread("direct", sc, f);
            for l in labels {
                let why = r.ws_unavailable.get(l).or_else(|| r.unavailable.get(l));
                let cell = match (r.spread(l, sc, f), why) {
                    (Some(v), _) => match direct {
                        Some(d) if l != "direct" && d.median > 0.0 => {
                            format!("{} ({})", v.cell(), fmt_ratio(v.median / d.median))
                        }
                        _ => v.cell(),
                    },
                    (None, Some(_)) => "n/a".to_string(),
                    (None, None) if r.by.contains_key(&(l.clone(), sc.clone())) => {
                        "failed".to_string()
                    }
                    (None, None) => "—".to_string(),
                };
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
        let _ = write!(s, "| {} messages, p50 round trip (ms) |", ws_size(sc));
        for l in labels {
            let cell = r
                .spread(l, sc, |x| x.p50_us as f64 / 1000.0)
                .map_or("—".to_string(), |v| fmt_num(v.median));
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    let _ = write!(s, "| errors (all WebSocket runs) |");
    for l in labels {
        let errs: u64 =
            r.by.iter()
                .filter(|((lab, sc), _)| lab == l && is_ws(sc))
                .flat_map(|(_, v)| v.iter())
                .map(|x| x.errors)
                .sum();
        let _ = write!(s, " {errs} |");
    }
    s.push('\n');

    let _ = writeln!(
        s,
        "\n### WebSocket: scanning vs without (ratio of the median messages/s)\n"
    );
    let _ = writeln!(
        s,
        "| size | bottle (scanning) vs bottle-noscan | bottle-dlpoff vs bottle-noscan | target |\n|---|---:|---:|---|"
    );
    for sc in &r.ws_scenarios {
        let pair = |a: &str| -> String {
            let (Some(x), Some(y)) = (
                r.spread(a, sc, |x| x.rps),
                r.spread("bottle-noscan", sc, |x| x.rps),
            ) else {
                return "—".to_string();
            };
            fmt_ratio(x.median / y.median)
        };
        let verdict = match (
            r.spread("bottle", sc, |x| x.rps),
            r.spread("bottle-noscan", sc, |x| x.rps),
        ) {
            (Some(x), Some(y)) if x.median / y.median >= 0.5 => "≥ 0.5×: met",
            (Some(_), Some(_)) => "≥ 0.5×: **MISSED**",
            _ => "≥ 0.5×: not measured",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {verdict} |",
            ws_size(sc),
            pair("bottle"),
            pair("bottle-dlpoff")
        );
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
                .filter(|((lab, sc), _)| lab == l && !is_ws(sc))
                .flat_map(|(_, v)| v.iter())
                .map(|x| x.errors)
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

    render_ws(r, &mut s);

    let mut notes = Vec::new();
    for (l, why) in &r.unavailable {
        notes.push(format!("- {l}: not run — {why}"));
    }
    for (l, why) in &r.ws_unavailable {
        notes.push(format!("- {l} (WebSocket): not run — {why}"));
    }
    for ((l, sc), v) in &r.by {
        for x in v {
            if let Some(e) = &x.first_error {
                notes.push(format!(
                    "- {l} / {sc}: {} error(s){}; first: {e}",
                    x.errors,
                    if x.timed_out { " (timed out)" } else { "" }
                ));
            }
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
    fn websocket_medians_and_target() {
        let ws = |label: &str, rps: f64| Record {
            label: label.into(),
            scenario: "ws1k".into(),
            requests: 10,
            rps,
            mb_per_s: rps / 1000.0,
            ..Record::default()
        };
        let r = Results::new(vec![
            rec("direct", "ka8", 1000.0),
            ws("direct", 1000.0),
            ws("bottle", 300.0),
            ws("bottle-noscan", 500.0),
            ws("bottle", 400.0),
            ws("bottle-noscan", 700.0),
            ws("bottle", 350.0),
            ws("bottle-noscan", 600.0),
            Record {
                label: "squid-ws".into(),
                scenario: "unavailable".into(),
                first_error: Some("no upgrade".into()),
                ..Record::default()
            },
        ]);
        let md = render(&r);
        assert!(
            md.contains("| 1 KiB messages, messages/s | 1,000 | 350 (300–400) (0.35×) |"),
            "{md}"
        );
        assert!(md.contains("| 1 KiB | 0.58× | — | ≥ 0.5×: met |"), "{md}");
        assert!(md.contains("| n/a |"), "{md}");
        assert!(!md.contains("| metric | direct | bottle-noscan"), "{md}");
        assert!(
            md.contains("squid (WebSocket): not run — no upgrade"),
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
