//! The load scenarios: keep-alive, new connection per request, bulk download.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::time::sleep_until;

use crate::client::{fetch, Target};
use crate::rss;

/// One measurement, printed as a JSON line and read back by `report`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    /// What was measured through: `direct`, `bottle`, `squid`, `mitmproxy`.
    pub label: String,
    /// Scenario name, e.g. `ka8`, `ka64`, `newconn`, `lat8`, `bulk`, `idle`.
    pub scenario: String,
    /// Concurrent connections (or workers).
    #[serde(default)]
    pub conns: usize,
    /// Successful requests.
    #[serde(default)]
    pub requests: u64,
    /// Failed requests or connection attempts.
    #[serde(default)]
    pub errors: u64,
    /// Wall-clock seconds measured.
    #[serde(default)]
    pub secs: f64,
    /// Successful requests per second.
    #[serde(default)]
    pub rps: f64,
    /// Median request latency, microseconds.
    #[serde(default)]
    pub p50_us: u64,
    /// 99th percentile request latency, microseconds.
    #[serde(default)]
    pub p99_us: u64,
    /// Response body bytes received.
    #[serde(default)]
    pub bytes: u64,
    /// Body throughput in MB/s (10^6 bytes).
    #[serde(default)]
    pub mb_per_s: f64,
    /// Whether the run hit its time limit before finishing (bulk).
    #[serde(default)]
    pub timed_out: bool,
    /// RSS of the watched process tree, KiB (idle: current; bulk: peak sampled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kb: Option<u64>,
    /// Sum of VmHWM over the watched process tree at the end, KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwm_kb: Option<u64>,
    /// The first error seen, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Per-worker counters, merged at the end.
pub(crate) struct Stats {
    hist: Histogram<u64>,
    requests: u64,
    errors: u64,
    bytes: u64,
    first_error: Option<String>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            // 1 µs .. 10 min, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds"),
            requests: 0,
            errors: 0,
            bytes: 0,
            first_error: None,
        }
    }

    pub(crate) fn ok(&mut self, took: Duration, bytes: u64) {
        self.requests += 1;
        self.bytes += bytes;
        let _ = self.hist.record((took.as_micros() as u64).max(1));
    }

    pub(crate) fn err(&mut self, e: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    pub(crate) fn merge(&mut self, other: Stats) {
        let _ = self.hist.add(&other.hist);
        self.requests += other.requests;
        self.errors += other.errors;
        self.bytes += other.bytes;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// How the request loop of each connection behaves.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Reuse one connection per worker (reconnect only after an error).
    KeepAlive,
    /// A fresh TCP (+CONNECT) + full TLS handshake for every request.
    NewConn,
}

/// Runs `conns` workers for `secs` seconds. With `rate` (total requests/s),
/// each worker paces its requests (for latency at a fixed, unsaturated load).
pub async fn run(
    target: Arc<Target>,
    mode: Mode,
    conns: usize,
    secs: f64,
    rate: Option<f64>,
) -> Result<Record> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let interval = rate.map(|r| Duration::from_secs_f64(conns as f64 / r.max(0.001)));
    let mut tasks = Vec::with_capacity(conns);
    for i in 0..conns {
        let target = target.clone();
        // Stagger paced workers so their requests do not arrive in bursts.
        let offset = interval.map(|iv| iv.mul_f64(i as f64 / conns as f64));
        tasks.push(tokio::spawn(async move {
            match mode {
                Mode::KeepAlive => keepalive_worker(&target, deadline, interval, offset).await,
                Mode::NewConn => newconn_worker(&target, deadline).await,
            }
        }));
    }
    let mut total = Stats::new();
    for t in tasks {
        total.merge(t.await.context("worker task panicked")?);
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(record_from(total, conns, secs))
}

pub(crate) fn record_from(s: Stats, conns: usize, secs: f64) -> Record {
    let (p50, p99) = if s.hist.is_empty() {
        (0, 0)
    } else {
        (
            s.hist.value_at_quantile(0.5),
            s.hist.value_at_quantile(0.99),
        )
    };
    Record {
        conns,
        requests: s.requests,
        errors: s.errors,
        secs,
        rps: s.requests as f64 / secs,
        p50_us: p50,
        p99_us: p99,
        bytes: s.bytes,
        mb_per_s: s.bytes as f64 / 1e6 / secs,
        first_error: s.first_error,
        ..Record::default()
    }
}

async fn keepalive_worker(
    target: &Target,
    deadline: Instant,
    interval: Option<Duration>,
    offset: Option<Duration>,
) -> Stats {
    let mut stats = Stats::new();
    let mut sender = None;
    let mut next = Instant::now() + offset.unwrap_or_default();
    while Instant::now() < deadline {
        if let Some(iv) = interval {
            sleep_until(next.into()).await;
            next += iv;
            // Do not try to catch up after a stall: keep the offered rate.
            let now = Instant::now();
            if next < now {
                next = now;
            }
        }
        if sender.is_none() {
            match target.open().await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    stats.err(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let req = match target.request() {
            Ok(r) => r,
            Err(e) => {
                stats.err(e);
                break;
            }
        };
        let t0 = Instant::now();
        match fetch(s, req).await {
            Ok(n) => stats.ok(t0.elapsed(), n),
            Err(e) => {
                stats.err(e);
                sender = None;
            }
        }
    }
    stats
}

async fn newconn_worker(target: &Target, deadline: Instant) -> Stats {
    let mut stats = Stats::new();
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let result = async {
            let mut s = target.open().await?;
            fetch(&mut s, target.request()?).await
        }
        .await;
        match result {
            Ok(n) => stats.ok(t0.elapsed(), n),
            Err(e) => {
                stats.err(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    stats
}

/// Downloads the target once on one connection, measuring MB/s, while
/// sampling the RSS of the `watch` process trees every 50 ms.
pub async fn bulk(target: Arc<Target>, timeout: Duration, watch: Vec<u32>) -> Result<Record> {
    let sampler_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = sampler_stop.clone();
        let watch = watch.clone();
        tokio::spawn(async move {
            let mut peak: Option<u64> = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if !watch.is_empty() {
                    let sum: u64 = watch
                        .iter()
                        .filter_map(|p| rss::tree_mem(*p).ok())
                        .map(|m| m.rss_kb)
                        .sum();
                    peak = Some(peak.unwrap_or(0).max(sum));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let start = Instant::now();
    let mut stats = Stats::new();
    let mut timed_out = false;
    let download = async {
        let mut sender = target.open().await?;
        sender.ready().await.context("connection closed")?;
        let resp = sender
            .send_request(target.request()?)
            .await
            .context("request failed")?;
        if !resp.status().is_success() {
            anyhow::bail!("upstream answered {}", resp.status());
        }
        let mut body = resp.into_body();
        let mut n = 0u64;
        let mut progress = Ok(());
        let deadline = tokio::time::Instant::from(start + timeout);
        loop {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    progress = Err(n);
                    break;
                }
                Ok(None) => break,
                Ok(Some(frame)) => {
                    if let Ok(data) = frame.context("response body failed")?.into_data() {
                        n += data.len() as u64;
                    }
                }
            }
        }
        Ok::<_, anyhow::Error>((n, progress))
    };
    match download.await {
        Ok((n, Ok(()))) => stats.ok(start.elapsed(), n),
        Ok((n, Err(_))) => {
            timed_out = true;
            stats.bytes = n;
            stats.err(anyhow::anyhow!(
                "bulk download did not finish within {} s ({n} bytes received)",
                timeout.as_secs()
            ));
        }
        Err(e) => stats.err(e),
    }
    let secs = start.elapsed().as_secs_f64();
    sampler_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.context("RSS sampler panicked")?;
    let hwm: Option<u64> = if watch.is_empty() {
        None
    } else {
        Some(
            watch
                .iter()
                .filter_map(|p| rss::tree_mem(*p).ok())
                .map(|m| m.hwm_kb)
                .sum(),
        )
    };
    let mut rec = record_from(stats, 1, secs);
    rec.timed_out = timed_out;
    rec.rss_kb = peak;
    rec.hwm_kb = hwm;
    Ok(rec)
}
