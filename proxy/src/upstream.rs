//! The upstream client: TLS to the vetted address (verified against webpki roots plus the
//! policy's extra roots, SNI = the decided name), ALPN h2/http1.1, and a keep-alive pool
//! keyed by (route, host, port, scheme, vetted address) so new client connections reuse
//! warm upstream connections instead of paying a TCP + TLS handshake.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::canon::Host;
use crate::connector::{fmt_duration, Connector};
use crate::policy::{Deny, DenyReason};
use crate::server::body::{Metered, ProxyBody};
use crate::tls::{UpstreamTls, ALPN_H2};

/// Idle upstream connections older than this are not reused.
const POOL_IDLE: Duration = Duration::from_secs(55);
/// Idle HTTP/1.1 connections kept per key.
const POOL_PER_KEY: usize = 512;

/// Identifies upstream connections that may be shared: never across routes, hosts or
/// vetted addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Route id the connection was opened for.
    pub route: Arc<str>,
    /// Decided host (the TLS server name).
    pub host: Host,
    /// Upstream port.
    pub port: u16,
    /// TLS (https) or plain http.
    pub tls: bool,
    /// First vetted address of the target.
    pub addr: SocketAddr,
}

enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Either a TLS or a plain upstream stream.
pub enum UpstreamIo {
    /// https
    Tls(Box<TlsStream<TcpStream>>),
    /// http
    Plain(TcpStream),
}

impl tokio::io::AsyncRead for UpstreamIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_read(cx, buf),
            UpstreamIo::Plain(t) => std::pin::Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for UpstreamIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_write(cx, buf),
            UpstreamIo::Plain(t) => std::pin::Pin::new(t).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_flush(cx),
            UpstreamIo::Plain(t) => std::pin::Pin::new(t).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_shutdown(cx),
            UpstreamIo::Plain(t) => std::pin::Pin::new(t).poll_shutdown(cx),
        }
    }
}

/// The pooled upstream client.
pub struct Upstream {
    tls: UpstreamTls,
    connector: Arc<Connector>,
    handshake_timeout: Duration,
    pool: Mutex<HashMap<PoolKey, Vec<Idle>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

/// Which HTTP version a request is sent with upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 (origin-form URI + `Host`).
    H1,
    /// HTTP/2 (absolute URI → `:authority`).
    H2,
}

/// A connection checked out for one request.
pub struct Checkout {
    sender: Sender,
    key: PoolKey,
}

impl Checkout {
    /// The protocol negotiated with the upstream.
    pub fn proto(&self) -> Proto {
        match self.sender {
            Sender::H1(_) => Proto::H1,
            Sender::H2(_) => Proto::H2,
        }
    }
}

fn upstream_err(host: &Host, e: impl std::fmt::Display) -> Deny {
    Deny::new(DenyReason::Upstream, format!("upstream {host}: {e}"))
}

impl Upstream {
    /// A client using `tls` configs and `connector` for dialing.
    pub fn new(tls: UpstreamTls, connector: Arc<Connector>, handshake_timeout: Duration) -> Self {
        Upstream {
            tls,
            connector,
            handshake_timeout,
            pool: Mutex::new(HashMap::new()),
        }
    }

    /// The connector (resolver, SSRF floor, loop guard).
    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    fn take_idle(&self, key: &PoolKey) -> Option<Sender> {
        let mut pool = self.pool.lock().ok()?;
        let list = pool.get_mut(key)?;
        let now = Instant::now();
        while let Some(idle) = list.pop() {
            if now.duration_since(idle.since) > POOL_IDLE {
                continue;
            }
            match idle.sender {
                Sender::H1(s) => {
                    if s.is_ready() && !s.is_closed() {
                        return Some(Sender::H1(s));
                    }
                }
                Sender::H2(s) => {
                    if !s.is_closed() && s.is_ready() {
                        let clone = s.clone();
                        list.push(Idle {
                            sender: Sender::H2(s),
                            since: now,
                        });
                        return Some(Sender::H2(clone));
                    }
                }
            }
        }
        None
    }

    fn put_idle(&self, key: PoolKey, sender: Sender) {
        if let Ok(mut pool) = self.pool.lock() {
            let list = pool.entry(key).or_default();
            if list.len() < POOL_PER_KEY {
                list.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    /// Opens a new (unpooled) transport to the target: dial a vetted address, then TLS with
    /// the given ALPN config when `key.tls`.
    pub async fn open_io(
        &self,
        key: &PoolKey,
        addrs: &[SocketAddr],
        h1_only: bool,
    ) -> Result<UpstreamIo, Deny> {
        let (tcp, _addr) = self.connector.dial(addrs).await?;
        if !key.tls {
            return Ok(UpstreamIo::Plain(tcp));
        }
        let cfg = if h1_only {
            self.tls.h1.clone()
        } else {
            self.tls.any.clone()
        };
        let name = ServerName::try_from(key.host.to_server_name())
            .map_err(|e| upstream_err(&key.host, e))?;
        let tls = tokio::time::timeout(
            self.handshake_timeout,
            TlsConnector::from(cfg).connect(name, tcp),
        )
        .await
        .map_err(|_| {
            upstream_err(
                &key.host,
                format!(
                    "TLS handshake timeout after {}",
                    fmt_duration(self.handshake_timeout)
                ),
            )
        })?
        .map_err(|e| upstream_err(&key.host, format!("TLS handshake failed: {e}")))?;
        Ok(UpstreamIo::Tls(Box::new(tls)))
    }

    async fn connect(&self, key: &PoolKey, addrs: &[SocketAddr]) -> Result<Sender, Deny> {
        let io = self.open_io(key, addrs, false).await?;
        let h2 =
            matches!(&io, UpstreamIo::Tls(t) if t.get_ref().1.alpn_protocol() == Some(ALPN_H2));
        let host = key.host.clone();
        if h2 {
            {
                let (s, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .initial_stream_window_size(1 << 20)
                    .initial_connection_window_size(4 << 20)
                    .handshake(TokioIo::new(io))
                    .await
                    .map_err(|e| upstream_err(&host, e))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                self.put_idle(key.clone(), Sender::H2(s.clone()));
                Ok(Sender::H2(s))
            }
        } else {
            {
                let (s, conn) = http1::Builder::new()
                    .handshake(TokioIo::new(io))
                    .await
                    .map_err(|e| upstream_err(&host, e))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Sender::H1(s))
            }
        }
    }

    /// Checks out a pooled connection for `key`, or opens a new one to `addrs`.
    pub async fn checkout(&self, key: PoolKey, addrs: &[SocketAddr]) -> Result<Checkout, Deny> {
        if let Some(sender) = self.take_idle(&key) {
            return Ok(Checkout { sender, key });
        }
        let sender = self.connect(&key, addrs).await?;
        Ok(Checkout { sender, key })
    }

    /// Sends `req` (whose URI/version the caller prepared with [`prepare_request`] for
    /// `checkout.proto()`) and returns the response with its body metered into `bytes_down`.
    /// `on_done` runs when the response body ends or is dropped. HTTP/1.1 connections
    /// return to the pool after a complete response. A pooled connection that turns out to
    /// be closed before the request was written is replaced by a fresh one, once.
    pub async fn send(
        self: &Arc<Self>,
        mut checkout: Checkout,
        addrs: &[SocketAddr],
        req: Request<ProxyBody>,
        bytes_down: Arc<AtomicU64>,
        on_done: Box<dyn FnOnce(bool) + Send>,
    ) -> Result<Response<Metered<Incoming>>, Deny> {
        let host = checkout.key.host.clone();
        let mut req = req;
        for attempt in 0..2 {
            let result = match &mut checkout.sender {
                Sender::H1(s) => s.try_send_request(req).await,
                Sender::H2(s) => s.try_send_request(req).await,
            };
            match result {
                Ok(resp) => {
                    let pool = self.clone();
                    let key = checkout.key.clone();
                    let sender = checkout.sender;
                    let done: Box<dyn FnOnce(bool) + Send> = Box::new(move |completed| {
                        on_done(completed);
                        if let Sender::H1(mut s) = sender {
                            if completed && s.is_ready() {
                                pool.put_idle(key, Sender::H1(s));
                            } else if completed {
                                tokio::spawn(async move {
                                    if s.ready().await.is_ok() {
                                        pool.put_idle(key, Sender::H1(s));
                                    }
                                });
                            }
                        }
                    });
                    let (parts, body) = resp.into_parts();
                    let done = if body.is_end_stream_hint() {
                        // Nothing to stream: finish now (hyper may never poll an empty body).
                        done(true);
                        None
                    } else {
                        Some(done)
                    };
                    return Ok(Response::from_parts(
                        parts,
                        Metered::new(body, bytes_down, done),
                    ));
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if attempt == 0 => {
                        req = r;
                        let fresh = self.connect(&checkout.key, addrs).await?;
                        checkout.sender = fresh;
                    }
                    _ => return Err(upstream_err(&host, e.into_error())),
                },
            }
        }
        Err(upstream_err(&host, "connection not ready"))
    }
}

trait EndHint {
    fn is_end_stream_hint(&self) -> bool;
}

impl EndHint for Incoming {
    fn is_end_stream_hint(&self) -> bool {
        hyper::body::Body::is_end_stream(self)
    }
}

/// Sets the request URI and version for the upstream protocol: origin-form + HTTP/1.1 with
/// `Host`, or absolute + HTTP/2 without `Host` (`:authority` carries it).
pub fn prepare_request(
    req: &mut Request<ProxyBody>,
    proto: Proto,
    tls: bool,
    authority: &str,
    path_and_query: &str,
) -> Result<(), Deny> {
    let bad = |e: http::Error| Deny::new(DenyReason::BadRequest, format!("request target: {e}"));
    match proto {
        Proto::H1 => {
            *req.version_mut() = Version::HTTP_11;
            *req.uri_mut() = http::Uri::builder()
                .path_and_query(path_and_query)
                .build()
                .map_err(bad)?;
            req.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_str(authority).map_err(|e| bad(e.into()))?,
            );
        }
        Proto::H2 => {
            *req.version_mut() = Version::HTTP_2;
            *req.uri_mut() = http::Uri::builder()
                .scheme(if tls { "https" } else { "http" })
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
                .map_err(bad)?;
            req.headers_mut().remove(http::header::HOST);
        }
    }
    Ok(())
}
