//! What one bottle is, whatever runs it: how the agent is attached ([`Mode`]), the options of
//! a launch ([`LaunchOptions`]), the fixed addresses and paths inside a bottle, and the git
//! report of a run. The Docker objects of a bottle are made in [`super::docker::bottle`].
use crate::guard::GitChange;

pub use super::agent_env::{gate_gitconfig, remote_spellings};
pub use super::docker::bottle::Bottle;
pub use super::docker::containers::AttachedOutput;
pub use super::docker::is_not_found;
pub use super::docker::networks::{SHARED_EGRESS, SHARED_LABEL};
pub use super::docker::probe::probe_runtime;

/// Proxy port of the sidecar.
pub const PROXY_PORT: u16 = 3128;
/// The port of the model egress proxy, on the sidecar's models-network address (only for
/// bottles whose model sidecars have `egress` routes).
pub const MODEL_PROXY_PORT: u16 = 3129;
/// Name (and network alias) of the sidecar on the internal network.
pub const SIDECAR_NAME: &str = "bottle-sidecar";
/// The git gate's port on the sidecar's internal address (bottles with git remotes).
pub const GATE_PORT: u16 = 8418;
/// The git gate's mirrors inside the sidecar: a tmpfs of [`GATE_MIRROR_SIZE`].
pub const GATE_STATE_DIR: &str = "/var/lib/bottle-git";
/// Size of the mirrors' tmpfs; the sidecar's memory limit grows by as much (tmpfs pages count).
pub const GATE_MIRROR_SIZE: i64 = 1 << 30;
/// Where the agent's git finds the gate's URL rewrites (read-only).
pub const AGENT_GITCONFIG_PATH: &str = "/etc/gitconfig";

/// The agent's home directory (a tmpfs).
pub const AGENT_HOME: &str = "/home/agent";
/// Where the bottle CA alone is mounted in the agent.
pub const AGENT_CA_PATH: &str = "/etc/bottle/ca.pem";
/// Where the system prompt is mounted in the agent.
pub const AGENT_PROMPT_PATH: &str = "/etc/bottle/system-prompt.md";

/// How the agent container is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Interactive TTY (`bottle start`).
    Start,
    /// Unattended, no TTY (`bottle run`).
    Run,
    /// Detached with a TTY and open input (`bottle spawn`): a supervisor process owns it.
    Spawn,
}

impl Mode {
    /// The label value (`start`, `run`, `spawn`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Start => "start",
            Mode::Run => "run",
            Mode::Spawn => "spawn",
        }
    }
}

/// Options of one launch that are not part of the manifest.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Start or run.
    pub mode: Mode,
    /// Command overriding the agent's default command.
    pub cmd: Option<Vec<String>>,
    /// Extra non-secret env (e.g. `BOTTLE_PROMPT`).
    pub extra_env: Vec<(String, String)>,
    /// Use this existing network (id or name) as the sidecars' egress network instead of a
    /// per-bottle one (`BOTTLE_EGRESS_NETWORK`).
    pub egress_network: Option<String>,
    /// Give the sidecar its own egress network instead of the shared one
    /// (`BOTTLE_EGRESS=per-bottle`; ignored with `egress_network`).
    pub per_bottle_egress: bool,
    /// Print progress lines on stderr.
    pub verbose: bool,
    /// `bottle run`: return only once every object is removed (by default the removal
    /// finishes in a detached `bottle` process once the result is known).
    pub wait_teardown: bool,
    /// The bottle id to use (`bottle spawn` picks it first, for gemba's `{{session_id}}`);
    /// `None`: a new one.
    pub id: Option<String>,
}

/// What happened to the workspace's git metadata during a run (`bottle run --json`: `git`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GitReport {
    /// The bottle mounted git metadata read-only (`protect_git`, default true).
    pub protected: bool,
    /// Workspace-relative paths mounted read-only.
    pub read_only: Vec<String>,
    /// Changes to git metadata found after the run (mounts cannot prevent everything; with
    /// `protect_git = false` nothing is prevented).
    pub changes: Vec<GitChange>,
}
