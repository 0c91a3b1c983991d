//! bottle-proxy: the TLS-bumping, default-deny allowlist proxy at the heart of the sidecar.
pub mod audit;
pub mod ca;
pub mod canon;
pub mod connector;
pub mod credentials;
pub mod deny;
pub mod dlp;
pub mod policy;
pub mod route;
pub mod server;
pub mod ssrf;
pub mod tls;
pub mod upstream;
pub mod websocket;

pub use server::{Proxy, ProxyBuilder, ProxyError, RequestHead, RequestInspector, Secrets};
