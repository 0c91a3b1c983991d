//! The sidecar's wiring: its container created on the egress network and attached before its
//! start, joined to the internal network (static IP `.2`), started while its bootstrap (policy,
//! CA key, secrets, DNS, git gate) goes down the attached stdin, then awaited until it prints
//! its ready line. That stdin stays open as the sidecar's [`Lifeline`].
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::NetworkConnectRequest;
use bollard::query_parameters::{CreateContainerOptionsBuilder, WaitContainerOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;

use super::container_spec::{sidecar_container, sidecar_endpoint};
use super::containers::{attach_stdio, AttachedOutput};
use crate::runtime::ca;
use crate::runtime::labels::{self, BottleLabels};
use crate::runtime::lifeline::Lifeline;
use crate::runtime::spec::LaunchSpec;
use crate::runtime::subnet;
use crate::runtime::timing::timed;
use bottle_protocol::events::Event;

/// The internal network (id, subnet) as awaited by both launch chains.
pub type SharedNet = std::result::Result<(String, Ipv4Net), std::sync::Arc<anyhow::Error>>;
/// The models network (id, subnet), `None` for a bottle without model sidecars.
pub type SharedModelsNet =
    std::result::Result<Option<(String, Ipv4Net)>, std::sync::Arc<anyhow::Error>>;

/// Creates the sidecar on its egress network, attaches to its stdio (before the start, so
/// the bootstrap is never anywhere but this pipe and no output is missed), joins it to the
/// internal network (static IP `.2`, aliases) once that exists — and, for a bottle with model
/// sidecars, the models network (`.2` there too: readiness probes and the model egress proxy) —
/// then starts it while writing its bootstrap. Returns its output stream and whether the
/// bootstrap went out.
#[allow(clippy::too_many_arguments)]
pub async fn start_sidecar(
    docker: &Docker,
    id: &str,
    blabels: &BottleLabels,
    spec: &LaunchSpec,
    egress: &str,
    internal: impl std::future::Future<Output = SharedNet>,
    models: impl std::future::Future<Output = SharedModelsNet>,
    ca: &ca::BottleCa,
) -> Result<(AttachedOutput, Result<Lifeline>)> {
    let name = labels::name(id, "sidecar");
    let body = sidecar_container(spec, blabels.for_role("sidecar"), egress);
    timed(
        "sidecar create",
        docker.create_container(
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
    let attached = timed("sidecar attach", attach_stdio(docker, &name))
        .await
        .context("attaching to the sidecar's stdio")?;
    let AttachContainerResults { output, input } = attached;
    let (net, sn) = internal.await.map_err(|e| anyhow!("{e:#}"))?;
    let sidecar_ip = subnet::host(&sn, 2);
    // Joined before the start, so the start sets up both networks at once and the internal
    // address exists before the sidecar reads its bootstrap.
    let endpoint = sidecar_endpoint(sidecar_ip);
    timed(
        "sidecar internal connect",
        docker.connect_network(
            &net,
            NetworkConnectRequest {
                container: name.clone(),
                endpoint_config: Some(endpoint),
            },
        ),
    )
    .await
    .context("joining the sidecar to the bottle's internal network")?;
    let models_sn = match models.await.map_err(|e| anyhow!("{e:#}"))? {
        Some((mnet, msn)) => {
            // Its proxy, DNS and gate listeners stay bound to the internal address, which no
            // model can route to; on this network it serves only the model egress proxy, to
            // the models' own addresses.
            timed(
                "sidecar models connect",
                docker.connect_network(
                    &mnet,
                    NetworkConnectRequest {
                        container: name.clone(),
                        endpoint_config: Some(super::container_spec::static_endpoint(
                            subnet::host(&msn, 2),
                        )),
                    },
                ),
            )
            .await
            .context("joining the sidecar to the models network")?;
            Some(msn)
        }
        None => None,
    };
    // The bootstrap goes down the attached stdin beside the start: the engine hands it to
    // the sidecar's stdin once the process runs, so it reads it without another round trip.
    let (started, sent) = tokio::join!(
        timed("sidecar start", docker.start_container(&name, None)),
        timed(
            "sidecar bootstrap sent",
            send_bootstrap(input, spec, ca, sidecar_ip, models_sn.as_ref())
        )
    );
    started.context("starting the sidecar")?;
    Ok((output, sent))
}

/// Writes the bootstrap (policy, CA key, secrets) to the sidecar's attached stdin and returns
/// that stdin, kept open as the sidecar's [`Lifeline`].
async fn send_bootstrap(
    mut input: Lifeline,
    spec: &LaunchSpec,
    ca: &ca::BottleCa,
    sidecar_ip: Ipv4Addr,
    models_subnet: Option<&Ipv4Net>,
) -> Result<Lifeline> {
    let boot = crate::runtime::bootstrap::document(spec, ca, sidecar_ip, models_subnet)?;
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
pub async fn wait_ready(
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
