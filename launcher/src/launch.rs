//! From an agent name to a [`LaunchSpec`]: resolves the manifest plan, makes sure the images
//! exist (building them on first use), and resolves secret values on the host.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use bollard::Docker;

use crate::guard::{check_workspace_location, ProtectedDir};
use crate::images::{ensure_images, BuildOpts, ImageKind};
use crate::manifest::{AgentOrigin, ImageSpec, Plan, RuntimeMode, Template, WorkspaceMode};
use crate::runtime::spec::{LaunchSpec, Limits, RuntimeChoice, WorkspaceSpec};

/// Resolves the plan of `agent` for `repo`, with a `bottle check` hint on errors.
pub fn plan(home: &Path, repo: &Path, agent: &str) -> Result<Plan> {
    crate::manifest::resolve_plan(home, repo, agent)
        .map_err(anyhow::Error::new)
        .with_context(|| {
            format!("resolving agent {agent:?} (`bottle check` validates every manifest)")
        })
}

/// Which agent file and bottle a launch uses: printed as one line on stderr by every
/// `start`/`run` and carried in `bottle run --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentUse {
    /// Agent name.
    pub agent: String,
    /// `home`, `repo` or `implicit`.
    pub agent_origin: AgentOrigin,
    /// The agent file (`None` for a bottle used directly).
    pub agent_file: Option<String>,
    /// SHA-256 of the agent file as read.
    pub agent_sha256: Option<String>,
    /// Bottle name.
    pub bottle: String,
    /// The bottle's file (or `<built-in …>`).
    pub bottle_file: Option<String>,
}

impl AgentUse {
    /// The stderr line.
    pub fn line(&self) -> String {
        let agent = match (&self.agent_file, self.agent_origin) {
            (Some(f), AgentOrigin::Repo) => format!(
                "repository agent file {} (trusted, sha256 {})",
                crate::termfilter::escape_line(f),
                crate::trust::short(self.agent_sha256.as_deref().unwrap_or(""))
            ),
            (Some(f), _) => format!("agent file {}", crate::termfilter::escape_line(f)),
            (None, _) => "no agent file (the bottle is used directly)".to_string(),
        };
        format!(
            "bottle: agent `{}`: {agent}; bottle `{}` from {}",
            self.agent,
            self.bottle,
            crate::termfilter::escape_line(self.bottle_file.as_deref().unwrap_or("?"))
        )
    }
}

/// The checks `start` and `run` make before anything is created: a repository agent must be
/// trusted with its current content ([`crate::trust`]), and the workspace must not expose
/// bottle's own directories ([`crate::guard::check_workspace_location`]). Returns what is used.
pub fn check_before_launch(home: &Path, plan: &Plan) -> Result<AgentUse> {
    if plan.agent_origin == AgentOrigin::Repo {
        let path = plan
            .agent_file
            .as_deref()
            .context("a repository agent without a file")?;
        let sha = plan.agent_sha256.as_deref().unwrap_or("");
        let state = crate::trust::state_dir()?;
        let store = crate::trust::TrustStore::load(&state)?;
        store.check(path, sha, &effect_of(plan))?;
    }
    if plan.workspace.mode != WorkspaceMode::None {
        if let Some(ws) = &plan.workspace.host_path {
            check_workspace_location(ws, &protected_dirs(home))?;
        }
    }
    let bottle_file = plan
        .source_paths
        .get(usize::from(plan.agent_file.is_some()))
        .map(|p| p.display().to_string());
    Ok(AgentUse {
        agent: plan.agent.clone(),
        agent_origin: plan.agent_origin,
        agent_file: plan.agent_file.as_ref().map(|p| p.display().to_string()),
        agent_sha256: plan.agent_sha256.clone(),
        bottle: plan.bottle.clone(),
        bottle_file,
    })
}

/// For `info` and `start --dry-run` (which run nothing): why `start`/`run` would refuse this
/// repository agent, if they would.
pub fn trust_note(plan: &Plan) -> Option<String> {
    if plan.agent_origin != AgentOrigin::Repo {
        return None;
    }
    let path = plan.agent_file.as_deref()?;
    let store = crate::trust::TrustStore::load(&crate::trust::state_dir().ok()?).ok()?;
    store
        .check(
            path,
            plan.agent_sha256.as_deref().unwrap_or(""),
            &effect_of(plan),
        )
        .err()
        .map(|e| format!("bottle: note: `start`/`run` would refuse this: {e}"))
}

/// What an agent file makes a launch do, for trust messages (control characters escaped).
fn effect_of(plan: &Plan) -> String {
    let routes: Vec<String> = plan
        .policy
        .routes
        .iter()
        .map(|r| r.id.clone().unwrap_or_else(|| r.host.clone()))
        .collect();
    let mut s = format!(
        "selects bottle `{}` ({})",
        plan.bottle,
        if routes.is_empty() {
            "no routes".to_string()
        } else {
            format!("routes: {}", routes.join(", "))
        }
    );
    if let Some(c) = &plan.command {
        s.push_str(&format!(" with command {c:?}"));
    }
    crate::termfilter::escape_line(&s)
}

/// bottle's own directories, which no workspace may contain or be inside.
pub fn protected_dirs(home: &Path) -> Vec<ProtectedDir> {
    let mut out = vec![ProtectedDir {
        what: "the config home ($BOTTLE_HOME)".into(),
        path: home.to_path_buf(),
    }];
    if let Ok(d) = crate::trust::state_dir() {
        out.push(ProtectedDir {
            what: "the state directory (trusted agents)".into(),
            path: d,
        });
    }
    if let Ok(d) = crate::runtime::statedir::base_dir() {
        out.push(ProtectedDir {
            what: "the runtime directory".into(),
            path: d,
        });
    }
    if let Ok(d) = crate::runtime::statedir::data_dir() {
        out.push(ProtectedDir {
            what: "the data directory (kept workspace copies)".into(),
            path: d,
        });
    }
    out
}

/// Builds the launch spec of a plan: images (built when missing) and secret values.
pub async fn launch_spec(docker: &Docker, plan: &Plan, quiet: bool) -> Result<LaunchSpec> {
    let opts = BuildOpts {
        quiet,
        ..Default::default()
    };
    // Images given explicitly are used as they are; the others are built when missing.
    let git_gate = !plan.git.remotes.is_empty();
    // Bottles with git remotes get the sidecar image that has git (for the gate).
    let settings = crate::settings::current();
    let (sidecar_kind, sidecar_var) = if git_gate {
        (ImageKind::SidecarGit, &settings.sidecar_git_image)
    } else {
        (ImageKind::Sidecar, &settings.sidecar_image)
    };
    let sidecar_override = image_override(sidecar_var);
    let agent_override = image_override(&settings.agent_image);
    let template_kind = match &plan.image {
        ImageSpec::Template { template } => Some(crate::images::usage::template_kind(*template)),
        _ => None,
    };
    let mut kinds = Vec::new();
    if sidecar_override.is_none() {
        kinds.push(sidecar_kind);
    }
    if let (None, Some(k)) = (&agent_override, template_kind) {
        kinds.push(k);
    }
    let mut refs = if kinds.is_empty() {
        Vec::new()
    } else {
        ensure_images(docker, &kinds, &opts).await?
    }
    .into_iter();
    let sidecar_image = match sidecar_override {
        Some(i) => i,
        None => refs.next().context("the sidecar image was not built")?.tag,
    };
    let agent_image = match (agent_override, &plan.image) {
        (Some(i), _) => i,
        (None, ImageSpec::Template { .. }) => {
            refs.next().context("the agent image was not built")?.tag
        }
        (None, ImageSpec::Tag { tag }) => crate::images::ensure_tag(docker, tag, quiet)
            .await
            .with_context(|| format!("bottle {}: the agent image", plan.bottle))?,
        (
            None,
            ImageSpec::Dockerfile {
                dockerfile,
                context,
            },
        ) => crate::images::ensure_dockerfile(docker, &plan.bottle, dockerfile, context, quiet)
            .await
            .with_context(|| format!("bottle {}: the agent image", plan.bottle))?,
    };
    let secrets = plan
        .resolve_secrets()
        .map_err(anyhow::Error::new)
        .context("resolving the bottle's secrets on the host")?;
    // What the agent is told about a model sidecar first: the bottle's own env wins.
    let mut env = plan.model_env.clone();
    env.extend(plan.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(
        plan.placeholders
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    if let Some(n) = &plan.git.author_name {
        env.insert("GIT_AUTHOR_NAME".into(), n.clone());
        env.insert("GIT_COMMITTER_NAME".into(), n.clone());
    }
    if let Some(e) = &plan.git.author_email {
        env.insert("GIT_AUTHOR_EMAIL".into(), e.clone());
        env.insert("GIT_COMMITTER_EMAIL".into(), e.clone());
    }
    let workspace = match (plan.workspace.mode, &plan.workspace.host_path) {
        (WorkspaceMode::None, _) | (_, None) => WorkspaceSpec::None,
        (WorkspaceMode::Bind, Some(p)) => WorkspaceSpec::Bind(p.clone()),
        (WorkspaceMode::Copy, Some(p)) => WorkspaceSpec::Copy(p.clone()),
    };
    Ok(LaunchSpec {
        bottle: plan.bottle.clone(),
        agent: plan.agent.clone(),
        sidecar_image,
        agent_image,
        policy: plan.policy.clone(),
        secrets,
        env,
        system_prompt: (!plan.system_prompt.trim().is_empty()).then(|| plan.system_prompt.clone()),
        workspace,
        limits: Limits {
            cpus: plan.resources.cpus,
            memory: i64::try_from(plan.resources.memory_bytes).unwrap_or(i64::MAX),
            pids: i64::try_from(plan.resources.pids).unwrap_or(i64::MAX),
        },
        runtime: match plan.runtime {
            RuntimeMode::Auto => RuntimeChoice::Auto,
            RuntimeMode::Runc => RuntimeChoice::Runc,
            RuntimeMode::Runsc => RuntimeChoice::Runsc,
        },
        labels: BTreeMap::new(),
        protect_git: plan.protect_git,
        default_cmd: plan.command.clone().unwrap_or_default(),
        git_remotes: plan.git.remotes.clone(),
        layout: crate::runtime::spec::AgentLayout {
            workspace_target: plan
                .workspace
                .container_path
                .clone()
                .unwrap_or_else(|| crate::manifest::WORKSPACE_PATH.into()),
            workspace_read_only: plan.workspace.read_only,
            workdir: plan.workdir.clone(),
            mounts: plan.mounts.clone(),
        },
        models: plan.models.clone(),
    })
}

/// What a template does that a user should know before it starts (printed by `start`/`run`).
pub fn template_note(plan: &Plan) -> Option<&'static str> {
    match plan.image {
        ImageSpec::Template {
            template: Template::Claude,
        } => Some(
            "bottle: claude runs with --dangerously-skip-permissions: the bottle is its sandbox              (no route but the bottle's, no real credential inside), and its first-run prompts              are pre-answered in the bottle's tmpfs home",
        ),
        ImageSpec::Template {
            template: Template::Codex,
        } => Some(
            "bottle: codex runs with approvals off and its own sandbox bypassed              (--dangerously-bypass-approvals-and-sandbox): the bottle is its sandbox",
        ),
        _ => None,
    }
}

/// The agent command for an unattended run with a prompt, by image template.
pub fn prompt_command(plan: &Plan, prompt: &str) -> Vec<String> {
    match &plan.image {
        ImageSpec::Template {
            template: Template::Claude,
        } => {
            // The bottle is the sandbox: Claude Code's own permission prompts would block an
            // unattended run, so they are skipped (the preflight line says so).
            [
                "claude",
                "-p",
                "--output-format",
                "json",
                "--dangerously-skip-permissions",
                "--",
                prompt,
            ]
            .map(String::from)
            .to_vec()
        }
        ImageSpec::Template {
            template: Template::Codex,
        } => [
            "codex",
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "--",
            prompt,
        ]
        .map(String::from)
        .to_vec(),
        _ => vec!["bash".into(), "-lc".into(), prompt.into()],
    }
}

/// An image reference from the environment (`BOTTLE_SIDECAR_IMAGE`, `BOTTLE_AGENT_IMAGE`):
/// lets developers and tests run a locally built image instead of the content-hash tag.
fn image_override(var: &Option<std::ffi::OsString>) -> Option<String> {
    crate::settings::text(var).filter(|s| !s.trim().is_empty())
}

/// What `bottle spawn` starts: a plan (from an agent name, or a gemba `agents.toml`), how its
/// prompt is delivered, and the extra labels it stamps.
#[derive(Debug, Clone)]
pub struct SpawnPlan {
    /// The plan.
    pub plan: Plan,
    /// How `--prompt` reaches the agent.
    pub preamble: crate::manifest::Preamble,
    /// Labels for every container (gemba: `gemba.agent`).
    pub tags: Vec<(String, String)>,
}

/// Resolves `bottle spawn [--gemba FILE] AGENT` for bottle `id`.
pub fn spawn_plan(
    home: &Path,
    repo: &Path,
    agent: &str,
    gemba: Option<&Path>,
    id: &str,
) -> Result<SpawnPlan> {
    match gemba {
        Some(file) => {
            let g = crate::manifest::load_gemba(home, repo, file, agent, id)?;
            Ok(SpawnPlan {
                plan: g.plan,
                preamble: g.preamble,
                tags: g.tags,
            })
        }
        None => Ok(SpawnPlan {
            plan: plan(home, repo, agent)?,
            preamble: crate::manifest::Preamble::FirstMessage,
            tags: Vec::new(),
        }),
    }
}

/// Checks that the prompt can be delivered the way the plan says (before anything starts).
pub fn check_preamble(sp: &SpawnPlan, prompt: Option<&str>) -> Result<()> {
    use crate::manifest::Preamble;
    let Some(p) = prompt else { return Ok(()) };
    if p.trim().is_empty() {
        anyhow::bail!("--prompt is empty");
    }
    match sp.preamble {
        Preamble::ClaudeMd if sp.plan.workspace.mode != WorkspaceMode::Bind => anyhow::bail!(
            "the claude_md preamble writes CLAUDE.md into the workspace, but this bottle's workspace is {:?}; use a bound workspace or another preamble",
            sp.plan.workspace.mode
        ),
        Preamble::StdoutBanner | Preamble::CodexExec if sp.plan.command.is_none() => anyhow::bail!(
            "the {:?} preamble needs the agent's command (gemba `binary`)",
            sp.preamble
        ),
        _ => Ok(()),
    }
}
