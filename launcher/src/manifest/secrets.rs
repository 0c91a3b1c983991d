//! Secret sources (`[secrets]` of a bottle) and their resolution on the host.
//!
//! A bottle never contains a secret value, only where to get it: an environment variable
//! of the `bottle` process, a file, or a command's standard output. Values are resolved on
//! the host when a bottle starts, held in [`Zeroizing`] buffers, and handed to the sidecar
//! over stdin. Errors name the secret and its source, never the value.
use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};
use zeroize::Zeroizing;

use super::error::ManifestError;

/// How long a `command` secret source may run (a password manager may ask for a passphrase).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest secret value accepted from a file or command, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Environment variable names that get a placeholder automatically when a secret of that
/// name is used by a route (see docs/manifests.md, "Placeholders").
pub const KNOWN_PROVIDER_ENV: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "OPENAI_API_KEY",
    "CODEX_API_KEY",
    "GH_TOKEN",
    "GITHUB_TOKEN",
    "GITLAB_TOKEN",
    "HF_TOKEN",
    "NPM_TOKEN",
    "CARGO_REGISTRY_TOKEN",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
    "OPENROUTER_API_KEY",
];

/// The value the agent sees in place of a provider token: visibly not a secret.
pub fn placeholder_value(env_name: &str) -> String {
    format!("bottle-placeholder-{env_name}")
}

/// Where a secret's value comes from. Serialises as a short descriptor such as
/// `env:GH_TOKEN`, `file:/home/me/.tokens/gh` or `command:pass show gh` — never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the `bottle` process.
    Env(String),
    /// A file (absolute path); must not be readable by group or others.
    File(PathBuf),
    /// A command (argv, no shell) whose standard output is the value.
    Command(Vec<String>),
}

impl SecretSource {
    /// The kind of source: `env`, `file` or `command`.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretSource::Env(_) => "env",
            SecretSource::File(_) => "file",
            SecretSource::Command(_) => "command",
        }
    }

    /// Reads the value on the host. One trailing newline (`\n` or `\r\n`) is removed from
    /// files and command output; an empty value is an error.
    ///
    /// `name` is the secret's name, used in error messages only.
    pub fn resolve_named(&self, name: &str) -> Result<Zeroizing<String>, ManifestError> {
        self.resolve_value(name, false)
    }

    /// Like [`SecretSource::resolve_named`], for values that are never sent in a header (an
    /// ssh private key): line breaks are kept.
    pub fn resolve_multiline(&self, name: &str) -> Result<Zeroizing<String>, ManifestError> {
        self.resolve_value(name, true)
    }

    fn resolve_value(
        &self,
        name: &str,
        multiline: bool,
    ) -> Result<Zeroizing<String>, ManifestError> {
        let fail = |message: String| ManifestError::Secret {
            name: name.to_string(),
            source_desc: self.to_string(),
            message,
        };
        let bytes: Zeroizing<Vec<u8>> = match self {
            SecretSource::Env(var) => match std::env::var_os(var) {
                None => {
                    return Err(fail(format!(
                        "environment variable `{var}` is not set; export it before running bottle, or change this secret's source"
                    )))
                }
                Some(v) => Zeroizing::new(v.into_encoded_bytes()),
            },
            SecretSource::File(path) => read_secret_file(path).map_err(fail)?,
            SecretSource::Command(argv) => run_secret_command(argv).map_err(fail)?,
        };
        let mut bytes = bytes;
        if !matches!(self, SecretSource::Env(_)) && bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(fail("the value is empty".to_string()));
        }
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(fail(format!(
                "the value is larger than {MAX_SECRET_BYTES} bytes"
            )));
        }
        if bytes
            .iter()
            .any(|b| *b == 0 || (!multiline && (*b == b'\n' || *b == b'\r')))
        {
            return Err(fail(
                "the value contains a line break or NUL byte, which cannot be sent in an HTTP header".to_string(),
            ));
        }
        match std::str::from_utf8(&bytes) {
            Ok(s) => Ok(Zeroizing::new(s.to_string())),
            Err(_) => Err(fail("the value is not valid UTF-8".to_string())),
        }
    }

    /// [`SecretSource::resolve_named`] without a secret name for messages.
    pub fn resolve(&self) -> Result<Zeroizing<String>, ManifestError> {
        self.resolve_named("(unnamed)")
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(v) => write!(f, "env:{v}"),
            SecretSource::File(p) => write!(f, "file:{}", p.display()),
            SecretSource::Command(argv) => write!(f, "command:{}", argv.join(" ")),
        }
    }
}

impl Serialize for SecretSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads a secret file, refusing files that group or others can read.
fn read_secret_file(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_string());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the file is readable or writable by group/others (mode {mode:03o}); run `chmod 600 {}`",
                path.display()
            ));
        }
    }
    if meta.len() > MAX_SECRET_BYTES as u64 + 2 {
        return Err(format!("the file is larger than {MAX_SECRET_BYTES} bytes"));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_BYTES as u64 + 3).read_to_end(&mut buf))
        .map_err(|e| format!("cannot read the file: {e}"))?;
    Ok(buf)
}

/// Runs a secret command (no shell), capturing stdout; stderr goes to the user's terminal so
/// a password manager's prompts and errors stay visible (and out of our error messages).
fn run_secret_command(argv: &[String]) -> Result<Zeroizing<Vec<u8>>, String> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| "the command is empty".to_string())?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run `{prog}`: {e}"))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| "no stdout pipe".to_string())?;
    let reader = std::thread::spawn(move || {
        let mut buf = Zeroizing::new(Vec::new());
        let res = (&mut stdout)
            .take(MAX_SECRET_BYTES as u64 + 3)
            .read_to_end(&mut buf);
        // Drain (and drop) anything beyond the cap so the child does not block on a full pipe.
        let mut sink = Zeroizing::new(Vec::new());
        let _ = stdout.read_to_end(&mut sink);
        res.map(|_| buf)
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{prog}` did not finish within {} s and was killed",
                    COMMAND_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for `{prog}` failed: {e}")),
        }
    };
    let out = reader
        .join()
        .map_err(|_| "reading the command output failed".to_string())?
        .map_err(|e| format!("reading the output of `{prog}` failed: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`{prog}` failed ({status}); its error output, if any, is shown above"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANTED: &str = "s3cr3t-PLANTED-value-9f8e7d";

    #[test]
    fn env_source_resolves_and_errors_name_the_variable() {
        let var = "BOTTLE_TEST_SECRET_ENV_1";
        std::env::set_var(var, PLANTED);
        let src = SecretSource::Env(var.to_string());
        assert_eq!(src.resolve_named("X").unwrap().as_str(), PLANTED);
        assert_eq!(src.to_string(), format!("env:{var}"));
        let missing = SecretSource::Env("BOTTLE_TEST_SECRET_ENV_MISSING".into());
        let err = missing.resolve_named("GH_TOKEN").unwrap_err().to_string();
        assert!(
            err.contains("GH_TOKEN")
                && err.contains("BOTTLE_TEST_SECRET_ENV_MISSING")
                && err.contains("not set"),
            "{err}"
        );
    }

    #[test]
    fn file_source_requires_0600_and_trims_one_newline() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, format!("{PLANTED}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let src = SecretSource::File(path.clone());
        let err = src.resolve_named("T").unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("644"), "{err}");
        assert!(!err.contains(PLANTED));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(src.resolve_named("T").unwrap().as_str(), PLANTED);
        let missing = SecretSource::File(dir.path().join("nope"));
        assert!(missing
            .resolve_named("T")
            .unwrap_err()
            .to_string()
            .contains("cannot read"));
    }

    #[test]
    fn command_source_captures_stdout_and_never_echoes_it_on_failure() {
        let ok = SecretSource::Command(vec!["printf".into(), format!("{PLANTED}\n")]);
        assert_eq!(ok.resolve_named("C").unwrap().as_str(), PLANTED);
        // Prints the value, then fails: the error must not contain what was printed.
        std::env::set_var("BOTTLE_TEST_PLANT_CMD", PLANTED);
        let bad = SecretSource::Command(vec![
            "sh".into(),
            "-c".into(),
            "printf %s \"$BOTTLE_TEST_PLANT_CMD\"; exit 3".into(),
        ]);
        let err = bad.resolve_named("C").unwrap_err().to_string();
        assert!(
            err.contains("failed") && err.contains("exit status: 3"),
            "{err}"
        );
        assert!(!err.contains(PLANTED), "{err}");
        let empty = SecretSource::Command(vec!["true".into()]);
        assert!(empty
            .resolve_named("C")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let nonexistent = SecretSource::Command(vec!["/nonexistent/bottle-secret-helper".into()]);
        assert!(nonexistent
            .resolve_named("C")
            .unwrap_err()
            .to_string()
            .contains("cannot run"));
    }

    #[test]
    fn multi_line_values_are_refused() {
        let src = SecretSource::Command(vec!["sh".into(), "-c".into(), "printf 'a\\nb\\n'".into()]);
        let err = src.resolve_named("C").unwrap_err().to_string();
        assert!(err.contains("line break"), "{err}");
        assert!(!err.contains("a\nb"));
    }
}
