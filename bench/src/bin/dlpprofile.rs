//! `dlpprofile`: the DLP inspector alone, in process, on the request `dlpbench` sends — for
//! `valgrind --tool=callgrind` instruction counts and per-part timings of the hot path.
//!
//! Builds the same `DlpInspector::for_bottle` as `dlpbench` (three bottle secrets plus the CA
//! key as known secrets, default rules), the headers that reach the inspector for a dlpbench
//! POST (`content-type`, `x-api-key`, `content-length`, `via`), and runs `--iters` inspections
//! of a `--size`-byte LLM-style JSON body (after one warm-up), printing the mean µs per
//! inspection and the p50. `--cold-mib N` touches N MiB of other memory before each inspection
//! (only the inspections are timed), to see what the inspector costs on cold caches (the TLS
//! and HTTP work between two requests in the proxy evicts its tables). `--path` sets the
//! request target (default `/v1/messages`), e.g. a clean URL with long path tokens. Usage:
//! `valgrind --tool=callgrind target/release/dlpprofile --iters 20 --size 10000`.
#[path = "../shared/llm_body.rs"]
mod llm_body;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use bottle_proxy::ca::CertificateAuthority;
use bottle_proxy::canon::Host;
use bottle_proxy::dlp::DlpInspector;
use bottle_proxy::policy::Policy;
use bottle_proxy::server::body::full;
use bottle_proxy::{RequestHead, Secrets};
use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;

#[derive(Parser)]
#[command(
    name = "dlpprofile",
    about = "The DLP inspector alone on a dlpbench request"
)]
struct Cli {
    /// Inspections to run (after one warm-up).
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Body size in bytes (0: no body, URL and headers only).
    #[arg(long, default_value_t = 10000)]
    size: usize,
    /// Between inspections, touch this many MiB of other memory (as the TLS and HTTP work
    /// between two requests does in the proxy), so each inspection starts on cold caches;
    /// only the inspections are timed.
    #[arg(long, default_value_t = 0)]
    cold_mib: usize,
    /// Request target (path and query) of the inspected request.
    #[arg(long, default_value = "/v1/messages")]
    path: String,
}

use llm_body::body;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let policy = Policy::from_toml_str("[[route]]\nhost = \"on.test\"\n", "dlpprofile.toml")?;
    let route = policy.routes[0].clone();
    let ca = CertificateAuthority::generate("bottle dlpprofile", Duration::from_secs(86400))?;
    let mut map = HashMap::new();
    for (i, name) in ["ANTHROPIC_API_KEY", "GH_TOKEN", "NPM_TOKEN"]
        .iter()
        .enumerate()
    {
        map.insert(
            name.to_string(),
            format!("bench-secret-{i}-Zq8Xv2Lm4Np6Rt0Yw3Ks5Hd7Jf9Gb1"),
        );
    }
    let insp = DlpInspector::for_bottle(&Default::default(), &map, &ca.key_pem)?;
    let secrets = Secrets::new(map);
    let payload = if cli.size == 0 {
        Bytes::new()
    } else {
        body(cli.size)
    };
    let host = Host::Name("on.test".into());
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let once = |payload: &Bytes| -> Result<usize> {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-api-key", HeaderValue::from_static("placeholder"));
        headers.insert("content-length", HeaderValue::from(payload.len()));
        headers.insert("via", HeaderValue::from_static("1.1 bottle-sidecar"));
        let mut redacted = None;
        let head = RequestHead {
            route: &route,
            host: &host,
            port: 443,
            tls: true,
            method: &Method::POST,
            path_and_query: &cli.path,
            headers: &mut headers,
            secrets: &secrets,
            redacted: &mut redacted,
        };
        let out = rt
            .block_on(insp.inspect(head, full(payload.clone())))
            .map_err(|d| anyhow::anyhow!("denied: {}", d.detail))?;
        let got = rt
            .block_on(out.collect())
            .map_err(|e| anyhow::anyhow!("body: {e}"))?
            .to_bytes();
        Ok(got.len())
    };
    once(&payload)?;
    let mut evict = vec![0u64; cli.cold_mib << 17];
    let mut times = Vec::with_capacity(cli.iters);
    for i in 0..cli.iters {
        for (j, w) in evict.iter_mut().enumerate().step_by(8) {
            *w = w.wrapping_add((i ^ j) as u64);
        }
        let t = Instant::now();
        std::hint::black_box(once(&payload)?);
        times.push(t.elapsed());
    }
    std::hint::black_box(&evict);
    let per = times.iter().sum::<Duration>().as_secs_f64() * 1e6 / cli.iters.max(1) as f64;
    times.sort_unstable();
    let p50 = times.get(times.len() / 2).copied().unwrap_or_default();
    println!(
        "dlpprofile: {} B body, {} inspections{}, {per:.1} µs each (p50 {:.1} µs)",
        payload.len(),
        cli.iters,
        if cli.cold_mib > 0 {
            format!(" on cold caches ({} MiB touched between)", cli.cold_mib)
        } else {
            String::new()
        },
        p50.as_secs_f64() * 1e6
    );
    Ok(())
}
