//! Fuzz the WebSocket relay: arbitrary bytes sent by the client of an upgraded
//! connection must never panic or hang the relay, and no message, ping, pong
//! or close reason holding the scanner's needle may reach the upstream.
//!
//! First byte: bit 0 set = deliver the rest in chunks of `(byte >> 1) % 16 + 1`
//! bytes (partial frames), else in one write. Time is paused (tokio test-util),
//! so the relay's idle and close-grace timers cost no wall-clock time.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use bottle_proxy::policy::{Deny, DenyReason};
use bottle_proxy::websocket::{relay, Direction, RelayLimits};
use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const NEEDLE: &[u8] = b"SECRET-NEEDLE";

fn has_needle(p: &[u8]) -> bool {
    p.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, relay_client) = tokio::io::duplex(4096);
        let (relay_upstream, upstream) = tokio::io::duplex(4096);
        let scanner = Arc::new(|_: Direction, p: &[u8], _: bool| {
            if has_needle(p) {
                Err(Deny::new(DenyReason::Dlp, "needle"))
            } else {
                Ok(())
            }
        });
        let limits = RelayLimits {
            max_message: 2048,
            idle: Duration::from_millis(100),
            max_bytes: 16 * 1024,
        };
        let run = relay(relay_client, relay_upstream, scanner, limits);
        let feed = async move {
            if sel & 1 == 1 {
                let n = usize::from(sel >> 1) % 16 + 1;
                for chunk in input.chunks(n) {
                    if client.write_all(chunk).await.is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            } else {
                let _ = client.write_all(input).await;
            }
            let _ = client.shutdown().await;
            let mut buf = [0u8; 4096];
            while let Ok(n) = client.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        // The upstream reads and discards, checking nothing with the needle arrives.
        let upstream = async move {
            let mut ws = WebSocketStream::from_raw_socket(upstream, Role::Server, None).await;
            while let Some(Ok(m)) = ws.next().await {
                let payload: &[u8] = match &m {
                    Message::Text(t) => t.as_bytes(),
                    Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
                    Message::Close(Some(f)) => f.reason.as_bytes(),
                    _ => &[],
                };
                assert!(
                    !has_needle(payload),
                    "the needle reached the upstream: {m:?}"
                );
            }
        };
        tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(run, feed, upstream)
        })
        .await
        .expect("the relay hung");
    });
});
