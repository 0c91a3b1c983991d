//! Bottle mode: the bootstrap document the launcher writes to the sidecar's stdin (docs/design.md,
//! "Sidecar bootstrap"). Exactly one JSON document, at most [`MAX_BOOTSTRAP_BYTES`].
//!
//! Errors name the field and what is wrong with it, never a value: the document holds the CA key
//! and the bottle's secrets. Parsing goes through `serde_json::Value` (whose errors carry only a
//! position) and every string is wiped once the typed [`Bootstrap`] has been taken out of it.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::dns::DnsConfig;

/// Largest accepted bootstrap document (4 MiB: policies are small, PEMs a few KiB).
pub const MAX_BOOTSTRAP_BYTES: usize = 4 << 20;
/// Largest accepted single secret value.
pub const MAX_SECRET_BYTES: usize = 64 << 10;
/// How long the sidecar waits for the document before giving up.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

const TOP_KEYS: [&str; 8] = [
    "policy_toml",
    "ca_cert_pem",
    "ca_key_pem",
    "secrets",
    "listen",
    "dns",
    "lifeline",
    "git",
];
const DNS_KEYS: [&str; 3] = ["listen", "name", "ip"];

/// Why a bootstrap document was refused. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Reading stdin failed.
    #[error("bootstrap: reading stdin failed: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing arrived before EOF.
    #[error(
        "bootstrap: stdin was empty; the launcher must write the bootstrap JSON document to stdin"
    )]
    Empty,
    /// The document is too large.
    #[error("bootstrap: the document is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// No complete document arrived in time.
    #[error("bootstrap: no complete JSON document on stdin within {0:?}; is the launcher attached to stdin?")]
    Timeout(Duration),
    /// Not valid JSON (the position only, never the text).
    #[error("bootstrap: invalid JSON at line {line} column {column}: {kind}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected (no document text).
        kind: String,
    },
    /// Something after the one document.
    #[error("bootstrap: unexpected data after the JSON document (send exactly one document)")]
    Trailing,
    /// A field is missing, has the wrong type or an invalid value.
    #[error("bootstrap: field `{field}`: {problem}")]
    Field {
        /// The JSON path of the field, e.g. `dns.ip` or `secrets.GH_TOKEN`.
        field: String,
        /// What is wrong (never the value of a secret field).
        problem: String,
    },
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> BootstrapError {
    BootstrapError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The validated bootstrap document. `Debug` shows secret names only.
pub struct Bootstrap {
    /// The policy file text (TOML), as `bottle_proxy::policy::Policy::from_toml_str` takes it.
    pub policy_toml: String,
    /// The bottle CA certificate (PEM).
    pub ca_cert_pem: String,
    /// The bottle CA private key (PEM); wiped on drop.
    pub ca_key_pem: Zeroizing<String>,
    /// Secret values by name; wiped on drop.
    pub secrets: BTreeMap<String, Zeroizing<String>>,
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// The DNS responder, if requested.
    pub dns: Option<DnsConfig>,
    /// Stdin stays open after the document as the launcher's lifeline: when it reaches EOF (the
    /// launcher ended or died), the sidecar stops, so it never outlives its launcher.
    pub lifeline: bool,
    /// The git gate, if the bottle declares git remotes.
    pub git: Option<crate::git::GitSection>,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("policy_toml_bytes", &self.policy_toml.len())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("listen", &self.listen)
            .field("dns", &self.dns)
            .field("lifeline", &self.lifeline)
            .field("git", &self.git)
            .finish_non_exhaustive()
    }
}

impl Bootstrap {
    /// The secrets as the proxy builder takes them (`ProxyBuilder::secrets`). The copies are plain
    /// `String`s owned by the proxy from then on.
    pub fn secrets_map(&self) -> HashMap<String, String> {
        self.secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
            .collect()
    }

    /// Parses and validates one document.
    pub fn parse(bytes: &[u8]) -> Result<Bootstrap, BootstrapError> {
        if bytes.len() > MAX_BOOTSTRAP_BYTES {
            return Err(BootstrapError::TooLarge {
                limit: MAX_BOOTSTRAP_BYTES,
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(BootstrapError::Empty);
        }
        let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
        let mut value = match stream.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(syntax(&e)),
            None => return Err(BootstrapError::Empty),
        };
        let rest = &bytes[stream.byte_offset()..];
        let result = if rest.iter().all(u8::is_ascii_whitespace) {
            from_value(&mut value)
        } else {
            Err(BootstrapError::Trailing)
        };
        wipe(&mut value);
        result
    }

    /// Reads one document from `reader` (until EOF, or until a complete document followed by a
    /// newline), then parses it. The raw bytes are wiped afterwards.
    pub fn read_from(mut reader: impl Read) -> Result<Bootstrap, BootstrapError> {
        let mut buf = Zeroizing::new(Vec::with_capacity(16 << 10));
        let mut chunk = Zeroizing::new(vec![0u8; 16 << 10]);
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                break;
            }
            if buf.len() + n > MAX_BOOTSTRAP_BYTES {
                return Err(BootstrapError::TooLarge {
                    limit: MAX_BOOTSTRAP_BYTES,
                });
            }
            buf.extend_from_slice(&chunk[..n]);
            // A launcher that keeps stdin open still gets served once a whole document has arrived.
            if chunk[..n].contains(&b'\n') && is_complete(&buf) {
                break;
            }
        }
        Bootstrap::parse(&buf)
    }

    /// Reads the document from the process's stdin, giving up after `timeout`.
    pub async fn read_stdin(timeout: Duration) -> Result<Bootstrap, BootstrapError> {
        let task = tokio::task::spawn_blocking(|| Bootstrap::read_from(std::io::stdin().lock()));
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(BootstrapError::Io(std::io::Error::other(e.to_string()))),
            Err(_) => Err(BootstrapError::Timeout(timeout)),
        }
    }
}

/// Whether `buf` already holds one complete JSON value (followed by anything).
fn is_complete(buf: &[u8]) -> bool {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde::de::IgnoredAny>();
    matches!(it.next(), Some(Ok(_)))
}

fn syntax(e: &serde_json::Error) -> BootstrapError {
    // serde_json's syntax/EOF messages are fixed phrases plus a position; strip the position
    // from the phrase (we report it separately) and never include document text.
    let msg = e.to_string();
    let kind = msg
        .split(" at line ")
        .next()
        .unwrap_or("syntax error")
        .to_string();
    BootstrapError::Syntax {
        line: e.line(),
        column: e.column(),
        kind,
    }
}

/// Overwrites every string in `v` (keys included) before it is dropped.
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => {
            let taken = std::mem::take(m);
            for (mut k, mut v) in taken {
                k.zeroize();
                wipe(&mut v);
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_keys(
    m: &Map<String, Value>,
    allowed: &[&str],
    prefix: &str,
) -> Result<(), BootstrapError> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            let shown: String = k.chars().take(40).collect();
            return Err(field(
                format!("{prefix}{shown}"),
                format!("unknown field (expected one of: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Takes a required string out of `m` (leaving an empty string behind, so wiping still works).
fn take_string(
    m: &mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<String, BootstrapError> {
    match m.get_mut(key) {
        None | Some(Value::Null) => Err(field(path, "missing (required)")),
        Some(Value::String(s)) => Ok(std::mem::take(s)),
        Some(other) => Err(field(
            path,
            format!("must be a string, got {}", type_name(other)),
        )),
    }
}

fn from_value(v: &mut Value) -> Result<Bootstrap, BootstrapError> {
    let Value::Object(m) = v else {
        return Err(field(
            "(document)",
            format!("must be a JSON object, got {}", type_name(v)),
        ));
    };
    check_keys(m, &TOP_KEYS, "")?;

    let policy_toml = take_string(m, "policy_toml", "policy_toml")?;
    if policy_toml.trim().is_empty() {
        return Err(field(
            "policy_toml",
            "is empty; it must hold the policy file text",
        ));
    }
    let ca_cert_pem = take_string(m, "ca_cert_pem", "ca_cert_pem")?;
    if !ca_cert_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(field(
            "ca_cert_pem",
            "is not a PEM certificate (no BEGIN CERTIFICATE line)",
        ));
    }
    let ca_key_pem = Zeroizing::new(take_string(m, "ca_key_pem", "ca_key_pem")?);
    if !(ca_key_pem.contains("-----BEGIN") && ca_key_pem.contains("PRIVATE KEY-----")) {
        return Err(field(
            "ca_key_pem",
            "is not a PEM private key (no BEGIN … PRIVATE KEY line)",
        ));
    }

    let mut secrets = BTreeMap::new();
    match m.get_mut("secrets") {
        None | Some(Value::Null) => {}
        Some(Value::Object(sm)) => {
            for (name, val) in sm.iter_mut() {
                let valid_name = !name.is_empty()
                    && name.len() <= 128
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                if !valid_name {
                    return Err(field(
                        "secrets",
                        "a secret name is empty, longer than 128 bytes, or has characters other than A-Z a-z 0-9 _ - .",
                    ));
                }
                let path = format!("secrets.{name}");
                match val {
                    Value::String(s) if s.is_empty() => {
                        return Err(field(path, "is empty"));
                    }
                    Value::String(s) if s.len() > MAX_SECRET_BYTES => {
                        return Err(field(
                            path,
                            format!("is longer than the limit of {MAX_SECRET_BYTES} bytes"),
                        ));
                    }
                    Value::String(s) => {
                        secrets.insert(name.clone(), Zeroizing::new(std::mem::take(s)));
                    }
                    other => {
                        return Err(field(
                            path,
                            format!("must be a string, got {}", type_name(other)),
                        ));
                    }
                }
            }
        }
        Some(other) => {
            return Err(field(
                "secrets",
                format!(
                    "must be an object of name → value strings, got {}",
                    type_name(other)
                ),
            ))
        }
    }

    let listen_text = take_string(m, "listen", "listen")?;
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        field(
            "listen",
            format!("{listen_text:?} is not an IP:port address like 10.213.0.2:3128"),
        )
    })?;

    let dns = match m.get_mut("dns") {
        None | Some(Value::Null) => None,
        Some(Value::Object(dm)) => {
            check_keys(dm, &DNS_KEYS, "dns.")?;
            let l = take_string(dm, "listen", "dns.listen")?;
            let listen: SocketAddr = l.parse().map_err(|_| {
                field(
                    "dns.listen",
                    format!("{l:?} is not an IP:port address like 10.213.0.2:53"),
                )
            })?;
            let name = take_string(dm, "name", "dns.name")?;
            let name_ok = !name.is_empty()
                && name.len() <= 253
                && name.trim_end_matches('.').split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !name_ok {
                return Err(field(
                    "dns.name",
                    format!("{name:?} is not a valid DNS name"),
                ));
            }
            let ip_text = take_string(dm, "ip", "dns.ip")?;
            let ip: Ipv4Addr = ip_text
                .parse()
                .map_err(|_| field("dns.ip", format!("{ip_text:?} is not an IPv4 address")))?;
            Some(DnsConfig {
                listen,
                name: name.trim_end_matches('.').to_ascii_lowercase(),
                ip,
            })
        }
        Some(other) => {
            return Err(field(
                "dns",
                format!(
                    "must be an object {{listen, name, ip}}, got {}",
                    type_name(other)
                ),
            ))
        }
    };

    let lifeline = match m.get("lifeline") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(field(
                "lifeline",
                format!("must be a boolean, got {}", type_name(other)),
            ))
        }
    };
    let git = match m.get_mut("git") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let section =
                crate::git::parse_section(v.take()).map_err(|e| field("git", e.to_string()))?;
            if let Some(r) = section
                .remotes
                .iter()
                .find(|r| r.secret.as_ref().is_some_and(|s| !secrets.contains_key(s)))
            {
                return Err(field(
                    format!("git.remotes.{}.secret", r.name),
                    "names a secret that is not in `secrets`",
                ));
            }
            Some(section)
        }
    };
    Ok(Bootstrap {
        policy_toml,
        ca_cert_pem,
        ca_key_pem,
        secrets,
        listen,
        dns,
        lifeline,
        git,
    })
}

/// The line the sidecar writes to stdout once the proxy (and DNS) listeners are bound.
pub const READY_LINE: &str = "{\"event\":\"ready\"}";

/// Bottle mode: serves the proxy (and the DNS responder) described by `b` until a listener fails.
///
/// `configure` gets the [`bottle_proxy::ProxyBuilder`] after policy, CA, secrets and audit (stdout)
/// are set, so host mode and bottle mode add the same extras (e.g. the DLP inspector). Writes
/// [`READY_LINE`] to stdout once every listener is bound, then audit lines; errors name what failed
/// and never contain secret values.
pub async fn run(
    b: Bootstrap,
    configure: impl FnOnce(bottle_proxy::ProxyBuilder) -> bottle_proxy::ProxyBuilder,
) -> Result<(), RunError> {
    let policy =
        bottle_proxy::policy::Policy::from_toml_str(&b.policy_toml, "bootstrap policy_toml")
            .map_err(|e| RunError::Policy(e.to_string()))?;
    let extra_roots = policy.settings.extra_roots_pem.clone();
    let secrets = b.secrets_map();
    let inspector = bottle_proxy::dlp::DlpInspector::for_bottle(
        &policy.settings,
        &secrets,
        b.ca_key_pem.as_str(),
    )
    .map_err(|e| RunError::Proxy(e.to_string()))?;
    let builder = bottle_proxy::Proxy::builder()
        .inspector(inspector)
        .policy(policy)
        .ca(b.ca_cert_pem.as_str(), b.ca_key_pem.as_str())
        .secrets(secrets)
        .audit(tokio::io::stdout());
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
    let lifeline = b.lifeline;
    // Nothing secret is needed past this point except inside the proxy (and the gate).
    drop(b);
    // Start-up (policy, scanner compilation, TLS config) leaves freed heap behind; hand it
    // back so the idle sidecar's RSS is what it uses.
    // SAFETY: malloc_trim only releases free memory of the allocator; no pointers change.
    unsafe {
        libc::malloc_trim(0);
    }
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{READY_LINE}");
        let _ = out.flush();
    }
    let dns_task = dns.map(|d| {
        let stats = d.stats();
        let serve = tokio::spawn(d.serve());
        let report = tokio::spawn(async move {
            // The DNS counts go to the audit stream (stdout), never the names.
            let mut last = stats.audit_line();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let line = stats.audit_line();
                if line != last {
                    use std::io::Write as _;
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                    last = line;
                }
            }
        });
        (serve, report)
    });
    let handle = proxy.clone();
    let served = async move {
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
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{LAUNCHER_GONE_LINE}");
            let _ = out.flush();
            Ok(())
        }
    }
}

/// The line the sidecar writes to stdout when its lifeline (stdin) reaches EOF, just before it
/// stops.
pub const LAUNCHER_GONE_LINE: &str = "{\"event\":\"launcher_gone\"}";

/// The line the sidecar writes to stdout after a `sync` command on its lifeline, once every
/// audit record decided before it has been written.
pub const AUDIT_SYNCED_LINE: &str = "{\"event\":\"audit_synced\"}";

/// Follows the lifeline (stdin) until EOF or a read error — the launcher closed it, ended or
/// died. Each `sync` line on it flushes the audit log and answers [`AUDIT_SYNCED_LINE`];
/// other lines are ignored.
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
                Ok(_) if line.trim() == "sync" => {
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
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{AUDIT_SYNCED_LINE}");
        let _ = out.flush();
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
    let b = Bootstrap::read_stdin(READ_TIMEOUT).await?;
    run(b, configure).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ghp_TOPSECRETvalue1234567890";

    fn doc() -> serde_json::Value {
        serde_json::json!({
            "policy_toml": "[[route]]\nhost = \"example.com\"\n",
            "ca_cert_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "ca_key_pem": "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n",
            "secrets": { "GH_TOKEN": SECRET },
            "listen": "10.213.0.2:3128",
            "dns": { "listen": "10.213.0.2:53", "name": "Bottle-Sidecar.", "ip": "10.213.0.2" }
        })
    }

    fn err_of(v: &serde_json::Value) -> String {
        Bootstrap::parse(v.to_string().as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn good_document_parses() {
        let b = Bootstrap::parse(doc().to_string().as_bytes()).unwrap();
        assert_eq!(b.listen, "10.213.0.2:3128".parse().unwrap());
        assert_eq!(b.secrets["GH_TOKEN"].as_str(), SECRET);
        assert_eq!(b.secrets_map()["GH_TOKEN"], SECRET);
        let dns = b.dns.as_ref().unwrap();
        assert_eq!(dns.name, "bottle-sidecar");
        assert_eq!(dns.ip, Ipv4Addr::new(10, 213, 0, 2));
        let dbg = format!("{b:?}");
        assert!(dbg.contains("GH_TOKEN") && !dbg.contains(SECRET) && !dbg.contains("BBBB"));
    }

    #[test]
    fn lifeline_is_an_optional_boolean() {
        assert!(
            !Bootstrap::parse(doc().to_string().as_bytes())
                .unwrap()
                .lifeline
        );
        let mut v = doc();
        v["lifeline"] = serde_json::json!(true);
        assert!(Bootstrap::parse(v.to_string().as_bytes()).unwrap().lifeline);
        v["lifeline"] = serde_json::json!("yes");
        let e = err_of(&v);
        assert!(e.contains("lifeline") && e.contains("boolean"), "{e}");
    }

    #[test]
    fn dns_and_secrets_are_optional() {
        let mut v = doc();
        v.as_object_mut().unwrap().remove("dns");
        v.as_object_mut().unwrap().remove("secrets");
        let b = Bootstrap::parse(v.to_string().as_bytes()).unwrap();
        assert!(b.dns.is_none() && b.secrets.is_empty());
    }

    #[test]
    fn bad_json_reports_position_not_text() {
        let text = format!("{{\"secrets\": {{\"A\": \"{SECRET}\"}} \"listen\" }}");
        let e = Bootstrap::parse(text.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("invalid JSON at line 1"), "{e}");
        assert!(!e.contains(SECRET), "{e}");
        let e = Bootstrap::parse(b"{\"policy_toml\": \"abc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("EOF"), "{e}");
        assert!(matches!(
            Bootstrap::parse(b"  \n"),
            Err(BootstrapError::Empty)
        ));
        assert!(matches!(
            Bootstrap::parse(format!("{} {}", doc(), doc()).as_bytes()),
            Err(BootstrapError::Trailing)
        ));
        let e = Bootstrap::parse(b"[1,2]").unwrap_err().to_string();
        assert!(e.contains("must be a JSON object"), "{e}");
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        for key in ["policy_toml", "ca_cert_pem", "ca_key_pem", "listen"] {
            let mut v = doc();
            v.as_object_mut().unwrap().remove(key);
            let e = err_of(&v);
            assert!(
                e.contains(&format!("`{key}`")) && e.contains("missing"),
                "{e}"
            );
        }
        let mut v = doc();
        v["dns"].as_object_mut().unwrap().remove("ip");
        assert!(err_of(&v).contains("`dns.ip`: missing"));
        let mut v = doc();
        v["listen"] = serde_json::json!(3128);
        assert!(err_of(&v).contains("`listen`: must be a string, got a number"));
        let mut v = doc();
        v["listen"] = serde_json::json!("localhost");
        assert!(err_of(&v).contains("not an IP:port"));
        let mut v = doc();
        v["dns"]["ip"] = serde_json::json!("::1");
        assert!(err_of(&v).contains("`dns.ip`"));
        let mut v = doc();
        v["ca_key_pem"] = serde_json::json!("nope");
        assert!(err_of(&v).contains("`ca_key_pem`: is not a PEM private key"));
        let mut v = doc();
        v["extra"] = serde_json::json!(1);
        assert!(err_of(&v).contains("`extra`: unknown field"));
        let mut v = doc();
        v["dns"]["port"] = serde_json::json!(1);
        assert!(err_of(&v).contains("`dns.port`: unknown field"));
    }

    #[test]
    fn secret_errors_never_echo_values() {
        let mut v = doc();
        v["secrets"] = serde_json::json!(SECRET);
        let e = err_of(&v);
        assert!(
            e.contains("`secrets`: must be an object") && !e.contains(SECRET),
            "{e}"
        );
        let mut v = doc();
        v["secrets"]["OTHER"] = serde_json::json!(["x", SECRET]);
        let e = err_of(&v);
        assert!(
            e.contains("`secrets.OTHER`: must be a string") && !e.contains(SECRET),
            "{e}"
        );
        let mut v = doc();
        v["secrets"]["BIG"] = serde_json::json!("x".repeat(MAX_SECRET_BYTES + 1));
        assert!(err_of(&v).contains("`secrets.BIG`: is longer than"));
        let mut v = doc();
        v["secrets"][SECRET] = serde_json::json!("x");
        // A valid-looking name is fine to show; an invalid one is not echoed.
        let mut w = doc();
        w["secrets"]["bad name ghp_x"] = serde_json::json!("x");
        let e = err_of(&w);
        assert!(e.contains("`secrets`") && !e.contains("ghp_x"), "{e}");
        assert!(Bootstrap::parse(v.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn oversized_documents_are_refused() {
        let big = vec![b' '; MAX_BOOTSTRAP_BYTES + 1];
        assert!(matches!(
            Bootstrap::parse(&big),
            Err(BootstrapError::TooLarge { .. })
        ));
        let reader = std::io::repeat(b' ').take((MAX_BOOTSTRAP_BYTES + 10) as u64);
        let e = Bootstrap::read_from(reader).unwrap_err();
        assert!(
            e.to_string().contains(&MAX_BOOTSTRAP_BYTES.to_string()),
            "{e}"
        );
    }

    #[test]
    fn read_from_stops_after_one_document_without_eof() {
        // A reader that would block forever after the document: simulate with a chain whose tail
        // errors if read.
        struct Boom;
        impl Read for Boom {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                panic!("read past the document");
            }
        }
        let text = format!("{}\n", doc());
        let b = Bootstrap::read_from(std::io::Cursor::new(text.into_bytes()).chain(Boom)).unwrap();
        assert_eq!(b.secrets.len(), 1);
    }
}
