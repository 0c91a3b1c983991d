//! The bootstrap document the launcher writes to the sidecar's stdin in bottle mode
//! (docs/design.md, "Sidecar bootstrap"): exactly one JSON object, at most
//! [`MAX_BOOTSTRAP_BYTES`], ended by a newline.
//!
//! One type, [`Bootstrap`], is both what the launcher serialises ([`Bootstrap::to_json`]) and
//! what the sidecar gets back ([`Bootstrap::parse`]). The parser does not use serde's typed
//! deserialisation, whose errors quote the offending value (`invalid type: string "…"`) — the
//! document holds the CA key and the bottle's secrets. It parses into a `serde_json::Value`
//! (whose syntax errors carry only a phrase and a position), walks it with explicit key lists,
//! builds every error from the field's path and fixed text only, and wipes every string of the
//! `Value` (keys included) before it is dropped.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};
use zeroize::Zeroizing;

mod parse;
#[cfg(test)]
mod tests;

/// Largest accepted bootstrap document (4 MiB: policies are small, PEMs a few KiB).
pub const MAX_BOOTSTRAP_BYTES: usize = 4 << 20;
/// Largest accepted single secret value.
pub const MAX_SECRET_BYTES: usize = 64 << 10;

/// Why a bootstrap document was refused. Messages never contain a value from the document.
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
        /// What the parser expected (a fixed phrase, no document text).
        kind: String,
    },
    /// Something after the one document.
    #[error("bootstrap: unexpected data after the JSON document (send exactly one document)")]
    Trailing,
    /// A field is missing, has the wrong type or an invalid value.
    #[error("bootstrap: field `{field}`: {problem}")]
    Field {
        /// The JSON path of the field, e.g. `dns.ip`, `secrets.GH_TOKEN` or
        /// `git.remotes.0.policy.push`.
        field: String,
        /// What is wrong (fixed text, never the value).
        problem: String,
    },
}

/// The whole bootstrap document. Holds secrets: `Debug` shows secret names only, the CA key
/// and the secret values are wiped on drop, and [`Bootstrap::to_json`] writes into a buffer
/// that is wiped too.
#[derive(Serialize)]
pub struct Bootstrap {
    /// The policy file text (TOML), as `bottle_proxy::policy::Policy::from_toml_str` takes it.
    /// Required, not blank.
    pub policy_toml: String,
    /// The bottle CA certificate (PEM). Required.
    pub ca_cert_pem: String,
    /// The bottle CA private key (PEM; secret). Required.
    #[serde(serialize_with = "ser_zeroizing")]
    pub ca_key_pem: Zeroizing<String>,
    /// Secret values by name (names `[A-Za-z0-9_.-]`, at most 128 bytes; values non-empty, at
    /// most [`MAX_SECRET_BYTES`]). Optional on the wire (absent = none).
    #[serde(serialize_with = "ser_secrets")]
    pub secrets: BTreeMap<String, Zeroizing<String>>,
    /// Where the proxy listens (`IP:port`; the launcher sends the sidecar's internal IP).
    pub listen: SocketAddr,
    /// The DNS responder; absent = none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Stdin stays open after the document as the launcher's lifeline: when it reaches EOF (the
    /// launcher ended or died), the sidecar stops, so it never outlives its launcher. Absent =
    /// `false`.
    pub lifeline: bool,
    /// The git gate, for bottles with git remotes; absent = none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git: Option<Git>,
    /// The model egress proxy, for bottles whose model sidecars have `egress` routes; absent =
    /// none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelEgress>,
}

/// The model egress proxy's section (`models`): one listener on the sidecar's models-network
/// address that serves each model sidecar its own route set, telling the models apart by their
/// (static, unspoofable: every capability is dropped) source address. A connection from any
/// other address — the agent is on that network too — is refused before a byte is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelEgress {
    /// Where it listens (the sidecar's models-network address, e.g. `10.213.1.2:3129`). Bound
    /// before that address exists (the sidecar joins the models network after its start).
    pub listen: SocketAddr,
    /// The models allowed to use it; at least one, distinct names and addresses.
    pub clients: Vec<ModelClient>,
}

/// One model of [`ModelEgress`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelClient {
    /// The model's name (its DNS label; audit records say `model:<name>`).
    pub name: String,
    /// The model's static address on the models network.
    pub ip: Ipv4Addr,
    /// Its own policy file text (TOML): the bottle's settings and the model's routes only.
    pub policy_toml: String,
    /// The secrets its routes inject (keys of [`Bootstrap::secrets`]); it is given no other.
    pub secrets: Vec<String>,
}

/// The DNS responder's section (`dns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dns {
    /// UDP and TCP listen address (the sidecar's internal IP, port 53).
    pub listen: SocketAddr,
    /// The sidecar's own name. The parser lower-cases it and drops a trailing dot.
    pub name: String,
    /// The sidecar's IP on the internal network (what the name resolves to).
    pub ip: Ipv4Addr,
    /// Other names it answers (the model sidecars: name → address), lower case. Absent on the
    /// wire = none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, Ipv4Addr>,
}

/// The git gate's section (`git`). Holds no secret value: each remote names its credential by
/// secret name (a key of [`Bootstrap::secrets`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Git {
    /// Where the gate listens (the sidecar's internal address, e.g. `10.213.0.2:8418`).
    pub listen: SocketAddr,
    /// The mirrors' directory inside the sidecar (a size-capped tmpfs); an absolute path.
    pub state_dir: PathBuf,
    /// The declared remotes.
    pub remotes: Vec<GitRemote>,
    /// Largest pushed request body (bytes); absent = the gate's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u64>,
    /// Largest blob a push may contain (bytes); absent = the gate's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_blob_bytes: Option<u64>,
    /// Deadline for refreshing a mirror from upstream (seconds); absent = the gate's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch_timeout_secs: Option<u64>,
}

/// One remote of [`Git`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitRemote {
    /// The remote's name (the gate serves it at `http://<gate>/<name>`).
    pub name: String,
    /// The upstream URL (`https://…` or `ssh://…`).
    pub url: String,
    /// The secret (a key of [`Bootstrap::secrets`]) sent to upstream, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// With a secret: `Basic` auth with this user name (GitHub: `x-access-token`); without,
    /// the secret is a `Bearer` token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// SSH remotes: the secret (a key of [`Bootstrap::secrets`]) holding the private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    /// SSH remotes: the pinned host key (`<type> <base64>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Non-public networks the upstream host may resolve into, as `address/prefix`
    /// (e.g. `10.1.0.0/16`). Absent = none.
    pub allow_private: Vec<String>,
    /// What a push may do. Absent = [`GitPushPolicy::default`].
    pub policy: GitPushPolicy,
}

/// The push policy of a remote (the git gate's `PushPolicy`; every field optional on the wire,
/// defaulting to [`GitPushPolicy::default`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitPushPolicy {
    /// Ref patterns a push may update. Default `["refs/heads/*"]`.
    pub push: Vec<String>,
    /// Deletes allowed. Default off.
    pub allow_delete: bool,
    /// Tags allowed. Default off.
    pub allow_tags: bool,
    /// Force pushes allowed everywhere. Default off.
    pub allow_force: bool,
    /// Force pushes allowed inside these patterns. Default none.
    pub force_namespaces: Vec<String>,
}

impl Default for GitPushPolicy {
    fn default() -> Self {
        GitPushPolicy {
            push: vec!["refs/heads/*".into()],
            allow_delete: false,
            allow_tags: false,
            allow_force: false,
            force_namespaces: Vec::new(),
        }
    }
}

fn ser_zeroizing<S: Serializer>(v: &Zeroizing<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

fn ser_secrets<S: Serializer>(
    m: &BTreeMap<String, Zeroizing<String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, v)| (k, v.as_str())))
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
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Bootstrap {
    /// Serialises the document as one JSON line (with the trailing newline) into a buffer that
    /// is wiped when dropped. The buffer is sized before writing, so it never reallocates and
    /// leaves no unwiped copy of a secret behind.
    pub fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, serde_json::Error> {
        let mut count = Counter(0);
        serde_json::to_writer(&mut count, self)?;
        let mut buf = Zeroizing::new(Vec::with_capacity(count.0 + 1));
        serde_json::to_writer(&mut *buf, self)?;
        buf.push(b'\n');
        Ok(buf)
    }

    /// Parses and validates one document (see the module docs for what is refused).
    pub fn parse(bytes: &[u8]) -> Result<Bootstrap, BootstrapError> {
        parse::parse(bytes)
    }

    /// Reads one document from `reader` (until EOF, or until a complete document followed by a
    /// newline, so a launcher that keeps stdin open as the lifeline is served), then parses
    /// it. The raw bytes are wiped afterwards.
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
            if buf.len() + n > buf.capacity() {
                // Grow by hand so the old allocation is wiped, not just freed.
                let mut bigger =
                    Zeroizing::new(Vec::with_capacity((buf.capacity() * 2).max(buf.len() + n)));
                bigger.extend_from_slice(&buf);
                buf = bigger;
            }
            buf.extend_from_slice(&chunk[..n]);
            if chunk[..n].contains(&b'\n') && parse::is_complete(&buf) {
                break;
            }
        }
        Bootstrap::parse(&buf)
    }
}
