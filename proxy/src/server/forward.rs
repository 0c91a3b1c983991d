//! Forwarding one allowed request upstream: rebuilt from the decided target, hop-by-hop
//! and proxy headers stripped, the inspector hook, the pooled upstream, streamed response,
//! WebSocket upgrades, and the audit record.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::audit::{timestamp, AuditRecord, Decision};
use crate::canon::{normalize_path, parse_absolute_target, redact_query, Host, Scheme};
use crate::deny::{deny_response, deny_response_with_status};
use crate::policy::{Deny, DenyReason, Route};
use crate::server::body::{boxed_hyper, empty, Metered, ProxyBody};
use crate::server::splice::splice;
use crate::server::{Inner, RequestHead};
use crate::upstream::{prepare_request, PoolKey, Proto};

/// Where an allowed request goes.
pub(crate) struct Dest<'a> {
    pub route: &'a Route,
    pub route_id: Arc<str>,
    pub host: &'a Host,
    pub port: u16,
    pub tls: bool,
    pub addrs: &'a [SocketAddr],
}

/// Headers never forwarded (in either direction), besides those named in `Connection`.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Is this an HTTP/1.1 upgrade (WebSocket) request?
fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Does the request carry this proxy's own `Via` marker (it came back to us)?
pub(crate) fn has_loop_marker(inner: &Inner, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(inner.via_marker.as_str()))
}

/// The request head size as received (request line + headers), approximately.
pub(crate) fn head_size(req: &Request<Incoming>) -> usize {
    let uri = req.uri();
    let mut n = req.method().as_str().len()
        + uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len())
        + 12;
    for (k, v) in req.headers() {
        n += k.as_str().len() + v.len() + 4;
    }
    n
}

/// Builds an audit record.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    method: &str,
    host: &Host,
    port: u16,
    path: &str,
    route: Option<&str>,
    deny: Option<&Deny>,
    bytes: (u64, u64),
    started: Instant,
) -> AuditRecord {
    AuditRecord {
        ts: timestamp(),
        method: method.to_owned(),
        host: host.to_string(),
        port,
        path: redact_query(path),
        route: route.map(str::to_owned),
        decision: if deny.is_some() {
            Decision::Deny
        } else {
            Decision::Allow
        },
        reason: deny.map(|d| d.reason.code()).unwrap_or("ok"),
        rule: deny.and_then(|d| d.rule.clone()),
        location: deny.and_then(|d| d.location.clone()),
        bytes_up: bytes.0,
        bytes_down: bytes.1,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// Denies and audits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn refuse(
    inner: &Inner,
    method: &str,
    host: &Host,
    port: u16,
    path: &str,
    route: Option<&str>,
    deny: Deny,
    started: Instant,
) -> Response<ProxyBody> {
    // A DLP block may have found the secret in the path itself: never log it.
    let path = if deny.reason == DenyReason::Dlp {
        "[redacted: dlp]"
    } else {
        path
    };
    inner.audit.record(record(
        method,
        host,
        port,
        path,
        route,
        Some(&deny),
        (0, 0),
        started,
    ));
    deny_response(&host.to_string(), &deny)
}

/// A deny for something that never got a canonical host (bad target).
pub(crate) fn refuse_unparsed(inner: &Inner, method: &str, deny: Deny) -> Response<ProxyBody> {
    inner.audit.record(AuditRecord {
        ts: timestamp(),
        method: sanitize_method(method),
        host: String::new(),
        port: 0,
        path: String::new(),
        route: None,
        decision: Decision::Deny,
        reason: deny.reason.code(),
        rule: None,
        location: None,
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0,
    });
    deny_response("(request target)", &deny)
}

fn sanitize_method(m: &str) -> String {
    m.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(16)
        .collect()
}

/// Absolute-form `http://` requests on the proxy port.
pub(crate) async fn handle_absolute(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    if req.uri().authority().is_none() {
        return refuse_unparsed(
            &inner,
            &method,
            Deny::new(
                DenyReason::BadRequest,
                "this is a proxy: send absolute-form http:// requests or CONNECT host:port",
            ),
        );
    }
    let target = match parse_absolute_target(req.uri()) {
        Ok(t) => t,
        Err(e) => {
            return refuse_unparsed(
                &inner,
                &method,
                Deny::new(DenyReason::BadRequest, e.to_string()),
            )
        }
    };
    let (host, port) = (target.host.clone(), target.port);
    let pq = target.path_and_query.clone();
    if target.scheme != Scheme::Http {
        return refuse(
            &inner,
            &method,
            &host,
            port,
            &pq,
            None,
            Deny::new(
                DenyReason::BadRequest,
                "https:// targets must be requested through CONNECT",
            ),
            started,
        );
    }
    let limit = inner.policy.settings.max_request_head;
    if head_size(&req) > limit {
        let deny = Deny::new(
            DenyReason::TooLarge,
            format!("request head exceeds settings.max_request_head ({limit} bytes)"),
        );
        inner.audit.record(record(
            &method,
            &host,
            port,
            &pq,
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
        Err(d) => return refuse(&inner, &method, &host, port, &pq, None, d, started),
    };
    if has_loop_marker(&inner, req.headers()) {
        let d = Deny::new(
            DenyReason::Loop,
            "request already passed through this proxy",
        );
        return refuse(
            &inner,
            &method,
            &host,
            port,
            &pq,
            Some(&route.id),
            d,
            started,
        );
    }
    let (path, query) = split_pq(&pq);
    if let Err(d) = route.check_request(&method, path, req.headers()) {
        return refuse(
            &inner,
            &method,
            &host,
            port,
            &pq,
            Some(&route.id),
            d,
            started,
        );
    }
    let addrs = match inner.connector().vet(route, &host, port).await {
        Ok(a) => a,
        Err(d) => {
            return refuse(
                &inner,
                &method,
                &host,
                port,
                &pq,
                Some(&route.id),
                d,
                started,
            )
        }
    };
    let dest = Dest {
        route,
        route_id: Arc::from(route.id.as_str()),
        host: &host,
        port,
        tls: false,
        addrs: &addrs,
    };
    forward(&inner, &dest, req, path, query, started).await
}

/// Splits `path?query` → (path, Some(query)).
pub(crate) fn split_pq(pq: &str) -> (&str, Option<&str>) {
    match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    }
}

/// The authority sent upstream: `host` or `host:port` when not the scheme default.
fn authority(host: &Host, port: u16, tls: bool) -> String {
    let default = if tls { 443 } else { 80 };
    if port == default {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

/// Forwards an allowed request to `dest` (already checked against the route).
pub(crate) async fn forward(
    inner: &Arc<Inner>,
    dest: &Dest<'_>,
    mut req: Request<Incoming>,
    path: &str,
    query: Option<&str>,
    started: Instant,
) -> Response<ProxyBody> {
    let method = req.method().as_str().to_owned();
    let canon_path = match normalize_path(path) {
        Ok(p) => p,
        Err(e) => {
            let d = Deny::new(
                DenyReason::Path,
                format!("request path refused: {}", e.reason),
            );
            return refuse(
                inner,
                &method,
                dest.host,
                dest.port,
                path,
                Some(&dest.route_id),
                d,
                started,
            );
        }
    };
    let pq = match query {
        Some(q) => format!("{canon_path}?{q}"),
        None => canon_path,
    };
    let fail = |d: Deny| {
        refuse(
            inner,
            &method,
            dest.host,
            dest.port,
            &pq,
            Some(&dest.route_id),
            d,
            started,
        )
    };
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let upgrade_value = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::EXPECT);
    parts.headers.remove(header::HOST);
    parts.headers.append(header::VIA, inner.via.clone());
    let bytes_up = Arc::new(AtomicU64::new(0));
    let mut body = boxed_hyper(Metered::new(body, bytes_up.clone(), None));
    let mut redacted = None;
    if let Some(insp) = &inner.inspector {
        let head = RequestHead {
            route: dest.route,
            host: dest.host,
            port: dest.port,
            tls: dest.tls,
            method: &parts.method,
            path_and_query: &pq,
            headers: &mut parts.headers,
            secrets: &inner.secrets,
            redacted: &mut redacted,
        };
        body = match insp.inspect(head, body).await {
            Ok(b) => b,
            Err(d) => return fail(d),
        };
    }
    let auth = authority(dest.host, dest.port, dest.tls);
    let key = PoolKey {
        route: dest.route_id.clone(),
        host: dest.host.clone(),
        port: dest.port,
        tls: dest.tls,
        addr: dest.addrs[0],
    };
    if let (Some(client_upgrade), Some(upgrade_value)) = (client_upgrade, upgrade_value) {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, upgrade_value);
        let req = Request::from_parts(parts, body);
        return forward_upgrade(inner, dest, key, req, &auth, &pq, client_upgrade, started).await;
    }
    let upstream = inner.upstream.clone();
    let checkout = match upstream.checkout(key, dest.addrs).await {
        Ok(c) => c,
        Err(d) => return fail(d),
    };
    let mut up_req = Request::from_parts(parts, body);
    if let Err(d) = prepare_request(&mut up_req, checkout.proto(), dest.tls, &auth, &pq) {
        return fail(d);
    }
    let bytes_down = Arc::new(AtomicU64::new(0));
    let audit = inner.audit.clone();
    let mut rec = record(
        &method,
        dest.host,
        dest.port,
        &pq,
        Some(&dest.route_id),
        None,
        (0, 0),
        started,
    );
    if let Some((rule, location)) = redacted {
        // Forwarded with secrets replaced: say so (a URL is never redacted, so the path
        // kept in the record is one DLP passed).
        rec.reason = "dlp_redacted";
        rec.rule = Some(rule);
        rec.location = location;
    }
    let (up_c, down_c) = (bytes_up.clone(), bytes_down.clone());
    // On `inbound_dlp` routes the response may still be refused after its body was read:
    // the allow record waits for that verdict (and is dropped when the deny is recorded).
    let held = dest.route.inbound_dlp.then(HeldRecord::default);
    let held_c = held.clone();
    let on_done: Box<dyn FnOnce(bool) + Send> = Box::new(move |_completed| {
        let mut rec = rec;
        rec.bytes_up = up_c.load(Ordering::Relaxed);
        rec.bytes_down = down_c.load(Ordering::Relaxed);
        rec.duration_ms = started.elapsed().as_millis() as u64;
        match held_c {
            Some(h) => h.done(rec, &audit),
            None => audit.record(rec),
        }
    });
    match upstream
        .send(checkout, dest.addrs, up_req, bytes_down, on_done)
        .await
    {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.version = Version::HTTP_11;
            let mut body = boxed_hyper(body);
            if let (true, Some(insp)) = (dest.route.inbound_dlp, &inner.inspector) {
                let verdict = insp
                    .inspect_response(dest.route, &parts.headers, body)
                    .await;
                if let Some(h) = &held {
                    h.decide(verdict.is_ok(), &inner.audit);
                }
                body = match verdict {
                    Ok(b) => b,
                    Err(d) => return fail(d),
                };
            }
            Response::from_parts(parts, body)
        }
        Err(d) => fail(d),
    }
}

/// The allow record of a response that inbound DLP has yet to judge: recorded once both the
/// body is done and the verdict is in, and only if the verdict was "forward".
#[derive(Clone, Default)]
struct HeldRecord(Arc<std::sync::Mutex<HeldState>>);

#[derive(Default)]
struct HeldState {
    record: Option<AuditRecord>,
    verdict: Option<bool>,
}

impl HeldRecord {
    /// The body finished: record now if the verdict allowed it, else hold the record.
    fn done(&self, rec: AuditRecord, audit: &crate::audit::AuditLog) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match st.verdict {
            Some(true) => audit.record(rec),
            Some(false) => {}
            None => st.record = Some(rec),
        }
    }

    /// The verdict is in: flush a held record if the response is forwarded.
    fn decide(&self, forward: bool, audit: &crate::audit::AuditLog) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        st.verdict = Some(forward);
        if let (true, Some(rec)) = (forward, st.record.take()) {
            audit.record(rec);
        }
    }
}

/// WebSocket (and other HTTP/1.1 upgrades): a fresh HTTP/1.1-only upstream connection,
/// the handshake forwarded, then both upgraded sides spliced with idle/byte limits.
#[allow(clippy::too_many_arguments)]
async fn forward_upgrade(
    inner: &Arc<Inner>,
    dest: &Dest<'_>,
    key: PoolKey,
    mut req: Request<ProxyBody>,
    auth: &str,
    pq: &str,
    client_upgrade: hyper::upgrade::OnUpgrade,
    started: Instant,
) -> Response<ProxyBody> {
    let method = req.method().as_str().to_owned();
    let fail = |d: Deny| {
        refuse(
            inner,
            &method,
            dest.host,
            dest.port,
            pq,
            Some(&dest.route_id),
            d,
            started,
        )
    };
    let io = match inner.upstream.open_io(&key, dest.addrs, true).await {
        Ok(io) => io,
        Err(d) => return fail(d),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => {
            return fail(Deny::new(
                DenyReason::Upstream,
                format!("upstream {}: {e}", dest.host),
            ))
        }
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    if let Err(d) = prepare_request(&mut req, Proto::H1, dest.tls, auth, pq) {
        return fail(d);
    }
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            return fail(Deny::new(
                DenyReason::Upstream,
                format!("upstream {}: {e}", dest.host),
            ))
        }
    };
    let rec = record(
        &method,
        dest.host,
        dest.port,
        pq,
        Some(&dest.route_id),
        None,
        (0, 0),
        started,
    );
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        inner.audit.record(rec);
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Response::from_parts(parts, boxed_hyper(body));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let settings = &inner.policy.settings;
    let (idle, max) = (settings.idle_timeout, settings.max_tunnel_bytes);
    let audit = inner.audit.clone();
    tokio::spawn(async move {
        let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) else {
            audit.record(rec);
            return;
        };
        let out = splice(TokioIo::new(c), TokioIo::new(u), idle, max).await;
        let mut rec = rec;
        rec.bytes_up = out.up;
        rec.bytes_down = out.down;
        rec.duration_ms = started.elapsed().as_millis() as u64;
        audit.record(rec);
    });
    let (mut parts, _body) = resp.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(u) = upgrade {
        parts.headers.insert(header::UPGRADE, u);
    }
    Response::from_parts(parts, empty())
}

/// Refuses a request method that makes no sense inside a tunnel.
pub(crate) fn is_connect(m: &Method) -> bool {
    m == Method::CONNECT
}
