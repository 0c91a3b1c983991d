//! The WebSocket echo scenario: N connections, each `CONNECT` (when proxied) + TLS + an
//! RFC 6455 upgrade, then one text message of `size` bytes at a time sent and its echo
//! awaited (ping-pong) until the deadline.
//!
//! A record's `requests` are completed round trips (message out, echo back), `rps` is
//! messages/s, `bytes` / `mb_per_s` count the echoed payload received (one direction; a
//! proxy relays twice that), `p50_us` / `p99_us` the round-trip latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes};

use crate::client::Target;
use crate::load::{record_from, Record, Stats};

/// Largest `101` response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Runs `conns` echo connections for `secs` seconds with `payload` as every message.
pub async fn run(target: Arc<Target>, conns: usize, secs: f64, payload: String) -> Result<Record> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let payload = Utf8Bytes::from(payload);
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let target = target.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new();
            while Instant::now() < deadline {
                if let Err(e) = session(&target, deadline, &payload, &mut stats).await {
                    stats.err(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            stats
        }));
    }
    let mut total = Stats::new();
    for t in tasks {
        total.merge(t.await.context("worker task panicked")?);
    }
    Ok(record_from(total, conns, start.elapsed().as_secs_f64()))
}

/// One connection: upgrade, then ping-pong until the deadline, then a clean close.
async fn session(
    target: &Target,
    deadline: Instant,
    payload: &Utf8Bytes,
    stats: &mut Stats,
) -> Result<()> {
    let mut tls = target.connect().await?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path(),
        target.authority()
    );
    tls.write_all(req.as_bytes())
        .await
        .context("writing upgrade")?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let extra = loop {
        let n = tls.read(&mut chunk).await.context("reading 101")?;
        if n == 0 {
            bail!("connection closed before the upgrade response");
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let extra = head.len() - (p + 4);
            head.truncate(p + 4);
            break extra;
        }
        if head.len() > MAX_HEAD {
            bail!("upgrade response head over {MAX_HEAD} bytes");
        }
    };
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default().to_owned();
    if status.split_whitespace().nth(1) != Some("101") {
        let deny = text
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("x-bottle-deny:"))
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        bail!("upgrade refused: {status}{deny}");
    }
    if extra != 0 {
        bail!("{extra} bytes after the 101 response head ({status})");
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let mut ws = WebSocketStream::from_raw_socket(tls, Role::Client, Some(config)).await;
    let want = payload.len();
    while Instant::now() < deadline {
        let t0 = Instant::now();
        ws.send(Message::Text(payload.clone()))
            .await
            .context("sending message")?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.len() == want => break,
                Some(Ok(Message::Binary(b))) if b.len() == want => break,
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    bail!("echo of a different length")
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(anyhow!(
                        "closed by the peer: {}",
                        f.map(|f| format!("{} {}", u16::from(f.code), f.reason))
                            .unwrap_or_default()
                    ))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow!("reading echo: {e}")),
                None => bail!("connection ended"),
            }
        }
        stats.ok(t0.elapsed(), want as u64);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}
