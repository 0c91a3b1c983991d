//! `bottle list`, `bottle logs`, `bottle end`.
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bollard::query_parameters::{ListContainersOptionsBuilder, LogsOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Serialize;

use super::labels::{self, launcher_alive};
use super::reap::{bottle_filter, reap};

/// One row of `bottle list`.
#[derive(Debug, Clone, Serialize)]
pub struct BottleRow {
    /// Bottle id.
    pub id: String,
    /// Bottle (manifest) name.
    pub bottle: String,
    /// Agent name.
    pub agent: String,
    /// `start` or `run`.
    pub mode: String,
    /// Agent container state (`running`, `exited`, `created`, …).
    pub state: String,
    /// Sidecar container state.
    pub sidecar: String,
    /// Launcher pid.
    pub pid: Option<u32>,
    /// Whether the launcher is alive (false = stale; `bottle reap` removes it).
    pub live: bool,
    /// Creation time of the agent container (unix seconds).
    pub created: i64,
    /// The backend running it.
    pub backend: &'static str,
    /// Display label (`bottle spawn --label`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Display colour (`bottle spawn --color`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// The agent's image.
    pub image: String,
    /// Egress routes of its policy (0: no way out at all).
    pub routes: Option<u64>,
    /// Seconds since the agent container was created.
    pub age_secs: i64,
    /// The git gate's tickets waiting for `bottle approve` / `bottle deny`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending_tickets: Vec<super::tickets::PendingTicket>,
}

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
        rows.push(BottleRow {
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
    for s in super::sessions::reconcile(&live) {
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
        });
    }
    if !rows.is_empty() {
        let mut tickets = super::tickets::pending(docker).await;
        for r in &mut rows {
            r.pending_tickets = tickets.remove(&r.id).unwrap_or_default();
        }
    }
    rows.sort_by_key(|r| r.created);
    Ok(rows)
}

/// Prints `bottle list` as a table.
pub fn print_table(rows: &[BottleRow]) {
    if rows.is_empty() {
        println!("no bottles");
        return;
    }
    println!(
        "{:<14} {:<16} {:<16} {:<6} {:<9} {:<9} {:<7} {:<6} {:<16} LAUNCHER",
        "ID", "BOTTLE", "AGENT", "MODE", "AGENT", "SIDECAR", "ROUTES", "AGE", "LABEL"
    );
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    for r in rows {
        let launcher = match (r.pid, r.live) {
            (Some(p), true) => format!("{p}"),
            (Some(p), false) => format!("{p} (dead: `bottle reap`)"),
            (None, _) => "?".into(),
        };
        let routes = match r.routes {
            Some(0) => "none".to_string(),
            Some(n) => n.to_string(),
            None => "?".into(),
        };
        let age = match r.age_secs {
            s if s < 120 => format!("{s}s"),
            s if s < 7200 => format!("{}m", s / 60),
            s => format!("{}h", s / 3600),
        };
        let label = crate::termfilter::escape_str(r.label.as_deref().unwrap_or("-"));
        let label = match (tty, r.color.as_deref().and_then(ansi_color)) {
            (true, Some(code)) => format!("\x1b[{code}m{label:<16}\x1b[0m"),
            _ => format!("{label:<16}"),
        };
        println!(
            "{:<14} {:<16} {:<16} {:<6} {:<9} {:<9} {:<7} {:<6} {} {}",
            r.id, r.bottle, r.agent, r.mode, r.state, r.sidecar, routes, age, label, launcher
        );
        for t in &r.pending_tickets {
            println!(
                "  ticket {}: rule {} in {} (remote {}, commit {}) — `bottle approve {} --reason …` or `bottle deny`",
                t.id,
                t.rule,
                t.path.as_deref().unwrap_or("?"),
                t.remote,
                t.commit.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("?"),
                t.id
            );
        }
    }
}

/// The SGR code of a `--color` name.
pub fn ansi_color(name: &str) -> Option<u8> {
    Some(match name {
        "red" => 31,
        "green" => 32,
        "yellow" => 33,
        "blue" => 34,
        "magenta" => 35,
        "cyan" => 36,
        "white" => 37,
        _ => return None,
    })
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
    write_logs(docker.logs(&c, Some(opts)), &mut out, follow).await
}

/// Writes container log frames to `out` as `bottle logs` prints them. Agent output is
/// untrusted (and audit lines quote agent-chosen hosts and paths): terminal control sequences
/// are escaped ([`crate::termfilter`]); stdout and stderr frames have their own filter state.
/// `follow` flushes after every frame.
pub async fn write_logs<S, E>(frames: S, out: &mut impl Write, follow: bool) -> Result<()>
where
    S: futures_util::Stream<Item = std::result::Result<bollard::container::LogOutput, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut frames = std::pin::pin!(frames);
    let mut filters = [
        crate::termfilter::TermFilter::new(),
        crate::termfilter::TermFilter::new(),
    ];
    while let Some(item) = frames.next().await {
        let chunk = item.context("reading container logs")?;
        let f = &mut filters[usize::from(matches!(
            chunk,
            bollard::container::LogOutput::StdErr { .. }
        ))];
        out.write_all(&f.push(&chunk.into_bytes()))?;
        if follow {
            out.flush()?;
        }
    }
    for f in &mut filters {
        out.write_all(&f.finish())?;
    }
    out.flush()?;
    Ok(())
}

/// Ends a bottle: asks its launcher to tear down (SIGTERM), then removes whatever is left.
pub async fn end(docker: &Docker, id: &str) -> Result<super::reap::ReapReport> {
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
