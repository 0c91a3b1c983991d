//! rustls configurations, each built once: the client-facing bump `ServerConfig` (a cert
//! resolver that mints from the CA's leaf cache) and the upstream `ClientConfig`s (webpki
//! roots plus the policy's extra roots).
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::ca::CertificateAuthority;

/// ALPN protocol ids offered on both sides.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1.
pub const ALPN_H1: &[u8] = b"http/1.1";

/// Errors building TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// An extra root in the policy is not a valid certificate.
    #[error("settings.extra_roots[{index}]: {reason}; give PEM CERTIFICATE blocks")]
    BadExtraRoot {
        /// Index of the offending entry.
        index: usize,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider used everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Resolves the server certificate from the ClientHello's SNI by minting (or fetching from
/// the LRU) a leaf for exactly that name. The proxy checks that SNI equals the CONNECT
/// host *before* the handshake proceeds, so this only ever mints for decided names.
#[derive(Debug)]
pub struct BumpResolver {
    ca: Arc<CertificateAuthority>,
}

impl ResolvesServerCert for BumpResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        match self.ca.certified_key(name) {
            Ok(ck) => Some(ck),
            Err(e) => {
                tracing::warn!(error = %e, "leaf minting failed");
                None
            }
        }
    }
}

/// A resolver that always serves one certificate (used for clients that send no SNI,
/// e.g. when the CONNECT target is an IP literal).
#[derive(Debug)]
struct FixedResolver(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn server_builder() -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, TlsError>
{
    Ok(ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?)
}

/// The single client-facing `ServerConfig` for bumped tunnels (ALPN h2 + http/1.1).
pub fn bump_server_config(ca: Arc<CertificateAuthority>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = server_builder()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BumpResolver { ca }));
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_H1.to_vec()];
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(cfg))
}

/// A `ServerConfig` serving one fixed certificate, for the rare clients sending no SNI.
pub fn fixed_server_config(ck: Arc<CertifiedKey>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = server_builder()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedResolver(ck)));
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_H1.to_vec()];
    Ok(Arc::new(cfg))
}

/// Upstream client configurations: `any` offers h2 and http/1.1, `h1` only http/1.1 (for
/// WebSocket upgrades).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// ALPN h2 + http/1.1.
    pub any: Arc<ClientConfig>,
    /// ALPN http/1.1 only.
    pub h1: Arc<ClientConfig>,
}

/// Builds the upstream client configs, trusting the webpki roots plus `extra_roots` (PEM
/// texts, each one or more CERTIFICATE blocks).
pub fn upstream_client_configs<'a>(
    extra_roots: impl IntoIterator<Item = &'a str>,
) -> Result<UpstreamTls, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for (index, pem) in extra_roots.into_iter().enumerate() {
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
            let cert = cert.map_err(|e| TlsError::BadExtraRoot {
                index,
                reason: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| TlsError::BadExtraRoot {
                index,
                reason: e.to_string(),
            })?;
            found += 1;
        }
        if found == 0 {
            return Err(TlsError::BadExtraRoot {
                index,
                reason: "no CERTIFICATE block found".into(),
            });
        }
    }
    let roots = Arc::new(roots);
    let build = |alpn: Vec<Vec<u8>>| -> Result<Arc<ClientConfig>, TlsError> {
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = alpn;
        Ok(Arc::new(cfg))
    };
    Ok(UpstreamTls {
        any: build(vec![ALPN_H2.to_vec(), ALPN_H1.to_vec()])?,
        h1: build(vec![ALPN_H1.to_vec()])?,
    })
}
