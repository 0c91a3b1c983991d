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

/// The git gate's section (`git`): no secret values, the credential is named by secret.
#[derive(Debug, Serialize)]
pub struct GitBootstrap {
    /// Where the gate listens, e.g. `10.213.0.2:8418`.
    pub listen: String,
    /// The mirrors' directory inside the sidecar (a tmpfs).
    pub state_dir: String,
    /// The remotes.
    pub remotes: Vec<GitRemoteBootstrap>,
}

/// One remote of [`GitBootstrap`].
#[derive(Debug, Serialize)]
pub struct GitRemoteBootstrap {
    /// The remote's name (the gate serves it at `/<name>`).
    pub name: String,
    /// The upstream URL.
    pub url: String,
    /// The secret sent to upstream, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Basic-auth user name (else the secret is a Bearer token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// SSH remotes: the secret holding the private key, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    /// SSH remotes: the pinned host key (`<type> <base64>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Private networks the upstream host may resolve into.
    pub allow_private: Vec<String>,
    /// What a push may do.
    pub policy: GitPushPolicy,
}

/// The push policy of a remote (the git gate's `PushPolicy`).
#[derive(Debug, Serialize)]
pub struct GitPushPolicy {
    /// Ref patterns a push may update.
    pub push: Vec<String>,
    /// Deletes allowed.
    pub allow_delete: bool,
    /// Tags allowed.
    pub allow_tags: bool,
    /// Force pushes allowed everywhere.
    pub allow_force: bool,
    /// Force pushes allowed inside these patterns.
    pub force_namespaces: Vec<String>,
}

impl GitRemoteBootstrap {
    /// The bootstrap form of a manifest remote.
    pub fn from_manifest(r: &crate::manifest::GitRemote) -> Self {
        GitRemoteBootstrap {
            name: r.name.clone(),
            url: ssh_url(&r.url),
            secret: r.secret.clone(),
            username: r.username.clone(),
            ssh_key: r.ssh_key.clone(),
            host_key: r.host_key.clone(),
            allow_private: r
                .allow_private
                .iter()
                .map(|n| {
                    // A bare address is its own /32 (/128).
                    match n.parse::<std::net::IpAddr>() {
                        Ok(std::net::IpAddr::V4(a)) => format!("{a}/32"),
                        Ok(std::net::IpAddr::V6(a)) => format!("{a}/128"),
                        Err(_) => n.clone(),
                    }
                })
                .collect(),
            policy: GitPushPolicy {
                push: r.push.clone(),
                allow_delete: r.allow_delete,
                allow_tags: r.allow_tags,
                allow_force: r.allow_force,
                force_namespaces: r.force_namespaces.clone(),
            },
        }
    }
}

/// `git@host:path` → `ssh://git@host/path` (other URLs unchanged): the gate takes one form.
pub fn ssh_url(url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    match url.split_once(':') {
        Some((user_host, path)) => format!("ssh://{user_host}/{}", path.trim_start_matches('/')),
        None => url.to_string(),
    }
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
    /// The git gate, for bottles with git remotes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git: Option<GitBootstrap>,
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
    fn every_spelling_of_a_remote_is_rewritten() {
        use crate::runtime::bottle::remote_spellings;
        let s = remote_spellings("https://github.com/acme/w.git");
        for want in [
            "https://github.com/acme/w.git",
            "https://github.com/acme/w",
            "ssh://git@github.com/acme/w.git",
            "git@github.com:acme/w.git",
            "git@github.com:acme/w",
        ] {
            assert!(s.contains(&want.to_string()), "{want} in {s:?}");
        }
        let s = remote_spellings("deploy@git.example:srv/r.git");
        assert!(s.contains(&"deploy@git.example:srv/r.git".to_string()));
        assert!(s.contains(&"ssh://deploy@git.example/srv/r.git".to_string()));
        assert!(s.contains(&"https://git.example/srv/r.git".to_string()));
        assert_eq!(ssh_url("git@h:o/r.git"), "ssh://git@h/o/r.git");
        assert_eq!(ssh_url("https://h/r"), "https://h/r");
    }

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
            git: None,
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
