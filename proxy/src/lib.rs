//! bottle-proxy: the TLS-bumping, default-deny allowlist proxy at the heart of the sidecar.
pub mod canon;
pub mod policy;
pub mod route;
pub mod ssrf;
