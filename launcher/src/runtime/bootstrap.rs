//! The bootstrap document the sidecar reads from stdin in bottle mode (docs/design.md).
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;
use zeroize::Zeroizing;

/// The line the sidecar writes to stdout once its listeners are bound (docs/design.md).
pub const SIDECAR_READY_LINE: &str = r#"{"event":"ready"}"#;

/// DNS responder settings of the sidecar.
#[derive(Debug, Serialize)]
pub struct DnsBootstrap {
    /// Listen address, e.g. `10.213.0.2:53`.
    pub listen: String,
    /// The sidecar's own name.
    pub name: String,
    /// The sidecar's IP on the internal network.
    pub ip: String,
}

/// The whole bootstrap document. Holds secrets: serialise with [`Bootstrap::to_json`] only.
#[derive(Serialize)]
pub struct Bootstrap<'a> {
    /// The policy file text (TOML).
    pub policy_toml: String,
    /// The bottle CA certificate, PEM.
    pub ca_cert_pem: &'a str,
    /// The bottle CA key, PEM (secret).
    pub ca_key_pem: &'a str,
    /// Secret values by name.
    pub secrets: BTreeMap<&'a str, &'a str>,
    /// Proxy listen address.
    pub listen: String,
    /// DNS responder settings.
    pub dns: DnsBootstrap,
    /// Stdin stays open as the launcher's lifeline: the sidecar stops when it reaches EOF.
    pub lifeline: bool,
}

impl Bootstrap<'_> {
    /// Serialises to JSON in a buffer that is wiped when dropped.
    pub fn to_json(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(Vec::with_capacity(8192));
        serde_json::to_writer(&mut *buf, self).context("serialising the sidecar bootstrap")?;
        buf.push(b'\n');
        Ok(buf)
    }
}

impl std::fmt::Debug for Bootstrap<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrap")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("listen", &self.listen)
            .field("dns", &self.dns)
            .finish_non_exhaustive()
    }
}

/// Keeps secret values referenced by a [`Bootstrap`] alive in zeroizing storage.
pub fn secret_refs(secrets: &BTreeMap<String, Zeroizing<String>>) -> BTreeMap<&str, &str> {
    secrets
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_contract_fields_and_debug_hides_secrets() {
        let mut s = BTreeMap::new();
        s.insert(
            "GH_TOKEN".to_string(),
            Zeroizing::new("ghp_secret".to_string()),
        );
        let b = Bootstrap {
            policy_toml: "[[route]]\nhost = \"x\"\n".into(),
            ca_cert_pem: "CERT",
            ca_key_pem: "KEY",
            secrets: secret_refs(&s),
            listen: "10.0.0.2:3128".into(),
            dns: DnsBootstrap {
                listen: "10.0.0.2:53".into(),
                name: "bottle-sidecar".into(),
                ip: "10.0.0.2".into(),
            },
            lifeline: true,
        };
        let v: serde_json::Value = serde_json::from_slice(&b.to_json().unwrap()).unwrap();
        assert_eq!(v["secrets"]["GH_TOKEN"], "ghp_secret");
        assert_eq!(v["dns"]["ip"], "10.0.0.2");
        assert_eq!(v["ca_key_pem"], "KEY");
        assert_eq!(v["lifeline"], true);
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("ghp_secret") && !dbg.contains("KEY\""));
    }
}
