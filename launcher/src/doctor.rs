//! `bottle doctor`: checks the Docker engine and this machine for what bottles need, and says what
//! to fix. Runtimes are probed by actually starting a container under each one.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt as _;
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::images::{self, BuildOpts, ImageKind};

/// The address range bottle networks are carved from (as /28s) unless `BOTTLE_SUBNET_POOL` is set.
/// Must equal the launcher's network code (`runtime::subnet::DEFAULT_POOL`).
pub const DEFAULT_SUBNET_POOL: &str = "10.213.0.0/16";
/// Prefix length of one bottle network.
pub const BOTTLE_SUBNET_PREFIX: u8 = 28;
/// How many bridge networks Docker's default address pools hold (15 × /16 in 172.17–31 plus
/// 16 × /20 in 192.168; the 28th extra network failed on a stock 20.10 engine).
pub const DEFAULT_POOL_NETWORKS: usize = 31;

/// Severity of a [`Finding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// bottle cannot work until this is fixed.
    Error,
    /// bottle works, with a caveat.
    Warn,
    /// For information.
    Info,
}

/// One problem or remark, with what to do about it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Severity.
    pub level: Level,
    /// What was found.
    pub what: String,
    /// What to do (empty for pure information).
    pub fix: String,
}

/// The engine's identity.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EngineReport {
    /// Server version, e.g. `20.10.24+dfsg1`.
    pub version: String,
    /// Highest API version the server speaks.
    pub api_version: String,
    /// Lowest API version the server accepts.
    pub min_api_version: String,
    /// The API version this client uses after `negotiate_version`.
    pub negotiated_api_version: String,
    /// Operating system / kernel of the engine host.
    pub kernel: String,
    /// Default runtime name.
    pub default_runtime: String,
    /// Security options (seccomp, apparmor, userns, rootless, …).
    pub security_options: Vec<String>,
    /// cgroup version (`1` or `2`).
    pub cgroup_version: String,
    /// Whether the engine supports bridge `gateway_mode_ipv4=isolated` (≥ 28).
    pub isolated_gateway_mode: bool,
    /// Whether the engine has the CVE-2024-29018 fix (no host-namespace DNS forwarding from
    /// internal networks); bottle pins the agent's DNS to the sidecar either way.
    pub internal_dns_fix: bool,
}

/// The result of starting a probe container under one runtime.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeProbe {
    /// Runtime name as registered with the engine.
    pub name: String,
    /// Whether a container started and exited 0 under it.
    pub works: bool,
    /// What the probe printed, or why it failed.
    pub detail: String,
    /// How long the probe took.
    pub millis: u64,
}

/// Presence of one bottle image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageStatus {
    /// Image kind name.
    pub kind: String,
    /// The tag the current inputs map to (empty when it cannot be computed).
    pub tag: String,
    /// Whether that tag exists.
    pub present: bool,
    /// Other (outdated) images of this kind still stored.
    pub stale: usize,
}

/// Address pools and networks.
#[derive(Debug, Clone, Serialize, Default)]
pub struct NetworkReport {
    /// Bridge networks (all).
    pub bridge_networks: usize,
    /// Bridge networks with a subnet in Docker's default pools.
    pub default_pool_networks: usize,
    /// Roughly how many more networks the default pools hold.
    pub default_pool_headroom: usize,
    /// The pool bottle networks come from.
    pub bottle_pool: String,
    /// Bottle networks (any `io.bottle.*` label: per-bottle and shared egress networks).
    pub bottle_networks: usize,
    /// Free /28 subnets left in the bottle pool.
    pub bottle_pool_free: usize,
    /// Non-bottle networks or host routes overlapping the bottle pool.
    pub pool_conflicts: Vec<String>,
    /// Whether the default `bridge` network has IPv6 enabled.
    pub default_bridge_ipv6: bool,
    /// Whether IPv6 is enabled on the host (`net.ipv6.conf.all.disable_ipv6 = 0`).
    pub host_ipv6: bool,
}

/// Everything `bottle doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No error-level finding.
    pub ok: bool,
    /// The engine, if reachable.
    pub engine: Option<EngineReport>,
    /// Runtime probes.
    pub runtimes: Vec<RuntimeProbe>,
    /// Images.
    pub images: Vec<ImageStatus>,
    /// Networks and pools.
    pub networks: Option<NetworkReport>,
    /// Problems and remarks, most severe first.
    pub findings: Vec<Finding>,
}

/// Runs every check, prints the report (human text, or one JSON document with `json`) on stdout,
/// and returns the process exit code: 0 when bottle can work here, 1 otherwise.
///
/// `docker` is the result of connecting to the engine; a connection error is reported, not returned.
pub async fn doctor(docker: anyhow::Result<Docker>, json: bool) -> anyhow::Result<i32> {
    let report = check(docker).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.ok { 0 } else { 1 })
}

/// Collects the [`Report`] without printing it.
pub async fn check(docker: anyhow::Result<Docker>) -> Report {
    let mut findings = Vec::new();
    let mut report = Report {
        ok: false,
        engine: None,
        runtimes: Vec::new(),
        images: Vec::new(),
        networks: None,
        findings: Vec::new(),
    };
    let docker = match docker {
        Ok(d) => match tokio::time::timeout(Duration::from_secs(10), d.negotiate_version()).await {
            Ok(Ok(d)) => Some(d),
            Ok(Err(e)) => {
                findings.push(unreachable_finding(&e.to_string()));
                None
            }
            Err(_) => {
                findings.push(unreachable_finding("no answer within 10 s"));
                None
            }
        },
        Err(e) => {
            findings.push(unreachable_finding(&format!("{e:#}")));
            None
        }
    };
    if let Some(docker) = docker {
        engine_checks(&docker, &mut report, &mut findings).await;
    }
    local_tool_checks(&report, &mut findings);
    findings.sort_by_key(|f| match f.level {
        Level::Error => 0,
        Level::Warn => 1,
        Level::Info => 2,
    });
    report.ok = !findings.iter().any(|f| f.level == Level::Error);
    report.findings = findings;
    report
}

fn unreachable_finding(err: &str) -> Finding {
    Finding {
        level: Level::Error,
        what: format!("cannot reach the Docker engine: {err}"),
        fix: "start Docker (`systemctl start docker`, or `dockerd &`), check DOCKER_HOST, and make sure \
              you may use the socket (root, or the `docker` group)"
            .into(),
    }
}

async fn engine_checks(docker: &Docker, report: &mut Report, findings: &mut Vec<Finding>) {
    let mut engine = EngineReport {
        negotiated_api_version: docker.client_version().to_string(),
        ..Default::default()
    };
    match docker.version().await {
        Ok(v) => {
            engine.version = v.version.unwrap_or_default();
            engine.api_version = v.api_version.unwrap_or_default();
            engine.min_api_version = v.min_api_version.unwrap_or_default();
            engine.kernel = format!(
                "{}/{} {}",
                v.os.unwrap_or_default(),
                v.arch.unwrap_or_default(),
                v.kernel_version.unwrap_or_default()
            );
        }
        Err(e) => findings.push(Finding {
            level: Level::Error,
            what: format!("the engine did not report its version: {e}"),
            fix: "check that DOCKER_HOST points at a Docker engine".into(),
        }),
    }
    let (major, minor, patch) = parse_version(&engine.version);
    engine.isolated_gateway_mode = major >= 28;
    engine.internal_dns_fix = has_internal_dns_fix(major, minor, patch);
    if !engine.version.is_empty() && major < 20 {
        findings.push(Finding {
            level: Level::Error,
            what: format!(
                "Docker {} is too old (bottle needs 20.10 or newer)",
                engine.version
            ),
            fix: "upgrade the Docker engine".into(),
        });
    }
    if !engine.isolated_gateway_mode {
        findings.push(Finding {
            level: Level::Info,
            what: format!(
                "engine {} has no bridge gateway_mode=isolated (needs 28.0); bottle networks use \
                 inhibit_ipv4 instead, which also keeps the agent off host services",
                engine.version
            ),
            fix: String::new(),
        });
    }
    if !engine.internal_dns_fix {
        findings.push(Finding {
            level: Level::Info,
            what: format!(
                "engine {} lacks the CVE-2024-29018 fix (embedded DNS forwards from internal networks); \
                 bottle pins every agent's DNS to its sidecar, which closes that path",
                engine.version
            ),
            fix: "upgrading to Docker ≥ 26 is still recommended".into(),
        });
    }

    let mut runtimes: Vec<String> = Vec::new();
    match docker.info().await {
        Ok(info) => {
            engine.default_runtime = info.default_runtime.unwrap_or_default();
            engine.security_options = info.security_options.unwrap_or_default();
            engine.cgroup_version = info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_default();
            runtimes = info.runtimes.unwrap_or_default().into_keys().collect();
            runtimes.sort();
        }
        Err(e) => findings.push(Finding {
            level: Level::Error,
            what: format!("the engine did not answer `info`: {e}"),
            fix: "check the engine's health (`docker info`)".into(),
        }),
    }
    if !engine
        .security_options
        .iter()
        .any(|s| s.contains("seccomp"))
    {
        findings.push(Finding {
            level: Level::Warn,
            what: "the engine has no seccomp profile; agents get the full syscall surface".into(),
            fix: "run a Docker engine built with seccomp support".into(),
        });
    }
    if engine
        .security_options
        .iter()
        .any(|s| s.contains("rootless"))
    {
        findings.push(Finding {
            level: Level::Info,
            what: "rootless engine: bind-mounted workspaces are owned by a mapped uid".into(),
            fix: String::new(),
        });
    }
    report.engine = Some(engine);

    // Images.
    let opts = BuildOpts::default();
    let mut sidecar_image = None;
    for kind in ImageKind::ALL {
        let status = image_status(docker, kind, &opts, findings).await;
        if kind == ImageKind::Sidecar && status.present {
            sidecar_image = Some(status.tag.clone());
        }
        report.images.push(status);
    }
    if sidecar_image.is_none() {
        sidecar_image = newest_image_of(docker, ImageKind::Sidecar).await;
    }
    // The test images (test-upstream, test-sshd) are only for bottle's own tests.
    let needed = |i: &&ImageStatus| !i.present && !i.kind.starts_with("test-");
    if report.images.iter().any(|i| needed(&i)) {
        let missing: Vec<&str> = report
            .images
            .iter()
            .filter(needed)
            .map(|i| i.kind.as_str())
            .collect();
        findings.push(Finding {
            level: Level::Warn,
            what: format!("images not built yet: {}", missing.join(", ")),
            // Name exactly what is missing, so the command builds what the warning lists.
            fix: format!(
                "run `bottle images build {}` (`bottle start` also builds what its agent needs on first use)",
                missing.join(" ")
            ),
        });
    }

    // Runtimes: probe, don't trust the list.
    for name in &runtimes {
        if name.starts_with("io.containerd.") {
            continue; // containerd shim aliases of runc, not separate runtimes
        }
        let probe = match &sidecar_image {
            Some(image) => probe_runtime(docker, name, image).await,
            None => RuntimeProbe {
                name: name.clone(),
                works: false,
                detail: "not probed: no sidecar image to probe with".into(),
                millis: 0,
            },
        };
        if !probe.works && sidecar_image.is_some() {
            let level = if name == "runc" {
                Level::Error
            } else {
                Level::Warn
            };
            findings.push(Finding {
                level,
                what: format!(
                    "runtime {name} is registered but a container failed under it: {}",
                    probe.detail
                ),
                fix: if name == "runc" {
                    "fix the engine's runc installation (`docker run --rm <image>` must work)"
                        .into()
                } else {
                    format!("bottle will not use {name}; `runtime = \"auto\"` falls back to runc")
                },
            });
        }
        report.runtimes.push(probe);
    }
    if !runtimes.iter().any(|r| r == "runsc") {
        findings.push(Finding {
            level: Level::Info,
            what: "gVisor (runsc) is not registered; bottles run under runc".into(),
            fix: "for a stronger sandbox install gVisor and register it (`dockerd --add-runtime runsc=/usr/bin/runsc`)".into(),
        });
    }

    // Networks and pools.
    report.networks = Some(network_checks(docker, findings).await);
}

async fn image_status(
    docker: &Docker,
    kind: ImageKind,
    opts: &BuildOpts,
    findings: &mut Vec<Finding>,
) -> ImageStatus {
    let (tag, present) = match images::image_ref(kind, opts) {
        Ok(r) => {
            let present = images::image_exists(docker, &r).await.unwrap_or(false);
            (r.tag, present)
        }
        Err(e) => {
            findings.push(Finding {
                level: Level::Warn,
                what: format!("cannot compute the {kind} image tag: {e:#}"),
                fix: "set BOTTLE_SRC_DIR to a bottle checkout".into(),
            });
            (String::new(), false)
        }
    };
    let all = images::stored_tags(docker, kind).await;
    let stale = all.iter().filter(|t| **t != tag).count();
    ImageStatus {
        kind: kind.name().into(),
        tag,
        present,
        stale,
    }
}

async fn newest_image_of(docker: &Docker, kind: ImageKind) -> Option<String> {
    images::stored_tags(docker, kind).await.into_iter().next()
}

/// Starts `image --version` under runtime `name` with no network, and reports whether it exited 0.
pub async fn probe_runtime(docker: &Docker, name: &str, image: &str) -> RuntimeProbe {
    let started = Instant::now();
    let cname = format!(
        "bottle-doctor-{}-{}",
        name.replace(['/', '.'], "-"),
        std::process::id()
    );
    let result = probe_inner(docker, name, image, &cname).await;
    let _ = docker
        .remove_container(
            &cname,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await;
    let (works, detail) = match result {
        Ok(out) => (true, out),
        Err(e) => (false, e),
    };
    RuntimeProbe {
        name: name.into(),
        works,
        detail,
        millis: started.elapsed().as_millis() as u64,
    }
}

async fn probe_inner(
    docker: &Docker,
    runtime: &str,
    image: &str,
    cname: &str,
) -> Result<String, String> {
    let labels = HashMap::from([
        ("io.bottle.managed".to_string(), "1".to_string()),
        ("io.bottle.doctor".to_string(), "1".to_string()),
    ]);
    let body = ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(vec!["--version".into()]),
        labels: Some(labels),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            runtime: Some(runtime.into()),
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(cname).build()),
            body,
        )
        .await
        .map_err(|e| format!("create failed: {e}"))?;
    docker
        .start_container(cname, None)
        .await
        .map_err(|e| format!("start failed: {e}"))?;
    let mut wait = docker.wait_container(cname, None);
    let code = match tokio::time::timeout(Duration::from_secs(30), wait.next()).await {
        Err(_) => return Err("the probe container did not exit within 30 s".into()),
        Ok(None) => return Err("the engine ended the wait without an exit code".into()),
        Ok(Some(Ok(r))) => r.status_code,
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
        Ok(Some(Err(e))) => return Err(format!("wait failed: {e}")),
    };
    let mut out = String::new();
    let mut logs = docker.logs(
        cname,
        Some(
            LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build(),
        ),
    );
    while let Some(Ok(chunk)) = logs.next().await {
        out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        if out.len() > 400 {
            break;
        }
    }
    let out = out.trim().chars().take(200).collect::<String>();
    if code == 0 {
        Ok(out)
    } else {
        Err(format!("exit code {code}: {out}"))
    }
}

async fn network_checks(docker: &Docker, findings: &mut Vec<Finding>) -> NetworkReport {
    let pool_text = crate::settings::current()
        .subnet_pool()
        .unwrap_or_else(|| DEFAULT_SUBNET_POOL.into());
    let mut rep = NetworkReport {
        bottle_pool: pool_text.clone(),
        ..Default::default()
    };
    let pool: Option<Ipv4Net> = match pool_text.trim().parse::<Ipv4Net>() {
        Ok(p) if p.prefix_len() <= BOTTLE_SUBNET_PREFIX => Some(p.trunc()),
        _ => {
            findings.push(Finding {
                level: Level::Error,
                what: format!("BOTTLE_SUBNET_POOL={pool_text:?} is not an IPv4 CIDR of at least a /{BOTTLE_SUBNET_PREFIX}"),
                fix: format!("fix or unset it (default {DEFAULT_SUBNET_POOL})"),
            });
            None
        }
    };
    let networks = match docker
        .list_networks(Some(ListNetworksOptionsBuilder::default().build()))
        .await
    {
        Ok(n) => n,
        Err(e) => {
            findings.push(Finding {
                level: Level::Error,
                what: format!("cannot list networks: {e}"),
                fix: "check the engine's health (`docker network ls`)".into(),
            });
            return rep;
        }
    };
    let default_pools: [Ipv4Net; 2] = [
        Ipv4Net::new(Ipv4Addr::new(172, 16, 0, 0), 12).expect("valid"),
        Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16).expect("valid"),
    ];
    let mut bottle_used = 0usize;
    for n in &networks {
        let name = n.name.clone().unwrap_or_default();
        let is_bridge = n.driver.as_deref() == Some("bridge");
        let is_bottle = n
            .labels
            .as_ref()
            .is_some_and(|l| l.keys().any(|k| k.starts_with("io.bottle.")));
        let subnets: Vec<Ipv4Net> = n
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .map(|c| {
                c.iter()
                    .filter_map(|c| c.subnet.as_ref()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if name == "bridge" {
            rep.default_bridge_ipv6 = n.enable_ipv6.unwrap_or(false);
        }
        if is_bridge {
            rep.bridge_networks += 1;
            if name != "bridge"
                && subnets
                    .iter()
                    .any(|s| default_pools.iter().any(|p| p.contains(s)))
            {
                rep.default_pool_networks += 1;
            }
        }
        if is_bottle {
            rep.bottle_networks += 1;
        }
        if let Some(pool) = pool {
            for s in &subnets {
                if pool.contains(s) || s.contains(&pool) {
                    if is_bottle {
                        bottle_used += 1usize
                            << (BOTTLE_SUBNET_PREFIX
                                .saturating_sub(s.prefix_len().min(BOTTLE_SUBNET_PREFIX)));
                    } else {
                        rep.pool_conflicts.push(format!("network {name} uses {s}"));
                    }
                }
            }
        }
    }
    rep.default_pool_headroom = DEFAULT_POOL_NETWORKS.saturating_sub(rep.default_pool_networks + 1);
    if let Some(pool) = pool {
        let total = 1usize << (BOTTLE_SUBNET_PREFIX - pool.prefix_len());
        rep.bottle_pool_free = total.saturating_sub(bottle_used);
        for (iface, route) in host_routes() {
            let docker_iface = iface.starts_with("br-")
                || iface.starts_with("docker")
                || iface.starts_with("veth");
            if !docker_iface
                && (pool.contains(&route) || route.contains(&pool))
                && route.prefix_len() > 0
            {
                rep.pool_conflicts
                    .push(format!("host route {route} via {iface}"));
            }
        }
    }
    if !rep.pool_conflicts.is_empty() {
        findings.push(Finding {
            level: Level::Error,
            what: format!(
                "the bottle subnet pool {} overlaps: {}",
                rep.bottle_pool,
                rep.pool_conflicts.join("; ")
            ),
            fix: "set BOTTLE_SUBNET_POOL to an unused private range (e.g. 10.214.0.0/16)".into(),
        });
    }
    if rep.default_pool_headroom < 5 {
        findings.push(Finding {
            level: Level::Warn,
            what: format!(
                "{} networks use Docker's default address pools (about {DEFAULT_POOL_NETWORKS} fit); \
                 other Docker projects may soon fail with \"could not find an available, non-overlapping \
                 IPv4 address pool\" (bottle uses its own pool)",
                rep.default_pool_networks
            ),
            fix: "remove unused networks (`docker network prune`) or set default-address-pools in daemon.json".into(),
        });
    }
    rep.host_ipv6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .map(|s| s.trim() == "0")
        .unwrap_or(false);
    findings.push(Finding {
        level: Level::Info,
        what: format!(
            "IPv6: host {}, default bridge {}; bottle networks are always created with IPv6 off",
            if rep.host_ipv6 { "on" } else { "off" },
            if rep.default_bridge_ipv6 { "on" } else { "off" }
        ),
        fix: String::new(),
    });
    rep
}

/// IPv4 routes of the host from `/proc/net/route` (interface, destination network).
fn host_routes() -> Vec<(String, Ipv4Net)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let addr = Ipv4Addr::from(u32::from_be(dest));
            let prefix = u32::from_be(mask).leading_ones() as u8;
            Some((f[0].to_string(), Ipv4Net::new(addr, prefix).ok()?))
        })
        .collect()
}

fn local_tool_checks(report: &Report, findings: &mut Vec<Finding>) {
    let missing = |k: &str| report.images.iter().any(|i| i.kind == k && !i.present);
    if missing("agent-shell") && !on_path("mmdebstrap") {
        findings.push(Finding {
            level: Level::Warn,
            what: "mmdebstrap is not installed, so the agent image cannot be built".into(),
            fix: "run scripts/deps.sh (apt-get install mmdebstrap)".into(),
        });
    }
    if missing("sidecar") && crate::settings::current().sidecar_bin.is_none() && !on_path("cargo") {
        findings.push(Finding {
            level: Level::Warn,
            what: "cargo is not on PATH, so the sidecar image cannot be built".into(),
            fix: "install Rust (rustup), or set BOTTLE_SIDECAR_BIN to a static bottle-sidecar"
                .into(),
        });
    }
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// `(major, minor, patch)` of a version like `20.10.24+dfsg1` (zeros where unparsable).
pub fn parse_version(v: &str) -> (u32, u32, u32) {
    let mut it = v
        .split(['+', '-', '~'])
        .next()
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

/// Whether the engine version has the CVE-2024-29018 fix (26.0.0, 25.0.5, 23.0.11).
fn has_internal_dns_fix(major: u32, minor: u32, patch: u32) -> bool {
    match major {
        m if m >= 26 => true,
        25 => minor > 0 || patch >= 5,
        24 => false,
        23 => minor > 0 || patch >= 11,
        _ => false,
    }
}

/// The human-readable report.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "bottle doctor");
    if let Some(e) = &r.engine {
        let _ = writeln!(
            s,
            "  engine     Docker {} (server API {}, min {}; bottle speaks {} after negotiation)",
            e.version, e.api_version, e.min_api_version, e.negotiated_api_version
        );
        let _ = writeln!(
            s,
            "  host       {}, cgroup v{}, security: {}",
            e.kernel,
            e.cgroup_version,
            if e.security_options.is_empty() {
                "none".into()
            } else {
                e.security_options.join(" ")
            }
        );
        let _ = writeln!(
            s,
            "  gateway    isolated gateway mode: {}; internal-network DNS fix: {}",
            if e.isolated_gateway_mode {
                "yes"
            } else {
                "no (engine < 28)"
            },
            if e.internal_dns_fix { "yes" } else { "no" }
        );
    }
    for p in &r.runtimes {
        let _ = writeln!(
            s,
            "  runtime    {:<10} {} ({} ms) {}",
            p.name,
            if p.works { "works" } else { "FAILS" },
            p.millis,
            p.detail
        );
    }
    for i in &r.images {
        let _ = writeln!(
            s,
            "  image      {:<14} {} {}{}",
            i.kind,
            if i.tag.is_empty() { "?" } else { &i.tag },
            if i.present { "present" } else { "missing" },
            if i.stale > 0 {
                format!(" ({} outdated)", i.stale)
            } else {
                String::new()
            }
        );
    }
    if let Some(n) = &r.networks {
        let _ = writeln!(
            s,
            "  networks   {} bridge networks; default pools: {} used, ~{} left of ~{}",
            n.bridge_networks,
            n.default_pool_networks,
            n.default_pool_headroom,
            DEFAULT_POOL_NETWORKS
        );
        let _ = writeln!(
            s,
            "  pool       {}: {} bottle networks, {} free /{} subnets",
            n.bottle_pool, n.bottle_networks, n.bottle_pool_free, BOTTLE_SUBNET_PREFIX
        );
    }
    if !r.findings.is_empty() {
        let _ = writeln!(s);
    }
    for f in &r.findings {
        let mark = match f.level {
            Level::Error => "error",
            Level::Warn => "warn ",
            Level::Info => "info ",
        };
        let _ = writeln!(s, "  {mark} {}", f.what);
        if !f.fix.is_empty() {
            let _ = writeln!(s, "        fix: {}", f.fix);
        }
    }
    let _ = writeln!(
        s,
        "\n{}",
        if r.ok {
            "ok: bottle can run here"
        } else {
            "NOT OK: fix the errors above"
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("20.10.24+dfsg1"), (20, 10, 24));
        assert_eq!(parse_version("28.2.2"), (28, 2, 2));
        assert_eq!(parse_version("garbage"), (0, 0, 0));
        assert!(!has_internal_dns_fix(20, 10, 24));
        assert!(has_internal_dns_fix(25, 0, 5));
        assert!(!has_internal_dns_fix(25, 0, 4));
        assert!(has_internal_dns_fix(23, 0, 11));
        assert!(has_internal_dns_fix(29, 0, 0));
    }

    #[test]
    fn default_pool_is_valid() {
        let p: Ipv4Net = DEFAULT_SUBNET_POOL.parse().unwrap();
        assert!(p.prefix_len() <= BOTTLE_SUBNET_PREFIX);
    }

    #[tokio::test]
    async fn unreachable_engine_is_an_error_with_a_fix() {
        let r = check(Err(anyhow::anyhow!("connection refused"))).await;
        assert!(!r.ok);
        let f = &r.findings[0];
        assert_eq!(f.level, Level::Error);
        assert!(f.what.contains("connection refused") && f.fix.contains("DOCKER_HOST"));
        assert!(render(&r).contains("NOT OK"));
    }

    /// Against the real engine: must report it, and runc must work when a sidecar image exists.
    #[tokio::test]
    async fn doctor_reports_the_local_engine() {
        let docker = match Docker::connect_with_local_defaults() {
            Ok(d) => match d.clone().negotiate_version().await {
                Ok(d) => d,
                Err(e) if std::env::var_os("CI").is_none() => {
                    eprintln!("skipped: no docker engine ({e})");
                    return;
                }
                Err(e) => panic!("CI is set but the Docker engine is unreachable: {e}"),
            },
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: no docker engine ({e})");
                return;
            }
            Err(e) => panic!("CI is set but the Docker engine is unreachable: {e}"),
        };
        let r = check(Ok(docker.clone())).await;
        let e = r.engine.as_ref().expect("engine reported");
        assert!(!e.version.is_empty() && !e.api_version.is_empty());
        assert!(!e.negotiated_api_version.is_empty());
        assert!(r.networks.is_some());
        assert_eq!(r.images.len(), ImageKind::ALL.len());
        let has_sidecar = !images::stored_tags(&docker, ImageKind::Sidecar)
            .await
            .is_empty();
        if has_sidecar {
            let runc = r
                .runtimes
                .iter()
                .find(|p| p.name == "runc")
                .expect("runc probed");
            assert!(runc.works, "runc probe failed: {}", runc.detail);
            assert!(
                runc.detail.starts_with("bottle-sidecar "),
                "{}",
                runc.detail
            );
            // A runtime that does not exist must be reported as failing, not trusted.
            let image = images::stored_tags(&docker, ImageKind::Sidecar)
                .await
                .remove(0);
            let bogus = probe_runtime(&docker, "no-such-runtime", &image).await;
            assert!(!bogus.works, "{}", bogus.detail);
        }
        let text = render(&r);
        assert!(text.contains("engine") && text.contains(&e.version));
    }

    #[test]
    fn host_routes_parse() {
        // Whatever the machine has, parsing must not panic and must yield valid networks.
        for (iface, net) in host_routes() {
            assert!(!iface.is_empty());
            assert!(net.prefix_len() <= 32);
        }
    }
}
