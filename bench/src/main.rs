//! `proxyload`: an HTTPS load generator that can go through an explicit
//! CONNECT proxy (wrk cannot), used by `bench/proxy/run.sh` to compare direct
//! access, bottle-sidecar, squid and mitmproxy side by side.
//!
//! Every measuring subcommand prints one JSON line (see [`load::Record`]);
//! `report` turns a file of such lines into a markdown table.

mod client;
#[path = "shared/llm_body.rs"]
mod llm_body;
mod load;
mod report;
mod rss;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use load::{Mode, Record};

#[derive(Parser)]
#[command(
    name = "proxyload",
    about = "HTTPS load generator (direct or through a CONNECT proxy) for the bottle proxy benchmark",
    after_help = "Example: proxyload keepalive --label bottle --url https://localhost:18443/small \\\n  --proxy 127.0.0.1:13128 --ca bench/out/bottle-ca/ca.pem --conns 8 --seconds 10"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N keep-alive connections sending requests back to back (or paced with --rate).
    Keepalive(LoadArgs),
    /// N workers, each opening a new TCP (+CONNECT) + full TLS handshake per request.
    Newconn(LoadArgs),
    /// One download of the URL on one connection, measuring MB/s and the peak RSS of --watch-pid.
    Bulk(BulkArgs),
    /// N WebSocket connections ping-ponging text messages of --size bytes with an echo server.
    Ws(WsArgs),
    /// Prints the current RSS of a process and its descendants as a record (scenario "idle").
    Rss {
        /// Label of the record (direct, bottle, squid, mitmproxy).
        #[arg(long)]
        label: String,
        /// Root process id; its descendants are summed too.
        #[arg(long)]
        pid: u32,
    },
    /// Renders a JSON-lines results file as markdown.
    Report {
        /// The results file written by run.sh.
        #[arg(long)]
        results: PathBuf,
    },
}

#[derive(Args)]
struct TargetArgs {
    /// Label of the record (direct, bottle, squid, mitmproxy).
    #[arg(long)]
    label: String,
    /// Scenario name written into the record (defaults to the subcommand).
    #[arg(long)]
    scenario: Option<String>,
    /// The upstream URL, https://host:port/path.
    #[arg(long)]
    url: String,
    /// Explicit proxy to send `CONNECT host:port` to (omit for direct).
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// PEM trust anchors for the server certificate the client sees (repeatable).
    #[arg(long = "ca", required = true)]
    ca: Vec<PathBuf>,
    /// Client runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Concurrent connections (keepalive) or workers (newconn).
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// Duration of the run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Total offered requests/s, spread over the connections (keepalive only;
    /// default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
}

#[derive(Args)]
struct WsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Concurrent WebSocket connections.
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// Duration of the run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Message size in bytes (an LLM-style JSON text message of about this size).
    #[arg(long, default_value_t = 1024)]
    size: usize,
}

#[derive(Args)]
struct BulkArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Give up after this many seconds (and report the bytes received).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Process trees whose summed RSS is sampled every 50 ms (repeatable).
    #[arg(long = "watch-pid")]
    watch_pid: Vec<u32>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("proxyload: error: {e:#}");
        std::process::exit(1);
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn emit(rec: &Record) -> Result<()> {
    println!("{}", serde_json::to_string(rec)?);
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Keepalive(a) => load_cmd(a, Mode::KeepAlive, "keepalive"),
        Cmd::Newconn(a) => {
            if a.rate.is_some() {
                bail!("--rate applies to keepalive only");
            }
            load_cmd(a, Mode::NewConn, "newconn")
        }
        Cmd::Bulk(a) => {
            let rt = runtime(a.target.threads)?;
            let mut rec = rt.block_on(async {
                let target = Arc::new(
                    client::Target::new(&a.target.url, a.target.proxy, &a.target.ca).await?,
                );
                load::bulk(target, Duration::from_secs(a.timeout), a.watch_pid).await
            })?;
            rec.label = a.target.label;
            rec.scenario = a.target.scenario.unwrap_or_else(|| "bulk".into());
            emit(&rec)
        }
        Cmd::Ws(a) => {
            if a.conns == 0 {
                bail!("--conns must be at least 1");
            }
            if !(a.seconds > 0.0 && a.seconds.is_finite()) {
                bail!("--seconds must be a positive number");
            }
            // JSON escaping makes the body longer than asked: shrink the request until it fits.
            let mut ask = a.size;
            let mut body = llm_body::body(ask);
            for _ in 0..32 {
                if body.len() <= a.size || ask == 0 {
                    break;
                }
                ask = ask.saturating_sub(body.len() - a.size);
                body = llm_body::body(ask);
            }
            let payload = String::from_utf8(body.to_vec()).context("message body is not UTF-8")?;
            let rt = runtime(a.target.threads)?;
            let mut rec = rt.block_on(async {
                let target = Arc::new(
                    client::Target::new(&a.target.url, a.target.proxy, &a.target.ca).await?,
                );
                ws::run(target, a.conns, a.seconds, payload).await
            })?;
            rec.label = a.target.label;
            rec.scenario = a.target.scenario.unwrap_or_else(|| "ws".into());
            emit(&rec)
        }
        Cmd::Rss { label, pid } => {
            let mem = rss::tree_mem(pid)?;
            emit(&Record {
                label,
                scenario: "idle".into(),
                rss_kb: Some(mem.rss_kb),
                hwm_kb: Some(mem.hwm_kb),
                conns: mem.procs,
                ..Record::default()
            })
        }
        Cmd::Report { results } => {
            let records = report::read(&results)?;
            print!("{}", report::render(&report::Results::new(records)));
            Ok(())
        }
    }
}

fn load_cmd(a: LoadArgs, mode: Mode, default_scenario: &str) -> Result<()> {
    if a.conns == 0 {
        bail!("--conns must be at least 1");
    }
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        bail!("--seconds must be a positive number");
    }
    if let Some(r) = a.rate {
        if !(r > 0.0 && r.is_finite()) {
            bail!("--rate must be a positive number of requests per second");
        }
    }
    let rt = runtime(a.target.threads)?;
    let mut rec = rt.block_on(async {
        let target =
            Arc::new(client::Target::new(&a.target.url, a.target.proxy, &a.target.ca).await?);
        load::run(target, mode, a.conns, a.seconds, a.rate).await
    })?;
    rec.label = a.target.label;
    rec.scenario = a.target.scenario.unwrap_or_else(|| default_scenario.into());
    emit(&rec)
}
