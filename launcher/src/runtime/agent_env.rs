//! The agent's environment and git config, assembled from the launch spec: pure rules, the
//! same for every backend (no engine calls; unit-tested below).
//!
//! Env order: bottle's defaults (home, user, terminal, proxy, CA bundle paths, `BOTTLE_ID`,
//! `BOTTLE_NAME`, `BOTTLE_AGENT`, git identity), then the manifest's env and the per-launch env
//! (which override the defaults), then the proxy settings again (which nothing overrides);
//! with git remotes, the sidecar's address is added to `NO_PROXY`/`no_proxy` (the agent's git
//! reaches the gate directly), and every model sidecar's name is too (model traffic stays on
//! the internal network). What the agent is told about the first model (`OPENAI_BASE_URL`,
//! `ANTHROPIC_BASE_URL`, …) is already in the spec's env ([`crate::manifest::agent_wiring`]).
use std::net::Ipv4Addr;

use anyhow::{bail, Result};

use super::bottle::{AGENT_CA_PATH, AGENT_HOME, AGENT_PROMPT_PATH, PROXY_PORT};
use super::roots;
use super::spec::LaunchSpec;

/// The agent container's env (`KEY`, `value`) for bottle `id` whose sidecar is at
/// `sidecar_ip`. `host_term` is the launching terminal's `TERM`, used when `interactive`;
/// `has_prompt` says a system prompt is mounted.
pub fn agent_env(
    id: &str,
    spec: &LaunchSpec,
    extra_env: &[(String, String)],
    interactive: bool,
    host_term: Option<String>,
    sidecar_ip: Ipv4Addr,
    has_prompt: bool,
) -> Vec<(String, String)> {
    let proxy = format!("http://{sidecar_ip}:{PROXY_PORT}");
    let mut env: Vec<(String, String)> = vec![
        ("HOME".into(), AGENT_HOME.into()),
        ("USER".into(), "agent".into()),
        ("LOGNAME".into(), "agent".into()),
        (
            "TERM".into(),
            host_term
                .filter(|_| interactive)
                .unwrap_or_else(|| "xterm-256color".into()),
        ),
        ("HTTP_PROXY".into(), proxy.clone()),
        ("HTTPS_PROXY".into(), proxy.clone()),
        ("http_proxy".into(), proxy.clone()),
        ("https_proxy".into(), proxy.clone()),
        ("ALL_PROXY".into(), proxy.clone()),
        ("all_proxy".into(), proxy.clone()),
        ("NO_PROXY".into(), "localhost,127.0.0.1,::1".into()),
        ("no_proxy".into(), "localhost,127.0.0.1,::1".into()),
        ("NODE_USE_ENV_PROXY".into(), "1".into()),
        ("NODE_EXTRA_CA_CERTS".into(), AGENT_CA_PATH.into()),
        ("BOTTLE_ID".into(), id.to_string()),
        ("BOTTLE_NAME".into(), spec.bottle.clone()),
        ("BOTTLE_AGENT".into(), spec.agent.clone()),
        ("GIT_AUTHOR_NAME".into(), "bottle agent".into()),
        ("GIT_AUTHOR_EMAIL".into(), "agent@bottle.invalid".into()),
        ("GIT_COMMITTER_NAME".into(), "bottle agent".into()),
        ("GIT_COMMITTER_EMAIL".into(), "agent@bottle.invalid".into()),
    ];
    for var in [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "CARGO_HTTP_CAINFO",
        "PIP_CERT",
        "AWS_CA_BUNDLE",
    ] {
        env.push((var.into(), roots::SYSTEM_BUNDLE.into()));
    }
    if has_prompt {
        env.push(("BOTTLE_SYSTEM_PROMPT_FILE".into(), AGENT_PROMPT_PATH.into()));
    }
    // Manifest env and per-launch env override the defaults above (but not the proxy
    // and trust settings, which are re-asserted below).
    for (k, v) in spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(extra_env.iter().cloned())
    {
        env.retain(|(ek, _)| ek != &k);
        env.push((k, v));
    }
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        env.retain(|(ek, _)| ek != k);
        env.push((k.into(), proxy.clone()));
    }
    let mut direct: Vec<String> = Vec::new();
    if !spec.git_remotes.is_empty() {
        direct.push(sidecar_ip.to_string());
    }
    direct.extend(model_no_proxy(&spec.models));
    for k in ["NO_PROXY", "no_proxy"] {
        if let Some((_, v)) = env.iter_mut().find(|(ek, _)| ek == k) {
            for d in &direct {
                v.push(',');
                v.push_str(d);
            }
        }
    }
    env
}

/// The names the agent reaches directly, bypassing the proxy: every model sidecar's.
pub fn model_no_proxy(models: &[crate::manifest::ModelPlan]) -> Vec<String> {
    models.iter().map(|m| m.name.clone()).collect()
}

/// Refuses to start when a non-secret env value equals a secret value (a manifest mistake
/// that would put the secret into the agent and `docker inspect`).
pub fn check_env_has_no_secret(spec: &LaunchSpec, extra_env: &[(String, String)]) -> Result<()> {
    for (name, value) in &spec.secrets {
        if value.len() < 4 {
            continue;
        }
        let leaks = spec
            .env
            .values()
            .chain(extra_env.iter().map(|(_, v)| v))
            .any(|v| v.contains(value.as_str()));
        if leaks {
            bail!("the agent env would contain the value of secret {name}; secrets go to the sidecar only — remove it from the bottle's env");
        }
    }
    Ok(())
}

/// The agent's system git config for a bottle with git remotes: `insteadOf` rewrites of every
/// spelling of each remote's URL (https with and without `.git`, `ssh://git@host/…`,
/// `git@host:…`) to `http://<gate>/<name>`. Holds no credential.
pub fn gate_gitconfig(remotes: &[crate::manifest::GitRemote], gate: &str) -> String {
    let mut out = String::from(
        "# Written by bottle: the bottle's git remotes go through the sidecar's git gate, which\n\
         # scans pushes for secrets and holds the upstream credential. Read-only.\n",
    );
    for r in remotes {
        out.push_str(&format!("[url \"http://{gate}/{}\"]\n", r.name));
        for spelling in remote_spellings(&r.url) {
            out.push_str(&format!("\tinsteadOf = {spelling}\n"));
        }
    }
    out.push_str("[credential]\n\thelper =\n");
    out
}

/// Every way a user writes the remote `url`: `https://host/p`, `ssh://user@host/p` and
/// `user@host:p` (the URL's own user, and `git`), each with and without `.git`, plus the URL
/// exactly as declared (a port included).
pub fn remote_spellings(url: &str) -> Vec<String> {
    let (user, host, path) = if let Some(rest) = url.strip_prefix("https://") {
        let (h, p) = rest.split_once('/').unwrap_or((rest, ""));
        (None, h.split(':').next().unwrap_or(h), p)
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        let (auth, p) = rest.split_once('/').unwrap_or((rest, ""));
        let (u, h) = match auth.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, auth),
        };
        (u, h.split(':').next().unwrap_or(h), p)
    } else if let Some((uh, p)) = url.split_once(':') {
        let (u, h) = match uh.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, uh),
        };
        (u, h, p)
    } else {
        return vec![url.to_string()];
    };
    let bare = path.trim_matches('/').trim_end_matches(".git");
    let mut users = vec!["git"];
    if let Some(u) = user.filter(|u| *u != "git") {
        users.push(u);
    }
    let mut out = vec![url.to_string()];
    for p in [format!("{bare}.git"), bare.to_string()] {
        out.push(format!("https://{host}/{p}"));
        for u in &users {
            out.push(format!("ssh://{u}@{host}/{p}"));
            out.push(format!("{u}@{host}:{p}"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn manifest_env_overrides_defaults_but_never_the_proxy() {
        let mut spec = LaunchSpec::sample();
        spec.env.insert("HOME".into(), "/elsewhere".into());
        spec.env
            .insert("HTTPS_PROXY".into(), "http://evil:1".into());
        let extra = [("BOTTLE_PROMPT".to_string(), "do it".to_string())];
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        let env = agent_env("abc", &spec, &extra, false, Some("vt100".into()), ip, true);
        assert_eq!(get(&env, "HOME"), Some("/elsewhere"));
        assert_eq!(get(&env, "HTTPS_PROXY"), Some("http://10.0.0.2:3128"));
        assert_eq!(get(&env, "BOTTLE_PROMPT"), Some("do it"));
        assert_eq!(get(&env, "BOTTLE_ID"), Some("abc"));
        assert_eq!(
            get(&env, "BOTTLE_SYSTEM_PROMPT_FILE"),
            Some(AGENT_PROMPT_PATH)
        );
        assert_eq!(get(&env, "SSL_CERT_FILE"), Some(roots::SYSTEM_BUNDLE));
        // Unattended: the host's TERM is not passed on.
        assert_eq!(get(&env, "TERM"), Some("xterm-256color"));
        assert_eq!(get(&env, "NO_PROXY"), Some("localhost,127.0.0.1,::1"));
        assert_eq!(env.iter().filter(|(k, _)| k == "HTTPS_PROXY").count(), 1);
        let env = agent_env("abc", &spec, &[], true, Some("vt100".into()), ip, false);
        assert_eq!(get(&env, "TERM"), Some("vt100"));
        assert_eq!(get(&env, "BOTTLE_SYSTEM_PROMPT_FILE"), None);
    }

    #[test]
    fn git_remotes_bypass_the_proxy_to_the_gate() {
        let mut spec = LaunchSpec::sample();
        spec.git_remotes =
            vec![toml::from_str("name = \"origin\"\nurl = \"https://github.com/o/r\"").unwrap()];
        let env = agent_env(
            "abc",
            &spec,
            &[],
            false,
            None,
            Ipv4Addr::new(10, 0, 0, 2),
            false,
        );
        assert_eq!(
            get(&env, "NO_PROXY"),
            Some("localhost,127.0.0.1,::1,10.0.0.2")
        );
        assert_eq!(
            get(&env, "no_proxy"),
            Some("localhost,127.0.0.1,::1,10.0.0.2")
        );
        let cfg = gate_gitconfig(&spec.git_remotes, "10.0.0.2:8418");
        assert!(
            cfg.contains("[url \"http://10.0.0.2:8418/origin\"]"),
            "{cfg}"
        );
        assert!(cfg.contains("insteadOf = git@github.com:o/r.git"), "{cfg}");
    }

    #[test]
    fn model_sidecars_bypass_the_proxy_by_name() {
        let mut spec = LaunchSpec::sample();
        for (name, engine) in [("coder", "vllm"), ("small", "ollama")] {
            let m: crate::manifest::ModelSpec = toml::from_str(&format!(
                "name = \"{name}\"\nengine = \"{engine}\"\nmodel = \"m\"\n"
            ))
            .unwrap();
            spec.models.push(crate::manifest::resolve_model(&m, "f"));
        }
        spec.git_remotes =
            vec![toml::from_str("name = \"origin\"\nurl = \"https://github.com/o/r\"").unwrap()];
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        let env = agent_env("abc", &spec, &[], false, None, ip, false);
        for k in ["NO_PROXY", "no_proxy"] {
            assert_eq!(
                get(&env, k),
                Some("localhost,127.0.0.1,::1,10.0.0.2,coder,small")
            );
        }
        // The proxy itself is still the proxy.
        assert_eq!(get(&env, "HTTPS_PROXY"), Some("http://10.0.0.2:3128"));
    }

    #[test]
    fn a_secret_value_in_the_env_is_refused_by_name() {
        let mut spec = LaunchSpec::sample();
        spec.secrets
            .insert("GH".into(), Zeroizing::new("ghp_value123".into()));
        assert!(check_env_has_no_secret(&spec, &[]).is_ok());
        let extra = [("X".to_string(), "pre-ghp_value123-post".to_string())];
        let e = check_env_has_no_secret(&spec, &extra)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("secret GH") && !e.contains("ghp_value123"),
            "{e}"
        );
    }
}
