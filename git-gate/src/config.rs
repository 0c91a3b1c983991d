//! What the gate serves: the declared remotes, their push policy and the limits.

use std::path::PathBuf;
use std::time::Duration;

use bottle_protocol::events::GitEvent;
use serde::{Deserialize, Serialize};

use crate::credential::Credential;
use crate::error::GateError;

/// Which ref updates a push may make on one remote. Checked by the `pre-receive` hook before
/// any object is scanned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PushPolicy {
    /// Ref patterns a push may update (`*` matches any run of characters, `/` included).
    /// Default `["refs/heads/*"]`.
    pub push: Vec<String>,
    /// Allow deleting refs. Default off.
    pub allow_delete: bool,
    /// Allow creating or moving `refs/tags/*` (they must also match `push`). Default off.
    pub allow_tags: bool,
    /// Allow non-fast-forward updates on every pushable ref. Default off.
    pub allow_force: bool,
    /// Ref patterns inside which non-fast-forward updates are allowed even when
    /// `allow_force` is off (e.g. `refs/heads/bottle/*`). Default none.
    pub force_namespaces: Vec<String>,
}

impl Default for PushPolicy {
    fn default() -> Self {
        PushPolicy {
            push: vec!["refs/heads/*".into()],
            allow_delete: false,
            allow_tags: false,
            allow_force: false,
            force_namespaces: Vec::new(),
        }
    }
}

/// One upstream remote the agent may fetch from and push to through the gate.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// The name in the gate's URL space: the agent uses `http://<gate>/<name>`.
    /// `[A-Za-z0-9._-]`, not starting with `.`.
    pub name: String,
    /// The upstream URL (`https://`, `http://` or `file://`), without userinfo.
    pub url: String,
    /// The credential for upstream, if any (sent as an `Authorization` header).
    pub credential: Option<Credential>,
    /// What pushes may do.
    pub policy: PushPolicy,
    /// Extra git config for this remote only, written into its mirror's config (so the
    /// refresh and the hook's upstream push both use it), e.g. `core.sshCommand` for an ssh
    /// remote. No secret values: paths and options.
    pub git_config: Vec<(String, String)>,
}

/// Size and time limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted, compressed or decompressed (bytes).
    pub max_request_bytes: u64,
    /// Largest blob a push may contain (bytes); a larger one rejects the push (not skipped).
    pub max_blob_bytes: u64,
    /// Deadline for refreshing the mirror from upstream.
    pub fetch_timeout: Duration,
    /// Deadline for one upload-pack/receive-pack run (including the hook and the upstream push).
    pub service_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 512 << 20,
            max_blob_bytes: 64 << 20,
            fetch_timeout: Duration::from_secs(60),
            service_timeout: Duration::from_secs(600),
        }
    }
}

/// Where the gate's audit records go: one [`GitEvent`] per fetch and push (no secrets:
/// remote, refs, object ids, counts, rule ids, decision, duration). The sidecar writes them
/// to stdout as `{"event":"git",…}` lines (`bottle_protocol::events`).
#[derive(Clone, Default)]
pub struct AuditSink(Option<std::sync::Arc<AuditFn>>);

/// The callback of an [`AuditSink`].
type AuditFn = dyn Fn(&GitEvent) + Send + Sync;

impl AuditSink {
    /// A sink calling `f` for every record.
    pub fn new(f: impl Fn(&GitEvent) + Send + Sync + 'static) -> Self {
        AuditSink(Some(std::sync::Arc::new(f)))
    }

    /// Emits one record (nothing without a sink).
    pub fn emit(&self, record: &GitEvent) {
        if let Some(f) = &self.0 {
            f(record);
        }
    }
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AuditSink(on)"
        } else {
            "AuditSink(off)"
        })
    }
}

/// The whole gate configuration.
#[derive(Clone, Debug)]
pub struct GateConfig {
    /// A private (0700) directory for the mirrors and the hooks directory. Created if missing.
    pub state_dir: PathBuf,
    /// The `bottle-git-hook` binary, installed as every mirror's `pre-receive` hook.
    pub hook_program: PathBuf,
    /// The git binary (default `git` from `PATH`).
    pub git_program: PathBuf,
    /// The declared remotes.
    pub remotes: Vec<RemoteConfig>,
    /// Limits.
    pub limits: Limits,
    /// The bottle's own secrets (name, value): a push containing any of them in any encoding
    /// the scanner knows is rejected. Every remote's credential is added automatically.
    pub known_secrets: Vec<(String, Vec<u8>)>,
    /// Extra git config entries (key, value) for every git child, through the environment:
    /// how upstream is reached, e.g. `http.sslCAInfo` (the trust anchors) and
    /// `http.curloptResolve` (`host:port:address`, the vetted address dialled).
    pub upstream_config: Vec<(String, String)>,
    /// Audit records of every fetch and push.
    pub audit: AuditSink,
}

impl GateConfig {
    /// A config with default limits, `git` from `PATH` and no known secrets.
    pub fn new(state_dir: PathBuf, hook_program: PathBuf, remotes: Vec<RemoteConfig>) -> Self {
        GateConfig {
            state_dir,
            hook_program,
            git_program: PathBuf::from("git"),
            remotes,
            limits: Limits::default(),
            known_secrets: Vec::new(),
            upstream_config: Vec::new(),
            audit: AuditSink::default(),
        }
    }

    /// Checks names, URLs and patterns; the error names the remote and field.
    pub fn validate(&self) -> Result<(), GateError> {
        let mut seen = std::collections::HashSet::new();
        for r in &self.remotes {
            validate_name(&r.name)?;
            if !seen.insert(r.name.as_str()) {
                return Err(GateError::Config(format!(
                    "remote {:?} is declared twice",
                    r.name
                )));
            }
            validate_url(&r.name, &r.url)?;
            for p in r.policy.push.iter().chain(&r.policy.force_namespaces) {
                if !p.starts_with("refs/") || p.contains("..") || p.chars().any(char::is_whitespace)
                {
                    return Err(GateError::Config(format!(
                        "remote {:?}: ref pattern {p:?} must start with refs/ and contain no '..' or spaces",
                        r.name
                    )));
                }
            }
        }
        if self.limits.max_request_bytes == 0 || self.limits.max_blob_bytes == 0 {
            return Err(GateError::Config("limits must be positive".into()));
        }
        Ok(())
    }
}

fn validate_name(name: &str) -> Result<(), GateError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(GateError::Config(format!(
            "remote name {name:?} must be 1-100 characters of [A-Za-z0-9._-], not starting with '.'"
        )))
    }
}

fn validate_url(name: &str, url: &str) -> Result<(), GateError> {
    let rest = ["https://", "http://", "file://", "ssh://"]
        .iter()
        .find_map(|s| url.strip_prefix(s));
    let Some(rest) = rest else {
        return Err(GateError::Config(format!(
            "remote {name:?}: url must start with https://, http://, ssh:// or file://"
        )));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
    // ssh URLs name the login user (`git@`); a password in any URL is refused.
    let bad_userinfo = match (url.starts_with("ssh://"), userinfo) {
        (true, Some(u)) => u.contains(':'),
        (false, Some(_)) => true,
        (_, None) => false,
    };
    if bad_userinfo {
        return Err(GateError::Config(format!(
            "remote {name:?}: url must not contain credentials; use the remote's credential field"
        )));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) || url.len() > 2048 {
        return Err(GateError::Config(format!(
            "remote {name:?}: url contains whitespace or control characters, or is over 2048 bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, url: &str) -> GateConfig {
        GateConfig::new(
            "/tmp/x".into(),
            "/bin/true".into(),
            vec![RemoteConfig {
                name: name.into(),
                url: url.into(),
                credential: None,
                policy: PushPolicy::default(),
                git_config: Vec::new(),
            }],
        )
    }

    #[test]
    fn accepts_plain_remotes() {
        cfg("proj", "https://example.com/o/r.git")
            .validate()
            .unwrap();
        cfg("a.b_c-1", "file:///srv/r.git").validate().unwrap();
    }

    #[test]
    fn refuses_credentials_in_url_bad_names_and_schemes() {
        let e = cfg("p", "https://user:tok@example.com/r")
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().contains("must not contain credentials"),
            "{e}"
        );
        assert!(!e.to_string().contains("tok@"), "{e}");
        assert!(cfg("../x", "file:///r").validate().is_err());
        assert!(cfg(".hidden", "file:///r").validate().is_err());
        cfg("p", "ssh://git@example.com/r").validate().unwrap();
        assert!(cfg("p", "ssh://git:pw@example.com/r").validate().is_err());
        assert!(cfg("p", "ext::sh -c evil").validate().is_err());
    }

    #[test]
    fn refuses_duplicate_remotes_and_bad_patterns() {
        let mut c = cfg("p", "file:///r");
        c.remotes.push(c.remotes[0].clone());
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        let mut c = cfg("p", "file:///r");
        c.remotes[0].policy.push = vec!["heads/*".into()];
        assert!(c.validate().is_err());
    }
}
