//! The human-readable rendering of a [`Plan`] (`bottle info`, the start preflight).
use std::fmt::Write;

use bottle_proxy::policy::{DlpSpec, RouteSpec};

use super::bottle::{ImageSpec, WorkspaceMode};
use super::model::{Gpu, ModelPlan};
use super::plan::Plan;

fn route_line(r: &RouteSpec) -> String {
    let id = r.id.clone().unwrap_or_else(|| r.host.clone());
    let mut s = format!("{id:<20} {}", r.host);
    if !r.ports.is_empty() {
        let ports: Vec<String> = r.ports.iter().map(u16::to_string).collect();
        let _ = write!(s, ":{}", ports.join(","));
    }
    if r.passthrough {
        s.push_str("  passthrough");
    }
    if !r.matches.is_empty() {
        let parts: Vec<String> = r
            .matches
            .iter()
            .map(|m| {
                let path = m
                    .path
                    .clone()
                    .or_else(|| m.path_prefix.as_ref().map(|p| format!("{p}*")))
                    .or_else(|| m.path_regex.as_ref().map(|p| format!("~{p}")))
                    .unwrap_or_else(|| "*".into());
                if m.methods.is_empty() {
                    path
                } else {
                    format!("{} {path}", m.methods.join("|"))
                }
            })
            .collect();
        let _ = write!(s, "  [{}]", parts.join("; "));
    }
    if let Some(a) = &r.auth {
        let how = a
            .header
            .clone()
            .or_else(|| a.scheme.clone())
            .unwrap_or_else(|| "Bearer".into());
        let _ = write!(s, "  auth {how} <- {}", a.secret);
    }
    match &r.dlp {
        Some(DlpSpec::Enabled(false)) => s.push_str("  dlp OFF"),
        Some(DlpSpec::Rules(rules)) => {
            let _ = write!(s, "  dlp [{}]", rules.join(","));
        }
        _ => {}
    }
    if !r.allow_private.is_empty() {
        let _ = write!(s, "  private {}", r.allow_private.join(","));
    }
    s
}

/// One model sidecar, as lines under `models`.
fn model_lines(o: &mut String, m: &ModelPlan) {
    let _ = writeln!(
        o,
        "  {} ({}) {}  at {}  image {}",
        m.name,
        m.engine.name(),
        m.model,
        m.base_url(),
        m.image
    );
    let _ = writeln!(o, "    command   <entrypoint> {}", m.cmd.join(" "));
    let mut facts = Vec::new();
    if let Some(c) = m.context {
        facts.push(format!("context {c}"));
    }
    match &m.gpu {
        Some(Gpu::All) => facts.push("gpu all".into()),
        Some(Gpu::Devices(d)) => facts.push(format!("gpu {}", d.join(","))),
        None => facts.push("no gpu".into()),
    }
    for v in &m.volumes {
        let ro = if v.read_only { ":ro" } else { "" };
        facts.push(format!("volume {}:{}{ro}", v.name, v.target));
    }
    if !m.secrets.is_empty() {
        facts.push(format!(
            "secrets {} (placeholders only)",
            m.secrets.join(",")
        ));
    }
    let _ = writeln!(o, "    settings  {}", facts.join(" · "));
    if !m.env.is_empty() {
        let env: Vec<String> = m.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(o, "    env       {}", env.join(" "));
    }
    if let Some(pull) = &m.pull {
        let _ = writeln!(o, "    then      {}", pull.join(" "));
    }
    let _ = writeln!(
        o,
        "    ready     {} (within {})",
        m.ready.meaning, m.ready.timeout
    );
    if m.egress.is_empty() {
        let _ = writeln!(o, "    egress    none: no route off the box");
    } else {
        let _ = writeln!(
            o,
            "    egress    {} (the model's own, through the proxy; not usable by the agent)",
            m.egress.len()
        );
        for r in &m.egress {
            let _ = writeln!(o, "      {}", route_line(r));
        }
    }
}

/// The `models` section: each sidecar, and exactly what the agent is told.
fn render_models(o: &mut String, p: &Plan) {
    if p.models.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "models     {} (own internal network, shared with the agent only; no workspace, no bottle secrets)",
        p.models.len()
    );
    for m in &p.models {
        model_lines(o, m);
    }
    let names: Vec<&str> = p.models.iter().map(|m| m.name.as_str()).collect();
    let _ = writeln!(
        o,
        "agent told about model `{}` (bottle env wins):",
        p.models[0].name
    );
    for (k, v) in &p.model_env {
        let _ = writeln!(o, "  {k}={v}");
    }
    let _ = writeln!(o, "  NO_PROXY, no_proxy += {}", names.join(","));
    let kept: Vec<String> =
        super::model::agent_wiring(super::plan::template_of(&p.image), &p.models[0], |_| false)
            .into_keys()
            .filter(|k| !p.model_env.contains_key(k))
            .collect();
    if !kept.is_empty() {
        let _ = writeln!(o, "  (the bottle's own value kept: {})", kept.join(", "));
    }
}

/// Renders a plan as aligned text. Contains no secret values (the plan has none).
pub(crate) fn render(p: &Plan) -> String {
    let mut o = String::new();
    let origin = match p.agent_origin {
        super::AgentOrigin::Home => "home agent",
        super::AgentOrigin::Repo => "repository agent",
        super::AgentOrigin::Implicit => "no agent file; bottle used directly",
        super::AgentOrigin::Gemba => "gemba agents.toml",
    };
    let _ = writeln!(o, "agent      {} ({origin})", p.agent);
    let mut chain = p.bottle.clone();
    for e in &p.extends {
        let _ = write!(chain, " -> {e}");
    }
    let _ = writeln!(o, "bottle     {chain}");
    if let Some(d) = &p.description {
        let _ = writeln!(o, "           {d}");
    }
    let _ = writeln!(o, "files      {}", p.sources.join(", "));
    let image = match &p.image {
        ImageSpec::Template { template } => format!("template {}", template.name()),
        ImageSpec::Tag { tag } => format!("image {tag}"),
        ImageSpec::Dockerfile {
            dockerfile,
            context,
        } => {
            format!(
                "Dockerfile {} (context {})",
                dockerfile.display(),
                context.display()
            )
        }
    };
    let _ = writeln!(o, "image      {image}");
    let ws = match (&p.workspace.mode, &p.workspace.host_path) {
        (WorkspaceMode::None, _) => "none".to_string(),
        (WorkspaceMode::Bind, Some(h)) => format!(
            "bind {} -> {} (read-write)",
            h.display(),
            super::WORKSPACE_PATH
        ),
        (WorkspaceMode::Copy, Some(h)) => {
            format!("copy of {} at {}", h.display(), super::WORKSPACE_PATH)
        }
        (_, None) => "no host directory".to_string(),
    };
    let _ = writeln!(o, "workspace  {ws}");
    if p.workspace.host_path.is_some() {
        let _ = writeln!(
            o,
            "git meta   {}",
            if p.protect_git {
                "read-only for the agent (.git/config, .git/hooks, .git/info)"
            } else {
                "WRITABLE by the agent (protect_git = false): hooks and config it plants run when you use git here"
            }
        );
    }
    let r = &p.resources;
    let _ = writeln!(
        o,
        "resources  {} cpus, {} memory, {} pids",
        r.cpus, r.memory, r.pids
    );
    let runtime = match p.runtime {
        super::RuntimeMode::Auto => "auto (gVisor if it works here, else runc)",
        super::RuntimeMode::Runc => "runc",
        super::RuntimeMode::Runsc => "runsc (gVisor)",
    };
    let _ = writeln!(o, "runtime    {runtime}");
    if let Some(cmd) = &p.command {
        let _ = writeln!(o, "command    {}", cmd.join(" "));
    }
    if p.label.is_some() || p.color.is_some() {
        let _ = writeln!(
            o,
            "label      {} {}",
            p.label.as_deref().unwrap_or(""),
            p.color
                .as_deref()
                .map(|c| format!("({c})"))
                .unwrap_or_default()
        );
    }
    if p.policy.routes.is_empty() {
        let _ = writeln!(o, "routes     none: no egress at all");
    } else {
        let _ = writeln!(
            o,
            "routes     {} (everything else is denied)",
            p.policy.routes.len()
        );
        for route in &p.policy.routes {
            let _ = writeln!(o, "  {}", route_line(route));
        }
    }
    if p.secrets.is_empty() {
        let _ = writeln!(o, "secrets    none");
    } else {
        let _ = writeln!(
            o,
            "secrets    {} (values resolved on the host at start, held by the sidecar only)",
            p.secrets.len()
        );
        for s in &p.secrets {
            let mut line = format!(
                "  {:<24} {}  used by {}",
                s.name,
                s.source,
                s.used_by.join(", ")
            );
            if !s.placeholder_env.is_empty() {
                let _ = write!(line, "  placeholder ${}", s.placeholder_env.join(", $"));
            }
            let _ = writeln!(o, "{line}");
        }
    }
    if !p.env.is_empty() {
        let _ = writeln!(o, "env        {}", p.env.len());
        for (k, v) in &p.env {
            let _ = writeln!(o, "  {k}={v}");
        }
    }
    if p.git.author_name.is_some() || p.git.author_email.is_some() || !p.git.remotes.is_empty() {
        let _ = writeln!(
            o,
            "git        {} <{}>",
            p.git.author_name.as_deref().unwrap_or("(unset)"),
            p.git.author_email.as_deref().unwrap_or("unset")
        );
        for rem in &p.git.remotes {
            let secret = rem
                .secret
                .as_deref()
                .map(|s| format!("  auth <- {s}"))
                .unwrap_or_default();
            let _ = writeln!(o, "  remote {} {}{secret}", rem.name, rem.url);
        }
    }
    render_models(&mut o, p);
    let lines = p.system_prompt.lines().count();
    if lines > 0 {
        let first = p.system_prompt.lines().next().unwrap_or("");
        let _ = writeln!(o, "prompt     {lines} lines: {first}");
    }
    for n in &p.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}
