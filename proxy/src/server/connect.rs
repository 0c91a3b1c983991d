//! CONNECT tunnels: decision before DNS, tunnel limit, resolve-once + SSRF vetting, then
//! either a TLS bump (leaf minted for the CONNECT host only, SNI checked against it,
//! HTTP/1.1 + HTTP/2 served with every request re-checked) or a passthrough splice (the
//! ClientHello SNI must still equal the CONNECT host).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::LazyConfigAcceptor;

use crate::canon::{canonical_host, Host};
use crate::connector::fmt_duration;
use crate::policy::{Deny, DenyReason};
use crate::server::exchange::Exchange;
use crate::server::framing::{Verdicts, Watch};
use crate::server::malformed::Canned;
use crate::server::splice::{splice, with_idle_timeout, Activity, Watched};
use crate::server::{request, HandlerFuture, Inner};

/// Largest ClientHello accepted on passthrough tunnels.
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Everything a bumped tunnel's requests are checked against.
pub(crate) struct Tunnel {
    pub inner: Arc<Inner>,
    pub route_index: usize,
    pub route_id: Arc<str>,
    pub host: Host,
    pub port: u16,
    pub addrs: Vec<SocketAddr>,
    pub sni_mismatch: bool,
}

/// A passthrough tunnel: the ClientHello's SNI must equal the CONNECT host, then both
/// sides are spliced with the idle and byte limits.
pub(crate) async fn passthrough(
    ex: &Exchange,
    upgraded: hyper::upgrade::Upgraded,
    mut upstream: TcpStream,
    host: &Host,
) {
    let mut client = TokioIo::new(upgraded);
    let settings = &ex.inner.policy.settings;
    let hello =
        tokio::time::timeout(settings.handshake_timeout, read_client_hello(&mut client)).await;
    let (buf, sni) = match hello {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            return ex.audit_deny(&Deny::new(
                DenyReason::SniMismatch,
                format!("passthrough tunnel needs a TLS ClientHello: {e}"),
            ))
        }
        Err(_) => {
            return ex.audit_deny(&Deny::new(
                DenyReason::Limit,
                format!(
                    "no TLS ClientHello within {} (settings.handshake_timeout_ms)",
                    fmt_duration(settings.handshake_timeout)
                ),
            ))
        }
    };
    if !sni_matches(sni.as_deref(), host) {
        return ex.audit_deny(&Deny::new(
            DenyReason::SniMismatch,
            format!(
                "TLS SNI {:?} does not equal the CONNECT host {host}",
                sni.unwrap_or_default()
            ),
        ));
    }
    if upstream.write_all(&buf).await.is_err() {
        return ex.audit_deny(&Deny::new(
            DenyReason::Upstream,
            format!("upstream {host}: write failed"),
        ));
    }
    let out = splice(
        client,
        upstream,
        settings.idle_timeout,
        settings.max_tunnel_bytes,
    )
    .await;
    let mut rec = ex.record(None, (buf.len() as u64 + out.up, out.down));
    if let Some(e) = out.error {
        tracing::debug!(%host, error = %e, "passthrough tunnel ended");
        if e.contains("max_tunnel_bytes") {
            rec.decision = crate::audit::Decision::Deny;
            rec.reason = DenyReason::Limit.code();
        }
    }
    ex.inner.audit.record(rec);
}

/// Does a ClientHello SNI equal the CONNECT host? IP-literal targets may come without SNI.
fn sni_matches(sni: Option<&str>, host: &Host) -> bool {
    match sni {
        Some(s) => canonical_host(s).map(|h| &h == host).unwrap_or(false),
        None => matches!(host, Host::Ip(_)),
    }
}

/// Reads a whole ClientHello (parsed by rustls), returning the raw bytes read and the SNI.
async fn read_client_hello<C>(client: &mut C) -> std::io::Result<(Vec<u8>, Option<String>)>
where
    C: tokio::io::AsyncRead + Unpin,
{
    let mut acceptor = rustls::server::Acceptor::default();
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "client closed before the ClientHello",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut rd = &chunk[..n];
        while !rd.is_empty() {
            acceptor.read_tls(&mut rd)?;
        }
        match acceptor.accept() {
            Ok(Some(acc)) => {
                let sni = acc.client_hello().server_name().map(str::to_owned);
                return Ok((buf, sni));
            }
            Ok(None) => {}
            Err((e, _alert)) => return Err(std::io::Error::other(format!("not TLS: {e}"))),
        }
        if buf.len() > MAX_CLIENT_HELLO {
            return Err(std::io::Error::other("ClientHello larger than 64 KiB"));
        }
    }
}

/// A bumped tunnel: TLS accepted with a leaf for the CONNECT host (SNI checked), then
/// HTTP/1.1 and HTTP/2 served, every request going through [`request::tunneled`].
pub(crate) async fn bump(
    mut tunnel: Tunnel,
    upgraded: hyper::upgrade::Upgraded,
    _permit: OwnedSemaphorePermit,
) {
    let client = TokioIo::new(upgraded);
    let inner = tunnel.inner.clone();
    let settings = &inner.policy.settings;
    let started = Instant::now();
    let act = Activity::new();
    let io = Watched::new(
        client,
        act.clone(),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        None,
    );
    let deny_tls = |tunnel: &Tunnel, d: Deny| {
        let mut ex = Exchange::new(inner.clone(), "CONNECT");
        ex.target(tunnel.host.clone(), tunnel.port);
        ex.route_id = Some(tunnel.route_id.clone());
        ex.started = started;
        ex.audit_deny(&d);
    };
    let hs = settings.handshake_timeout;
    let hs_err = || {
        Deny::new(
            DenyReason::Limit,
            format!(
                "client TLS handshake not done within {} (settings.handshake_timeout_ms)",
                fmt_duration(hs)
            ),
        )
    };
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(hs, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(host = %tunnel.host, error = %e, "client TLS failed");
            return;
        }
        Err(_) => return deny_tls(&tunnel, hs_err()),
    };
    let sni = start.client_hello().server_name().map(str::to_owned);
    let config = match sni.as_deref() {
        Some(s) if sni_matches(Some(s), &tunnel.host) => inner.bump_config.clone(),
        other => {
            if let Some(s) = other {
                tunnel.sni_mismatch = true;
                deny_tls(
                    &tunnel,
                    Deny::new(
                        DenyReason::SniMismatch,
                        format!(
                            "TLS SNI {s:?} does not equal the CONNECT host {}",
                            tunnel.host
                        ),
                    ),
                );
            }
            // No SNI (IP-literal target) or a mismatch: serve the CONNECT host's leaf; a
            // mismatching tunnel then answers every request with 421.
            let fixed = inner
                .ca
                .certified_key(&tunnel.host.to_server_name())
                .map_err(|e| e.to_string())
                .and_then(|ck| crate::tls::fixed_server_config(ck).map_err(|e| e.to_string()));
            match fixed {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(host = %tunnel.host, error = %e, "no certificate for tunnel");
                    return;
                }
            }
        }
    };
    let tls = match tokio::time::timeout(hs, start.into_stream(config)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(host = %tunnel.host, error = %e, "client TLS handshake failed");
            return;
        }
        Err(_) => return deny_tls(&tunnel, hs_err()),
    };
    let tunnel = Arc::new(tunnel);
    let verdicts = Verdicts::default();
    let svc_verdicts = verdicts.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let t = tunnel.clone();
        let framing = svc_verdicts.next();
        let fut: HandlerFuture =
            Box::pin(async move { Ok(request::tunneled(t, req, framing).await) });
        fut
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(settings.max_request_head.max(8192));
    builder
        .http2()
        .max_header_list_size(settings.max_request_head.min(u32::MAX as usize) as u32)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_concurrent_streams(256);
    let conn: std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<(), crate::server::body::BoxError>> + Send + '_,
        >,
    > = Box::pin(builder.serve_connection_with_upgrades(
        TokioIo::new(Watch::new(Canned::new(tls, inner.audit.clone()), verdicts)),
        svc,
    ));
    let _ = with_idle_timeout(conn, act, settings.idle_timeout).await;
}
