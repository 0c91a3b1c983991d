//! Model sidecars at run time ([`crate::manifest::ModelPlan`], container spec in
//! [`super::model_spec`]): created and started on the bottle's models network (shared with the
//! agent and the proxy sidecar only), each at a static address after the agent's (`.4`, `.5`,
//! …), named for the agent through its `/etc/hosts` (`extra_hosts`), then awaited until ready
//! before the agent starts. A model with `egress` routes is started only once the sidecar —
//! whose model egress proxy serves those routes to that model's address alone — is up.
//!
//! Readiness is checked from inside the bottle: `docker exec` of `bottle-sidecar probe URL`
//! in the proxy sidecar (the one container bottle builds itself, on the internal network; the
//! launcher on the host has no address on an `--internal` network with `inhibit_ipv4`, and a
//! model image may have neither curl nor python). While waiting, the model's own last log line
//! is shown every few seconds; a model that is not ready in its `ready.timeout` fails the
//! start with its last log lines (the launch then removes everything).
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use ipnet::Ipv4Net;

use super::model_spec::{model_container, model_container_name, ModelInputs, MODEL_ROLE};
use crate::manifest::ModelPlan;
use crate::progress::Ui;
use crate::runtime::bottle::MODEL_PROXY_PORT;
use crate::runtime::labels::BottleLabels;
use crate::runtime::spec::LaunchSpec;
use crate::runtime::subnet;

/// Host number of the first model on the internal /28 (`.2` sidecar, `.3` agent).
pub const FIRST_MODEL_HOST: u32 = 4;
/// Most model sidecars one bottle can have (the rest of the /28, `.15` is broadcast).
pub const MAX_MODELS: usize = 11;
/// How often readiness is polled once the model has had [`FAST_POLL_FOR`] (loading takes
/// seconds to minutes).
const POLL: Duration = Duration::from_secs(1);
/// How often readiness is polled at first: a small model (or a fake one) is up within a second,
/// and a one-second poll would add up to a second to the start.
const FAST_POLL: Duration = Duration::from_millis(50);
/// How long [`FAST_POLL`] applies.
const FAST_POLL_FOR: Duration = Duration::from_secs(2);

/// The wait before the next readiness probe, `elapsed` into the wait.
fn poll_interval(elapsed: Duration) -> Duration {
    if elapsed < FAST_POLL_FOR {
        FAST_POLL
    } else {
        POLL
    }
}
/// How often a progress line is printed when stderr is not a terminal.
const PROGRESS: Duration = Duration::from_secs(5);
/// How often a terminal's spinner shows the model's latest log line.
const LIVE_PROGRESS: Duration = Duration::from_secs(1);
/// Log lines shown when a model fails.
const FAIL_LINES: usize = 20;

/// Refuses what the runtime cannot do, before anything is created: more models than
/// addresses.
pub fn check_supported(spec: &LaunchSpec) -> Result<()> {
    if spec.models.len() > MAX_MODELS {
        bail!(
            "bottle {} has {} [[model]] sidecars; at most {MAX_MODELS} are supported",
            spec.bottle,
            spec.models.len()
        );
    }
    Ok(())
}

/// The static address of model `index` on internal subnet `sn`.
pub fn model_ip(sn: &Ipv4Net, index: usize) -> Ipv4Addr {
    subnet::host(sn, FIRST_MODEL_HOST + index as u32)
}

/// The agent's `extra_hosts` entries naming each model (`name:ip`).
pub fn extra_hosts(models: &[ModelPlan], sn: &Ipv4Net) -> Vec<String> {
    models
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{}:{}", m.name, model_ip(sn, i)))
        .collect()
}

/// Creates model `index` of bottle `id` on the models network `net` (subnet `sn`), and
/// starts it unless it has egress routes (those start once the sidecar is up). `ca_file` is
/// the bottle CA certificate on the host, for models with egress routes.
#[allow(clippy::too_many_arguments)]
pub async fn create_and_start(
    docker: &Docker,
    id: &str,
    blabels: &BottleLabels,
    m: &ModelPlan,
    index: usize,
    net: &str,
    sn: &Ipv4Net,
    ca_file: Option<&std::path::Path>,
) -> Result<()> {
    let name = model_container_name(id, &m.name);
    let sidecar_ip = subnet::host(sn, 2);
    let proxy = format!("http://{sidecar_ip}:{MODEL_PROXY_PORT}");
    let body = model_container(&ModelInputs {
        model: m,
        labels: blabels.for_role(MODEL_ROLE),
        internal: net,
        sidecar_ip,
        model_ip: model_ip(sn, index),
        proxy: Some(&proxy),
        ca: ca_file,
    });
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .with_context(|| {
            format!(
                "creating model {:?} from image {} (declared in {}) — is the image pulled (`docker pull {}`)?",
                m.name, m.image, m.declared_in, m.image
            )
        })?;
    if m.egress.is_empty() {
        docker
            .start_container(&name, None)
            .await
            .with_context(|| format!("starting model {:?} ({})", m.name, m.image))?;
    }
    Ok(())
}

/// The output and exit code of `cmd` run in container `c`.
async fn exec_output(docker: &Docker, c: &str, cmd: Vec<String>) -> Result<(i64, String, String)> {
    let e = docker
        .create_exec(
            c,
            CreateExecOptions {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&e.id, None).await? {
        while let Some(chunk) = output.next().await {
            match chunk? {
                bollard::container::LogOutput::StdErr { message } => {
                    err.extend_from_slice(&message)
                }
                other => out.extend_from_slice(&other.into_bytes()),
            }
        }
    }
    let code = docker.inspect_exec(&e.id).await?.exit_code.unwrap_or(-1);
    Ok((
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

/// The last `n` lines of container `c`'s output.
pub async fn last_log_lines(docker: &Docker, c: &str, n: usize) -> Vec<String> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&n.to_string())
        .build();
    let mut s = docker.logs(c, Some(opts));
    let mut text = String::new();
    while let Some(Ok(chunk)) = s.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    text.lines()
        .map(|l| crate::runtime::lifecycle::strip_controls(l.trim_end()))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Whether a ready answer's body lists model `id`: OpenAI's `data[].id` or Ollama's
/// `models[].name`/`model` (`x` also matches `x:latest`).
pub fn lists_model(body: &str, id: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let matches = |s: &str| s == id || s == format!("{id}:latest");
    let field = |key: &str, fields: &[&str]| {
        v.get(key).and_then(|d| d.as_array()).is_some_and(|a| {
            a.iter().any(|e| {
                fields
                    .iter()
                    .any(|f| e.get(*f).and_then(|x| x.as_str()).is_some_and(matches))
            })
        })
    };
    field("data", &["id"]) || field("models", &["name", "model"])
}

/// What one probe found.
enum Probe {
    /// Nothing answers (yet).
    Down(String),
    /// The server answers, but not ready (HTTP status not 2xx, or the model not listed).
    NotReady(String),
    /// Ready.
    Ready,
}

async fn probe(docker: &Docker, sidecar: &str, m: &ModelPlan, ip: Ipv4Addr) -> Result<Probe> {
    let url = format!("http://{ip}:{}{}", m.port, m.ready.path);
    let (code, out, err) = exec_output(
        docker,
        sidecar,
        vec!["/bottle-sidecar".into(), "probe".into(), url],
    )
    .await
    .context("running the readiness probe in the sidecar")?;
    Ok(match code {
        0 => match &m.ready.lists_model {
            Some(id) if !lists_model(&out, id) => {
                Probe::NotReady(format!("{} does not list {id:?} yet", m.ready.path))
            }
            _ => Probe::Ready,
        },
        1 => Probe::NotReady(err.trim().to_string()),
        _ => Probe::Down(err.trim().to_string()),
    })
}

/// Waits until model `index` answers its ready check (running its `pull` command once the
/// server answers), showing progress on `ui` (a spinner with the server's latest log line on
/// a terminal, a line every few seconds otherwise); fails after `ready.timeout` (or when the
/// container exits) with its last log lines.
pub async fn wait_ready(
    docker: &Docker,
    ui: &Ui,
    id: &str,
    sidecar: &str,
    m: &ModelPlan,
    index: usize,
    sn: &Ipv4Net,
) -> Result<()> {
    let name = model_container_name(id, &m.name);
    let ip = model_ip(sn, index);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(m.ready.timeout_secs);
    let mut pulled = m.pull.is_none();
    let step = ui.status(&format!("model {}", m.name));
    let live = step.is_live();
    let every = if live { LIVE_PROGRESS } else { PROGRESS };
    let mut last_shown = Instant::now();
    step.line(&format!(
        "waiting for model {} (up to {}: {})",
        m.name, m.ready.timeout, m.ready.meaning
    ));
    step.message(&format!("up to {}: {}", m.ready.timeout, m.ready.meaning));
    loop {
        let state = docker
            .inspect_container(&name, None)
            .await
            .ok()
            .and_then(|i| i.state);
        if let Some(s) = &state {
            if s.running == Some(false) && s.paused != Some(true) {
                return Err(failure(
                    docker,
                    &name,
                    m,
                    format!("its container exited (code {})", s.exit_code.unwrap_or(-1)),
                )
                .await);
            }
        }
        let why = match probe(docker, sidecar, m, ip).await? {
            Probe::Ready if pulled => {
                step.line(&format!(
                    "model {} ready after {} s ({})",
                    m.name,
                    t0.elapsed().as_secs(),
                    m.ready.meaning
                ));
                return Ok(());
            }
            Probe::Ready | Probe::NotReady(_) if !pulled => {
                let cmd = m.pull.clone().unwrap_or_default();
                step.line(&format!("model {}: {}", m.name, cmd.join(" ")));
                step.message(&cmd.join(" "));
                let (code, out, err) = exec_output(docker, &name, cmd.clone())
                    .await
                    .with_context(|| format!("running {:?} in model {:?}", cmd, m.name))?;
                if code != 0 {
                    let tail: Vec<&str> = out.lines().chain(err.lines()).rev().take(5).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(failure(
                        docker,
                        &name,
                        m,
                        format!(
                            "`{}` failed (exit code {code}): {}",
                            cmd.join(" "),
                            tail.join(" / ")
                        ),
                    )
                    .await);
                }
                pulled = true;
                continue;
            }
            Probe::NotReady(w) | Probe::Down(w) => w,
            Probe::Ready => unreachable!("handled above"),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(failure(
                docker,
                &name,
                m,
                format!(
                    "no ready answer within {} ({}; last: {why})",
                    m.ready.timeout, m.ready.meaning
                ),
            )
            .await);
        }
        if now.duration_since(last_shown) >= every {
            last_shown = now;
            let line = last_log_lines(docker, &name, 1)
                .await
                .pop()
                .unwrap_or_default();
            let line: String = line.chars().take(160).collect();
            if live {
                step.message(&line);
            } else {
                step.line(&format!(
                    "waiting for model {} ({} s of {}): {line}",
                    m.name,
                    t0.elapsed().as_secs(),
                    m.ready.timeout
                ));
            }
        }
        let wait = poll_interval(t0.elapsed());
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(now))).await;
    }
}

/// The error of a model that is not ready, with its last log lines.
async fn failure(docker: &Docker, name: &str, m: &ModelPlan, why: String) -> anyhow::Error {
    let lines = last_log_lines(docker, name, FAIL_LINES).await;
    let mut msg = format!(
        "model {:?} ({}, declared in {}) is not ready: {why}",
        m.name, m.image, m.declared_in
    );
    if lines.is_empty() {
        msg.push_str("\n  (it printed nothing)");
    } else {
        msg.push_str(&format!("\n  its last {} log lines:", lines.len()));
        for l in lines {
            msg.push_str("\n  | ");
            msg.push_str(&l);
        }
    }
    anyhow::anyhow!(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> ModelPlan {
        let spec: crate::manifest::ModelSpec = toml::from_str(text).unwrap();
        crate::manifest::resolve_model(&spec, "bottles/m.toml")
    }

    #[test]
    fn ready_bodies_must_list_the_model() {
        assert!(lists_model(r#"{"data":[{"id":"Qwen/Q"}]}"#, "Qwen/Q"));
        assert!(!lists_model(r#"{"data":[{"id":"other"}]}"#, "Qwen/Q"));
        assert!(lists_model(
            r#"{"models":[{"name":"qwen3:latest"}]}"#,
            "qwen3"
        ));
        assert!(lists_model(
            r#"{"models":[{"model":"qwen3:8b"}]}"#,
            "qwen3:8b"
        ));
        assert!(!lists_model(r#"{"models":[]}"#, "qwen3"));
        assert!(!lists_model("loading", "qwen3"));
    }

    #[test]
    fn models_get_addresses_after_the_agent() {
        let sn: Ipv4Net = "10.213.4.16/28".parse().unwrap();
        let ms = vec![
            plan("name = \"a\"\nengine = \"ollama\"\nmodel = \"q\"\n"),
            plan("name = \"b\"\nengine = \"vllm\"\nmodel = \"Q\"\n"),
        ];
        assert_eq!(
            extra_hosts(&ms, &sn),
            vec!["a:10.213.4.20".to_string(), "b:10.213.4.21".to_string()]
        );
        assert_eq!(
            model_ip(&sn, MAX_MODELS - 1),
            "10.213.4.30".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn readiness_is_polled_fast_at_first() {
        assert_eq!(poll_interval(Duration::ZERO), FAST_POLL);
        assert_eq!(poll_interval(Duration::from_millis(1999)), FAST_POLL);
        assert_eq!(poll_interval(Duration::from_secs(2)), POLL);
        assert_eq!(poll_interval(Duration::from_secs(600)), POLL);
    }

    #[test]
    fn more_models_than_addresses_are_refused() {
        let mut spec = LaunchSpec::sample();
        for i in 0..=MAX_MODELS {
            spec.models.push(plan(&format!(
                "name = \"m{i}\"\nengine = \"vllm\"\nmodel = \"Q\"\n"
            )));
        }
        let e = check_supported(&spec).unwrap_err().to_string();
        assert!(e.contains("at most 11"), "{e}");
        spec.models.pop();
        check_supported(&spec).unwrap();
    }
}
