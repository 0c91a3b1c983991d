//! Audit records: one JSON line per decision, written by a background task.
//!
//! The hot path only does a non-blocking `try_send` on a bounded channel; a writer task
//! wakes periodically, serialises the queued records and writes them in one batch. If the writer
//! cannot keep up, records are dropped and counted rather than stalling traffic. Records
//! never carry header values, bodies or query values (see [`crate::canon::redact_query`]).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use time::format_description::FormatItem;
use time::macros::format_description;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};

/// Records waiting for the writer before new ones are dropped.
const QUEUE: usize = 64 * 1024;

/// How often the writer drains the queue and writes a batch.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

const TS_FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Forwarded.
    Allow,
    /// Refused.
    Deny,
}

/// One audit line (see docs/design.md, "Audit record").
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// UTC timestamp, RFC 3339 with milliseconds.
    pub ts: String,
    /// Request method (`CONNECT` for tunnels).
    pub method: String,
    /// Canonical target host (as decided, never the client's `Host`).
    pub host: String,
    /// Target port.
    pub port: u16,
    /// Path with query values dropped (`/a?x=&y=`); empty for CONNECT.
    pub path: String,
    /// Route id, if a route was selected.
    pub route: Option<String>,
    /// allow / deny.
    pub decision: Decision,
    /// `ok` or the deny code.
    pub reason: &'static str,
    /// DLP rule id, when DLP decided.
    pub rule: Option<String>,
    /// Where DLP found the secret (`query:NAME`, `header:NAME`, JSON path, …); never a value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Request body bytes forwarded upstream (tunnel: client → upstream).
    pub bytes_up: u64,
    /// Response body bytes returned (tunnel: upstream → client).
    pub bytes_down: u64,
    /// Milliseconds from the request to the end of the response.
    pub duration_ms: u64,
    /// Who asked, when the proxy serves more than the agent: `model:<name>` for a model
    /// sidecar's own routes (absent = the agent). Set by [`AuditLog::for_client`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Arc<str>>,
}

impl AuditRecord {
    /// A deny decided before any request was read (no method, target or route): a malformed
    /// request head, or a connection refused for who made it.
    pub fn deny_unread(reason: &'static str, client: Option<Arc<str>>) -> AuditRecord {
        AuditRecord {
            ts: timestamp(),
            method: String::new(),
            host: String::new(),
            port: 0,
            path: String::new(),
            route: None,
            decision: Decision::Deny,
            reason,
            rule: None,
            location: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            client,
        }
    }
}

/// The current time in the audit format.
pub fn timestamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(TS_FORMAT)
        .unwrap_or_default()
}

/// What the writer task receives, in order.
// Records are the hot, common case; boxing them to shrink the rare `Sync` would allocate per
// request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Entry {
    /// A record to write.
    Record(AuditRecord),
    /// Answered once everything queued before it is written and flushed.
    Sync(oneshot::Sender<()>),
}

/// Handle to the audit writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Entry>>,
    dropped: Arc<AtomicU64>,
    /// Wakes the writer before its next tick (for [`AuditLog::sync`]).
    wake: Arc<Notify>,
    /// Stamped on every record as [`AuditRecord::client`].
    client: Option<Arc<str>>,
}

impl AuditLog {
    /// An audit log that discards every record.
    pub fn disabled() -> Self {
        AuditLog {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            wake: Arc::new(Notify::new()),
            client: None,
        }
    }

    /// The same log (same writer, queue and counters) stamping `client` on every record
    /// (e.g. `model:coder`), so several proxies can share one ordered audit stream.
    pub fn for_client(&self, client: &str) -> Self {
        AuditLog {
            client: Some(Arc::from(client)),
            ..self.clone()
        }
    }

    /// Starts a writer task writing JSON lines to `writer`. Must be called within a Tokio
    /// runtime. The task wakes every [`FLUSH_EVERY`], drains the queue and writes the batch
    /// with one write + flush, so the hot path never wakes a thread per record.
    pub fn spawn<W>(writer: W) -> Self
    where
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Entry>(QUEUE);
        let wake = Arc::new(Notify::new());
        let woken = wake.clone();
        tokio::spawn(async move {
            let mut w = writer;
            let mut batch = Vec::with_capacity(64 * 1024);
            let mut synced: Vec<oneshot::Sender<()>> = Vec::new();
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut open = true;
            while open {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = woken.notified() => {}
                }
                loop {
                    match rx.try_recv() {
                        Ok(Entry::Record(rec)) => {
                            if serde_json::to_writer(&mut batch, &rec).is_ok() {
                                batch.push(b'\n');
                            }
                        }
                        Ok(Entry::Sync(done)) => synced.push(done),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                if !batch.is_empty() {
                    if let Err(e) = w.write_all(&batch).await {
                        tracing::error!(error = %e, "audit write failed");
                    }
                    if let Err(e) = w.flush().await {
                        tracing::error!(error = %e, "audit flush failed");
                    }
                    batch.clear();
                    if batch.capacity() > 1 << 20 {
                        batch.shrink_to(64 * 1024);
                    }
                }
                for done in synced.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        AuditLog {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
            wake,
            client: None,
        }
    }

    /// Returns once every record queued before this call is written and flushed (at once, not
    /// at the next tick). For a launcher that reads the audit stream and must not miss the
    /// last records of a run.
    pub async fn sync(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, written) = oneshot::channel();
        if tx.send(Entry::Sync(done)).await.is_err() {
            return;
        }
        self.wake.notify_one();
        let _ = written.await;
    }

    /// Queues a record without blocking (dropped and counted if the writer is behind).
    pub fn record(&self, mut rec: AuditRecord) {
        if let Some(tx) = &self.tx {
            if rec.client.is_none() {
                rec.client.clone_from(&self.client);
            }
            if tx.try_send(Entry::Record(rec)).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Number of records dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_format() {
        let ts = timestamp();
        assert_eq!(ts.len(), "2026-11-23T14:00:00.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    fn record(i: u64) -> AuditRecord {
        AuditRecord {
            ts: timestamp(),
            method: "GET".into(),
            host: "a.test".into(),
            port: 443,
            path: "/x?q=".into(),
            route: Some("a".into()),
            decision: Decision::Allow,
            reason: "ok",
            rule: None,
            location: None,
            bytes_up: i,
            bytes_down: 0,
            duration_ms: 1,
            client: None,
        }
    }

    #[tokio::test]
    async fn sync_returns_once_earlier_records_are_written() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let log = AuditLog::spawn(client);
        // Let the first tick pass, so only `sync` can make the writer write early.
        tokio::time::sleep(FLUSH_EVERY / 2).await;
        for i in 0..5 {
            log.record(record(i));
        }
        let t = std::time::Instant::now();
        log.sync().await;
        assert!(t.elapsed() < FLUSH_EVERY, "sync waited for the tick");
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = String::new();
        while got.lines().count() < 5 {
            let n = tokio::io::AsyncReadExt::read(&mut server, &mut buf)
                .await
                .unwrap();
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        assert_eq!(got.lines().count(), 5, "{got}");
        AuditLog::disabled().sync().await;
    }

    #[tokio::test]
    async fn writes_one_json_line_per_record() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let log = AuditLog::spawn(client);
        for i in 0..3 {
            log.record(record(i));
        }
        drop(log);
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut server, &mut out)
            .await
            .unwrap();
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let v: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["bytes_up"], 2);
        assert_eq!(v["route"], "a");
    }
}
