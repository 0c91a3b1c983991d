//! CONNECT tunnels: decision before DNS, tunnel limit, resolve-once + SSRF vetting, then
//! either a TLS bump (leaf minted for the CONNECT host only, SNI checked against it,
//! HTTP/1.1 + HTTP/2 served with every request re-checked) or a passthrough splice (the
//! ClientHello SNI must still equal the CONNECT host).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::LazyConfigAcceptor;

use crate::canon::{canonical_host, parse_authority, Host};
use crate::connector::fmt_duration;
use crate::deny::{deny_response, deny_response_with_status};
use crate::policy::{Deny, DenyReason};
use crate::server::body::{empty, ProxyBody};
use crate::server::forward::{
    forward, has_loop_marker, head_size, is_connect, record, refuse, refuse_unparsed, split_pq,
    Dest,
};
use crate::server::splice::{splice, with_idle_timeout, Activity, Watched};
use crate::server::{HandlerFuture, Inner};

/// Largest ClientHello accepted on passthrough tunnels.
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Everything a bumped tunnel's requests are checked against.
struct Tunnel {
    inner: Arc<Inner>,
    route_index: usize,
    route_id: Arc<str>,
    host: Host,
    port: u16,
    addrs: Vec<SocketAddr>,
    sni_mismatch: bool,
}

pub(crate) async fn handle_connect(
    inner: Arc<Inner>,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned()) else {
        return refuse_unparsed(
            &inner,
            "CONNECT",
            Deny::new(DenyReason::BadRequest, "CONNECT needs a host:port target"),
        );
    };
    let (host, port) = match parse_authority(&authority, 443) {
        Ok(x) => x,
        Err(e) => {
            return refuse_unparsed(
                &inner,
                "CONNECT",
                Deny::new(DenyReason::BadRequest, e.to_string()),
            )
        }
    };
    let limit = inner.policy.settings.max_request_head;
    if head_size(&req) > limit {
        let deny = Deny::new(
            DenyReason::TooLarge,
            format!("request head exceeds settings.max_request_head ({limit} bytes)"),
        );
        inner.audit.record(record(
            "CONNECT",
            &host,
            port,
            "",
            None,
            Some(&deny),
            (0, 0),
            started,
        ));
        return deny_response_with_status(&host.to_string(), &deny, 431);
    }
    let policy = inner.policy.clone();
    let route = match policy.decide(&host, port) {
        Ok(r) => r,
        Err(d) => return refuse(&inner, "CONNECT", &host, port, "", None, d, started),
    };
    let route_id: Arc<str> = Arc::from(route.id.as_str());
    if has_loop_marker(&inner, req.headers()) {
        let d = Deny::new(
            DenyReason::Loop,
            "request already passed through this proxy",
        );
        return refuse(
            &inner,
            "CONNECT",
            &host,
            port,
            "",
            Some(&route_id),
            d,
            started,
        );
    }
    let permit = match inner.tunnels.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            let d = Deny::new(
                DenyReason::Limit,
                format!(
                    "too many concurrent tunnels (settings.max_tunnels = {})",
                    inner.policy.settings.max_tunnels
                ),
            );
            return refuse(
                &inner,
                "CONNECT",
                &host,
                port,
                "",
                Some(&route_id),
                d,
                started,
            );
        }
    };
    let addrs = match inner.connector().vet(route, &host, port).await {
        Ok(a) => a,
        Err(d) => {
            return refuse(
                &inner,
                "CONNECT",
                &host,
                port,
                "",
                Some(&route_id),
                d,
                started,
            )
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    if route.passthrough {
        let upstream = match inner.connector().dial(&addrs).await {
            Ok((s, _)) => s,
            Err(d) => {
                return refuse(
                    &inner,
                    "CONNECT",
                    &host,
                    port,
                    "",
                    Some(&route_id),
                    d,
                    started,
                )
            }
        };
        let inner2 = inner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            passthrough(
                &inner2,
                TokioIo::new(upgraded),
                upstream,
                &host,
                port,
                &route_id,
                started,
            )
            .await;
        });
    } else {
        inner.audit.record(record(
            "CONNECT",
            &host,
            port,
            "",
            Some(&route_id),
            None,
            (0, 0),
            started,
        ));
        let route_index = policy
            .routes
            .iter()
            .position(|r| std::ptr::eq(r, route))
            .unwrap_or(0);
        let tunnel = Tunnel {
            inner: inner.clone(),
            route_index,
            route_id,
            host,
            port,
            addrs,
            sni_mismatch: false,
        };
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            bump(tunnel, TokioIo::new(upgraded), permit).await;
        });
    }
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

async fn passthrough<C>(
    inner: &Inner,
    mut client: C,
    mut upstream: TcpStream,
    host: &Host,
    port: u16,
    route_id: &str,
    started: Instant,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let settings = &inner.policy.settings;
    let deny = |d: Deny| {
        inner.audit.record(record(
            "CONNECT",
            host,
            port,
            "",
            Some(route_id),
            Some(&d),
            (0, 0),
            started,
        ));
    };
    let hello =
        tokio::time::timeout(settings.handshake_timeout, read_client_hello(&mut client)).await;
    let (buf, sni) = match hello {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            return deny(Deny::new(
                DenyReason::SniMismatch,
                format!("passthrough tunnel needs a TLS ClientHello: {e}"),
            ))
        }
        Err(_) => {
            return deny(Deny::new(
                DenyReason::Limit,
                format!(
                    "no TLS ClientHello within {} (settings.handshake_timeout_ms)",
                    fmt_duration(settings.handshake_timeout)
                ),
            ))
        }
    };
    if !sni_matches(sni.as_deref(), host) {
        return deny(Deny::new(
            DenyReason::SniMismatch,
            format!(
                "TLS SNI {:?} does not equal the CONNECT host {host}",
                sni.unwrap_or_default()
            ),
        ));
    }
    if upstream.write_all(&buf).await.is_err() {
        return deny(Deny::new(
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
    let mut rec = record(
        "CONNECT",
        host,
        port,
        "",
        Some(route_id),
        None,
        (buf.len() as u64 + out.up, out.down),
        started,
    );
    if let Some(e) = out.error {
        tracing::debug!(%host, error = %e, "passthrough tunnel ended");
        if e.contains("max_tunnel_bytes") {
            rec.decision = crate::audit::Decision::Deny;
            rec.reason = DenyReason::Limit.code();
        }
    }
    inner.audit.record(rec);
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

async fn bump<C>(mut tunnel: Tunnel, client: C, _permit: OwnedSemaphorePermit)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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
        inner.audit.record(record(
            "CONNECT",
            &tunnel.host,
            tunnel.port,
            "",
            Some(&tunnel.route_id),
            Some(&d),
            (0, 0),
            started,
        ));
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
    let svc = service_fn(move |req: Request<Incoming>| {
        let t = tunnel.clone();
        let fut: HandlerFuture = Box::pin(async move { Ok(handle_tunneled(t, req).await) });
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
    > = Box::pin(builder.serve_connection_with_upgrades(TokioIo::new(tls), svc));
    let _ = with_idle_timeout(conn, act, settings.idle_timeout).await;
}

/// One request inside a bumped tunnel.
async fn handle_tunneled(t: Arc<Tunnel>, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let inner = &t.inner;
    let method = req.method().as_str().to_owned();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let fail = |d: Deny| {
        refuse(
            inner,
            &method,
            &t.host,
            t.port,
            &pq,
            Some(&t.route_id),
            d,
            started,
        )
    };
    if t.sni_mismatch {
        return fail(Deny::new(
            DenyReason::SniMismatch,
            format!("TLS SNI does not equal the CONNECT host {}", t.host),
        ));
    }
    if is_connect(req.method()) {
        return fail(Deny::new(
            DenyReason::BadRequest,
            "CONNECT inside a tunnel is not supported",
        ));
    }
    // Absolute-form (HTTP/1.1) or :authority (HTTP/2) must name the CONNECT target.
    if let Some(auth) = req.uri().authority() {
        let scheme_ok = req
            .uri()
            .scheme_str()
            .is_none_or(|s| s.eq_ignore_ascii_case("https"));
        let same = parse_authority(auth.as_str(), 443)
            .map(|(h, p)| h == t.host && p == t.port)
            .unwrap_or(false);
        if !scheme_ok || !same {
            return fail(Deny::new(
                DenyReason::HostMismatch,
                format!(
                    "request authority does not equal the CONNECT target {}:{}",
                    t.host, t.port
                ),
            ));
        }
    }
    let hosts = req.headers().get_all(header::HOST);
    let mut n_hosts = 0;
    for h in hosts.iter() {
        n_hosts += 1;
        let same = h
            .to_str()
            .ok()
            .and_then(|s| parse_authority(s, 443).ok())
            .map(|(h, p)| h == t.host && p == t.port)
            .unwrap_or(false);
        if !same {
            return fail(Deny::new(
                DenyReason::HostMismatch,
                format!(
                    "Host header does not equal the CONNECT target {}:{}",
                    t.host, t.port
                ),
            ));
        }
    }
    if n_hosts == 0 && req.uri().authority().is_none() {
        return fail(Deny::new(
            DenyReason::BadRequest,
            "request has no Host header",
        ));
    }
    let limit = inner.policy.settings.max_request_head;
    if head_size(&req) > limit {
        let deny = Deny::new(
            DenyReason::TooLarge,
            format!("request head exceeds settings.max_request_head ({limit} bytes)"),
        );
        inner.audit.record(record(
            &method,
            &t.host,
            t.port,
            &pq,
            Some(&t.route_id),
            Some(&deny),
            (0, 0),
            started,
        ));
        return deny_response_with_status(&t.host.to_string(), &deny, 431);
    }
    if has_loop_marker(inner, req.headers()) {
        return fail(Deny::new(
            DenyReason::Loop,
            "request already passed through this proxy",
        ));
    }
    let Some(route) = inner.policy.routes.get(t.route_index) else {
        return deny_response(
            &t.host.to_string(),
            &Deny::new(DenyReason::NoRoute, "route vanished"),
        );
    };
    let (path, query) = split_pq(&pq);
    if let Err(d) = route.check_request(&method, path, req.headers()) {
        return fail(d);
    }
    let dest = Dest {
        route,
        route_id: t.route_id.clone(),
        host: &t.host,
        port: t.port,
        tls: true,
        addrs: &t.addrs,
    };
    forward(inner, &dest, req, path, query, started).await
}
