//! One bottle file (`$BOTTLE_HOME/bottles/<name>.toml`): its raw TOML shape and the
//! per-file validation that turns it into a [`BottleLayer`] ready to be merged along its
//! `extends` chain.
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bottle_proxy::policy::{RouteSpec, SettingsSpec};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::error::{Location, ManifestError};
pub use super::model::{ModelEngine, ModelSpec};
use super::secrets::SecretSource;
use super::source::SourceFile;
use super::suggest::did_you_mean;
use super::{expand_path, is_valid_env_name, RESERVED_ENV};

/// The text of the built-in `shell` bottle, used when `$BOTTLE_HOME/bottles/shell.toml`
/// does not exist: a shell with the workspace bound read-write and no egress at all.
pub const BUILTIN_SHELL: &str = r#"# The built-in `shell` bottle (used when $BOTTLE_HOME/bottles/shell.toml does not exist).
description = "A shell with the workspace bound read-write and no network egress"
image = "shell"
workspace = "bind"
"#;

/// Names of bottles that exist without a file.
pub const BUILTIN_BOTTLES: &[&str] = &["shell"];

/// The built-in text of a bottle, if `name` is built in.
pub fn builtin_bottle(name: &str) -> Option<&'static str> {
    match name {
        "shell" => Some(BUILTIN_SHELL),
        _ => None,
    }
}

/// An agent image template shipped with bottle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    /// A Debian base with a shell, git, curl, python3.
    Shell,
    /// The shell image plus Claude Code.
    Claude,
    /// The shell image plus OpenAI Codex CLI.
    Codex,
}

impl Template {
    /// All templates, by name.
    pub const ALL: [(&'static str, Template); 3] = [
        ("shell", Template::Shell),
        ("claude", Template::Claude),
        ("codex", Template::Codex),
    ];

    /// The template's name as written in a manifest.
    pub fn name(self) -> &'static str {
        match self {
            Template::Shell => "shell",
            Template::Claude => "claude",
            Template::Codex => "codex",
        }
    }
}

/// The agent image: a shipped template, a local (or pullable) image tag, or a user Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ImageSpec {
    /// `image = "claude"`.
    Template {
        /// The template.
        template: Template,
    },
    /// `image = "bottle/agent-claude:local"`: any image reference with a `/` or `:` (used as
    /// is when the engine has it, pulled otherwise).
    Tag {
        /// The image reference.
        tag: String,
    },
    /// `image = { dockerfile = "path", context = "dir" }` (paths relative to `$BOTTLE_HOME`).
    Dockerfile {
        /// Absolute path of the Dockerfile.
        dockerfile: PathBuf,
        /// Absolute path of the build context (default: the Dockerfile's directory).
        context: PathBuf,
    },
}

/// How the host working directory reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceMode {
    /// Bind-mount the host directory read-write (default).
    #[default]
    Bind,
    /// Copy the host directory into the bottle; the host copy is never written.
    Copy,
    /// No workspace.
    None,
}

/// The OCI runtime for the agent container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeMode {
    /// gVisor (`runsc`) when a probe container actually starts under it, else `runc`.
    #[default]
    Auto,
    /// The engine's default runtime.
    Runc,
    /// gVisor; starting fails if it is not available.
    Runsc,
}

/// A git remote the sidecar's git gate mirrors, scans pushes for and pushes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitRemote {
    /// Remote name inside the bottle, e.g. `origin`.
    pub name: String,
    /// Upstream URL (`https://…`, `ssh://…` or `git@host:path`).
    pub url: String,
    /// Name of the secret (in `[secrets]`) the gate authenticates with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Send the secret as `Basic` auth with this user name (GitHub: `x-access-token`);
    /// without it, as a `Bearer` token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// SSH remotes: the secret (in `[secrets]`) holding the private key (OpenSSH format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    /// SSH remotes: the upstream's pinned host key, `<type> <base64>` as in `known_hosts`
    /// (e.g. `ssh-ed25519 AAAA…`). Required: host keys are checked strictly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    /// Ref patterns a push may update (`*` matches anything). Default `["refs/heads/*"]`.
    #[serde(default = "default_push", skip_serializing_if = "is_default_push")]
    pub push: Vec<String>,
    /// Allow deleting refs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_delete: bool,
    /// Allow creating or moving tags (`refs/tags/*` must also match `push`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_tags: bool,
    /// Allow non-fast-forward (force) pushes on every pushable ref.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_force: bool,
    /// Ref patterns where force pushes are allowed even without `allow_force`
    /// (e.g. `refs/heads/bottle/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub force_namespaces: Vec<String>,
    /// Private networks the upstream host may resolve into (like a route's `allow_private`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_private: Vec<String>,
}

fn default_push() -> Vec<String> {
    vec!["refs/heads/*".into()]
}

fn is_default_push(v: &[String]) -> bool {
    v == default_push().as_slice()
}

/// `[resources]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpus: Option<Spanned<f64>>,
    memory: Option<Spanned<toml::Value>>,
    pids: Option<Spanned<i64>>,
}

/// One `[secrets]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    env: Option<String>,
    file: Option<String>,
    command: Option<Vec<String>>,
    placeholder_env: Option<Vec<String>>,
}

/// `[git]` of a bottle as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGit {
    author_name: Option<String>,
    author_email: Option<String>,
    #[serde(default, rename = "remote")]
    remotes: Vec<Spanned<GitRemote>>,
}

/// A bottle file exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBottle {
    description: Option<String>,
    extends: Option<Spanned<String>>,
    image: Option<Spanned<toml::Value>>,
    workspace: Option<WorkspaceMode>,
    protect_git: Option<bool>,
    runtime: Option<RuntimeMode>,
    resources: Option<RawResources>,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RouteSpec>>,
    #[serde(default)]
    secrets: BTreeMap<String, Spanned<RawSecret>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    git: Option<RawGit>,
    #[serde(default, rename = "model")]
    models: Vec<Spanned<ModelSpec>>,
    proxy: Option<SettingsSpec>,
}

/// A value together with the file and span it was declared at.
#[derive(Debug, Clone)]
pub(crate) struct Located<T> {
    pub value: T,
    pub src: Arc<SourceFile>,
    pub span: Option<Range<usize>>,
}

impl<T> Located<T> {
    fn new(value: T, src: &Arc<SourceFile>, span: Range<usize>) -> Self {
        Located {
            value,
            src: Arc::clone(src),
            span: Some(span),
        }
    }

    /// The declaration's location.
    pub fn loc(&self) -> Location {
        self.src.loc(self.span.as_ref())
    }

    /// The location of the first line inside the declaration that contains `needle`.
    pub fn loc_of(&self, needle: &str) -> Location {
        self.src.loc_within(self.span.as_ref(), needle)
    }
}

/// A declared secret (its source, and which env vars get a placeholder).
#[derive(Debug, Clone)]
pub(crate) struct SecretDecl {
    pub source: SecretSource,
    /// `None` = automatic (see [`super::secrets::KNOWN_PROVIDER_ENV`]).
    pub placeholder_env: Option<Vec<String>>,
}

/// One validated bottle file, before merging with its parents.
#[derive(Debug)]
pub(crate) struct BottleLayer {
    pub name: String,
    pub src: Arc<SourceFile>,
    pub extends: Option<Located<String>>,
    pub description: Option<String>,
    pub image: Option<ImageSpec>,
    pub workspace: Option<WorkspaceMode>,
    pub protect_git: Option<bool>,
    pub runtime: Option<RuntimeMode>,
    pub cpus: Option<f64>,
    pub memory: Option<(u64, String)>,
    pub pids: Option<u64>,
    pub routes: Vec<Located<RouteSpec>>,
    pub secrets: Vec<(String, Located<SecretDecl>)>,
    pub env: Vec<(String, Located<String>)>,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub remotes: Vec<Located<GitRemote>>,
    pub models: Vec<Located<ModelSpec>>,
    pub proxy: Option<SettingsSpec>,
}

/// The id a route is known by (for merging and messages): `id`, else `host`.
pub(crate) fn route_id(r: &RouteSpec) -> String {
    r.id.clone().unwrap_or_else(|| r.host.clone())
}

/// Parses a memory size: an integer number of bytes, or a string like `512m`, `4g`, `4GiB`.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. \"512m\" or \"4g\""))?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use k, m, g or t"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Smallest memory limit accepted (Docker refuses less than 6 MiB).
pub const MIN_MEMORY: u64 = 6 << 20;

/// Whether `name` is acceptable as a bottle, agent or model name: it becomes part of file
/// paths, container names and labels, so only `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 64 bytes.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether `name` is acceptable as a secret name.
fn is_valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn invalid(loc: Location, key: &str, message: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        loc,
        key: key.to_string(),
        message: message.into(),
        suggestion: None,
    }
}

/// Parses and validates one bottle file. `home` anchors relative paths.
pub(crate) fn parse_layer(
    name: &str,
    src: Arc<SourceFile>,
    home: &Path,
) -> Result<BottleLayer, ManifestError> {
    let raw: RawBottle = src.parse("bottle")?;
    let loc = |span: &Range<usize>| src.loc(Some(span));

    let extends = raw.extends.map(|e| {
        let span = e.span();
        Located::new(e.into_inner(), &src, span)
    });

    let image = match raw.image {
        None => None,
        Some(v) => Some(parse_image(&src, v, home)?),
    };

    let (mut cpus, mut memory, mut pids) = (None, None, None);
    if let Some(res) = raw.resources {
        if let Some(c) = res.cpus {
            let v = *c.get_ref();
            if !(v > 0.0 && v <= 1024.0) {
                return Err(invalid(loc(&c.span()), "cpus", format!("{v} is out of range; use a number of CPUs between 0.01 and 1024, e.g. 2 or 0.5")));
            }
            cpus = Some(v);
        }
        if let Some(m) = res.memory {
            let span = m.span();
            let text = match m.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) if *i > 0 => i.to_string(),
                toml::Value::Integer(i) => {
                    return Err(invalid(
                        loc(&span),
                        "memory",
                        format!("{i} is not a size; write e.g. \"512m\" or \"4g\""),
                    ))
                }
                other => {
                    return Err(ManifestError::WrongType {
                        loc: loc(&span),
                        key: "memory".into(),
                        message: format!(
                            "found {}, expected a size string like \"4g\" or a number of bytes",
                            other.type_str()
                        ),
                    })
                }
            };
            let bytes = parse_memory(&text).map_err(|m| invalid(loc(&span), "memory", m))?;
            if bytes < MIN_MEMORY {
                return Err(invalid(
                    loc(&span),
                    "memory",
                    format!("`{text}` is below the minimum of 6m"),
                ));
            }
            memory = Some((bytes, text));
        }
        if let Some(p) = res.pids {
            let v = *p.get_ref();
            if !(8..=4_194_304).contains(&v) {
                return Err(invalid(
                    loc(&p.span()),
                    "pids",
                    format!("{v} is out of range; use 8 to 4194304 (default 512)"),
                ));
            }
            pids = Some(v as u64);
        }
    }

    let mut routes = Vec::new();
    let mut seen = BTreeSet::new();
    for r in raw.routes {
        let span = r.span();
        let route = r.into_inner();
        let id = route_id(&route);
        if route.host.trim().is_empty() {
            return Err(invalid(
                loc(&span),
                "host",
                "a route needs a host, e.g. host = \"api.github.com\"",
            ));
        }
        if !seen.insert(id.clone()) {
            return Err(invalid(
                src.loc_within(Some(&span), &id),
                "id",
                format!("two routes in this file have the id `{id}` (the id defaults to the host); give one an explicit distinct `id`"),
            ));
        }
        routes.push(Located::new(route, &src, span));
    }

    let mut secrets = Vec::new();
    for (sname, s) in raw.secrets {
        let span = s.span();
        let l = src.loc_within(Some(&span), "");
        if !is_valid_secret_name(&sname) {
            return Err(invalid(
                l,
                &sname,
                "secret names are letters, digits, `_`, `.` and `-`, starting with a letter or `_`",
            ));
        }
        let s = s.into_inner();
        let source = match (s.env, s.file, s.command) {
            (Some(var), None, None) => {
                if !is_valid_env_name(&var) {
                    return Err(invalid(l, "env", format!("`{var}` is not an environment variable name")));
                }
                SecretSource::Env(var)
            }
            (None, Some(file), None) => SecretSource::File(expand_path(&file, home)),
            (None, None, Some(argv)) => {
                if argv.is_empty() || argv[0].trim().is_empty() {
                    return Err(invalid(l, "command", "the command is empty; write e.g. command = [\"pass\", \"show\", \"github/token\"]"));
                }
                SecretSource::Command(argv)
            }
            (None, None, None) => {
                return Err(invalid(l, &sname, "a secret needs exactly one source: { env = \"VAR\" }, { file = \"path\" } or { command = [\"prog\", \"arg\"] }"))
            }
            _ => return Err(invalid(l, &sname, "a secret has exactly one of `env`, `file` or `command`")),
        };
        if let Some(list) = &s.placeholder_env {
            for e in list {
                if !is_valid_env_name(e) || RESERVED_ENV.contains(&e.as_str()) {
                    return Err(invalid(src.loc_within(Some(&span), e), "placeholder_env", format!("`{e}` is not a usable environment variable name (reserved or malformed)")));
                }
            }
        }
        secrets.push((
            sname,
            Located::new(
                SecretDecl {
                    source,
                    placeholder_env: s.placeholder_env,
                },
                &src,
                span,
            ),
        ));
    }

    let mut env = Vec::new();
    for (k, v) in raw.env {
        let span = v.span();
        check_env_name(&src, &span, &k)?;
        check_env_value(&src, &span, &k, v.get_ref())?;
        env.push((k, Located::new(v.into_inner(), &src, span)));
    }

    let (mut author_name, mut author_email, mut remotes) = (None, None, Vec::new());
    if let Some(git) = raw.git {
        author_name = git.author_name;
        author_email = git.author_email;
        let mut names = BTreeSet::new();
        for r in git.remotes {
            let span = r.span();
            let remote = r.into_inner();
            if !is_valid_name(&remote.name) {
                return Err(invalid(
                    loc(&span),
                    "name",
                    format!("`{}` is not a valid remote name", remote.name),
                ));
            }
            if !names.insert(remote.name.clone()) {
                return Err(invalid(
                    loc(&span),
                    "name",
                    format!(
                        "git remote `{}` is declared twice in this file",
                        remote.name
                    ),
                ));
            }
            if !is_git_url(&remote.url) {
                return Err(invalid(
                    src.loc_within(Some(&span), "url"),
                    "url",
                    format!("`{}` is not a git URL; use https://host/owner/repo.git, ssh://git@host/owner/repo.git or git@host:owner/repo.git", remote.url),
                ));
            }
            let ssh = !remote.url.starts_with("https://");
            let ssh_problem = match (ssh, &remote.ssh_key, &remote.host_key) {
                (true, None, _) => Some(("ssh_key", "an ssh remote needs `ssh_key`: the secret holding its private key".to_string())),
                (true, _, None) => Some(("host_key", "an ssh remote needs `host_key`: the upstream's host key as in known_hosts (`ssh-ed25519 AAAA…`), from `ssh-keyscan <host>` checked against the forge's published fingerprints; it is checked strictly".to_string())),
                (true, _, Some(k)) if host_key_problem(k).is_some() => Some(("host_key", host_key_problem(k).unwrap_or_default())),
                (true, _, _) if remote.secret.is_some() => Some(("secret", "an ssh remote authenticates with `ssh_key`; `secret` is for https remotes".to_string())),
                (false, Some(_), _) | (false, _, Some(_)) => Some(("ssh_key", "`ssh_key` and `host_key` are for ssh remotes (ssh://… or git@host:path)".to_string())),
                _ => None,
            };
            if let Some((key, problem)) = ssh_problem {
                return Err(invalid(src.loc_within(Some(&span), "url"), key, problem));
            }
            for (key, pats) in [
                ("push", &remote.push),
                ("force_namespaces", &remote.force_namespaces),
            ] {
                if let Some(p) = pats.iter().find(|p| {
                    !p.starts_with("refs/")
                        || p.contains("..")
                        || p.chars().any(char::is_whitespace)
                }) {
                    return Err(invalid(
                        src.loc_within(Some(&span), key),
                        key,
                        format!("`{p}` is not a ref pattern: it must start with refs/ (e.g. \"refs/heads/*\") and contain no `..` or spaces"),
                    ));
                }
            }
            if let Some(n) = remote.allow_private.iter().find(|n| {
                n.parse::<ipnet::IpNet>().is_err() && n.parse::<std::net::IpAddr>().is_err()
            }) {
                return Err(invalid(
                    src.loc_within(Some(&span), "allow_private"),
                    "allow_private",
                    format!("`{n}` is not a network (e.g. \"10.0.0.0/8\") or an address"),
                ));
            }
            remotes.push(Located::new(remote, &src, span));
        }
    }

    let mut models = Vec::new();
    let mut mnames = BTreeSet::new();
    for m in raw.models {
        let span = m.span();
        let model = m.into_inner();
        super::model::check_model(&src, &span, &model)?;
        if !mnames.insert(model.name.clone()) {
            return Err(invalid(
                loc(&span),
                "name",
                format!("model `{}` is declared twice in this file", model.name),
            ));
        }
        models.push(Located::new(model, &src, span));
    }

    let proxy = raw
        .proxy
        .map(|p| inline_dlp_rules(&src, p, home))
        .transpose()?;
    Ok(BottleLayer {
        name: name.to_string(),
        src,
        extends,
        description: raw.description,
        image,
        workspace: raw.workspace,
        protect_git: raw.protect_git,
        runtime: raw.runtime,
        cpus,
        memory,
        pids,
        routes,
        secrets,
        env,
        author_name,
        author_email,
        remotes,
        models,
        proxy,
    })
}

/// `[proxy] dlp_rules` names rule *files* (relative to `$BOTTLE_HOME`); the policy carries
/// their text, because the sidecar has no files. Each file is read and checked here, so a
/// broken rule is reported with its own file, line and rule id.
fn inline_dlp_rules(
    src: &SourceFile,
    mut proxy: SettingsSpec,
    home: &Path,
) -> Result<SettingsSpec, ManifestError> {
    let at = src.text.find("dlp_rules").map(|o| o..o + "dlp_rules".len());
    let l = src.loc(at.as_ref());
    for entry in proxy.dlp_rules.iter_mut() {
        let path = expand_path(entry, home);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            invalid(
                l.clone(),
                "proxy.dlp_rules",
                format!(
                    "cannot read the DLP rule file {}: {e} (relative paths are relative to $BOTTLE_HOME)",
                    path.display()
                ),
            )
        })?;
        bottle_scanner::Scanner::builder()
            .default_rules(true)
            .rules_toml(&path.display().to_string(), &text)
            .and_then(|b| b.build())
            .map_err(|e| invalid(l.clone(), "proxy.dlp_rules", e.to_string()))?;
        *entry = text;
    }
    Ok(proxy)
}

/// Refuses malformed environment variable names and the ones the launcher owns.
pub(crate) fn check_env_name(
    src: &SourceFile,
    span: &Range<usize>,
    key: &str,
) -> Result<(), ManifestError> {
    let l = src.loc(Some(span));
    if !is_valid_env_name(key) {
        return Err(invalid(l, key, format!("`{key}` is not an environment variable name (letters, digits and `_`, not starting with a digit)")));
    }
    if RESERVED_ENV.contains(&key) || key.starts_with("BOTTLE_") {
        return Err(invalid(l, key, format!("`{key}` is set by the launcher (proxy, CA bundle and bottle variables) and cannot be overridden")));
    }
    Ok(())
}

/// Refuses environment values Docker cannot carry (NUL bytes).
pub(crate) fn check_env_value(
    src: &SourceFile,
    span: &Range<usize>,
    key: &str,
    value: &str,
) -> Result<(), ManifestError> {
    if value.contains('\0') {
        return Err(invalid(
            src.loc(Some(span)),
            key,
            "an environment value cannot contain a NUL byte",
        ));
    }
    Ok(())
}

/// Why a pinned host key is unusable (`<type> <base64>`), if it is.
fn host_key_problem(k: &str) -> Option<String> {
    let mut parts = k.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Some(
            "`host_key` must be `<type> <base64>` as in known_hosts, e.g. `ssh-ed25519 AAAA…`"
                .into(),
        );
    };
    let known = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
    ];
    if !known.contains(&kind) {
        return Some(format!(
            "`{kind}` is not an ssh host key type ({})",
            known.join(", ")
        ));
    }
    use base64::Engine as _;
    if b64.len() < 32
        || base64::engine::general_purpose::STANDARD
            .decode(b64)
            .is_err()
    {
        return Some("the key after the type is not base64".into());
    }
    None
}

/// Whether `url` looks like a git remote URL we can gate.
fn is_git_url(url: &str) -> bool {
    let has_host_path = |rest: &str| {
        rest.split_once('/')
            .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty())
    };
    if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("ssh://"))
    {
        return has_host_path(rest) && !url.chars().any(char::is_whitespace);
    }
    if let Some((user_host, path)) = url.split_once(':') {
        return user_host.contains('@')
            && !path.is_empty()
            && !url.chars().any(char::is_whitespace);
    }
    false
}

/// Why `s` is not a Docker image reference (`[host[:port]/]path[:tag][@sha256:digest]`), if it
/// is not: checked here so a typo fails in `bottle check`, not at the engine.
pub(crate) fn image_reference_problem(s: &str) -> Option<&'static str> {
    if s.len() > 255 {
        return Some("longer than 255 characters");
    }
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let Some(hex) = d.strip_prefix("sha256:") else {
            return Some("a digest must be sha256: and 64 hex digits");
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some("a digest must be sha256: and 64 hex digits");
        }
    }
    // A tag is what follows the last `:` after the last `/` (a registry port comes before it).
    let last = name.rsplit('/').next().unwrap_or(name);
    let (repo, tag) = match last.rsplit_once(':') {
        Some((_, t)) => (&name[..name.len() - t.len() - 1], Some(t)),
        None => (name, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Some("a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -");
        }
    }
    if repo.is_empty() || repo.starts_with('/') || repo.ends_with('/') || repo.contains("//") {
        return Some("the repository part is empty or has an empty path component");
    }
    let mut parts = repo.split('/');
    let first = parts.next().unwrap_or_default();
    let has_registry = repo.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if has_registry
        && !first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
    {
        return Some("the registry host has characters a host name cannot have");
    }
    let path: Vec<&str> = if has_registry {
        parts.collect()
    } else {
        repo.split('/').collect()
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    if path.is_empty() || !path.iter().all(|c| component_ok(c)) {
        return Some("repository names are lower-case letters, digits and . _ - between / (e.g. ghcr.io/acme/agent:1.2)");
    }
    None
}

/// Converts `image = …` into an [`ImageSpec`].
fn parse_image(
    src: &Arc<SourceFile>,
    v: Spanned<toml::Value>,
    home: &Path,
) -> Result<ImageSpec, ManifestError> {
    let span = v.span();
    let l = src.loc(Some(&span));
    match v.into_inner() {
        toml::Value::String(s) => match Template::ALL.iter().find(|(n, _)| *n == s) {
            Some((_, t)) => Ok(ImageSpec::Template { template: *t }),
            None if s.contains(['/', ':']) => match image_reference_problem(&s) {
                None => Ok(ImageSpec::Tag { tag: s }),
                Some(why) => Err(ManifestError::Invalid {
                    loc: l,
                    key: "image".into(),
                    message: format!("`{s}` is not a valid image reference: {why}"),
                    suggestion: None,
                }),
            },
            None => Err(ManifestError::Invalid {
                loc: l,
                key: "image".into(),
                message: format!("`{s}` is not a template; use \"shell\", \"claude\", \"codex\", an image tag such as \"bottle/agent-claude:local\", or {{ dockerfile = \"path\" }}"),
                suggestion: did_you_mean(&s, Template::ALL.iter().map(|(n, _)| *n)),
            }),
        },
        toml::Value::Table(t) => {
            let mut dockerfile = None;
            let mut context = None;
            for (k, val) in t {
                let as_str = |val: toml::Value| match val {
                    toml::Value::String(s) => Ok(s),
                    other => Err(ManifestError::WrongType {
                        loc: src.loc_within(Some(&span), &k),
                        key: k.clone(),
                        message: format!("found {}, expected a path string", other.type_str()),
                    }),
                };
                match k.as_str() {
                    "dockerfile" => dockerfile = Some(as_str(val)?),
                    "context" => context = Some(as_str(val)?),
                    _ => {
                        return Err(ManifestError::UnknownKey {
                            loc: src.loc_within(Some(&span), &k),
                            suggestion: did_you_mean(&k, ["dockerfile", "context"]),
                            key: k,
                            table: "`image`".into(),
                            note: None,
                        })
                    }
                }
            }
            let dockerfile = dockerfile.ok_or_else(|| invalid(l.clone(), "image", "a custom image needs { dockerfile = \"path\" }"))?;
            let df = expand_path(&dockerfile, home);
            if !df.is_file() {
                return Err(invalid(l, "dockerfile", format!("{} does not exist (relative paths are relative to $BOTTLE_HOME)", df.display())));
            }
            let ctx = match context {
                Some(c) => expand_path(&c, home),
                None => df.parent().map(Path::to_path_buf).unwrap_or_else(|| home.to_path_buf()),
            };
            if !ctx.is_dir() {
                return Err(invalid(l, "context", format!("{} is not a directory", ctx.display())));
            }
            Ok(ImageSpec::Dockerfile { dockerfile: df, context: ctx })
        }
        other => Err(ManifestError::WrongType {
            loc: l,
            key: "image".into(),
            message: format!("found {}, expected a template name or {{ dockerfile = \"path\" }}", other.type_str()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("4g").unwrap(), 4 << 30);
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_memory("1048576").unwrap(), 1 << 20);
        assert!(parse_memory("4x").unwrap_err().contains("unit"));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("99999999999999t")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn names_and_urls() {
        assert!(is_valid_name("dev-1.b_c"));
        assert!(!is_valid_name("../etc"));
        assert!(!is_valid_name("a/b"));
        assert!(!is_valid_name(""));
        assert!(is_git_url("https://github.com/acme/widget.git"));
        assert!(is_git_url("git@github.com:acme/widget.git"));
        assert!(is_git_url("ssh://git@github.com/acme/widget.git"));
        assert!(!is_git_url("http://github.com/acme/widget.git"));
        assert!(!is_git_url("github.com/acme"));
    }
}
