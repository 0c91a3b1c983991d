//! The launcher's open line to its sidecar, kept for the bottle's life: the sidecar's stdin
//! (its *lifeline*: closing it, or the launcher dying, stops the sidecar) and its stdout
//! (audit records, counted as they arrive).
//!
//! [`lifeline::SYNC`] on the lifeline makes the sidecar flush its audit log and answer
//! [`Event::AuditSynced`], so a run's summary includes the records of its last requests. The
//! line formats are `bottle_protocol`'s, shared with the sidecar.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bottle_protocol::events::{Event, Line};
use bottle_protocol::lifeline;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::audit::AuditSummary;
use super::bottle::AttachedOutput;

/// The sidecar's stdin, held open for the bottle's life.
pub type Lifeline = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// The lifeline plus the audit counts read from the sidecar's attached stdout.
pub struct SidecarLink {
    stdin: tokio::sync::Mutex<Option<Lifeline>>,
    audit: Arc<Mutex<AuditSummary>>,
    /// How many [`Event::AuditSynced`]s have arrived.
    synced: watch::Receiver<u64>,
    synced_tx: Arc<watch::Sender<u64>>,
}

impl Default for SidecarLink {
    fn default() -> Self {
        let (tx, rx) = watch::channel(0);
        SidecarLink {
            stdin: tokio::sync::Mutex::new(None),
            audit: Arc::default(),
            synced: rx,
            synced_tx: Arc::new(tx),
        }
    }
}

impl SidecarLink {
    /// Takes over the sidecar's stdin and its stdout (after the ready line): the stdout is read
    /// to its end in a task (an unread attachment would stall the sidecar once its buffer is
    /// full), each line counted into the audit summary.
    pub async fn hold(&self, stdin: Lifeline, mut stdout: AttachedOutput) {
        *self.stdin.lock().await = Some(stdin);
        let audit = self.audit.clone();
        let synced = self.synced_tx.clone();
        tokio::spawn(async move {
            let mut line: Vec<u8> = Vec::new();
            while let Some(Ok(frame)) = stdout.next().await {
                if !matches!(frame, bollard::container::LogOutput::StdOut { .. }) {
                    continue;
                }
                for &b in frame.into_bytes().iter() {
                    if b != b'\n' {
                        line.push(b);
                        continue;
                    }
                    let text = String::from_utf8_lossy(&line);
                    if !text.trim().is_empty() {
                        let parsed = Line::parse(&text);
                        if parsed == Line::Event(Event::AuditSynced) {
                            synced.send_modify(|n| *n += 1);
                        } else if let Ok(mut a) = audit.lock() {
                            a.add(&parsed);
                        }
                    }
                    line.clear();
                }
            }
        });
    }

    /// Asks the sidecar to flush its audit log and returns the counts once its answer arrived;
    /// `None` when there is no lifeline or no answer within `timeout`.
    pub async fn sync_audit(&self, timeout: Duration) -> Option<AuditSummary> {
        let mut synced = self.synced.clone();
        let before = *synced.borrow_and_update();
        {
            let mut stdin = self.stdin.lock().await;
            let w = stdin.as_mut()?;
            w.write_all(format!("{}\n", lifeline::SYNC).as_bytes())
                .await
                .ok()?;
            w.flush().await.ok()?;
        }
        tokio::time::timeout(timeout, synced.wait_for(|n| *n > before))
            .await
            .ok()?
            .ok()?;
        self.audit.lock().ok().map(|a| a.clone())
    }

    /// Closes the sidecar's stdin: it stops on its own (its secrets gone with the process),
    /// without waiting for the engine. (Dropping the writer is not enough while the output
    /// half of the same connection is still read: the write side must be shut down.)
    pub async fn cut(&self) {
        if let Some(mut stdin) = self.stdin.lock().await.take() {
            let _ = stdin.shutdown().await;
        }
    }
}
