//! Probing the Docker engine: connecting (always with API version negotiation), what the
//! launcher needs to know about it (server version, registered runtimes), and which OCI
//! runtime really works for an agent image (a probe container, cached per engine).
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use crate::runtime::labels;
use crate::runtime::spec::RuntimeChoice;

/// Connects to the local engine (honours `DOCKER_HOST`), negotiates the API version and pings.
pub async fn connect() -> Result<Docker> {
    const HINT: &str = "cannot reach the Docker engine — is Docker running and is DOCKER_HOST right? try `bottle doctor`";
    let docker = Docker::connect_with_local_defaults().context(HINT)?;
    // Negotiation asks the engine for its version: that is the ping.
    let docker = tokio::time::timeout(
        Duration::from_secs(10),
        crate::runtime::timing::timed("engine negotiate version", docker.negotiate_version()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the Docker engine did not answer within 10 s"))
    .context(HINT)?
    .context(HINT)?;
    Ok(docker)
}

/// The engine's major version (e.g. 20 for `20.10.24+dfsg1`), if it can be parsed.
pub fn major_version(server_version: &str) -> Option<u32> {
    server_version.split(['.', '+', '-']).next()?.parse().ok()
}

/// Facts about the engine the bottle objects depend on.
#[derive(Debug, Clone)]
pub struct EngineFacts {
    /// Server version string.
    pub version: String,
    /// Major version; 0 when unknown.
    pub major: u32,
    /// Runtime names registered with the engine (not necessarily working).
    pub runtimes: Vec<String>,
    /// The engine's id (stable per daemon), for caching probe results.
    pub engine_id: String,
}

impl EngineFacts {
    /// Whether the bridge driver knows `gateway_mode_ipv4=isolated` (engine ≥ 28).
    pub fn has_isolated_gateway_mode(&self) -> bool {
        self.major >= 28
    }
}

/// Reads the engine version and runtimes.
pub async fn facts(docker: &Docker) -> Result<EngineFacts> {
    let (v, info) = tokio::join!(docker.version(), docker.info());
    let v = v.context("asking the Docker engine for its version")?;
    let version = v.version.unwrap_or_default();
    let info = info.context("asking the Docker engine for its info")?;
    let mut runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
    runtimes.sort();
    Ok(EngineFacts {
        major: major_version(&version).unwrap_or(0),
        version,
        runtimes,
        engine_id: info.id.unwrap_or_default(),
    })
}

/// Chooses the agent's OCI runtime: runsc only when a probe container really starts under it.
pub async fn select_runtime(
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
    let path = crate::runtime::statedir::base_dir()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(major_version("20.10.24+dfsg1"), Some(20));
        assert_eq!(major_version("28.2.2"), Some(28));
        assert_eq!(major_version("29.0.0-rc.1"), Some(29));
        assert_eq!(major_version("dev"), None);
    }
}
