//! Scanner benchmark driver (used by bench/scanner/run.sh). See `--help`.
//!
//! Modes (one JSON object per line on stdout):
//! - `throughput DIR...`: single-thread MB/s on the files under DIR (clean text), with the full
//!   default ruleset plus two known secrets; findings per 100 MB and which rules fire.
//!   `BENCH_FILE=1` scans each file with `decode::scan_file` (what `bottle scan` runs)
//!   instead of `Scanner::scan`.
//! - `bodies N`: p50/p90 latency of whole-body scans of LLM-style JSON request bodies of 10 KB
//!   and 100 KB (also through `decode::scan_body`) and their MB/s.
//! - `recall DIR`: writes a planted corpus (one file per generated credential) to DIR and
//!   prints how many this scanner finds; other tools are scored by run.sh on the same DIR.
//! - `fp DIR...`: per-file findings listing (rule, file) for the false-positive report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bottle_scanner::corpus::{planted_corpus, samples, Rng};
use bottle_scanner::Scanner;

fn files_under(dirs: &[String], cap: usize) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut total = 0usize;
    for d in dirs {
        for entry in ignore::WalkBuilder::new(d)
            .standard_filters(false)
            .sort_by_file_path(|a, b| a.cmp(b))
            .build()
            .flatten()
        {
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            let Ok(data) = std::fs::read(entry.path()) else {
                continue;
            };
            if data.len() > 4 << 20 || data[..data.len().min(8000)].contains(&0) {
                continue;
            }
            total += data.len();
            out.push((entry.path().to_path_buf(), data));
            if total >= cap {
                return out;
            }
        }
    }
    out
}

/// CPU time of the calling thread in seconds (`/proc/thread-self/schedstat`, ns resolution):
/// on a shared, loaded box this is steadier than wall time. `None` where unavailable.
fn thread_cpu_secs() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn scanner() -> Scanner {
    let mut rng = Rng::new(1);
    let mut b = Scanner::builder().default_rules(std::env::var_os("BENCH_NO_RULES").is_none());
    if std::env::var_os("BENCH_NO_KNOWN").is_none() {
        b = b
            .known_secret("GH_TOKEN", format!("ghp_{}", rng.chars('a', 36)))
            .known_secret(
                "ANTHROPIC_API_KEY",
                format!("sk-ant-oat01-{}AA", rng.chars('w', 93)),
            );
    }
    // `BENCH_DISABLE=id,id`: leave rules out (to measure what they cost).
    if let Ok(ids) = std::env::var("BENCH_DISABLE") {
        let ids: Vec<&str> = ids.split(',').filter(|s| !s.is_empty()).collect();
        b = b.disable(&ids).expect("disable");
    }
    b.build().expect("scanner")
}

fn throughput(dirs: &[String]) {
    let cap: usize = std::env::var("BENCH_CAP_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        << 20;
    let files = files_under(dirs, cap);
    let total: usize = files.iter().map(|f| f.1.len()).sum();
    let s = scanner();
    // warm up
    for f in files.iter().take(50) {
        s.scan(&f.1);
    }
    let mut per_rule: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut findings = 0usize;
    let t = Instant::now();
    let c0 = thread_cpu_secs();
    // `BENCH_FILE=1`: what `bottle scan` runs on a file (`decode::scan_file`, all decoders).
    let file_mode = std::env::var_os("BENCH_FILE").is_some();
    for (p, d) in &files {
        let found = if file_mode {
            bottle_scanner::decode::scan_file(&s, d)
        } else {
            s.scan(d)
        };
        for f in found {
            findings += 1;
            *per_rule.entry(f.rule_id.clone()).or_default() += 1;
            let ex = examples.entry(f.rule_id.clone()).or_default();
            if ex.len() < 5 {
                ex.push(format!("{}@{} {}", p.display(), f.offset, f.preview));
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu_secs = match (c0, thread_cpu_secs()) {
        (Some(a), Some(b)) => b - a,
        _ => secs,
    };
    let mb = total as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({
            "mode": "throughput", "files": files.len(), "mb": mb, "secs": secs,
            "mb_per_s": mb / secs, "cpu_secs": cpu_secs, "mb_per_cpu_s": mb / cpu_secs,
            "known_secrets": s.known_secret_names().len(), "rules": s.rule_ids().len(),
            "findings": findings,
            "findings_per_100mb": findings as f64 * 100.0 / mb,
            "per_rule": per_rule, "examples": examples,
        })
    );
}

/// An LLM-style chat request body of about `size` bytes built from real text.
fn llm_body(text: &str, size: usize, rng: &mut Rng) -> Vec<u8> {
    let mut messages = Vec::new();
    let mut used = 300;
    let mut i = 0;
    while used < size {
        let start = rng.below(text.len().saturating_sub(4096).max(1));
        let mut start = start;
        while !text.is_char_boundary(start) {
            start += 1;
        }
        let mut end = (start + 2000).min(text.len()).min(start + size - used + 10);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let chunk = &text[start..end];
        used += chunk.len() + 40;
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages
            .push(serde_json::json!({"role": role, "content": [{"type": "text", "text": chunk}]}));
        i += 1;
    }
    serde_json::to_vec(&serde_json::json!({
        "model": "claude-sonnet-4-5", "max_tokens": 4096, "stream": true,
        "system": "You are a coding agent working in a sandbox.",
        "messages": messages,
    }))
    .unwrap()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn bodies(n: usize, dirs: &[String]) {
    let files = files_under(dirs, 20 << 20);
    let text: String = files
        .iter()
        .map(|f| String::from_utf8_lossy(&f.1).to_string())
        .collect();
    let s = scanner();
    let mut rng = Rng::new(3);
    for size in [10_000usize, 100_000] {
        let bodies: Vec<Vec<u8>> = (0..64).map(|_| llm_body(&text, size, &mut rng)).collect();
        for (label, decoded) in [("raw", false), ("scan_body", true)] {
            let mut lat = Vec::with_capacity(n);
            let mut bytes = 0usize;
            let t0 = Instant::now();
            for i in 0..n {
                let b = &bodies[i % bodies.len()];
                let t = Instant::now();
                let f = if decoded {
                    bottle_scanner::decode::scan_body(
                        &s,
                        Some("application/json"),
                        None,
                        b,
                        &Default::default(),
                    )
                    .map(|r| r.findings)
                    .unwrap_or_default()
                } else {
                    s.scan(b)
                };
                std::hint::black_box(f);
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                bytes += b.len();
            }
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "mode": "bodies", "size": size, "path": label, "n": n,
                    "p50_us": percentile(&mut lat, 0.5), "p90_us": percentile(&mut lat, 0.9),
                    "mb_per_s": bytes as f64 / 1e6 / secs,
                })
            );
        }
    }
    // Write sample bodies for the other tools.
    if let Ok(dir) = std::env::var("BENCH_BODIES_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = Rng::new(4);
        for size in [10_000usize, 100_000] {
            for i in 0..20 {
                let b = llm_body(&text, size, &mut rng);
                std::fs::write(Path::new(&dir).join(format!("body-{size}-{i}.json")), b).unwrap();
            }
        }
    }
}

fn recall(dir: &str) {
    let (text, planted) = planted_corpus(99, samples().len() * 3);
    std::fs::create_dir_all(dir).unwrap();
    let s = scanner();
    let mut found = 0;
    let mut missed = Vec::new();
    // one file per planted credential (so per-file tools can be scored the same way)
    let mut chunks = text.split("fn handler_").filter(|c| !c.is_empty());
    for (i, rule) in planted.iter().enumerate() {
        let body = format!("fn handler_{}", chunks.next().unwrap());
        std::fs::write(Path::new(dir).join(format!("{i:04}-{rule}.txt")), &body).unwrap();
        if s.scan(body.as_bytes()).is_empty() {
            missed.push(*rule);
        } else {
            found += 1;
        }
    }
    println!(
        "{}",
        serde_json::json!({"mode": "recall", "planted": planted.len(), "found": found, "missed": missed})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("throughput") => throughput(&args[1..]),
        Some("bodies") => bodies(
            args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2000),
            &args[2..],
        ),
        Some("recall") => recall(args.get(1).map(String::as_str).unwrap_or("/tmp/planted")),
        _ => {
            eprintln!("usage: bench throughput DIR... | bodies N DIR... | recall OUTDIR");
            std::process::exit(2);
        }
    }
}
