//! The git gate in bottle mode: its section of the bootstrap document, the vetting of every
//! upstream host against the egress floor, and the gate served on the bottle network.
//!
//! The `git` section names each remote's credential by secret name (the value comes from the
//! document's `secrets`), so it holds no secret itself. Every upstream host is resolved once at
//! start and each address classified like the proxy does (`bottle_proxy::ssrf`): a non-public
//! address must be covered by the remote's `allow_private`, and the vetted address is the one
//! git dials (`http.curloptResolve`), so nothing resolves the name again.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bottle_git_gate::{Credential, GateConfig, GitGate, Limits, PushPolicy, RemoteConfig};
use bottle_protocol::bootstrap::GitPushPolicy;
use bottle_protocol::events::{Event, GitEvent, GitTicket, TicketDecision};
use zeroize::Zeroizing;

/// Where git looks for the system trust anchors in the Debian-based sidecar image.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The `git` section of the bootstrap document (parsed and checked by `bottle-protocol`).
pub use bottle_protocol::bootstrap::Git as GitSection;
/// One remote of the `git` section.
pub use bottle_protocol::bootstrap::GitRemote;

/// The gate's push policy of a remote, from the bootstrap's.
fn push_policy(p: &GitPushPolicy) -> PushPolicy {
    PushPolicy {
        push: p.push.clone(),
        allow_delete: p.allow_delete,
        allow_tags: p.allow_tags,
        allow_force: p.allow_force,
        force_namespaces: p.force_namespaces.clone(),
    }
}

/// The networks of `remote.allow_private` (the bootstrap parser checked their form).
fn allow_private(remote: &GitRemote) -> Result<Vec<ipnet::IpNet>, GitError> {
    remote
        .allow_private
        .iter()
        .enumerate()
        .map(|(i, n)| {
            n.parse().map_err(|_| GitError::Remote {
                remote: remote.name.clone(),
                problem: format!("allow_private entry {i} is not a network"),
            })
        })
        .collect()
}

/// Why the gate could not start. Never holds a secret value.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// A remote is unusable (its name and why).
    #[error("git remote `{remote}`: {problem}")]
    Remote {
        /// The remote's name.
        remote: String,
        /// What is wrong.
        problem: String,
    },
    /// The gate itself failed to start.
    #[error("git gate: {0}")]
    Gate(String),
}

/// The host and port of an `https://` or `ssh://` URL.
fn host_port(remote: &GitRemote) -> Result<(String, u16), GitError> {
    let bad = |p: &str| GitError::Remote {
        remote: remote.name.clone(),
        problem: p.to_string(),
    };
    let (rest, default_port, ssh) = if let Some(r) = remote.url.strip_prefix("https://") {
        (r, 443, false)
    } else if let Some(r) = remote.url.strip_prefix("ssh://") {
        (r, 22, true)
    } else {
        return Err(bad(
            "the gate reaches upstream over https:// or ssh:// only",
        ));
    };
    let mut authority = rest.split('/').next().unwrap_or("");
    if ssh {
        // The login user (`git@`) is part of an ssh URL; never a password.
        if let Some((user, host)) = authority.rsplit_once('@') {
            if user.contains(':') {
                return Err(bad("the url must not hold a password"));
            }
            authority = host;
        }
    }
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("the url needs a host and no user info"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(port) => (h, port),
            Err(_) => return Err(bad("the url's port is not a number")),
        },
        _ => (authority, default_port),
    };
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
        port,
    ))
}

/// Whether the egress floor lets the gate dial `ip` for a remote with these `allow_private`
/// networks.
fn allowed(allow_private: &[ipnet::IpNet], ip: IpAddr) -> bool {
    use bottle_proxy::ssrf::{classify, AddrClass};
    let class = classify(ip);
    if class == AddrClass::Public {
        return true;
    }
    let metadata = class == AddrClass::Metadata;
    allow_private
        .iter()
        .any(|n| n.contains(&ip) && (!metadata || n.prefix_len() == n.max_prefix_len()))
}

/// Resolves the upstream host once and returns the `http.curloptResolve` pin of the first
/// address the floor allows; an error names the remote and the refused address classes.
async fn vet(remote: &GitRemote) -> Result<String, GitError> {
    let (host, port) = host_port(remote)?;
    let allow = allow_private(remote)?;
    let fail = |problem: String| GitError::Remote {
        remote: remote.name.clone(),
        problem,
    };
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| fail(format!("resolving {host} timed out")))?
        .map_err(|e| fail(format!("cannot resolve {host}: {e}")))?
        .map(|a| a.ip())
        .collect(),
    };
    match addrs.iter().find(|ip| allowed(&allow, **ip)) {
        Some(ip) => {
            let shown = match ip {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            };
            Ok(format!("{host}:{port}:{shown}"))
        }
        None => {
            let classes: Vec<String> = addrs
                .iter()
                .map(|ip| format!("{ip} ({})", bottle_proxy::ssrf::classify(*ip)))
                .collect();
            Err(fail(format!(
                "{host} resolves only to addresses the egress floor refuses: {}; if this upstream is \
                 meant to be on a private network, add it to the remote's allow_private",
                classes.join(", ")
            )))
        }
    }
}

/// The credential of `remote`, from the document's secrets.
fn credential(
    remote: &GitRemote,
    secrets: &BTreeMap<String, Zeroizing<String>>,
) -> Result<Option<Credential>, GitError> {
    let Some(name) = &remote.secret else {
        return Ok(None);
    };
    let value = secrets.get(name).ok_or_else(|| GitError::Remote {
        remote: remote.name.clone(),
        problem: format!("its secret `{name}` is not in the document's secrets"),
    })?;
    Ok(Some(match &remote.username {
        Some(u) => Credential::Basic {
            username: u.clone(),
            password: value.as_str().to_owned(),
        },
        None => Credential::Bearer(value.as_str().to_owned()),
    }))
}

/// For an ssh remote: writes its private key (0600) and the pinned host key into the state
/// directory and returns the `core.sshCommand` that uses exactly them — strict host key
/// checking, no agent, no config files, the vetted address dialled (`HostName`) while the
/// host key is matched against the remote's name (`HostKeyAlias`).
fn ssh_setup(
    remote: &GitRemote,
    secrets: &BTreeMap<String, Zeroizing<String>>,
    state_dir: &Path,
    pin: &str,
) -> Result<Option<String>, GitError> {
    if !remote.url.starts_with("ssh://") {
        return Ok(None);
    }
    let fail = |problem: String| GitError::Remote {
        remote: remote.name.clone(),
        problem,
    };
    let (Some(key_name), Some(host_key)) = (&remote.ssh_key, &remote.host_key) else {
        return Err(fail(
            "an ssh remote needs ssh_key and host_key (strict host key checking)".into(),
        ));
    };
    let key = secrets.get(key_name).ok_or_else(|| {
        fail(format!(
            "its ssh_key secret `{key_name}` is not in the document's secrets"
        ))
    })?;
    let (host, port) = host_port(remote)?;
    // pin = host:port:address ([v6] bracketed)
    let addr = pin
        .strip_prefix(&format!("{host}:{port}:"))
        .unwrap_or("")
        .trim_matches(['[', ']']);
    let dir = state_dir.join("ssh");
    std::fs::create_dir_all(&dir)
        .map_err(|e| GitError::Gate(format!("creating {}: {e}", dir.display())))?;
    let key_path = dir.join(format!("{}.key", remote.name));
    let known = dir.join(format!("{}.known_hosts", remote.name));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let _ = std::fs::remove_file(&key_path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(|e| {
                GitError::Gate(format!("writing the ssh key of `{}`: {e}", remote.name))
            })?;
        let mut text = key.as_str().to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        f.write_all(text.as_bytes()).map_err(|e| {
            GitError::Gate(format!("writing the ssh key of `{}`: {e}", remote.name))
        })?;
    }
    let entry = host_key
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(&known, format!("{host} {entry}\n[{host}]:{port} {entry}\n"))
        .map_err(|e| GitError::Gate(format!("writing {}: {e}", known.display())))?;
    Ok(Some(format!(
        "ssh -F /dev/null -i {key} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
         -o StrictHostKeyChecking=yes -o UserKnownHostsFile={known} -o GlobalKnownHostsFile=/dev/null \
         -o HostKeyAlias={host} -o HostName={addr} -o Port={port} -o ConnectTimeout=15",
        key = key_path.display(),
        known = known.display(),
    )))
}

/// Writes the trust anchors git uses for upstream: the system bundle plus the policy's extra
/// roots. Returns the file's path.
fn write_ca_bundle(state_dir: &Path, extra_roots: &[String]) -> Result<PathBuf, GitError> {
    let mut pem = std::fs::read_to_string(SYSTEM_CA_BUNDLE).unwrap_or_default();
    for r in extra_roots {
        pem.push('\n');
        pem.push_str(r);
    }
    std::fs::create_dir_all(state_dir)
        .map_err(|e| GitError::Gate(format!("creating {}: {e}", state_dir.display())))?;
    let path = state_dir.join("upstream-ca.pem");
    std::fs::write(&path, pem)
        .map_err(|e| GitError::Gate(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}

/// Builds the gate: vets every upstream, writes the trust anchors, creates the mirrors. The
/// bottle's secrets are the gate's known secrets (a push holding one is rejected).
pub async fn start(
    section: &GitSection,
    secrets: &BTreeMap<String, Zeroizing<String>>,
    extra_roots: &[String],
) -> Result<GitGate, GitError> {
    let mut upstream_config = Vec::new();
    let mut remotes = Vec::new();
    for r in &section.remotes {
        let pin = vet(r).await?;
        let mut git_config = Vec::new();
        match ssh_setup(r, secrets, &section.state_dir, &pin)? {
            Some(cmd) => git_config.push(("core.sshCommand".to_string(), cmd)),
            None => upstream_config.push(("http.curloptResolve".to_string(), pin)),
        }
        remotes.push(RemoteConfig {
            name: r.name.clone(),
            url: r.url.clone(),
            credential: credential(r, secrets)?,
            policy: push_policy(&r.policy),
            git_config,
        });
    }
    let ca = write_ca_bundle(&section.state_dir, extra_roots)?;
    upstream_config.push(("http.sslCAInfo".to_string(), ca.display().to_string()));
    upstream_config.push(("http.sslVerify".to_string(), "true".to_string()));
    let exe = std::env::current_exe()
        .map_err(|e| GitError::Gate(format!("cannot find the sidecar binary: {e}")))?;
    let mut limits = Limits::default();
    if let Some(n) = section.max_request_bytes {
        limits.max_request_bytes = n;
    }
    if let Some(n) = section.max_blob_bytes {
        limits.max_blob_bytes = n;
    }
    if let Some(s) = section.fetch_timeout_secs {
        limits.fetch_timeout = Duration::from_secs(s);
    }
    let mut cfg = GateConfig::new(section.state_dir.clone(), exe, remotes);
    cfg.limits = limits;
    cfg.upstream_config = upstream_config;
    // Gate records go to the audit stream (stdout) beside the proxy's.
    cfg.audit = bottle_git_gate::AuditSink::new(|r| crate::bootstrap::emit(&Event::Git(r.clone())));
    cfg.known_secrets = secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    GitGate::new(cfg).await.map_err(|e| {
        let msg = e.to_string();
        if msg.contains("No such file") || msg.contains("not found") {
            GitError::Gate(format!(
                "{msg} (the git gate needs git in the sidecar image: bottle uses the sidecar-git image for bottles with git remotes)"
            ))
        } else {
            GitError::Gate(msg)
        }
    })
}

/// Where bottle mode keeps the gate's state (the launcher mounts a tmpfs there and names the
/// same path in the bootstrap's `git.state_dir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bottle-git";

/// `bottle-sidecar git-ticket list | approve ID REASON | deny ID REASON`: the host's approval
/// channel (`bottle approve` runs it with `docker exec`, which the agent cannot). Prints one
/// JSON document; returns the exit code (0 ok, 3 unknown ticket, 2 usage).
pub fn ticket_command(args: &[String]) -> i32 {
    let dir = std::env::var_os("BOTTLE_GIT_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let store = bottle_git_gate::tickets::TicketStore::new(dir.join("tickets"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["list"] => {
            println!("{}", serde_json::json!({ "pending": store.pending() }));
            0
        }
        [verb @ ("approve" | "deny"), id, reason] => {
            match store.decide(id, *verb == "approve", reason) {
                Ok(t) => {
                    println!("{}", serde_json::json!({ "ticket": t, "decision": verb }));
                    0
                }
                Err(e) => {
                    eprintln!("bottle-sidecar: {e}");
                    3
                }
            }
        }
        _ => {
            eprintln!("usage: bottle-sidecar git-ticket list | approve ID REASON | deny ID REASON");
            2
        }
    }
}

/// Emits an audit record for every approval and denial recorded in the ticket store (by
/// `git-ticket` from the host), polling once a second.
pub async fn audit_decisions(state_dir: PathBuf) {
    let store = bottle_git_gate::tickets::TicketStore::new(state_dir.join("tickets"));
    let mut seen = std::collections::HashSet::new();
    loop {
        for (state, decision) in [
            ("approved", TicketDecision::Approve),
            ("denied", TicketDecision::Deny),
        ] {
            for t in store.list(state) {
                if seen.insert((state, t.id.clone())) {
                    crate::bootstrap::emit(&Event::Git(GitEvent::Ticket(GitTicket {
                        decision,
                        ticket: t.id,
                        remote: t.remote,
                        rule: t.rule,
                        path: t.path,
                        commit: t.commit,
                        reason: t.reason,
                    })));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether this process was started as the gate's `pre-receive` hook (git runs the symlink
/// `hooks/pre-receive` pointing at the sidecar binary).
pub fn invoked_as_hook() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "pre-receive"))
        .unwrap_or(false)
}

/// Runs the `pre-receive` hook on stdin/stderr; returns its exit code.
pub fn run_hook() -> i32 {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut err = std::io::stderr();
    bottle_git_gate::hook::run_pre_receive(&mut input, &mut err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(url: &str, allow: &[&str]) -> GitRemote {
        GitRemote {
            name: "origin".into(),
            url: url.into(),
            secret: None,
            username: None,
            ssh_key: None,
            host_key: None,
            allow_private: allow.iter().map(|n| n.to_string()).collect(),
            policy: GitPushPolicy::default(),
        }
    }

    #[test]
    fn host_and_port_come_from_the_url() {
        assert_eq!(
            host_port(&remote("https://Git.Example/o/r.git", &[])).unwrap(),
            ("git.example".into(), 443)
        );
        assert_eq!(
            host_port(&remote("https://h.test:8443/r", &[])).unwrap(),
            ("h.test".into(), 8443)
        );
        assert!(host_port(&remote("http://h.test/r", &[])).is_err());
        assert_eq!(
            host_port(&remote("ssh://git@h.test/o/r.git", &[])).unwrap(),
            ("h.test".into(), 22)
        );
        assert_eq!(
            host_port(&remote("ssh://git@h.test:2222/r", &[])).unwrap(),
            ("h.test".into(), 2222)
        );
        assert!(host_port(&remote("ssh://git:pw@h.test/r", &[])).is_err());
        assert!(host_port(&remote("https://u:p@h.test/r", &[])).is_err());
    }

    #[tokio::test]
    async fn private_upstreams_need_allow_private_and_the_pin_is_the_vetted_address() {
        let e = vet(&remote("https://10.1.2.3/r.git", &[]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("allow_private"), "{e}");
        assert!(e.to_string().contains("10.1.2.3 (private)"), "{e}");
        let pin = vet(&remote("https://10.1.2.3:8443/r.git", &["10.1.0.0/16"]))
            .await
            .unwrap();
        assert_eq!(pin, "10.1.2.3:8443:10.1.2.3");
        let e = vet(&remote("https://169.254.169.254/r", &["169.254.0.0/16"]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("metadata"), "{e}");
    }

    #[test]
    fn the_bootstrap_push_policy_defaults_to_the_gates() {
        // A policy the launcher leaves out means the same on both sides of the contract.
        assert_eq!(
            push_policy(&GitPushPolicy::default()),
            PushPolicy::default()
        );
    }

    #[test]
    fn the_hook_is_recognised_by_its_name() {
        // The test binary is not called pre-receive.
        assert!(!invoked_as_hook());
    }
}
