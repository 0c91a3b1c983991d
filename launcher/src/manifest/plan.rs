//! The resolved plan of one `bottle start <agent>`: agent + bottle (with its `extends` chain)
//! merged and cross-checked, ready for the runtime. It never holds a secret value.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bottle_proxy::policy::{Policy, PolicyFile};
use serde::Serialize;
use zeroize::Zeroizing;

use super::agent::{parse_agent, AgentDoc, AgentOrigin};
use super::bottle::{
    is_valid_name, route_id, GitRemote, ImageSpec, RuntimeMode, Template, WorkspaceMode,
};
use super::error::{Location, ManifestError};
use super::extends::{
    bottle_names, bottle_source, list_names, load_chain, merge, missing_bottle, MergedBottle,
};
use super::model::{agent_wiring, resolve_model, ModelPlan};
use super::secrets::{placeholder_value, SecretSource, KNOWN_PROVIDER_ENV};
use super::suggest::did_you_mean;

/// Default CPU limit.
pub const DEFAULT_CPUS: f64 = 2.0;
/// Default memory limit.
pub const DEFAULT_MEMORY: &str = "4g";
/// Default process limit.
pub const DEFAULT_PIDS: u64 = 512;
/// Where the workspace appears inside the agent container.
pub const WORKSPACE_PATH: &str = "/workspace";

/// The fully resolved plan for one agent in one bottle. Serialises to JSON for
/// `bottle info --json` / `bottle start --dry-run --json`; contains secret names and
/// sources only, never values.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The agent name asked for.
    pub agent: String,
    /// Where the agent came from.
    pub agent_origin: AgentOrigin,
    /// The bottle's name.
    pub bottle: String,
    /// The bottle's description (from the nearest file in the chain that has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Files that make up this plan, as shown in messages: the agent file (if any), then the
    /// bottle and its ancestors.
    pub sources: Vec<String>,
    /// The same files as paths (`<built-in …>` for built-ins).
    pub source_paths: Vec<PathBuf>,
    /// The bottle's ancestors, nearest first.
    pub extends: Vec<String>,
    /// The agent's system prompt (the Markdown body; empty for implicit agents).
    pub system_prompt: String,
    /// The agent image.
    pub image: ImageSpec,
    /// The workspace.
    pub workspace: WorkspacePlan,
    /// Whether the workspace's git metadata (`.git/config`, `.git/hooks`, …) is mounted
    /// read-only in the agent (bottle key `protect_git`, default true).
    pub protect_git: bool,
    /// The agent file used (`None` for implicit agents).
    pub agent_file: Option<PathBuf>,
    /// SHA-256 (hex) of the agent file's content as read for this plan (what `bottle trust`
    /// records for repository agents).
    pub agent_sha256: Option<String>,
    /// Resource limits (defaults filled in).
    pub resources: Resources,
    /// OCI runtime choice.
    pub runtime: RuntimeMode,
    /// The proxy policy, ready for `toml::to_string` (see [`Plan::policy_toml`]).
    pub policy: PolicyFile,
    /// Secrets the sidecar needs, by name, with their sources.
    pub secrets: Vec<SecretPlan>,
    /// Non-secret environment for the agent (bottle `[env]` plus the agent's `env`).
    pub env: BTreeMap<String, String>,
    /// Placeholder environment for the agent: variable → visibly fake value.
    pub placeholders: BTreeMap<String, String>,
    /// The command to run in the agent container (`None` = the image's default).
    pub command: Option<Vec<String>>,
    /// The agent's working directory (`None` = the workspace path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Mounts beyond the workspace (gemba agents only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<ExtraMount>,
    /// Git identity and remotes.
    pub git: GitPlan,
    /// Model sidecars, resolved (defaults filled in), in declaration order.
    pub models: Vec<ModelPlan>,
    /// What the agent is told about the first model ([`super::agent_wiring`]): variables the
    /// bottle's `[env]`, the agent's `env` and the secret placeholders do not already set
    /// (those win). `NO_PROXY` is extended with every model's name at start.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub model_env: BTreeMap<String, String>,
    /// Display label (agent front matter).
    pub label: Option<String>,
    /// Display colour (agent front matter).
    pub color: Option<String>,
    /// Container/network labels derived from the plan (`io.bottle.agent`, `io.bottle.bottle`).
    pub labels: BTreeMap<String, String>,
    /// Things the user should know (shadowed agents, unused secrets, built-ins used).
    pub notes: Vec<String>,
}

/// The workspace of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkspacePlan {
    /// bind / copy / none.
    pub mode: WorkspaceMode,
    /// The host directory (absolute when it exists), `None` for `none`.
    pub host_path: Option<PathBuf>,
    /// Where it appears in the container ([`WORKSPACE_PATH`]), `None` for `none`.
    pub container_path: Option<String>,
    /// Mounted read-only (gemba `mode = "ro"`); bottles mount it writable.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A mount beyond the workspace (from a gemba `[agent.container]` stanza).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExtraMount {
    /// A host directory or file.
    Bind {
        /// The host path (canonical).
        source: PathBuf,
        /// Where it appears in the agent container.
        target: String,
        /// Read-only.
        read_only: bool,
    },
    /// A tmpfs owned by the agent's user.
    Tmpfs {
        /// Where it appears in the agent container.
        target: String,
        /// Its size limit in bytes.
        size: u64,
    },
}

/// Resource limits of the agent container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resources {
    /// CPUs (fractional allowed).
    pub cpus: f64,
    /// Memory as written, e.g. `4g`.
    pub memory: String,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Maximum number of processes.
    pub pids: u64,
}

/// One secret the sidecar receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretPlan {
    /// The secret's name (what `auth.secret` refers to).
    pub name: String,
    /// Where the value comes from, serialised like `env:GH_TOKEN`.
    pub source: SecretSource,
    /// What uses it, e.g. ``route `github-api` ``.
    pub used_by: Vec<String>,
    /// Agent env vars that get a placeholder for it.
    pub placeholder_env: Vec<String>,
    /// The file that declared it.
    pub declared_in: String,
}

/// Git identity and remotes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GitPlan {
    /// `user.name` inside the bottle.
    pub author_name: Option<String>,
    /// `user.email` inside the bottle.
    pub author_email: Option<String>,
    /// Remotes for the git gate.
    pub remotes: Vec<GitRemote>,
}

/// An agent that can be started, for listings and completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentEntry {
    /// The name to pass to `bottle start`.
    pub name: String,
    /// Where it comes from.
    pub origin: AgentOrigin,
    /// The agent file, if any.
    pub path: Option<PathBuf>,
}

impl Plan {
    /// The policy as TOML text for the sidecar.
    pub fn policy_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(&self.policy)
    }

    /// Resolves every secret on the host (call once, at start). The first failure is returned;
    /// its message names the secret and source, never a value.
    pub fn resolve_secrets(&self) -> Result<BTreeMap<String, Zeroizing<String>>, ManifestError> {
        let mut out = BTreeMap::new();
        for s in &self.secrets {
            let value = if s.used_by.iter().all(|b| b.ends_with(SSH_KEY_USE)) {
                s.source.resolve_multiline(&s.name)?
            } else {
                s.source.resolve_named(&s.name)?
            };
            out.insert(s.name.clone(), value);
        }
        Ok(out)
    }

    /// A readable multi-line summary for `bottle info` and the start preflight.
    pub fn render_human(&self) -> String {
        super::render::render(self)
    }
}

/// Marks a secret use as an ssh private key (multi-line, never sent in a header).
const SSH_KEY_USE: &str = " (ssh key)";

/// What a bottle contributes to a plan, after every cross-check.
struct BottlePart {
    merged: MergedBottle,
    policy: PolicyFile,
    secrets: Vec<SecretPlan>,
    placeholders: BTreeMap<String, (String, Location)>,
    notes: Vec<String>,
}

/// Loads, merges and cross-checks bottle `name`. `from` is where it was referenced.
fn build_bottle(
    home: &Path,
    name: &str,
    from: Option<Location>,
) -> Result<BottlePart, ManifestError> {
    let chain = load_chain(home, name, from)?;
    let merged = merge(chain);
    let mut notes = Vec::new();

    // Secret references: route auth and git remotes.
    let mut used: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let unknown = |loc: Location, secret: &str, used_by: String| ManifestError::UnknownSecret {
        loc,
        name: secret.to_string(),
        used_by,
        bottle: merged.name.clone(),
        suggestion: did_you_mean(secret, merged.secrets.keys().map(String::as_str)),
    };
    for r in &merged.routes {
        if let Some(auth) = &r.value.auth {
            let by = format!("route `{}`", route_id(&r.value));
            if !merged.secrets.contains_key(&auth.secret) {
                return Err(unknown(
                    r.loc_of(&format!("\"{}\"", auth.secret)),
                    &auth.secret,
                    by,
                ));
            }
            used.entry(auth.secret.as_str()).or_default().push(by);
        }
    }
    for g in &merged.remotes {
        let uses = g
            .value
            .secret
            .iter()
            .map(|s| (s, ""))
            .chain(g.value.ssh_key.iter().map(|s| (s, SSH_KEY_USE)));
        for (secret, what) in uses {
            let by = format!("git remote `{}`{what}", g.value.name);
            if !merged.secrets.contains_key(secret) {
                return Err(unknown(g.loc_of(&format!("\"{secret}\"")), secret, by));
            }
            used.entry(secret.as_str()).or_default().push(by);
        }
    }

    // Model sidecars: their secrets must be declared; their egress routes use them.
    let mut model_used: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for md in &merged.models {
        let m = &md.value;
        for secret in &m.secrets {
            if !merged.secrets.contains_key(secret) {
                return Err(unknown(
                    md.loc_of(&format!("\"{secret}\"")),
                    secret,
                    format!("model `{}`", m.name),
                ));
            }
        }
        for r in &m.egress {
            if let Some(auth) = &r.auth {
                model_used
                    .entry(auth.secret.as_str())
                    .or_default()
                    .push(format!("model `{}` egress route `{}`", m.name, route_id(r)));
            }
        }
        for secret in m
            .secrets
            .iter()
            .filter(|s| !model_used.contains_key(s.as_str()))
        {
            notes.push(format!(
                "model `{}` lists secret `{secret}` ({}) but none of its egress routes uses it: it gets the placeholder only",
                m.name,
                md.loc()
            ));
        }
        let policy = PolicyFile {
            settings: merged.settings.clone(),
            routes: m.egress.clone(),
        };
        if let Err(e) = Policy::from_spec(policy, &format!("model {}", m.name)) {
            return Err(model_route_error(md, &e.key, &e.reason));
        }
    }

    // Secrets and placeholders.
    let mut secrets = Vec::new();
    let mut placeholders: BTreeMap<String, (String, Location)> = BTreeMap::new();
    for (sname, decl) in &merged.secrets {
        let agent_by = used.get(sname.as_str());
        let model_by = model_used.get(sname.as_str());
        if agent_by.is_none() && model_by.is_none() {
            notes.push(format!(
                "secret `{sname}` ({}) is declared but no route, git remote or model egress route uses it, so it is not resolved or delivered",
                decl.loc()
            ));
            continue;
        }
        let by: Vec<String> = agent_by
            .into_iter()
            .chain(model_by)
            .flatten()
            .cloned()
            .collect();
        // Only the agent's own uses give the agent a placeholder.
        let placeholder_env = match &decl.value.placeholder_env {
            _ if agent_by.is_none() => Vec::new(),
            Some(list) => list.clone(),
            None if KNOWN_PROVIDER_ENV.contains(&sname.as_str()) => vec![sname.clone()],
            None => Vec::new(),
        };
        for e in &placeholder_env {
            if let Some((other, _)) = placeholders.get(e) {
                return Err(ManifestError::Invalid {
                    loc: decl.loc(),
                    key: "placeholder_env".into(),
                    message: format!("`{e}` is already the placeholder of secret `{other}`; an agent variable can stand for one secret only"),
                    suggestion: None,
                });
            }
            if let Some(v) = merged.env.get(e) {
                return Err(ManifestError::Invalid {
                    loc: v.loc(),
                    key: e.clone(),
                    message: format!("`{e}` is the placeholder variable of secret `{sname}`; remove it from [env] (the agent gets `{}`)", placeholder_value(e)),
                    suggestion: None,
                });
            }
            placeholders.insert(e.clone(), (sname.clone(), decl.loc()));
        }
        secrets.push(SecretPlan {
            name: sname.clone(),
            source: decl.value.source.clone(),
            used_by: by,
            placeholder_env,
            declared_in: decl.src.display.clone(),
        });
    }

    // The policy, validated by the proxy itself.
    let policy = PolicyFile {
        settings: merged.settings.clone(),
        routes: merged.routes.iter().map(|r| r.value.clone()).collect(),
    };
    if let Err(e) = Policy::from_spec(policy.clone(), &format!("bottle {}", merged.name)) {
        return Err(policy_error(&merged, &e.key, &e.reason));
    }
    Ok(BottlePart {
        merged,
        policy,
        secrets,
        placeholders,
        notes,
    })
}

/// Maps a proxy [`bottle_proxy::policy::PolicyError`] key (`route[2].matches[0].path`) back to
/// the bottle file and line that declared it.
fn policy_error(merged: &MergedBottle, key: &str, reason: &str) -> ManifestError {
    let last_key = key
        .rsplit('.')
        .next()
        .map(|s| s.split('[').next().unwrap_or(s).trim_matches('"'))
        .unwrap_or("");
    if let Some(rest) = key.strip_prefix("route[") {
        let idx: Option<usize> = rest.split(']').next().and_then(|n| n.parse().ok());
        if let Some(r) = idx.and_then(|i| merged.routes.get(i)) {
            let sub = rest.split_once("].").map(|(_, s)| s).unwrap_or("");
            let loc = if last_key.is_empty() || sub.is_empty() {
                r.loc()
            } else {
                r.loc_of(last_key)
            };
            let message = if sub.is_empty() {
                reason.to_string()
            } else {
                format!("{sub}: {reason}")
            };
            return ManifestError::Route {
                loc,
                route: route_id(&r.value),
                message,
            };
        }
    }
    // Settings (or the policy as a whole): point at the first file in the chain with [proxy].
    let src = merged
        .chain
        .iter()
        .find(|(_, s)| s.text.contains("[proxy]"))
        .map(|(_, s)| s)
        .unwrap_or(&merged.chain[0].1);
    let line = src.text.find("[proxy]").map(|o| src.line_of(o));
    let loc = Location {
        path: src.path.clone(),
        display: src.display.clone(),
        line,
    };
    let key = key.strip_prefix("settings.").unwrap_or(key).to_string();
    ManifestError::Invalid {
        loc,
        key: if key.is_empty() {
            "proxy".into()
        } else {
            format!("proxy.{key}")
        },
        message: reason.to_string(),
        suggestion: None,
    }
}

/// Maps a proxy error about a model's egress route (`route[1].host`) to the model stanza.
fn model_route_error(
    md: &super::bottle::Located<super::bottle::ModelSpec>,
    key: &str,
    reason: &str,
) -> ManifestError {
    let idx: Option<usize> = key
        .strip_prefix("route[")
        .and_then(|r| r.split(']').next())
        .and_then(|n| n.parse().ok());
    match idx.and_then(|i| md.value.egress.get(i)) {
        Some(r) => ManifestError::Route {
            loc: md.loc_of(&r.host),
            route: format!("{} (egress of model `{}`)", route_id(r), md.value.name),
            message: reason.to_string(),
        },
        None => ManifestError::Invalid {
            loc: md.loc_of("egress"),
            key: "egress".into(),
            message: format!("{key}: {reason}"),
            suggestion: None,
        },
    }
}

/// The agent template an image stands for (`None`: not one of bottle's templates).
pub(crate) fn template_of(image: &ImageSpec) -> Option<Template> {
    match image {
        ImageSpec::Template { template } => Some(*template),
        _ => None,
    }
}

/// What the agent is told about the plan's first model (see [`Plan::model_env`]).
pub(crate) fn model_env_of(
    image: &ImageSpec,
    models: &[ModelPlan],
    env: &BTreeMap<String, String>,
    placeholders: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    match models.first() {
        Some(m) => agent_wiring(template_of(image), m, |k| {
            env.contains_key(k) || placeholders.contains_key(k)
        }),
        None => BTreeMap::new(),
    }
}

/// Finds the agent file for `name`: home first, then the repository.
fn find_agent(
    home: &Path,
    repo: &Path,
    name: &str,
    notes: &mut Vec<String>,
) -> Result<Option<AgentDoc>, ManifestError> {
    let home_path = home.join("agents").join(format!("{name}.md"));
    let repo_path = repo
        .join(".bottle")
        .join("agents")
        .join(format!("{name}.md"));
    if home_path.is_file() {
        if repo_path.is_file() {
            notes.push(format!(
                "the repository's .bottle/agents/{name}.md is ignored: agents/{name}.md in $BOTTLE_HOME takes precedence"
            ));
        }
        return load_agent_file(&home_path, name, AgentOrigin::Home).map(Some);
    }
    if repo_path.is_file() {
        return load_agent_file(&repo_path, name, AgentOrigin::Repo).map(Some);
    }
    Ok(None)
}

fn load_agent_file(
    path: &Path,
    name: &str,
    origin: AgentOrigin,
) -> Result<AgentDoc, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let display = match origin {
        AgentOrigin::Repo => format!(".bottle/agents/{name}.md"),
        _ => format!("agents/{name}.md"),
    };
    let mut doc = parse_agent(origin, path.to_path_buf(), display, &text)?;
    doc.sha256 = crate::trust::sha256_hex(text.as_bytes());
    Ok(doc)
}

/// Resolves `bottle start <agent>` into a [`Plan`].
///
/// `home` is the config home ([`super::bottle_home`]), `repo` the working directory (its
/// `.bottle/agents/` is searched, and it is the workspace). Lookup order for `agent`:
/// `$BOTTLE_HOME/agents/<agent>.md`, then `<repo>/.bottle/agents/<agent>.md`, then a bottle
/// named `<agent>` used directly (a file or the built-in `shell`).
pub fn resolve_plan(home: &Path, repo: &Path, agent: &str) -> Result<Plan, ManifestError> {
    if !is_valid_name(agent) {
        return Err(ManifestError::NotFound {
            what: "agent",
            name: agent.to_string(),
            searched: "nowhere".into(),
            suggestion: None,
            note: Some("agent names are letters, digits, `.`, `_` and `-` (at most 64), starting with a letter or digit".into()),
        });
    }
    let mut notes = Vec::new();
    match find_agent(home, repo, agent, &mut notes)? {
        Some(doc) => plan_for(home, repo, Some(doc), agent, notes),
        None => {
            if bottle_source(home, agent)?.is_some() {
                return plan_for(home, repo, None, agent, notes);
            }
            let mut names: Vec<String> = list_agents(home, repo)
                .into_iter()
                .map(|a| a.name)
                .collect();
            names.extend(bottle_names(home));
            names.sort();
            names.dedup();
            Err(ManifestError::NotFound {
                what: "agent",
                name: agent.to_string(),
                searched: format!(
                    "{}, {} and {}",
                    home.join("agents").join(format!("{agent}.md")).display(),
                    repo.join(".bottle/agents")
                        .join(format!("{agent}.md"))
                        .display(),
                    home.join("bottles").join(format!("{agent}.toml")).display()
                ),
                suggestion: did_you_mean(agent, names.iter().map(String::as_str)),
                note: Some(format!(
                    "available: {}; `bottle start shell` always works",
                    names.join(", ")
                )),
            })
        }
    }
}

/// The plan of bottle `bottle` used directly (no agent file is looked up): for gemba's
/// `network = "bridge:<bottle>"`.
pub(crate) fn resolve_bottle_plan(
    home: &Path,
    repo: &Path,
    bottle: &str,
    from: Location,
) -> Result<Plan, ManifestError> {
    if bottle_source(home, bottle)?.is_none() {
        return Err(missing_bottle(home, bottle, Some(from), "bottle"));
    }
    plan_for(home, repo, None, bottle, Vec::new())
}

/// Builds the plan for an agent document (or an implicit agent named after a bottle).
fn plan_for(
    home: &Path,
    repo: &Path,
    doc: Option<AgentDoc>,
    agent: &str,
    mut notes: Vec<String>,
) -> Result<Plan, ManifestError> {
    let (bottle_name, from) = match &doc {
        Some(d) => match &d.bottle {
            Some((b, _)) => (b.clone(), Some(d.bottle_loc())),
            None => (agent.to_string(), Some(d.src.loc(None))),
        },
        None => (agent.to_string(), None),
    };
    if let Some(d) = &doc {
        if !is_valid_name(&bottle_name) {
            return Err(ManifestError::Invalid {
                loc: d.bottle_loc(),
                key: "bottle".into(),
                message: format!(
                    "`{bottle_name}` is not a bottle name (letters, digits, `.`, `_`, `-`)"
                ),
                suggestion: None,
            });
        }
        if bottle_source(home, &bottle_name)?.is_none() {
            let mut err = missing_bottle(home, &bottle_name, from.clone(), "bottle");
            if d.bottle.is_none() {
                if let ManifestError::Extends { message, .. } = &mut err {
                    message.push_str("; the agent has no `bottle = \"…\"` key, so its own name was used — add one");
                }
            }
            return Err(err);
        }
    }
    let part = build_bottle(home, &bottle_name, from)?;
    notes.extend(part.notes);
    let m = part.merged;

    if m.chain
        .iter()
        .any(|(_, s)| s.path.to_string_lossy().starts_with("<built-in"))
    {
        notes.push(
            "using the built-in `shell` bottle (no egress); create $BOTTLE_HOME/bottles/shell.toml to change it (see docs/manifests.md)"
                .to_string(),
        );
    }

    // Environment: bottle first; an agent may add variables but not change the bottle's.
    let mut env: BTreeMap<String, String> = m
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    if let Some(d) = &doc {
        for (k, v, span) in &d.env {
            let loc = d.src.loc(Some(span));
            if m.env.contains_key(k) {
                return Err(ManifestError::Invalid {
                    loc,
                    key: k.clone(),
                    message: format!("bottle `{}` already sets `{k}` ({}); an agent may add variables but not change the bottle's", m.name, m.env[k].loc()),
                    suggestion: None,
                });
            }
            if let Some((secret, _)) = part.placeholders.get(k) {
                return Err(ManifestError::Invalid {
                    loc,
                    key: k.clone(),
                    message: format!("`{k}` is the placeholder variable of secret `{secret}`; remove it from the agent's env"),
                    suggestion: None,
                });
            }
            env.insert(k.clone(), v.clone());
        }
    }

    let placeholders = part
        .placeholders
        .keys()
        .map(|k| (k.clone(), placeholder_value(k)))
        .collect();

    let mode = m.workspace.unwrap_or_default();
    let host = std::fs::canonicalize(repo).unwrap_or_else(|_| repo.to_path_buf());
    let workspace = match mode {
        WorkspaceMode::None => WorkspacePlan {
            mode,
            host_path: None,
            container_path: None,
            read_only: false,
        },
        _ => WorkspacePlan {
            mode,
            host_path: Some(host),
            container_path: Some(WORKSPACE_PATH.to_string()),
            read_only: false,
        },
    };
    let (memory_bytes, memory) = m
        .memory
        .clone()
        .unwrap_or((4 << 30, DEFAULT_MEMORY.to_string()));
    let resources = Resources {
        cpus: m.cpus.unwrap_or(DEFAULT_CPUS),
        memory,
        memory_bytes,
        pids: m.pids.unwrap_or(DEFAULT_PIDS),
    };

    let mut sources = Vec::new();
    let mut source_paths = Vec::new();
    if let Some(d) = &doc {
        sources.push(d.src.display.clone());
        source_paths.push(d.src.path.clone());
    }
    for (_, s) in &m.chain {
        sources.push(s.display.clone());
        source_paths.push(s.path.clone());
    }

    let git = GitPlan {
        author_name: doc
            .as_ref()
            .and_then(|d| d.author_name.clone())
            .or(m.author_name.clone()),
        author_email: doc
            .as_ref()
            .and_then(|d| d.author_email.clone())
            .or(m.author_email.clone()),
        remotes: m.remotes.iter().map(|r| r.value.clone()).collect(),
    };
    let image = m.image.clone().unwrap_or(ImageSpec::Template {
        template: Template::Shell,
    });
    let models: Vec<ModelPlan> = m
        .models
        .iter()
        .map(|x| resolve_model(&x.value, &x.src.display))
        .collect();
    let model_env = model_env_of(&image, &models, &env, &placeholders);
    let mut labels = BTreeMap::new();
    labels.insert("io.bottle.agent".to_string(), agent.to_string());
    labels.insert("io.bottle.bottle".to_string(), m.name.clone());

    Ok(Plan {
        agent: agent.to_string(),
        agent_origin: doc
            .as_ref()
            .map(|d| d.origin)
            .unwrap_or(AgentOrigin::Implicit),
        bottle: m.name.clone(),
        description: doc
            .as_ref()
            .and_then(|d| d.description.clone())
            .or(m.description.clone()),
        sources,
        source_paths,
        extends: m.chain.iter().skip(1).map(|(n, _)| n.clone()).collect(),
        system_prompt: doc.as_ref().map(|d| d.prompt.clone()).unwrap_or_default(),
        image,
        workspace,
        protect_git: m.protect_git.unwrap_or(true),
        agent_file: doc.as_ref().map(|d| d.src.path.clone()),
        agent_sha256: doc
            .as_ref()
            .map(|d| d.sha256.clone())
            .filter(|h| !h.is_empty()),
        resources,
        runtime: m.runtime.unwrap_or_default(),
        policy: part.policy,
        secrets: part.secrets,
        env,
        placeholders,
        command: doc.as_ref().and_then(|d| d.command.clone()),
        workdir: None,
        mounts: Vec::new(),
        git,
        models,
        model_env,
        label: doc.as_ref().and_then(|d| d.label.clone()),
        color: doc.as_ref().and_then(|d| d.color.clone()),
        labels,
        notes,
    })
}

/// Every agent that can be started: agent files (home, then repository ones not shadowed)
/// and bottles usable directly (files and built-ins), sorted by name within each group.
pub fn list_agents(home: &Path, repo: &Path) -> Vec<AgentEntry> {
    let mut out: Vec<AgentEntry> = Vec::new();
    let mut push = |name: String, origin, path: Option<PathBuf>| {
        if !out.iter().any(|a| a.name == name) {
            out.push(AgentEntry { name, origin, path });
        }
    };
    for (n, p) in list_names(&home.join("agents"), "md").unwrap_or_default() {
        push(n, AgentOrigin::Home, Some(p));
    }
    for (n, p) in list_names(&repo.join(".bottle").join("agents"), "md").unwrap_or_default() {
        push(n, AgentOrigin::Repo, Some(p));
    }
    for n in bottle_names(home) {
        push(n, AgentOrigin::Implicit, None);
    }
    out
}

/// Validates every bottle in `$BOTTLE_HOME/bottles` and every agent in `$BOTTLE_HOME/agents`
/// and `<repo>/.bottle/agents` (each agent is resolved against its bottle, as `start` would).
/// Returns one entry per file, in that order; unreadable directories are reported as entries.
pub fn check_all(home: &Path, repo: &Path) -> Vec<(PathBuf, Result<(), ManifestError>)> {
    let mut out = Vec::new();
    let bottles_dir = home.join("bottles");
    match list_names(&bottles_dir, "toml") {
        Ok(list) => {
            for (name, path) in list {
                let res = if is_valid_name(&name) {
                    build_bottle(home, &name, None).map(|_| ())
                } else {
                    Err(bad_file_name(&path, &name))
                };
                out.push((path, res));
            }
        }
        Err(e) => out.push((bottles_dir, Err(e))),
    }
    for (dir, origin) in [
        (home.join("agents"), AgentOrigin::Home),
        (repo.join(".bottle").join("agents"), AgentOrigin::Repo),
    ] {
        match list_names(&dir, "md") {
            Ok(list) => {
                for (name, path) in list {
                    let res = if is_valid_name(&name) {
                        load_agent_file(&path, &name, origin)
                            .and_then(|doc| plan_for(home, repo, Some(doc), &name, Vec::new()))
                            .map(|_| ())
                    } else {
                        Err(bad_file_name(&path, &name))
                    };
                    out.push((path, res));
                }
            }
            Err(e) => out.push((dir, Err(e))),
        }
    }
    out
}

fn bad_file_name(path: &Path, name: &str) -> ManifestError {
    ManifestError::Invalid {
        loc: Location { path: path.to_path_buf(), display: path.display().to_string(), line: None },
        key: "file name".into(),
        message: format!("`{name}` is not a usable name (letters, digits, `.`, `_`, `-`, at most 64); rename the file"),
        suggestion: None,
    }
}
