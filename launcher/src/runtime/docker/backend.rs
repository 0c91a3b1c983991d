//! [`DockerBackend`]: the [`Backend`] trait over the Docker engine, by calling the functions
//! of the `docker` modules.
use anyhow::{Context, Result};
use bollard::Docker;
use tokio::sync::OnceCell;

use super::bottle::Bottle;
use super::probe::{self, EngineFacts};
use super::reap::ReapReport;
use super::{lifecycle, reap, verbs};
use crate::runtime::backend::{Backend, SessionId};
use crate::runtime::bottle::LaunchOptions;
use crate::runtime::lifecycle::{Capture, CaptureMode, VerbResult};
use crate::runtime::spec::LaunchSpec;
use crate::runtime::verbs::BottleRow;

/// Bottles as Docker objects on one engine.
pub struct DockerBackend {
    docker: Docker,
    facts: OnceCell<EngineFacts>,
}

impl DockerBackend {
    /// Connects to the local engine ([`probe::connect`]: `DOCKER_HOST`, version negotiation).
    pub async fn connect() -> Result<DockerBackend> {
        Ok(DockerBackend::new(probe::connect().await?))
    }

    /// A backend over an existing connection.
    pub fn new(docker: Docker) -> DockerBackend {
        DockerBackend {
            docker,
            facts: OnceCell::new(),
        }
    }

    /// The engine connection.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The engine's facts, read once.
    pub async fn facts(&self) -> Result<&EngineFacts> {
        self.facts
            .get_or_try_init(|| probe::facts(&self.docker))
            .await
    }
}

impl Backend for DockerBackend {
    type Session = Bottle;

    fn name(&self) -> &'static str {
        "docker"
    }

    async fn create(&self, spec: &LaunchSpec, opts: &LaunchOptions) -> Result<Bottle> {
        let facts = self.facts().await?;
        Bottle::launch(&self.docker, facts, spec, opts).await
    }

    async fn start(&self, session: &Bottle) -> Result<()> {
        let agent = session
            .agent
            .as_deref()
            .context("agent container missing")?;
        self.docker
            .start_container(agent, None)
            .await
            .context("starting the agent")
    }

    async fn attach(&self, id: &SessionId, detach_keys: &str) -> Result<i64> {
        crate::runtime::tty::attach(&self.docker, id.as_str(), detach_keys).await
    }

    async fn exec(&self, id: &SessionId, cmd: &[String], stdin: bool) -> Result<i64> {
        lifecycle::exec(&self.docker, id.as_str(), cmd, stdin).await
    }

    async fn pause(&self, id: &SessionId) -> Result<VerbResult> {
        lifecycle::pause(&self.docker, id.as_str()).await
    }

    async fn resume(&self, id: &SessionId) -> Result<VerbResult> {
        lifecycle::resume(&self.docker, id.as_str()).await
    }

    async fn stop(&self, id: &SessionId) -> Result<ReapReport> {
        verbs::end(&self.docker, id.as_str()).await
    }

    async fn remove(&self, id: &SessionId) -> Result<VerbResult> {
        lifecycle::kill(&self.docker, id.as_str()).await
    }

    async fn list(&self) -> Result<Vec<BottleRow>> {
        verbs::list(&self.docker).await
    }

    async fn logs(&self, id: &SessionId, audit: bool, follow: bool) -> Result<()> {
        verbs::logs(&self.docker, id.as_str(), audit, follow).await
    }

    async fn reap(&self, only: Option<&SessionId>, force: bool) -> Result<ReapReport> {
        reap::reap(&self.docker, only.map(SessionId::as_str), force).await
    }

    async fn capture(
        &self,
        id: &SessionId,
        lines: usize,
        since: Option<&str>,
        mode: CaptureMode,
    ) -> Result<Capture> {
        lifecycle::capture(&self.docker, id.as_str(), lines, since, mode).await
    }

    async fn send_keys(&self, id: &SessionId, payload: &[u8]) -> Result<()> {
        lifecycle::send_keys(&self.docker, id.as_str(), payload).await
    }
}
