//! The bottle certificate authority: loading (or generating) the per-bottle CA and minting
//! leaf certificates for bumped TLS connections.
//!
//! One leaf key pair (ECDSA P-256) is generated per CA at startup and shared by every leaf;
//! leaves are cached in an LRU keyed by the canonical host name, so a hot host costs no
//! signing at all. Leaves carry only the decided name (DNS or IP SAN), a random serial, a
//! backdated `notBefore`, at most 90 days of validity (and never past the CA's `notAfter`),
//! an Authority Key Identifier and the `serverAuth` extended key usage.
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

/// How long before "now" a leaf's `notBefore` is set, to tolerate clock skew.
const LEAF_BACKDATE: Duration = Duration::from_secs(3600);
/// Maximum leaf validity.
const LEAF_MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Number of leaf certificates kept in the cache.
const LEAF_CACHE_SIZE: usize = 1024;

/// Errors loading a CA or minting a leaf.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA certificate PEM could not be parsed.
    #[error(
        "CA certificate: {0}; give a PEM `CERTIFICATE` block (e.g. from `bottle-sidecar gen-ca`)"
    )]
    BadCertificate(String),
    /// The CA key PEM could not be parsed.
    #[error(
        "CA key: {0}; give a PKCS#8 PEM `PRIVATE KEY` block (e.g. from `bottle-sidecar gen-ca`)"
    )]
    BadKey(String),
    /// The key does not belong to the certificate.
    #[error("CA key does not match the CA certificate's public key; pass the key generated with this certificate")]
    KeyMismatch,
    /// The certificate is not a CA.
    #[error("CA certificate is not a CA (basicConstraints CA:true missing); generate one with `bottle-sidecar gen-ca`")]
    NotCa,
    /// The CA has expired (or is not yet valid).
    #[error("CA certificate is outside its validity period; generate a new one")]
    Expired,
    /// A leaf could not be minted.
    #[error("minting a leaf certificate for {name}: {reason}")]
    Mint {
        /// The host the leaf was for.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("generating CA: {0}")]
    Generate(String),
}

/// A freshly generated CA, as PEM text (what the launcher writes / hands to the sidecar).
#[derive(Clone)]
pub struct GeneratedCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PKCS#8 PEM. Keep it secret (0600 files, sidecar memory only).
    pub key_pem: String,
}

impl std::fmt::Debug for GeneratedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The CA used to mint leaf certificates for bumped connections.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    not_after: OffsetDateTime,
    leaf_key: KeyPair,
    leaf_signing: Arc<dyn rustls::sign::SigningKey>,
    cache: Mutex<LruCache<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and never starting with a zero byte (DER minimal encoding is rcgen's job,
    // but keep the value a full 127 bits).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

impl CertificateAuthority {
    /// Generates a new CA (ECDSA P-256, `CA:true, pathlen:0`, `keyCertSign`) named `name`,
    /// valid from one hour ago for `lifetime`. Returns the PEM texts.
    pub fn generate(name: &str, lifetime: Duration) -> Result<GeneratedCa, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Generate(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "bottle");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let start = now() - LEAF_BACKDATE;
        params.not_before = start;
        params.not_after = start + LEAF_BACKDATE + lifetime;
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Generate(e.to_string()))?;
        Ok(GeneratedCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads a CA from its certificate and PKCS#8 key (PEM), checking that the key matches,
    /// that it is a CA and that it is currently valid. Generates the shared leaf key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .ok_or_else(|| CaError::BadCertificate("no CERTIFICATE block found".into()))?
            .map_err(|e| CaError::BadCertificate(e.to_string()))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::BadKey(e.to_string()))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::BadCertificate(e.to_string()))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch);
        }
        let is_ca = x509
            .basic_constraints()
            .ok()
            .flatten()
            .map(|bc| bc.value.ca)
            .unwrap_or(false);
        if !is_ca {
            return Err(CaError::NotCa);
        }
        let not_after = x509.validity().not_after.to_datetime();
        let not_before = x509.validity().not_before.to_datetime();
        let t = now();
        if t >= not_after || t < not_before {
            return Err(CaError::Expired);
        }
        let ca_der = CertificateDer::from(der.to_vec()).into_owned();
        let issuer = Issuer::from_ca_cert_der(&ca_der, key)
            .map_err(|e| CaError::BadCertificate(e.to_string()))?;
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Generate(e.to_string()))?;
        let leaf_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let leaf_signing = rustls::crypto::ring::sign::any_ecdsa_type(&leaf_der)
            .map_err(|e| CaError::Generate(e.to_string()))?;
        Ok(Self {
            issuer,
            ca_der,
            not_after,
            leaf_key,
            leaf_signing,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(LEAF_CACHE_SIZE).expect("non-zero cache size"),
            )),
        })
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The CA's `notAfter`.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Returns the certified key (leaf + CA chain, shared leaf key) for `name`, a canonical
    /// host name or IP literal (`[v6]` brackets accepted), minting and caching it if needed.
    pub fn certified_key(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        if let Some(hit) = self
            .cache
            .lock()
            .ok()
            .and_then(|mut c| c.get(name).cloned())
        {
            return Ok(hit);
        }
        let ck = Arc::new(self.mint(name)?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(name.to_owned(), ck.clone());
        }
        Ok(ck)
    }

    /// Mints a new leaf for `name` (no caching).
    fn mint(&self, name: &str) -> Result<CertifiedKey, CaError> {
        let mint_err = |reason: String| CaError::Mint {
            name: name.to_owned(),
            reason,
        };
        let bare = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let san = match bare.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                bare.to_owned()
                    .try_into()
                    .map_err(|e: rcgen::Error| mint_err(e.to_string()))?,
            ),
        };
        let t = now();
        let not_after = std::cmp::min(t + LEAF_MAX_LIFETIME, self.not_after);
        if not_after <= t {
            return Err(mint_err("the CA has expired".into()));
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if bare.len() <= 64 {
            dn.push(DnType::CommonName, bare);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = vec![san];
        params.not_before = t - LEAF_BACKDATE;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| mint_err(e.to_string()))?;
        Ok(CertifiedKey::new(
            vec![leaf.der().clone(), self.ca_der.clone()],
            self.leaf_signing.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::{GeneralName, ParsedExtension};

    fn ca() -> (GeneratedCa, CertificateAuthority) {
        let g =
            CertificateAuthority::generate("bottle test CA", Duration::from_secs(86400)).unwrap();
        let ca = CertificateAuthority::from_pem(&g.cert_pem, &g.key_pem).unwrap();
        (g, ca)
    }

    #[test]
    fn generated_ca_is_a_constrained_ca() {
        let (g, _) = ca();
        let der = rustls_pemfile::certs(&mut g.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let bc = x.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        assert!(x.key_usage().unwrap().unwrap().value.key_cert_sign());
        assert!(g.key_pem.contains("BEGIN PRIVATE KEY"));
        assert!(!format!("{g:?}").contains("PRIVATE"));
    }

    #[test]
    fn leaf_has_only_the_name_aki_eku_and_bounded_validity() {
        let (_, ca) = ca();
        let ck = ca.certified_key("api.allowed.test").unwrap();
        assert_eq!(ck.cert.len(), 2, "leaf + CA");
        let (_, leaf) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
        let mut sans = vec![];
        let mut has_aki = false;
        for ext in leaf.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for n in &san.general_names {
                        sans.push(format!("{n:?}"));
                        assert!(matches!(n, GeneralName::DNSName("api.allowed.test")));
                    }
                }
                ParsedExtension::AuthorityKeyIdentifier(_) => has_aki = true,
                _ => {}
            }
        }
        assert_eq!(sans.len(), 1);
        assert!(has_aki, "AKI present");
        assert!(
            leaf.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        let nb = leaf.validity().not_before.to_datetime();
        let na = leaf.validity().not_after.to_datetime();
        assert!(nb < now() - Duration::from_secs(1800), "backdated");
        assert!(na <= ca.not_after(), "within CA lifetime (1 day)");
        assert!(na - nb <= time::Duration::days(91));
        assert!(!leaf.is_ca());
    }

    #[test]
    fn leaves_share_one_key_have_random_serials_and_are_cached() {
        let (_, ca) = ca();
        let a = ca.certified_key("a.test").unwrap();
        let b = ca.certified_key("b.test").unwrap();
        let a2 = ca.certified_key("a.test").unwrap();
        assert!(Arc::ptr_eq(&a, &a2), "cache hit");
        let (_, xa) = x509_parser::parse_x509_certificate(&a.cert[0]).unwrap();
        let (_, xb) = x509_parser::parse_x509_certificate(&b.cert[0]).unwrap();
        assert_eq!(
            xa.public_key().raw,
            xb.public_key().raw,
            "one leaf key per CA"
        );
        assert_ne!(xa.raw_serial(), xb.raw_serial());
    }

    #[test]
    fn ip_leaf_uses_ip_san() {
        let (_, ca) = ca();
        for name in ["127.0.0.1", "[::1]"] {
            let ck = ca.certified_key(name).unwrap();
            let (_, leaf) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
            let san = leaf.subject_alternative_name().unwrap().unwrap().value;
            assert!(matches!(san.general_names[0], GeneralName::IPAddress(_)));
        }
    }

    #[test]
    fn mismatched_key_and_garbage_are_refused() {
        let (g1, _) = ca();
        let (g2, _) = ca();
        assert!(matches!(
            CertificateAuthority::from_pem(&g1.cert_pem, &g2.key_pem),
            Err(CaError::KeyMismatch)
        ));
        assert!(matches!(
            CertificateAuthority::from_pem("junk", &g1.key_pem),
            Err(CaError::BadCertificate(_))
        ));
        assert!(matches!(
            CertificateAuthority::from_pem(&g1.cert_pem, "junk"),
            Err(CaError::BadKey(_))
        ));
    }
}
