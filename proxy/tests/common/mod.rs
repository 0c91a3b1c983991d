//! Shared harness for the proxy integration tests: an in-process rustls upstream (its own
//! test CA) and a proxy on loopback with a static resolver, driven by real clients.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use bottle_proxy::ca::CertificateAuthority;
use bottle_proxy::connector::StaticResolver;
use bottle_proxy::policy::Policy;
use bottle_proxy::Proxy;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the test upstream received (request lines, raw bytes after an upgrade, WebSocket
/// messages), for tests that assert something never reached it. Shared by all tests of a
/// binary: assert on markers unique to the test.
static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn seen(what: String) {
    SEEN.lock().unwrap_or_else(|e| e.into_inner()).push(what);
}

/// Set by a test to let `/sse-split-auth` send the second half of its event (see there).
pub static SSE_SPLIT_RELEASE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Did the upstream receive a WebSocket message containing `needle`?
pub fn upstream_saw_ws(needle: &str) -> bool {
    SEEN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|s| s.starts_with("ws-") && s.contains(needle))
}

/// Did the upstream receive anything containing `needle`?
pub fn upstream_saw(needle: &str) -> bool {
    SEEN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|s| s.contains(needle))
}

/// Names the test upstream's certificate covers (all resolve to 127.0.0.1).
pub const NAMES: &[&str] = &[
    "allowed.test",
    "api.allowed.test",
    "deep.api.allowed.test",
    "evil.test",
    "pass.test",
    "ws.test",
    "self.test",
    "nows.test",
];

/// A running upstream + proxy.
pub struct Harness {
    pub rt: Runtime,
    pub upstream_port: u16,
    pub proxy_addr: SocketAddr,
    pub dir: PathBuf,
    pub ca_path: PathBuf,
    pub audit_path: PathBuf,
    pub resolver: Arc<StaticResolver>,
    /// TCP connections the upstream accepted so far.
    pub upstream_accepts: Arc<std::sync::atomic::AtomicUsize>,
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "bottle-proxy-test-{tag}-{}-{}",
        std::process::id(),
        rand_u64()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .elapsed()
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

/// A deterministic byte pattern (for checksummed bodies).
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2654435761) >> 13) as u8
}

/// FNV-1a over a stream of chunks.
pub struct Fnv(pub u64);
impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf29ce484222325)
    }
    pub fn update(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= *x as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

/// The credential-shaped value the upstream's `/leak` answers with (fake, built at run time).
pub fn leak_token() -> String {
    format!("{}{}", "gh", "p_Lk7Qw2Er4Ty6Ui8Op0As2Df4Gh6Jk8Lz1Xc9")
}

/// The upstream application.
async fn upstream_app(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !auth.is_empty() {
        seen(format!("auth {auth}"));
    }
    for c in req.headers().get_all("cookie") {
        seen(format!("cookie {}", c.to_str().unwrap_or("?")));
    }
    seen(format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
    ));
    if path == "/ws" || path == "/ws-auth" {
        // A real RFC 6455 echo server; `/ws-auth` first sends the Authorization it received
        // (an upstream reflecting the injected credential).
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let up = hyper::upgrade::on(&mut req);
        let reflect = path == "/ws-auth";
        tokio::spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            use tokio_tungstenite::tungstenite::protocol::{Message, Role};
            let Ok(u) = up.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(u),
                Role::Server,
                None,
            )
            .await;
            if reflect && ws.send(Message::text(auth.clone())).await.is_err() {
                return;
            }
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Text(t) => {
                        seen(format!("ws-text {}", t.as_str()));
                        if ws.send(Message::Text(t)).await.is_err() {
                            break;
                        }
                    }
                    Message::Binary(b) => {
                        seen(format!("ws-binary {}", String::from_utf8_lossy(&b)));
                        if ws.send(Message::Binary(b)).await.is_err() {
                            break;
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        });
        let accept = bottle_proxy::websocket::accept_key(&key);
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        r.headers_mut()
            .insert("sec-websocket-accept", accept.parse().unwrap());
        return Ok(r);
    }
    if path == "/any-upgrade" {
        // Answers 101 to any Upgrade token, then records raw bytes (what a raw splice would
        // let through).
        let token = req
            .headers()
            .get("upgrade")
            .cloned()
            .unwrap_or_else(|| "foo".parse().unwrap());
        let up = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(u) = up.await {
                let mut io = TokioIo::new(u);
                let mut buf = [0u8; 4096];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            seen(format!("raw {}", String::from_utf8_lossy(&buf[..n])));
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut().insert("upgrade", token);
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        return Ok(r);
    }
    if path == "/echo-headers" {
        // An upstream that reflects the credential it received: in the body, a header,
        // Set-Cookie and Location.
        let mut out = String::new();
        for (k, v) in req.headers() {
            out.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        let mut r = Response::new(full(out));
        if let Ok(v) = auth.parse() {
            r.headers_mut().insert("x-echo-auth", v);
        }
        if let Ok(v) = format!("s={}", auth.replace(' ', "_")).parse() {
            r.headers_mut().insert("set-cookie", v);
        }
        if let Ok(v) = format!("/next?t={}", auth.replace(' ', "+")).parse() {
            r.headers_mut().insert("location", v);
        }
        return Ok(r);
    }
    if path == "/ws-decline-auth" {
        // Declines a WebSocket upgrade with an ordinary 200 whose body echoes the
        // Authorization it received.
        return Ok(Response::new(full(format!(
            "no upgrade here; you sent: {auth}\n"
        ))));
    }
    if path == "/sse-split-auth" {
        // An event stream echoing the Authorization it received, split across two chunks: the
        // first ends inside the credential, the second (sent once a test sets
        // SSE_SPLIT_RELEASE, at most 10 s later) completes it.
        let cut = auth.len().min("Bearer ".len() + 20);
        let (first, second) = (auth[..cut].to_owned(), auth[cut..].to_owned());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            let ev = format!("data: hello\n\ndata: {first}");
            if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                return;
            }
            for _ in 0..1000 {
                if SSE_SPLIT_RELEASE.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let ev = format!("{second}\n\ndata: bye\n\n");
            let _ = tx.send(Ok(Frame::data(Bytes::from(ev)))).await;
        });
        let mut r = Response::new(StreamBody::new(tokio_stream_from(rx)).boxed_unsync());
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(r);
    }
    if path == "/echo-auth-only" {
        // Reflects the credential in the body only.
        return Ok(Response::new(full(format!("you sent: {auth}\n"))));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: u64 = n.parse().unwrap_or(0);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            let mut i = 0u64;
            while i < n {
                let len = (n - i).min(64 * 1024);
                let chunk: Vec<u8> = (i..i + len).map(pattern).collect();
                i += len;
                if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                    return;
                }
            }
        });
        let body = StreamBody::new(tokio_stream_from(rx)).boxed_unsync();
        let mut r = Response::new(body);
        r.headers_mut()
            .insert("content-length", n.to_string().parse().unwrap());
        return Ok(r);
    }
    if path == "/sse" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            for i in 0..3 {
                let ev = format!("data: event {i}\n\n");
                if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        });
        let mut r = Response::new(StreamBody::new(tokio_stream_from(rx)).boxed_unsync());
        r.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(r);
    }
    if path == "/echo-body" {
        let body = req.into_body().collect().await.map(|c| c.to_bytes());
        return Ok(Response::new(full(body.unwrap_or_default())));
    }
    if path == "/leak" {
        // A response carrying a credential-shaped value (for inbound DLP), built at run time.
        return Ok(Response::new(full(format!("token: {}\n", leak_token()))));
    }
    if path == "/upload" {
        let mut h = Fnv::new();
        let mut n = 0u64;
        let mut body = req.into_body();
        while let Some(f) = body.frame().await {
            let Ok(f) = f else { break };
            if let Some(d) = f.data_ref() {
                h.update(d);
                n += d.len() as u64;
            }
        }
        return Ok(Response::new(full(format!("len={n} fnv={:016x}", h.0))));
    }
    // Echo: method, path+query, Host/authority, selected request headers.
    let mut out = format!(
        "method={} pq={} host={} version={:?}\n",
        req.method(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
        host,
        req.version()
    );
    for (k, v) in req.headers() {
        out.push_str(&format!("h:{}={}\n", k, v.to_str().unwrap_or("?")));
    }
    Ok(Response::new(full(out)))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Generates the upstream's test CA and a server cert for [`NAMES`] + 127.0.0.1.
fn upstream_tls(h1_only: bool) -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "upstream test CA");
    let ca_cert = p.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(p, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    names.push("127.0.0.1".into());
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    cfg.alpn_protocols = if h1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    (ca_cert.pem(), Arc::new(cfg))
}

async fn run_upstream(
    listener: TcpListener,
    cfg: Arc<rustls::ServerConfig>,
    accepts: Arc<std::sync::atomic::AtomicUsize>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        accepts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(s).await else {
                return;
            };
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service_fn(upstream_app))
                .await;
        });
    }
}

/// Policy routes, rendered with `{port}` replaced by the upstream port.
pub const DEFAULT_ROUTES: &str = r#"
[[route]]
id = "allowed"
host = "allowed.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]

[[route]]
id = "api-wild"
host = "*.allowed.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]
[[route.matches]]
path_prefix = "/repos/"
methods = ["GET"]
[[route.matches]]
path = "/upload"
methods = ["POST"]
[[route.matches]]
path_prefix = "/bytes/"
methods = ["GET"]

[[route]]
id = "pass"
host = "pass.test"
ports = [{port}]
passthrough = true
allow_private = ["127.0.0.1/32"]

[[route]]
id = "ws"
host = "ws.test"
ports = [{port}]
allow_private = ["127.0.0.1/32"]

[[route]]
id = "evil-private"
host = "evil.test"
ports = [{port}]
"#;

impl Harness {
    /// Starts with [`DEFAULT_ROUTES`] and default settings.
    pub fn start() -> Harness {
        Self::start_with(DEFAULT_ROUTES, "")
    }

    /// Starts with these routes (`{port}` = upstream port) and extra `[settings]` lines.
    pub fn start_with(routes: &str, settings: &str) -> Harness {
        Self::start_opts(routes, settings, false)
    }

    /// Like [`Harness::start_with`]; `h1_only` makes the upstream offer only http/1.1.
    pub fn start_opts(routes: &str, settings: &str, h1_only: bool) -> Harness {
        Self::start_full(routes, settings, h1_only, None)
    }

    /// Like [`Harness::start_opts`], optionally with the sidecar's DLP + credential inspector
    /// built from these secrets (name → value), which are also handed to the proxy.
    pub fn start_full(
        routes: &str,
        settings: &str,
        h1_only: bool,
        dlp_secrets: Option<std::collections::HashMap<String, String>>,
    ) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tmpdir("h");
        let (up_ca_pem, up_cfg) = upstream_tls(h1_only);
        let upstream_accepts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let up_listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let upstream_port = up_listener.local_addr().unwrap().port();
        rt.spawn(run_upstream(up_listener, up_cfg, upstream_accepts.clone()));

        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let policy_text = format!(
            "[settings]\n{settings}\nextra_roots = [{}]\n{}",
            toml_string(&up_ca_pem),
            routes
                .replace("{port}", &upstream_port.to_string())
                .replace("{proxy_port}", &proxy_addr.port().to_string())
        );
        let policy = Policy::from_toml_str(&policy_text, "test-policy.toml")
            .unwrap_or_else(|e| panic!("{e}\n{policy_text}"));
        let ca = CertificateAuthority::generate("bottle test", Duration::from_secs(86400)).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, &ca.cert_pem).unwrap();
        let audit_path = dir.join("audit.jsonl");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let resolver = StaticResolver::new();
        for n in NAMES {
            resolver.push(n, &[lo]);
        }
        let resolver = Arc::new(resolver);
        let audit_file = rt.block_on(tokio::fs::File::create(&audit_path)).unwrap();
        let policy_settings = policy.settings.clone();
        let proxy = rt.block_on(async {
            let b = Proxy::builder()
                .policy(policy)
                .ca(ca.cert_pem.clone(), ca.key_pem.clone())
                .resolver(resolver.clone())
                .audit(audit_file);
            let b = match dlp_secrets {
                Some(secrets) => b
                    .inspector(
                        bottle_proxy::dlp::DlpInspector::for_bottle(
                            &policy_settings,
                            &secrets,
                            &ca.key_pem,
                        )
                        .unwrap(),
                    )
                    .secrets(secrets),
                None => b,
            };
            b.build().unwrap()
        });
        rt.spawn(async move { proxy.serve(listener).await });
        Harness {
            rt,
            upstream_port,
            proxy_addr,
            dir,
            ca_path,
            audit_path,
            resolver,
            upstream_accepts,
        }
    }

    /// `https://<host>:<upstream port><path>`
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.upstream_port)
    }

    /// Runs curl through the proxy with the bottle CA; returns (status line headers, body).
    pub fn curl(&self, args: &[&str]) -> Output {
        let proxy = format!("http://{}", self.proxy_addr);
        Command::new("curl")
            .args(["-sS", "--max-time", "30", "-x", &proxy, "--cacert"])
            .arg(&self.ca_path)
            .args(args)
            .output()
            .expect("curl is installed")
    }

    /// Audit lines written so far (waits briefly for the writer to flush `min` lines).
    pub fn audit_lines(&self, min: usize) -> Vec<serde_json::Value> {
        for _ in 0..100 {
            let text = std::fs::read_to_string(&self.audit_path).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if lines.len() >= min {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("fewer than {min} audit lines");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits curl `-D -` / `-i` output into (status, headers lower-case, body).
pub fn parse_http(out: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let text = String::from_utf8_lossy(out).to_string();
    // Skip the CONNECT response (curl -i includes it) and 100 Continue blocks.
    let mut rest = text.as_str();
    loop {
        let Some((head, body)) = rest.split_once("\r\n\r\n") else {
            return (0, vec![], text.clone());
        };
        let status: u16 = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let is_connect_ok = head
            .lines()
            .next()
            .unwrap_or("")
            .contains("Connection established")
            || (status == 200 && body.starts_with("HTTP/"));
        if status == 100 || is_connect_ok {
            rest = body;
            continue;
        }
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return (status, headers, body.to_string());
    }
}

/// The value of header `name` in parsed headers.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
