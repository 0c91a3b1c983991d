//! Creating and tearing down the Docker objects of one bottle.
//!
//! Order (runtime dir and CA first), as two concurrent chains:
//! - egress network → sidecar created on it → stdio attached → joined to the internal network
//!   (static IP `.2`) once that exists → started, its bootstrap written down the attached
//!   stdin beside the start; that stdin then stays open as the sidecar's [`SidecarLink`]
//!   lifeline ([`super::gate`]);
//! - internal network (explicit /28, [`super::networks`]) + the agent's host files → agent
//!   created (internal only, static IP `.3`, DNS pinned to the sidecar; [`super::containers`]).
//!   In `bottle run` mode (and when the image has `/bin/sh`) the agent is also attached and
//!   started here, beside the sidecar, its command held behind the start [`start_gate`];
//!   otherwise it is started later by `run`/`start`.
//!
//! The launch returns once the sidecar printed its ready line (and the gate is open). Every
//! object carries the `io.bottle.*` labels; anything created before an error is removed again.
//! Teardown cuts the lifeline, stops the containers, then removes them and the networks side
//! by side.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use bollard::container::AttachContainerResults;
use bollard::Docker;
use futures_util::FutureExt;
use ipnet::Ipv4Net;

use super::container_spec::AgentFiles;
use super::containers::AttachedOutput;
use super::probe::EngineFacts;
use super::{containers, gate, images, networks, probe};
use crate::guard::GitSnapshot;
use crate::runtime::agent_env::check_env_has_no_secret;
use crate::runtime::bottle::{GitReport, LaunchOptions, AGENT_HOME};
use crate::runtime::gate as start_gate;
use crate::runtime::labels::{self, BottleLabels};
use crate::runtime::lifeline::SidecarLink;
use crate::runtime::spec::{LaunchSpec, WorkspaceSpec};
use crate::runtime::statedir::{self, now_rfc3339, SessionRecord, StateDir};
use crate::runtime::timing::{timed, timed_sync};
use crate::runtime::{ca, roots, subnet, workspace};

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
    /// Models network id and subnet (bottles with model sidecars).
    pub models_net: Option<(String, Ipv4Net)>,
    /// Egress network id, when created by this bottle.
    pub egress_net: Option<String>,
    /// Sidecar container id.
    pub sidecar: Option<String>,
    /// Agent container id.
    pub agent: Option<String>,
    /// Model sidecar container names ([`super::models`]).
    pub models: Vec<String>,
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
    /// When the agent was started behind its [`start_gate`] during the launch: its output, attached
    /// before its start (`bottle run` reads it instead of attaching and starting).
    pub agent_output: Option<AttachedOutput>,
    /// With the gate: the nonce of its exit trailer on the agent's stderr
    /// ([`start_gate::take_exit_trailer`]).
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

impl Bottle {
    /// Creates every object of the bottle; the agent is created but not started.
    pub async fn launch(
        docker: &Docker,
        facts: &EngineFacts,
        spec: &LaunchSpec,
        opts: &LaunchOptions,
    ) -> Result<Bottle> {
        // Refused before anything exists.
        super::models::check_supported(spec)?;
        let id = match &opts.id {
            Some(id) => id.clone(),
            None => labels::new_id().context("generating a bottle id")?,
        };
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
            models_net: None,
            egress_net: None,
            sidecar: None,
            agent: None,
            models: Vec::new(),
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
                crate::runtime::events::emit(
                    "session.started",
                    &b.id,
                    serde_json::json!({
                        "bottle": spec.bottle, "agent": spec.agent, "mode": opts.mode.as_str(),
                        "image": spec.agent_image, "sidecar_image": spec.sidecar_image,
                        "containers": b.agent.iter().chain(b.sidecar.iter()).chain(b.models.iter()).collect::<Vec<_>>(),
                        "models": spec.models.iter().map(|m| &m.name).collect::<Vec<_>>(),
                        "routes": spec.policy.routes.len(), "git_remotes": spec.git_remotes.len(),
                    }),
                );
                crate::runtime::sessions::record_start(crate::runtime::sessions::new_session(
                    &b.id,
                    spec,
                    opts.mode.as_str(),
                    b.agent
                        .iter()
                        .chain(b.sidecar.iter())
                        .chain(b.models.iter())
                        .cloned()
                        .collect(),
                ));
                Ok(b)
            }
            Err(e) => {
                crate::runtime::events::emit(
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
        check_env_has_no_secret(spec, &opts.extra_env)?;
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
        self.models = spec
            .models
            .iter()
            .map(|m| super::model_spec::model_container_name(&self.id, &m.name))
            .collect();
        say("creating the networks, the sidecar and the agent");
        // Two concurrent chains that meet at the internal network:
        //   egress network → sidecar create → attach → join internal → start ‖ bootstrap
        //   internal network + agent files → agent create (→ attach → start behind the gate,
        //   in `run` mode)
        // The sidecar's ready line is awaited once both chains are done; then the gate opens.
        // A third chain creates and starts the model sidecars on the internal network (their
        // loading overlaps the rest of the launch); they are awaited before the agent starts.
        let (((egress, sidecar), (internal, files, agent), models), models_net) = {
            let this = &*self;
            let internal = async {
                timed(
                    "internal network",
                    networks::internal_network(
                        &this.docker,
                        facts,
                        &this.id,
                        &this.labels,
                        this.seed(1),
                    ),
                )
                .await
                .map_err(Arc::new)
            }
            .shared();
            let models_net = async {
                if spec.models.is_empty() {
                    return Ok(None);
                }
                timed(
                    "models network",
                    networks::models_network(
                        &this.docker,
                        facts,
                        &this.id,
                        &this.labels,
                        this.seed(4),
                    ),
                )
                .await
                .map(Some)
                .map_err(Arc::new)
            }
            .shared();
            let sidecar_chain = async {
                let egress = timed(
                    "egress network",
                    networks::egress_network(
                        &this.docker,
                        opts.egress_network.as_deref(),
                        opts.per_bottle_egress,
                        &this.id,
                        &this.labels,
                        (this.seed(3), this.seed(2)),
                    ),
                )
                .await;
                let started = match &egress {
                    Ok((net, _)) => Some(
                        timed(
                            "sidecar create+start",
                            gate::start_sidecar(
                                &this.docker,
                                &this.id,
                                &this.labels,
                                spec,
                                net,
                                internal.clone(),
                                models_net.clone(),
                                &ca,
                            ),
                        )
                        .await,
                    ),
                    Err(_) => None,
                };
                (egress, started)
            };
            let agent_chain = async {
                let (net, files, mnet) = tokio::join!(
                    internal.clone(),
                    timed("agent files", this.prepare_agent(facts, spec, &ca)),
                    models_net.clone()
                );
                let created = match (&net, &files, &mnet) {
                    (Ok((net, sn)), Ok(files), Ok(mnet)) => Some(
                        match timed(
                            "agent create",
                            containers::create_agent(
                                &this.docker,
                                &this.state,
                                &this.id,
                                &this.labels,
                                spec,
                                opts,
                                files,
                                net,
                                sn,
                                mnet.as_ref(),
                            ),
                        )
                        .await
                        {
                            // Behind its gate, the agent starts beside the sidecar.
                            Ok(true) => containers::start_gated_agent(&this.docker, &this.id)
                                .await
                                .map(Some),
                            Ok(false) => Ok(None),
                            Err(e) => Err(e),
                        },
                    ),
                    _ => None,
                };
                (net, files, created)
            };
            let models_chain = async {
                if spec.models.is_empty() {
                    return Ok(());
                }
                let Some((net, sn)) = models_net.clone().await.map_err(|e| anyhow!("{e:#}"))?
                else {
                    return Ok(());
                };
                // Models with egress routes trust the bottle CA (their proxy bumps TLS too). A
                // copy of its own: the agent's `ca.pem` is written by the concurrent agent chain.
                let ca_file = if spec.models.iter().any(|m| !m.egress.is_empty()) {
                    Some(
                        this.state
                            .write("model-ca.pem", ca.cert_pem.as_bytes(), 0o644)?,
                    )
                } else {
                    None
                };
                let started = timed(
                    "models create+start",
                    futures_util::future::join_all(spec.models.iter().enumerate().map(|(i, m)| {
                        super::models::create_and_start(
                            &this.docker,
                            &this.id,
                            &this.labels,
                            m,
                            i,
                            &net,
                            &sn,
                            ca_file.as_deref(),
                        )
                    })),
                )
                .await;
                started.into_iter().collect::<Result<Vec<()>>>().map(|_| ())
            };
            let r = tokio::join!(sidecar_chain, agent_chain, models_chain);
            (r, models_net.await)
        };
        if let Ok(Some(m)) = &models_net {
            self.models_net = Some(m.clone());
        }
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
        models?;
        drop(ca);
        let (mut output, sent) = sidecar.context("sidecar not created")??;
        let gated_agent = agent.context("agent not created")??;
        say("waiting for the sidecar");
        let sidecar = labels::name(&self.id, "sidecar");
        let ready = timed(
            "sidecar wait ready",
            gate::wait_ready(&self.docker, &sidecar, &mut output),
        )
        .await;
        // A sidecar that died at once explains itself better than a broken pipe.
        ready?;
        self.link.hold(sent?, output).await;
        if let Some((_, sn)) = self.models_net.clone() {
            // Models with egress routes start now that the model egress proxy is up.
            for (m, name) in spec.models.iter().zip(&self.models) {
                if !m.egress.is_empty() {
                    self.docker
                        .start_container(name, None)
                        .await
                        .with_context(|| format!("starting model {:?} ({})", m.name, m.image))?;
                }
            }
            say("waiting for the model sidecars");
            let ui = crate::progress::Ui::new("bottle", false);
            let waits =
                futures_util::future::join_all(spec.models.iter().enumerate().map(|(i, m)| {
                    super::models::wait_ready(&self.docker, &ui, &self.id, &sidecar, m, i, &sn)
                }));
            timed("models wait ready", waits)
                .await
                .into_iter()
                .collect::<Result<Vec<()>>>()?;
        }
        if let Some(AttachContainerResults { output, input }) = gated_agent {
            let nonce = start_gate::new_nonce().context("reading the OS random source")?;
            timed("agent gate open", start_gate::open(input, &nonce)).await?;
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
                let (src, uid, gid) = workspace::prepare_workspace(copy_dst, &ws)?;
                let (mounts, snapshot) = match &src {
                    Some(dir) => workspace::protect_git_metadata(dir, protect_git)?,
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
                probe::select_runtime(&self.docker, facts, spec.runtime, &spec.agent_image),
            ),
            timed(
                "image files (roots, passwd)",
                images::image_files(
                    &self.docker,
                    &spec.agent_image,
                    &[roots::SYSTEM_BUNDLE, "/etc/passwd", "/etc/group", "/bin/sh"],
                ),
            ),
            images::entrypoint_and_cmd(&self.docker, &spec.agent_image),
            workspace
        );
        let runtime = runtime?;
        let mut files = files?;
        let (image_entrypoint, image_cmd) = config?;
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
            image_entrypoint,
            image_cmd,
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
            crate::runtime::events::emit(
                "session.ended",
                &self.id,
                serde_json::json!({ "exit_code": code }),
            );
            crate::runtime::sessions::update(&self.id, "ended", code);
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
                .chain(self.models.iter())
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
        if containers::kill(&self.docker, name).await {
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
        let containers: Vec<&String> = self
            .agent
            .iter()
            .chain(self.sidecar.iter())
            .chain(self.models.iter())
            .collect();
        timed(
            "teardown stop containers",
            futures_util::future::join_all(containers.iter().map(|c| self.stop_container(c))),
        )
        .await;
        let left = std::sync::Mutex::new(Vec::<String>::new());
        let remove_containers =
            futures_util::future::join_all(containers.iter().map(|c| {
                let left = &left;
                async move {
                if let Err(e) = containers::remove(&self.docker, c).await {
                    eprintln!(
                        "bottle: warning: removing container {c}: {e} (the next `bottle reap` finishes it)"
                    );
                    left.lock().expect("not poisoned").push((*c).clone());
                }
                }
            }));
        let networks: Vec<&String> = self
            .internal_net
            .iter()
            .chain(self.models_net.iter().map(|(n, _)| n))
            .chain(self.egress_net.iter())
            .collect();
        // First try beside the container removal; a network that still has an endpoint (a
        // container that did not stop) is retried once the containers are gone.
        let remove_networks = futures_util::future::join_all(
            networks
                .iter()
                .map(|n| async move { networks::remove(&self.docker, n).await.err().map(|_| *n) }),
        );
        let (_, retry) = timed("teardown remove", async {
            tokio::join!(remove_containers, remove_networks)
        })
        .await;
        for n in retry.into_iter().flatten() {
            if let Err(e) = networks::remove(&self.docker, n).await {
                eprintln!(
                    "bottle: warning: removing network {n}: {e} (the next `bottle reap` finishes it)"
                );
                left.lock().expect("not poisoned").push(n.clone());
            }
        }
        let left = left.into_inner().expect("not poisoned");
        if !left.is_empty() {
            // The next reap completes this teardown, whatever the launcher's pid says then.
            crate::runtime::sessions::mark_teardown_failed(&self.id, &left);
        }
        if let Err(e) = self.state.remove() {
            eprintln!("bottle: warning: {e:#}");
        }
    }
}
