//! Engine calls on the bottle's containers: creating the agent (from
//! [`super::container_spec::agent_container`]), attaching to a container's stdio, starting the
//! gated agent, killing and removing containers.
use std::path::PathBuf;

use anyhow::{Context, Result};
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use ipnet::Ipv4Net;

use super::container_spec::{agent_container, AgentFiles, AgentInputs};
use crate::runtime::agent_env::{agent_env, gate_gitconfig};
use crate::runtime::bottle::{LaunchOptions, Mode, GATE_PORT};
use crate::runtime::labels::{self, BottleLabels};
use crate::runtime::spec::LaunchSpec;
use crate::runtime::statedir::StateDir;
use crate::runtime::subnet;
use crate::runtime::timing::timed;

/// An attached container's output stream (stdout and stderr frames).
pub type AttachedOutput = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// Creates (never starts) the agent of bottle `id` on the internal network only (static IP
/// `.3`, DNS pinned to the sidecar at `.2`), writing its `resolv.conf` (gVisor) and the gate's
/// git config (git remotes) into the runtime dir first. Returns whether its command is behind
/// the start [`crate::runtime::gate`].
#[allow(clippy::too_many_arguments)]
pub async fn create_agent(
    docker: &Docker,
    state: &StateDir,
    id: &str,
    blabels: &BottleLabels,
    spec: &LaunchSpec,
    opts: &LaunchOptions,
    m: &AgentFiles,
    internal: &str,
    sn: &Ipv4Net,
    models_net: Option<&(String, Ipv4Net)>,
) -> Result<bool> {
    let sidecar_ip = subnet::host(sn, 2);
    let agent_ip = subnet::host(sn, 3);
    let resolv = if m.runtime.as_deref() == Some("runsc") {
        // gVisor cannot reach the embedded DNS; name the sidecar directly.
        Some(state.write(
            "resolv.conf",
            format!("nameserver {sidecar_ip}\n").as_bytes(),
            0o644,
        )?)
    } else {
        None
    };
    let name = labels::name(id, "agent");
    let interactive = matches!(opts.mode, Mode::Start | Mode::Spawn);
    let env = agent_env(
        id,
        spec,
        &opts.extra_env,
        interactive,
        std::env::var("TERM").ok(),
        sidecar_ip,
        m.prompt.is_some(),
    );
    let gitconfig: Option<PathBuf> = if spec.git_remotes.is_empty() {
        None
    } else {
        // Every spelling of each remote goes to the gate, straight over the internal
        // network (not through the proxy, which refuses smart-HTTP pushes).
        let cfg = gate_gitconfig(&spec.git_remotes, &format!("{sidecar_ip}:{GATE_PORT}"));
        Some(state.write("gitconfig", cfg.as_bytes(), 0o644)?)
    };
    let (body, gated) = agent_container(&AgentInputs {
        spec,
        opts,
        files: m,
        env: &env,
        labels: blabels.for_role("agent"),
        internal,
        sidecar_ip,
        agent_ip,
        resolv,
        gitconfig,
        extra_hosts: models_net
            .map(|(_, msn)| super::models::extra_hosts(&spec.models, msn))
            .unwrap_or_default(),
    });
    docker
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
    if let Some((mnet, msn)) = models_net {
        // The agent reaches its models on their own network (a model never sees the proxy).
        docker
            .connect_network(
                mnet,
                bollard::models::NetworkConnectRequest {
                    container: name.clone(),
                    endpoint_config: Some(super::container_spec::static_endpoint(subnet::host(
                        msn, 3,
                    ))),
                },
            )
            .await
            .context("joining the agent to the models network")?;
    }
    Ok(gated)
}

/// Attaches to a container's stdin, stdout and stderr (before its start, so nothing of its
/// output is missed).
pub async fn attach_stdio(
    docker: &Docker,
    name: &str,
) -> std::result::Result<AttachContainerResults, bollard::errors::Error> {
    let opts = AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    docker.attach_container(name, Some(opts)).await
}

/// Attaches to the (gated) agent's stdio and starts it; its command waits for
/// [`gate::open`] on the returned stdin.
pub async fn start_gated_agent(docker: &Docker, id: &str) -> Result<AttachContainerResults> {
    let name = labels::name(id, "agent");
    let attached = timed("agent attach", attach_stdio(docker, &name))
        .await
        .context("attaching to the agent's stdio")?;
    timed("agent start (gated)", docker.start_container(&name, None))
        .await
        .context("starting the agent")?;
    Ok(attached)
}

/// Kills container `name` (SIGKILL; the engine answers once it has stopped and its network
/// endpoints are released). True when it is stopped (killed now, not running, or gone).
pub async fn kill(docker: &Docker, name: &str) -> bool {
    match docker.kill_container(name, None).await {
        Ok(()) => true,
        // 404: gone; 409: not running.
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. }) => {
            matches!(status_code, 404 | 409)
        }
        Err(_) => false,
    }
}

/// Force-removes container `c` with its anonymous volumes; `Err` unless it is gone (removed
/// now or before).
pub async fn remove(docker: &Docker, c: &str) -> std::result::Result<(), bollard::errors::Error> {
    let rm = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(c, Some(rm)).await {
        Err(e) if !super::is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}
