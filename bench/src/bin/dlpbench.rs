//! `dlpbench`: what DLP adds to a request through the bottle proxy, side by side in one run.
//!
//! An in-process HTTPS upstream, and the proxy (the sidecar's `Proxy` with the same
//! `DlpInspector::for_bottle` a bottle runs, with three bottle secrets and the CA key as
//! known secrets) serving three routes to that upstream on one keep-alive tunnel each:
//!
//! * `nodlp` — a proxy without any inspector (the floor: TLS bump + forwarding),
//! * `off` — the inspector installed, route `dlp = false` (URL + headers still checked for
//!   the bottle's own secrets, the body is not read),
//! * `on` — the default: URL, headers and the buffered body through the scanner's decoders.
//!
//! The proxies run on their own multi-threaded tokio runtime with the sidecar's worker count
//! (`min(cores, 4)`, `--proxy-workers`), apart from the runtime of the clients and the upstream,
//! as in a bottle, where the sidecar is its own process. (`--shared-runtime` puts all of it on
//! one 2-worker runtime, as earlier versions of this bench did: there, on a VM whose idle vCPU
//! is slow to wake, any synchronous work in the proxy also delays the client's and upstream's
//! tasks queued behind it — a 50 µs busy loop in place of the scan added ~95 µs.)
//!
//! The three clients send `--requests` POSTs each of an LLM-style JSON body (real source code
//! as the message content) of each `--sizes`, interleaved round-robin (one request of each
//! configuration in turn, so other load on the box hits all three alike), measure the
//! latency of each, and print p50 / p99 per configuration, the DLP cost (`on` − `nodlp`)
//! and ratios. Usage:
//! `cargo run --release -p bottle-bench --bin dlpbench -- [--requests 2000] [--sizes 1000,10000,100000]`.
//! Latest figures: the README (DLP in the proxy). The DLP cost moves with the box: +39–44 µs at
//! 10 KB on an Intel VM while the no-inspector p50 was ~50 µs; +46–85 µs on AMD EPYC VMs whose
//! no-inspector p50 is ~250 µs and whose idle vCPU is slow to wake (target ≤ 50 µs). `dlpprofile` runs the inspector alone, for
//! callgrind instruction counts (which do not depend on the box) and cold-cache timings.
#[path = "../shared/llm_body.rs"]
mod llm_body;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bottle_proxy::ca::CertificateAuthority;
use bottle_proxy::connector::StaticResolver;
use bottle_proxy::dlp::DlpInspector;
use bottle_proxy::policy::Policy;
use bottle_proxy::Proxy;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use llm_body::{body, body_from};

#[derive(Parser)]
#[command(
    name = "dlpbench",
    about = "Latency DLP adds to a request through the bottle proxy (no inspector vs dlp=false vs dlp=true), one run"
)]
struct Cli {
    /// Requests per configuration and body size (after 200 warm-up requests).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Request body sizes in bytes, comma separated.
    #[arg(long, default_value = "1000,10000,100000", value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Message content from this file instead of the built-in source text (e.g. to train a
    /// PGO profile on other bodies than the ones measured: `scripts/pgo.sh`).
    #[arg(long)]
    text: Option<std::path::PathBuf>,
    /// Worker threads of the proxies' runtime (default: the sidecar's, min(cores, 4)).
    #[arg(long)]
    proxy_workers: Option<usize>,
    /// Run the proxies on the clients' and upstream's runtime instead of their own.
    #[arg(long, conflicts_with = "proxy_workers")]
    shared_runtime: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let proxy_rt = if cli.shared_runtime {
        None
    } else {
        let workers = cli.proxy_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4)
        });
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers.max(1))
                .thread_name("proxy")
                .enable_all()
                .build()?,
        )
    };
    rt.block_on(run(cli, proxy_rt.as_ref().map(|r| r.handle().clone())))
}

/// `proxy_rt`: the runtime the proxies are served on (`None`: the current one).
async fn run(cli: Cli, proxy_rt: Option<tokio::runtime::Handle>) -> Result<()> {
    let (up_ca, up_cfg) = upstream_tls()?;
    let up = TcpListener::bind("127.0.0.1:0").await?;
    let up_port = up.local_addr()?.port();
    tokio::spawn(serve_upstream(up, up_cfg));

    let routes = format!(
        r#"[settings]
extra_roots = [{ca}]

[[route]]
id = "nodlp"
host = "nodlp.test"
ports = [{up_port}]
allow_private = ["127.0.0.1/32"]

[[route]]
id = "off"
host = "off.test"
ports = [{up_port}]
allow_private = ["127.0.0.1/32"]
dlp = false

[[route]]
id = "on"
host = "on.test"
ports = [{up_port}]
allow_private = ["127.0.0.1/32"]
"#,
        ca = toml_string(&up_ca)
    );
    let ca = CertificateAuthority::generate("bottle dlpbench", Duration::from_secs(86400))?;
    let lo: IpAddr = "127.0.0.1".parse()?;
    let resolver = StaticResolver::new();
    for n in ["nodlp.test", "off.test", "on.test"] {
        resolver.push(n, &[lo]);
    }
    let resolver = Arc::new(resolver);
    let mut secrets = HashMap::new();
    for (i, name) in ["ANTHROPIC_API_KEY", "GH_TOKEN", "NPM_TOKEN"]
        .iter()
        .enumerate()
    {
        secrets.insert(
            name.to_string(),
            format!("bench-secret-{i}-Zq8Xv2Lm4Np6Rt0Yw3Ks5Hd7Jf9Gb1"),
        );
    }
    let mut addrs = Vec::new();
    for with_dlp in [false, true] {
        let policy = Policy::from_toml_str(&routes, "dlpbench.toml")?;
        let b = Proxy::builder()
            .policy(policy)
            .ca(ca.cert_pem.clone(), ca.key_pem.clone())
            .resolver(resolver.clone())
            .audit(tokio::io::sink());
        let b = if with_dlp {
            b.inspector(DlpInspector::for_bottle(
                &Default::default(),
                &secrets,
                &ca.key_pem,
            )?)
            .secrets(secrets.clone())
        } else {
            b
        };
        let proxy = b.build()?;
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.set_nonblocking(true)?;
        addrs.push(l.local_addr()?);
        let serve = async move {
            match TcpListener::from_std(l) {
                Ok(l) => {
                    if let Err(e) = proxy.serve(l).await {
                        eprintln!("dlpbench: proxy: {e}");
                    }
                }
                Err(e) => eprintln!("dlpbench: proxy listener: {e}"),
            }
        };
        match &proxy_rt {
            Some(h) => drop(h.spawn(serve)),
            None => drop(tokio::spawn(serve)),
        }
    }
    let configs = [
        ("no inspector", addrs[0], "nodlp.test"),
        ("dlp = false", addrs[1], "off.test"),
        ("dlp = true", addrs[1], "on.test"),
    ];
    println!(
        "dlpbench: {} POSTs per cell, LLM-style JSON bodies, keep-alive tunnel per configuration, interleaved\n",
        cli.requests
    );
    println!("| body | config | p50 µs | p99 µs | p50 added by DLP µs | ratio to no inspector |");
    println!("|---:|---|---:|---:|---:|---:|");
    let text = match &cli.text {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading --text {}", p.display()))?,
        ),
        None => None,
    };
    for &size in &cli.sizes {
        let payload = match &text {
            Some(t) => body_from(t, size),
            None => body(size),
        };
        // One connection per configuration, requests interleaved round-robin, so load from
        // anything else on the box hits all three alike.
        let mut clients = Vec::new();
        for (label, proxy, host) in configs {
            clients.push((
                label,
                Client::connect(proxy, host, up_port, &ca.cert_pem).await?,
                Vec::with_capacity(cli.requests),
            ));
        }
        for i in 0..cli.requests + 200 {
            for (label, c, lat) in clients.iter_mut() {
                let t = Instant::now();
                c.post(&payload).await.context(*label)?;
                if i >= 200 {
                    lat.push(t.elapsed());
                }
            }
        }
        let mut base = None;
        for (label, _, mut lat) in clients {
            lat.sort();
            let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
            let (p50, p99) = (p(0.5), p(0.99));
            let b = *base.get_or_insert(p50);
            println!(
                "| {} | {label} | {p50:.0} | {p99:.0} | {:+.0} | {:.2}x |",
                size_label(payload.len()),
                p50 - b,
                p50 / b
            );
        }
    }
    Ok(())
}

fn size_label(n: usize) -> String {
    if n >= 1000 {
        format!("{} KB", n / 1000)
    } else {
        format!("{n} B")
    }
}

/// One keep-alive HTTP/1.1 connection through `CONNECT` and the proxy's bumped TLS.
struct Client {
    send: SendRequest<Full<Bytes>>,
    authority: String,
}

impl Client {
    async fn connect(proxy: SocketAddr, host: &str, port: u16, ca_pem: &str) -> Result<Client> {
        let mut tcp = TcpStream::connect(proxy).await?;
        tcp.set_nodelay(true)?;
        let authority = format!("{host}:{port}");
        tcp.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut b).await? == 0 || head.len() > 16 * 1024 {
                return Err(anyhow!("proxy closed during CONNECT"));
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            return Err(anyhow!(
                "CONNECT refused: {}",
                String::from_utf8_lossy(&head)
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(c?)?;
        }
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from(host.to_string())?, tcp)
            .await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Client { send, authority })
    }

    async fn post(&mut self, body: &Bytes) -> Result<()> {
        let req = http::Request::post("/v1/messages")
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("x-api-key", "placeholder")
            .body(Full::new(body.clone()))?;
        self.send.ready().await?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        if !status.is_success() {
            return Err(anyhow!("status {status}"));
        }
        Ok(())
    }
}

/// The upstream: reads the request body, answers `ok`.
async fn serve_upstream(l: TcpListener, cfg: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    while let Ok((s, _)) = l.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let Ok(tls) = acceptor.accept(s).await else {
                return;
            };
            let svc = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// A self-signed upstream CA and a leaf for the bench names.
fn upstream_tls() -> Result<(String, Arc<rustls::ServerConfig>)> {
    let ca_key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = p.self_signed(&ca_key)?;
    let issuer = Issuer::new(p, ca_key);
    let key = KeyPair::generate()?;
    let names = vec!["nodlp.test".into(), "off.test".into(), "on.test".into()];
    let leaf = CertificateParams::new(names)?.signed_by(&key, &issuer)?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((ca_cert.pem(), Arc::new(cfg)))
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
