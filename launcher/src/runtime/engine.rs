//! Connecting to the Docker engine (always with API version negotiation) and what the
//! launcher needs to know about it: server version and usable runtimes.
use std::time::Duration;

use anyhow::{Context, Result};
use bollard::Docker;

/// Connects to the local engine (honours `DOCKER_HOST`), negotiates the API version and pings.
pub async fn connect() -> Result<Docker> {
    const HINT: &str = "cannot reach the Docker engine — is Docker running and is DOCKER_HOST right? try `bottle doctor`";
    let docker = Docker::connect_with_local_defaults().context(HINT)?;
    // Negotiation asks the engine for its version: that is the ping.
    let docker = tokio::time::timeout(
        Duration::from_secs(10),
        super::timing::timed("engine negotiate version", docker.negotiate_version()),
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
