//! RFC 6455 opening-handshake checks for the proxy.
//!
//! Only one kind of HTTP/1.1 upgrade is ever let through: a WebSocket upgrade
//! (`Upgrade: websocket`, nothing else in the header). Any other token (`h2c`,
//! `TLS/1.0`, made-up ones) or a list of tokens is refused, because after a
//! `101` the connection stops being HTTP and the proxy could no longer apply a
//! route's method/path rules to it. The WebSocket one is let through only
//! because [`super::relay`] parses every frame that follows.
//!
//! The upstream request never offers extensions ([`prepare_upstream_headers`]
//! drops `Sec-WebSocket-Extensions`): with `permessage-deflate` the payloads the
//! scanner sees would be compressed, so the proxy never negotiates it, and
//! [`check_response`] refuses a `101` that claims an extension anyway. The
//! relay then refuses any frame with RSV1 (the "compressed" bit) set.
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::{
    HeaderName, CONNECTION, CONTENT_LENGTH, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 §1.3 appends to `Sec-WebSocket-Key` before hashing (checked
/// against the RFC's own example in the tests).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Headers a client's `Connection` list cannot remove from the upstream request.
const KEEP_ON_UPSTREAM: [HeaderName; 6] = [
    HOST,
    CONNECTION,
    UPGRADE,
    SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION,
    SEC_WEBSOCKET_PROTOCOL,
];

/// Longest header value quoted back in a refusal (longer ones are cut, with `…`).
const MAX_QUOTED: usize = 64;

/// Why a WebSocket (or any other) upgrade is not let through. Every message is
/// one line, quotes header values escaped and cut to 64 characters, and never
/// quotes `Sec-WebSocket-Key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefusal {
    /// The request is not HTTP/1.1 (HTTP/1.0 has no upgrades; HTTP/2 and 3 use
    /// extended CONNECT, which the proxy does not offer).
    #[error("upgrade over {0:?} is refused: WebSocket upgrades need HTTP/1.1")]
    Version(Version),
    /// The handshake is not a `GET`.
    #[error("upgrade with method {0} is refused: a WebSocket handshake is a GET")]
    Method(String),
    /// `Connection` does not carry the `upgrade` token.
    #[error("upgrade is refused: Connection does not carry the upgrade token")]
    ConnectionToken,
    /// No `Upgrade` header at all.
    #[error("upgrade is refused: no Upgrade header")]
    NoUpgrade,
    /// More than one `Upgrade` header line.
    #[error("upgrade is refused: {0} Upgrade headers (exactly one, websocket, is proxied)")]
    UpgradeCount(usize),
    /// The `Upgrade` value is not exactly the token `websocket`.
    #[error("Upgrade: {0} is refused: only WebSocket upgrades are proxied")]
    UpgradeToken(String),
    /// `Sec-WebSocket-Version` is missing, repeated or not `13`.
    #[error("Sec-WebSocket-Version: {0} is refused: only version 13 is proxied")]
    WsVersion(String),
    /// `Sec-WebSocket-Key` is missing, repeated or not base64 of 16 bytes.
    #[error("upgrade is refused: Sec-WebSocket-Key {0}")]
    Key(&'static str),
    /// `Sec-WebSocket-Protocol` is not a comma-separated list of tokens.
    #[error("Sec-WebSocket-Protocol: {0} is refused: not a list of tokens")]
    Subprotocol(String),
    /// The handshake request carries a body (`Content-Length` > 0 or
    /// `Transfer-Encoding`), whose bytes would reach the upstream unframed.
    #[error("upgrade is refused: a WebSocket handshake request carries no body")]
    Body,
    /// The upstream answered something other than `101`.
    #[error("upstream answered {0} to the WebSocket handshake, not 101")]
    Status(StatusCode),
    /// The upstream's `Upgrade`/`Connection` do not confirm a WebSocket upgrade.
    #[error("upstream 101 is refused: {0}")]
    ResponseHeader(String),
    /// `Sec-WebSocket-Accept` is missing, repeated or wrong.
    #[error("upstream 101 is refused: Sec-WebSocket-Accept {0}")]
    Accept(&'static str),
    /// The upstream accepted an extension although none was offered.
    #[error("upstream 101 is refused: it names Sec-WebSocket-Extensions {0}, and none was offered (compressed frames cannot be scanned)")]
    Extension(String),
    /// The upstream chose a subprotocol the client did not offer (or several).
    #[error("upstream 101 is refused: Sec-WebSocket-Protocol {0} was not offered")]
    UnofferedSubprotocol(String),
}

/// What [`check_response`] needs to remember of a validated client handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    /// The `Sec-WebSocket-Accept` value a genuine `101` must carry.
    pub expected_accept: String,
    /// Subprotocols the client offered, in order (empty if none).
    pub subprotocols: Vec<String>,
}

/// `base64(SHA-1(key + GUID))`, the `Sec-WebSocket-Accept` for `key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    STANDARD.encode(sha.finalize())
}

/// Validates a client's upgrade request (RFC 6455 §4.2.1, plus the proxy's
/// rule that `websocket` is the only upgrade token). Call it for every request
/// carrying `Upgrade` or a `Connection: upgrade` token; an `Err` means the
/// request must be answered by the proxy, never forwarded.
pub fn check_request(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<ClientHandshake, UpgradeRefusal> {
    if version != Version::HTTP_11 {
        return Err(UpgradeRefusal::Version(version));
    }
    if method != Method::GET {
        return Err(UpgradeRefusal::Method(quote(method.as_str().as_bytes())));
    }
    check_upgrade_token(headers).map_err(|e| match e {
        Some(v) => UpgradeRefusal::UpgradeToken(v),
        None => UpgradeRefusal::NoUpgrade,
    })?;
    let upgrades = headers.get_all(UPGRADE).iter().count();
    if upgrades != 1 {
        return Err(UpgradeRefusal::UpgradeCount(upgrades));
    }
    if !has_token(headers, &CONNECTION, "upgrade") {
        return Err(UpgradeRefusal::ConnectionToken);
    }
    if headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get_all(CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().trim_ascii() != b"0")
    {
        return Err(UpgradeRefusal::Body);
    }
    match single(headers, &SEC_WEBSOCKET_VERSION) {
        Single::One(v) if v.as_bytes().trim_ascii() == b"13" => {}
        Single::One(v) => return Err(UpgradeRefusal::WsVersion(quote(v.as_bytes()))),
        Single::None => return Err(UpgradeRefusal::WsVersion("(missing)".into())),
        Single::Many => return Err(UpgradeRefusal::WsVersion("(repeated)".into())),
    }
    let key = match single(headers, &SEC_WEBSOCKET_KEY) {
        Single::One(v) => v.as_bytes().trim_ascii(),
        Single::None => return Err(UpgradeRefusal::Key("is missing")),
        Single::Many => return Err(UpgradeRefusal::Key("is repeated")),
    };
    match STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        Ok(_) => return Err(UpgradeRefusal::Key("does not decode to 16 bytes")),
        Err(_) => return Err(UpgradeRefusal::Key("is not base64")),
    }
    let mut subprotocols = Vec::new();
    for v in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        for tok in v.as_bytes().split(|&b| b == b',') {
            let tok = tok.trim_ascii();
            if tok.is_empty() {
                continue;
            }
            if !tok.iter().all(|&b| is_tchar(b)) {
                return Err(UpgradeRefusal::Subprotocol(quote(v.as_bytes())));
            }
            // tchar is ASCII, so this cannot fail.
            subprotocols.push(String::from_utf8_lossy(tok).into_owned());
        }
    }
    Ok(ClientHandshake {
        expected_accept: accept_key(key),
        subprotocols,
    })
}

/// Rewrites a validated handshake's headers for the upstream: drops
/// `Sec-WebSocket-Extensions` (no `permessage-deflate`: the scanner must see
/// plain payloads, and compressed frames are refused), drops the headers the
/// client's `Connection` names as hop-by-hop (never `Host` or the handshake's
/// own headers, even if named), and sets exactly `Connection: upgrade` and
/// `Upgrade: websocket`. Call it before injecting credentials, so a client
/// cannot name them away (it could only hurt itself, but the audit would lie).
pub fn prepare_upstream_headers(headers: &mut HeaderMap) {
    headers.remove(SEC_WEBSOCKET_EXTENSIONS);
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .filter(|n| !KEEP_ON_UPSTREAM.contains(n))
        .collect();
    for n in named {
        headers.remove(n);
    }
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Validates the upstream's answer to a handshake prepared with
/// [`prepare_upstream_headers`] (RFC 6455 §4.1): `101`, `Upgrade: websocket`,
/// `Connection: upgrade`, the right `Sec-WebSocket-Accept`, no extension, and
/// at most one subprotocol, one the client offered. On `Err` the proxy must
/// not switch protocols (answer the client 502 and drop the upstream).
pub fn check_response(
    client: &ClientHandshake,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<(), UpgradeRefusal> {
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(UpgradeRefusal::Status(status));
    }
    match check_upgrade_token(headers) {
        Ok(()) if headers.get_all(UPGRADE).iter().count() == 1 => {}
        Ok(()) => return Err(UpgradeRefusal::ResponseHeader("repeated Upgrade".into())),
        Err(None) => return Err(UpgradeRefusal::ResponseHeader("no Upgrade".into())),
        Err(Some(v)) => return Err(UpgradeRefusal::ResponseHeader(format!("Upgrade: {v}"))),
    }
    if !has_token(headers, &CONNECTION, "upgrade") {
        return Err(UpgradeRefusal::ResponseHeader(
            "Connection does not carry the upgrade token".into(),
        ));
    }
    match single(headers, &SEC_WEBSOCKET_ACCEPT) {
        Single::One(v) if v.as_bytes().trim_ascii() == client.expected_accept.as_bytes() => {}
        Single::One(_) => return Err(UpgradeRefusal::Accept("does not match the key")),
        Single::None => return Err(UpgradeRefusal::Accept("is missing")),
        Single::Many => return Err(UpgradeRefusal::Accept("is repeated")),
    }
    if let Some(v) = headers.get(SEC_WEBSOCKET_EXTENSIONS) {
        return Err(UpgradeRefusal::Extension(quote(v.as_bytes())));
    }
    match single(headers, &SEC_WEBSOCKET_PROTOCOL) {
        Single::None => {}
        Single::One(v) => {
            let chosen = v.as_bytes().trim_ascii();
            if !client.subprotocols.iter().any(|p| p.as_bytes() == chosen) {
                return Err(UpgradeRefusal::UnofferedSubprotocol(quote(v.as_bytes())));
            }
        }
        Single::Many => {
            return Err(UpgradeRefusal::UnofferedSubprotocol(
                "(several values)".into(),
            ))
        }
    }
    Ok(())
}

/// `Ok` if the first `Upgrade` value is exactly `websocket` (any case);
/// `Err(Some(quoted value))` if it is anything else, `Err(None)` if absent.
fn check_upgrade_token(headers: &HeaderMap) -> Result<(), Option<String>> {
    let mut values = headers.get_all(UPGRADE).iter();
    let Some(first) = values.next() else {
        return Err(None);
    };
    // A second line is reported by the caller; a bad token in it is named here.
    for v in std::iter::once(first).chain(values) {
        if !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket") {
            return Err(Some(quote(v.as_bytes())));
        }
    }
    Ok(())
}

/// Does any `name` header carry `token` in its comma-separated list (any case)?
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

enum Single<'a> {
    None,
    One(&'a HeaderValue),
    Many,
}

fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Single<'a> {
    let mut it = headers.get_all(name).iter();
    match (it.next(), it.next()) {
        (None, _) => Single::None,
        (Some(v), None) => Single::One(v),
        (Some(_), Some(_)) => Single::Many,
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header value made safe to put in a one-line message: escaped, cut to
/// [`MAX_QUOTED`] characters.
fn quote(v: &[u8]) -> String {
    let v = v.trim_ascii();
    let mut s: String = v.escape_ascii().to_string();
    if s.len() > MAX_QUOTED {
        let mut cut = MAX_QUOTED;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    if s.is_empty() {
        s.push_str("(empty)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &[(&str, &str)], skip: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("host", "example.com"),
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", KEY),
        ] {
            if !skip.contains(&n) {
                h.append(n, HeaderValue::from_static(v));
            }
        }
        for (n, v) in extra {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn request_table() {
        let get = Method::GET;
        let v11 = Version::HTTP_11;
        // (name, method, version, headers, Ok or a substring of the refusal)
        type Case = (
            &'static str,
            Method,
            Version,
            HeaderMap,
            Result<(), &'static str>,
        );
        let cases: Vec<Case> = vec![
            ("websocket", get.clone(), v11, request(&[], &[]), Ok(())),
            (
                "WebSocket mixed case",
                get.clone(),
                v11,
                {
                    let mut h = request(&[], &["upgrade"]);
                    h.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
                    h
                },
                Ok(()),
            ),
            (
                "h2c",
                get.clone(),
                v11,
                request(&[("upgrade", "h2c")], &["upgrade"]),
                Err("Upgrade: h2c is refused: only WebSocket upgrades are proxied"),
            ),
            (
                "foo",
                get.clone(),
                v11,
                request(&[("upgrade", "foo")], &["upgrade"]),
                Err("Upgrade: foo is refused"),
            ),
            (
                "TLS/1.0",
                get.clone(),
                v11,
                request(&[("upgrade", "TLS/1.0")], &["upgrade"]),
                Err("Upgrade: TLS/1.0 is refused"),
            ),
            (
                "websocket, h2c",
                get.clone(),
                v11,
                request(&[("upgrade", "websocket, h2c")], &["upgrade"]),
                Err("Upgrade: websocket, h2c is refused"),
            ),
            (
                "two Upgrade headers",
                get.clone(),
                v11,
                request(&[("upgrade", "websocket")], &[]),
                Err("2 Upgrade headers"),
            ),
            (
                "second Upgrade header is h2c",
                get.clone(),
                v11,
                request(&[("upgrade", "h2c")], &[]),
                Err("Upgrade: h2c is refused"),
            ),
            (
                "no Upgrade",
                get.clone(),
                v11,
                request(&[], &["upgrade"]),
                Err("no Upgrade header"),
            ),
            (
                "missing Connection upgrade",
                get.clone(),
                v11,
                request(&[("connection", "keep-alive")], &["connection"]),
                Err("Connection does not carry the upgrade token"),
            ),
            (
                "Connection upgrades-ish token",
                get.clone(),
                v11,
                request(&[("connection", "upgraded")], &["connection"]),
                Err("Connection does not carry"),
            ),
            (
                "bad key: not base64",
                get.clone(),
                v11,
                request(
                    &[("sec-websocket-key", "not base64!")],
                    &["sec-websocket-key"],
                ),
                Err("Sec-WebSocket-Key is not base64"),
            ),
            (
                "bad key: 15 bytes",
                get.clone(),
                v11,
                request(
                    &[("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAA")],
                    &["sec-websocket-key"],
                ),
                Err("does not decode to 16 bytes"),
            ),
            (
                "missing key",
                get.clone(),
                v11,
                request(&[], &["sec-websocket-key"]),
                Err("Sec-WebSocket-Key is missing"),
            ),
            (
                "wrong version",
                get.clone(),
                v11,
                request(
                    &[("sec-websocket-version", "8")],
                    &["sec-websocket-version"],
                ),
                Err("Sec-WebSocket-Version: 8 is refused"),
            ),
            (
                "HTTP/1.0",
                get.clone(),
                Version::HTTP_10,
                request(&[], &[]),
                Err("need HTTP/1.1"),
            ),
            (
                "HTTP/2",
                get.clone(),
                Version::HTTP_2,
                request(&[], &[]),
                Err("need HTTP/1.1"),
            ),
            (
                "POST",
                Method::POST,
                v11,
                request(&[], &[]),
                Err("method POST is refused"),
            ),
            (
                "body",
                get.clone(),
                v11,
                request(&[("content-length", "12")], &[]),
                Err("carries no body"),
            ),
            (
                "chunked body",
                get.clone(),
                v11,
                request(&[("transfer-encoding", "chunked")], &[]),
                Err("carries no body"),
            ),
            (
                "zero content-length",
                get.clone(),
                v11,
                request(&[("content-length", "0")], &[]),
                Ok(()),
            ),
        ];
        for (name, method, version, headers, want) in cases {
            let got = check_request(&method, version, &headers);
            match (want, got) {
                (Ok(()), Ok(hs)) => {
                    assert_eq!(hs.expected_accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "{name}")
                }
                (Err(needle), Err(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(needle), "{name}: {msg:?} lacks {needle:?}");
                    assert!(!msg.contains('\n'), "{name}: multi-line message");
                    assert!(!msg.contains(KEY), "{name}: key quoted");
                }
                (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn request_records_subprotocols_and_quotes_safely() {
        let h = request(
            &[
                ("sec-websocket-protocol", "graphql-ws, chat"),
                ("sec-websocket-protocol", "v2.json"),
            ],
            &[],
        );
        let hs = check_request(&Method::GET, Version::HTTP_11, &h).unwrap();
        assert_eq!(hs.subprotocols, ["graphql-ws", "chat", "v2.json"]);

        let h = request(&[("sec-websocket-protocol", "a b")], &[]);
        let e = check_request(&Method::GET, Version::HTTP_11, &h).unwrap_err();
        assert!(matches!(e, UpgradeRefusal::Subprotocol(_)), "{e}");

        let long = "x".repeat(500);
        let h = request(&[("upgrade", &long)], &["upgrade"]);
        let msg = check_request(&Method::GET, Version::HTTP_11, &h)
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.contains('…'), "{msg}");
    }

    #[test]
    fn upstream_headers_drop_extensions_and_hop_by_hop() {
        let mut h = request(
            &[
                (
                    "sec-websocket-extensions",
                    "permessage-deflate; client_max_window_bits",
                ),
                ("connection", "x-hop, host, sec-websocket-key"),
                ("x-hop", "1"),
                ("x-keep", "1"),
            ],
            &["upgrade"],
        );
        h.append(UPGRADE, HeaderValue::from_static("WebSocket"));
        prepare_upstream_headers(&mut h);
        assert!(h.get(SEC_WEBSOCKET_EXTENSIONS).is_none());
        assert!(h.get("x-hop").is_none());
        assert_eq!(h.get("x-keep").unwrap(), "1");
        assert_eq!(h.get(HOST).unwrap(), "example.com");
        assert_eq!(
            h.get_all(CONNECTION).iter().collect::<Vec<_>>(),
            ["upgrade"]
        );
        assert_eq!(h.get_all(UPGRADE).iter().collect::<Vec<_>>(), ["websocket"]);
        assert_eq!(h.get(SEC_WEBSOCKET_KEY).unwrap(), KEY);
        // The prepared request still passes the request check.
        check_request(&Method::GET, Version::HTTP_11, &h).unwrap();
    }

    fn response(extra: &[(&str, &str)], skip: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ] {
            if !skip.contains(&n) {
                h.append(n, HeaderValue::from_static(v));
            }
        }
        for (n, v) in extra {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn response_table() {
        let client = check_request(
            &Method::GET,
            Version::HTTP_11,
            &request(&[("sec-websocket-protocol", "chat, v2")], &[]),
        )
        .unwrap();
        let s101 = StatusCode::SWITCHING_PROTOCOLS;
        let cases: Vec<(&str, StatusCode, HeaderMap, Result<(), &str>)> = vec![
            ("good", s101, response(&[], &[]), Ok(())),
            (
                "offered subprotocol",
                s101,
                response(&[("sec-websocket-protocol", "v2")], &[]),
                Ok(()),
            ),
            (
                "wrong accept",
                s101,
                response(
                    &[("sec-websocket-accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")],
                    &["sec-websocket-accept"],
                ),
                Err("Sec-WebSocket-Accept does not match"),
            ),
            (
                "missing accept",
                s101,
                response(&[], &["sec-websocket-accept"]),
                Err("Sec-WebSocket-Accept is missing"),
            ),
            (
                "extension present",
                s101,
                response(&[("sec-websocket-extensions", "permessage-deflate")], &[]),
                Err("Sec-WebSocket-Extensions permessage-deflate"),
            ),
            (
                "200 instead of 101",
                StatusCode::OK,
                response(&[], &[]),
                Err("answered 200 OK"),
            ),
            (
                "unoffered subprotocol",
                s101,
                response(&[("sec-websocket-protocol", "admin")], &[]),
                Err("Sec-WebSocket-Protocol admin was not offered"),
            ),
            (
                "two subprotocols",
                s101,
                response(
                    &[
                        ("sec-websocket-protocol", "chat"),
                        ("sec-websocket-protocol", "v2"),
                    ],
                    &[],
                ),
                Err("several values"),
            ),
            (
                "Upgrade h2c",
                s101,
                response(&[("upgrade", "h2c")], &["upgrade"]),
                Err("Upgrade: h2c"),
            ),
            (
                "no Connection upgrade",
                s101,
                response(&[], &["connection"]),
                Err("Connection does not carry"),
            ),
        ];
        for (name, status, headers, want) in cases {
            match (want, check_response(&client, status, &headers)) {
                (Ok(()), Ok(())) => {}
                (Err(needle), Err(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(needle), "{name}: {msg:?} lacks {needle:?}");
                }
                (want, got) => panic!("{name}: wanted {want:?}, got {got:?}"),
            }
        }
        // A client that offered no subprotocol accepts none.
        let bare = check_request(&Method::GET, Version::HTTP_11, &request(&[], &[])).unwrap();
        let e = check_response(
            &bare,
            s101,
            &response(&[("sec-websocket-protocol", "chat")], &[]),
        )
        .unwrap_err();
        assert!(matches!(e, UpgradeRefusal::UnofferedSubprotocol(_)), "{e}");
    }
}
