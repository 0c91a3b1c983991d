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
use std::sync::atomic::{AtomicU64, Ordering};
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
/// directions run concurrently; returns once both connections are closed or
/// dropped, at most about 2 s after the first side ends. Never panics.
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
                    _ => (Some(d), Stop::Closed),
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
    max_bytes: u64,
}

impl Meter {
    fn new(max_bytes: u64) -> Self {
        Meter {
            start: Instant::now(),
            last: AtomicU64::new(0),
            bytes: Default::default(),
            messages: Default::default(),
            max_bytes,
        }
    }

    fn touch(&self) {
        let ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(ns, Ordering::Relaxed);
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
