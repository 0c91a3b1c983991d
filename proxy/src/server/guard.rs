//! The guard stage: checks on a request's head that need no DNS, no body and no upstream —
//! its size, loops, framing, `Upgrade` tokens, smart-HTTP git push, and the tunnel binding
//! of `Host` / `:authority`. Each returns the [`Deny`] to send.
use http::header::{self, HeaderMap};
use http::{Method, Request};

use crate::canon::{parse_authority, Host};
use crate::policy::{Deny, DenyReason, Route};
use crate::server::Inner;
use crate::websocket::handshake::{self, ClientHandshake};

/// The request head size as received (request line + headers), approximately.
pub(crate) fn head_size<B>(req: &Request<B>) -> usize {
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

/// A head over `settings.max_request_head` (answered 431).
pub(crate) fn head_limit<B>(inner: &Inner, req: &Request<B>) -> Result<(), Deny> {
    let limit = inner.policy.settings.max_request_head;
    if head_size(req) > limit {
        return Err(Deny::new(
            DenyReason::TooLarge,
            format!("request head exceeds settings.max_request_head ({limit} bytes)"),
        ));
    }
    Ok(())
}

/// The request carries this proxy's own `Via` marker: it came back to us.
pub(crate) fn no_loop(inner: &Inner, headers: &HeaderMap) -> Result<(), Deny> {
    let looped = headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(inner.via_marker.as_str()));
    if looped {
        return Err(Deny::new(
            DenyReason::Loop,
            "request already passed through this proxy",
        ));
    }
    Ok(())
}

/// Inside a bumped tunnel: absolute-form or `:authority` and every `Host` must name the
/// CONNECT target; CONNECT itself is refused.
pub(crate) fn tunnel_binding<B>(req: &Request<B>, host: &Host, port: u16) -> Result<(), Deny> {
    if req.method() == Method::CONNECT {
        return Err(Deny::new(
            DenyReason::BadRequest,
            "CONNECT inside a tunnel is not supported",
        ));
    }
    let same = |auth: &str| {
        parse_authority(auth, 443)
            .map(|(h, p)| &h == host && p == port)
            .unwrap_or(false)
    };
    if let Some(auth) = req.uri().authority() {
        let scheme_ok = req
            .uri()
            .scheme_str()
            .is_none_or(|s| s.eq_ignore_ascii_case("https"));
        if !scheme_ok || !same(auth.as_str()) {
            return Err(Deny::new(
                DenyReason::HostMismatch,
                format!("request authority does not equal the CONNECT target {host}:{port}"),
            ));
        }
    }
    let mut n_hosts = 0;
    for h in req.headers().get_all(header::HOST) {
        n_hosts += 1;
        if !h.to_str().map(same).unwrap_or(false) {
            return Err(Deny::new(
                DenyReason::HostMismatch,
                format!("Host header does not equal the CONNECT target {host}:{port}"),
            ));
        }
    }
    if n_hosts == 0 && req.uri().authority().is_none() {
        return Err(Deny::new(
            DenyReason::BadRequest,
            "request has no Host header",
        ));
    }
    Ok(())
}

/// Request framing: both `Content-Length` and `Transfer-Encoding` (a smuggling vector), or
/// several differing `Content-Length`s, are refused rather than re-framed.
pub(crate) fn framing(headers: &HeaderMap) -> Result<(), Deny> {
    let lens: Vec<&[u8]> = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if !lens.is_empty() && headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Deny::new(
            DenyReason::BadRequest,
            "request has both Content-Length and Transfer-Encoding (RFC 9112 §6.3)",
        ));
    }
    if lens.windows(2).any(|w| w[0] != w[1]) {
        return Err(Deny::new(
            DenyReason::BadRequest,
            "request has differing Content-Length headers",
        ));
    }
    Ok(())
}

/// Does the request ask for a protocol upgrade (`Connection: upgrade` or any `Upgrade`)?
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The upgrade policy: no upgrade at all, or a valid RFC 6455 WebSocket handshake on a
/// route that allows WebSocket. Every other token (`h2c`, `TLS/1.0`, anything) is refused,
/// never spliced. Returns the client handshake to check the upstream's answer against.
pub(crate) fn upgrade<B>(route: &Route, req: &Request<B>) -> Result<Option<ClientHandshake>, Deny> {
    if !wants_upgrade(req.headers()) {
        return Ok(None);
    }
    let hs = handshake::check_request(req.method(), req.version(), req.headers())
        .map_err(|e| Deny::new(DenyReason::Upgrade, e.to_string()))?;
    if !route.websocket {
        return Err(Deny::new(
            DenyReason::Upgrade,
            format!(
                "route `{}` does not allow WebSocket (websocket = false)",
                route.id
            ),
        ));
    }
    Ok(Some(hs))
}

/// Smart-HTTP git push (`…/git-receive-pack`, `…/info/refs?service=git-receive-pack`), in any
/// spelling (percent-encoded, upper case, over h1 or h2), unless the route says `git_push =
/// true`. Pack objects are zlib-compressed, so body DLP cannot see what a push carries.
pub(crate) fn git_push(route: &Route, path_and_query: &str) -> Result<(), Deny> {
    if route.git_push || !is_git_push(path_and_query) {
        return Ok(());
    }
    Err(Deny::new(
        DenyReason::GitPush,
        format!(
            "git push over HTTP is refused on route `{}`: pushes are invisible to DLP and go through bottle's git gate ([[git.remote]] in the bottle, a coming release); `git_push = true` on the route allows unscanned pushes",
            route.id
        ),
    ))
}

/// Does this path-and-query name git's receive-pack service, however it is encoded?
pub fn is_git_push(path_and_query: &str) -> bool {
    let mut cur = path_and_query.as_bytes().to_vec();
    for _ in 0..4 {
        let next: Vec<u8> = percent_encoding::percent_decode(&cur).collect();
        if next == cur {
            break;
        }
        cur = next;
    }
    cur.make_ascii_lowercase();
    memchr::memmem::find(&cur, b"git-receive-pack").is_some()
        || memchr::memmem::find(&cur, b"git_receive_pack").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_push_path_forms() {
        let push = [
            "/acme/widget.git/git-receive-pack",
            "/acme/widget/git-receive-pack",
            "/acme/widget.git/info/refs?service=git-receive-pack",
            "/acme/widget/info/refs?foo=1&service=git-receive-pack",
            "/acme/widget.git%2Fgit-receive-pack",
            "/acme/widget/git%2Dreceive%2Dpack",
            "/acme/widget/git%252Dreceive-pack",
            "/acme/widget/GIT-RECEIVE-PACK",
            "/acme/widget/info/refs?service=git%2dreceive%2dpack",
        ];
        for p in push {
            assert!(is_git_push(p), "{p} is a push");
        }
        let fetch = [
            "/acme/widget.git/git-upload-pack",
            "/acme/widget/info/refs?service=git-upload-pack",
            "/acme/widget/blob/main/README.md",
        ];
        for p in fetch {
            assert!(!is_git_push(p), "{p} is not a push");
        }
    }

    #[test]
    fn framing_refuses_cl_with_te_and_differing_lengths() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert!(framing(&h).is_ok());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert_eq!(framing(&h).unwrap_err().reason, DenyReason::BadRequest);
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, "5".parse().unwrap());
        h.append(header::CONTENT_LENGTH, "6".parse().unwrap());
        assert!(framing(&h).is_err());
    }
}
