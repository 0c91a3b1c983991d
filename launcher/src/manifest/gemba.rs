//! gemba compatibility: an `[[agent]]` of gemba's `agents.toml` (with its `[agent.container]`
//! stanza) turned into a bottle [`Plan`] for `bottle spawn --gemba <file> <agent>`.
//!
//! The mapping (docs/gemba.md):
//! - `network = "none"` → the built-in `shell` bottle (no routes); `network = "bridge:<name>"` →
//!   the user's bottle `<name>` (its routes are the allowlist, its secrets the credentials);
//!   `network = "host"` is refused, with or without `unsafe = true` (bottle never shares the
//!   host's network: the proxy would be bypassed).
//! - `image` (required), `cwd` (default `/work`), `cpus`, `memory`, `pids_limit` (0 → 512)
//!   override the bottle's; `binary` + `args` (+ `--model` for claude/codex) are the command.
//! - `mounts`: a bind whose `src` is `{{workspace}}` is the workspace (mounted at its `dst`);
//!   other binds and tmpfs mounts are added; `{{workspace}}`, `{{session_id}}` and
//!   `{{agent_name}}` are expanded; destinations must be unique.
//! - `secrets` must each name a secret of the bottle: its value goes to the sidecar only (the
//!   proxy injects it); the agent sees a placeholder — never `/run/secrets`.
//! - `privileged`/`cap_add` and `read_only_rootfs = false` are refused (without `unsafe = true`
//!   with gemba's own message; with it, because bottle never weakens the agent container).
//! - An `agents.toml` inside the workspace must be trusted (`bottle trust <file>`) like a
//!   repository agent: the agent could otherwise rewrite what its next spawn mounts.
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::agent::AgentOrigin;
use super::bottle::{is_valid_name, parse_memory, WorkspaceMode};
use super::error::ManifestError;
use super::plan::{resolve_bottle_plan, ExtraMount, Plan, DEFAULT_PIDS};
use super::source::SourceFile;
use super::suggest::did_you_mean;

/// Where gemba puts the workspace by default.
pub const GEMBA_DEFAULT_CWD: &str = "/work";

/// How the session's prompt (the preamble) reaches the agent (gemba's `preamble`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Preamble {
    /// Typed into the agent's terminal (as `send-keys TEXT --enter`) once it is ready.
    #[default]
    FirstMessage,
    /// Written to `CLAUDE.md` in the workspace before the agent starts (appended to an
    /// existing one), restored or removed when the bottle ends.
    ClaudeMd,
    /// Appended to the command as `exec <args…> <prompt>` (Codex's non-interactive mode).
    CodexExec,
    /// Printed on the agent's terminal (so `capture` shows it) before the agent starts.
    StdoutBanner,
}

/// A gemba agent ready to spawn.
#[derive(Debug, Clone)]
pub struct GembaAgent {
    /// The bottle plan (agent name = the gemba agent's name).
    pub plan: Plan,
    /// The preamble strategy.
    pub preamble: Preamble,
    /// Labels stamped on every container (`gemba.agent`).
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    agent: Vec<Spanned<RawAgent>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // gemba's own scheduling keys are accepted and not used by bottle.
struct RawAgent {
    name: String,
    binary: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    model: Option<String>,
    preamble: Option<Preamble>,
    hooks: Option<String>,
    interaction_mode: Option<String>,
    intra_parallel: Option<bool>,
    max_parallel: Option<u32>,
    container: Option<RawContainer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawContainer {
    image: Option<String>,
    cwd: Option<String>,
    cpus: Option<f64>,
    memory: Option<String>,
    pids_limit: Option<i64>,
    #[serde(default)]
    mounts: Vec<RawMount>,
    #[serde(default)]
    secrets: Vec<String>,
    network: Option<String>,
    read_only_rootfs: Option<bool>,
    #[serde(rename = "unsafe", default)]
    unsafe_: bool,
    surface_mode: Option<String>,
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    cap_add: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    src: Option<String>,
    dst: String,
    mode: MountMode,
    size: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum MountMode {
    Rw,
    Ro,
    Tmpfs,
}

/// Paths in the agent container that bottle itself mounts; a gemba mount may not cover them.
const RESERVED_DESTINATIONS: &[&str] = &[
    "/",
    "/etc",
    "/etc/passwd",
    "/etc/group",
    "/etc/resolv.conf",
    "/etc/gitconfig",
    "/etc/ssl",
    "/etc/bottle",
    "/tmp",
    "/home",
    "/home/agent",
    "/proc",
    "/sys",
    "/dev",
];

/// Loads `file`, picks agent `name` and maps it onto a plan. `home` is the config home, `repo`
/// the workspace, `session_id` the id the bottle will have (for `{{session_id}}`).
pub fn load_gemba(
    home: &Path,
    repo: &Path,
    file: &Path,
    name: &str,
    session_id: &str,
) -> Result<GembaAgent, ManifestError> {
    let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let path = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let src = Arc::new(SourceFile {
        path: path.clone(),
        display: file.display().to_string(),
        text,
        line_base: 1,
    });
    let raw: RawFile = src.parse("agents.toml")?;
    let names: Vec<&str> = raw
        .agent
        .iter()
        .map(|a| a.get_ref().name.as_str())
        .collect();
    let mut seen = BTreeSet::new();
    for a in &raw.agent {
        if !seen.insert(a.get_ref().name.as_str()) {
            return Err(invalid(
                &src,
                a.span(),
                "name",
                "name",
                format!("agent `{}` is defined twice", a.get_ref().name),
            ));
        }
    }
    let Some(agent) = raw.agent.iter().find(|a| a.get_ref().name == name) else {
        return Err(ManifestError::NotFound {
            what: "gemba agent",
            name: name.to_string(),
            searched: src.display.clone(),
            suggestion: did_you_mean(name, names.iter().copied()),
            note: Some(if names.is_empty() {
                "the file has no [[agent]] tables".into()
            } else {
                format!("agents in it: {}", names.join(", "))
            }),
        });
    };
    let span = agent.span();
    let a = agent.get_ref();
    let bad = |needle: &str, key: &str, message: String| {
        invalid(&src, span.clone(), needle, key, message)
    };
    if !is_valid_name(&a.name) {
        return Err(bad(
            "name",
            "name",
            "agent names are letters, digits, `.`, `_` and `-` (at most 64)".into(),
        ));
    }
    let Some(c) = &a.container else {
        return Err(bad(
            "name",
            "container",
            format!("agent `{}` has no [agent.container] stanza; bottle runs agents only in containers: add one with at least `image = \"…\"`", a.name),
        ));
    };
    let image = match c.image.as_deref().map(str::trim) {
        Some(i) if !i.is_empty() => i.to_string(),
        _ => {
            return Err(bad(
                "[agent.container]",
                "container.image",
                "an image is required (e.g. image = \"bottle/agent-claude:local\")".into(),
            ))
        }
    };
    let binary = match a.binary.as_deref().map(str::trim) {
        Some(b) if !b.is_empty() => b.to_string(),
        _ => {
            return Err(bad(
                "name",
                "binary",
                "`binary` is required (the agent's program, e.g. \"claude\")".into(),
            ))
        }
    };
    check_privileges(c, &bad)?;
    let bottle = match c.network.as_deref().unwrap_or("none") {
        "none" => "shell".to_string(),
        "host" if !c.unsafe_ => {
            return Err(bad("network", "container.network", "`host` requires unsafe = true (and bottle refuses it even then: an agent on the host network bypasses the proxy; use `bridge:<bottle>`)".into()))
        }
        "host" => {
            return Err(bad("network", "container.network", "bottle never runs an agent on the host network, unsafe or not (the proxy would be bypassed); use `bridge:<bottle>` with a bottle whose routes allow what the agent needs".into()))
        }
        n => match n.strip_prefix("bridge:") {
            Some(b) if is_valid_name(b) => b.to_string(),
            _ => {
                return Err(bad("network", "container.network", format!("`{n}` is not one of `none`, `bridge:<bottle>`, `host`")))
            }
        },
    };

    let mut plan =
        resolve_bottle_plan(home, repo, &bottle, src.loc_within(Some(&span), "network"))?;
    if bottle == "shell" {
        // `none` means no egress even if the user's own `shell` bottle has routes.
        plan.policy.routes.clear();
        plan.secrets.clear();
        plan.placeholders.clear();
        plan.git.remotes.clear();
        plan.models.clear();
    }
    plan.agent = a.name.clone();
    plan.agent_origin = if inside(&path, repo) {
        AgentOrigin::Repo
    } else {
        AgentOrigin::Gemba
    };
    plan.agent_file = Some(path.clone());
    plan.agent_sha256 = Some(crate::trust::sha256_hex(src.text.as_bytes()));
    plan.sources.insert(0, src.display.clone());
    plan.source_paths.insert(0, path.clone());
    plan.image = match super::bottle::Template::ALL.iter().find(|(n, _)| *n == image) {
        // A bottle template name: built offline like a bottle's `image = "claude"`.
        Some((_, t)) => super::bottle::ImageSpec::Template { template: *t },
        None => match super::bottle::image_reference_problem(&image) {
            None => super::bottle::ImageSpec::Tag { tag: image },
            Some(why) => {
                return Err(bad(
                    "image",
                    "container.image",
                    format!("`{image}` is not a valid image reference: {why} (or use a bottle template: shell, claude, codex)"),
                ))
            }
        },
    };
    plan.labels.insert("io.bottle.agent".into(), a.name.clone());
    // The agent is told about the bottle's model according to its own image.
    plan.model_env =
        super::plan::model_env_of(&plan.image, &plan.models, &plan.env, &plan.placeholders);

    // Resources.
    if let Some(cpus) = c.cpus {
        if !(cpus >= 0.0 && cpus.is_finite()) {
            return Err(bad("cpus", "container.cpus", "must be a number ≥ 0".into()));
        }
        if cpus > 0.0 {
            plan.resources.cpus = cpus;
        }
    }
    if let Some(m) = &c.memory {
        let bytes = parse_memory(m).map_err(|e| bad("memory", "container.memory", e))?;
        plan.resources.memory = m.clone();
        plan.resources.memory_bytes = bytes;
    }
    match c.pids_limit {
        Some(p) if p < 0 => {
            return Err(bad(
                "pids_limit",
                "container.pids_limit",
                "must be ≥ 0 (0 means 512)".into(),
            ))
        }
        Some(0) => plan.resources.pids = DEFAULT_PIDS,
        Some(p) => plan.resources.pids = p as u64,
        None => {}
    }

    // Working directory and mounts.
    let cwd = c
        .cwd
        .clone()
        .unwrap_or_else(|| GEMBA_DEFAULT_CWD.to_string());
    if !cwd.starts_with('/') {
        return Err(bad(
            "cwd",
            "container.cwd",
            format!("`{cwd}` must be an absolute path"),
        ));
    }
    plan.workdir = Some(cwd.clone());
    let vars = BTreeMap::from([
        ("workspace", repo.display().to_string()),
        ("session_id", session_id.to_string()),
        ("agent_name", a.name.clone()),
    ]);
    let workspace = std::fs::canonicalize(repo).unwrap_or_else(|_| repo.to_path_buf());
    let mut dsts = BTreeSet::new();
    let mut ws_target = None;
    let mut mounts = Vec::new();
    for m in &c.mounts {
        let dst = expand(&m.dst, &vars).map_err(|e| bad("dst", "container.mounts.dst", e))?;
        let dst = dst.trim_end_matches('/').to_string();
        if !dst.starts_with('/') || dst.split('/').any(|p| p == "..") {
            return Err(bad(
                "dst",
                "container.mounts.dst",
                format!("`{dst}` must be an absolute path without `..`"),
            ));
        }
        if !dsts.insert(dst.clone()) {
            return Err(bad(
                &dst,
                "container.mounts.dst",
                format!("two mounts have the destination `{dst}`"),
            ));
        }
        if RESERVED_DESTINATIONS.contains(&dst.as_str())
            || dst.starts_with("/proc/")
            || dst.starts_with("/sys/")
            || dst.starts_with("/dev/")
        {
            return Err(bad(
                &dst,
                "container.mounts.dst",
                format!(
                    "`{dst}` is a path bottle manages in the agent container; mount somewhere else"
                ),
            ));
        }
        match m.mode {
            MountMode::Tmpfs => {
                if m.src.is_some() {
                    return Err(bad(
                        &dst,
                        "container.mounts.src",
                        format!("the tmpfs mount at `{dst}` takes no `src`"),
                    ));
                }
                let size = match &m.size {
                    Some(s) => {
                        parse_memory(s).map_err(|e| bad(&dst, "container.mounts.size", e))?
                    }
                    None => 64 << 20,
                };
                mounts.push(ExtraMount::Tmpfs { target: dst, size });
            }
            MountMode::Rw | MountMode::Ro => {
                let Some(s) = &m.src else {
                    return Err(bad(
                        &dst,
                        "container.mounts.src",
                        format!(
                            "the {} bind mount at `{dst}` needs a `src`",
                            if m.mode == MountMode::Ro { "ro" } else { "rw" }
                        ),
                    ));
                };
                let read_only = m.mode == MountMode::Ro;
                if s.trim() == "{{workspace}}" {
                    if ws_target.is_some() {
                        return Err(bad(
                            "{{workspace}}",
                            "container.mounts.src",
                            "the workspace is mounted twice".into(),
                        ));
                    }
                    ws_target = Some((dst, read_only));
                    continue;
                }
                let src_path =
                    PathBuf::from(expand(s, &vars).map_err(|e| bad(s, "container.mounts.src", e))?);
                let meta = std::fs::metadata(&src_path).map_err(|e| {
                    bad(
                        s,
                        "container.mounts.src",
                        format!("{}: {e}; create it or remove the mount", src_path.display()),
                    )
                })?;
                {
                    use std::os::unix::fs::FileTypeExt as _;
                    if meta.file_type().is_socket() {
                        return Err(bad(s, "container.mounts.src", format!("{} is a socket; bottle does not hand sockets (e.g. the Docker engine's) to an agent", src_path.display())));
                    }
                }
                let canon = std::fs::canonicalize(&src_path).unwrap_or(src_path.clone());
                if let Err(e) = crate::guard::check_workspace_location(
                    &canon,
                    &crate::launch::protected_dirs(home),
                ) {
                    return Err(bad(
                        s,
                        "container.mounts.src",
                        e.to_string()
                            .replacen("the workspace", "the mount source", 1),
                    ));
                }
                if canon == Path::new("/")
                    || canon.starts_with("/proc")
                    || canon.starts_with("/sys")
                    || canon.starts_with("/dev")
                    || canon.starts_with("/var/run")
                    || canon.starts_with("/run")
                {
                    return Err(bad(
                        s,
                        "container.mounts.src",
                        format!(
                            "{} is a system path; bottle does not mount it into an agent",
                            canon.display()
                        ),
                    ));
                }
                if canon.starts_with(&workspace) || workspace.starts_with(&canon) {
                    return Err(bad(s, "container.mounts.src", format!("{} overlaps the workspace; mount the workspace once, with src = \"{{{{workspace}}}}\"", canon.display())));
                }
                mounts.push(ExtraMount::Bind {
                    source: canon,
                    target: dst,
                    read_only,
                });
            }
        }
    }
    match ws_target {
        Some((target, read_only)) => {
            if plan.workspace.mode == WorkspaceMode::None {
                plan.workspace.mode = WorkspaceMode::Bind;
                plan.workspace.host_path = Some(workspace.clone());
            }
            plan.workspace.container_path = Some(target);
            plan.workspace.read_only = read_only;
        }
        None => {
            // No workspace: an empty scratch directory at `cwd`.
            plan.workspace.mode = WorkspaceMode::None;
            plan.workspace.host_path = None;
            plan.workspace.container_path = Some(cwd.clone());
        }
    }
    let under = |t: &str| cwd == t || cwd.starts_with(&format!("{}/", t.trim_end_matches('/')));
    let ws = plan.workspace.container_path.as_deref().unwrap_or("");
    if !under(ws)
        && !mounts.iter().any(|m| match m {
            ExtraMount::Bind { target, .. } | ExtraMount::Tmpfs { target, .. } => under(target),
        })
    {
        return Err(bad(
            "cwd",
            "container.cwd",
            format!("`{cwd}` is not inside the workspace mount ({ws}) or another mount; the agent's root filesystem is read-only, so it could not be created"),
        ));
    }
    plan.mounts = mounts;

    // Secrets: by name, from the bottle; they reach the sidecar only.
    for s in &c.secrets {
        if !plan.secrets.iter().any(|p| p.name.eq_ignore_ascii_case(s)) {
            let declared: Vec<&str> = plan.secrets.iter().map(|p| p.name.as_str()).collect();
            return Err(bad(
                s,
                "container.secrets",
                format!(
                    "unknown secret `{s}`: bottle `{bottle}` declares {}; gemba secrets are the bottle's secrets (injected by its proxy, never mounted into the agent)",
                    if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
                ),
            ));
        }
    }

    // Command.
    let mut cmd = vec![binary.clone()];
    let base = Path::new(&binary)
        .file_name()
        .and_then(|b| b.to_str())
        .unwrap_or("");
    if let Some(m) = &a.model {
        if matches!(base, "claude" | "codex")
            && !a
                .args
                .iter()
                .any(|x| x == "--model" || x.starts_with("--model="))
        {
            cmd.push("--model".into());
            cmd.push(m.clone());
        } else if !matches!(base, "claude" | "codex") {
            plan.notes.push(format!("gemba agent `{}`: `model` is passed only to claude and codex; add it to `args` for `{base}`", a.name));
        }
    }
    cmd.extend(a.args.iter().cloned());
    plan.command = Some(cmd);
    plan.label = plan.label.take().or(Some(a.name.clone()));
    plan.notes.push(format!(
        "gemba agent `{}` from {} in bottle `{bottle}`",
        a.name, src.display
    ));
    Ok(GembaAgent {
        plan,
        preamble: a.preamble.unwrap_or_default(),
        tags: vec![("gemba.agent".into(), a.name.clone())],
    })
}

/// Refuses what would weaken the agent container.
fn check_privileges(
    c: &RawContainer,
    bad: &dyn Fn(&str, &str, String) -> ManifestError,
) -> Result<(), ManifestError> {
    let why = if c.unsafe_ {
        "bottle never weakens the agent container, even with unsafe = true"
    } else {
        "this needs unsafe = true in gemba, and bottle refuses it even then"
    };
    if c.privileged {
        return Err(bad(
            "privileged",
            "container.privileged",
            format!("privileged containers are refused: {why}"),
        ));
    }
    if !c.cap_add.is_empty() {
        return Err(bad(
            "cap_add",
            "container.cap_add",
            format!(
                "added capabilities ({}) are refused: {why}",
                c.cap_add.join(", ")
            ),
        ));
    }
    if c.read_only_rootfs == Some(false) {
        return Err(bad("read_only_rootfs", "container.read_only_rootfs", "bottle always mounts the agent's root filesystem read-only (writable: /tmp, $HOME and the mounts); remove `read_only_rootfs = false`".into()));
    }
    Ok(())
}

/// Expands `{{workspace}}`, `{{session_id}}` and `{{agent_name}}`; anything else in `{{…}}` is
/// an error.
fn expand(text: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            return Err(format!("`{text}`: unclosed `{{{{`"));
        };
        let key = after[..j].trim();
        match vars.get(key) {
            Some(v) => out.push_str(v),
            None => {
                return Err(format!(
                    "`{{{{{key}}}}}` is not a template; use {{{{workspace}}}}, {{{{session_id}}}} or {{{{agent_name}}}}"
                ))
            }
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn inside(path: &Path, dir: &Path) -> bool {
    let d = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    path.starts_with(d)
}

fn invalid(
    src: &SourceFile,
    span: Range<usize>,
    needle: &str,
    key: &str,
    message: String,
) -> ManifestError {
    ManifestError::Invalid {
        loc: src.loc_within(Some(&span), needle),
        key: key.into(),
        message,
        suggestion: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config home with a bottle `egress` (one credentialed route), a workspace, and an
    /// `agents.toml` outside it.
    struct Env {
        _dir: tempfile::TempDir,
        home: PathBuf,
        repo: PathBuf,
        file: PathBuf,
    }

    const AGENT: &str = r#"
[[agent]]
name = "claude-code-sandboxed"
binary = "claude"
args = ["--verbose"]
model = "claude-opus-4-7"
preamble = "claude_md"
hooks = "claude_code"
interaction_mode = "balanced"
intra_parallel = true
max_parallel = 3

[agent.container]
image = "bottle/agent-claude:local"
cwd = "/work"
cpus = 1.5
memory = "2g"
pids_limit = 0
mounts = [ { src = "{{workspace}}", dst = "/work", mode = "rw" },
           { src = "{{extra}}", dst = "/opt/ref/{{agent_name}}", mode = "ro" },
           { dst = "/scratch", mode = "tmpfs", size = "64m" } ]
secrets = ["anthropic_api_key"]
network = "bridge:egress"
read_only_rootfs = true
"#;

    impl Env {
        fn new(agents_toml: &str) -> Env {
            let dir = tempfile::tempdir().unwrap();
            let home = dir.path().join("home");
            let repo = dir.path().join("repo");
            let extra = dir.path().join("extra");
            for d in [home.join("bottles"), repo.clone(), extra.clone()] {
                std::fs::create_dir_all(d).unwrap();
            }
            std::fs::write(
                home.join("bottles/egress.toml"),
                "[secrets]\nANTHROPIC_API_KEY = { env = \"ANTHROPIC_API_KEY\" }\n\n[[route]]\nid = \"anthropic\"\nhost = \"api.anthropic.com\"\nauth = { scheme = \"Bearer\", secret = \"ANTHROPIC_API_KEY\" }\n",
            )
            .unwrap();
            let file = dir.path().join("agents.toml");
            std::fs::write(
                &file,
                agents_toml.replace("{{extra}}", &extra.display().to_string()),
            )
            .unwrap();
            Env {
                _dir: dir,
                home,
                repo,
                file,
            }
        }
        fn load(&self, name: &str) -> Result<GembaAgent, ManifestError> {
            load_gemba(&self.home, &self.repo, &self.file, name, "b-1234")
        }
        fn err(&self, name: &str) -> String {
            match self.load(name) {
                Ok(_) => panic!("expected an error"),
                Err(e) => e.to_string(),
            }
        }
    }

    fn with(container_line: &str) -> String {
        AGENT.replace(
            "read_only_rootfs = true",
            &format!("read_only_rootfs = true\n{container_line}"),
        )
    }

    #[test]
    fn a_gemba_agent_maps_onto_its_bottle() {
        let env = Env::new(AGENT);
        let g = env.load("claude-code-sandboxed").unwrap();
        let p = &g.plan;
        assert_eq!(p.bottle, "egress");
        assert_eq!(p.agent, "claude-code-sandboxed");
        assert_eq!(p.agent_origin, AgentOrigin::Gemba);
        assert_eq!(g.preamble, Preamble::ClaudeMd);
        assert_eq!(
            p.command.as_deref().unwrap(),
            ["claude", "--model", "claude-opus-4-7", "--verbose"]
        );
        assert_eq!(p.resources.cpus, 1.5);
        assert_eq!(p.resources.memory_bytes, 2 << 30);
        assert_eq!(p.resources.pids, DEFAULT_PIDS);
        assert_eq!(p.workdir.as_deref(), Some("/work"));
        assert_eq!(p.workspace.container_path.as_deref(), Some("/work"));
        assert_eq!(p.workspace.mode, WorkspaceMode::Bind);
        assert!(!p.workspace.read_only);
        assert_eq!(p.mounts.len(), 2);
        assert!(
            matches!(&p.mounts[0], ExtraMount::Bind { target, read_only: true, .. } if target == "/opt/ref/claude-code-sandboxed")
        );
        assert_eq!(
            p.mounts[1],
            ExtraMount::Tmpfs {
                target: "/scratch".into(),
                size: 64 << 20
            }
        );
        assert_eq!(
            p.policy.routes.len(),
            1,
            "the bottle's routes are the allowlist"
        );
        assert!(p.placeholders.contains_key("ANTHROPIC_API_KEY"));
        assert_eq!(
            g.tags,
            [(
                "gemba.agent".to_string(),
                "claude-code-sandboxed".to_string()
            )]
        );
    }

    #[test]
    fn network_none_is_a_bottle_without_routes() {
        let env = Env::new(
            &AGENT
                .replace("network = \"bridge:egress\"", "network = \"none\"")
                .replace("secrets = [\"anthropic_api_key\"]", ""),
        );
        let p = env.load("claude-code-sandboxed").unwrap().plan;
        assert_eq!(p.bottle, "shell");
        assert!(p.policy.routes.is_empty());
    }

    #[test]
    fn each_validation_has_its_documented_error() {
        let cases: Vec<(String, &str)> = vec![
            (
                AGENT.replace("network = \"bridge:egress\"", "network = \"host\""),
                "agents.toml:23: invalid value for `container.network`: `host` requires unsafe = true",
            ),
            (
                with("unsafe = true").replace("network = \"bridge:egress\"", "network = \"host\""),
                "bottle never runs an agent on the host network, unsafe or not",
            ),
            (
                with("privileged = true"),
                "privileged containers are refused: this needs unsafe = true",
            ),
            (
                with("cap_add = [\"NET_ADMIN\"]"),
                "added capabilities (NET_ADMIN) are refused",
            ),
            (
                AGENT.replace("image = \"bottle/agent-claude:local\"", ""),
                "invalid value for `container.image`: an image is required",
            ),
            (
                AGENT.replace("dst = \"/scratch\"", "dst = \"/work\""),
                "two mounts have the destination `/work`",
            ),
            (
                AGENT.replace("[\"anthropic_api_key\"]", "[\"anthropic_api_kee\"]"),
                "unknown secret `anthropic_api_kee`: bottle `egress` declares ANTHROPIC_API_KEY",
            ),
            (
                AGENT.replace("bridge:egress", "bridge:nope"),
                "agents.toml:23: bottle `nope` does not exist",
            ),
            (
                AGENT.replace("bridge:egress", "wifi"),
                "`wifi` is not one of `none`, `bridge:<bottle>`, `host`",
            ),
            (
                AGENT.replace("mode = \"ro\"", "mode = \"rx\""),
                "`rx` is not one of `rw`, `ro`, `tmpfs`",
            ),
            (
                AGENT.replace("{{agent_name}}", "{{user}}"),
                "`{{user}}` is not a template",
            ),
            (
                AGENT.replace("dst = \"/scratch\"", "dst = \"/etc/resolv.conf\""),
                "is a path bottle manages",
            ),
            (
                with("read_only_rootfs = false").replace("read_only_rootfs = true\n", ""),
                "read-only",
            ),
            (
                AGENT.replace("cpus = 1.5", "cpus = -1.0"),
                "must be a number ≥ 0",
            ),
            (
                AGENT.replace("binary = \"claude\"", ""),
                "`binary` is required",
            ),
            (format!("{AGENT}\n{AGENT}"), "is defined twice"),
        ];
        for (text, want) in cases {
            let env = Env::new(&text);
            let e = env.err("claude-code-sandboxed");
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
    }

    #[test]
    fn unknown_agents_and_keys_are_named() {
        let env = Env::new(AGENT);
        let e = env.err("claude-code-sandboxd");
        assert!(e.contains("did you mean `claude-code-sandboxed`"), "{e}");
        let env = Env::new(&with("imgae = \"x\""));
        let e = env.err("claude-code-sandboxed");
        assert!(e.contains("unknown key `imgae`"), "{e}");
    }

    #[test]
    fn mount_sources_must_be_safe() {
        let env = Env::new(AGENT);
        // bottle's own config home.
        let t = AGENT.replace("{{extra}}", &env.home.join("bottles").display().to_string());
        std::fs::write(&env.file, &t).unwrap();
        let e = env.err("claude-code-sandboxed");
        assert!(e.contains("config home"), "{e}");
        // A path that does not exist.
        std::fs::write(&env.file, AGENT.replace("{{extra}}", "/nonexistent/x")).unwrap();
        let e = env.err("claude-code-sandboxed");
        assert!(
            e.contains("/nonexistent/x") && e.contains("create it or remove the mount"),
            "{e}"
        );
        // A socket.
        let sock = env.repo.parent().unwrap().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::write(
            &env.file,
            AGENT.replace("{{extra}}", &sock.display().to_string()),
        )
        .unwrap();
        let e = env.err("claude-code-sandboxed");
        assert!(e.contains("is a socket"), "{e}");
    }

    #[test]
    fn a_file_inside_the_workspace_is_a_repository_agent() {
        let env = Env::new(AGENT);
        let inside = env.repo.join(".gemba");
        std::fs::create_dir_all(&inside).unwrap();
        let f = inside.join("agents.toml");
        std::fs::copy(&env.file, &f).unwrap();
        let g = load_gemba(&env.home, &env.repo, &f, "claude-code-sandboxed", "b-1").unwrap();
        assert_eq!(
            g.plan.agent_origin,
            AgentOrigin::Repo,
            "it needs `bottle trust`"
        );
        assert!(g.plan.agent_sha256.is_some());
    }

    #[test]
    fn templates_expand() {
        let vars = BTreeMap::from([
            ("workspace", "/w".to_string()),
            ("session_id", "b-9".to_string()),
            ("agent_name", "a".to_string()),
        ]);
        assert_eq!(
            expand("/x/{{session_id}}/{{ agent_name }}", &vars).unwrap(),
            "/x/b-9/a"
        );
        assert!(expand("/x/{{session_id", &vars).is_err());
    }

    #[test]
    fn the_shipped_example_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(home.join("bottles")).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        for b in ["claude", "codex"] {
            std::fs::copy(
                root.join(format!("manifests/bottles/{b}.toml")),
                home.join(format!("bottles/{b}.toml")),
            )
            .unwrap();
        }
        let file = root.join("manifests/gemba/agents.toml");
        for (name, bottle, preamble) in [
            ("claude-code-sandboxed", "claude", Preamble::ClaudeMd),
            ("codex-exec", "codex", Preamble::CodexExec),
            ("offline-shell", "shell", Preamble::FirstMessage),
        ] {
            let g = load_gemba(&home, &repo, &file, name, "b-1").unwrap();
            assert_eq!(
                (g.plan.bottle.as_str(), g.preamble),
                (bottle, preamble),
                "{name}"
            );
            assert!(matches!(
                g.plan.image,
                super::super::bottle::ImageSpec::Template { .. }
            ));
        }
        let g = load_gemba(&home, &repo, &file, "offline-shell", "b-77").unwrap();
        assert!(g.plan.workspace.read_only);
        assert!(g.plan.policy.routes.is_empty());
        assert!(
            matches!(&g.plan.mounts[0], ExtraMount::Tmpfs { target, .. } if target == "/scratch/b-77")
        );
    }
}
