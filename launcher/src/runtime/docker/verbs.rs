//! The engine calls of `bottle list`, `bottle logs` and `bottle end`.
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bollard::query_parameters::{ListContainersOptionsBuilder, LogsOptionsBuilder};
use bollard::Docker;

use super::reap::{bottle_filter, reap};
use crate::runtime::labels::{self, launcher_alive};
use crate::runtime::verbs::BottleRow;

/// Lists bottles (one row per agent container).
pub async fn list(docker: &Docker) -> Result<Vec<BottleRow>> {
    let f = bottle_filter(None);
    let cs = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&f)
                .build(),
        ))
        .await
        .context("listing bottle containers")?;
    let mut rows: Vec<BottleRow> = Vec::new();
    for c in cs.iter().filter(|c| {
        c.labels
            .as_ref()
            .and_then(|l| l.get(labels::ROLE))
            .map(String::as_str)
            == Some("agent")
    }) {
        let l = c.labels.clone().unwrap_or_default();
        let id = l.get(labels::ID).cloned().unwrap_or_default();
        let sidecar = cs
            .iter()
            .find(|s| {
                let sl = s.labels.as_ref();
                sl.and_then(|x| x.get(labels::ID)) == Some(&id)
                    && sl.and_then(|x| x.get(labels::ROLE)).map(String::as_str) == Some("sidecar")
            })
            .and_then(|s| s.state.as_ref().map(|st| st.to_string()))
            .unwrap_or_else(|| "missing".into());
        let models = cs
            .iter()
            .filter_map(|m| {
                let ml = m.labels.as_ref()?;
                (ml.get(labels::ID) == Some(&id)
                    && ml.get(labels::ROLE).map(String::as_str) == Some("model"))
                .then(|| {
                    format!(
                        "{} ({})",
                        ml.get(labels::MODEL).map(String::as_str).unwrap_or("?"),
                        m.state.as_ref().map(|s| s.to_string()).unwrap_or_default()
                    )
                })
            })
            .collect();
        rows.push(BottleRow {
            models,
            bottle: l.get(labels::BOTTLE).cloned().unwrap_or_default(),
            agent: l.get(labels::AGENT).cloned().unwrap_or_default(),
            mode: l.get(labels::MODE).cloned().unwrap_or_default(),
            state: c.state.as_ref().map(|s| s.to_string()).unwrap_or_default(),
            sidecar,
            pid: l.get(labels::LAUNCHER_PID).and_then(|p| p.parse().ok()),
            live: launcher_alive(&l),
            created: c.created.unwrap_or(0),
            pending_tickets: Vec::new(),
            backend: "docker",
            label: l.get(labels::LABEL).cloned(),
            color: l.get(labels::COLOR).cloned(),
            image: c.image.clone().unwrap_or_default(),
            routes: l.get(labels::ROUTES).and_then(|r| r.parse().ok()),
            age_secs: (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
                - c.created.unwrap_or(0))
            .max(0),
            id,
        });
    }
    // Sessions whose containers vanished behind bottle's back are reported once, as `gone`.
    let live: std::collections::HashSet<String> = cs
        .iter()
        .filter_map(|c| c.labels.as_ref()?.get(labels::ID).cloned())
        .collect();
    for s in crate::runtime::sessions::reconcile(&live) {
        rows.push(BottleRow {
            id: s.id,
            bottle: s.bottle,
            agent: s.agent,
            mode: s.mode,
            state: "gone".into(),
            sidecar: "missing".into(),
            pid: None,
            live: false,
            created: s.started as i64,
            backend: "docker",
            label: None,
            color: None,
            image: s.image,
            routes: None,
            age_secs: 0,
            pending_tickets: Vec::new(),
            models: Vec::new(),
        });
    }
    if !rows.is_empty() {
        let mut tickets = crate::runtime::tickets::pending(docker).await;
        for r in &mut rows {
            r.pending_tickets = tickets.remove(&r.id).unwrap_or_default();
        }
    }
    rows.sort_by_key(|r| r.created);
    Ok(rows)
}

/// The container id of a bottle's role (`agent` or `sidecar`).
async fn container_of(docker: &Docker, id: &str, role: &str) -> Result<String> {
    if !labels::is_valid_id(id) {
        bail!("{id:?} is not a bottle id; `bottle list` shows the ids of running bottles");
    }
    let f = bottle_filter(Some(format!("{}={id}", labels::ID)));
    let cs = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&f)
                .build(),
        ))
        .await
        .context("listing bottle containers")?;
    cs.into_iter()
        .find(|c| c.labels.as_ref().and_then(|l| l.get(labels::ROLE)).map(String::as_str) == Some(role))
        .and_then(|c| c.id)
        .with_context(|| format!("no bottle {id} (its objects are removed when it ends); `bottle list` shows running bottles"))
}

/// Prints the agent's output, or with `audit` the sidecar's audit lines; `follow` streams.
pub async fn logs(docker: &Docker, id: &str, audit: bool, follow: bool) -> Result<()> {
    let role = if audit { "sidecar" } else { "agent" };
    let c = container_of(docker, id, role).await?;
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(!audit)
        .follow(follow)
        .build();
    let mut out = std::io::stdout().lock();
    crate::runtime::verbs::write_logs(docker.logs(&c, Some(opts)), &mut out, follow).await
}

/// Ends a bottle: asks its launcher to tear down (SIGTERM), then removes whatever is left. The
/// report counts every object that went, whether its launcher or the reap removed it.
pub async fn end(docker: &Docker, id: &str) -> Result<super::reap::ReapReport> {
    let before = super::reap::object_counts(docker, id).await?;
    let mut r = ask_launcher_then_reap(docker, id).await?;
    let after = super::reap::object_counts(docker, id).await?;
    r.containers = before.0.saturating_sub(after.0);
    r.networks = before.1.saturating_sub(after.1);
    Ok(r)
}

/// [`end`]'s work: SIGTERM to a live launcher (waiting up to 10 s for it), then a forced reap.
async fn ask_launcher_then_reap(docker: &Docker, id: &str) -> Result<super::reap::ReapReport> {
    let agent = container_of(docker, id, "agent").await;
    let sidecar = container_of(docker, id, "sidecar").await;
    let any = agent.as_ref().or(sidecar.as_ref()).ok().cloned();
    if let Some(c) = any {
        let info = docker
            .inspect_container(&c, None)
            .await
            .context("inspecting the bottle")?;
        let l = info.config.and_then(|c| c.labels).unwrap_or_default();
        if launcher_alive(&l) {
            if let Some(pid) = l
                .get(labels::LAUNCHER_PID)
                .and_then(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(2) with a pid we verified belongs to a live bottle launcher.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if !launcher_alive(&l) {
                        break;
                    }
                }
            }
        }
    } else {
        let leftovers = reap(docker, Some(id), true).await?;
        if leftovers.bottles.is_empty() && leftovers.dirs == 0 {
            bail!("no bottle {id}; `bottle list` shows running bottles");
        }
        return Ok(leftovers);
    }
    reap(docker, Some(id), true).await
}
