//! The one request path. Every request — a `CONNECT`, an absolute-form `http://` request,
//! or a request inside a bumped tunnel — goes through the same stages, in this order:
//!
//! 1. **decide** — the target's host name is scanned for secrets (DLP on the name, before
//!    any DNS lookup), then [`Policy::decide`](crate::policy::Policy::decide) picks the route
//!    (exact / wildcard, ports, IP literals, a wildcard route's label cap);
//! 2. **guard** — head size, loops, framing (`Content-Length` with `Transfer-Encoding` is
//!    caught below hyper, in [`super::framing`]), the tunnel's `Host` / `:authority` binding,
//!    `Upgrade` (WebSocket only), smart-HTTP git push, the route's path / method / header
//!    matchers ([`guard`]);
//! 3. **vet address** — DNS resolved once, every address SSRF-classified, the vetted
//!    address dialled (tunnels: at CONNECT);
//! 4. **inspect request** — the installed [`RequestInspector`](crate::RequestInspector)
//!    (DLP on URL, headers and body);
//! 5. **inject credentials** — placeholders stripped, the route's real token inserted
//!    ([`crate::credentials`]);
//! 6. **upstream** — the pooled HTTP/1.1 or HTTP/2 connection, or a WebSocket relay that
//!    parses and scans frames ([`crate::websocket`]);
//! 7. **inspect response** — headers and body checked for the bottle's own secrets on
//!    every route ([`super::reflect`]), plus full inbound DLP where the route asks.
//!
//! Each stage returns a [`Deny`]; [`Exchange::refuse`] is the one place it becomes a
//! response and an audit record.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::canon::{normalize_path, parse_absolute_target, parse_authority, Host, Scheme};
use crate::policy::{Deny, DenyReason, Route};
use crate::server::body::{boxed_hyper, empty, Metered, ProxyBody};
use crate::server::connect::{self, Tunnel};
use crate::server::exchange::{Exchange, HostShown};
use crate::server::framing::Verdict;
use crate::server::{guard, reflect, upgrade, Inner, RequestHead};
use crate::upstream::{prepare_request, PoolKey};

/// Where an allowed request goes (decided and vetted).
pub(crate) struct Dest<'a> {
    pub route: &'a Route,
    pub host: &'a Host,
    pub port: u16,
    pub tls: bool,
    pub addrs: &'a [SocketAddr],
}

/// `CONNECT host:port`: decide, guard, vet, then bump (or splice a passthrough route).
pub(crate) async fn connect(
    inner: Arc<Inner>,
    mut req: Request<Incoming>,
    framing: Verdict,
) -> Response<ProxyBody> {
    let mut ex = Exchange::new(inner.clone(), "CONNECT");
    if let Some(why) = framing {
        return ex.refuse(Deny::new(DenyReason::BadRequest, why));
    }
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned()) else {
        return ex.refuse(Deny::new(
            DenyReason::BadRequest,
            "CONNECT needs a host:port target",
        ));
    };
    let (host, port) = match parse_authority(&authority, 443) {
        Ok(x) => x,
        Err(e) => return ex.refuse(Deny::new(DenyReason::BadRequest, e.to_string())),
    };
    ex.target(host.clone(), port);
    if let Err(d) = guard::head_limit(&inner, &req) {
        return ex.refuse_with_status(d, 431);
    }
    // 1. decide
    let policy = inner.policy.clone();
    let route = match decide(&mut ex, &policy, &host, port) {
        Ok(r) => r,
        Err(d) => return ex.refuse(d),
    };
    // 2. guard
    if let Err(d) = guard::no_loop(&inner, req.headers()) {
        return ex.refuse(d);
    }
    let Ok(permit) = inner.tunnels.clone().try_acquire_owned() else {
        return ex.refuse(Deny::new(
            DenyReason::Limit,
            format!(
                "too many concurrent tunnels (settings.max_tunnels = {})",
                inner.policy.settings.max_tunnels
            ),
        ));
    };
    // 3. vet address
    let addrs = match inner.connector().vet(route, &host, port).await {
        Ok(a) => a,
        Err(d) => return ex.refuse(d),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    if route.passthrough {
        let upstream = match inner.connector().dial(&addrs).await {
            Ok((s, _)) => s,
            Err(d) => return ex.refuse(d),
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(upgraded) = on_upgrade.await {
                connect::passthrough(&ex, upgraded, upstream, &host).await;
            }
        });
    } else {
        inner.audit.record(ex.record(None, (0, 0)));
        let route_index = policy
            .routes
            .iter()
            .position(|r| std::ptr::eq(r, route))
            .unwrap_or(0);
        let tunnel = Tunnel {
            inner: inner.clone(),
            route_index,
            route_id: ex.route_id.clone().unwrap_or_else(|| Arc::from("")),
            host,
            port,
            addrs,
            sni_mismatch: false,
        };
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                connect::bump(tunnel, upgraded, permit).await;
            }
        });
    }
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// An absolute-form `http://` request on the proxy port.
pub(crate) async fn absolute(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    framing: Verdict,
) -> Response<ProxyBody> {
    let mut ex = Exchange::new(inner.clone(), req.method().as_str());
    if let Some(why) = framing {
        return ex.refuse(Deny::new(DenyReason::BadRequest, why));
    }
    if req.uri().authority().is_none() {
        return ex.refuse(Deny::new(
            DenyReason::BadRequest,
            "this is a proxy: send absolute-form http:// requests or CONNECT host:port",
        ));
    }
    let target = match parse_absolute_target(req.uri()) {
        Ok(t) => t,
        Err(e) => return ex.refuse(Deny::new(DenyReason::BadRequest, e.to_string())),
    };
    ex.target(target.host.clone(), target.port);
    ex.path = target.path_and_query.clone();
    if target.scheme != Scheme::Http {
        return ex.refuse(Deny::new(
            DenyReason::BadRequest,
            "https:// targets must be requested through CONNECT",
        ));
    }
    if let Err(d) = guard::head_limit(&inner, &req) {
        return ex.refuse_with_status(d, 431);
    }
    // 1. decide
    let policy = inner.policy.clone();
    let route = match decide(&mut ex, &policy, &target.host, target.port) {
        Ok(r) => r,
        Err(d) => return ex.refuse(d),
    };
    // 2. guard
    let ws = match guard_request(&inner, route, &req, &ex.path) {
        Ok(ws) => ws,
        Err(d) => return ex.refuse(d),
    };
    // 3. vet address
    let addrs = match inner
        .connector()
        .vet(route, &target.host, target.port)
        .await
    {
        Ok(a) => a,
        Err(d) => return ex.refuse(d),
    };
    let dest = Dest {
        route,
        host: &target.host,
        port: target.port,
        tls: false,
        addrs: &addrs,
    };
    exchange(ex, &dest, req, ws).await
}

/// One request inside a bumped tunnel (decided and vetted at CONNECT).
pub(crate) async fn tunneled(
    t: Arc<Tunnel>,
    req: Request<Incoming>,
    framing: Verdict,
) -> Response<ProxyBody> {
    let inner = &t.inner;
    let mut ex = Exchange::new(inner.clone(), req.method().as_str());
    ex.target(t.host.clone(), t.port);
    if let Some(why) = framing {
        ex.route_id = Some(t.route_id.clone());
        return ex.refuse(Deny::new(DenyReason::BadRequest, why));
    }
    ex.path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let Some(route) = inner.policy.routes.get(t.route_index) else {
        return ex.refuse(Deny::new(DenyReason::NoRoute, "route vanished"));
    };
    ex.route(route);
    if t.sni_mismatch {
        return ex.refuse(Deny::new(
            DenyReason::SniMismatch,
            format!("TLS SNI does not equal the CONNECT host {}", t.host),
        ));
    }
    // 2. guard (1. decide and 3. vet happened at CONNECT)
    if let Err(d) = guard::tunnel_binding(&req, &t.host, t.port) {
        return ex.refuse(d);
    }
    if let Err(d) = guard::head_limit(inner, &req) {
        return ex.refuse_with_status(d, 431);
    }
    let ws = match guard_request(inner, route, &req, &ex.path) {
        Ok(ws) => ws,
        Err(d) => return ex.refuse(d),
    };
    let dest = Dest {
        route,
        host: &t.host,
        port: t.port,
        tls: true,
        addrs: &t.addrs,
    };
    exchange(ex, &dest, req, ws).await
}

/// Stage 1: DLP on the host name (before any lookup), then the route decision. A name DLP
/// or the label cap refused is shown redacted from here on.
fn decide<'p>(
    ex: &mut Exchange,
    policy: &'p crate::policy::Policy,
    host: &Host,
    port: u16,
) -> Result<&'p Route, Deny> {
    if let (Host::Name(name), Some(insp)) = (host, &ex.inner.inspector) {
        if let Err(d) = insp.inspect_host(name) {
            ex.shown = HostShown::Redacted;
            return Err(d);
        }
    }
    match policy.decide(host, port) {
        Ok(route) => {
            ex.route(route);
            Ok(route)
        }
        Err(d) => {
            if d.reason == DenyReason::HostName {
                // The label cap refused the name: the route is known, the name is not shown.
                if let Some(r) = policy.routes.iter().find(|r| r.host.matches(host)) {
                    ex.route(r);
                }
                ex.shown = HostShown::Redacted;
            }
            Err(d)
        }
    }
}

/// Stage 2 for a request (after the tunnel binding): loop marker, framing, upgrade policy,
/// git push, the route's matchers. Returns the WebSocket handshake if this is one.
fn guard_request<B>(
    inner: &Inner,
    route: &Route,
    req: &Request<B>,
    path_and_query: &str,
) -> Result<Option<crate::websocket::handshake::ClientHandshake>, Deny> {
    guard::no_loop(inner, req.headers())?;
    guard::framing(req.headers())?;
    guard::git_push(route, path_and_query)?;
    let (path, _) = split_pq(path_and_query);
    route.check_request(req.method().as_str(), path, req.headers())?;
    guard::upgrade(route, req)
}

/// Stages 4–7 for an allowed, vetted request.
async fn exchange(
    mut ex: Exchange,
    dest: &Dest<'_>,
    mut req: Request<Incoming>,
    ws: Option<crate::websocket::handshake::ClientHandshake>,
) -> Response<ProxyBody> {
    let inner = ex.inner.clone();
    let (path, query) = split_pq(&ex.path);
    let canon = match normalize_path(path) {
        Ok(p) => p,
        Err(e) => {
            return ex.refuse(Deny::new(
                DenyReason::Path,
                format!("request path refused: {}", e.reason),
            ))
        }
    };
    let pq = match query {
        Some(q) => format!("{canon}?{q}"),
        None => canon,
    };
    ex.path = pq.clone();
    let client_upgrade = ws.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::EXPECT);
    parts.headers.remove(header::HOST);
    parts.headers.append(header::VIA, inner.via.clone());
    if parts.version == Version::HTTP_2 {
        join_cookie_crumbs(&mut parts.headers);
    }
    let bytes_up = Arc::new(AtomicU64::new(0));
    let mut body = boxed_hyper(Metered::new(body, bytes_up.clone(), None));
    // 4. inspect request
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
            Err(d) => return ex.refuse(d),
        };
    }
    // 5. inject credentials
    if let Err(d) = crate::credentials::inject(
        dest.route,
        dest.tls,
        &parts.method,
        &mut parts.headers,
        &inner.secrets,
    ) {
        return ex.refuse(d);
    }
    let key = PoolKey {
        route: ex.route_id.clone().unwrap_or_else(|| Arc::from("")),
        host: dest.host.clone(),
        port: dest.port,
        tls: dest.tls,
        addr: dest.addrs[0],
    };
    let auth = authority(dest.host, dest.port, dest.tls);
    // 6. upstream: a WebSocket relay …
    if let (Some(hs), Some(client_upgrade)) = (ws, client_upgrade) {
        let req = Request::from_parts(parts, body);
        return upgrade::websocket(&ex, dest, key, req, &auth, hs, client_upgrade).await;
    }
    // … or the pooled connection.
    let upstream = inner.upstream.clone();
    let checkout = match upstream.checkout(key, dest.addrs).await {
        Ok(c) => c,
        Err(d) => return ex.refuse(d),
    };
    let mut up_req = Request::from_parts(parts, body);
    if let Err(d) = prepare_request(&mut up_req, checkout.proto(), dest.tls, &auth, &pq) {
        return ex.refuse(d);
    }
    let mut rec = ex.record(None, (0, 0));
    if let Some((rule, location)) = redacted {
        // Forwarded with secrets replaced: say so (a URL is never redacted, so the path kept
        // in the record is one DLP passed).
        rec.reason = "dlp_redacted";
        rec.rule = Some(rule);
        rec.location = location;
    }
    let bytes_down = Arc::new(AtomicU64::new(0));
    let held = HeldRecord::default();
    let on_done = held.on_body_done(&ex, rec, bytes_up, bytes_down.clone());
    let resp = match upstream
        .send(checkout, dest.addrs, up_req, bytes_down, on_done)
        .await
    {
        Ok(r) => r,
        Err(d) => {
            held.decide(false, &inner.audit);
            return ex.refuse(d);
        }
    };
    // 7. inspect response
    inspect_response(&ex, dest.route, resp.map(boxed_hyper), &held).await
}

/// Stage 7 for every upstream response (a pooled exchange's, or the answer to a WebSocket
/// handshake the upstream declined): hop-by-hop headers dropped, `Via` added, then the
/// reflection checks and inbound DLP ([`reflect::response`]). Forwards the response, or
/// refuses it; `held` (the allow record) follows the verdict.
pub(crate) async fn inspect_response(
    ex: &Exchange,
    route: &Route,
    resp: Response<ProxyBody>,
    held: &HeldRecord,
) -> Response<ProxyBody> {
    let inner = &ex.inner;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    parts.headers.append(header::VIA, inner.via.clone());
    match reflect::response(ex, route, &parts, body, held).await {
        Ok(body) => {
            held.decide(true, &inner.audit);
            Response::from_parts(parts, body)
        }
        Err(d) => {
            held.decide(false, &inner.audit);
            ex.refuse(d)
        }
    }
}

/// The allow record of a response whose verdicts are still out: recorded once both the body
/// is done and the verdict is in, and only if the verdict was "forward".
#[derive(Clone, Default)]
pub(crate) struct HeldRecord(Arc<std::sync::Mutex<HeldState>>);

#[derive(Default)]
struct HeldState {
    record: Option<crate::audit::AuditRecord>,
    verdict: Option<bool>,
}

impl HeldRecord {
    /// The allow record's completion: run when the response body is done (see
    /// [`Metered`]), it fills in byte counts and duration and hands `rec` to [`Self::done`].
    /// The record waits for the response's verdicts (reflection, inbound DLP) and is
    /// dropped when a deny is recorded instead.
    pub(crate) fn on_body_done(
        &self,
        ex: &Exchange,
        rec: crate::audit::AuditRecord,
        bytes_up: Arc<AtomicU64>,
        bytes_down: Arc<AtomicU64>,
    ) -> Box<dyn FnOnce(bool) + Send> {
        let (held, audit, started) = (self.clone(), ex.inner.audit.clone(), ex.started);
        Box::new(move |_completed| {
            let mut rec = rec;
            rec.bytes_up = bytes_up.load(Ordering::Relaxed);
            rec.bytes_down = bytes_down.load(Ordering::Relaxed);
            rec.duration_ms = started.elapsed().as_millis() as u64;
            held.done(rec, &audit);
        })
    }

    /// The body finished: record now if the verdict allowed it, else hold the record.
    fn done(&self, rec: crate::audit::AuditRecord, audit: &crate::audit::AuditLog) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match st.verdict {
            Some(true) => audit.record(rec),
            Some(false) => {}
            None => st.record = Some(rec),
        }
    }

    /// The verdict is in: flush a held record if the response is forwarded. A later
    /// `decide(false)` (a secret found mid-body) drops nothing already written; the deny is
    /// recorded on its own.
    pub(crate) fn decide(&self, forward: bool, audit: &crate::audit::AuditLog) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if st.verdict.is_none() {
            st.verdict = Some(forward);
        }
        if let (Some(true), Some(rec)) = (st.verdict, st.record.take()) {
            audit.record(rec);
        }
    }
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

/// Removes hop-by-hop and proxy headers (and every header `Connection` names).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// HTTP/2 may split `Cookie` into crumbs; HTTP/1.1 needs one header joined with `; `
/// (RFC 9113 §8.2.3). Joining for HTTP/2 upstreams too is harmless.
fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let crumbs: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if crumbs.len() < 2 {
        return;
    }
    let joined = crumbs.join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_crumbs_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookie_crumbs(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }
}
