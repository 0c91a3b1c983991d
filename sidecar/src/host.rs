//! Host mode (development, benchmarks): the proxy from files on the command line.
//!
//! ```text
//! bottle-sidecar --policy policy.toml --ca-cert ca.pem --ca-key ca.key --listen 127.0.0.1:3128 \
//!     [--audit FILE|-] [--workers N] [--secrets-file secrets.json]
//! bottle-sidecar gen-ca --out DIR [--name NAME] [--days N]
//! ```
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bottle_proxy::ca::CertificateAuthority;
use bottle_proxy::policy::Policy;
use bottle_proxy::Proxy;
use clap::{Parser, Subcommand};

/// bottle-sidecar in host mode: the TLS-bumping allowlist proxy, configured from files.
#[derive(Debug, Parser)]
#[command(name = "bottle-sidecar", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Policy file (TOML; see docs/policy.md).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// CA certificate (PEM), e.g. from `bottle-sidecar gen-ca`.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// CA private key (PKCS#8 PEM). Keep it 0600.
    #[arg(long, value_name = "FILE")]
    ca_key: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3128")]
    listen: SocketAddr,
    /// Audit log: a file (appended) or `-` for stdout.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    audit: String,
    /// Tokio worker threads (default: available cores, at most 4).
    #[arg(long)]
    workers: Option<usize>,
    /// JSON object of secret name → value (must be mode 0600).
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Generate a development CA: writes DIR/ca.pem and DIR/ca.key (0600).
    GenCa {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// CA common name.
        #[arg(long, default_value = "bottle development CA")]
        name: String,
        /// Lifetime in days.
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
}

/// Where audit lines go.
#[derive(Debug, Clone)]
pub enum AuditTarget {
    /// Standard output.
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

/// A fully resolved host-mode configuration (what [`run`] needs).
pub struct HostConfig {
    /// The validated policy.
    pub policy: Policy,
    /// CA certificate PEM.
    pub ca_cert_pem: String,
    /// CA key PEM.
    pub ca_key_pem: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Audit destination.
    pub audit: AuditTarget,
    /// Worker threads.
    pub workers: usize,
    /// Secrets by name.
    pub secrets: HashMap<String, String>,
}

/// Parses the command line and runs host mode (or `gen-ca`).
pub fn main_from_args(args: Vec<String>) -> Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("bottle-sidecar".to_owned()).chain(args))
        .unwrap_or_else(|e| e.exit());
    if let Some(Cmd::GenCa { out, name, days }) = &cli.cmd {
        return gen_ca(out, name, *days);
    }
    let config = resolve(cli)?;
    run(config)
}

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))
}

fn resolve(cli: Cli) -> Result<HostConfig> {
    let (Some(policy), Some(ca_cert), Some(ca_key)) = (&cli.policy, &cli.ca_cert, &cli.ca_key)
    else {
        bail!("host mode needs --policy, --ca-cert and --ca-key (or `gen-ca --out DIR` to make a CA; see --help)");
    };
    let policy = Policy::load(policy).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secrets = match &cli.secrets_file {
        None => HashMap::new(),
        Some(p) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(p)
                    .with_context(|| format!("reading secrets file {}", p.display()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    bail!(
                        "secrets file {} is readable by others (mode {:o}); chmod 600 it",
                        p.display(),
                        mode & 0o777
                    );
                }
            }
            serde_json::from_str(&read(p, "secrets file")?).with_context(|| {
                format!(
                    "secrets file {}: expected a JSON object of name → string",
                    p.display()
                )
            })?
        }
    };
    let workers = cli.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4)
    });
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    Ok(HostConfig {
        policy,
        ca_cert_pem: read(ca_cert, "CA certificate")?,
        ca_key_pem: read(ca_key, "CA key")?,
        listen: cli.listen,
        audit: if cli.audit == "-" {
            AuditTarget::Stdout
        } else {
            AuditTarget::File(PathBuf::from(cli.audit))
        },
        workers,
        secrets,
    })
}

/// Runs the proxy described by `config` until it fails.
pub fn run(config: HostConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let inspector = bottle_proxy::dlp::DlpInspector::for_bottle(
            &config.policy.settings,
            &config.secrets,
            &config.ca_key_pem,
        )
        .context("building the DLP scanner")?;
        let builder = Proxy::builder()
            .inspector(inspector)
            .policy(config.policy)
            .ca(config.ca_cert_pem, config.ca_key_pem)
            .secrets(config.secrets);
        let builder = match &config.audit {
            AuditTarget::Stdout => builder.audit(tokio::io::stdout()),
            AuditTarget::File(p) => {
                let mut opts = tokio::fs::OpenOptions::new();
                opts.create(true).append(true);
                #[cfg(unix)]
                opts.mode(0o600);
                let f = opts
                    .open(p)
                    .await
                    .with_context(|| format!("opening audit file {}", p.display()))?;
                builder.audit(f)
            }
        };
        let proxy = builder.build().context("configuring the proxy")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        eprintln!(
            "bottle-sidecar: proxy listening on {}",
            listener.local_addr()?
        );
        proxy.serve(listener).await.context("serving")?;
        Ok(())
    })
}

fn gen_ca(out: &Path, name: &str, days: u64) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ca = CertificateAuthority::generate(name, Duration::from_secs(days.max(1) * 86400))
        .context("generating the CA")?;
    let cert = out.join("ca.pem");
    let key = out.join("ca.key");
    std::fs::write(&cert, &ca.cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&key)
        .with_context(|| format!("writing {}", key.display()))?;
    std::io::Write::write_all(&mut f, ca.key_pem.as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    eprintln!(
        "bottle-sidecar: wrote {} and {} (0600)",
        cert.display(),
        key.display()
    );
    Ok(())
}
