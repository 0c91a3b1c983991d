//! The per-bottle ephemeral certificate authority the sidecar bumps TLS with.
//!
//! The key is generated in memory, kept in a [`Zeroizing`] buffer, and only ever written to
//! the sidecar's stdin; only the certificate (public) is stored on the host.
use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use zeroize::Zeroizing;

/// A freshly generated CA: certificate PEM (public) and private key PEM (secret).
pub struct BottleCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PKCS#8 PEM. Never written to disk.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for BottleCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BottleCa")
            .field("cert_pem", &"<pem>")
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Generates a CA valid from one hour ago for 30 days, named after the bottle id.
pub fn generate(bottle_id: &str) -> Result<BottleCa> {
    let key = KeyPair::generate().context("generating the bottle CA key")?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).context("bottle CA parameters")?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("bottle {bottle_id} CA"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "bottle");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(30);
    let cert = params
        .self_signed(&key)
        .context("self-signing the bottle CA")?;
    Ok(BottleCa {
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn generates_pem_pair() {
        let ca = super::generate("abc").unwrap();
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }
}
