//! Building git child processes with a clean, gate-controlled environment.

use std::path::Path;
use std::process::Stdio;

use crate::config::GateConfig;
use crate::credential::{git_config_entries, Credential};

/// A `tokio` command for `git <args>` with the environment cleared except `PATH`, no system or
/// global config, no terminal prompts, the gate's config entries (credential header included,
/// through the environment only), killed when dropped.
pub(crate) fn git(
    cfg: &GateConfig,
    cred: Option<&Credential>,
    git_dir: Option<&Path>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&cfg.git_program);
    cmd.env_clear();
    for (k, v) in base_env(cred, &cfg.upstream_config) {
        cmd.env(k, v);
    }
    if let Some(d) = git_dir {
        cmd.env("GIT_DIR", d);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The environment every git child of the gate gets.
pub(crate) fn base_env(
    cred: Option<&Credential>,
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env = vec![
        ("GIT_CONFIG_NOSYSTEM".to_string(), "1".to_string()),
        ("GIT_CONFIG_GLOBAL".to_string(), "/dev/null".to_string()),
        ("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()),
        ("LC_ALL".to_string(), "C".to_string()),
    ];
    if let Ok(p) = std::env::var("PATH") {
        env.push(("PATH".to_string(), p));
    }
    let mut entries = git_config_entries(cred);
    entries.extend(extra.iter().cloned());
    env.push(("GIT_CONFIG_COUNT".to_string(), entries.len().to_string()));
    for (i, (k, v)) in entries.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), k));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), v));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_travels_in_the_environment_never_in_argv() {
        let cfg = GateConfig::new("/tmp/s".into(), "/bin/true".into(), Vec::new());
        let cred = Credential::Bearer("tok-abcdef-123456".into());
        let mut cmd = git(&cfg, Some(&cred), None);
        cmd.args(["fetch", "--", "https://example.com/r.git"]);
        let std = cmd.as_std();
        assert!(std
            .get_args()
            .all(|a| !a.to_string_lossy().contains("tok-abcdef")));
        let envs: Vec<(String, String)> = std
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        let key = envs
            .iter()
            .find(|(_, v)| v == "http.extraHeader")
            .map(|(k, _)| k.replace("KEY", "VALUE"))
            .expect("extraHeader configured");
        assert!(envs.contains(&(key, "Authorization: Bearer tok-abcdef-123456".into())));
        assert!(envs.contains(&("GIT_CONFIG_GLOBAL".into(), "/dev/null".into())));
        // Without a credential there is no header at all.
        let cmd = git(&cfg, None, None);
        assert!(cmd
            .as_std()
            .get_envs()
            .all(|(_, v)| v.is_none_or(|v| !v.to_string_lossy().contains("Authorization"))));
    }
}
