//! The launcher's side of the sidecar bootstrap: the document itself is
//! [`bottle_protocol::bootstrap::Bootstrap`] (shared with the sidecar, docs/design.md "Sidecar
//! bootstrap"); this module turns manifest values into its sections.
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use bottle_protocol::bootstrap::{
    Bootstrap, Dns, Git, GitPushPolicy, GitRemote, ModelClient, ModelEgress,
};
use ipnet::Ipv4Net;

use super::bottle::{GATE_PORT, GATE_STATE_DIR, MODEL_PROXY_PORT, PROXY_PORT, SIDECAR_NAME};
use super::ca::BottleCa;
use super::spec::LaunchSpec;

/// The bootstrap document of a bottle whose sidecar has `sidecar_ip` on the internal network:
/// every listener on that address (never `0.0.0.0`), the lifeline on, the git gate for bottles
/// with git remotes, and — when model sidecars have `egress` routes — the model egress proxy on
/// the sidecar's address in `models_subnet`. Holds the CA key and the secrets (wiped when
/// dropped).
pub fn document(
    spec: &LaunchSpec,
    ca: &BottleCa,
    sidecar_ip: Ipv4Addr,
    models_subnet: Option<&Ipv4Net>,
) -> Result<Bootstrap> {
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
            // The model sidecars by name (the agent's /etc/hosts has them too, but not every
            // resolver reads it).
            hosts: models_subnet
                .map(|sn| {
                    spec.models
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (m.name.clone(), super::docker::models::model_ip(sn, i)))
                        .collect()
                })
                .unwrap_or_default(),
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
        models: match models_subnet {
            Some(sn) => model_egress(spec, sn)?,
            None => None,
        },
    })
}

/// The model egress section: one client per model with `egress` routes, its policy the
/// bottle's settings with only its own routes (`None` when no model has any).
pub fn model_egress(spec: &LaunchSpec, sn: &Ipv4Net) -> Result<Option<ModelEgress>> {
    let mut clients = Vec::new();
    for (i, m) in spec.models.iter().enumerate() {
        if m.egress.is_empty() {
            continue;
        }
        let policy = bottle_proxy::policy::PolicyFile {
            settings: spec.policy.settings.clone(),
            routes: m.egress.clone(),
        };
        let policy_toml = toml::to_string(&policy)
            .with_context(|| format!("rendering the policy of model {:?} as TOML", m.name))?;
        let mut secrets: Vec<String> = m
            .egress
            .iter()
            .filter_map(|r| r.auth.as_ref().map(|a| a.secret.clone()))
            .collect();
        secrets.sort();
        secrets.dedup();
        clients.push(ModelClient {
            name: m.name.clone(),
            ip: super::docker::models::model_ip(sn, i),
            policy_toml,
            secrets,
        });
    }
    Ok((!clients.is_empty()).then(|| ModelEgress {
        listen: SocketAddr::new(
            std::net::IpAddr::V4(super::subnet::host(sn, 2)),
            MODEL_PROXY_PORT,
        ),
        clients,
    }))
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
        let sent = document(&spec, &ca, ip, None).unwrap();
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

    #[test]
    fn each_model_with_egress_routes_gets_its_own_policy_and_secrets() {
        let plan = |text: &str| {
            let m: crate::manifest::ModelSpec = toml::from_str(text).unwrap();
            crate::manifest::resolve_model(&m, "bottles/m.toml")
        };
        let mut spec = LaunchSpec::sample();
        spec.policy.routes = vec![toml::from_str("host = \"api.agent.example\"\n").unwrap()];
        spec.secrets.insert(
            "HF_TOKEN".into(),
            zeroize::Zeroizing::new("hf_realvalue".into()),
        );
        spec.models.push(plan(
            "name = \"sealed\"\nengine = \"vllm\"\nmodel = \"Q\"\n",
        ));
        spec.models.push(plan(
            "name = \"coder\"\nengine = \"vllm\"\nmodel = \"Q\"\nsecrets = [\"HF_TOKEN\"]\n\
             [[egress]]\nid = \"hf\"\nhost = \"huggingface.co\"\nauth = { scheme = \"Bearer\", secret = \"HF_TOKEN\" }\n",
        ));
        let sn: Ipv4Net = "10.213.9.0/28".parse().unwrap();
        let ca = crate::runtime::ca::generate("b").unwrap();
        let doc = document(&spec, &ca, Ipv4Addr::new(10, 213, 7, 2), Some(&sn)).unwrap();
        let got = Bootstrap::parse(&doc.to_json().unwrap()).unwrap();
        let hosts = &got.dns.as_ref().unwrap().hosts;
        assert_eq!(
            hosts["sealed"].to_string(),
            "10.213.9.4",
            "DNS answers every model"
        );
        assert_eq!(hosts["coder"].to_string(), "10.213.9.5");
        let models = got.models.expect("a models section");
        assert_eq!(models.listen.to_string(), "10.213.9.2:3129");
        assert_eq!(models.clients.len(), 1, "only the model with routes");
        let c = &models.clients[0];
        assert_eq!(
            (c.name.as_str(), c.ip.to_string()),
            ("coder", "10.213.9.5".into())
        );
        assert_eq!(c.secrets, ["HF_TOKEN"]);
        let p = bottle_proxy::policy::Policy::from_toml_str(&c.policy_toml, "m").unwrap();
        assert_eq!(p.routes.len(), 1);
        assert!(!c.policy_toml.contains("hf_realvalue"));
        // The agent's routes are not the model's, and without a subnet there is no section.
        assert!(!c.policy_toml.contains("api.agent.example"));
        assert!(document(&spec, &ca, Ipv4Addr::new(10, 213, 7, 2), None)
            .unwrap()
            .models
            .is_none());
        spec.models.pop();
        assert!(model_egress(&spec, &sn).unwrap().is_none());
    }
}
