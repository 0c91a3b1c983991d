//! The launcher's side of the sidecar bootstrap: the document itself is
//! [`bottle_protocol::bootstrap::Bootstrap`] (shared with the sidecar, docs/design.md "Sidecar
//! bootstrap"); this module turns manifest values into its sections.
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use bottle_protocol::bootstrap::{Bootstrap, Dns, Git, GitPushPolicy, GitRemote};

use super::bottle::{GATE_PORT, GATE_STATE_DIR, PROXY_PORT, SIDECAR_NAME};
use super::ca::BottleCa;
use super::spec::LaunchSpec;

/// The bootstrap document of a bottle whose sidecar has `sidecar_ip` on the internal network:
/// every listener on that address (never `0.0.0.0`), the lifeline on, the git gate for bottles
/// with git remotes. Holds the CA key and the secrets (wiped when dropped).
pub fn document(spec: &LaunchSpec, ca: &BottleCa, sidecar_ip: Ipv4Addr) -> Result<Bootstrap> {
    let policy_toml =
        toml::to_string(&spec.policy).context("rendering the bottle policy as TOML")?;
    let ip = std::net::IpAddr::V4(sidecar_ip);
    Ok(Bootstrap {
        policy_toml,
        ca_cert_pem: ca.cert_pem.clone(),
        ca_key_pem: ca.key_pem.clone(),
        secrets: spec.secrets.clone(),
        listen: SocketAddr::new(ip, PROXY_PORT),
        dns: Some(Dns {
            listen: SocketAddr::new(ip, 53),
            name: SIDECAR_NAME.into(),
            ip: sidecar_ip,
        }),
        lifeline: true,
        git: (!spec.git_remotes.is_empty()).then(|| Git {
            listen: SocketAddr::new(ip, GATE_PORT),
            state_dir: GATE_STATE_DIR.into(),
            remotes: spec.git_remotes.iter().map(git_remote).collect(),
            max_request_bytes: None,
            max_blob_bytes: None,
            fetch_timeout_secs: None,
        }),
    })
}

/// The bootstrap form of a manifest remote.
pub fn git_remote(r: &crate::manifest::GitRemote) -> GitRemote {
    GitRemote {
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
    fn the_launchers_document_is_what_the_sidecar_accepts() {
        use std::collections::BTreeMap;

        use zeroize::Zeroizing;

        let mut secrets = BTreeMap::new();
        secrets.insert(
            "GH_TOKEN".to_string(),
            Zeroizing::new("ghp_secret".to_string()),
        );
        let remote: crate::manifest::GitRemote = toml::from_str(
            "name = \"origin\"\nurl = \"git@github.com:acme/w.git\"\nsecret = \"GH_TOKEN\"\n\
             username = \"x-access-token\"\nallow_private = [\"10.1.2.3\", \"fd00::/8\"]\n\
             allow_tags = true\n",
        )
        .unwrap();
        let mut spec = LaunchSpec::sample();
        spec.secrets = secrets;
        spec.git_remotes = vec![remote];
        let ca = crate::runtime::ca::generate("b").unwrap();
        let ip = Ipv4Addr::new(10, 213, 7, 2);
        let sent = document(&spec, &ca, ip).unwrap();
        let json = sent.to_json().unwrap();
        let got = Bootstrap::parse(&json).unwrap();
        assert_eq!(got.listen.to_string(), "10.213.7.2:3128");
        assert_eq!(got.secrets["GH_TOKEN"].as_str(), "ghp_secret");
        assert_eq!(got.ca_key_pem.as_str(), ca.key_pem.as_str());
        assert_eq!(got.dns, sent.dns);
        assert!(got.lifeline);
        let git = got.git.as_ref().unwrap();
        assert_eq!(Some(git), sent.git.as_ref());
        assert_eq!(git.listen.to_string(), "10.213.7.2:8418");
        assert_eq!(git.remotes[0].url, "ssh://git@github.com/acme/w.git");
        assert_eq!(git.remotes[0].allow_private, ["10.1.2.3/32", "fd00::/8"]);
        assert!(git.remotes[0].policy.allow_tags);
        let dbg = format!("{sent:?}");
        assert!(dbg.contains("GH_TOKEN") && !dbg.contains("ghp_secret"));
        assert!(!dbg.contains(ca.key_pem.as_str()));
    }
}
