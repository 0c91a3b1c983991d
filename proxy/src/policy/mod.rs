//! Policy: the allowlist of routes and the proxy limits.
//!
//! `spec` is the file format; the validated, canonical form lives here.
pub mod spec;

pub use spec::*;
