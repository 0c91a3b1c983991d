//! `bottle list`, `bottle logs`, `bottle end`: the rows of `bottle list` and their table. The
//! engine calls are in [`super::docker::verbs`].
use serde::Serialize;

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
    /// Its model sidecars, as `name (state)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The git gate's tickets waiting for `bottle approve` / `bottle deny`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending_tickets: Vec<super::tickets::PendingTicket>,
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
        let age = human_age(r.age_secs.max(0) as u64);
        let label = crate::termfilter::escape_str(r.label.as_deref().unwrap_or("-"));
        let label = match (tty, r.color.as_deref().and_then(ansi_color)) {
            (true, Some(code)) => format!("\x1b[{code}m{label:<16}\x1b[0m"),
            _ => format!("{label:<16}"),
        };
        println!(
            "{:<14} {:<16} {:<16} {:<6} {:<9} {:<9} {:<7} {:<6} {} {}",
            r.id, r.bottle, r.agent, r.mode, r.state, r.sidecar, routes, age, label, launcher
        );
        if !r.models.is_empty() {
            println!(
                "  models: {}",
                crate::termfilter::escape_str(&r.models.join(", "))
            );
        }
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

/// Writes container log frames to `out` as `bottle logs` prints them. Agent output is
/// untrusted (and audit lines quote agent-chosen hosts and paths): terminal control sequences
/// are escaped ([`crate::termfilter`]); stdout and stderr frames have their own filter state.
/// `follow` flushes after every frame.
pub async fn write_logs<S, E>(
    frames: S,
    out: &mut impl std::io::Write,
    follow: bool,
) -> anyhow::Result<()>
where
    S: futures_util::Stream<Item = std::result::Result<bollard::container::LogOutput, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    use anyhow::Context as _;
    use futures_util::StreamExt as _;
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

/// An age as `45s`, `12m` or `3h`.
pub fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}
