//! The contract between the bottle launcher (`bottle`) and its sidecar (`bottle-sidecar
//! --bootstrap-stdin`), in one place so both binaries use the same types (docs/design.md,
//! "Sidecar bootstrap").
//!
//! The launcher attaches to the sidecar container's stdin and stdout:
//!
//! - **stdin, launcher → sidecar**: first exactly one JSON document, the [`bootstrap::Bootstrap`]
//!   (policy, the bottle CA and its key, the secrets, listen addresses, DNS and git gate
//!   sections), ended by a newline. The launcher serialises it with
//!   [`bootstrap::Bootstrap::to_json`]; the sidecar parses it with
//!   [`bootstrap::Bootstrap::parse`] / [`bootstrap::Bootstrap::read_from`], which refuse
//!   oversized documents and unknown keys, name the offending field in every error without ever
//!   echoing a value, and wipe the strings they parsed. With `lifeline: true` stdin then stays
//!   open: [`lifeline::SYNC`] lines ask for an audit flush, EOF stops the sidecar.
//! - **stdout, sidecar → launcher**: one JSON object per line. Lines with an `event` key are
//!   [`events::Event`]s (`ready`, `audit_synced`, `launcher_gone`, `dns`, `git`); lines without
//!   one are the proxy's audit records (docs/design.md, "Audit record"). [`events::Line::parse`]
//!   tells them apart.
//!
//! The crate is deliberately light (serde, serde_json, thiserror, zeroize; no async runtime):
//! reading stdin with a timeout stays in the sidecar.
#![deny(missing_docs)]

pub mod bootstrap;
pub mod events;

/// The launcher's commands on the sidecar's lifeline (its stdin, after the bootstrap document).
pub mod lifeline {
    /// Asks the sidecar to write and flush every audit record decided so far, then answer
    /// [`crate::events::Event::AuditSynced`]. Sent as one line (`sync\n`).
    pub const SYNC: &str = "sync";
}
