//! The proxy server: accepts client connections, serves explicit-proxy HTTP/1.1
//! (absolute-form `http://` requests and `CONNECT`), bumps or splices tunnels, and forwards
//! requests upstream.
//!
//! Every request takes the one path in [`request`] (decide → guard → vet address → inspect
//! request → inject credentials → upstream → inspect response); read that file top to
//! bottom to follow a request. [`exchange`] is its per-request context and the one place a
//! deny becomes a response and an audit record; [`connect`] holds the tunnel mechanics (TLS
//! bump, passthrough splice).
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::audit::AuditLog;
use crate::ca::{CaError, CertificateAuthority};
use crate::canon::Host;
use crate::connector::{Connector, HickoryResolver, Resolve};
use crate::policy::{Deny, Policy, Route};
use crate::tls::TlsError;
use crate::upstream::Upstream;

pub mod body;
mod connect;
mod exchange;
mod framing;
mod guard;
mod malformed;
mod reflect;
mod request;
pub mod splice;
mod upgrade;

pub use guard::is_git_push;
pub use upgrade::MAX_WS_MESSAGE;

pub use body::ProxyBody;

/// Secret values by name (delivered out of band; never logged). `Debug` shows names only.
#[derive(Clone, Default)]
pub struct Secrets(HashMap<String, String>);

impl Secrets {
    /// Wraps a name → value map.
    pub fn new(map: HashMap<String, String>) -> Self {
        Secrets(map)
    }

    /// The value of secret `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// All values (for DLP "known secret" scanning).
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }

    /// All (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What an inspector sees of a request before it is forwarded.
pub struct RequestHead<'a> {
    /// The route the request matched.
    pub route: &'a Route,
    /// The decided target host.
    pub host: &'a Host,
    /// The target port.
    pub port: u16,
    /// `true` for https (bumped tunnel), `false` for plain http.
    pub tls: bool,
    /// Request method.
    pub method: &'a Method,
    /// Canonical path plus the query as sent.
    pub path_and_query: &'a str,
    /// Request headers, already stripped of hop-by-hop and proxy headers. Mutable so a
    /// route's credential can be injected (and placeholders replaced).
    pub headers: &'a mut HeaderMap,
    /// The sidecar's secrets.
    pub secrets: &'a Secrets,
    /// Set by an inspector that forwarded the request with secrets redacted: the rule id
    /// and location for the audit record (reason `dlp_redacted`).
    pub redacted: &'a mut Option<(String, Option<String>)>,
}

/// Boxed future returned by [`RequestInspector::inspect`].
pub type InspectFuture<'a> = Pin<Box<dyn Future<Output = Result<ProxyBody, Deny>> + Send + 'a>>;

/// The inspection hook (DLP): run on every host name before DNS, on every allowed request
/// before credential injection and forwarding (head mutable, body streaming; returns the
/// body to forward or a [`Deny`]), on every client→upstream WebSocket message, and on
/// responses of `inbound_dlp` routes.
pub trait RequestInspector: Send + Sync + 'static {
    /// Checks a target host name (CONNECT, absolute-form) before any DNS lookup. The default
    /// allows it.
    fn inspect_host(&self, host: &str) -> Result<(), Deny> {
        let _ = host;
        Ok(())
    }

    /// Checks one complete client→upstream WebSocket message (reassembled). The default
    /// allows it.
    fn inspect_message(&self, route: &Route, payload: &[u8], text: bool) -> Result<(), Deny> {
        let _ = (route, payload, text);
        Ok(())
    }

    /// Inspects (and possibly rewrites) one request.
    fn inspect<'a>(&'a self, head: RequestHead<'a>, body: ProxyBody) -> InspectFuture<'a>;

    /// Inspects a response body on routes with `inbound_dlp = true`, before the agent sees
    /// any of it. The default forwards it unchanged.
    fn inspect_response<'a>(
        &'a self,
        route: &'a Route,
        headers: &'a HeaderMap,
        body: ProxyBody,
    ) -> InspectFuture<'a> {
        let _ = (route, headers);
        Box::pin(async move { Ok(body) })
    }
}

/// Errors building or running the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No policy was given.
    #[error("no policy given: call ProxyBuilder::policy")]
    NoPolicy,
    /// No CA was given.
    #[error("no CA given: call ProxyBuilder::ca with the CA certificate and key PEM")]
    NoCa,
    /// The CA is unusable.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// A TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The system resolver could not be configured.
    #[error("DNS resolver: {0}")]
    Resolver(std::io::Error),
    /// Listening failed.
    #[error("listening socket: {0}")]
    Io(#[from] std::io::Error),
}

/// The boxed future of a request handler (boxing erases the deep future types, which also
/// keeps the compiler's `Send` inference tractable).
pub(crate) type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

pub(crate) struct Inner {
    pub policy: Arc<Policy>,
    pub ca: Arc<CertificateAuthority>,
    pub bump_config: Arc<rustls::ServerConfig>,
    pub upstream: Arc<Upstream>,
    pub audit: AuditLog,
    pub tunnels: Arc<Semaphore>,
    pub via: HeaderValue,
    pub via_marker: String,
    pub inspector: Option<Arc<dyn RequestInspector>>,
    pub secrets: Secrets,
    /// The known-secret scanner for responses (`None` without secrets).
    pub reflection: Option<reflect::Reflection>,
}

impl Inner {
    pub fn connector(&self) -> &Connector {
        self.upstream.connector()
    }
}

/// Builds a [`Proxy`].
#[derive(Default)]
pub struct ProxyBuilder {
    policy: Option<Policy>,
    ca: Option<(String, String)>,
    resolver: Option<Arc<dyn Resolve>>,
    audit: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    audit_log: Option<AuditLog>,
    secrets: HashMap<String, String>,
    inspector: Option<Arc<dyn RequestInspector>>,
}

impl ProxyBuilder {
    /// The validated policy (required).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The bottle CA certificate and PKCS#8 key, PEM (required).
    pub fn ca(mut self, cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        self.ca = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// A resolver (default: hickory from the system configuration).
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Where audit lines go (default: discarded).
    pub fn audit<W: AsyncWrite + Send + Unpin + 'static>(mut self, writer: W) -> Self {
        self.audit = Some(Box::new(writer));
        self
    }

    /// An audit log shared with other proxies (e.g. [`AuditLog::for_client`] of the bottle
    /// proxy's); wins over [`ProxyBuilder::audit`].
    pub fn audit_log(mut self, log: AuditLog) -> Self {
        self.audit_log = Some(log);
        self
    }

    /// Secret values by name, for credential injection / DLP.
    pub fn secrets(mut self, secrets: HashMap<String, String>) -> Self {
        self.secrets = secrets;
        self
    }

    /// A request inspector (DLP / credential injection).
    pub fn inspector(mut self, inspector: Arc<dyn RequestInspector>) -> Self {
        self.inspector = Some(inspector);
        self
    }

    /// Builds the proxy: loads the CA, builds the TLS configurations once, starts the audit
    /// writer. Must be called within a Tokio runtime.
    pub fn build(self) -> Result<Proxy, ProxyError> {
        let policy = Arc::new(self.policy.ok_or(ProxyError::NoPolicy)?);
        let (cert, key) = self.ca.ok_or(ProxyError::NoCa)?;
        let ca = Arc::new(CertificateAuthority::from_pem(&cert, &key)?);
        let bump_config = crate::tls::bump_server_config(ca.clone())?;
        let s = &policy.settings;
        let upstream_tls =
            crate::tls::upstream_client_configs(s.extra_roots_pem.iter().map(String::as_str))?;
        let resolver: Arc<dyn Resolve> = match self.resolver {
            Some(r) => r,
            None => Arc::new(HickoryResolver::from_system_conf().map_err(ProxyError::Resolver)?),
        };
        let connector = Arc::new(Connector::new(resolver, s.connect_timeout));
        let upstream = Arc::new(Upstream::new(upstream_tls, connector, s.handshake_timeout));
        let audit = match (self.audit_log, self.audit) {
            (Some(log), _) => log,
            (None, Some(w)) => AuditLog::spawn(w),
            (None, None) => AuditLog::disabled(),
        };
        let nonce: [u8; 6] = rand::random();
        let via_marker = format!(
            "bottle-{}",
            nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let via = HeaderValue::from_str(&format!("1.1 {via_marker}"))
            .unwrap_or_else(|_| HeaderValue::from_static("1.1 bottle"));
        let tunnels = Arc::new(Semaphore::new(s.max_tunnels.max(1)));
        let secrets = Secrets::new(self.secrets);
        Ok(Proxy {
            inner: Arc::new(Inner {
                policy,
                ca,
                bump_config,
                upstream,
                audit,
                tunnels,
                via,
                via_marker,
                inspector: self.inspector,
                reflection: reflect::Reflection::new(&secrets),
                secrets,
            }),
        })
    }
}

/// A running-ready proxy; cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts building a proxy.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    /// The CA leaves are minted from.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.inner.ca
    }

    /// Returns once every audit record decided so far is written and flushed
    /// ([`crate::audit::AuditLog::sync`]).
    pub async fn sync_audit(&self) {
        self.inner.audit.sync().await;
    }

    /// The audit log this proxy writes to (for a caller that records its own decisions, e.g.
    /// a refused connection, in the same stream).
    pub fn audit_log(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// Registers `addr` (a listener serving this proxy through [`Proxy::serve_connection`])
    /// with the loop guard, so no route can point the proxy back at itself.
    pub fn add_listener_addr(&self, addr: SocketAddr) {
        self.inner.connector().add_own_addr(addr);
    }

    /// Serves one accepted client connection (until it closes or idles out) on a task of its
    /// own. For a caller that accepts and chooses the proxy itself (per-client route sets).
    pub fn serve_connection(&self, stream: tokio::net::TcpStream, peer: SocketAddr) {
        tokio::spawn(serve_client(self.inner.clone(), stream, peer));
    }

    /// Serves clients accepted on `listener` until the task is dropped. The listener's
    /// address is registered with the loop guard.
    pub async fn serve(&self, listener: TcpListener) -> Result<(), ProxyError> {
        let local = listener.local_addr()?;
        self.inner.connector().add_own_addr(local);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let inner = self.inner.clone();
            tokio::spawn(serve_client(inner, stream, peer));
        }
    }
}

async fn serve_client(inner: Arc<Inner>, stream: tokio::net::TcpStream, _peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let settings = &inner.policy.settings;
    let idle = settings.idle_timeout;
    let act = splice::Activity::new();
    let io = splice::Watched::new(
        stream,
        act.clone(),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        None,
    );
    let svc_inner = inner.clone();
    let verdicts = framing::Verdicts::default();
    let svc_verdicts = verdicts.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let inner = svc_inner.clone();
        let framing = svc_verdicts.next();
        let fut: HandlerFuture =
            Box::pin(async move { Ok(handle_proxy_request(inner, req, framing).await) });
        fut
    });
    let mut builder = http1::Builder::new();
    builder.max_buf_size(settings.max_request_head.max(8192));
    let conn: Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>> = Box::pin(
        builder
            .serve_connection(
                TokioIo::new(framing::Watch::new(
                    malformed::Canned::new(io, inner.audit.clone()),
                    verdicts,
                )),
                svc,
            )
            .with_upgrades(),
    );
    let _ = splice::with_idle_timeout(conn, act, idle).await;
}

async fn handle_proxy_request(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    framing: framing::Verdict,
) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        request::connect(inner, req, framing).await
    } else {
        request::absolute(inner, req, framing).await
    }
}
