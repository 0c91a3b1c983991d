//! Model sidecars (`[[model]]` of a bottle): the stanza as written, its per-file validation,
//! the resolved [`ModelPlan`] the runtime starts, and what the agent is told about the first
//! model ([`agent_wiring`]). Pure rules: no engine calls, unit-tested below.
//!
//! A model sidecar joins only the bottle's internal network; it has no workspace, no bottle
//! secrets but the placeholders of its own `secrets`, and no route off the box unless it has
//! `egress` routes (its own route set, through the proxy sidecar, never usable by the agent).
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use bottle_proxy::policy::RouteSpec;
use serde::{Deserialize, Serialize};

use super::bottle::{is_valid_name, route_id, Template};
use super::error::ManifestError;
use super::secrets::placeholder_value;
use super::source::SourceFile;
use super::suggest::did_you_mean;
use super::{is_valid_env_name, RESERVED_ENV};

/// Default context window (tokens) a model server is started with: an agent loop needs far
/// more than Ollama's 4096-token default.
pub const DEFAULT_CONTEXT: u32 = 65536;
/// Default readiness timeout (model loading, and a first weight download, take minutes).
pub const DEFAULT_READY_TIMEOUT: &str = "15m";
/// Longest readiness timeout accepted.
pub const MAX_READY_TIMEOUT_SECS: u64 = 24 * 3600;

/// Inference engine of a model sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelEngine {
    /// vLLM's OpenAI-compatible server (`vllm serve`; also serves `/v1/messages`).
    Vllm,
    /// Ollama (`ollama serve`; the model is pulled once the server is up).
    Ollama,
    /// llama.cpp's `llama-server`.
    Llamacpp,
    /// Any OpenAI/Anthropic-compatible server image (`image` is required, `args` are its own).
    Openai,
}

impl ModelEngine {
    /// All engines, by name.
    pub const ALL: [(&'static str, ModelEngine); 4] = [
        ("vllm", ModelEngine::Vllm),
        ("ollama", ModelEngine::Ollama),
        ("llamacpp", ModelEngine::Llamacpp),
        ("openai", ModelEngine::Openai),
    ];

    /// The engine's name as written in a manifest.
    pub fn name(self) -> &'static str {
        match self {
            ModelEngine::Vllm => "vllm",
            ModelEngine::Ollama => "ollama",
            ModelEngine::Llamacpp => "llamacpp",
            ModelEngine::Openai => "openai",
        }
    }

    /// The port the engine listens on by default.
    pub fn default_port(self) -> u16 {
        match self {
            ModelEngine::Vllm | ModelEngine::Openai => 8000,
            ModelEngine::Ollama => 11434,
            ModelEngine::Llamacpp => 8080,
        }
    }

    /// The engine's default image (`None` for `openai`, which needs an explicit `image`);
    /// vLLM and llama.cpp have separate GPU and CPU images.
    pub fn default_image(self, gpu: bool) -> Option<&'static str> {
        match (self, gpu) {
            (ModelEngine::Vllm, true) => Some("vllm/vllm-openai"),
            (ModelEngine::Vllm, false) => Some("vllm/vllm-openai-cpu"),
            (ModelEngine::Ollama, _) => Some("ollama/ollama"),
            (ModelEngine::Llamacpp, true) => Some("ghcr.io/ggml-org/llama.cpp:server-cuda"),
            (ModelEngine::Llamacpp, false) => Some("ghcr.io/ggml-org/llama.cpp:server"),
            (ModelEngine::Openai, _) => None,
        }
    }

    /// The default readiness path: one that answers only once the model is loaded.
    pub fn default_ready_path(self) -> &'static str {
        match self {
            ModelEngine::Vllm | ModelEngine::Openai => "/v1/models",
            ModelEngine::Ollama => "/api/tags",
            ModelEngine::Llamacpp => "/health",
        }
    }
}

/// `gpu = "all"` or `gpu = [0, 1]` / `["GPU-3f2a…"]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GpuSpec {
    /// `"all"` (any other string is refused at validation).
    All(String),
    /// Device indexes or UUIDs.
    Devices(Vec<DeviceId>),
}

/// One GPU device: an index or a UUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeviceId {
    /// `0`.
    Index(u32),
    /// `"GPU-3f2a…"` or `"0"`.
    Id(String),
}

/// `ready = { path = "/v1/models", timeout = "15m" }` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadySpec {
    /// HTTP path polled with GET (default: the engine's, see [`ModelEngine::default_ready_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How long to wait, e.g. `"90s"`, `"15m"`, `"1h"` (default [`DEFAULT_READY_TIMEOUT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A `[[model]]` entry exactly as written (validated by [`check_model`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Host name of the sidecar on the bottle network (a DNS label).
    pub name: String,
    /// The engine.
    pub engine: ModelEngine,
    /// Model id: a Hugging Face id for vLLM, a tag for Ollama, a `.gguf` path (or a
    /// `user/repo[:quant]` to download) for llama.cpp, the served name for `openai`.
    pub model: String,
    /// Port the server listens on (default: [`ModelEngine::default_port`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Image override (default: [`ModelEngine::default_image`]; required for `openai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra server arguments (after the ones bottle adds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Non-secret environment of the model server.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Bottle secrets this server needs (e.g. `HF_TOKEN`): it gets a visible placeholder in
    /// the variable of that name; the proxy injects the real value on its `egress` routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Named volumes, `"name:/path"` or `"name:/path:ro"` (no host paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// GPUs (NVIDIA runtime): `"all"` or a list of device ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuSpec>,
    /// Context window in tokens (default [`DEFAULT_CONTEXT`]), mapped onto the engine's flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<i64>,
    /// Readiness check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<ReadySpec>,
    /// The server's own egress routes (default none): through the proxy, never the agent's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<RouteSpec>,
}

/// GPUs of a resolved model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Gpu {
    /// Every GPU (`count = -1`).
    All,
    /// These device ids.
    Devices(Vec<String>),
}

/// A named volume of a model sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelVolume {
    /// The Docker volume name (kept across bottles, created by the engine on first use).
    pub name: String,
    /// Where it is mounted in the model container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// How the runtime decides a model server is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadyCheck {
    /// Path polled with `GET http://<name>:<port><path>`.
    pub path: String,
    /// The timeout as written (or the default).
    pub timeout: String,
    /// The timeout in seconds.
    pub timeout_secs: u64,
    /// When set, a 200 answer is not enough: its body must list this model id (vLLM's
    /// `/v1/models` `data[].id`, Ollama's `/api/tags` `models[].name`, where `x` matches
    /// `x:latest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lists_model: Option<String>,
    /// What a ready answer means, for messages and `bottle info`.
    pub meaning: String,
}

/// A model sidecar, fully resolved: what the runtime creates. Holds no secret value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelPlan {
    /// Host name on the bottle network (and the container's network alias).
    pub name: String,
    /// The engine.
    pub engine: ModelEngine,
    /// The model id as written.
    pub model: String,
    /// The image (default filled in).
    pub image: String,
    /// The port the server listens on.
    pub port: u16,
    /// Arguments appended to the image's entrypoint (`vllm serve`, `ollama`, `llama-server`):
    /// bottle's (model, host, port, context flag unless `args` set it) then the user's `args`.
    pub cmd: Vec<String>,
    /// Non-secret environment (the user's `env` plus the engine's own, e.g. `OLLAMA_HOST`).
    pub env: BTreeMap<String, String>,
    /// Placeholder environment for its `secrets`: variable → visibly fake value.
    pub placeholders: BTreeMap<String, String>,
    /// The bottle secrets it uses (names only).
    pub secrets: Vec<String>,
    /// Named volumes.
    pub volumes: Vec<ModelVolume>,
    /// GPUs, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// The context window applied (`None` for `openai`, which has no standard flag).
    pub context: Option<u32>,
    /// Readiness.
    pub ready: ReadyCheck,
    /// A command to run in the container once the server answers (Ollama: `ollama pull
    /// <model>`), before readiness is checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull: Option<Vec<String>>,
    /// The model's own egress routes (none: no route off the box at all).
    pub egress: Vec<RouteSpec>,
    /// The file that declared it.
    pub declared_in: String,
}

impl ModelPlan {
    /// The server's base URL on the bottle network, `http://<name>:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}:{}", self.name, self.port)
    }
}

fn invalid(
    src: &SourceFile,
    span: &Range<usize>,
    key: &str,
    message: impl Into<String>,
) -> ManifestError {
    ManifestError::Invalid {
        loc: src.loc_within(Some(span), key),
        key: key.to_string(),
        message: message.into(),
        suggestion: None,
    }
}

/// Parses a duration: `90s`, `15m`, `1h`, `1h30m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let bad = || format!("`{text}` is not a duration; write e.g. \"90s\", \"15m\" or \"1h\"");
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mult = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Parses `"name:/path[:ro|rw]"`: a named volume only (no host path).
pub fn parse_volume(text: &str) -> Result<ModelVolume, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (name, target, mode) = match parts.as_slice() {
        [n, t] => (*n, *t, None),
        [n, t, m] => (*n, *t, Some(*m)),
        _ => {
            return Err(format!(
                "`{text}` is not `name:/path` or `name:/path:ro` (a named volume and where it goes)"
            ))
        }
    };
    let name_ok = name.len() >= 2
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !name_ok {
        let why = if name.starts_with(['/', '.', '~']) {
            "host paths cannot be mounted into a model sidecar; use a named volume such as \"hf-cache\""
        } else {
            "a volume name is 2-128 of [A-Za-z0-9_.-], starting with a letter or digit"
        };
        return Err(format!("`{name}` in `{text}`: {why}"));
    }
    if !target.starts_with('/') || target == "/" || target.split('/').any(|c| c == "..") {
        return Err(format!(
            "`{target}` in `{text}` must be an absolute path other than / (and without ..)"
        ));
    }
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => return Err(format!("`{m}` in `{text}`: the mode is `ro` or `rw`")),
    };
    Ok(ModelVolume {
        name: name.to_string(),
        target: target.trim_end_matches('/').to_string(),
        read_only,
    })
}

/// The first of `flags` that `args` set (`--flag value` or `--flag=value`), with its value.
fn arg_value<'a>(args: &'a [String], flags: &[&str]) -> Option<(&'a str, Option<&'a str>)> {
    for (i, a) in args.iter().enumerate() {
        for f in flags {
            if a == f {
                return Some((a.as_str(), args.get(i + 1).map(String::as_str)));
            }
            if let Some(v) = a.strip_prefix(&format!("{f}=")) {
                return Some((a.as_str(), Some(v)));
            }
        }
    }
    None
}

/// The flags each engine's context window is set with.
fn context_flags(engine: ModelEngine) -> &'static [&'static str] {
    match engine {
        ModelEngine::Vllm => &["--max-model-len"],
        ModelEngine::Llamacpp => &["--ctx-size", "-c"],
        ModelEngine::Ollama | ModelEngine::Openai => &[],
    }
}

/// Validates one `[[model]]` of a file (`span` is the stanza's). Cross-file checks (secrets
/// declared, egress routes accepted by the proxy) are made on the merged bottle.
pub(crate) fn check_model(
    src: &SourceFile,
    span: &Range<usize>,
    m: &ModelSpec,
) -> Result<(), ManifestError> {
    let bad = |key: &str, msg: String| Err(invalid(src, span, key, msg));
    if !is_valid_name(&m.name) || m.name.contains(['.', '_']) {
        return bad("name", format!("`{}` must be a DNS label (letters, digits, `-`), it becomes the model server's host name", m.name));
    }
    if m.model.trim().is_empty() {
        return bad(
            "model",
            "name the model to serve, e.g. model = \"Qwen/Qwen2.5-Coder-7B-Instruct\"".into(),
        );
    }
    if m.port == Some(0) {
        return bad("port", "port 0 is not a port".into());
    }
    match &m.image {
        None if m.engine == ModelEngine::Openai => {
            return bad("image", "engine \"openai\" runs any OpenAI/Anthropic-compatible server, so it needs `image` (e.g. image = \"ghcr.io/acme/server:1.0\")".into())
        }
        Some(i) => {
            if let Some(why) = super::bottle::image_reference_problem(i) {
                return bad("image", format!("`{i}` is not a valid image reference: {why}"));
            }
        }
        None => {}
    }
    for flag in ["--port", "--host"] {
        if m.engine != ModelEngine::Openai && arg_value(&m.args, &[flag]).is_some() {
            return bad("args", format!("`{flag}` is set by bottle (the server listens on the bottle network at `port`); remove it from args and set `port` instead"));
        }
    }
    check_model_env(src, span, m)?;
    let mut seen = BTreeSet::new();
    for s in &m.secrets {
        if !is_valid_env_name(s) || RESERVED_ENV.contains(&s.as_str()) || s.starts_with("BOTTLE_") {
            return bad("secrets", format!("`{s}` cannot be a model secret: the server gets a placeholder in the variable of that name, so it must be a usable environment variable name (not reserved)"));
        }
        if !seen.insert(s) {
            return bad("secrets", format!("`{s}` is listed twice"));
        }
    }
    let mut targets = BTreeSet::new();
    for v in &m.volumes {
        let vol = parse_volume(v).map_err(|e| invalid(src, span, "volumes", e))?;
        if !targets.insert(vol.target.clone()) {
            return bad(
                "volumes",
                format!("two volumes are mounted at `{}`", vol.target),
            );
        }
    }
    check_gpu(src, span, m)?;
    check_context(src, span, m)?;
    if let Some(r) = &m.ready {
        if let Some(p) = &r.path {
            if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    src,
                    span,
                    "path",
                    format!("`{p}` is not an HTTP path; write e.g. path = \"/v1/models\""),
                ));
            }
        }
        if let Some(t) = &r.timeout {
            ready_timeout(t).map_err(|e| invalid(src, span, "timeout", e))?;
        }
    }
    let mut ids = BTreeSet::new();
    for r in &m.egress {
        if r.host.trim().is_empty() {
            return bad(
                "egress",
                "a route needs a host, e.g. host = \"huggingface.co\"".into(),
            );
        }
        let id = route_id(r);
        if !ids.insert(id.clone()) {
            return bad("egress", format!("two egress routes of model `{}` have the id `{id}` (the id defaults to the host); give one an explicit distinct `id`", m.name));
        }
        if let Some(a) = &r.auth {
            if !m.secrets.contains(&a.secret) {
                return Err(ManifestError::Invalid {
                    loc: src.loc_within(Some(span), &format!("\"{}\"", a.secret)),
                    key: "auth.secret".into(),
                    message: format!("egress route `{id}` of model `{}` uses secret `{}`, which is not in the model's `secrets`; add it there (and to the bottle's [secrets])", m.name, a.secret),
                    suggestion: did_you_mean(&a.secret, m.secrets.iter().map(String::as_str)),
                });
            }
        }
    }
    Ok(())
}

/// A readiness timeout in seconds, within 1 s … 24 h.
fn ready_timeout(text: &str) -> Result<u64, String> {
    let secs = parse_duration(text)?;
    if !(1..=MAX_READY_TIMEOUT_SECS).contains(&secs) {
        return Err(format!("`{text}` is out of range; use 1s to 24h"));
    }
    Ok(secs)
}

fn check_model_env(
    src: &SourceFile,
    span: &Range<usize>,
    m: &ModelSpec,
) -> Result<(), ManifestError> {
    for (k, v) in &m.env {
        if !is_valid_env_name(k) {
            return Err(invalid(src, span, k, format!("`{k}` is not an environment variable name (letters, digits and `_`, not starting with a digit)")));
        }
        if RESERVED_ENV.contains(&k.as_str()) || k.starts_with("BOTTLE_") {
            return Err(invalid(src, span, k, format!("`{k}` is set by the launcher (proxy, CA bundle and bottle variables) and cannot be overridden")));
        }
        if m.secrets.contains(k) {
            return Err(invalid(src, span, k, format!("`{k}` is the placeholder variable of the model's secret `{k}`; remove it from the model's env")));
        }
        if v.contains('\0') {
            return Err(invalid(
                src,
                span,
                k,
                "an environment value cannot contain a NUL byte",
            ));
        }
    }
    Ok(())
}

fn check_gpu(src: &SourceFile, span: &Range<usize>, m: &ModelSpec) -> Result<(), ManifestError> {
    match &m.gpu {
        Some(GpuSpec::All(s)) if s != "all" => Err(ManifestError::Invalid {
            loc: src.loc_within(Some(span), "gpu"),
            key: "gpu".into(),
            message: format!(
                "`{s}` is not a GPU selection; use \"all\" or a list of device ids like [0, 1]"
            ),
            suggestion: did_you_mean(s, ["all"]),
        }),
        Some(GpuSpec::Devices(d)) if d.is_empty() => Err(invalid(
            src,
            span,
            "gpu",
            "an empty list selects no GPU; remove `gpu` or use \"all\"",
        )),
        Some(GpuSpec::Devices(d)) => {
            for id in d {
                if let DeviceId::Id(s) = id {
                    let ok = !s.is_empty()
                        && s.len() <= 64
                        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                    if !ok {
                        return Err(invalid(src, span, "gpu", format!("`{s}` is not a device id (an index like 0 or a UUID like \"GPU-3f2a…\")")));
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_context(
    src: &SourceFile,
    span: &Range<usize>,
    m: &ModelSpec,
) -> Result<(), ManifestError> {
    let Some(c) = m.context else { return Ok(()) };
    if m.engine == ModelEngine::Openai {
        return Err(invalid(
            src,
            span,
            "context",
            "engine \"openai\" has no standard context flag; set the server's own flag in `args`",
        ));
    }
    if !(512..=16_777_216).contains(&c) {
        return Err(invalid(
            src,
            span,
            "context",
            format!("{c} is out of range; use 512 to 16777216 tokens (default {DEFAULT_CONTEXT})"),
        ));
    }
    if let Some((flag, _)) = arg_value(&m.args, context_flags(m.engine)) {
        return Err(invalid(
            src,
            span,
            "context",
            format!("both `context` and `{flag}` in args set the context window; keep one"),
        ));
    }
    if m.engine == ModelEngine::Ollama && m.env.contains_key("OLLAMA_CONTEXT_LENGTH") {
        return Err(invalid(
            src,
            span,
            "context",
            "both `context` and env OLLAMA_CONTEXT_LENGTH set the context window; keep one",
        ));
    }
    Ok(())
}

/// Resolves a validated spec into what the runtime starts: defaults filled in, the context
/// flag applied (unless the user's `args`/`env` already set it). `declared_in` names the file.
pub fn resolve_model(m: &ModelSpec, declared_in: &str) -> ModelPlan {
    let gpu = match &m.gpu {
        None => None,
        Some(GpuSpec::All(_)) => Some(Gpu::All),
        Some(GpuSpec::Devices(d)) => Some(Gpu::Devices(
            d.iter()
                .map(|x| match x {
                    DeviceId::Index(i) => i.to_string(),
                    DeviceId::Id(s) => s.clone(),
                })
                .collect(),
        )),
    };
    let port = m.port.unwrap_or(m.engine.default_port());
    let image = m
        .image
        .clone()
        .or_else(|| m.engine.default_image(gpu.is_some()).map(String::from))
        .unwrap_or_default();
    let user_context = arg_value(&m.args, context_flags(m.engine))
        .and_then(|(_, v)| v)
        .or_else(|| {
            (m.engine == ModelEngine::Ollama)
                .then(|| m.env.get("OLLAMA_CONTEXT_LENGTH").map(String::as_str))
                .flatten()
        })
        .and_then(|v| v.parse::<u32>().ok());
    let context = match m.engine {
        ModelEngine::Openai => None,
        _ => Some(user_context.unwrap_or_else(|| m.context.map_or(DEFAULT_CONTEXT, |c| c as u32))),
    };
    let set_by_user = arg_value(&m.args, context_flags(m.engine)).is_some();
    let ctx = context.unwrap_or(DEFAULT_CONTEXT).to_string();
    let p = port.to_string();
    let mut env = m.env.clone();
    let mut cmd: Vec<String> = match m.engine {
        // vllm/vllm-openai's entrypoint is `vllm serve`.
        ModelEngine::Vllm => {
            let mut c = vec![m.model.clone(), "--host".into(), "0.0.0.0".into()];
            c.extend(["--port".into(), p.clone()]);
            if !set_by_user {
                c.extend(["--max-model-len".into(), ctx.clone()]);
            }
            c
        }
        // ollama/ollama's entrypoint is `ollama`; the model is pulled once it is up.
        ModelEngine::Ollama => {
            env.insert("OLLAMA_HOST".into(), format!("0.0.0.0:{port}"));
            env.entry("OLLAMA_CONTEXT_LENGTH".into())
                .or_insert_with(|| ctx.clone());
            vec!["serve".into()]
        }
        // llama.cpp's server image's entrypoint is `llama-server`.
        ModelEngine::Llamacpp => {
            let local = m.model.starts_with('/') || m.model.ends_with(".gguf");
            let mut c = vec![
                if local { "--model" } else { "-hf" }.to_string(),
                m.model.clone(),
            ];
            c.extend([
                "--host".into(),
                "0.0.0.0".into(),
                "--port".into(),
                p.clone(),
            ]);
            if !set_by_user {
                c.extend(["--ctx-size".into(), ctx.clone()]);
            }
            c
        }
        ModelEngine::Openai => Vec::new(),
    };
    cmd.extend(m.args.iter().cloned());
    let spec_ready = m.ready.clone().unwrap_or_default();
    let path = spec_ready
        .path
        .unwrap_or_else(|| m.engine.default_ready_path().to_string());
    let timeout = spec_ready
        .timeout
        .unwrap_or_else(|| DEFAULT_READY_TIMEOUT.to_string());
    let timeout_secs = ready_timeout(&timeout).unwrap_or(15 * 60);
    let served = arg_value(&m.args, &["--served-model-name"])
        .and_then(|(_, v)| v)
        .unwrap_or(&m.model)
        .to_string();
    let (lists_model, meaning) = ready_meaning(m.engine, &path, served);
    ModelPlan {
        name: m.name.clone(),
        engine: m.engine,
        model: m.model.clone(),
        image,
        port,
        cmd,
        env,
        placeholders: m
            .secrets
            .iter()
            .map(|s| (s.clone(), placeholder_value(s)))
            .collect(),
        secrets: m.secrets.clone(),
        volumes: m
            .volumes
            .iter()
            .filter_map(|v| parse_volume(v).ok())
            .collect(),
        gpu,
        context,
        ready: ReadyCheck {
            path,
            timeout,
            timeout_secs,
            lists_model,
            meaning,
        },
        pull: (m.engine == ModelEngine::Ollama)
            .then(|| vec!["ollama".into(), "pull".into(), m.model.clone()]),
        egress: m.egress.clone(),
        declared_in: declared_in.to_string(),
    }
}

/// Which model a ready answer must list, and what readiness means, per engine and path.
fn ready_meaning(engine: ModelEngine, path: &str, served: String) -> (Option<String>, String) {
    let default = path == engine.default_ready_path();
    match engine {
        ModelEngine::Vllm if default => (
            Some(served.clone()),
            format!("GET {path} answers 200 listing `{served}`: vLLM opens its API only after the weights are loaded (its /health answers earlier)"),
        ),
        ModelEngine::Ollama if default => (
            Some(served.clone()),
            format!("GET {path} answers 200 listing `{served}` (after `ollama pull`): the server is up and the model is present; it loads on the first request"),
        ),
        ModelEngine::Llamacpp if default => (
            None,
            format!("GET {path} answers 200: llama-server answers 503 until the model is loaded"),
        ),
        _ => (None, format!("GET {path} answers 200")),
    }
}

/// What the agent is told about `m` (the bottle's first model), by agent template (`None`:
/// an image that is not one of bottle's templates, treated like `shell`):
/// - everyone: `OPENAI_BASE_URL` and `OPENAI_API_BASE` = `http://<name>:<port>/v1`,
///   `BOTTLE_MODEL` (the model id) and `BOTTLE_MODEL_URL` (`http://<name>:<port>`); Ollama
///   also `OLLAMA_HOST` = `http://<name>:<port>`;
/// - Claude Code: `ANTHROPIC_BASE_URL` = `http://<name>:<port>` (vLLM, llama.cpp and Ollama
///   serve the Messages API at `/v1/messages`; the base has no `/v1`), `ANTHROPIC_MODEL` and
///   its small/fast model = the model id, and a placeholder `ANTHROPIC_AUTH_TOKEN`;
/// - Codex: `CODEX_OSS_BASE_URL` (its `--oss` provider) = `http://<name>:<port>/v1`, and a
///   placeholder `OPENAI_API_KEY`; the agent image's init writes `model = $BOTTLE_MODEL` and a
///   `bottle-model` provider at `OPENAI_BASE_URL` speaking the Responses API (which vLLM and
///   Ollama serve) into its config (Codex's built-in provider ignores `OPENAI_BASE_URL`).
///
/// `taken` says whether the bottle already sets a variable (its `[env]`, the agent's `env`
/// or a secret placeholder): those win and are left out.
pub fn agent_wiring(
    template: Option<Template>,
    m: &ModelPlan,
    taken: impl Fn(&str) -> bool,
) -> BTreeMap<String, String> {
    let base = m.base_url();
    let v1 = format!("{base}/v1");
    let mut out: Vec<(&str, String)> = vec![
        ("OPENAI_BASE_URL", v1.clone()),
        ("OPENAI_API_BASE", v1.clone()),
        ("BOTTLE_MODEL", m.model.clone()),
        ("BOTTLE_MODEL_URL", base.clone()),
    ];
    if m.engine == ModelEngine::Ollama {
        out.push(("OLLAMA_HOST", base.clone()));
    }
    match template {
        Some(Template::Claude) => {
            out.push(("ANTHROPIC_BASE_URL", base.clone()));
            out.push(("ANTHROPIC_MODEL", m.model.clone()));
            out.push(("ANTHROPIC_SMALL_FAST_MODEL", m.model.clone()));
            out.push(("ANTHROPIC_DEFAULT_HAIKU_MODEL", m.model.clone()));
            out.push((
                "ANTHROPIC_AUTH_TOKEN",
                placeholder_value("ANTHROPIC_AUTH_TOKEN"),
            ));
        }
        Some(Template::Codex) => {
            out.push(("CODEX_OSS_BASE_URL", v1.clone()));
            out.push(("OPENAI_API_KEY", placeholder_value("OPENAI_API_KEY")));
        }
        Some(Template::Shell) | None => {}
    }
    out.into_iter()
        .filter(|(k, _)| !taken(k))
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> ModelSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("120").unwrap(), 120);
        assert!(parse_duration("15 minutes").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(ready_timeout("0s").is_err());
        assert!(ready_timeout("25h").is_err());
    }

    #[test]
    fn volumes_are_named_only() {
        let v = parse_volume("hf-cache:/root/.cache/huggingface").unwrap();
        assert_eq!(
            (v.name.as_str(), v.target.as_str(), v.read_only),
            ("hf-cache", "/root/.cache/huggingface", false)
        );
        assert!(parse_volume("gguf:/models:ro").unwrap().read_only);
        assert!(parse_volume("/home/me/models:/models")
            .unwrap_err()
            .contains("host paths"));
        assert!(parse_volume("./m:/models")
            .unwrap_err()
            .contains("host paths"));
        assert!(parse_volume("mm:models").unwrap_err().contains("absolute"));
        assert!(parse_volume("mm:/a/../etc").unwrap_err().contains(".."));
        assert!(parse_volume("mm:/models:rx").unwrap_err().contains("ro"));
        assert!(parse_volume("mm").is_err());
    }

    #[test]
    fn vllm_defaults_and_context_flag() {
        let m = resolve_model(
            &spec("name = \"coder\"\nengine = \"vllm\"\nmodel = \"Qwen/Q\"\ngpu = \"all\"\n"),
            "bottles/x.toml",
        );
        assert_eq!(m.image, "vllm/vllm-openai");
        assert_eq!(m.port, 8000);
        assert_eq!(m.gpu, Some(Gpu::All));
        assert_eq!(
            m.cmd,
            [
                "Qwen/Q",
                "--host",
                "0.0.0.0",
                "--port",
                "8000",
                "--max-model-len",
                "65536"
            ]
        );
        assert_eq!(m.ready.path, "/v1/models");
        assert_eq!(m.ready.lists_model.as_deref(), Some("Qwen/Q"));
        assert_eq!(m.ready.timeout_secs, 900);
        assert_eq!(m.pull, None);
        // Without a GPU, the CPU image; the user's own flag wins over `context`.
        let m = resolve_model(
            &spec("name = \"c\"\nengine = \"vllm\"\nmodel = \"Q\"\nargs = [\"--max-model-len=8192\", \"--served-model-name\", \"q\"]\n"),
            "f",
        );
        assert_eq!(m.image, "vllm/vllm-openai-cpu");
        assert_eq!(m.context, Some(8192));
        assert_eq!(
            m.cmd.iter().filter(|a| a.contains("max-model-len")).count(),
            1
        );
        assert_eq!(m.ready.lists_model.as_deref(), Some("q"));
    }

    #[test]
    fn ollama_llamacpp_and_openai_defaults() {
        let m = resolve_model(
            &spec("name = \"o\"\nengine = \"ollama\"\nmodel = \"qwen2.5-coder:7b\"\ncontext = 32768\nsecrets = [\"HF_TOKEN\"]\n"),
            "f",
        );
        assert_eq!((m.image.as_str(), m.port), ("ollama/ollama", 11434));
        assert_eq!(m.cmd, ["serve"]);
        assert_eq!(m.env["OLLAMA_CONTEXT_LENGTH"], "32768");
        assert_eq!(m.env["OLLAMA_HOST"], "0.0.0.0:11434");
        assert_eq!(m.ready.path, "/api/tags");
        assert_eq!(
            m.pull,
            Some(vec![
                "ollama".into(),
                "pull".into(),
                "qwen2.5-coder:7b".into()
            ])
        );
        assert_eq!(m.placeholders["HF_TOKEN"], "bottle-placeholder-HF_TOKEN");
        let m = resolve_model(
            &spec("name = \"l\"\nengine = \"llamacpp\"\nmodel = \"/models/q.gguf\"\nargs = [\"-c\", \"4096\"]\ngpu = [0, \"GPU-ab\"]\n"),
            "f",
        );
        assert_eq!(m.image, "ghcr.io/ggml-org/llama.cpp:server-cuda");
        assert_eq!(m.port, 8080);
        assert_eq!(&m.cmd[..2], ["--model", "/models/q.gguf"]);
        assert!(!m.cmd.contains(&"--ctx-size".to_string()));
        assert_eq!(m.context, Some(4096));
        assert_eq!(m.gpu, Some(Gpu::Devices(vec!["0".into(), "GPU-ab".into()])));
        assert_eq!(m.ready.path, "/health");
        let m = resolve_model(
            &spec("name = \"f\"\nengine = \"openai\"\nmodel = \"fake\"\nimage = \"bottle/test-upstream:x\"\nargs = [\"--model-server\"]\nready = { path = \"/ready\", timeout = \"90s\" }\n"),
            "f",
        );
        assert_eq!(m.cmd, ["--model-server"]);
        assert_eq!((m.port, m.context), (8000, None));
        assert_eq!(
            (m.ready.path.as_str(), m.ready.timeout_secs),
            ("/ready", 90)
        );
    }

    #[test]
    fn the_agent_is_wired_per_template() {
        let vllm = resolve_model(
            &spec("name = \"coder\"\nengine = \"vllm\"\nmodel = \"Q/C\"\n"),
            "f",
        );
        let ollama = resolve_model(
            &spec("name = \"small\"\nengine = \"ollama\"\nmodel = \"q:0.5b\"\n"),
            "f",
        );
        let none = |_: &str| false;
        let c = agent_wiring(Some(Template::Claude), &vllm, none);
        assert_eq!(c["ANTHROPIC_BASE_URL"], "http://coder:8000");
        assert_eq!(c["ANTHROPIC_MODEL"], "Q/C");
        assert_eq!(
            c["ANTHROPIC_AUTH_TOKEN"],
            "bottle-placeholder-ANTHROPIC_AUTH_TOKEN"
        );
        assert_eq!(c["OPENAI_BASE_URL"], "http://coder:8000/v1");
        assert!(!c.contains_key("OLLAMA_HOST"));
        let c = agent_wiring(Some(Template::Claude), &ollama, none);
        assert_eq!(c["ANTHROPIC_BASE_URL"], "http://small:11434");
        assert_eq!(c["OLLAMA_HOST"], "http://small:11434");
        let x = agent_wiring(Some(Template::Codex), &ollama, none);
        assert_eq!(x["CODEX_OSS_BASE_URL"], "http://small:11434/v1");
        assert_eq!(x["OPENAI_BASE_URL"], "http://small:11434/v1");
        assert_eq!(x["OPENAI_API_KEY"], "bottle-placeholder-OPENAI_API_KEY");
        assert!(!x.contains_key("ANTHROPIC_BASE_URL"));
        let s = agent_wiring(None, &vllm, none);
        assert_eq!(s["OPENAI_API_BASE"], "http://coder:8000/v1");
        assert_eq!(s["BOTTLE_MODEL"], "Q/C");
        assert!(!s.contains_key("ANTHROPIC_BASE_URL") && !s.contains_key("OPENAI_API_KEY"));
        // The bottle's own settings win.
        let c = agent_wiring(Some(Template::Claude), &vllm, |k| {
            k == "ANTHROPIC_AUTH_TOKEN" || k == "OPENAI_BASE_URL"
        });
        assert!(!c.contains_key("ANTHROPIC_AUTH_TOKEN") && !c.contains_key("OPENAI_BASE_URL"));
        assert!(c.contains_key("ANTHROPIC_BASE_URL"));
    }
}
