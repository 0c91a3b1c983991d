//! The bottle runtime: the Docker objects of one bottle (networks, sidecar, agent), their
//! lifecycle (create, attach, watch, teardown), the host runtime directory, and the verbs
//! that act on running bottles (`list`, `logs`, `end`, `reap`).
//!
//! Input is a [`spec::LaunchSpec`]: everything resolved on the host (images, policy, secret
//! values, env, workspace, resources). Secret values travel only to the sidecar, over stdin.
//!
//! The verbs go through [`backend::Backend`] (sessions named by an opaque
//! [`backend::SessionId`]); [`docker`] holds every engine call, by what it does, and
//! [`docker::DockerBackend`] implements the trait. The modules here outside `docker/` are
//! backend-independent: pure rules ([`agent_env`], [`roots`], [`labels`], [`subnet`]), host
//! files ([`workspace`], [`statedir`], [`sessions`], [`events`]) and the verbs' types.
pub mod agent_env;
pub mod audit;
pub mod backend;
pub mod bootstrap;
pub mod bottle;
pub mod ca;
pub mod docker;
pub mod events;
pub mod gate;
pub mod labels;
pub mod lifecycle;
pub mod lifeline;
pub mod preamble;
pub mod roots;
pub mod run;
pub mod sessions;
pub mod spawn;
pub mod spec;
pub mod statedir;
pub mod subnet;
pub mod tickets;
pub mod timing;
pub mod tty;
pub mod verbs;
pub mod workspace;

/// The engine connection and facts ([`docker::probe`]), under their former path.
pub use docker::probe as engine;
/// Reaping stale bottles ([`docker::reap`]), under its former path.
pub use docker::reap;
