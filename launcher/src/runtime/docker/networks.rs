//! The bottle's Docker networks: the per-bottle internal network (an explicit /28 of the
//! address pool, `--internal`), the sidecars' egress network (shared by default, per bottle
//! with `BOTTLE_EGRESS=per-bottle`, or an existing one named by `BOTTLE_EGRESS_NETWORK`), and
//! the subnet allocation both share (a free subnet of the pool, retried when another launcher
//! takes it concurrently).
use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptions;
use bollard::Docker;
use ipnet::Ipv4Net;

use super::probe::EngineFacts;
use crate::runtime::labels::{self, BottleLabels};
use crate::runtime::subnet;

/// Label marking the shared egress network of all sidecars (never reaped).
pub const SHARED_LABEL: &str = "io.bottle.shared";

/// Name of the shared egress network.
pub const SHARED_EGRESS: &str = "bottle-egress";

/// Creates bottle `id`'s internal network; returns its id and subnet.
pub async fn internal_network(
    docker: &Docker,
    facts: &EngineFacts,
    id: &str,
    blabels: &BottleLabels,
    seed: u64,
) -> Result<(String, Ipv4Net)> {
    isolated_network(docker, facts, id, blabels, seed, "int", "internal").await
}

/// The models network of bottle `id` (only when it has model sidecars): internal like the
/// bottle network, holding the models, the agent and the sidecar (for readiness probes only:
/// the sidecar's listeners are bound to its address on the bottle network, which a model has
/// no route to), so a model can reach neither the proxy, nor its DNS, nor the git gate.
pub async fn models_network(
    docker: &Docker,
    facts: &EngineFacts,
    id: &str,
    blabels: &BottleLabels,
    seed: u64,
) -> Result<(String, Ipv4Net)> {
    isolated_network(docker, facts, id, blabels, seed, "mod", "models").await
}

async fn isolated_network(
    docker: &Docker,
    facts: &EngineFacts,
    id: &str,
    blabels: &BottleLabels,
    seed: u64,
    suffix: &str,
    role: &str,
) -> Result<(String, Ipv4Net)> {
    let pool = subnet::pool_from_env()?;
    let mut options = HashMap::from([(
        "com.docker.network.bridge.inhibit_ipv4".to_string(),
        "true".to_string(),
    )]);
    if facts.has_isolated_gateway_mode() {
        options.insert(
            "com.docker.network.bridge.gateway_mode_ipv4".into(),
            "isolated".into(),
        );
        options.insert(
            "com.docker.network.bridge.gateway_mode_ipv6".into(),
            "isolated".into(),
        );
    }
    create_network_in_pool(
        docker,
        NetSpec {
            pool,
            prefix: subnet::PREFIX,
            name: labels::name(id, suffix),
            labels: blabels.for_role(role),
            internal: true,
            options,
            seed,
        },
    )
    .await
}

/// The egress network of bottle `id`: `existing` (an id or name, `None` = not ours), or the
/// shared one, or with `per_bottle` (`BOTTLE_EGRESS=per-bottle`) a new per-bottle bridge with
/// inter-container traffic off. Returns its id and, when this bottle created it, the id again.
/// `seeds` are (shared, per-bottle).
pub async fn egress_network(
    docker: &Docker,
    existing: Option<&str>,
    per_bottle: bool,
    id: &str,
    blabels: &BottleLabels,
    seeds: (u64, u64),
) -> Result<(String, Option<String>)> {
    if let Some(n) = existing {
        let net = docker
            .inspect_network(n, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
            .with_context(|| {
                format!("BOTTLE_EGRESS_NETWORK={n} does not name an existing network")
            })?;
        return Ok((net.id.unwrap_or_else(|| n.to_string()), None));
    }
    if !per_bottle {
        return Ok((shared_egress_network(docker, seeds.0).await?, None));
    }
    let pool = subnet::pool_from_env()?;
    let options = HashMap::from([(
        "com.docker.network.bridge.enable_icc".to_string(),
        "false".to_string(),
    )]);
    let (id, _) = create_network_in_pool(
        docker,
        NetSpec {
            pool,
            prefix: subnet::PREFIX,
            name: labels::name(id, "egress"),
            labels: blabels.for_role("egress"),
            internal: false,
            options,
            seed: seeds.1,
        },
    )
    .await?;
    Ok((id.clone(), Some(id)))
}

/// What [`create_network_in_pool`] creates.
struct NetSpec {
    pool: Ipv4Net,
    prefix: u8,
    name: String,
    labels: HashMap<String, String>,
    internal: bool,
    options: HashMap<String, String>,
    seed: u64,
}

/// Finds or creates the shared egress network (a bridge with inter-container traffic off, on a
/// /24 of the pool). Creation is serialised by a lock file: Docker 20.10 allows two networks
/// with the same name.
async fn shared_egress_network(docker: &Docker, seed: u64) -> Result<String> {
    let find = || async {
        let f = HashMap::from([("label".to_string(), vec![format!("{SHARED_LABEL}=egress")])]);
        let mut nets = docker
            .list_networks(Some(
                bollard::query_parameters::ListNetworksOptionsBuilder::default()
                    .filters(&f)
                    .build(),
            ))
            .await
            .context("listing networks")?;
        nets.sort_by(|a, b| a.created.cmp(&b.created));
        anyhow::Ok(nets.into_iter().find_map(|n| n.id))
    };
    if let Some(id) = find().await? {
        return Ok(id);
    }
    let lock_path = crate::runtime::statedir::base_dir()?.join("egress.lock");
    let lock = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
        if let Some(d) = lock_path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).context("locking egress.lock");
        }
        Ok(f)
    })
    .await
    .context("waiting for the egress lock")??;
    let result = async {
        if let Some(id) = find().await? {
            return Ok(id);
        }
        let (id, _) = create_network_in_pool(
            docker,
            NetSpec {
                pool: subnet::pool_from_env()?,
                prefix: 24,
                name: SHARED_EGRESS.into(),
                labels: HashMap::from([(SHARED_LABEL.to_string(), "egress".to_string())]),
                internal: false,
                options: HashMap::from([(
                    "com.docker.network.bridge.enable_icc".to_string(),
                    "false".to_string(),
                )]),
                seed,
            },
        )
        .await?;
        Ok(id)
    }
    .await;
    drop(lock);
    result
}

/// Creates a bridge network on a free subnet of the pool, retrying when another launcher
/// takes the same subnet concurrently.
async fn create_network_in_pool(docker: &Docker, spec: NetSpec) -> Result<(String, Ipv4Net)> {
    let mut attempt = 0u64;
    let mut last_err = None;
    while attempt < 12 {
        let used = used_subnets(docker).await?;
        let free = subnet::free_subnets_of(
            spec.pool,
            spec.prefix,
            &used,
            spec.seed.wrapping_add(attempt.wrapping_mul(7919)),
        );
        let Some(sn) = free.first().copied() else {
            bail!(
                "no free /{} left in the bottle address pool {}: remove stale networks (`bottle reap`) or set BOTTLE_SUBNET_POOL to a larger range",
                spec.prefix,
                spec.pool
            );
        };
        let req = NetworkCreateRequest {
            name: spec.name.clone(),
            driver: Some("bridge".into()),
            internal: Some(spec.internal),
            enable_ipv6: Some(false),
            attachable: Some(false),
            labels: Some(spec.labels.clone()),
            options: Some(spec.options.clone()),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(sn.to_string()),
                    ..Default::default()
                }]),
                options: None,
            }),
            ..Default::default()
        };
        match docker.create_network(req).await {
            Ok(r) => return Ok((r.id, sn)),
            Err(e) => {
                let msg = e.to_string();
                if msg.contains("overlap") || msg.contains("in use") {
                    last_err = Some(e);
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                    continue;
                }
                return Err(e).with_context(|| format!("creating network {} on {sn}", spec.name));
            }
        }
    }
    Err(anyhow!("{}", last_err.map(|e| e.to_string()).unwrap_or_default())).context(
        "creating a bottle network: every candidate subnet was taken concurrently; retry, or run `bottle reap`",
    )
}

/// Every IPv4 subnet used by an existing network.
async fn used_subnets(docker: &Docker) -> Result<Vec<Ipv4Net>> {
    let nets = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .context("listing networks to find a free subnet")?;
    Ok(nets
        .iter()
        .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
        .flatten()
        .filter_map(|c| c.subnet.as_ref()?.parse::<Ipv4Net>().ok())
        .collect())
}

/// Removes network `n`; `Err` unless it is gone (removed now or before).
pub async fn remove(docker: &Docker, n: &str) -> std::result::Result<(), bollard::errors::Error> {
    match docker.remove_network(n).await {
        Err(e) if !super::is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}
