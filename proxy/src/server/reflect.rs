//! Stage 7, the response: the bottle's own secrets must never flow back to the agent, on any
//! route, whatever `inbound_dlp` says. An upstream that echoes the injected `Authorization`
//! (in a body, an `X-Echo-Auth` header, `Set-Cookie`, `Location`, a WebSocket frame) would
//! otherwise hand the agent the real token.
//!
//! - **Headers** are scanned for known secrets (every encoding the request side knows) on
//!   every response; a hit **blocks** the response (403 like every policy deny,
//!   `X-Bottle-Deny: dlp`, `X-Bottle-Rule: known-secret`, location `response:header:NAME`).
//! - **Bodies** are scanned as they stream, with the known-secret pass only (cheap). Each
//!   chunk is scanned together with the preceding [`Scanner::overlap`] bytes (the longest
//!   input an encoded occurrence of a known secret spans, escapes included), and a tail that
//!   could be the start of an occurrence completed by the next chunk is **held back** until
//!   that chunk has been scanned too (or the body ends), so no byte of a secret is forwarded
//!   before the whole occurrence has been checked. Non-streaming bodies hold back the last
//!   `overlap` bytes. Streaming media types (`text/event-stream`, NDJSON, gRPC: events must
//!   not wait) hold back only the longest tail made of bytes an encoded secret can contain
//!   ([`Reflection::held_tail`]: ASCII letters and digits, `+ / = _`, the separators, the `%`
//!   and `\` of escapes, the secrets' own bytes; leading separators excepted), at most
//!   `overlap` bytes. A JSON event (`…}\n\n`), `[DONE]` or an NDJSON line ends in a byte no
//!   secret can contain and goes out at once; an event ending in bare letters or digits waits
//!   for the next chunk. There is deliberately **no timer flush**: what is held is exactly the
//!   bytes that could begin a secret, so releasing them on a timer would hand an upstream
//!   that pauses mid-secret its prefix. A hit **cuts** the body (the client sees a reset
//!   stream, never the secret) and is audited as a `dlp` deny.
//! - A compressed body on a credentialed route is buffered (up to the route's `body_cap`),
//!   decoded and scanned before any of it is forwarded; over the cap it is refused.
//!   Credentialed requests ask for `Accept-Encoding: identity`, so this is rare.
//! - Routes with `inbound_dlp = true` then get the full rule set on the body
//!   ([`crate::RequestInspector::inspect_response`]).
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use bottle_scanner::decode::{decode_content_encoding, scan_headers, DecodeLimits};
use bottle_scanner::{Finding, Scanner};

use crate::policy::{Deny, DenyReason, Route};
use crate::server::body::{boxed, full, BoxError, ProxyBody};
use crate::server::exchange::Exchange;
use crate::server::request::HeldRecord;
use crate::server::Secrets;

/// The known-secret scanner for responses (the bottle's secrets, no rules).
#[derive(Clone)]
pub(crate) struct Reflection {
    scanner: Scanner,
    /// Bytes an encoded occurrence of a known secret can contain (see [`Self::held_tail`]).
    alphabet: std::sync::Arc<[bool; 256]>,
}

impl Reflection {
    /// A scanner for `secrets`, or `None` when the bottle has none (or none is long enough
    /// to be a known secret).
    pub fn new(secrets: &Secrets) -> Option<Self> {
        let mut b = Scanner::builder().default_rules(false);
        let mut any = false;
        // Every byte of every encoding the scanner matches: hex, base32, base64 (std and
        // URL-safe) digits, the separators it ignores, the `%XX` / `\uXXXX` / `\xXX` / `\/`
        // / `\n` escapes it decodes — and, raw or escaped, the secrets' own bytes.
        let mut alphabet = [false; 256];
        for c in 0..=255u8 {
            alphabet[c as usize] = c.is_ascii_alphanumeric()
                || b"+/=_%\\".contains(&c)
                || bottle_scanner::is_separator(c);
        }
        for (name, value) in secrets.iter() {
            if value.len() >= bottle_scanner::MIN_KNOWN_SECRET_LEN {
                b = b.known_secret(name, value);
                any = true;
                for &c in value.as_bytes() {
                    alphabet[c as usize] = true;
                }
            }
        }
        if !any {
            return None;
        }
        b.build().ok().map(|scanner| Reflection {
            scanner,
            alphabet: std::sync::Arc::new(alphabet),
        })
    }

    /// How many bytes at the end of `head ++ tail` (already scanned, no secret found) must
    /// not be forwarded yet, because the next chunk could complete them into a secret.
    ///
    /// An occurrence not found yet extends past the end, so every byte of the part already
    /// here is one an encoded secret can contain: the part lies within the longest suffix
    /// made only of such bytes. Its leading separators are not held (the scanner ignores
    /// separators, so they reveal nothing of a secret, and an event's closing `\n\n` goes
    /// out). Never more than `max` (the scan overlap: an occurrence starting earlier than
    /// that would have ended inside the data and been found).
    fn held_tail(&self, head: &[u8], tail: &[u8], max: usize) -> usize {
        let ok = |c: &u8| self.alphabet[*c as usize];
        let run = tail.iter().rev().take_while(|c| ok(c)).count();
        let run = if run == tail.len() {
            run + head.iter().rev().take_while(|c| ok(c)).count()
        } else {
            run
        };
        let run = run.min(max);
        // Skip the run's leading separators.
        let total = head.len() + tail.len();
        let at = |i: usize| {
            if i < head.len() {
                head[i]
            } else {
                tail[i - head.len()]
            }
        };
        let mut start = total - run;
        while start < total && bottle_scanner::is_separator(at(start)) {
            start += 1;
        }
        total - start
    }

    /// Checks response headers.
    pub fn headers(&self, headers: &HeaderMap) -> Result<(), Deny> {
        let found = scan_headers(
            &self.scanner,
            headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        match found.first() {
            None => Ok(()),
            Some(f) => Err(deny(f, "response:header")),
        }
    }

    /// Checks one complete payload (a WebSocket message, a buffered body).
    pub fn bytes(&self, data: &[u8], location: &str) -> Result<(), Deny> {
        match self.scanner.scan(data).first() {
            None => Ok(()),
            Some(f) => Err(deny(f, location)),
        }
    }
}

/// The deny for a reflected secret: names the secret and where, never its value.
fn deny(f: &Finding, location: &str) -> Deny {
    let name = f.known_secret.as_deref().unwrap_or("?");
    let loc = match f.location.as_deref() {
        Some(l) if location == "response:header" => format!("response:{l}"),
        _ => location.to_owned(),
    };
    Deny::new(
        DenyReason::Dlp,
        format!(
            "the upstream's response carried the bottle's secret {name} ({loc}); it is never returned to the agent"
        ),
    )
    .with_dlp(bottle_scanner::KNOWN_SECRET_RULE_ID, Some(loc))
}

/// Media types whose bodies are event streams: forwarded chunk by chunk.
fn is_streaming(headers: &HeaderMap) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    ct.starts_with("text/event-stream")
        || ct.contains("ndjson")
        || ct.contains("stream+json")
        || ct.starts_with("application/grpc")
}

/// Is the body content-encoded (anything but identity)?
fn encoding(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_ENCODING)?.to_str().ok()?.trim();
    (!v.is_empty() && !v.eq_ignore_ascii_case("identity")).then(|| v.to_owned())
}

/// Stage 7: reflection checks on headers and body, then inbound DLP where the route asks.
pub(crate) async fn response(
    ex: &Exchange,
    route: &Route,
    parts: &http::response::Parts,
    body: ProxyBody,
    held: &HeldRecord,
) -> Result<ProxyBody, Deny> {
    let inner = &ex.inner;
    let mut body = body;
    if let Some(r) = &inner.reflection {
        r.headers(&parts.headers)?;
        body = match (encoding(&parts.headers), route.auth.is_some()) {
            (Some(enc), true) => buffered(r, route, &enc, body).await?,
            _ => {
                let ex = ex.clone();
                let held = held.clone();
                let on_hit: OnHit = Box::new(move |d: Deny| {
                    held.decide(false, &ex.inner.audit);
                    ex.audit_deny(&d);
                });
                boxed(Scanned::new(
                    body,
                    r.clone(),
                    is_streaming(&parts.headers),
                    on_hit,
                ))
            }
        };
    }
    if let (true, Some(insp)) = (route.inbound_dlp, &inner.inspector) {
        body = insp.inspect_response(route, &parts.headers, body).await?;
    }
    Ok(body)
}

/// A compressed body on a credentialed route: read whole (up to `body_cap`), decoded,
/// scanned, then forwarded as received.
async fn buffered(
    r: &Reflection,
    route: &Route,
    enc: &str,
    body: ProxyBody,
) -> Result<ProxyBody, Deny> {
    let data = read_all(body, route.body_cap).await.map_err(|why| {
        Deny::new(
            DenyReason::TooLarge,
            format!(
                "compressed response on a credentialed route could not be read for the reflection check: {why}"
            ),
        )
    })?;
    // Codings apply in the order listed, so they are undone from the last one.
    let mut decoded = data.to_vec();
    for coding in enc.rsplit(',').map(str::trim).filter(|c| !c.is_empty()) {
        decoded = decode_content_encoding(coding, &decoded, DecodeLimits::default().max_decoded)
            .map_err(|e| {
                Deny::new(
                    DenyReason::Dlp,
                    format!("response could not be decoded for the reflection check: {e}"),
                )
            })?;
    }
    r.bytes(&decoded, "response:body")?;
    Ok(full(data))
}

/// Reads a whole body of at most `cap` bytes.
async fn read_all(mut body: ProxyBody, cap: usize) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(d) = frame.into_data() {
            buf.extend_from_slice(&d);
            if buf.len() > cap {
                return Err(format!("over the route's body_cap of {cap} bytes"));
            }
        }
    }
    Ok(buf.freeze())
}

/// Called once when a body scan finds a secret (records the deny).
type OnHit = Box<dyn FnOnce(Deny) + Send>;

/// The error a cut body ends with.
#[derive(Debug, thiserror::Error)]
#[error("response withheld: it carried a bottle secret")]
struct Withheld;

/// A response body scanned for known secrets as it streams (see the module docs).
struct Scanned {
    inner: ProxyBody,
    r: Reflection,
    /// An event stream: hold back only a tail that could begin a secret (see
    /// [`Reflection::held_tail`]), not `overlap` bytes.
    streaming: bool,
    /// How many bytes before new data a scan must include.
    overlap: usize,
    /// The last `overlap` bytes scanned (context for the next scan).
    ctx: BytesMut,
    /// Scanned but not yet forwarded (the hold-back, at most `overlap`).
    pending: BytesMut,
    out: VecDeque<Frame<Bytes>>,
    on_hit: Option<OnHit>,
    ended: bool,
    failed: bool,
}

impl Scanned {
    fn new(inner: ProxyBody, r: Reflection, streaming: bool, on_hit: OnHit) -> Self {
        let overlap = r.scanner.overlap();
        Scanned {
            inner,
            r,
            streaming,
            overlap,
            ctx: BytesMut::new(),
            pending: BytesMut::new(),
            out: VecDeque::new(),
            on_hit: Some(on_hit),
            ended: false,
            failed: false,
        }
    }

    /// Scans `data` after the context; queues what may now be forwarded.
    fn push(&mut self, data: Bytes) -> Result<(), Deny> {
        // A secret lies wholly inside `data`, or starts in the context and ends within its
        // first `overlap` bytes.
        let mut join = BytesMut::with_capacity(self.ctx.len() + self.overlap.min(data.len()));
        join.extend_from_slice(&self.ctx);
        join.extend_from_slice(&data[..self.overlap.min(data.len())]);
        self.r.bytes(&join, "response:body")?;
        if data.len() > self.overlap {
            self.r.bytes(&data, "response:body")?;
        }
        // New context: the last `overlap` bytes of (ctx + data).
        if data.len() >= self.overlap {
            self.ctx.clear();
            self.ctx
                .extend_from_slice(&data[data.len() - self.overlap..]);
        } else {
            self.ctx.extend_from_slice(&data);
            let excess = self.ctx.len().saturating_sub(self.overlap);
            let _ = self.ctx.split_to(excess);
        }
        // Hold back what a secret completed by the next chunk could start with: the last
        // `overlap` bytes, or (event streams, which must not wait) only the tail that could
        // be part of an encoded secret at all.
        let hold = if self.streaming {
            self.r.held_tail(&self.pending, &data, self.overlap)
        } else {
            self.overlap
        };
        let total = self.pending.len() + data.len();
        let release = total.saturating_sub(hold);
        if release == 0 {
            self.pending.extend_from_slice(&data);
            return Ok(());
        }
        let from_pending = release.min(self.pending.len());
        if from_pending > 0 {
            let head = self.pending.split_to(from_pending).freeze();
            self.out.push_back(Frame::data(head));
        }
        // The rest of `release` comes from `data` (zero copy).
        let take = release - from_pending;
        if take > 0 {
            self.out.push_back(Frame::data(data.slice(..take)));
        }
        self.pending.extend_from_slice(&data[take..]);
        Ok(())
    }
}

impl Body for Scanned {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.failed {
                return Poll::Ready(Some(Err(Box::new(Withheld))));
            }
            if let Some(f) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(f)));
            }
            if this.ended {
                if !this.pending.is_empty() {
                    let rest = this.pending.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if let Err(d) = this.push(data) {
                            this.failed = true;
                            this.out.clear();
                            this.pending.clear();
                            if let Some(f) = this.on_hit.take() {
                                f(d);
                            }
                        }
                    }
                    Err(frame) => {
                        // Trailers: flush what is held, then pass them on.
                        if !this.pending.is_empty() {
                            let rest = this.pending.split().freeze();
                            this.out.push_back(Frame::data(rest));
                        }
                        this.out.push_back(frame);
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.out.is_empty() && self.pending.is_empty() && !self.failed
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use http::HeaderValue;

    const T: &str = "reflect-test-token-Xq7Lm2Vb9Nc4Zk8Wp3";

    fn reflection() -> Reflection {
        let mut m = std::collections::HashMap::new();
        m.insert("TOK".to_owned(), T.to_owned());
        Reflection::new(&Secrets::new(m)).expect("a long enough secret")
    }

    #[test]
    fn response_header_reflection_forms() {
        let r = reflection();
        let b64 = base64::engine::general_purpose::STANDARD.encode(T);
        let pct: String = T.bytes().map(|b| format!("%{b:02X}")).collect();
        let forms = [
            ("x-echo-auth", format!("Bearer {T}")),
            ("set-cookie", format!("session={T}; Path=/; HttpOnly")),
            ("set-cookie", format!("s={b64}")),
            ("location", format!("https://example.test/cb?token={pct}")),
            ("location", format!("https://example.test/cb#{T}")),
            (
                "www-authenticate",
                format!("Bearer error=\"invalid\", token=\"{T}\""),
            ),
        ];
        for (name, value) in forms {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static("text/plain"));
            h.insert(
                http::HeaderName::from_static(name),
                HeaderValue::from_str(&value).unwrap(),
            );
            let d = r.headers(&h).expect_err(name);
            assert_eq!(d.reason, DenyReason::Dlp);
            assert!(
                !d.detail.contains(T),
                "the deny names the secret, not its value"
            );
        }
        let mut clean = HeaderMap::new();
        clean.insert(
            "set-cookie",
            HeaderValue::from_static("session=abc; Path=/"),
        );
        clean.insert("location", HeaderValue::from_static("/next"));
        assert!(r.headers(&clean).is_ok());
    }

    #[test]
    fn no_reflection_scanner_without_secrets() {
        assert!(Reflection::new(&Secrets::default()).is_none());
    }

    /// A body whose frames split the secret anywhere is cut before the secret's last byte is
    /// forwarded, and no forwarded prefix holds the whole secret.
    #[test]
    fn body_scan_catches_secrets_across_frames() {
        let r = reflection();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut text = "x".repeat(9000);
        text.push_str(T);
        text.push_str(&"y".repeat(100));
        for split in [1usize, 7, 4096, 9000, 9010, 9020] {
            for streaming in [false, true] {
                let bytes = Bytes::from(text.clone());
                let frames: Vec<Bytes> = bytes.chunks(split).map(Bytes::copy_from_slice).collect();
                let stream = futures_util::stream::iter(
                    frames
                        .into_iter()
                        .map(|b| Ok::<_, BoxError>(Frame::data(b))),
                );
                let body = boxed(http_body_util::StreamBody::new(stream));
                let hit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let hit2 = hit.clone();
                let on_hit: OnHit =
                    Box::new(move |_| hit2.store(true, std::sync::atomic::Ordering::SeqCst));
                let mut scanned = Scanned::new(body, r.clone(), streaming, on_hit);
                let mut forwarded = Vec::new();
                let mut failed = false;
                rt.block_on(async {
                    while let Some(f) = scanned.frame().await {
                        match f {
                            Ok(f) => forwarded.extend_from_slice(f.data_ref().unwrap()),
                            Err(_) => {
                                failed = true;
                                break;
                            }
                        }
                    }
                });
                assert!(failed, "split {split} streaming {streaming}: not cut");
                assert!(hit.load(std::sync::atomic::Ordering::SeqCst));
                let fwd = String::from_utf8_lossy(&forwarded);
                assert!(!fwd.contains(T), "split {split} streaming {streaming}");
                // Hold-back: not one byte of the secret was forwarded.
                assert!(
                    forwarded.len() <= 9000,
                    "split {split} streaming {streaming}: {} bytes forwarded",
                    forwarded.len()
                );
            }
        }
    }

    /// Runs `frames` through a streaming [`Scanned`]; returns (forwarded bytes, cut?).
    fn stream_through(r: &Reflection, frames: Vec<Bytes>) -> (Vec<u8>, bool) {
        let stream = futures_util::stream::iter(
            frames
                .into_iter()
                .map(|b| Ok::<_, BoxError>(Frame::data(b))),
        );
        let body = boxed(http_body_util::StreamBody::new(stream));
        let mut scanned = Scanned::new(body, r.clone(), true, Box::new(|_| {}));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut forwarded = Vec::new();
        let mut cut = false;
        rt.block_on(async {
            while let Some(f) = scanned.frame().await {
                match f {
                    Ok(f) => forwarded.extend_from_slice(f.data_ref().unwrap()),
                    Err(_) => {
                        cut = true;
                        break;
                    }
                }
            }
        });
        (forwarded, cut)
    }

    /// An event stream carrying the secret in each encoding the scanner knows, split into
    /// two chunks at every point of the encoded secret: cut, and not one byte of the encoded
    /// secret forwarded (the tail that could begin it is held, whatever its encoding).
    #[test]
    fn event_stream_hold_back_covers_every_encoding_and_split() {
        let r = reflection();
        let std64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let hex = data_encoding::HEXLOWER.encode(T.as_bytes());
        let forms = [
            ("raw", T.to_owned()),
            ("hex", hex.clone()),
            ("HEX", hex.to_ascii_uppercase()),
            ("base64", std64.encode(format!("k={T}"))),
            ("base64url", url64.encode(format!("ab{T}"))),
            ("base32", data_encoding::BASE32.encode(T.as_bytes())),
            (
                "percent",
                T.bytes().map(|b| format!("%{b:02X}")).collect::<String>(),
            ),
            (
                "json-u",
                T.bytes()
                    .map(|b| format!("\\u{:04x}", b))
                    .collect::<String>(),
            ),
            (
                "separators",
                T.as_bytes()
                    .chunks(4)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join("-"),
            ),
        ];
        for (what, enc) in forms {
            let before = "data: {\"n\":1}\n\ndata: {\"v\":\"";
            let text = format!("{before}{enc}\"}}\n\n");
            let start = before.len();
            for cut_at in start..start + enc.len() {
                let b = Bytes::from(text.clone());
                let frames = vec![b.slice(..cut_at), b.slice(cut_at..)];
                let (fwd, cut) = stream_through(&r, frames);
                assert!(cut, "{what} split at {cut_at}: not cut");
                assert!(
                    fwd.len() <= start,
                    "{what} split at {cut_at}: {:?} forwarded",
                    String::from_utf8_lossy(&fwd)
                );
            }
        }
    }

    /// Events that cannot end inside a secret are forwarded as they arrive, the upstream
    /// still streaming; a tail that could begin one waits for the next chunk (no timer).
    #[test]
    fn event_stream_events_are_not_held() {
        use futures_util::FutureExt as _;
        let r = reflection();
        let events = [
            (
                "data: {\"delta\":\"hi\"}\n\n",
                "data: {\"delta\":\"hi\"}\n\n",
            ),
            ("data: [DONE]\n\n", "data: [DONE]\n\n"),
            ("{\"a\":1}\n", "{\"a\":1}\n"),
            // Could be the first letters of a secret: held until the next chunk.
            ("data: hello world\n\n", "data: "),
        ];
        for (event, released) in events {
            let stream = futures_util::StreamExt::chain(
                futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(
                    event.as_bytes(),
                )))]),
                futures_util::stream::pending(),
            );
            let stream = futures_util::StreamExt::boxed(stream);
            let body = boxed(http_body_util::StreamBody::new(stream));
            let mut scanned = Scanned::new(body, r.clone(), true, Box::new(|_| {}));
            let first = scanned.frame().now_or_never();
            let got = first
                .flatten()
                .map(|f| f.unwrap().into_data().unwrap())
                .unwrap_or_default();
            assert_eq!(String::from_utf8_lossy(&got), released, "{event:?}");
            assert!(scanned.frame().now_or_never().is_none(), "{event:?}");
        }
    }
}
