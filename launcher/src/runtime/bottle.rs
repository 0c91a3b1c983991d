//! Creating and tearing down the Docker objects of one bottle.
//!
//! Order (runtime dir and CA first), as two concurrent chains:
//! - egress network → sidecar created on it → stdio attached → joined to the internal network
//!   (static IP `.2`) once that exists → started, its bootstrap written down the attached
//!   stdin beside the start; that stdin then stays open as the sidecar's [`Lifeline`];
//! - internal network (explicit /28) + the agent's host files → agent created (internal only,
//!   static IP `.3`, DNS pinned to the sidecar). In `bottle run` mode (and when the image has
//!   `/bin/sh`) the agent is also attached and started here, beside the sidecar, its command
//!   held behind the start [`gate`]; otherwise it is started later by `run`/`start`.
//!
//! The launch returns once the sidecar printed its ready line (and the gate is open). Every
//! object carries the `io.bottle.*` labels; anything created before an error is removed again.
//! Teardown cuts the lifeline, stops the containers, then removes them and the networks side
//! by side.
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, HostConfigLogConfig,
    Ipam, IpamConfig, Mount, MountType, NetworkConnectRequest, NetworkCreateRequest,
    NetworkingConfig,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ListNetworksOptions,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use bottle_protocol::events::Event;
use futures_util::{FutureExt, StreamExt};
use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;

use super::engine::EngineFacts;
use super::labels::{self, BottleLabels};
use super::lifeline::{Lifeline, SidecarLink};
use super::spec::{LaunchSpec, RuntimeChoice, WorkspaceSpec};
use super::statedir::{self, now_rfc3339, SessionRecord, StateDir};
use super::timing::{timed, timed_sync};
use super::{ca, gate, roots, subnet};
use crate::guard::{self, GitChange, GitMount, GitSnapshot};

/// Proxy port of the sidecar.
pub const PROXY_PORT: u16 = 3128;
/// Name (and network alias) of the sidecar on the internal network.
pub const SIDECAR_NAME: &str = "bottle-sidecar";
/// The git gate's port on the sidecar's internal address (bottles with git remotes).
pub const GATE_PORT: u16 = 8418;
/// The git gate's mirrors inside the sidecar: a tmpfs of [`GATE_MIRROR_SIZE`].
pub const GATE_STATE_DIR: &str = "/var/lib/bottle-git";
/// Size of the mirrors' tmpfs; the sidecar's memory limit grows by as much (tmpfs pages count).
pub const GATE_MIRROR_SIZE: i64 = 1 << 30;
/// Where the agent's git finds the gate's URL rewrites (read-only).
pub const AGENT_GITCONFIG_PATH: &str = "/etc/gitconfig";

/// The agent's home directory (a tmpfs).
pub const AGENT_HOME: &str = "/home/agent";
/// Where the bottle CA alone is mounted in the agent.
pub const AGENT_CA_PATH: &str = "/etc/bottle/ca.pem";
/// Where the system prompt is mounted in the agent.
pub const AGENT_PROMPT_PATH: &str = "/etc/bottle/system-prompt.md";

/// How the agent container is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Interactive TTY (`bottle start`).
    Start,
    /// Unattended, no TTY (`bottle run`).
    Run,
    /// Detached with a TTY and open input (`bottle spawn`): a supervisor process owns it.
    Spawn,
}

impl Mode {
    /// The label value (`start`, `run`, `spawn`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Start => "start",
            Mode::Run => "run",
            Mode::Spawn => "spawn",
        }
    }
}

/// Options of one launch that are not part of the manifest.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Start or run.
    pub mode: Mode,
    /// Command overriding the agent's default command.
    pub cmd: Option<Vec<String>>,
    /// Extra non-secret env (e.g. `BOTTLE_PROMPT`).
    pub extra_env: Vec<(String, String)>,
    /// Use this existing network (id or name) as the sidecars' egress network instead of a
    /// per-bottle one (`BOTTLE_EGRESS_NETWORK`).
    pub egress_network: Option<String>,
    /// Print progress lines on stderr.
    pub verbose: bool,
    /// `bottle run`: return only once every object is removed (by default the removal
    /// finishes in a detached `bottle` process once the result is known).
    pub wait_teardown: bool,
}

/// A created bottle. Call [`Bottle::teardown`] when done.
pub struct Bottle {
    /// Engine connection.
    pub docker: Docker,
    /// Bottle id.
    pub id: String,
    /// Labels shared by every object.
    pub labels: BottleLabels,
    /// Runtime directory.
    pub state: StateDir,
    /// Internal network id.
    pub internal_net: Option<String>,
    /// Egress network id, when created by this bottle.
    pub egress_net: Option<String>,
    /// Sidecar container id.
    pub sidecar: Option<String>,
    /// Agent container id.
    pub agent: Option<String>,
    /// Sidecar IP on the internal network.
    pub sidecar_ip: Ipv4Addr,
    /// Agent IP on the internal network.
    pub agent_ip: Ipv4Addr,
    /// Internal subnet.
    pub subnet: Option<Ipv4Net>,
    /// OCI runtime the agent uses (`None` = engine default).
    pub runtime: Option<String>,
    /// Start time.
    pub started: String,
    /// Containers already stopped (e.g. the sidecar, early, once the agent has exited).
    stopped: Mutex<Vec<String>>,
    /// In `workspace = "copy"` mode: the agent's copy, kept after the bottle ends.
    pub workspace_copy: Option<PathBuf>,
    /// When the agent was started behind its [`gate`] during the launch: its output, attached
    /// before its start (`bottle run` reads it instead of attaching and starting).
    pub agent_output: Option<AttachedOutput>,
    /// With the gate: the nonce of its exit trailer on the agent's stderr
    /// ([`gate::take_exit_trailer`]).
    pub exit_nonce: Option<String>,
    /// The sidecar's stdin (its lifeline) and audit stream.
    pub link: SidecarLink,
    /// The workspace's git metadata before the agent started (host path of the workspace the
    /// agent sees, and the snapshot), compared after the run by [`Bottle::git_report`].
    git_before: Option<(PathBuf, GitSnapshot)>,
    /// Workspace-relative paths mounted read-only over the workspace (`.git/config`, …).
    git_read_only: Vec<String>,
    /// Whether git protection was asked for (bottle key `protect_git`).
    protect_git: bool,
    /// The agent's exit code once known (for the `session.ended` event).
    exit_code: Mutex<Option<i64>>,
    /// Whether `session.ended` was recorded.
    exit_code_reported: Mutex<bool>,
}

/// What happened to the workspace's git metadata during a run (`bottle run --json`: `git`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GitReport {
    /// The bottle mounted git metadata read-only (`protect_git`, default true).
    pub protected: bool,
    /// Workspace-relative paths mounted read-only.
    pub read_only: Vec<String>,
    /// Changes to git metadata found after the run (mounts cannot prevent everything; with
    /// `protect_git = false` nothing is prevented).
    pub changes: Vec<GitChange>,
}

/// An attached container's output stream (stdout and stderr frames).
pub type AttachedOutput = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

impl Bottle {
    /// Creates every object of the bottle; the agent is created but not started.
    pub async fn launch(
        docker: &Docker,
        facts: &EngineFacts,
        spec: &LaunchSpec,
        opts: &LaunchOptions,
    ) -> Result<Bottle> {
        let id = labels::new_id().context("generating a bottle id")?;
        let blabels = BottleLabels {
            id: id.clone(),
            bottle: spec.bottle.clone(),
            agent: spec.agent.clone(),
            mode: opts.mode.as_str().into(),
            extra: spec
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain([(
                    labels::ROUTES.to_string(),
                    spec.policy.routes.len().to_string(),
                )])
                .collect(),
        };
        let state = timed_sync("runtime dir", || StateDir::create(&id))?;
        let workspace_copy = match spec.workspace {
            WorkspaceSpec::Copy(_) => Some(statedir::kept_workspace_dir(&id)?),
            _ => None,
        };
        let mut b = Bottle {
            docker: docker.clone(),
            id,
            labels: blabels,
            state,
            internal_net: None,
            egress_net: None,
            sidecar: None,
            agent: None,
            sidecar_ip: Ipv4Addr::UNSPECIFIED,
            agent_ip: Ipv4Addr::UNSPECIFIED,
            subnet: None,
            runtime: None,
            started: now_rfc3339(),
            stopped: Mutex::new(Vec::new()),
            workspace_copy,
            agent_output: None,
            exit_nonce: None,
            link: SidecarLink::default(),
            git_before: None,
            git_read_only: Vec::new(),
            protect_git: spec.protect_git,
            exit_code: Mutex::new(None),
            exit_code_reported: Mutex::new(false),
        };
        match b.build(facts, spec, opts).await {
            Ok(()) => {
                super::events::emit(
                    "session.started",
                    &b.id,
                    serde_json::json!({
                        "bottle": spec.bottle, "agent": spec.agent, "mode": opts.mode.as_str(),
                        "image": spec.agent_image, "sidecar_image": spec.sidecar_image,
                        "containers": [b.agent, b.sidecar],
                        "routes": spec.policy.routes.len(), "git_remotes": spec.git_remotes.len(),
                    }),
                );
                super::sessions::record_start(super::sessions::new_session(
                    &b.id,
                    spec,
                    opts.mode.as_str(),
                    b.agent.iter().chain(b.sidecar.iter()).cloned().collect(),
                ));
                Ok(b)
            }
            Err(e) => {
                super::events::emit(
                    "session.failed_to_start",
                    &b.id,
                    serde_json::json!({"bottle": spec.bottle, "agent": spec.agent, "error": format!("{e:#}")}),
                );
                b.teardown().await;
                // The agent never ran: its copy of the workspace holds nothing new.
                if let Some(copy) = &b.workspace_copy {
                    let _ = std::fs::remove_dir_all(copy);
                }
                Err(e)
            }
        }
    }

    async fn build(
        &mut self,
        facts: &EngineFacts,
        spec: &LaunchSpec,
        opts: &LaunchOptions,
    ) -> Result<()> {
        check_env_has_no_secret(spec, opts)?;
        let t0 = std::time::Instant::now();
        let say = |m: &str| {
            if opts.verbose {
                eprintln!("bottle: [{:>5} ms] {m}", t0.elapsed().as_millis());
            }
        };
        let ca = timed_sync("CA generation", || ca::generate(&self.id))?;
        // Containers are addressed by their unique names, known before creation, so a
        // teardown after a partial failure removes whatever exists.
        self.sidecar = Some(labels::name(&self.id, "sidecar"));
        self.agent = Some(labels::name(&self.id, "agent"));
        say("creating the networks, the sidecar and the agent");
        // Two concurrent chains that meet at the internal network:
        //   egress network → sidecar create → attach → join internal → start ‖ bootstrap
        //   internal network + agent files → agent create (→ attach → start behind the gate,
        //   in `run` mode)
        // The sidecar's ready line is awaited once both chains are done; then the gate opens.
        let ((egress, sidecar), (internal, files, agent)) = {
            let this = &*self;
            let internal = async {
                timed("internal network", this.alloc_internal_network(facts))
                    .await
                    .map_err(Arc::new)
            }
            .shared();
            let sidecar_chain = async {
                let egress = timed("egress network", this.alloc_egress_network(opts)).await;
                let started = match &egress {
                    Ok((net, _)) => Some(
                        timed(
                            "sidecar create+start",
                            this.start_sidecar(spec, net, internal.clone(), &ca),
                        )
                        .await,
                    ),
                    Err(_) => None,
                };
                (egress, started)
            };
            let agent_chain = async {
                let (net, files) = tokio::join!(
                    internal.clone(),
                    timed("agent files", this.prepare_agent(facts, spec, &ca))
                );
                let created = match (&net, &files) {
                    (Ok((net, sn)), Ok(files)) => Some(
                        match timed(
                            "agent create",
                            this.create_agent(spec, opts, files, net, sn),
                        )
                        .await
                        {
                            // Behind its gate, the agent starts beside the sidecar.
                            Ok(true) => this.start_gated_agent().await.map(Some),
                            Ok(false) => Ok(None),
                            Err(e) => Err(e),
                        },
                    ),
                    _ => None,
                };
                (net, files, created)
            };
            tokio::join!(sidecar_chain, agent_chain)
        };
        // Record what exists before looking at errors, so that the teardown removes it.
        if let Ok((_, Some(id))) = &egress {
            self.egress_net = Some(id.clone());
        }
        if let Ok((id, sn)) = &internal {
            self.internal_net = Some(id.clone());
            self.subnet = Some(*sn);
            self.sidecar_ip = subnet::host(sn, 2);
            self.agent_ip = subnet::host(sn, 3);
        }
        if let Ok(f) = &files {
            self.runtime = f.runtime.clone();
            if let Some(ws) = &f.workspace {
                self.git_before = Some((ws.clone(), f.git_snapshot.clone()));
            }
            self.git_read_only = f
                .git_mounts
                .iter()
                .filter(|m| m.read_only)
                .map(|m| m.rel.clone())
                .collect();
        }
        internal.map_err(|e| anyhow!("{e:#}"))?;
        egress?;
        files?;
        drop(ca);
        let (mut output, sent) = sidecar.context("sidecar not created")??;
        let gated_agent = agent.context("agent not created")??;
        say("waiting for the sidecar");
        let sidecar = labels::name(&self.id, "sidecar");
        let ready = timed(
            "sidecar wait ready",
            wait_ready(&self.docker, &sidecar, &mut output),
        )
        .await;
        // A sidecar that died at once explains itself better than a broken pipe.
        ready?;
        self.link.hold(sent?, output).await;
        if let Some(AttachContainerResults { output, input }) = gated_agent {
            let nonce = gate::new_nonce().context("reading the OS random source")?;
            timed("agent gate open", gate::open(input, &nonce)).await?;
            self.agent_output = Some(output);
            self.exit_nonce = Some(nonce);
        }
        self.state.write_record(&self.record())?;
        say("bottle created");
        Ok(())
    }

    /// The agent's runtime and its host files (CA, trust bundle, prompt, passwd, workspace).
    async fn prepare_agent(
        &self,
        facts: &EngineFacts,
        spec: &LaunchSpec,
        ca: &ca::BottleCa,
    ) -> Result<AgentFiles> {
        let copy_dst = self.workspace_copy.clone();
        let ws = spec.workspace.clone();
        let protect_git = spec.protect_git;
        // A workspace copy can take a while; it runs beside the engine calls.
        let workspace = async {
            tokio::task::spawn_blocking(move || {
                let (src, uid, gid) = prepare_workspace(copy_dst, &ws)?;
                let (mounts, snapshot) = match &src {
                    Some(dir) => protect_git_metadata(dir, protect_git)?,
                    None => (Vec::new(), GitSnapshot::default()),
                };
                anyhow::Ok((src, uid, gid, mounts, snapshot))
            })
            .await
            .context("preparing the workspace")?
        };
        let (runtime, files, config, workspace) = tokio::join!(
            timed(
                "select runtime",
                select_runtime(&self.docker, facts, spec.runtime, &spec.agent_image),
            ),
            timed(
                "image files (roots, passwd)",
                roots::image_files(
                    &self.docker,
                    &spec.agent_image,
                    &[roots::SYSTEM_BUNDLE, "/etc/passwd", "/etc/group", "/bin/sh"],
                ),
            ),
            self.docker.inspect_image(&spec.agent_image),
            workspace
        );
        let runtime = runtime?;
        let mut files = files?;
        let config = config
            .with_context(|| format!("inspecting the agent image {}", spec.agent_image))?
            .config
            .unwrap_or_default();
        let (workspace_src, uid, gid, git_mounts, git_snapshot) = workspace?;
        let has_sh = files.pop().flatten().is_some();
        let image_group = files.pop().flatten();
        let image_passwd = files.pop().flatten();
        let image_roots = files.pop().flatten().unwrap_or_default();
        let ca_path = self.state.write("ca.pem", ca.cert_pem.as_bytes(), 0o644)?;
        let bundle_path = self.state.write(
            "ca-bundle.crt",
            roots::bundle(&image_roots, &ca.cert_pem).as_bytes(),
            0o644,
        )?;
        let prompt_path = match &spec.system_prompt {
            Some(p) => Some(self.state.write("system-prompt.md", p.as_bytes(), 0o644)?),
            None => None,
        };
        let passwd = match (image_passwd, image_group) {
            (Some(p), Some(g)) => {
                let (p, g) = roots::passwd_group(&p, &g, uid, gid, AGENT_HOME);
                Some((
                    self.state.write("passwd", p.as_bytes(), 0o644)?,
                    self.state.write("group", g.as_bytes(), 0o644)?,
                ))
            }
            _ => None,
        };
        Ok(AgentFiles {
            runtime,
            has_sh,
            image_entrypoint: config.entrypoint.unwrap_or_default(),
            image_cmd: config.cmd.unwrap_or_default(),
            uid,
            gid,
            workspace: workspace_src,
            git_mounts,
            git_snapshot,
            bundle: bundle_path,
            ca: ca_path,
            prompt: prompt_path,
            passwd,
        })
    }

    /// A per-bottle, per-purpose seed for picking subnets.
    fn seed(&self, salt: u64) -> u64 {
        u64::from_str_radix(&self.id, 16).unwrap_or(0)
            ^ u64::from(std::process::id())
            ^ salt.wrapping_mul(0x9e37_79b9)
    }

    /// Records the agent's exit code (reported by the `session.ended` event at teardown).
    pub fn set_exit_code(&self, code: i64) {
        *self.exit_code.lock().unwrap_or_else(|e| e.into_inner()) = Some(code);
    }

    /// Records the `session.ended` event (once; [`Bottle::teardown`] does it too).
    pub fn emit_ended(&self) {
        let code = *self.exit_code.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = self
            .exit_code_reported
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !*done && self.agent.is_some() {
            *done = true;
            super::events::emit(
                "session.ended",
                &self.id,
                serde_json::json!({ "exit_code": code }),
            );
            super::sessions::update(&self.id, "ended", code);
        }
    }

    /// The session record of this bottle.
    pub fn record(&self) -> SessionRecord {
        SessionRecord {
            id: self.id.clone(),
            bottle: self.labels.bottle.clone(),
            agent: self.labels.agent.clone(),
            mode: self.labels.mode.clone(),
            pid: std::process::id(),
            started: self.started.clone(),
            containers: self
                .sidecar
                .iter()
                .chain(self.agent.iter())
                .cloned()
                .collect(),
            networks: self
                .internal_net
                .iter()
                .chain(self.egress_net.iter())
                .cloned()
                .collect(),
        }
    }

    /// Creates the internal network; returns its id and subnet.
    async fn alloc_internal_network(&self, facts: &EngineFacts) -> Result<(String, Ipv4Net)> {
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
            &self.docker,
            NetSpec {
                pool,
                prefix: subnet::PREFIX,
                name: labels::name(&self.id, "int"),
                labels: self.labels.for_role("internal"),
                internal: true,
                options,
                seed: self.seed(1),
            },
        )
        .await
    }

    /// The egress network: the shared one from the options (id, `None` = not ours), or a new
    /// per-bottle bridge with inter-container traffic off.
    async fn alloc_egress_network(&self, opts: &LaunchOptions) -> Result<(String, Option<String>)> {
        if let Some(n) = &opts.egress_network {
            let net = self
                .docker
                .inspect_network(n, None::<bollard::query_parameters::InspectNetworkOptions>)
                .await
                .with_context(|| {
                    format!("BOTTLE_EGRESS_NETWORK={n} does not name an existing network")
                })?;
            return Ok((net.id.unwrap_or_else(|| n.clone()), None));
        }
        if std::env::var("BOTTLE_EGRESS").as_deref() != Ok("per-bottle") {
            return Ok((
                shared_egress_network(&self.docker, self.seed(3)).await?,
                None,
            ));
        }
        let pool = subnet::pool_from_env()?;
        let options = HashMap::from([(
            "com.docker.network.bridge.enable_icc".to_string(),
            "false".to_string(),
        )]);
        let (id, _) = create_network_in_pool(
            &self.docker,
            NetSpec {
                pool,
                prefix: subnet::PREFIX,
                name: labels::name(&self.id, "egress"),
                labels: self.labels.for_role("egress"),
                internal: false,
                options,
                seed: self.seed(2),
            },
        )
        .await?;
        Ok((id.clone(), Some(id)))
    }

    /// Creates the sidecar on its egress network, attaches to its stdio (before the start, so
    /// the bootstrap is never anywhere but this pipe and no output is missed), joins it to the
    /// internal network (static IP `.2`, aliases) once that exists, then starts it while
    /// writing its bootstrap. Returns its output stream and whether the bootstrap went out.
    async fn start_sidecar(
        &self,
        spec: &LaunchSpec,
        egress: &str,
        internal: impl std::future::Future<Output = SharedNet>,
        ca: &ca::BottleCa,
    ) -> Result<(AttachedOutput, Result<Lifeline>)> {
        let name = labels::name(&self.id, "sidecar");
        let gate = !spec.git_remotes.is_empty();
        let sidecar_memory: i64 = (512 << 20) + if gate { GATE_MIRROR_SIZE } else { 0 };
        let host_config = HostConfig {
            network_mode: Some(egress.to_string()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            sysctls: Some(HashMap::from([
                ("net.ipv4.ip_forward".into(), "0".into()),
                ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
            ])),
            pids_limit: Some(256),
            memory: Some(sidecar_memory),
            memory_swap: Some(sidecar_memory),
            tmpfs: gate.then(|| {
                HashMap::from([(
                    GATE_STATE_DIR.to_string(),
                    format!(
                        "rw,nosuid,nodev,noexec,size={GATE_MIRROR_SIZE},uid=65534,gid=65534,mode=0700"
                    ),
                )])
            }),
            nano_cpus: Some(1_000_000_000),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([("max-size".into(), "50m".into())])),
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.sidecar_image.clone()),
            cmd: Some(vec!["--bootstrap-stdin".into()]),
            user: Some("65534:65534".into()),
            hostname: Some(SIDECAR_NAME.into()),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            tty: Some(false),
            labels: Some({
                let mut l = self.labels.for_role("sidecar");
                if gate {
                    l.insert(super::tickets::GIT_GATE_LABEL.into(), "1".into());
                }
                l
            }),
            host_config: Some(host_config),
            ..Default::default()
        };
        timed(
            "sidecar create",
            self.docker.create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            ),
        )
        .await
        .with_context(|| {
            format!(
                "creating the sidecar from image {} — run `bottle images build`?",
                spec.sidecar_image
            )
        })?;
        let attached = timed("sidecar attach", self.attach_stdio(&name))
            .await
            .context("attaching to the sidecar's stdio")?;
        let AttachContainerResults { output, input } = attached;
        let (net, sn) = internal.await.map_err(|e| anyhow!("{e:#}"))?;
        let sidecar_ip = subnet::host(&sn, 2);
        // Joined before the start, so the start sets up both networks at once and the internal
        // address exists before the sidecar reads its bootstrap.
        let endpoint = EndpointSettings {
            aliases: Some(vec![SIDECAR_NAME.into(), "proxy".into()]),
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(sidecar_ip.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        timed(
            "sidecar internal connect",
            self.docker.connect_network(
                &net,
                NetworkConnectRequest {
                    container: name.clone(),
                    endpoint_config: Some(endpoint),
                },
            ),
        )
        .await
        .context("joining the sidecar to the bottle's internal network")?;
        // The bootstrap goes down the attached stdin beside the start: the engine hands it to
        // the sidecar's stdin once the process runs, so it reads it without another round trip.
        let (started, sent) = tokio::join!(
            timed("sidecar start", self.docker.start_container(&name, None)),
            timed(
                "sidecar bootstrap sent",
                send_bootstrap(input, spec, ca, sidecar_ip)
            )
        );
        started.context("starting the sidecar")?;
        Ok((output, sent))
    }

    /// Creates (never starts) the agent on the internal network only (static IP `.3`, DNS
    /// pinned to the sidecar at `.2`). Returns whether its command is behind the [`gate`].
    async fn create_agent(
        &self,
        spec: &LaunchSpec,
        opts: &LaunchOptions,
        m: &AgentFiles,
        internal: &str,
        sn: &Ipv4Net,
    ) -> Result<bool> {
        let (uid, gid) = (m.uid, m.gid);
        let sidecar_ip = subnet::host(sn, 2);
        let agent_ip = subnet::host(sn, 3);
        let resolv = if m.runtime.as_deref() == Some("runsc") {
            // gVisor cannot reach the embedded DNS; name the sidecar directly.
            Some(self.state.write(
                "resolv.conf",
                format!("nameserver {sidecar_ip}\n").as_bytes(),
                0o644,
            )?)
        } else {
            None
        };
        let name = labels::name(&self.id, "agent");
        let interactive = matches!(opts.mode, Mode::Start | Mode::Spawn);
        let proxy = format!("http://{sidecar_ip}:{PROXY_PORT}");
        let mut env: Vec<(String, String)> = vec![
            ("HOME".into(), AGENT_HOME.into()),
            ("USER".into(), "agent".into()),
            ("LOGNAME".into(), "agent".into()),
            (
                "TERM".into(),
                std::env::var("TERM")
                    .ok()
                    .filter(|_| interactive)
                    .unwrap_or_else(|| "xterm-256color".into()),
            ),
            ("HTTP_PROXY".into(), proxy.clone()),
            ("HTTPS_PROXY".into(), proxy.clone()),
            ("http_proxy".into(), proxy.clone()),
            ("https_proxy".into(), proxy.clone()),
            ("ALL_PROXY".into(), proxy.clone()),
            ("all_proxy".into(), proxy.clone()),
            ("NO_PROXY".into(), "localhost,127.0.0.1,::1".into()),
            ("no_proxy".into(), "localhost,127.0.0.1,::1".into()),
            ("NODE_USE_ENV_PROXY".into(), "1".into()),
            ("NODE_EXTRA_CA_CERTS".into(), AGENT_CA_PATH.into()),
            ("BOTTLE_ID".into(), self.id.clone()),
            ("BOTTLE_NAME".into(), spec.bottle.clone()),
            ("BOTTLE_AGENT".into(), spec.agent.clone()),
            ("GIT_AUTHOR_NAME".into(), "bottle agent".into()),
            ("GIT_AUTHOR_EMAIL".into(), "agent@bottle.invalid".into()),
            ("GIT_COMMITTER_NAME".into(), "bottle agent".into()),
            ("GIT_COMMITTER_EMAIL".into(), "agent@bottle.invalid".into()),
        ];
        for var in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            "CARGO_HTTP_CAINFO",
            "PIP_CERT",
            "AWS_CA_BUNDLE",
        ] {
            env.push((var.into(), roots::SYSTEM_BUNDLE.into()));
        }
        if m.prompt.is_some() {
            env.push(("BOTTLE_SYSTEM_PROMPT_FILE".into(), AGENT_PROMPT_PATH.into()));
        }
        // Manifest env and per-launch env override the defaults above (but not the proxy
        // and trust settings, which are re-asserted below).
        for (k, v) in spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(opts.extra_env.iter().cloned())
        {
            env.retain(|(ek, _)| ek != &k);
            env.push((k, v));
        }
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            env.retain(|(ek, _)| ek != k);
            env.push((k.into(), proxy.clone()));
        }
        let bind = |src: &PathBuf, target: &str, ro: bool| Mount {
            typ: Some(MountType::BIND),
            source: Some(src.display().to_string()),
            target: Some(target.into()),
            read_only: Some(ro),
            ..Default::default()
        };
        let mut mounts = vec![
            bind(&m.bundle, roots::SYSTEM_BUNDLE, true),
            bind(&m.ca, AGENT_CA_PATH, true),
        ];
        if let Some(p) = &m.prompt {
            mounts.push(bind(p, AGENT_PROMPT_PATH, true));
        }
        if let Some((p, g)) = &m.passwd {
            mounts.push(bind(p, "/etc/passwd", true));
            mounts.push(bind(g, "/etc/group", true));
        }
        if let Some(r) = &resolv {
            mounts.push(bind(r, "/etc/resolv.conf", true));
        }
        if !spec.git_remotes.is_empty() {
            // Every spelling of each remote goes to the gate, straight over the internal
            // network (not through the proxy, which refuses smart-HTTP pushes).
            let cfg = gate_gitconfig(&spec.git_remotes, &format!("{sidecar_ip}:{GATE_PORT}"));
            let path = self.state.write("gitconfig", cfg.as_bytes(), 0o644)?;
            mounts.push(bind(&path, AGENT_GITCONFIG_PATH, true));
            for k in ["NO_PROXY", "no_proxy"] {
                if let Some((_, v)) = env.iter_mut().find(|(ek, _)| ek == k) {
                    v.push_str(&format!(",{sidecar_ip}"));
                }
            }
        }
        let mut tmpfs = HashMap::from([
            (
                "/tmp".to_string(),
                "rw,nosuid,nodev,size=1g,mode=1777".to_string(),
            ),
            (
                AGENT_HOME.to_string(),
                format!("rw,nosuid,nodev,size=1g,uid={uid},gid={gid},mode=0700"),
            ),
        ]);
        match &m.workspace {
            Some(src) => {
                mounts.push(bind(src, "/workspace", false));
                // Over the workspace: `.git` pinned, its config, hooks and info read-only.
                // The engine mounts parents before children (it sorts by target depth).
                for g in &m.git_mounts {
                    mounts.push(bind(
                        &g.host,
                        &guard::container_path("/workspace", &g.rel),
                        g.read_only,
                    ));
                }
            }
            None => {
                tmpfs.insert(
                    "/workspace".into(),
                    format!("rw,nosuid,nodev,size=1g,uid={uid},gid={gid},mode=0755"),
                );
            }
        }
        let host_config = HostConfig {
            network_mode: Some(internal.to_string()),
            dns: Some(vec![sidecar_ip.to_string()]),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            pids_limit: Some(spec.limits.pids),
            memory: Some(spec.limits.memory),
            memory_swap: Some(spec.limits.memory),
            nano_cpus: Some((spec.limits.cpus * 1e9) as i64),
            init: Some(true),
            tmpfs: Some(tmpfs),
            mounts: Some(mounts),
            runtime: m.runtime.clone(),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([("max-size".into(), "50m".into())])),
            }),
            ..Default::default()
        };
        let endpoint = EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(agent_ip.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cmd = opts
            .cmd
            .clone()
            .or_else(|| (!spec.default_cmd.is_empty()).then(|| spec.default_cmd.clone()));
        // Unattended agents start beside the sidecar, their command held behind the gate.
        let gated = opts.mode == Mode::Run && m.has_sh;
        let (entrypoint, cmd) = if gated {
            let cmd = cmd.unwrap_or_else(|| m.image_cmd.clone());
            let (ep, cmd) = gate::gated(&m.image_entrypoint, &cmd);
            (Some(ep), Some(cmd))
        } else {
            (None, cmd)
        };
        let with_stdin = interactive || gated;
        let body = ContainerCreateBody {
            image: Some(spec.agent_image.clone()),
            entrypoint,
            cmd,
            user: Some(format!("{uid}:{gid}")),
            working_dir: Some("/workspace".into()),
            hostname: Some("bottle".into()),
            env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            tty: Some(interactive),
            open_stdin: Some(with_stdin),
            // A spawned agent's input outlives each attachment (attach, send-keys).
            stdin_once: Some(with_stdin && opts.mode != Mode::Spawn),
            attach_stdin: Some(with_stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            labels: Some(self.labels.for_role("agent")),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(internal.to_string(), endpoint)])),
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .with_context(|| {
                format!(
                    "creating the agent from image {} — run `bottle images build`?",
                    spec.agent_image
                )
            })?;
        Ok(gated)
    }

    /// Attaches to a container's stdin, stdout and stderr (before its start, so nothing of its
    /// output is missed).
    async fn attach_stdio(
        &self,
        name: &str,
    ) -> std::result::Result<AttachContainerResults, bollard::errors::Error> {
        let opts = AttachContainerOptionsBuilder::default()
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .stream(true)
            .build();
        self.docker.attach_container(name, Some(opts)).await
    }

    /// Attaches to the (gated) agent's stdio and starts it; its command waits for
    /// [`gate::open`] on the returned stdin.
    async fn start_gated_agent(&self) -> Result<AttachContainerResults> {
        let name = labels::name(&self.id, "agent");
        let attached = timed("agent attach", self.attach_stdio(&name))
            .await
            .context("attaching to the agent's stdio")?;
        timed(
            "agent start (gated)",
            self.docker.start_container(&name, None),
        )
        .await
        .context("starting the agent")?;
        Ok(attached)
    }

    /// Kills one container of the bottle (SIGKILL; the engine answers once it has stopped and
    /// its network endpoints are released). Errors are left to the forced removal.
    pub async fn stop_container(&self, name: &str) {
        if self
            .stopped
            .lock()
            .is_ok_and(|r| r.iter().any(|n| n == name))
        {
            return;
        }
        let done = match self.docker.kill_container(name, None).await {
            Ok(()) => true,
            // 404: gone; 409: not running.
            Err(bollard::errors::Error::DockerResponseServerError { status_code, .. }) => {
                matches!(status_code, 404 | 409)
            }
            Err(_) => false,
        };
        if done {
            if let Ok(mut r) = self.stopped.lock() {
                r.push(name.to_string());
            }
        }
    }

    /// Compares the workspace's git metadata with its state before the agent started (call
    /// once the agent has stopped). `None` when the bottle has no workspace.
    pub fn git_report(&self) -> Option<GitReport> {
        let (ws, before) = self.git_before.as_ref()?;
        let after = GitSnapshot::take(ws);
        if after.truncated || before.truncated {
            eprintln!(
                "bottle: note: {} is too large to search completely for nested repositories; git metadata deeper in it was not compared",
                ws.display()
            );
        }
        Some(GitReport {
            protected: self.protect_git,
            read_only: self.git_read_only.clone(),
            changes: before.changes(&after),
        })
    }

    /// The host directory the agent saw as `/workspace` (the copy in copy mode).
    pub fn workspace_dir(&self) -> Option<&std::path::Path> {
        self.git_before.as_ref().map(|(p, _)| p.as_path())
    }

    /// Removes every object of the bottle and its runtime directory; reports but does not
    /// stop on errors. The containers are stopped first, so that their removal and the
    /// networks' removal (which needs no endpoint left) run side by side.
    pub async fn teardown(&self) {
        self.emit_ended();
        self.link.cut().await;
        let containers: Vec<&String> = self.agent.iter().chain(self.sidecar.iter()).collect();
        timed(
            "teardown stop containers",
            futures_util::future::join_all(containers.iter().map(|c| self.stop_container(c))),
        )
        .await;
        let rm = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let remove_containers = futures_util::future::join_all(containers.iter().map(|c| {
            let rm = rm.clone();
            async move {
                if let Err(e) = self.docker.remove_container(c, Some(rm)).await {
                    if !is_not_found(&e) {
                        eprintln!(
                            "bottle: warning: removing container {c}: {e} (run `bottle reap` later)"
                        );
                    }
                }
            }
        }));
        let networks: Vec<&String> = self
            .internal_net
            .iter()
            .chain(self.egress_net.iter())
            .collect();
        // First try beside the container removal; a network that still has an endpoint (a
        // container that did not stop) is retried once the containers are gone.
        let remove_networks = futures_util::future::join_all(networks.iter().map(|n| async move {
            match self.docker.remove_network(n).await {
                Err(e) if !is_not_found(&e) => Some(*n),
                _ => None,
            }
        }));
        let (_, retry) = timed("teardown remove", async {
            tokio::join!(remove_containers, remove_networks)
        })
        .await;
        for n in retry.into_iter().flatten() {
            if let Err(e) = self.docker.remove_network(n).await {
                if !is_not_found(&e) {
                    eprintln!(
                        "bottle: warning: removing network {n}: {e} (run `bottle reap` later)"
                    );
                }
            }
        }
        if let Err(e) = self.state.remove() {
            eprintln!("bottle: warning: {e:#}");
        }
    }
}

/// The workspace source to bind (in copy mode, a copy at `copy_dst` that outlives the bottle)
/// and the uid/gid the agent runs as.
fn prepare_workspace(
    copy_dst: Option<PathBuf>,
    ws: &WorkspaceSpec,
) -> Result<(Option<PathBuf>, u32, u32)> {
    let (src, meta_of) = match ws {
        WorkspaceSpec::None => return Ok((None, 1000, 1000)),
        WorkspaceSpec::Bind(p) => (p.clone(), p.clone()),
        WorkspaceSpec::Copy(p) => {
            let dst = copy_dst.context("no place for the workspace copy")?;
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", p.display()))
                .arg(&dst)
                .status()
                .with_context(|| {
                    format!("copying the workspace {} (is `cp` installed?)", p.display())
                })?;
            if !st.success() {
                bail!(
                    "copying the workspace {} into {} failed ({st})",
                    p.display(),
                    dst.display()
                );
            }
            eprintln!(
                "bottle: the agent works on a copy of {} at {}; the copy is kept after the bottle ends (your directory is never written)",
                p.display(),
                dst.display()
            );
            (dst, p.clone())
        }
    };
    let meta = std::fs::metadata(&meta_of).with_context(|| {
        format!(
            "the workspace {} is not accessible; create it or set `workspace` in the bottle",
            meta_of.display()
        )
    })?;
    if !meta.is_dir() {
        bail!("the workspace {} is not a directory", meta_of.display());
    }
    let (mut uid, mut gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        eprintln!(
            "bottle: warning: the workspace {} is owned by root; the agent runs as 65534:65534 and may not be able to write it (chown it to a normal user)",
            meta_of.display()
        );
        uid = 65534;
        gid = 65534;
    }
    if matches!(ws, WorkspaceSpec::Copy(_)) {
        let st = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(&src)
            .status();
        if !matches!(st, Ok(s) if s.success()) && unsafe { libc::geteuid() } == 0 {
            bail!(
                "could not chown the workspace copy {} to {uid}:{gid}",
                src.display()
            );
        }
    }
    Ok((Some(src), uid, gid))
}

/// The git protection of a workspace directory: the read-only mounts (none when `protect` is
/// false) and the snapshot to compare with after the run.
fn protect_git_metadata(
    dir: &std::path::Path,
    protect: bool,
) -> Result<(Vec<GitMount>, GitSnapshot)> {
    let mounts = if protect {
        guard::git_mounts(dir).with_context(|| {
            format!(
                "preparing the read-only git metadata of {} (set `protect_git = false` in the bottle to skip)",
                dir.display()
            )
        })?
    } else {
        if dir.join(".git").exists() {
            eprintln!(
                "bottle: warning: protect_git = false: the agent can change {}/.git (config, hooks) and git runs those on this host",
                dir.display()
            );
        }
        Vec::new()
    };
    if protect
        && std::fs::symlink_metadata(dir.join(".git")).is_ok_and(|m| m.file_type().is_symlink())
    {
        eprintln!(
            "bottle: warning: {}/.git is a symlink, so its metadata is not mounted read-only; changes are reported after the run",
            dir.display()
        );
    }
    Ok((mounts, GitSnapshot::take(dir)))
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

/// Label marking the shared egress network of all sidecars (never reaped).
pub const SHARED_LABEL: &str = "io.bottle.shared";

/// Name of the shared egress network.
pub const SHARED_EGRESS: &str = "bottle-egress";

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
    let lock_path = super::statedir::base_dir()?.join("egress.lock");
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

/// What the agent container is made of besides the spec: runtime, user, host files.
struct AgentFiles {
    runtime: Option<String>,
    /// The image has `/bin/sh`, so an unattended agent can start behind the [`gate`].
    has_sh: bool,
    /// The image's own entrypoint and default command.
    image_entrypoint: Vec<String>,
    image_cmd: Vec<String>,
    uid: u32,
    gid: u32,
    workspace: Option<PathBuf>,
    /// Bind mounts over the workspace protecting its git metadata.
    git_mounts: Vec<GitMount>,
    /// The git metadata before the agent starts.
    git_snapshot: GitSnapshot,
    bundle: PathBuf,
    ca: PathBuf,
    prompt: Option<PathBuf>,
    passwd: Option<(PathBuf, PathBuf)>,
}

/// The agent's system git config for a bottle with git remotes: `insteadOf` rewrites of every
/// spelling of each remote's URL (https with and without `.git`, `ssh://git@host/…`,
/// `git@host:…`) to `http://<gate>/<name>`. Holds no credential.
pub fn gate_gitconfig(remotes: &[crate::manifest::GitRemote], gate: &str) -> String {
    let mut out = String::from(
        "# Written by bottle: the bottle's git remotes go through the sidecar's git gate, which\n\
         # scans pushes for secrets and holds the upstream credential. Read-only.\n",
    );
    for r in remotes {
        out.push_str(&format!("[url \"http://{gate}/{}\"]\n", r.name));
        for spelling in remote_spellings(&r.url) {
            out.push_str(&format!("\tinsteadOf = {spelling}\n"));
        }
    }
    out.push_str("[credential]\n\thelper =\n");
    out
}

/// Every way a user writes the remote `url`: `https://host/p`, `ssh://user@host/p` and
/// `user@host:p` (the URL's own user, and `git`), each with and without `.git`, plus the URL
/// exactly as declared (a port included).
pub fn remote_spellings(url: &str) -> Vec<String> {
    let (user, host, path) = if let Some(rest) = url.strip_prefix("https://") {
        let (h, p) = rest.split_once('/').unwrap_or((rest, ""));
        (None, h.split(':').next().unwrap_or(h), p)
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        let (auth, p) = rest.split_once('/').unwrap_or((rest, ""));
        let (u, h) = match auth.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, auth),
        };
        (u, h.split(':').next().unwrap_or(h), p)
    } else if let Some((uh, p)) = url.split_once(':') {
        let (u, h) = match uh.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, uh),
        };
        (u, h, p)
    } else {
        return vec![url.to_string()];
    };
    let bare = path.trim_matches('/').trim_end_matches(".git");
    let mut users = vec!["git"];
    if let Some(u) = user.filter(|u| *u != "git") {
        users.push(u);
    }
    let mut out = vec![url.to_string()];
    for p in [format!("{bare}.git"), bare.to_string()] {
        out.push(format!("https://{host}/{p}"));
        for u in &users {
            out.push(format!("ssh://{u}@{host}/{p}"));
            out.push(format!("{u}@{host}:{p}"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

/// The internal network (id, subnet) as awaited by both launch chains.
type SharedNet = std::result::Result<(String, Ipv4Net), Arc<anyhow::Error>>;

/// Whether an engine error means "no such object".
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
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

/// Refuses to start when a non-secret env value equals a secret value (a manifest mistake
/// that would put the secret into the agent and `docker inspect`).
fn check_env_has_no_secret(spec: &LaunchSpec, opts: &LaunchOptions) -> Result<()> {
    for (name, value) in &spec.secrets {
        if value.len() < 4 {
            continue;
        }
        let leaks = spec
            .env
            .values()
            .chain(opts.extra_env.iter().map(|(_, v)| v))
            .any(|v| v.contains(value.as_str()));
        if leaks {
            bail!("the agent env would contain the value of secret {name}; secrets go to the sidecar only — remove it from the bottle's env");
        }
    }
    Ok(())
}

/// Writes the bootstrap (policy, CA key, secrets) to the sidecar's attached stdin and returns
/// that stdin, kept open as the sidecar's [`Lifeline`].
async fn send_bootstrap(
    mut input: Lifeline,
    spec: &LaunchSpec,
    ca: &ca::BottleCa,
    sidecar_ip: Ipv4Addr,
) -> Result<Lifeline> {
    let boot = super::bootstrap::document(spec, ca, sidecar_ip)?;
    let json = boot
        .to_json()
        .context("serialising the sidecar bootstrap")?;
    drop(boot);
    let sent = async {
        input.write_all(&json).await?;
        input.flush().await
    }
    .await;
    drop(json);
    sent.context("sending the bootstrap to the sidecar's stdin")?;
    Ok(input)
}

/// Waits until the sidecar writes its ready line on stdout (on the attachment made before
/// its start, so nothing is missed and nothing is polled); fails with the sidecar's output
/// when it exits first; warns and returns after 15 s.
async fn wait_ready(
    docker: &Docker,
    id: &str,
    output: &mut (impl futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin),
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut line: Vec<u8> = Vec::new();
    let mut seen = String::new();
    let remember = |seen: &mut String, bytes: &[u8]| {
        if seen.len() < 4096 {
            seen.push_str(&String::from_utf8_lossy(bytes));
        }
    };
    loop {
        let item = match tokio::time::timeout_at(deadline, output.next()).await {
            Ok(item) => item,
            Err(_) => {
                eprintln!(
                    "bottle: warning: the sidecar did not report ready within 15 s; continuing"
                );
                return Ok(());
            }
        };
        match item {
            Some(Ok(LogOutput::StdOut { message })) => {
                for &b in message.iter() {
                    if b != b'\n' {
                        line.push(b);
                        continue;
                    }
                    if Event::from_line(&String::from_utf8_lossy(&line)) == Some(Event::Ready) {
                        return Ok(());
                    }
                    line.push(b'\n');
                    remember(&mut seen, &line);
                    line.clear();
                }
            }
            Some(Ok(other)) => remember(&mut seen, &other.into_bytes()),
            Some(Err(e)) => return Err(e).context("reading the sidecar's output"),
            None => {
                remember(&mut seen, &line);
                let mut waiting = docker.wait_container(
                    id,
                    Some(
                        WaitContainerOptionsBuilder::default()
                            .condition("not-running")
                            .build(),
                    ),
                );
                let code = match tokio::time::timeout_at(deadline, waiting.next()).await {
                    Ok(Some(Ok(r))) => r.status_code,
                    Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError {
                        code,
                        ..
                    }))) => code,
                    _ => -1,
                };
                bail!(
                    "the sidecar exited (code {code}) before it was ready; its output:\n{}\nfix the bottle's routes (`bottle check`) or rebuild images (`bottle images build`)",
                    seen.trim_end()
                );
            }
        }
    }
}

/// Chooses the agent's OCI runtime: runsc only when a probe container really starts under it.
async fn select_runtime(
    docker: &Docker,
    facts: &EngineFacts,
    choice: RuntimeChoice,
    image: &str,
) -> Result<Option<String>> {
    match choice {
        RuntimeChoice::Runc => Ok(None),
        RuntimeChoice::Runsc => {
            if probe_runtime(docker, "runsc", image).await {
                Ok(Some("runsc".into()))
            } else {
                bail!("runtime = \"runsc\" was asked for, but a probe container did not start under runsc; install/register gVisor or use runtime = \"auto\" (see `bottle doctor`)")
            }
        }
        RuntimeChoice::Auto => {
            if facts.runtimes.iter().any(|r| r == "runsc")
                && cached_probe(docker, facts, "runsc", image).await
            {
                Ok(Some("runsc".into()))
            } else {
                Ok(None)
            }
        }
    }
}

/// [`probe_runtime`] with the result cached for a day per engine, runtime and image (a probe
/// costs a container start on every `auto` launch otherwise).
async fn cached_probe(docker: &Docker, facts: &EngineFacts, runtime: &str, image: &str) -> bool {
    let key: String = format!("{}-{runtime}-{image}", facts.engine_id)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = super::statedir::base_dir()
        .ok()
        .map(|b| b.join(format!("probe-{key}")));
    if let Some(p) = &path {
        if let Ok(m) = std::fs::metadata(p) {
            let fresh = m
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < Duration::from_secs(86_400));
            if fresh {
                return std::fs::read_to_string(p).is_ok_and(|s| s.trim() == "ok");
            }
        }
    }
    let ok = probe_runtime(docker, runtime, image).await;
    if let Some(p) = &path {
        let _ = std::fs::write(p, if ok { "ok" } else { "failed" });
    }
    ok
}

/// Creates, starts and waits for a `true` container under `runtime`; true when it exits 0.
pub async fn probe_runtime(docker: &Docker, runtime: &str, image: &str) -> bool {
    let Ok(id) = labels::new_id() else {
        return false;
    };
    let name = format!("bottle-probe-{id}");
    let body = ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(vec!["true".into()]),
        host_config: Some(HostConfig {
            runtime: Some(runtime.into()),
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ok = async {
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .ok()?;
        docker.start_container(&name, None).await.ok()?;
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            docker.wait_container(&name, None).next(),
        )
        .await
        .ok()??;
        r.ok().map(|r| r.status_code == 0)
    }
    .await
    .unwrap_or(false);
    let _ = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    ok
}
