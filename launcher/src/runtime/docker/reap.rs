//! Removing the objects of bottles whose launcher is gone (`bottle reap`, and at each start).
use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use serde::Serialize;

use super::is_not_found;
use crate::runtime::labels::{self, launcher_alive};
use crate::runtime::statedir::{self, StateDir};

/// What a reap removed.
#[derive(Debug, Default, Serialize)]
pub struct ReapReport {
    /// Bottle ids whose objects were removed.
    pub bottles: Vec<String>,
    /// Each removed bottle: id, agent image, age, and why it was removed.
    pub details: Vec<ReapedBottle>,
    /// Containers removed.
    pub containers: usize,
    /// Networks removed.
    pub networks: usize,
    /// Runtime directories removed.
    pub dirs: usize,
}

/// One bottle a reap removed.
#[derive(Debug, Clone, Serialize)]
pub struct ReapedBottle {
    /// Bottle id.
    pub id: String,
    /// The agent container's image (empty when only other objects were left).
    pub image: String,
    /// Seconds since its oldest container was created (0 when unknown).
    pub age_secs: u64,
    /// `stale` (its launcher or supervisor is gone), `teardown_failed` (an earlier teardown
    /// left a marker) or `forced` (`bottle end`/`kill`).
    pub reason: &'static str,
}

impl ReapedBottle {
    /// The log line: `reaped b-… (image …, age 3m12s, stale)`.
    pub fn line(&self) -> String {
        format!(
            "reaped {} (image {}, age {}, {})",
            self.id,
            if self.image.is_empty() {
                "-"
            } else {
                &self.image
            },
            crate::runtime::verbs::human_age(self.age_secs),
            self.reason
        )
    }
}

/// Label filter matching every bottle object.
pub fn bottle_filter(extra: Option<String>) -> HashMap<String, Vec<String>> {
    let mut v = vec![labels::ID.to_string()];
    v.extend(extra);
    HashMap::from([("label".to_string(), v)])
}

/// How many containers and networks carry bottle `id`'s label, together.
pub async fn objects_of(docker: &Docker, id: &str) -> Result<usize> {
    let (c, n) = object_counts(docker, id).await?;
    Ok(c + n)
}

/// How many containers, and how many networks, carry bottle `id`'s label.
pub async fn object_counts(docker: &Docker, id: &str) -> Result<(usize, usize)> {
    let f = bottle_filter(Some(format!("{}={id}", labels::ID)));
    let (containers, networks) = tokio::join!(
        docker.list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&f)
                .build(),
        )),
        docker.list_networks(Some(
            ListNetworksOptionsBuilder::default().filters(&f).build(),
        ))
    );
    Ok((
        containers.context("listing bottle containers")?.len(),
        networks.context("listing bottle networks")?.len(),
    ))
}

/// Removes every bottle object (and runtime dir) whose launcher is dead and that no background
/// teardown is removing already. With `only`, only that bottle id is considered, and `force`
/// removes it even if its launcher (or a background teardown) is alive.
pub async fn reap(docker: &Docker, only: Option<&str>, force: bool) -> Result<ReapReport> {
    let extra = only.map(|id| format!("{}={id}", labels::ID));
    let f = bottle_filter(extra);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&f)
                .build(),
        ))
        .await
        .context("listing bottle containers")?;
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default().filters(&f).build(),
        ))
        .await
        .context("listing bottle networks")?;
    // id → (alive?, containers, networks)
    let mut by_id: BTreeMap<String, (bool, Vec<String>, Vec<String>)> = BTreeMap::new();
    // id → (agent image, oldest container's creation time)
    let mut facts: HashMap<String, (String, i64)> = HashMap::new();
    for c in &containers {
        let l = c.labels.clone().unwrap_or_default();
        let Some(id) = l.get(labels::ID).cloned() else {
            continue;
        };
        let f = facts.entry(id.clone()).or_insert((String::new(), i64::MAX));
        if l.get(labels::ROLE).map(String::as_str) == Some("agent") {
            f.0 = c.image.clone().unwrap_or_default();
        }
        f.1 = f.1.min(c.created.unwrap_or(i64::MAX));
        let e = by_id.entry(id).or_default();
        e.0 |= launcher_alive(&l);
        e.1.extend(c.id.clone());
    }
    for n in &networks {
        let l = n.labels.clone().unwrap_or_default();
        let Some(id) = l.get(labels::ID).cloned() else {
            continue;
        };
        let e = by_id.entry(id).or_default();
        e.0 |= launcher_alive(&l);
        e.2.extend(n.id.clone());
    }
    let mut report = ReapReport::default();
    let rm = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let marked: BTreeSet<String> = crate::runtime::sessions::teardown_markers()
        .into_iter()
        .filter(|id| only.is_none_or(|o| o == id))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for (id, (alive, cs, ns)) in &by_id {
        // A failed teardown's marker: its launcher is done with it, whatever its pid says.
        let failed = marked.contains(id);
        if !force && !failed && (*alive || StateDir::of(id).is_ok_and(|d| d.teardown_running())) {
            continue;
        }
        let mut left = 0;
        for c in cs {
            match docker.remove_container(c, Some(rm.clone())).await {
                Ok(()) => report.containers += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    left += 1;
                    eprintln!("bottle: warning: removing container {c}: {e}")
                }
            }
        }
        for n in ns {
            match docker.remove_network(n).await {
                Ok(()) => report.networks += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    left += 1;
                    eprintln!("bottle: warning: removing network {n}: {e}")
                }
            }
        }
        if failed && left == 0 {
            crate::runtime::sessions::clear_teardown_marker(id);
        }
        let (image, created) = facts.get(id).cloned().unwrap_or((String::new(), i64::MAX));
        let detail = ReapedBottle {
            id: id.clone(),
            image,
            age_secs: if created == i64::MAX {
                0
            } else {
                now.saturating_sub(created).max(0) as u64
            },
            reason: match (failed, force) {
                (true, _) => "teardown_failed",
                (false, true) => "forced",
                (false, false) => "stale",
            },
        };
        if let Ok(d) = StateDir::of(id) {
            if d.path().exists() && d.remove().is_ok() {
                report.dirs += 1;
            }
        }
        if !force {
            // Only stale bottles (their launcher or supervisor is gone) count as reaped.
            crate::runtime::events::emit(
                "session.reaped",
                id,
                serde_json::json!({"image": detail.image, "age_secs": detail.age_secs, "reason": detail.reason}),
            );
            crate::runtime::sessions::update(id, "reaped", None);
        }
        report.bottles.push(id.clone());
        report.details.push(detail);
    }
    // Markers whose objects are all gone already.
    for id in &marked {
        if !by_id.contains_key(id) {
            crate::runtime::sessions::clear_teardown_marker(id);
        }
    }
    // Runtime dirs with no objects left and a dead launcher.
    let known: BTreeSet<&String> = by_id.keys().collect();
    for id in statedir::list_ids() {
        if known.contains(&id) || only.is_some_and(|o| o != id) {
            continue;
        }
        let Ok(d) = StateDir::of(&id) else { continue };
        let record = d.read_record();
        let alive = record.as_ref().is_some_and(|r| {
            let mut l = HashMap::new();
            l.insert(labels::LAUNCHER_PID.to_string(), r.pid.to_string());
            launcher_alive(&l)
        });
        // A directory being populated right now by a live launcher has no record yet but
        // is young; leave directories younger than a minute alone. One with a record names
        // its launcher, so its age does not matter (another reap may have just removed its
        // objects).
        let young = record.is_none()
            && std::fs::metadata(d.path())
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().map(|e| e.as_secs() < 60).unwrap_or(true))
                .unwrap_or(false);
        let busy = d.teardown_running();
        if ((force && only.is_some()) || (!alive && !young && !busy)) && d.remove().is_ok() {
            report.dirs += 1;
        }
    }
    Ok(report)
}
