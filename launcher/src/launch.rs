//! From an agent name to a [`LaunchSpec`]: resolves the manifest plan, makes sure the images
//! exist (building them on first use), and resolves secret values on the host.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bollard::Docker;

use crate::images::{ensure_images, BuildOpts, ImageKind};
use crate::manifest::{ImageSpec, Plan, RuntimeMode, Template, WorkspaceMode};
use crate::runtime::spec::{LaunchSpec, Limits, RuntimeChoice, WorkspaceSpec};

/// Resolves the plan of `agent` for `repo`, with a `bottle check` hint on errors.
pub fn plan(home: &Path, repo: &Path, agent: &str) -> Result<Plan> {
    crate::manifest::resolve_plan(home, repo, agent)
        .map_err(anyhow::Error::new)
        .with_context(|| {
            format!("resolving agent {agent:?} (`bottle check` validates every manifest)")
        })
}

/// Builds the launch spec of a plan: images (built when missing) and secret values.
pub async fn launch_spec(docker: &Docker, plan: &Plan, quiet: bool) -> Result<LaunchSpec> {
    let agent_kind = match &plan.image {
        ImageSpec::Template { template: Template::Shell } => ImageKind::AgentShell,
        ImageSpec::Template { template } if image_override("BOTTLE_AGENT_IMAGE").is_none() => bail!(
            "bottle {}: the `{}` template has no offline image yet; build images/agent-{}/Dockerfile with a registry and set BOTTLE_AGENT_IMAGE to its tag",
            plan.bottle,
            template.name(),
            template.name()
        ),
        ImageSpec::Dockerfile { dockerfile, .. } if image_override("BOTTLE_AGENT_IMAGE").is_none() => bail!(
            "bottle {}: custom Dockerfile images are not built by this version; run `docker build -f {}` yourself and set BOTTLE_AGENT_IMAGE to the tag",
            plan.bottle,
            dockerfile.display()
        ),
        _ => ImageKind::AgentShell,
    };
    let opts = BuildOpts {
        quiet,
        ..Default::default()
    };
    // Images given explicitly are used as they are; the others are built when missing.
    let sidecar_override = image_override("BOTTLE_SIDECAR_IMAGE");
    let agent_override = image_override("BOTTLE_AGENT_IMAGE");
    let mut kinds = Vec::new();
    if sidecar_override.is_none() {
        kinds.push(ImageKind::Sidecar);
    }
    if agent_override.is_none() {
        kinds.push(agent_kind);
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
    let agent_image = match agent_override {
        Some(i) => i,
        None => refs.next().context("the agent image was not built")?.tag,
    };
    let secrets = plan
        .resolve_secrets()
        .map_err(anyhow::Error::new)
        .context("resolving the bottle's secrets on the host")?;
    let mut env = plan.env.clone();
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
        default_cmd: plan.command.clone().unwrap_or_default(),
    })
}

/// The agent command for an unattended run with a prompt, by image template.
pub fn prompt_command(plan: &Plan, prompt: &str) -> Vec<String> {
    match &plan.image {
        ImageSpec::Template {
            template: Template::Claude,
        } => {
            vec!["claude".into(), "-p".into(), prompt.into()]
        }
        ImageSpec::Template {
            template: Template::Codex,
        } => {
            vec!["codex".into(), "exec".into(), prompt.into()]
        }
        _ => vec!["bash".into(), "-lc".into(), prompt.into()],
    }
}

/// An image reference from the environment (`BOTTLE_SIDECAR_IMAGE`, `BOTTLE_AGENT_IMAGE`):
/// lets developers and tests run a locally built image instead of the content-hash tag.
fn image_override(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|s| !s.trim().is_empty())
}
