//! The backend a bottle runs on, behind one trait: [`Backend`]. Docker
//! ([`super::docker::DockerBackend`]) is the first implementation; the trait speaks only of
//! [`SessionId`]s, launch specs and the verbs' results, so another engine (Kubernetes: a pod
//! per bottle, a namespace or network policy per bottle) fits without changing it.
//!
//! Contracts common to every method that takes a [`SessionId`]:
//! - an id that is not a bottle id at all is an error saying so (nothing is asked of the
//!   engine); an id of a session with no objects left is an error naming the id and pointing
//!   at `bottle list` (except for [`Backend::reap`] and [`Backend::stop`], see there);
//! - errors are `anyhow` errors whose text is shown to the user as is: they say what to do next
//!   and never contain a secret value.
use std::future::Future;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::bottle::LaunchOptions;
use super::docker::reap::ReapReport;
use super::lifecycle::{Capture, CaptureMode, VerbResult};
use super::spec::LaunchSpec;
use super::verbs::BottleRow;

/// The id of one session (a bottle), opaque to callers: shown to users, passed back on the
/// command line, recorded in events and the session store. The Docker backend uses the bottle
/// id of the `io.bottle.id` labels (hex); another backend may use any string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// Wraps an id as given (by the user, or by a backend).
    pub fn new(id: impl Into<String>) -> SessionId {
        SessionId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for SessionId {
    fn from(s: String) -> SessionId {
        SessionId(s)
    }
}

impl From<&str> for SessionId {
    fn from(s: &str) -> SessionId {
        SessionId(s.to_string())
    }
}

/// A place bottles run. Methods return `impl Future` (Rust ≥ 1.75) rather than being
/// `async fn`, so that the futures' `Send`-ness is part of the contract (implementations
/// write `async fn`): the verbs on a session id are `Send`; `create`/`start` (a session holds
/// its live attachment streams), `attach` and `logs` (they hold the terminal) need not be.
/// Static dispatch only: the launcher constructs one backend.
pub trait Backend {
    /// A created session: every object exists, the agent is not started.
    type Session;

    /// The backend's name, as in `bottle list` and the event log (`docker`).
    fn name(&self) -> &'static str;

    /// Creates every object of a planned bottle (networks, sidecar with its bootstrap, agent)
    /// and returns once the sidecar is ready; the agent is created but not started (except an
    /// unattended agent held behind its start gate). On error, whatever was created is
    /// removed again and `session.failed_to_start` recorded. Not idempotent: each call is a
    /// new session with a new id.
    fn create(
        &self,
        spec: &LaunchSpec,
        opts: &LaunchOptions,
    ) -> impl Future<Output = Result<Self::Session>>;

    /// Starts the agent of a created session. Errors if it is already running.
    fn start(&self, session: &Self::Session) -> impl Future<Output = Result<()>>;

    /// Attaches this terminal to the agent of session `id` until the detach keys (which leave
    /// it running) or the agent's exit; returns the agent's exit code (or -1 when detached).
    fn attach(&self, id: &SessionId, detach_keys: &str) -> impl Future<Output = Result<i64>>;

    /// Runs `cmd` in the running agent of `id` (its user, `/workspace`, its env), with this
    /// process's stdin when `stdin`; returns the command's exit code. A paused agent is an
    /// error saying to resume it first. An empty `cmd` is an error.
    fn exec(
        &self,
        id: &SessionId,
        cmd: &[String],
        stdin: bool,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// Freezes the agent (and model sidecars) of `id`. **The proxy sidecar keeps running**:
    /// it holds the lifeline and the audit stream and finishes in-flight upstream requests.
    /// Idempotent: an agent already paused is left alone; any state other than running or
    /// paused is an error naming it. Records `session.paused`.
    fn pause(&self, id: &SessionId) -> impl Future<Output = Result<VerbResult>> + Send;

    /// Thaws what [`Backend::pause`] froze; idempotent like it. Records `session.resumed`.
    fn resume(&self, id: &SessionId) -> impl Future<Output = Result<VerbResult>> + Send;

    /// Ends session `id` gracefully (`bottle end`): asks its launcher to tear down, waits up
    /// to 10 s, then removes whatever is left. A session with no objects and no runtime dir is
    /// an error; one whose objects are already gone but left files is cleaned up.
    fn stop(&self, id: &SessionId) -> impl Future<Output = Result<ReapReport>> + Send;

    /// Removes every object of session `id` at once (`bottle kill`: no grace period, paused or
    /// not), then tells its launcher, if alive, to stop. Records `session.killed`.
    fn remove(&self, id: &SessionId) -> impl Future<Output = Result<VerbResult>> + Send;

    /// Every session on this backend, oldest first, plus (once) sessions of the session store
    /// whose objects vanished behind bottle's back, as state `gone`.
    fn list(&self) -> impl Future<Output = Result<Vec<BottleRow>>> + Send;

    /// Prints the agent's output of `id` (or with `audit` the sidecar's audit records), terminal
    /// control sequences escaped; `follow` streams until the session ends.
    fn logs(&self, id: &SessionId, audit: bool, follow: bool) -> impl Future<Output = Result<()>>;

    /// Prints the session event log (of `id` only, if given) as JSON lines; `follow` keeps
    /// printing. The log is a host file shared by every backend, so this has a default.
    fn events(&self, id: Option<&SessionId>, follow: bool) -> impl Future<Output = Result<()>> {
        super::events::print(id.map(SessionId::as_str), follow)
    }

    /// Removes the objects (and runtime dirs) of sessions whose launcher is gone; with `only`,
    /// just that session, and `force` removes it even if its launcher lives. Idempotent:
    /// nothing to remove is an empty report, not an error. Records `session.reaped` for stale
    /// sessions.
    fn reap(
        &self,
        only: Option<&SessionId>,
        force: bool,
    ) -> impl Future<Output = Result<ReapReport>> + Send;

    /// The agent's recent output of `id`: the last `lines` lines, or with `since` (a cursor
    /// from an earlier capture) only what came after it, rendered per `mode`. Works on a
    /// paused or exited agent while its objects exist.
    fn capture(
        &self,
        id: &SessionId,
        lines: usize,
        since: Option<&str>,
        mode: CaptureMode,
    ) -> impl Future<Output = Result<Capture>> + Send;

    /// Writes `payload` to the terminal of `id`'s agent in one write; concurrent callers never
    /// interleave. An agent without a terminal (`bottle run`) or not running is an error.
    fn send_keys(&self, id: &SessionId, payload: &[u8]) -> impl Future<Output = Result<()>> + Send;
}
