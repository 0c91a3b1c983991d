//! The smart-HTTP front end: routing, limits, and running `git upload-pack|receive-pack
//! --stateless-rpc` on the mirror.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine;
use bottle_protocol::events::{GitEvent, GitPush, GitRefUpdate, GitResult};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::GateConfig;
use crate::credential::scrub;
use crate::error::GateError;
use crate::hook::{HookConfig, HookReport, CONFIG_ENV, REPORT_ENV};
use crate::mirror::Mirror;
use crate::pktline;
use crate::process::git;

/// The response body type of the gate.
pub type GateBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// The two git services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    fn from_name(s: &str) -> Option<Service> {
        match s {
            "git-upload-pack" => Some(Service::UploadPack),
            "git-receive-pack" => Some(Service::ReceivePack),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }
    fn subcommand(self) -> &'static str {
        &self.name()[4..]
    }
}

/// The git gate: cheap to clone (shared state).
#[derive(Clone)]
pub struct GitGate {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: GateConfig,
    mirrors: HashMap<String, Arc<Mirror>>,
    /// The hook configuration JSON per remote.
    hook_env: HashMap<String, String>,
}

impl GitGate {
    /// Validates `cfg`, creates the state directory (0700), the hooks directory with the
    /// `pre-receive` hook, and one bare mirror per remote. Mirrors are filled on first use.
    pub async fn new(cfg: GateConfig) -> Result<GitGate, GateError> {
        cfg.validate()?;
        if !cfg.hook_program.is_absolute() || !cfg.hook_program.is_file() {
            return Err(GateError::Config(format!(
                "hook_program {} must be an absolute path to the bottle-git-hook binary",
                cfg.hook_program.display()
            )));
        }
        let mut known: Vec<(String, String)> = Vec::new();
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        for (n, v) in &cfg.known_secrets {
            known.push((n.clone(), b64(v)));
        }
        // Fail at start-up, not on the first push, if a known secret is unusable (known
        // secrets only: the hook builds the full scanner per push, in its own process).
        let mut probe = bottle_scanner::Scanner::builder().default_rules(false);
        for (n, v) in &cfg.known_secrets {
            probe = probe.known_secret(n.clone(), v);
        }
        if !cfg.known_secrets.is_empty() {
            probe
                .build()
                .map_err(|e| GateError::Config(format!("known secrets: {e}")))?;
        }
        std::fs::create_dir_all(&cfg.state_dir)
            .map_err(GateError::io(format!("create {}", cfg.state_dir.display())))?;
        set_private(&cfg.state_dir)?;
        let hooks = cfg.state_dir.join("hooks");
        std::fs::create_dir_all(&hooks)
            .map_err(GateError::io(format!("create {}", hooks.display())))?;
        let hook = hooks.join("pre-receive");
        let _ = std::fs::remove_file(&hook);
        std::os::unix::fs::symlink(&cfg.hook_program, &hook)
            .map_err(GateError::io(format!("install {}", hook.display())))?;
        let mut mirrors = HashMap::new();
        let mut hook_env = HashMap::new();
        for r in &cfg.remotes {
            mirrors.insert(
                r.name.clone(),
                Arc::new(Mirror::open(&cfg, r, &hooks).await?),
            );
            let mut k = known.clone();
            if let Some(c) = &r.credential {
                for (i, v) in c.secret_values().iter().enumerate() {
                    k.push((
                        format!("git-remote-{}-credential-{i}", r.name),
                        b64(v.as_bytes()),
                    ));
                }
            }
            let hc = HookConfig {
                remote: r.name.clone(),
                upstream: r.url.clone(),
                policy: r.policy.clone(),
                max_blob_bytes: cfg.limits.max_blob_bytes,
                push_timeout_secs: cfg.limits.service_timeout.as_secs().max(1),
                git_program: cfg.git_program.clone(),
                known_secrets: k,
                tickets_dir: Some(cfg.state_dir.join("tickets")),
            };
            hook_env.insert(
                r.name.clone(),
                serde_json::to_string(&hc).map_err(|e| GateError::Config(e.to_string()))?,
            );
        }
        Ok(GitGate {
            inner: Arc::new(Inner {
                cfg,
                mirrors,
                hook_env,
            }),
        })
    }

    /// The approval tickets of this gate (`<state_dir>/tickets`).
    pub fn tickets(&self) -> crate::tickets::TicketStore {
        crate::tickets::TicketStore::new(self.inner.cfg.state_dir.join("tickets"))
    }

    /// The mirror of remote `name`, if declared.
    pub fn mirror(&self, name: &str) -> Option<&Mirror> {
        self.inner.mirrors.get(name).map(|m| m.as_ref())
    }

    /// Serves HTTP/1.1 on `listener` until it fails.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            // Small pkt-line responses end with a separate chunk: without NODELAY, Nagle and
            // the client's delayed ACK add ~40 ms to every request.
            let _ = stream.set_nodelay(true);
            let gate = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let g = gate.clone();
                    async move { Ok::<_, Infallible>(g.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(30))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "git gate connection ended with an error");
                }
            });
        }
    }

    /// Handles one request. Errors in git requests are answered as `ERR` pkt-lines (with
    /// status 200, so git clients print them) when the service is known, plain text otherwise.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<GateBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let Some((remote, route)) = path.trim_start_matches('/').split_once('/') else {
            return text(
                StatusCode::NOT_FOUND,
                "not a git gate URL: use /<remote>/...\n",
            );
        };
        let remote = remote.strip_suffix(".git").unwrap_or(remote).to_string();
        let (service, advertise) = match (req.method(), route) {
            (&http::Method::GET, "info/refs") => {
                let svc = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("service="))
                    .and_then(Service::from_name);
                match svc {
                    Some(s) => (s, true),
                    None => {
                        return text(
                            StatusCode::FORBIDDEN,
                            "the git gate serves smart HTTP only (info/refs?service=git-upload-pack|git-receive-pack)\n",
                        )
                    }
                }
            }
            (&http::Method::POST, r) if Service::from_name(r).is_some() => {
                (Service::from_name(r).expect("checked"), false)
            }
            _ => return text(StatusCode::NOT_FOUND, "not a git gate route\n"),
        };
        let protocol = req
            .headers()
            .get("git-protocol")
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                v.len() <= 256
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"=:._-".contains(&b))
            })
            .map(str::to_string);
        let started = std::time::Instant::now();
        let result = if advertise {
            self.advertise(&remote, service, protocol.as_deref()).await
        } else {
            self.rpc(&remote, service, protocol.as_deref(), req).await
        };
        // A fetch is audited at its advertisement (the refresh from upstream); a push when
        // receive-pack ends (in `rpc`), or here if it could not start.
        let audited = (advertise && service == Service::UploadPack) || result.is_err();
        if audited {
            let duration_ms = started.elapsed().as_millis() as u64;
            let reason = result.as_ref().err().map(|e| e.to_string());
            let rec = match service {
                Service::UploadPack => GitEvent::Fetch {
                    remote: remote.to_string(),
                    result: if result.is_ok() {
                        GitResult::Ok
                    } else {
                        GitResult::Error
                    },
                    reason,
                    duration_ms,
                },
                // receive-pack could not start: no hook report.
                Service::ReceivePack => GitEvent::Push(GitPush {
                    remote: remote.to_string(),
                    result: GitResult::Error,
                    decision: "error".into(),
                    refs: Vec::new(),
                    objects: 0,
                    bytes: 0,
                    scan_ms: 0,
                    findings: Default::default(),
                    tickets: Vec::new(),
                    approved: Vec::new(),
                    reason,
                    duration_ms,
                }),
            };
            self.inner.cfg.audit.emit(&rec);
        }
        match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(remote = %remote, service = service.name(), error = %e, "git gate request failed");
                err_response(service, advertise, &e)
            }
        }
    }

    fn mirror_of(&self, remote: &str) -> Result<Arc<Mirror>, GateError> {
        self.inner
            .mirrors
            .get(remote)
            .cloned()
            .ok_or_else(|| GateError::UnknownRemote(remote.to_string()))
    }

    async fn advertise(
        &self,
        remote: &str,
        service: Service,
        protocol: Option<&str>,
    ) -> Result<Response<GateBody>, GateError> {
        let cfg = &self.inner.cfg;
        let mirror = self.mirror_of(remote)?;
        mirror.refresh(cfg).await?;
        let mut cmd = git(cfg, None, None);
        cmd.arg(service.subcommand())
            .args(["--stateless-rpc", "--advertise-refs"])
            .arg(mirror.dir());
        if let Some(p) = protocol {
            cmd.env("GIT_PROTOCOL", p);
        }
        let out = tokio::time::timeout(cfg.limits.service_timeout, cmd.output())
            .await
            .map_err(|_| GateError::Timeout {
                what: format!("{} --advertise-refs", service.subcommand()),
                limit: cfg.limits.service_timeout,
            })?
            .map_err(|e| GateError::Git(format!("cannot run git {}: {e}", service.subcommand())))?;
        if !out.status.success() {
            return Err(GateError::Git(format!(
                "git {} failed: {}",
                service.subcommand(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let mut body = Vec::new();
        if !protocol.is_some_and(|p| p.split(':').any(|kv| kv == "version=2")) {
            body.extend(pktline::service_header(service.name()));
        }
        body.extend(out.stdout);
        Ok(git_response(
            format!("application/x-{}-advertisement", service.name()),
            full(Bytes::from(body)),
        ))
    }

    async fn rpc<B>(
        &self,
        remote: &str,
        service: Service,
        protocol: Option<&str>,
        req: Request<B>,
    ) -> Result<Response<GateBody>, GateError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    {
        let cfg = &self.inner.cfg;
        let mirror = self.mirror_of(remote)?;
        let want_ct = format!("application/x-{}-request", service.name());
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if ct != Some(want_ct.as_str()) {
            return Err(GateError::BadRequest(format!(
                "Content-Type must be {want_ct}"
            )));
        }
        let encoding = req
            .headers()
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let limit_bytes = cfg.limits.max_request_bytes;
        let declared: Option<u64> = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        if declared.is_some_and(|n| n > limit_bytes) {
            return Err(GateError::TooLarge { limit: limit_bytes });
        }
        // Plain bodies (pushed packs) stream into git, counted against the limit (git enforces
        // it too: receive.maxInputSize); gzip ones (upload-pack negotiation) are small and
        // inflated in memory within the limit.
        let input = match encoding.as_deref().map(str::trim) {
            None | Some("") | Some("identity") => Input::Stream(Box::pin(req.into_body())),
            Some(e) => Input::Buffered(
                crate::request_body::read(req.into_body(), Some(e), limit_bytes).await?,
            ),
        };
        let cred = mirror.remote().credential.as_ref();
        let mut cmd = match service {
            // receive-pack's hook pushes upstream: it needs the credential (inherited env).
            Service::ReceivePack => git(cfg, cred, None),
            Service::UploadPack => git(cfg, None, None),
        };
        cmd.arg(service.subcommand())
            .arg("--stateless-rpc")
            .arg(mirror.dir())
            .stdin(std::process::Stdio::piped());
        if let Some(p) = protocol {
            cmd.env("GIT_PROTOCOL", p);
        }
        let report_path = (service == Service::ReceivePack).then(|| {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            cfg.state_dir.join(format!("push-report-{n}.json"))
        });
        if let Some(p) = &report_path {
            cmd.env(CONFIG_ENV, &self.inner.hook_env[remote]);
            cmd.env(REPORT_ENV, p);
        }
        let audit = cfg.audit.clone();
        let started = std::time::Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| GateError::Git(format!("cannot run git {}: {e}", service.subcommand())))?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(8);
        let limit = cfg.limits.service_timeout;
        let secrets = cred.map(|c| c.secret_values()).unwrap_or_default();
        let remote_name = remote.to_string();
        let tx2 = tx.clone();
        tokio::spawn(async move {
            let work = async move {
                let feed = async move {
                    match input {
                        Input::Buffered(b) => {
                            let _ = stdin.write_all(&b).await;
                        }
                        Input::Stream(mut body) => {
                            let mut total = 0u64;
                            while let Some(frame) = body.frame().await {
                                let Ok(frame) = frame else { break };
                                let Ok(data) = frame.into_data() else {
                                    continue;
                                };
                                total += data.len() as u64;
                                if total > limit_bytes {
                                    // Truncated: git fails on the short input (fail closed).
                                    tracing::warn!(
                                        limit = limit_bytes,
                                        "git gate request body over the limit; cut"
                                    );
                                    break;
                                }
                                if stdin.write_all(&data).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    drop(stdin);
                };
                let pump = async move {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        match stdout.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let chunk = Bytes::copy_from_slice(&buf[..n]);
                                if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                                    break; // client went away
                                }
                            }
                        }
                    }
                };
                let errs = async move {
                    let mut s = Vec::new();
                    let _ = (&mut stderr).take(64 << 10).read_to_end(&mut s).await;
                    s
                };
                let ((), (), err) = tokio::join!(feed, pump, errs);
                (child.wait().await, err)
            };
            let outcome = tokio::time::timeout(limit, work).await;
            if let Some(p) = &report_path {
                let report: Option<HookReport> = std::fs::read(p)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok());
                let _ = std::fs::remove_file(p);
                audit.emit(&push_record(
                    &remote_name,
                    report,
                    outcome.is_err(),
                    started.elapsed(),
                ));
            }
            match outcome {
                Ok((Ok(status), err)) if !status.success() => {
                    let text = scrub(String::from_utf8_lossy(&err).trim(), &secrets);
                    tracing::warn!(remote = %remote_name, service = service.name(), %status, stderr = %text, "git service failed");
                }
                Ok(_) => {}
                Err(_) => {
                    // Dropping `work` killed the child (kill_on_drop); end the body with an error.
                    tracing::warn!(remote = %remote_name, service = service.name(), ?limit, "git service timed out");
                    let _ = tx2
                        .send(Err(std::io::Error::other(format!(
                            "git {} did not finish within {limit:?}",
                            service.subcommand()
                        ))))
                        .await;
                }
            }
        });
        Ok(git_response(
            format!("application/x-{}-result", service.name()),
            ChannelBody { rx }.boxed(),
        ))
    }
}

/// The audit record of one push: the hook's report (refs, scan counts, rule ids, decision),
/// or `error` when the hook never reported (receive-pack failed before it, or timed out).
fn push_record(
    remote: &str,
    report: Option<HookReport>,
    timed_out: bool,
    took: std::time::Duration,
) -> GitEvent {
    let r = report.unwrap_or_else(|| HookReport {
        decision: if timed_out { "timeout" } else { "error" }.into(),
        ..Default::default()
    });
    let mut findings = std::collections::BTreeMap::<String, u64>::new();
    for f in &r.findings {
        *findings.entry(f.clone()).or_default() += 1;
    }
    GitEvent::Push(GitPush {
        remote: remote.to_string(),
        result: if r.decision == "accepted" {
            GitResult::Accepted
        } else {
            GitResult::Rejected
        },
        refs: r
            .refs
            .into_iter()
            .map(|(name, old, new)| GitRefUpdate { name, old, new })
            .collect(),
        decision: r.decision,
        objects: r.objects as u64,
        bytes: r.bytes,
        scan_ms: r.scan_ms,
        findings,
        tickets: r.tickets,
        approved: r.approved,
        reason: None,
        duration_ms: took.as_millis() as u64,
    })
}

/// A request body: streamed into git, or already decoded.
enum Input<B> {
    Stream(Pin<Box<B>>),
    Buffered(Bytes),
}

/// A response body fed from a channel.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx)
    }
}

fn full(b: Bytes) -> GateBody {
    http_body_util::Full::new(b)
        .map_err(|never| match never {})
        .boxed()
}

fn git_response(content_type: String, body: GateBody) -> Response<GateBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::CACHE_CONTROL,
            "no-cache, max-age=0, must-revalidate",
        )
        .body(body)
        .expect("static response parts")
}

fn text(status: StatusCode, msg: &str) -> Response<GateBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(Bytes::from(msg.to_string())))
        .expect("static response parts")
}

/// An error as git clients will show it: an advertisement or result holding an `ERR` line.
fn err_response(service: Service, advertise: bool, e: &GateError) -> Response<GateBody> {
    let msg = e.to_string();
    if matches!(e, GateError::TooLarge { .. }) && !advertise {
        return text(StatusCode::PAYLOAD_TOO_LARGE, &format!("{msg}\n"));
    }
    let mut body = Vec::new();
    let kind = if advertise {
        body.extend(pktline::service_header(service.name()));
        "advertisement"
    } else {
        "result"
    };
    body.extend(pktline::err_line(&msg));
    git_response(
        format!("application/x-{}-{kind}", service.name()),
        full(Bytes::from(body)),
    )
}

#[cfg(unix)]
fn set_private(dir: &std::path::Path) -> Result<(), GateError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(GateError::io(format!("chmod 0700 {}", dir.display())))
}
