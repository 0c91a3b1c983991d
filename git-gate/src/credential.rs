//! Upstream credentials and how they reach git without argv, URLs or files.
//!
//! The credential is turned into an `http.extraHeader` config entry passed through
//! `GIT_CONFIG_COUNT` / `GIT_CONFIG_KEY_n` / `GIT_CONFIG_VALUE_n` in the **environment of the
//! gate's own git children only** (the mirror refresh, and `receive-pack`, whose `pre-receive`
//! hook inherits it for the upstream push). It never appears in a command line, a URL, a
//! config file or a log line. Caveat: a process's environment is readable through
//! `/proc/<pid>/environ` by the same uid; inside the sidecar that is only the gate itself (the
//! agent runs in another container and never sees these processes).

use base64::Engine;

/// A credential for an HTTPS upstream.
#[derive(Clone)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic base64(<username>:<password>)` (GitHub: username
    /// `x-access-token`, password the token).
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Credential::Bearer(<redacted>)"),
            Credential::Basic { username, .. } => {
                write!(f, "Credential::Basic({username:?}, <redacted>)")
            }
        }
    }
}

impl Credential {
    /// The `Authorization: …` header line git sends to upstream.
    pub(crate) fn header(&self) -> String {
        match self {
            Credential::Bearer(t) => format!("Authorization: Bearer {t}"),
            Credential::Basic { username, password } => {
                let b64 = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                format!("Authorization: Basic {b64}")
            }
        }
    }

    /// The secret value(s) that must never leave the gate: scrubbed from upstream output and
    /// scanned for in pushes as known secrets.
    pub fn secret_values(&self) -> Vec<String> {
        match self {
            Credential::Bearer(t) => vec![t.clone()],
            Credential::Basic { password, username } => {
                let b64 = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                vec![password.clone(), b64]
            }
        }
    }
}

/// Git config entries (key, value) every git child of the gate gets through
/// `GIT_CONFIG_COUNT`: no credential helpers or prompts from anywhere, no redirects (so the
/// header cannot follow a redirect to another host), and the credential header if any.
pub(crate) fn git_config_entries(cred: Option<&Credential>) -> Vec<(String, String)> {
    let mut v = vec![
        ("credential.helper".to_string(), String::new()),
        ("http.followRedirects".to_string(), "false".to_string()),
        ("core.askPass".to_string(), String::new()),
        ("protocol.ext.allow".to_string(), "never".to_string()),
    ];
    if let Some(c) = cred {
        v.push(("http.extraHeader".to_string(), c.header()));
    }
    v
}

/// Replaces every occurrence of each secret in `text` with `***`, and any `scheme://user:pass@`
/// userinfo with `scheme://***@`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if !s.is_empty() {
            out = out.replace(s.as_str(), "***");
        }
    }
    // userinfo in URLs
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        result.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        if let Some(at) = tail[..end].rfind('@') {
            result.push_str("***");
            rest = &tail[at..];
        } else {
            rest = tail;
        }
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credential::Basic {
            username: "x-access-token".into(),
            password: "s3cr3t-value".into(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", Credential::Bearer("s3cr3t-value".into())).contains("s3cr3t"));
    }

    #[test]
    fn header_is_basic_base64() {
        let c = Credential::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(c.header(), "Authorization: Basic dTpw");
        let e = git_config_entries(Some(&c));
        assert!(e.contains(&(
            "http.extraHeader".into(),
            "Authorization: Basic dTpw".into()
        )));
    }

    #[test]
    fn scrub_removes_values_and_userinfo() {
        let s = scrub(
            "fatal: https://u:tok123@h/r failed tok123 and http://h/x ok",
            &["tok123".into()],
        );
        assert_eq!(s, "fatal: https://***@h/r failed *** and http://h/x ok");
    }
}
