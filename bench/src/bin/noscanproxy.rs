//! `noscanproxy`: the sidecar's proxy (`bottle_proxy::Proxy`, same policy and CA files as
//! `bottle-sidecar` host mode) **without** a request inspector and without secrets, for the
//! "WebSocket without scanning" column of `bench/proxy/run.sh`.
//!
//! Everything else is what a bottle runs: CONNECT, TLS bump, routes, the WebSocket handshake
//! checks and the frame-parsing relay (messages are still decoded, reassembled and
//! re-framed). Only the two per-message scans are no-ops: with no inspector there is no
//! client→upstream DLP (`RequestInspector::inspect_message` is never called) and with no
//! secrets there is no upstream→client known-secret check. `bottle-sidecar` itself cannot run
//! like this: it always installs `DlpInspector::for_bottle`, whose known secrets include the
//! CA key, so even a `dlp = false` route has its messages scanned.
//! Usage: `noscanproxy --policy p.toml --ca-cert ca.pem --ca-key ca.key --listen ADDR
//! [--audit FILE] [--workers N]`.
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use bottle_proxy::policy::Policy;
use bottle_proxy::Proxy;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "noscanproxy",
    about = "The bottle proxy without DLP inspector or secrets (benchmark baseline)"
)]
struct Cli {
    /// Policy file (TOML; see docs/policy.md).
    #[arg(long)]
    policy: PathBuf,
    /// CA certificate (PEM).
    #[arg(long)]
    ca_cert: PathBuf,
    /// CA private key (PKCS#8 PEM).
    #[arg(long)]
    ca_key: PathBuf,
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Audit log file (appended); default: discarded.
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Tokio worker threads (default: as the sidecar, available cores, at most 4).
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let workers = cli.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let policy = Policy::load(&cli.policy).map_err(|e| anyhow::anyhow!("{e}"))?;
        let cert = std::fs::read_to_string(&cli.ca_cert)
            .with_context(|| format!("reading {}", cli.ca_cert.display()))?;
        let key = std::fs::read_to_string(&cli.ca_key)
            .with_context(|| format!("reading {}", cli.ca_key.display()))?;
        let mut builder = Proxy::builder().policy(policy).ca(cert, key);
        if let Some(p) = &cli.audit {
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .await
                .with_context(|| format!("opening audit file {}", p.display()))?;
            builder = builder.audit(f);
        }
        let proxy = builder.build().context("configuring the proxy")?;
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("listening on {}", cli.listen))?;
        eprintln!("noscanproxy: listening on {}", listener.local_addr()?);
        proxy.serve(listener).await.context("serving")?;
        Ok(())
    })
}
