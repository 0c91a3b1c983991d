//! Stage 6 for a WebSocket handshake: a fresh HTTP/1.1 upstream connection, the handshake
//! forwarded (extensions stripped, so frames arrive uncompressed), the upstream's answer
//! validated (RFC 6455 accept key, no unoffered extension or subprotocol), then both
//! upgraded sides handed to the frame relay ([`crate::websocket::relay`]), which scans every
//! client→upstream message with DLP and every upstream→client message for the bottle's own
//! secrets. Nothing is ever spliced as raw bytes. An upstream that declines the upgrade
//! (any status but 101) has given an ordinary response: it goes through the same stage 7 as
//! every other ([`super::request::inspect_response`]), body included.
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::policy::{Deny, DenyReason, Route};
use crate::server::body::{boxed_hyper, empty, Metered, ProxyBody};
use crate::server::exchange::Exchange;
use crate::server::request::{inspect_response, strip_hop_by_hop, Dest, HeldRecord};
use crate::server::RequestInspector;
use crate::upstream::{prepare_request, PoolKey, Proto};
use crate::websocket::handshake::{self, ClientHandshake};
use crate::websocket::relay::{self, MessageScanner, RelayLimits};

/// Largest WebSocket message reassembled for scanning (bigger ones close with 1009).
pub const MAX_WS_MESSAGE: usize = 16 << 20;

/// Scans relayed messages: outbound with the inspector's DLP, inbound for reflections.
struct Scanner {
    route: Route,
    inspector: Option<Arc<dyn RequestInspector>>,
    reflection: Option<Arc<crate::server::reflect::Reflection>>,
}

impl MessageScanner for Scanner {
    fn scan_outbound(&self, payload: &[u8], text: bool) -> Result<(), Deny> {
        match &self.inspector {
            Some(i) => i.inspect_message(&self.route, payload, text),
            None => Ok(()),
        }
    }

    fn scan_inbound(&self, payload: &[u8], _text: bool) -> Result<(), Deny> {
        match &self.reflection {
            Some(r) => r.bytes(payload, "response:websocket"),
            None => Ok(()),
        }
    }
}

/// Forwards a validated WebSocket handshake and relays frames once both sides upgraded.
pub(crate) async fn websocket(
    ex: &Exchange,
    dest: &Dest<'_>,
    key: PoolKey,
    req: Request<ProxyBody>,
    auth: &str,
    hs: ClientHandshake,
    client_upgrade: hyper::upgrade::OnUpgrade,
) -> Response<ProxyBody> {
    let inner = ex.inner.clone();
    let (mut parts, body) = req.into_parts();
    handshake::prepare_upstream_headers(&mut parts.headers);
    let mut req = Request::from_parts(parts, body);
    let io = match inner.upstream.open_io(&key, dest.addrs, true).await {
        Ok(io) => io,
        Err(d) => return ex.refuse(d),
    };
    let upstream_err =
        |e: hyper::Error| Deny::new(DenyReason::Upstream, format!("upstream {}: {e}", dest.host));
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => return ex.refuse(upstream_err(e)),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    if let Err(d) = prepare_request(&mut req, Proto::H1, dest.tls, auth, &ex.path) {
        return ex.refuse(d);
    }
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return ex.refuse(upstream_err(e)),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream declined the upgrade: an ordinary response, through the same stage 7
        // as any other (headers and body checked for the bottle's secrets, inbound DLP).
        // Credentials were injected above, so an upstream echoing them here is a reflection.
        let held = HeldRecord::default();
        let down = Arc::new(AtomicU64::new(0));
        let on_done = held.on_body_done(
            ex,
            ex.record(None, (0, 0)),
            Arc::new(AtomicU64::new(0)),
            down.clone(),
        );
        let resp = resp.map(|b| boxed_hyper(Metered::new(b, down, Some(on_done))));
        return inspect_response(ex, dest.route, resp, &held).await;
    }
    if let Err(e) = handshake::check_response(&hs, resp.status(), resp.headers()) {
        return ex.refuse(Deny::new(DenyReason::Upstream, e.to_string()));
    }
    if let Some(r) = &inner.reflection {
        if let Err(d) = r.headers(resp.headers()) {
            return ex.refuse(d);
        }
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let settings = &inner.policy.settings;
    let limits = RelayLimits {
        max_message: MAX_WS_MESSAGE,
        idle: settings.idle_timeout,
        max_bytes: settings.max_tunnel_bytes,
    };
    let scanner: Arc<dyn MessageScanner> = Arc::new(Scanner {
        route: dest.route.clone(),
        inspector: inner.inspector.clone(),
        reflection: inner.reflection.clone().map(Arc::new),
    });
    let ex2 = ex.clone();
    tokio::spawn(async move {
        let (Ok(c), Ok(u)) = (client_upgrade.await, upstream_upgrade.await) else {
            ex2.audit_deny(&Deny::new(
                DenyReason::Upstream,
                "WebSocket upgrade did not complete",
            ));
            return;
        };
        let out = relay::relay(TokioIo::new(c), TokioIo::new(u), scanner, limits).await;
        match out.blocked {
            Some((_, deny)) => {
                let mut rec = ex2.record(Some(&deny), (out.up, out.down));
                rec.location = deny.location.clone();
                ex2.inner.audit.record(rec);
            }
            None => ex2.inner.audit.record(ex2.record(None, (out.up, out.down))),
        }
    });
    let (mut parts, _body) = resp.into_parts();
    let accept = parts.headers.get(header::SEC_WEBSOCKET_ACCEPT).cloned();
    let protocol = parts.headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Some(a) = accept {
        parts.headers.insert(header::SEC_WEBSOCKET_ACCEPT, a);
    }
    if let Some(p) = protocol {
        parts.headers.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    parts.headers.append(header::VIA, inner.via.clone());
    Response::from_parts(parts, empty())
}
