//! The frame-parsing WebSocket relay that replaces the byte splice after a `101`.
//!
//! Both connections are wrapped in `tungstenite` (the client side as a server,
//! the upstream side as a client), so every byte that crosses the proxy is
//! part of a frame the proxy decoded: a client that sends anything else (an
//! unmasked frame, a reserved opcode, RSV1 "compressed" frames, a fragmented
//! control frame, a raw `DELETE /private HTTP/1.1`) is closed with 1002 and
//! none of it reaches the upstream. Fragments are reassembled; each complete
//! message (and each ping, pong and close reason) is scanned *before* it is
//! forwarded, so nothing of a blocked message reaches the other side.
//! Messages are re-framed by the proxy (one frame per message), which RFC 6455
//! §5.4 allows an intermediary that negotiated no extension.
//!
//! Control frames: `tungstenite` answers pings itself, and the relay also
//! forwards them (scanned), so a peer may see two pongs per ping (unsolicited
//! pongs are allowed by RFC 6455 §5.5.3). A close frame is forwarded (its
//! reason scanned); the other side then gets a short grace period to answer
//! before both connections are dropped.
//!
//! Ends and close codes: a blocked message closes the client with 1008 and the
//! upstream with 1000; a message over `max_message` closes both with 1009; a
//! protocol error closes the side that made it with 1002 (1007 for a text
//! message that is not UTF-8, RFC 6455 §7.4.1) and the other with 1001; idle
//! timeout closes both with 1001; the byte cap with 1008. Close reasons name
//! the cause only (for blocks the deny code), never any payload.
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::WebSocketStream;
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::policy::Deny;

/// What a scanner returns to block a message: the proxy's own deny.
pub type Blocked = Deny;

/// How long a side gets to answer a close, and to take our close frame, before
/// its connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Read buffer per connection (tungstenite allocates it eagerly; it grows for
/// larger frames up to `max_message`).
const READ_BUFFER: usize = 16 * 1024;

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → upstream (sent by the agent in the bottle).
    Outbound,
    /// Upstream → client.
    Inbound,
}

impl Direction {
    fn sender(self) -> &'static str {
        match self {
            Direction::Outbound => "client",
            Direction::Inbound => "upstream",
        }
    }
}

/// Decides, message by message, whether a payload may cross the proxy.
///
/// Called with every complete (reassembled) text or binary message, every
/// ping and pong payload, and every non-empty close reason (`text` is true for
/// text messages and close reasons). Empty payloads are not scanned.
pub trait MessageScanner: Send + Sync {
    /// A client → upstream payload; `Err` blocks it and ends the relay.
    fn scan_outbound(&self, payload: &[u8], text: bool) -> Result<(), Blocked>;
    /// An upstream → client payload (e.g. the bottle's own secrets reflected
    /// back); `Err` blocks it and ends the relay.
    fn scan_inbound(&self, payload: &[u8], text: bool) -> Result<(), Blocked>;
}

/// A closure `(direction, payload, text)` is a scanner.
impl<F> MessageScanner for F
where
    F: Fn(Direction, &[u8], bool) -> Result<(), Blocked> + Send + Sync,
{
    fn scan_outbound(&self, payload: &[u8], text: bool) -> Result<(), Blocked> {
        self(Direction::Outbound, payload, text)
    }
    fn scan_inbound(&self, payload: &[u8], text: bool) -> Result<(), Blocked> {
        self(Direction::Inbound, payload, text)
    }
}

/// Limits of one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Largest message (after reassembly) and largest frame, in bytes; a larger
    /// one closes the relay with 1009 before it is forwarded.
    pub max_message: usize,
    /// The relay closes (1001) after this long without a message either way.
    pub idle: Duration,
    /// Payload bytes forwarded in both directions together (0 = unlimited);
    /// the message that would cross it is not forwarded and the relay closes
    /// with 1008.
    pub max_bytes: u64,
}

impl Default for RelayLimits {
    /// 16 MiB messages, 300 s idle, no byte cap.
    fn default() -> Self {
        RelayLimits {
            max_message: 16 * 1024 * 1024,
            idle: Duration::from_secs(300),
            max_bytes: 0,
        }
    }
}

/// Why a relay ended. A [`Direction`] names the side that caused it:
/// `Outbound` the client, `Inbound` the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// That side sent a close frame, which was forwarded (a clean end).
    Closed(Direction),
    /// That side's connection ended or failed without a close frame.
    Gone(Direction),
    /// The scanner blocked a message from that side (see [`RelayOutcome::blocked`]).
    Blocked(Direction),
    /// That side sent a message or frame over [`RelayLimits::max_message`] (1009).
    TooBig(Direction),
    /// That side broke the WebSocket protocol (1002, or 1007 for bad UTF-8).
    Protocol(Direction),
    /// No message for [`RelayLimits::idle`] (1001).
    Idle,
    /// [`RelayLimits::max_bytes`] would have been crossed (1008).
    ByteLimit,
}

/// What happened in one relay.
#[derive(Debug)]
pub struct RelayOutcome {
    /// Payload bytes forwarded client → upstream (data and control messages).
    pub up: u64,
    /// Payload bytes forwarded upstream → client.
    pub down: u64,
    /// Text/binary messages forwarded client → upstream.
    pub messages_up: u64,
    /// Text/binary messages forwarded upstream → client.
    pub messages_down: u64,
    /// The blocked message's direction and the scanner's deny, if one was blocked.
    pub blocked: Option<(Direction, Blocked)>,
    /// Protocol, size or I/O error that ended the relay (never payload text).
    pub error: Option<String>,
    /// Why the relay ended.
    pub end: End,
}

/// Relays WebSocket messages between an upgraded `client` connection (the
/// proxy plays the server) and an upgraded `upstream` connection (the proxy
/// plays the client), scanning each message before forwarding it. Both
/// handshakes must already be done and checked with
/// [`super::handshake`] (in particular, no extension negotiated). Both
/// directions run concurrently; returns once both connections are closed (or
/// shut down and dropped): at once with well-behaved peers, and at most
/// 3 × 2 s after the first side ends with peers that never answer a close.
/// The relay itself never panics; a panicking scanner is not caught.
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    scanner: Arc<dyn MessageScanner>,
    limits: RelayLimits,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message));
    let (mut c_tx, mut c_rx) = WebSocketStream::from_raw_socket(client, Role::Server, Some(config))
        .await
        .split();
    let (mut u_tx, mut u_rx) =
        WebSocketStream::from_raw_socket(upstream, Role::Client, Some(config))
            .await
            .split();
    let meter = Meter::new(limits.max_bytes);
    let scanner = &*scanner;

    let (dir, stop) = {
        let up = pump(Direction::Outbound, &mut c_rx, &mut u_tx, scanner, &meter);
        let down = pump(Direction::Inbound, &mut u_rx, &mut c_tx, scanner, &meter);
        let idle = meter.idle(limits.idle);
        tokio::pin!(up, down, idle);
        let (dir, stop) = tokio::select! {
            s = &mut up => (Some(Direction::Outbound), s),
            s = &mut down => (Some(Direction::Inbound), s),
            () = &mut idle => (None, Stop::Idle),
        };
        match (dir, stop) {
            // A close was forwarded: give the other side time to answer it.
            (Some(d), Stop::Closed) => {
                let other = match d {
                    Direction::Outbound => timeout(CLOSE_GRACE, &mut down).await,
                    Direction::Inbound => timeout(CLOSE_GRACE, &mut up).await,
                };
                match other {
                    Ok(s @ (Stop::Blocked(_) | Stop::TooBig(_) | Stop::Protocol(..))) => {
                        (Some(opposite(d)), s)
                    }
                    _ => (Some(meter.closer().unwrap_or(d)), Stop::Closed),
                }
            }
            other => other,
        }
    };

    let ending = classify_end(dir, stop);
    let (to_client, to_upstream) = close_frames(&ending);
    let _ = timeout(CLOSE_GRACE, async {
        tokio::join!(
            finish(&mut c_tx, &mut c_rx, to_client),
            finish(&mut u_tx, &mut u_rx, to_upstream),
        );
        let shut_client = async {
            if let Ok(ws) = c_tx.reunite(c_rx) {
                let _ = ws.into_inner().shutdown().await;
            }
        };
        let shut_upstream = async {
            if let Ok(ws) = u_tx.reunite(u_rx) {
                let _ = ws.into_inner().shutdown().await;
            }
        };
        tokio::join!(shut_client, shut_upstream);
    })
    .await;

    RelayOutcome {
        up: meter.bytes[0].load(Ordering::Relaxed),
        down: meter.bytes[1].load(Ordering::Relaxed),
        messages_up: meter.messages[0].load(Ordering::Relaxed),
        messages_down: meter.messages[1].load(Ordering::Relaxed),
        blocked: ending
            .blocked
            .map(|b| (dir.unwrap_or(Direction::Outbound), b)),
        error: ending.error,
        end: ending.end,
    }
}

fn opposite(d: Direction) -> Direction {
    match d {
        Direction::Outbound => Direction::Inbound,
        Direction::Inbound => Direction::Outbound,
    }
}

/// Why one direction's pump stopped.
enum Stop {
    /// The sender's close frame was forwarded.
    Closed,
    /// The sender's connection ended or failed (error text, if any).
    Gone(Option<String>),
    /// Writing to the receiving side failed: the receiver is gone.
    ReceiverGone(String),
    /// The scanner blocked a message.
    Blocked(Blocked),
    /// Over `max_message`.
    TooBig(String),
    /// Protocol violation, with the close code to send the sender.
    Protocol(String, CloseCode),
    /// The byte cap would be crossed.
    ByteLimit,
    /// Nothing either way for `idle`.
    Idle,
}

/// Forwards messages from `rx` (sent by `dir`'s sender) to `tx`, scanning each.
async fn pump<R, W>(
    dir: Direction,
    rx: &mut R,
    tx: &mut W,
    scanner: &dyn MessageScanner,
    meter: &Meter,
) -> Stop
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
    W: Sink<Message, Error = WsError> + Unpin,
{
    loop {
        let msg = match rx.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => return read_error(e),
            None => return Stop::Gone(None),
        };
        meter.touch();
        let (payload, text, data): (&[u8], bool, bool) = match &msg {
            Message::Text(t) => (t.as_bytes(), true, true),
            Message::Binary(b) => (b, false, true),
            Message::Ping(p) | Message::Pong(p) => (p, false, false),
            Message::Close(Some(f)) => (f.reason.as_bytes(), true, false),
            Message::Close(None) => (&[], true, false),
            // `read` never yields raw frames.
            Message::Frame(_) => continue,
        };
        if !payload.is_empty() {
            let verdict = match dir {
                Direction::Outbound => scanner.scan_outbound(payload, text),
                Direction::Inbound => scanner.scan_inbound(payload, text),
            };
            if let Err(b) = verdict {
                return Stop::Blocked(b);
            }
        }
        let len = payload.len() as u64;
        if !meter.admits(len) {
            return Stop::ByteLimit;
        }
        let close = matches!(msg, Message::Close(_));
        if close {
            meter.saw_close(dir);
        }
        match tx.send(msg).await {
            Ok(()) => meter.count(dir, len, data),
            // The receiver closed first; its own close is on its way.
            Err(_) if close => {}
            Err(e) => return Stop::ReceiverGone(e.to_string()),
        }
        if close {
            // Reading drives tungstenite's close reply to the sender out; anything
            // the sender still sends after its close is dropped, never forwarded.
            let _ = timeout(CLOSE_GRACE, async { while rx.next().await.is_some() {} }).await;
            return Stop::Closed;
        }
    }
}

fn read_error(e: WsError) -> Stop {
    match e {
        WsError::Capacity(c) => Stop::TooBig(c.to_string()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Stop::Gone(Some("connection closed without a close frame".into()))
        }
        WsError::Protocol(p) => Stop::Protocol(p.to_string(), CloseCode::Protocol),
        WsError::Utf8(_) => {
            Stop::Protocol("text message is not valid UTF-8".into(), CloseCode::Invalid)
        }
        WsError::AttackAttempt => Stop::Protocol(e.to_string(), CloseCode::Protocol),
        WsError::ConnectionClosed | WsError::AlreadyClosed => Stop::Gone(None),
        other => Stop::Gone(Some(other.to_string())),
    }
}

/// How a relay ends: what is reported and what the offending side is told.
struct Ending {
    end: End,
    blocked: Option<Blocked>,
    error: Option<String>,
    /// Close code for a protocol violation (1002, or 1007 for bad UTF-8).
    protocol_code: CloseCode,
}

fn classify_end(dir: Option<Direction>, stop: Stop) -> Ending {
    let mut e = Ending {
        end: End::Idle,
        blocked: None,
        error: None,
        protocol_code: CloseCode::Protocol,
    };
    let Some(d) = dir else {
        return e;
    };
    let who = d.sender();
    match stop {
        Stop::Closed => e.end = End::Closed(d),
        Stop::Gone(err) => {
            e.end = End::Gone(d);
            e.error = err.map(|err| format!("{who} connection: {err}"));
        }
        Stop::ReceiverGone(err) => {
            let o = opposite(d);
            e.end = End::Gone(o);
            e.error = Some(format!("{} connection: {err}", o.sender()));
        }
        Stop::Blocked(b) => {
            e.end = End::Blocked(d);
            e.blocked = Some(b);
        }
        Stop::TooBig(err) => {
            e.end = End::TooBig(d);
            e.error = Some(format!("{who} message: {err}"));
        }
        Stop::Protocol(err, code) => {
            e.end = End::Protocol(d);
            e.error = Some(format!("{who} protocol error: {err}"));
            e.protocol_code = code;
        }
        Stop::ByteLimit => e.end = End::ByteLimit,
        Stop::Idle => e.end = End::Idle,
    }
    e
}

/// The close frames (to the client, to the upstream) for an ending.
fn close_frames(e: &Ending) -> (Option<CloseFrame>, Option<CloseFrame>) {
    let frame = |code: CloseCode, reason: String| {
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })
    };
    let away = |why: &str| frame(CloseCode::Away, format!("bottle: {why}"));
    match e.end {
        End::Closed(_) => (None, None),
        End::Gone(Direction::Outbound) => (None, away("client went away")),
        End::Gone(Direction::Inbound) => (away("upstream went away"), None),
        End::Blocked(d) => {
            let code = e.blocked.as_ref().map_or("blocked", |b| b.reason.code());
            let what = match d {
                Direction::Outbound => "message",
                Direction::Inbound => "upstream message",
            };
            (
                frame(
                    CloseCode::Policy,
                    format!("bottle: {what} blocked ({code})"),
                ),
                frame(CloseCode::Normal, String::new()),
            )
        }
        End::TooBig(_) => {
            let f = frame(
                CloseCode::Size,
                "bottle: message over the size limit".into(),
            );
            (f.clone(), f)
        }
        End::Protocol(d) => {
            let offender = frame(e.protocol_code, "bottle: protocol error".into());
            match d {
                Direction::Outbound => (offender, away("client protocol error")),
                Direction::Inbound => (away("upstream protocol error"), offender),
            }
        }
        End::Idle => (away("idle timeout"), away("idle timeout")),
        End::ByteLimit => {
            let f = frame(CloseCode::Policy, "bottle: byte limit reached".into());
            (f.clone(), f)
        }
    }
}

/// Sends `close` (if any), then reads and drops whatever the peer still sends
/// until its connection ends (so our close is not lost to a reset).
async fn finish<W, R>(tx: &mut W, rx: &mut R, close: Option<CloseFrame>)
where
    W: Sink<Message, Error = WsError> + Unpin,
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    if let Some(f) = close {
        let _ = tx.send(Message::Close(Some(f))).await;
    }
    let _ = tx.flush().await;
    while let Some(Ok(_)) = rx.next().await {}
}

/// Byte and message counters, the byte cap and the idle clock of one relay.
struct Meter {
    start: Instant,
    /// Nanoseconds after `start` of the last message either way.
    last: AtomicU64,
    /// [outbound, inbound] payload bytes.
    bytes: [AtomicU64; 2],
    /// [outbound, inbound] data messages.
    messages: [AtomicU64; 2],
    /// Who sent the first close frame: 0 nobody, 1 client, 2 upstream.
    first_close: AtomicU8,
    max_bytes: u64,
}

impl Meter {
    fn new(max_bytes: u64) -> Self {
        Meter {
            start: Instant::now(),
            last: AtomicU64::new(0),
            bytes: Default::default(),
            messages: Default::default(),
            first_close: AtomicU8::new(0),
            max_bytes,
        }
    }

    fn touch(&self) {
        let ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(ns, Ordering::Relaxed);
    }

    fn saw_close(&self, dir: Direction) {
        let who = match dir {
            Direction::Outbound => 1,
            Direction::Inbound => 2,
        };
        let _ = self
            .first_close
            .compare_exchange(0, who, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The side that started the close handshake, if any.
    fn closer(&self) -> Option<Direction> {
        match self.first_close.load(Ordering::Relaxed) {
            1 => Some(Direction::Outbound),
            2 => Some(Direction::Inbound),
            _ => None,
        }
    }

    fn admits(&self, len: u64) -> bool {
        self.max_bytes == 0
            || self.bytes[0]
                .load(Ordering::Relaxed)
                .saturating_add(self.bytes[1].load(Ordering::Relaxed))
                .saturating_add(len)
                <= self.max_bytes
    }

    fn count(&self, dir: Direction, len: u64, data: bool) {
        let i = match dir {
            Direction::Outbound => 0,
            Direction::Inbound => 1,
        };
        self.bytes[i].fetch_add(len, Ordering::Relaxed);
        if data {
            self.messages[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Resolves once no message was seen for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let last = self.last.load(Ordering::Relaxed);
            let deadline = self
                .start
                .checked_add(Duration::from_nanos(last))
                .and_then(|t| t.checked_add(idle));
            match deadline {
                Some(t) => sleep_until(t).await,
                None => std::future::pending::<()>().await,
            }
            if self.last.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DenyReason;
    use tokio::io::{duplex, AsyncReadExt, DuplexStream};
    use tokio::task::JoinHandle;

    const NEEDLE: &str = "SECRET-NEEDLE";
    const IN_NEEDLE: &str = "INBOUND-SECRET";
    /// No test may take longer than this.
    const DEADLINE: Duration = Duration::from_secs(10);

    type Ws = WebSocketStream<DuplexStream>;

    fn scanner() -> Arc<dyn MessageScanner> {
        Arc::new(|dir: Direction, p: &[u8], _text: bool| {
            let needle = match dir {
                Direction::Outbound => NEEDLE,
                Direction::Inbound => IN_NEEDLE,
            };
            if p.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                Err(Deny::new(DenyReason::Dlp, "test rule matched").with_dlp("test-rule", None))
            } else {
                Ok(())
            }
        })
    }

    /// (raw client end, raw upstream end, relay task).
    fn rig(limits: RelayLimits) -> (DuplexStream, DuplexStream, JoinHandle<RelayOutcome>) {
        let (client, relay_client) = duplex(1 << 16);
        let (relay_upstream, upstream) = duplex(1 << 16);
        let task = tokio::spawn(relay(relay_client, relay_upstream, scanner(), limits));
        (client, upstream, task)
    }

    async fn ws(io: DuplexStream, role: Role) -> Ws {
        WebSocketStream::from_raw_socket(io, role, None).await
    }

    /// Reads everything a peer gets until its WebSocket ends (driving the
    /// close handshake), then shuts its connection.
    async fn drain(ws: &mut Ws) -> Vec<Message> {
        let mut seen = Vec::new();
        while let Some(Ok(m)) = timeout(DEADLINE, ws.next()).await.expect("peer hung") {
            seen.push(m);
        }
        // Like a real peer, close the connection once the close handshake is over.
        let _ = ws.get_mut().shutdown().await;
        seen
    }

    fn close_code(msgs: &[Message]) -> Option<u16> {
        msgs.iter().find_map(|m| match m {
            Message::Close(Some(f)) => Some(u16::from(f.code)),
            _ => None,
        })
    }

    fn close_reason(msgs: &[Message]) -> String {
        msgs.iter()
            .find_map(|m| match m {
                Message::Close(Some(f)) => Some(f.reason.to_string()),
                _ => None,
            })
            .unwrap_or_default()
    }

    fn data(msgs: &[Message]) -> Vec<&Message> {
        msgs.iter()
            .filter(|m| m.is_text() || m.is_binary() || m.is_ping())
            .collect()
    }

    /// A masked client frame with a short payload.
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        assert!(payload.len() < 126);
        let mut v = vec![first, 0x80 | payload.len() as u8];
        v.extend(key);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        v
    }

    /// Parses the (masked, short) frames a client-role peer sent: (first byte, payload).
    fn client_frames(mut raw: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !raw.is_empty() {
            assert!(raw.len() >= 6, "truncated frame {raw:?}");
            assert_eq!(raw[1] & 0x80, 0x80, "unmasked frame from the relay");
            let len = usize::from(raw[1] & 0x7f);
            assert!(
                len < 126 && raw.len() >= 6 + len,
                "unexpected frame {raw:?}"
            );
            let key = &raw[2..6];
            let payload = raw[6..6 + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            out.push((raw[0], payload));
            raw = &raw[6 + len..];
        }
        out
    }

    /// Sends raw bytes as the client; returns (what the client got, the raw
    /// bytes the upstream got, the outcome).
    async fn raw_client(bytes: &[u8]) -> (Vec<Message>, Vec<u8>, RelayOutcome) {
        let (mut client, mut upstream, task) = rig(RelayLimits::default());
        client.write_all(bytes).await.unwrap();
        let mut client = ws(client, Role::Client).await;
        let up_raw = async {
            let mut buf = Vec::new();
            let _ = timeout(DEADLINE, upstream.read_to_end(&mut buf)).await;
            buf
        };
        let (got, up_raw) = tokio::join!(drain(&mut client), up_raw);
        let outcome = timeout(DEADLINE, task).await.unwrap().unwrap();
        (got, up_raw, outcome)
    }

    /// The upstream got nothing but one close frame with `code`.
    fn only_close(up_raw: &[u8], code: u16) {
        let frames = client_frames(up_raw);
        assert_eq!(frames.len(), 1, "upstream got {frames:?}");
        assert_eq!(frames[0].0, 0x88, "upstream got {frames:?}");
        assert_eq!(
            frames[0].1[..2],
            code.to_be_bytes(),
            "upstream got {frames:?}"
        );
    }

    #[tokio::test]
    async fn echo_text_and_binary_both_ways() {
        let (client, upstream, task) = rig(RelayLimits::default());
        let (mut client, mut upstream) = (
            ws(client, Role::Client).await,
            ws(upstream, Role::Server).await,
        );
        timeout(DEADLINE, async {
            client.send(Message::text("hello")).await.unwrap();
            assert_eq!(
                upstream.next().await.unwrap().unwrap(),
                Message::text("hello")
            );
            upstream.send(Message::binary(vec![1, 2, 3])).await.unwrap();
            assert_eq!(
                client.next().await.unwrap().unwrap(),
                Message::binary(vec![1, 2, 3])
            );
            client
                .send(Message::Ping(b"p".to_vec().into()))
                .await
                .unwrap();
            assert_eq!(
                upstream.next().await.unwrap().unwrap(),
                Message::Ping(b"p".to_vec().into())
            );
            // The upstream's pong is forwarded, and the proxy answered the ping too.
            upstream.flush().await.unwrap();
            for _ in 0..2 {
                assert!(client.next().await.unwrap().unwrap().is_pong());
            }
            client
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                })))
                .await
                .unwrap();
            let (c, u) = tokio::join!(drain(&mut client), drain(&mut upstream));
            assert_eq!(close_code(&u), Some(1000));
            assert_eq!(close_reason(&u), "bye");
            assert_eq!(close_code(&c), Some(1000), "client got {c:?}");
            assert!(data(&c).is_empty(), "client got {c:?}");
        })
        .await
        .unwrap();
        let o = timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(o.end, End::Closed(Direction::Outbound));
        assert_eq!((o.messages_up, o.messages_down), (1, 1));
        assert_eq!((o.up, o.down), (5 + 1 + 3, 3 + 1));
        assert!(o.blocked.is_none() && o.error.is_none(), "{o:?}");
    }

    #[tokio::test]
    async fn upstream_close_is_forwarded_to_client() {
        let (client, upstream, task) = rig(RelayLimits::default());
        let (mut client, mut upstream) = (
            ws(client, Role::Client).await,
            ws(upstream, Role::Server).await,
        );
        upstream.send(Message::text("bye soon")).await.unwrap();
        upstream
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "restart".into(),
            })))
            .await
            .unwrap();
        let (c, _u) = tokio::join!(drain(&mut client), drain(&mut upstream));
        assert_eq!(c[0], Message::text("bye soon"));
        assert_eq!(close_code(&c), Some(1001));
        assert_eq!(close_reason(&c), "restart");
        let o = timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(o.end, End::Closed(Direction::Inbound));
    }

    #[tokio::test]
    async fn blocked_outbound_message_never_reaches_upstream() {
        let (client, upstream, task) = rig(RelayLimits::default());
        let (mut client, mut upstream) = (
            ws(client, Role::Client).await,
            ws(upstream, Role::Server).await,
        );
        client.send(Message::text("hello")).await.unwrap();
        client
            .send(Message::text(format!("token={NEEDLE}")))
            .await
            .unwrap();
        let _ = client.send(Message::text("after")).await;
        let (c, u) = tokio::join!(drain(&mut client), drain(&mut upstream));
        assert_eq!(data(&u), [&Message::text("hello")], "upstream got {u:?}");
        assert_eq!(close_code(&u), Some(1000));
        assert_eq!(close_code(&c), Some(1008), "client got {c:?}");
        let reason = close_reason(&c);
        assert!(
            reason.contains("dlp") && !reason.contains(NEEDLE),
            "{reason}"
        );
        let o = timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(o.end, End::Blocked(Direction::Outbound));
        let (dir, deny) = o.blocked.expect("blocked");
        assert_eq!(dir, Direction::Outbound);
        assert_eq!(deny.rule.as_deref(), Some("test-rule"));
        assert_eq!(o.messages_up, 1);
    }

    #[tokio::test]
    async fn secret_split_across_fragments_is_reassembled_and_blocked() {
        let (mut client, upstream, task) = rig(RelayLimits::default());
        let mut upstream = ws(upstream, Role::Server).await;
        let (a, b) = NEEDLE.split_at(6);
        // FIN=0 text, then FIN=1 continuation: neither half holds the needle.
        let mut raw = masked(0x01, format!("token={a}").as_bytes());
        raw.extend(masked(0x80, format!("{b} tail").as_bytes()));
        client.write_all(&raw).await.unwrap();
        let mut client = ws(client, Role::Client).await;
        let (c, u) = tokio::join!(drain(&mut client), drain(&mut upstream));
        assert!(data(&u).is_empty(), "upstream got {u:?}");
        assert_eq!(close_code(&u), Some(1000));
        assert_eq!(close_code(&c), Some(1008));
        let o = timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(o.end, End::Blocked(Direction::Outbound));
        assert_eq!(o.up, 0);
    }

    #[tokio::test]
    async fn fragments_without_secret_are_reassembled_and_forwarded() {
        let (mut client, upstream, _task) = rig(RelayLimits::default());
        let mut upstream = ws(upstream, Role::Server).await;
        let mut raw = masked(0x01, b"hel");
        raw.extend(masked(0x89, b"mid")); // a ping between fragments is allowed
        raw.extend(masked(0x80, b"lo"));
        client.write_all(&raw).await.unwrap();
        let got = timeout(DEADLINE, async {
            let mut got = Vec::new();
            while got.len() < 2 {
                got.push(upstream.next().await.unwrap().unwrap());
            }
            got
        })
        .await
        .unwrap();
        assert_eq!(
            got,
            [
                Message::Ping(b"mid".to_vec().into()),
                Message::text("hello")
            ]
        );
    }

    #[tokio::test]
    async fn raw_http_after_upgrade_never_reaches_upstream() {
        let (c, up_raw, o) = raw_client(b"DELETE /private HTTP/1.1\r\nHost: evil\r\n\r\n").await;
        only_close(&up_raw, 1001);
        assert_eq!(close_code(&c), Some(1002), "client got {c:?}");
        assert_eq!(o.end, End::Protocol(Direction::Outbound));
        assert!(o.error.unwrap().starts_with("client protocol error"));
        assert_eq!(o.up, 0);
    }

    #[tokio::test]
    async fn rsv1_compressed_frame_is_refused() {
        let (c, up_raw, o) = raw_client(&masked(0xC1, b"hello")).await;
        only_close(&up_raw, 1001);
        assert_eq!(close_code(&c), Some(1002));
        assert!(o.error.unwrap().contains("Reserved bits"));
    }

    #[tokio::test]
    async fn unmasked_client_frame_is_refused() {
        let (c, up_raw, o) = raw_client(b"\x81\x05hello").await;
        only_close(&up_raw, 1001);
        assert_eq!(close_code(&c), Some(1002));
        assert!(o.error.unwrap().contains("unmasked"));
    }

    #[tokio::test]
    async fn fragmented_control_frame_is_refused() {
        let (c, up_raw, o) = raw_client(&masked(0x09, b"x")).await;
        only_close(&up_raw, 1001);
        assert_eq!(close_code(&c), Some(1002));
        assert!(o.error.unwrap().contains("Fragmented control frame"));
    }

    #[tokio::test]
    async fn invalid_utf8_text_closes_1007() {
        let (c, up_raw, o) = raw_client(&masked(0x81, b"ok\xff\xfe")).await;
        only_close(&up_raw, 1001);
        assert_eq!(close_code(&c), Some(1007));
        assert_eq!(o.end, End::Protocol(Direction::Outbound));
    }

    #[tokio::test]
    async fn masked_upstream_frame_is_refused() {
        let (client, mut upstream, task) = rig(RelayLimits::default());
        let mut client = ws(client, Role::Client).await;
        // Servers must not mask (RFC 6455 §5.1).
        upstream.write_all(&masked(0x81, b"hello")).await.unwrap();
        let mut upstream = ws(upstream, Role::Server).await;
        let (c, u) = tokio::join!(drain(&mut client), drain(&mut upstream));
        assert!(data(&c).is_empty(), "client got {c:?}");
        assert_eq!(close_code(&c), Some(1001));
        assert_eq!(close_reason(&c), "bottle: upstream protocol error");
        assert_eq!(close_code(&u), Some(1002));
        let o = timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(o.end, End::Protocol(Direction::Inbound));
        assert!(o.error.unwrap().starts_with("upstream protocol error"));
    }

    #[tokio::test]
    async fn scanner_is_told_text_from_binary() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let scanner: Arc<dyn MessageScanner> =
            Arc::new(move |dir: Direction, p: &[u8], text: bool| {
                log.lock().unwrap().push((dir, p.to_vec(), text));
                Ok(())
            });
        let (client, relay_client) = duplex(1 << 16);
        let (relay_upstream, upstream) = duplex(1 << 16);
        let task = tokio::spawn(relay(
            relay_client,
            relay_upstream,
            scanner,
            RelayLimits::default(),
        ));
        let (mut client, mut upstream) = (
            ws(client, Role::Client).await,
            ws(upstream, Role::Server).await,
        );
        client.send(Message::text("t")).await.unwrap();
        upstream.next().await.unwrap().unwrap();
        upstream.send(Message::binary(vec![9])).await.unwrap();
        client.next().await.unwrap().unwrap();
        client.close(None).await.unwrap();
        tokio::join!(drain(&mut client), drain(&mut upstream));
        timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (Direction::Outbound, b"t".to_vec(), true),
                (Direction::Inbound, vec![9], false),
            ]
        );
    }

    #[tokio::test]
    async fn oversize_message_closes_1009() {
        let limits = RelayLimits {
            max_message: 1024,
            ..RelayLimits::default()
        };
        for fragmented in [false, true] {
            let (mut client, upstream, task) = rig(limits);
            let mut upstream = ws(upstream, Role::Server).await;
            if fragmented {
                // Two 100-byte... frames are short; use many small fragments.
                let mut raw = masked(0x02, &[7; 100]);
                for _ in 0..11 {
                    raw.extend(masked(0x00, &[7; 100]));
                }
                raw.extend(masked(0x80, &[7; 1]));
                client.write_all(&raw).await.unwrap();
            }
            let mut client = ws(client, Role::Client).await;
            if !fragmented {
                client.send(Message::binary(vec![7; 2000])).await.unwrap();
            }
            let (c, u) = tokio::join!(drain(&mut client), drain(&mut upstream));
            assert!(data(&u).is_empty(), "upstream got {u:?}");
            assert_eq!(close_code(&u), Some(1009));
            assert_eq!(close_code(&c), Some(1009));
            let o = timeout(DEADLINE, task).await.unwrap().unwrap();
            assert_eq!(
                o.end,
                End::TooBig(Direction::Outbound),
                "fragmented: {fragmented}"
            );
        }
    }

    #[tokio::test]
    async fn inbound_block_closes_client_1008() {
        let (client, upstream, task) = rig(RelayLimits::default());
        let (mut client, mut upstream) = (
            ws(client, Role::Client).await,
            ws(upstream, Role::Server).await,
        );
        upstream
            .send(Message::text(format!("here: {IN_NEEDLE}")))
            .await
            .unwrap();
        let (c, u) = tokio::join!(drain(&mut client), drain(&mut upstream));
        assert!(data(&c).is_empty(), "client got {c:?}");
        assert_eq!(close_code(&c), Some(1008));
        assert!(!close_reason(&c).contains(IN_NEEDLE));
        assert_eq!(close_code(&u), Some(1000));
        let o = timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(o.end, End::Blocked(Direction::Inbound));
        assert_eq!(o.blocked.map(|b| b.0), Some(Direction::Inbound));
        assert_eq!(o.down, 0);
    }

    #[tokio::test]
    async fn ping_and_close_reason_are_scanned() {
        for msg in [
            Message::Ping(NEEDLE.as_bytes().to_vec().into()),
            Message::Pong(NEEDLE.as_bytes().to_vec().into()),
            Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: NEEDLE.into(),
            })),
        ] {
            let (client, upstream, task) = rig(RelayLimits::default());
            let (mut client, mut upstream) = (
                ws(client, Role::Client).await,
                ws(upstream, Role::Server).await,
            );
            client.send(msg.clone()).await.unwrap();
            let (c, u) = tokio::join!(drain(&mut client), drain(&mut upstream));
            assert_eq!(u.len(), 1, "{msg:?}: upstream got {u:?}");
            assert_eq!(close_code(&u), Some(1000), "{msg:?}");
            assert!(!close_reason(&u).contains(NEEDLE));
            if msg.is_close() {
                // tungstenite has already echoed the client's own close back to it.
                assert_eq!(c, std::slice::from_ref(&msg), "client got {c:?}");
            } else {
                assert_eq!(close_code(&c), Some(1008), "{msg:?}: client got {c:?}");
            }
            let o = timeout(DEADLINE, task).await.unwrap().unwrap();
            assert_eq!(o.end, End::Blocked(Direction::Outbound), "{msg:?}");
        }
    }

    #[tokio::test]
    async fn byte_cap_closes_before_crossing() {
        let limits = RelayLimits {
            max_bytes: 10,
            ..RelayLimits::default()
        };
        let (client, upstream, task) = rig(limits);
        let (mut client, mut upstream) = (
            ws(client, Role::Client).await,
            ws(upstream, Role::Server).await,
        );
        client.send(Message::text("123456")).await.unwrap();
        client.send(Message::text("abcdef")).await.unwrap();
        let (c, u) = tokio::join!(drain(&mut client), drain(&mut upstream));
        assert_eq!(data(&u), [&Message::text("123456")]);
        assert_eq!(close_code(&u), Some(1008));
        assert_eq!(close_code(&c), Some(1008));
        let o = timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(o.end, End::ByteLimit);
        assert_eq!(o.up, 6);
    }

    #[tokio::test]
    async fn idle_timeout_closes_both_1001() {
        let limits = RelayLimits {
            idle: Duration::from_millis(300),
            ..RelayLimits::default()
        };
        let (client, upstream, task) = rig(limits);
        let (mut client, mut upstream) = (
            ws(client, Role::Client).await,
            ws(upstream, Role::Server).await,
        );
        let start = Instant::now();
        // Traffic keeps it open past one idle period.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.send(Message::text("tick")).await.unwrap();
            upstream.next().await.unwrap().unwrap();
        }
        let (c, u) = tokio::join!(drain(&mut client), drain(&mut upstream));
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
        assert_eq!(close_code(&c), Some(1001));
        assert_eq!(close_code(&u), Some(1001));
        let o = timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(o.end, End::Idle);
        assert_eq!(o.messages_up, 3);
    }

    #[tokio::test]
    async fn upstream_vanishing_ends_relay_promptly() {
        let (client, upstream, task) = rig(RelayLimits::default());
        let mut client = ws(client, Role::Client).await;
        drop(upstream);
        let start = Instant::now();
        let c = drain(&mut client).await;
        assert_eq!(close_code(&c), Some(1001));
        let o = timeout(DEADLINE, task).await.unwrap().unwrap();
        assert!(start.elapsed() < Duration::from_secs(4));
        assert_eq!(o.end, End::Gone(Direction::Inbound));
    }

    #[tokio::test]
    async fn client_vanishing_ends_relay_promptly() {
        let (client, upstream, task) = rig(RelayLimits::default());
        let mut upstream = ws(upstream, Role::Server).await;
        drop(client);
        let u = drain(&mut upstream).await;
        assert_eq!(close_code(&u), Some(1001));
        let o = timeout(DEADLINE, task).await.unwrap().unwrap();
        assert_eq!(o.end, End::Gone(Direction::Outbound));
    }

    #[test]
    fn relay_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (a, b) = duplex(64);
        let fut = relay(a, b, scanner(), RelayLimits::default());
        assert_send(&fut);
    }
}
