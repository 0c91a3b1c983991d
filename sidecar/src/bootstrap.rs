//! Bottle mode: reads the bootstrap document the launcher writes to the sidecar's stdin
//! ([`bottle_protocol::bootstrap`], docs/design.md "Sidecar bootstrap") and serves the proxy,
//! the DNS responder and the git gate it describes, writing [`Event`] lines to stdout.
//!
//! The document's types, its value-free parser and its errors live in `bottle-protocol`, shared
//! with the launcher; this module adds what needs the async runtime: the read timeout and the
//! lifeline.

use std::time::Duration;

use bottle_protocol::bootstrap::{Bootstrap, BootstrapError};
use bottle_protocol::events::Event;
use bottle_protocol::lifeline;

/// How long the sidecar waits for the document before giving up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the document from the process's stdin, giving up after `timeout`.
pub async fn read_stdin(timeout: Duration) -> Result<Bootstrap, BootstrapError> {
    let task = tokio::task::spawn_blocking(|| Bootstrap::read_from(std::io::stdin().lock()));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(BootstrapError::Io(std::io::Error::other(e.to_string()))),
        Err(_) => Err(BootstrapError::Timeout(timeout)),
    }
}

/// Writes one event line to stdout (and flushes it).
pub fn emit(event: &Event) {
    let _ = event.write_line(std::io::stdout().lock());
}

/// Bottle mode: serves the proxy (and the DNS responder) described by `b` until a listener fails.
///
/// `configure` gets the [`bottle_proxy::ProxyBuilder`] after policy, CA, secrets and audit (stdout)
/// are set, so host mode and bottle mode add the same extras (e.g. the DLP inspector). Writes
/// [`Event::Ready`] to stdout once every listener is bound, then audit lines; errors name what failed
/// and never contain secret values.
pub async fn run(
    b: Bootstrap,
    configure: impl FnOnce(bottle_proxy::ProxyBuilder) -> bottle_proxy::ProxyBuilder,
) -> Result<(), RunError> {
    let policy =
        bottle_proxy::policy::Policy::from_toml_str(&b.policy_toml, "bootstrap policy_toml")
            .map_err(|e| RunError::Policy(e.to_string()))?;
    let extra_roots = policy.settings.extra_roots_pem.clone();
    // The proxy builder takes plain strings, owned by the proxy from then on.
    let secrets: std::collections::HashMap<String, String> = b
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
        .collect();
    let inspector = bottle_proxy::dlp::DlpInspector::for_bottle(
        &policy.settings,
        &secrets,
        b.ca_key_pem.as_str(),
    )
    .map_err(|e| RunError::Proxy(e.to_string()))?;
    // One audit writer for every proxy of the bottle, so records stay whole lines in order.
    let audit = bottle_proxy::audit::AuditLog::spawn(tokio::io::stdout());
    let builder = bottle_proxy::Proxy::builder()
        .inspector(inspector)
        .policy(policy)
        .ca(b.ca_cert_pem.as_str(), b.ca_key_pem.as_str())
        .secrets(secrets)
        .audit_log(audit.clone());
    let proxy = configure(builder)
        .build()
        .map_err(|e| RunError::Proxy(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(b.listen)
        .await
        .map_err(|e| RunError::Bind(format!("proxy on {}: {e}", b.listen)))?;
    let dns = match &b.dns {
        Some(cfg) => Some(
            crate::dns::DnsServer::bind(cfg.clone())
                .await
                .map_err(|e| RunError::Bind(e.to_string()))?,
        ),
        None => None,
    };
    let git = match &b.git {
        Some(section) => {
            let gate = crate::git::start(section, &b.secrets, &extra_roots)
                .await
                .map_err(|e| RunError::Git(e.to_string()))?;
            let listener = tokio::net::TcpListener::bind(section.listen)
                .await
                .map_err(|e| RunError::Bind(format!("git gate on {}: {e}", section.listen)))?;
            tokio::spawn(crate::git::audit_decisions(section.state_dir.clone()));
            Some(tokio::spawn(async move { gate.serve(listener).await }))
        }
        None => None,
    };
    let models = match &b.models {
        Some(section) => {
            let proxies = crate::models::build(section, &b, &audit)?;
            let listener = crate::models::bind_free(proxies.listen()).map_err(|e| {
                RunError::Bind(format!("model egress proxy on {}: {e}", section.listen))
            })?;
            Some(tokio::spawn(proxies.serve(listener)))
        }
        None => None,
    };
    let lifeline = b.lifeline;
    // Nothing secret is needed past this point except inside the proxy (and the gate).
    drop(b);
    // Start-up (policy, scanner compilation, TLS config) leaves freed heap behind; hand it
    // back so the idle sidecar's RSS is what it uses.
    // SAFETY: malloc_trim only releases free memory of the allocator; no pointers change.
    unsafe {
        libc::malloc_trim(0);
    }
    emit(&Event::Ready);
    let dns_task = dns.map(|d| {
        let stats = d.stats();
        let serve = tokio::spawn(d.serve());
        let report = tokio::spawn(async move {
            // The DNS counts go to the audit stream (stdout), never the names.
            let mut last = stats.event();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = stats.event();
                if now != last {
                    emit(&now);
                    last = now;
                }
            }
        });
        (serve, report)
    });
    let handle = proxy.clone();
    let served = async move {
        let _models = models.map(AbortOnDrop);
        match git {
            None => serve_until_error(proxy, listener, dns_task).await,
            Some(mut gate) => {
                let r = tokio::select! {
                    r = serve_until_error(proxy, listener, dns_task) => r,
                    r = &mut gate => Err(RunError::Git(match r {
                        Ok(Ok(())) => "stopped".into(),
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    })),
                };
                gate.abort();
                r
            }
        }
    };
    if !lifeline {
        return served.await;
    }
    tokio::select! {
        r = served => r,
        () = follow_lifeline(handle) => {
            emit(&Event::LauncherGone);
            Ok(())
        }
    }
}

/// Follows the lifeline (stdin) until EOF or a read error — the launcher closed it, ended or
/// died (then the caller writes [`Event::LauncherGone`]). Each [`lifeline::SYNC`] line on it
/// flushes the audit log and answers [`Event::AuditSynced`]; other lines are ignored.
async fn follow_lifeline(proxy: bottle_proxy::Proxy) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(4);
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut stdin = std::io::stdin().lock();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.trim() == lifeline::SYNC => {
                    if tx.blocking_send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    });
    while rx.recv().await.is_some() {
        proxy.sync_audit().await;
        emit(&Event::AuditSynced);
    }
}

/// Serves the proxy (and the DNS responder) until one of them fails.
async fn serve_until_error(
    proxy: bottle_proxy::Proxy,
    listener: tokio::net::TcpListener,
    dns_task: Option<(
        tokio::task::JoinHandle<std::io::Result<()>>,
        tokio::task::JoinHandle<()>,
    )>,
) -> Result<(), RunError> {
    let result = match dns_task {
        Some((mut serve, report)) => {
            let r = tokio::select! {
                r = proxy.serve(listener) => r.map_err(|e| RunError::Proxy(e.to_string())),
                r = &mut serve => Err(RunError::Dns(match r {
                    Ok(Ok(())) => "stopped".into(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                })),
            };
            serve.abort();
            report.abort();
            r
        }
        None => proxy
            .serve(listener)
            .await
            .map_err(|e| RunError::Proxy(e.to_string())),
    };
    result
}

/// Aborts a task when dropped (a listener that must not outlive the bottle proxy).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why bottle mode stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bootstrap document was refused.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The policy in `policy_toml` is invalid.
    #[error("bootstrap: policy_toml is invalid: {0}")]
    Policy(String),
    /// The proxy could not be built or failed.
    #[error("proxy: {0}")]
    Proxy(String),
    /// A listener could not be bound.
    #[error("cannot listen: {0}")]
    Bind(String),
    /// The DNS responder failed.
    #[error("dns responder: {0}")]
    Dns(String),
    /// The git gate could not start or failed.
    #[error("{0}")]
    Git(String),
}

/// `bottle-sidecar --bootstrap-stdin`: reads the document from stdin (within [`READ_TIMEOUT`]) and
/// runs [`run`].
pub async fn run_from_stdin(
    configure: impl FnOnce(bottle_proxy::ProxyBuilder) -> bottle_proxy::ProxyBuilder,
) -> Result<(), RunError> {
    let b = read_stdin(READ_TIMEOUT).await?;
    run(b, configure).await
}
