//! The host side of the git gate's approval tickets: `bottle approve` / `bottle deny` and the
//! pending tickets `bottle list` shows. Each reaches a bottle's sidecar with `docker exec`
//! (`bottle-sidecar git-ticket …`): an engine call only the host can make, never the agent's
//! network or terminal.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::labels;

/// Label on the sidecar of a bottle that runs the git gate.
pub const GIT_GATE_LABEL: &str = "io.bottle.git-gate";

/// A pending ticket as the sidecar lists it (no secret: rule, path, commit).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingTicket {
    /// Ticket id.
    pub id: String,
    /// The remote pushed to.
    pub remote: String,
    /// The rule that fired.
    pub rule: String,
    /// File path or ref name.
    #[serde(default)]
    pub path: Option<String>,
    /// Commit.
    #[serde(default)]
    pub commit: Option<String>,
}

/// Running git-gate sidecars: (bottle id, container id).
async fn gate_sidecars(docker: &Docker) -> Result<Vec<(String, String)>> {
    let filters = HashMap::from([
        ("label", vec![format!("{GIT_GATE_LABEL}=1")]),
        ("status", vec!["running".to_string()]),
    ]);
    let cs = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .context("listing the bottles' sidecars")?;
    Ok(cs
        .into_iter()
        .filter_map(|c| {
            let id = c.labels.as_ref()?.get(labels::ID)?.clone();
            Some((id, c.id?))
        })
        .collect())
}

/// Runs `bottle-sidecar git-ticket <args>` in `container`; returns (exit code, stdout, stderr).
async fn exec(docker: &Docker, container: &str, args: &[&str]) -> Result<(i64, String, String)> {
    let mut cmd = vec!["/usr/local/bin/bottle-sidecar", "git-ticket"];
    cmd.extend_from_slice(args);
    let e = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .context("docker exec in the sidecar")?;
    let (mut out, mut err) = (String::new(), String::new());
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&e.id, None)
        .await
        .context("starting docker exec in the sidecar")?
    {
        while let Some(chunk) = output.next().await {
            match chunk.context("reading docker exec output")? {
                bollard::container::LogOutput::StdOut { message } => {
                    out.push_str(&String::from_utf8_lossy(&message))
                }
                bollard::container::LogOutput::StdErr { message } => {
                    err.push_str(&String::from_utf8_lossy(&message))
                }
                _ => {}
            }
        }
    }
    let code = docker
        .inspect_exec(&e.id)
        .await
        .ok()
        .and_then(|i| i.exit_code)
        .unwrap_or(-1);
    Ok((code, out, err))
}

/// The pending tickets of every running bottle with a git gate, by bottle id.
pub async fn pending(docker: &Docker) -> HashMap<String, Vec<PendingTicket>> {
    pending_where(docker, |_| true).await
}

/// The pending tickets of bottle `id` (empty when it has no running git gate).
pub async fn pending_of(docker: &Docker, id: &str) -> Vec<PendingTicket> {
    pending_where(docker, |b| b == id)
        .await
        .remove(id)
        .unwrap_or_default()
}

async fn pending_where(
    docker: &Docker,
    want: impl Fn(&str) -> bool,
) -> HashMap<String, Vec<PendingTicket>> {
    let mut out = HashMap::new();
    for (bottle, container) in gate_sidecars(docker).await.unwrap_or_default() {
        if !want(&bottle) {
            continue;
        }
        if let Ok((0, text, _)) = exec(docker, &container, &["list"]).await {
            #[derive(Deserialize)]
            struct List {
                pending: Vec<PendingTicket>,
            }
            if let Ok(l) = serde_json::from_str::<List>(text.trim()) {
                out.insert(bottle, l.pending);
            }
        }
    }
    out
}

/// `bottle approve|deny <ticket> --reason R`: records the decision in the bottle whose gate
/// holds the pending ticket; returns that bottle's id.
pub async fn decide(docker: &Docker, ticket: &str, approve: bool, reason: &str) -> Result<String> {
    if ticket.len() != 12 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{ticket:?} is not a ticket id (12 hex digits, from the agent's `remote:` lines or `bottle list`)");
    }
    if reason.trim().is_empty() {
        bail!("--reason must say why (it goes into the bottle's audit log)");
    }
    let verb = if approve { "approve" } else { "deny" };
    let ticket = ticket.to_ascii_lowercase();
    let mut failures = Vec::new();
    for (bottle, container) in gate_sidecars(docker).await? {
        match exec(docker, &container, &[verb, &ticket, reason]).await {
            Ok((0, _, _)) => return Ok(bottle),
            Ok((3, _, _)) => {} // not this bottle's ticket
            // A sidecar that is stopping cannot hold a ticket any more; others are reported.
            Ok((_, _, err)) => failures.push(format!("bottle {bottle}: {}", err.trim())),
            Err(e) => failures.push(format!("bottle {bottle}: {e:#}")),
        }
    }
    if failures.is_empty() {
        bail!("no running bottle has a pending ticket {ticket}; `bottle list` shows the pending tickets")
    }
    bail!(
        "no running bottle took ticket {ticket}; some could not be asked: {}",
        failures.join("; ")
    )
}
