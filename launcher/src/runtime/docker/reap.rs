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
    /// Containers removed.
    pub containers: usize,
    /// Networks removed.
    pub networks: usize,
    /// Runtime directories removed.
    pub dirs: usize,
}

/// Label filter matching every bottle object.
pub fn bottle_filter(extra: Option<String>) -> HashMap<String, Vec<String>> {
    let mut v = vec![labels::ID.to_string()];
    v.extend(extra);
    HashMap::from([("label".to_string(), v)])
}

/// How many containers and networks carry bottle `id`'s label.
pub async fn objects_of(docker: &Docker, id: &str) -> Result<usize> {
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
    Ok(containers.context("listing bottle containers")?.len()
        + networks.context("listing bottle networks")?.len())
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
    for c in &containers {
        let l = c.labels.clone().unwrap_or_default();
        let Some(id) = l.get(labels::ID).cloned() else {
            continue;
        };
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
    for (id, (alive, cs, ns)) in &by_id {
        if !force && (*alive || StateDir::of(id).is_ok_and(|d| d.teardown_running())) {
            continue;
        }
        for c in cs {
            match docker.remove_container(c, Some(rm.clone())).await {
                Ok(()) => report.containers += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => eprintln!("bottle: warning: removing container {c}: {e}"),
            }
        }
        for n in ns {
            match docker.remove_network(n).await {
                Ok(()) => report.networks += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => eprintln!("bottle: warning: removing network {n}: {e}"),
            }
        }
        if let Ok(d) = StateDir::of(id) {
            if d.path().exists() && d.remove().is_ok() {
                report.dirs += 1;
            }
        }
        if !force {
            // Only stale bottles (their launcher or supervisor is gone) count as reaped.
            crate::runtime::events::emit("session.reaped", id, serde_json::json!({}));
            crate::runtime::sessions::update(id, "reaped", None);
        }
        report.bottles.push(id.clone());
    }
    // Runtime dirs with no objects left and a dead launcher.
    let known: BTreeSet<&String> = by_id.keys().collect();
    for id in statedir::list_ids() {
        if known.contains(&id) || only.is_some_and(|o| o != id) {
            continue;
        }
        let Ok(d) = StateDir::of(&id) else { continue };
        let alive = d.read_record().is_some_and(|r| {
            let mut l = HashMap::new();
            l.insert(labels::LAUNCHER_PID.to_string(), r.pid.to_string());
            launcher_alive(&l)
        });
        // A directory being populated right now by a live launcher has no record yet but
        // is young; leave directories younger than a minute alone.
        let young = std::fs::metadata(d.path())
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
