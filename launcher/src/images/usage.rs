//! What `bottle images build` (no arguments) builds and `bottle images list` shows: the images
//! that exist, and the image each agent of the config home and repository would run.

use std::path::Path;

use bollard::Docker;
use serde::Serialize;

use super::{image_exists, image_ref, BuildOpts, ImageKind};
use crate::manifest::{ImageSpec, Template};

/// The image kind a template runs on.
pub fn template_kind(t: Template) -> ImageKind {
    match t {
        Template::Shell => ImageKind::AgentShell,
        Template::Claude => ImageKind::AgentClaude,
        Template::Codex => ImageKind::AgentCodex,
    }
}

/// Parses a name given to `bottle images build`: an image kind (`agent-claude`) or a template
/// (`claude`).
pub fn parse_kind(name: &str) -> Result<ImageKind, String> {
    if let Some(k) = ImageKind::from_name(name) {
        return Ok(k);
    }
    match name {
        "shell" => Ok(ImageKind::AgentShell),
        "claude" => Ok(ImageKind::AgentClaude),
        "codex" => Ok(ImageKind::AgentCodex),
        _ => Err(format!(
            "no image `{name}`; have: {} (or the templates shell, claude, codex)",
            ImageKind::ALL.map(ImageKind::name).join(", ")
        )),
    }
}

/// One agent and the image it would run.
#[derive(Debug, Clone, Serialize)]
pub struct AgentImage {
    /// Agent name.
    pub agent: String,
    /// Its bottle (`None` when the agent does not resolve; see `error`).
    pub bottle: Option<String>,
    /// `template`, `tag` or `dockerfile`.
    pub source: Option<&'static str>,
    /// The image reference it would run.
    pub image: Option<String>,
    /// Whether the engine has that image.
    pub exists: bool,
    /// Why the agent does not resolve (`bottle check` tells more).
    pub error: Option<String>,
}

/// One built-in image.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltImage {
    /// The kind (`sidecar`, `agent-claude`, …).
    pub image: &'static str,
    /// Its current content-hash tag.
    pub tag: Option<String>,
    /// Whether the engine has it.
    pub exists: bool,
    /// Size in bytes, when it exists.
    pub size: Option<i64>,
    /// Why its tag cannot be computed (e.g. no source checkout for the sidecar).
    pub error: Option<String>,
}

/// The report of `bottle images list`.
#[derive(Debug, Clone, Serialize)]
pub struct ImagesReport {
    /// Every built-in image.
    pub images: Vec<BuiltImage>,
    /// Every agent of the config home and repository.
    pub agents: Vec<AgentImage>,
}

/// The image source of `spec`: `(source, reference)`.
fn spec_image(
    bottle: &str,
    spec: &ImageSpec,
    opts: &BuildOpts,
) -> (&'static str, Result<String, String>) {
    match spec {
        ImageSpec::Template { template } => (
            "template",
            image_ref(template_kind(*template), opts)
                .map(|r| r.tag)
                .map_err(|e| format!("{e:#}")),
        ),
        ImageSpec::Tag { tag } => ("tag", Ok(tag.clone())),
        ImageSpec::Dockerfile {
            dockerfile,
            context,
        } => (
            "dockerfile",
            super::dockerfile_ref(bottle, dockerfile, context)
                .map(|r| r.tag)
                .map_err(|e| format!("{e:#}")),
        ),
    }
}

/// An agent's name and its `(bottle, image)`, or why it does not resolve.
pub type AgentSpec = (String, Result<(String, ImageSpec), String>);

/// The images every agent of `home` and `repo` would run (unresolvable agents carry their error).
pub fn agent_specs(home: &Path, repo: &Path) -> Vec<AgentSpec> {
    crate::manifest::list_agents(home, repo)
        .into_iter()
        .map(|a| {
            let r = crate::manifest::resolve_plan(home, repo, &a.name)
                .map(|p| (p.bottle, p.image))
                .map_err(|e| e.to_string());
            (a.name, r)
        })
        .collect()
}

/// Whether any agent's bottle declares git remotes (so it runs the sidecar-git image).
pub fn any_git_gate(home: &Path, repo: &Path) -> bool {
    crate::manifest::list_agents(home, repo)
        .into_iter()
        .any(|a| {
            crate::manifest::resolve_plan(home, repo, &a.name)
                .is_ok_and(|p| !p.git.remotes.is_empty())
        })
}

/// Builds the report of `bottle images list`.
pub async fn report(docker: &Docker, home: &Path, repo: &Path) -> ImagesReport {
    let opts = BuildOpts::default();
    let mut images = Vec::new();
    for kind in ImageKind::ALL {
        let mut row = BuiltImage {
            image: kind.name(),
            tag: None,
            exists: false,
            size: None,
            error: None,
        };
        match image_ref(kind, &opts) {
            Ok(r) => {
                if let Ok(i) = docker.inspect_image(&r.tag).await {
                    row.exists = true;
                    row.size = i.size;
                }
                row.tag = Some(r.tag);
            }
            Err(e) => row.error = Some(format!("{e:#}")),
        }
        images.push(row);
    }
    let mut agents = Vec::new();
    for (agent, spec) in agent_specs(home, repo) {
        let row = match spec {
            Ok((bottle, spec)) => {
                let (source, image) = spec_image(&bottle, &spec, &opts);
                let exists = match &image {
                    Ok(t) => docker.inspect_image(t).await.is_ok(),
                    Err(_) => false,
                };
                AgentImage {
                    agent,
                    bottle: Some(bottle),
                    source: Some(source),
                    exists,
                    error: image.as_ref().err().cloned(),
                    image: image.ok(),
                }
            }
            Err(e) => AgentImage {
                agent,
                bottle: None,
                source: None,
                image: None,
                exists: false,
                error: Some(e),
            },
        };
        agents.push(row);
    }
    ImagesReport { images, agents }
}

/// The human table of [`report`].
pub fn render(r: &ImagesReport) -> String {
    let mut o = String::from("IMAGE          STATUS    SIZE      TAG\n");
    for i in &r.images {
        let status = if i.exists {
            "built"
        } else if i.error.is_some() {
            "error"
        } else {
            "missing"
        };
        let size = i
            .size
            .map(|s| format!("{} MiB", s >> 20))
            .unwrap_or_else(|| "-".into());
        let tag = i
            .tag
            .clone()
            .or_else(|| i.error.clone())
            .unwrap_or_default();
        o.push_str(&format!(
            "{:<14} {:<9} {:<9} {}\n",
            i.image, status, size, tag
        ));
    }
    if !r.agents.is_empty() {
        o.push_str("\nAGENT          BOTTLE         STATUS    IMAGE\n");
        for a in &r.agents {
            let status = if a.exists {
                "ready"
            } else if a.error.is_some() {
                "error"
            } else {
                "missing"
            };
            let what = match (&a.image, &a.error) {
                (Some(i), _) => format!("{i} ({})", a.source.unwrap_or("?")),
                (None, Some(e)) => e.lines().next().unwrap_or_default().to_string(),
                _ => String::new(),
            };
            o.push_str(&format!(
                "{:<14} {:<14} {:<9} {}\n",
                a.agent,
                a.bottle.as_deref().unwrap_or("-"),
                status,
                what
            ));
        }
    }
    o
}

/// Whether the engine has `kind`'s current image (false when its tag cannot be computed).
pub async fn kind_exists(docker: &Docker, kind: ImageKind) -> bool {
    match image_ref(kind, &BuildOpts::default()) {
        Ok(r) => image_exists(docker, &r).await.unwrap_or(false),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_kinds_or_templates() {
        assert_eq!(parse_kind("claude"), Ok(ImageKind::AgentClaude));
        assert_eq!(parse_kind("agent-codex"), Ok(ImageKind::AgentCodex));
        assert_eq!(parse_kind("sidecar"), Ok(ImageKind::Sidecar));
        let e = parse_kind("claud").unwrap_err();
        assert!(e.contains("agent-claude") && e.contains("templates"), "{e}");
        assert!(
            parse_kind("custom").is_err(),
            "custom images are per manifest"
        );
    }
}
