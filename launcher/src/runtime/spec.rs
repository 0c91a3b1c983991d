//! What the runtime needs to launch one bottle, fully resolved on the host.
//!
//! The manifest layer produces a `Plan` (no secret values); [`LaunchSpec`] is that plan plus
//! the image references and the resolved secret values, which are held in [`Zeroizing`]
//! buffers and only ever written to the sidecar's stdin.
use std::collections::BTreeMap;
use std::path::PathBuf;

use bottle_proxy::policy::PolicyFile;
use zeroize::Zeroizing;

/// How the workspace reaches the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceSpec {
    /// Bind-mount a host directory read-write at `/workspace`.
    Bind(PathBuf),
    /// Copy a host directory into a private directory (removed at teardown) and bind that.
    Copy(PathBuf),
    /// No workspace; `/workspace` is an empty tmpfs.
    None,
}

/// Which OCI runtime runs the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// gVisor when a probe container actually starts under `runsc`, else runc.
    Auto,
    /// The engine's runc.
    Runc,
    /// gVisor (`runsc`); fails if it does not work.
    Runsc,
}

/// Resource limits of the agent container.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// CPUs (fractional).
    pub cpus: f64,
    /// Memory in bytes (swap is disabled: memory-swap = memory).
    pub memory: i64,
    /// Maximum number of processes.
    pub pids: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpus: 2.0,
            memory: 2 << 30,
            pids: 512,
        }
    }
}

/// Everything needed to create one bottle. Its `Debug` output never shows secret values.
#[derive(Clone)]
pub struct LaunchSpec {
    /// Bottle (manifest) name.
    pub bottle: String,
    /// Agent name.
    pub agent: String,
    /// Agent image reference (local).
    pub agent_image: String,
    /// Sidecar image reference (local).
    pub sidecar_image: String,
    /// The proxy policy the sidecar enforces.
    pub policy: PolicyFile,
    /// Secret values by name (sent to the sidecar over stdin only).
    pub secrets: BTreeMap<String, Zeroizing<String>>,
    /// Non-secret env for the agent, including placeholder values for provider tokens.
    pub env: BTreeMap<String, String>,
    /// The agent's system prompt (mounted read-only at `/etc/bottle/system-prompt.md`).
    pub system_prompt: Option<String>,
    /// Workspace mode.
    pub workspace: WorkspaceSpec,
    /// Agent limits.
    pub limits: Limits,
    /// Runtime choice.
    pub runtime: RuntimeChoice,
    /// Mount the workspace's git metadata read-only ([`crate::guard::git_mounts`]).
    pub protect_git: bool,
    /// Extra, non-secret labels.
    pub labels: BTreeMap<String, String>,
    /// Default command of the agent (interactive shell or agent CLI); empty = image default.
    pub default_cmd: Vec<String>,
    /// Git remotes served by the sidecar's git gate (none: no gate).
    pub git_remotes: Vec<crate::manifest::GitRemote>,
    /// Where the workspace and extra mounts go in the agent container.
    pub layout: AgentLayout,
    /// Model sidecars to start on the internal network (none: no model), resolved by the
    /// manifest layer; they hold no secret value.
    pub models: Vec<crate::manifest::ModelPlan>,
}

/// The agent container's file layout: the workspace's place, the working directory and any
/// mounts beyond bottle's own (gemba agents).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentLayout {
    /// Where the workspace appears (`/workspace`; gemba: its `{{workspace}}` mount's `dst`).
    pub workspace_target: String,
    /// The workspace bind is read-only.
    pub workspace_read_only: bool,
    /// The agent's working directory (default: the workspace target).
    pub workdir: Option<String>,
    /// Extra bind and tmpfs mounts.
    pub mounts: Vec<crate::manifest::ExtraMount>,
}

impl Default for AgentLayout {
    fn default() -> Self {
        AgentLayout {
            workspace_target: crate::manifest::WORKSPACE_PATH.into(),
            workspace_read_only: false,
            workdir: None,
            mounts: Vec::new(),
        }
    }
}

impl AgentLayout {
    /// The agent's working directory.
    pub fn workdir(&self) -> &str {
        self.workdir.as_deref().unwrap_or(&self.workspace_target)
    }
}

impl std::fmt::Debug for LaunchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchSpec")
            .field("bottle", &self.bottle)
            .field("agent", &self.agent)
            .field("agent_image", &self.agent_image)
            .field("sidecar_image", &self.sidecar_image)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("workspace", &self.workspace)
            .field("limits", &self.limits)
            .field("runtime", &self.runtime)
            .field(
                "models",
                &self.models.iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A printable, secret-free view of a [`LaunchSpec`] (the preflight summary and `--dry-run`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpecSummary {
    /// Bottle name.
    pub bottle: String,
    /// Agent name.
    pub agent: String,
    /// Agent image.
    pub agent_image: String,
    /// Sidecar image.
    pub sidecar_image: String,
    /// Routes as `id: host [ports]`.
    pub routes: Vec<String>,
    /// Secret names (never values).
    pub secrets: Vec<String>,
    /// Env names given to the agent by the manifest.
    pub env: Vec<String>,
    /// Workspace description.
    pub workspace: String,
    /// CPUs.
    pub cpus: f64,
    /// Memory bytes.
    pub memory: i64,
    /// Process limit.
    pub pids: i64,
    /// Runtime choice.
    pub runtime: String,
    /// The policy file the sidecar gets (TOML).
    pub policy_toml: String,
}

/// Builds the summary.
pub fn summary(s: &LaunchSpec) -> SpecSummary {
    SpecSummary {
        bottle: s.bottle.clone(),
        agent: s.agent.clone(),
        agent_image: s.agent_image.clone(),
        sidecar_image: s.sidecar_image.clone(),
        routes: s
            .policy
            .routes
            .iter()
            .map(|r| {
                let id = r.id.clone().unwrap_or_else(|| r.host.clone());
                if r.ports.is_empty() {
                    format!("{id}: {}", r.host)
                } else {
                    format!("{id}: {} {:?}", r.host, r.ports)
                }
            })
            .collect(),
        secrets: s.secrets.keys().cloned().collect(),
        env: s.env.keys().cloned().collect(),
        workspace: match &s.workspace {
            WorkspaceSpec::Bind(p) => format!("bind {} (read-write)", p.display()),
            WorkspaceSpec::Copy(p) => format!("copy of {}", p.display()),
            WorkspaceSpec::None => "none".into(),
        },
        cpus: s.limits.cpus,
        memory: s.limits.memory,
        pids: s.limits.pids,
        runtime: format!("{:?}", s.runtime).to_lowercase(),
        policy_toml: toml::to_string(&s.policy).unwrap_or_default(),
    }
}

/// The human preflight summary.
pub fn summary_text(s: &SpecSummary) -> String {
    let none = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "bottle {} · agent {}\n  routes:    {}\n  secrets:   {}\n  workspace: {}\n  limits:    {} cpus, {} MiB, {} pids · runtime {}\n",
        s.bottle,
        s.agent,
        if s.routes.is_empty() { "none (all egress denied)".into() } else { s.routes.join("; ") },
        none(&s.secrets),
        s.workspace,
        s.cpus,
        s.memory >> 20,
        s.pids,
        s.runtime
    )
}

#[cfg(test)]
impl LaunchSpec {
    /// A minimal spec for unit tests: no secrets, env, workspace or git remotes.
    pub(crate) fn sample() -> LaunchSpec {
        LaunchSpec {
            bottle: "b".into(),
            agent: "a".into(),
            agent_image: "agent:img".into(),
            sidecar_image: "sidecar:img".into(),
            policy: PolicyFile::default(),
            secrets: BTreeMap::new(),
            env: BTreeMap::new(),
            system_prompt: None,
            workspace: WorkspaceSpec::None,
            limits: Limits::default(),
            runtime: RuntimeChoice::Auto,
            labels: BTreeMap::new(),
            protect_git: true,
            default_cmd: vec![],
            git_remotes: vec![],
            layout: AgentLayout::default(),
            models: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_summary_hide_secret_values() {
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "GH".to_string(),
            Zeroizing::new("ghp_topsecretvalue".to_string()),
        );
        let mut spec = LaunchSpec::sample();
        spec.secrets = secrets;
        let dbg = format!("{spec:?}");
        assert!(dbg.contains("GH") && !dbg.contains("topsecret"));
        let sum = serde_json::to_string(&summary(&spec)).unwrap();
        assert!(sum.contains("GH") && !sum.contains("topsecret"));
        assert!(!summary_text(&summary(&spec)).contains("topsecret"));
    }
}
