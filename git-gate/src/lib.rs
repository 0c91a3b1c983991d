//! The bottle git gate: a smart-HTTP git server for the agent that fronts each declared
//! upstream remote with a per-bottle bare **mirror**.
//!
//! - **Fetch** (`GET /<remote>/info/refs?service=git-upload-pack`, `POST
//!   /<remote>/git-upload-pack`): every ref advertisement first refreshes the mirror from
//!   upstream ([`mirror::Mirror::refresh`], single-flight, with a deadline). If upstream cannot be
//!   reached the advertisement is an `ERR` pkt-line: stale refs are never served.
//! - **Push** (`.../git-receive-pack`): git's own `receive-pack --stateless-rpc` runs on the
//!   mirror. Pushed objects stay in git's quarantine directory until the `pre-receive` hook (the
//!   `bottle-git-hook` binary of this crate, [`hook::run_pre_receive`]) has checked the ref
//!   policy ([`policy`]), scanned every new object with the shared DLP scanner ([`scan`]) and
//!   pushed the accepted refs upstream ([`forward`]). Any failure rejects the whole push and the
//!   quarantine is discarded, so neither the mirror nor upstream ever holds rejected objects.
//!
//! Credentials reach git only through the environment of the gate's git children
//! (`GIT_CONFIG_COUNT`/`http.extraHeader`, see [`credential`]); never argv, URLs, logs or error
//! text.

pub mod config;
pub mod credential;
pub mod error;
pub mod forward;
pub mod hook;
pub mod mirror;
pub mod pktline;
pub mod policy;
mod process;
pub mod request_body;
pub mod scan;
pub mod server;
pub mod tickets;

pub use config::{AuditSink, GateConfig, Limits, PushPolicy, RemoteConfig};
pub use credential::Credential;
pub use error::GateError;
pub use server::{GateBody, GitGate};
