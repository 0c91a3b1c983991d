//! Every `BOTTLE_*` environment variable the launcher reads, read once at start.
//!
//! `main` reads the environment into a [`Settings`] first thing and installs it with [`init`];
//! the backend ([`crate::runtime::docker::DockerBackend`]) and the launch options get it passed
//! down, and the path resolvers deep in the call graph (runtime/state/data/cache directories,
//! the image build) read the installed copy through [`current`]. Without [`init`] (unit tests,
//! the library used on its own), [`current`] reads the environment on each call, as every read
//! site did before.
//!
//! Values are kept raw (`OsString`, unset = `None`): each use applies the rule it always had
//! (an empty value ignored or not, a non-UTF-8 value treated as unset where the variable was
//! read as a `String`), so behaviour is the same as reading the variable at the point of use.
//! `BOTTLE_ID`, `BOTTLE_NAME`, `BOTTLE_AGENT`, `BOTTLE_PROMPT` and
//! `BOTTLE_SYSTEM_PROMPT_FILE` are set *in the agent* by bottle, never read by the launcher.
use std::ffi::OsString;
use std::sync::OnceLock;

/// The launcher's `BOTTLE_*` environment (see the `bottle --help` epilogue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `BOTTLE_HOME`: the config home (`bottles/`, `agents/`); default
    /// `$XDG_CONFIG_HOME/bottle` or `~/.config/bottle`. Read by
    /// [`crate::manifest::bottle_home`] (an empty value is ignored).
    pub home: Option<OsString>,
    /// `BOTTLE_SUBNET_POOL`: the IPv4 range bottle networks are carved from; default
    /// `10.213.0.0/16` ([`crate::runtime::subnet::pool_from_env`], `bottle doctor`).
    pub subnet_pool: Option<OsString>,
    /// `BOTTLE_EGRESS`: `per-bottle` gives each bottle its own egress bridge; anything else
    /// (default `shared`) one egress bridge for all sidecars.
    pub egress: Option<OsString>,
    /// `BOTTLE_EGRESS_NETWORK`: an existing network used as the sidecars' egress network
    /// (tests); empty = unset.
    pub egress_network: Option<OsString>,
    /// `BOTTLE_RUNTIME_DIR`: runtime files; default `$XDG_RUNTIME_DIR/bottle` or
    /// `~/.local/state/bottle/run` ([`crate::runtime::statedir::base_dir`]).
    pub runtime_dir: Option<OsString>,
    /// `BOTTLE_STATE_DIR`: state (trusted agents, events, sessions); default
    /// `$XDG_STATE_HOME/bottle` or `~/.local/state/bottle` ([`crate::trust::state_dir`]).
    pub state_dir: Option<OsString>,
    /// `BOTTLE_DATA_DIR`: kept workspace copies; default `$XDG_DATA_HOME/bottle` or
    /// `~/.local/share/bottle` ([`crate::runtime::statedir::data_dir`]).
    pub data_dir: Option<OsString>,
    /// `BOTTLE_CACHE_DIR`: downloaded agent wheels (`wheels/`); default
    /// `$XDG_CACHE_HOME/bottle` or `~/.cache/bottle`.
    pub cache_dir: Option<OsString>,
    /// `BOTTLE_PYTHON`: the Python whose pip downloads the pinned agent wheels; default
    /// `python3`.
    pub python: Option<OsString>,
    /// `BOTTLE_SRC_DIR`: the bottle checkout the sidecar image is built from.
    pub src_dir: Option<OsString>,
    /// `BOTTLE_SIDECAR_BIN`: a prebuilt static `bottle-sidecar` to package instead of running
    /// cargo.
    pub sidecar_bin: Option<OsString>,
    /// `BOTTLE_SIDECAR_IMAGE`: run this local sidecar image instead of the built one.
    pub sidecar_image: Option<OsString>,
    /// `BOTTLE_SIDECAR_GIT_IMAGE`: the same for the sidecar image with git (bottles with git
    /// remotes).
    pub sidecar_git_image: Option<OsString>,
    /// `BOTTLE_AGENT_IMAGE`: run this local agent image instead of the built one.
    pub agent_image: Option<OsString>,
    /// `BOTTLE_VERBOSE`: print launch steps with timings (set = on, whatever its value).
    pub verbose: bool,
    /// `BOTTLE_TRACE_TIMING`: print the duration of every launch and teardown phase (set to
    /// anything but empty or `0`).
    pub trace_timing: Option<OsString>,
}

impl Settings {
    /// Reads every variable from the process environment.
    pub fn from_env() -> Settings {
        let v = |k: &str| std::env::var_os(k);
        Settings {
            home: v("BOTTLE_HOME"),
            subnet_pool: v("BOTTLE_SUBNET_POOL"),
            egress: v("BOTTLE_EGRESS"),
            egress_network: v("BOTTLE_EGRESS_NETWORK"),
            runtime_dir: v("BOTTLE_RUNTIME_DIR"),
            state_dir: v("BOTTLE_STATE_DIR"),
            data_dir: v("BOTTLE_DATA_DIR"),
            cache_dir: v("BOTTLE_CACHE_DIR"),
            python: v("BOTTLE_PYTHON"),
            src_dir: v("BOTTLE_SRC_DIR"),
            sidecar_bin: v("BOTTLE_SIDECAR_BIN"),
            sidecar_image: v("BOTTLE_SIDECAR_IMAGE"),
            sidecar_git_image: v("BOTTLE_SIDECAR_GIT_IMAGE"),
            agent_image: v("BOTTLE_AGENT_IMAGE"),
            verbose: v("BOTTLE_VERBOSE").is_some(),
            trace_timing: v("BOTTLE_TRACE_TIMING"),
        }
    }

    /// Whether sidecars get a per-bottle egress network (`BOTTLE_EGRESS=per-bottle`).
    pub fn per_bottle_egress(&self) -> bool {
        self.egress.as_deref().and_then(|s| s.to_str()) == Some("per-bottle")
    }

    /// `BOTTLE_EGRESS_NETWORK`, when set to a non-empty UTF-8 value.
    pub fn egress_network(&self) -> Option<String> {
        text(&self.egress_network).filter(|s| !s.is_empty())
    }

    /// `BOTTLE_SUBNET_POOL` as text (unset or not UTF-8: `None`).
    pub fn subnet_pool(&self) -> Option<String> {
        text(&self.subnet_pool)
    }

    /// Whether phase timings are printed (`BOTTLE_TRACE_TIMING`).
    pub fn trace_timing(&self) -> bool {
        text(&self.trace_timing).is_some_and(|v| !v.is_empty() && v != "0")
    }
}

/// A variable's value as `std::env::var` reads it: `None` when unset or not UTF-8.
pub fn text(v: &Option<OsString>) -> Option<String> {
    v.clone().and_then(|s| s.into_string().ok())
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Installs the settings read at start (the first call wins).
pub fn init(s: Settings) -> &'static Settings {
    SETTINGS.get_or_init(|| s)
}

/// The installed settings, or (before [`init`]) the environment as it is now.
pub fn current() -> Settings {
    SETTINGS.get().cloned().unwrap_or_else(Settings::from_env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_follow_the_old_read_rules() {
        let s = Settings {
            egress: Some("per-bottle".into()),
            egress_network: Some("".into()),
            trace_timing: Some("0".into()),
            ..Default::default()
        };
        assert!(s.per_bottle_egress());
        assert_eq!(s.egress_network(), None);
        assert!(!s.trace_timing());
        let s = Settings {
            egress: Some("shared".into()),
            egress_network: Some("net1".into()),
            trace_timing: Some("1".into()),
            ..Default::default()
        };
        assert!(!s.per_bottle_egress());
        assert_eq!(s.egress_network().as_deref(), Some("net1"));
        assert!(s.trace_timing());
        assert!(!Settings::default().trace_timing());
    }
}
