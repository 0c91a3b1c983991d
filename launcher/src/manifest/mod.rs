//! Bottle and agent manifests: loading, validation, `extends` merging and the resolved plan.
//!
//! Layout of the config home (`$BOTTLE_HOME`, default `~/.config/bottle`):
//!
//! ```text
//! $BOTTLE_HOME/bottles/<name>.toml   bottles: image, workspace, resources, routes, secrets, env, git remotes, models
//! $BOTTLE_HOME/agents/<name>.md      agents: +++ TOML front matter +++ then the system prompt
//! <repo>/.bottle/agents/<name>.md    repository agents (untrusted: no routes, secrets or remotes)
//! ```
//!
//! Bottles come **only** from `$BOTTLE_HOME`: credentials, egress routes and git remotes can
//! never come from a cloned repository. The user documentation is `docs/manifests.md`.
//!
//! Entry points: [`resolve_plan`] (what `bottle start|run|info` use), [`check_all`]
//! (`bottle check`), [`Plan`] (serialisable, no secret values) and
//! [`SecretSource::resolve`] (called once at start).
// Errors carry file, line, key and suggestion so messages can say what to do next; they are
// produced once per failed load (a cold path), so their size does not matter.
#![allow(clippy::result_large_err)]

mod agent;
mod bottle;
mod error;
mod extends;
mod gemba;
mod model;
mod plan;
mod render;
mod secrets;
mod source;
mod suggest;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use agent::{AgentOrigin, COLOURS, MAX_LABEL};
pub use bottle::{
    builtin_bottle, is_valid_name, parse_memory, GitRemote, ImageSpec, ModelEngine, ModelSpec,
    RuntimeMode, Template, WorkspaceMode, BUILTIN_BOTTLES, BUILTIN_SHELL, MIN_MEMORY,
};
pub use error::{Location, ManifestError};
pub use extends::MAX_EXTENDS_DEPTH;
pub use gemba::{load_gemba, GembaAgent, Preamble, GEMBA_DEFAULT_CWD};
pub use model::{
    agent_wiring, parse_duration, parse_volume, resolve_model, DeviceId, Gpu, GpuSpec, ModelPlan,
    ModelVolume, ReadyCheck, ReadySpec, DEFAULT_CONTEXT, DEFAULT_READY_TIMEOUT,
};
pub use plan::{
    check_all, list_agents, resolve_plan, AgentEntry, ExtraMount, GitPlan, Plan, Resources,
    SecretPlan, WorkspacePlan, DEFAULT_CPUS, DEFAULT_MEMORY, DEFAULT_PIDS, WORKSPACE_PATH,
};
pub use secrets::{
    placeholder_value, SecretSource, COMMAND_TIMEOUT, KNOWN_PROVIDER_ENV, MAX_SECRET_BYTES,
};
pub use suggest::did_you_mean;

/// Environment variables the launcher sets in the agent container itself; bottles and agents
/// may not set them (nor anything starting with `BOTTLE_`).
pub const RESERVED_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "NODE_USE_ENV_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
    "PIP_CERT",
    "AWS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "HOME",
    "USER",
    "PATH",
];

/// The config home: `$BOTTLE_HOME`, else `$XDG_CONFIG_HOME/bottle`, else `~/.config/bottle`.
/// `None` only when none of `BOTTLE_HOME`, `XDG_CONFIG_HOME` and `HOME` is set.
pub fn bottle_home() -> Option<PathBuf> {
    let non_empty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(h) = crate::settings::current().home.filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(h));
    }
    if let Some(x) = non_empty("XDG_CONFIG_HOME") {
        return Some(x.join("bottle"));
    }
    non_empty("HOME").map(|h| h.join(".config").join("bottle"))
}

/// What an agent file's text asks for, in one line (`bottle `dev`, command ["sh", …]`), for
/// trust records and messages; `None` when it does not parse. Control characters are escaped.
pub fn agent_effect(text: &str) -> Option<String> {
    let doc = agent::parse_agent(
        AgentOrigin::Repo,
        PathBuf::from("<agent>"),
        "<agent>".into(),
        text,
    )
    .ok()?;
    let mut s = match &doc.bottle {
        Some((b, _)) => format!("bottle `{}`", crate::termfilter::escape_line(b)),
        None => "the bottle named like the agent".to_string(),
    };
    if let Some(c) = &doc.command {
        s.push_str(&format!(", command {c:?}"));
    }
    Some(s)
}

/// Whether `name` is a usable environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands a path from a manifest: `~/x` is relative to `$HOME`, other relative paths are
/// relative to `$BOTTLE_HOME`.
pub(crate) fn expand_path(p: &str, home: &Path) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(rest);
        }
    }
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        home.join(path)
    }
}
