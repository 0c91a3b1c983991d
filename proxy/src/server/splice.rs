//! Byte splicing for passthrough tunnels and upgraded (WebSocket) connections, with an
//! idle timeout and a byte limit, plus an idle watchdog for whole connections.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Last-activity clock shared between an I/O wrapper and its watchdog.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    /// A clock starting now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Runs `fut` until it completes or no I/O was seen on `act` for `idle`. Returns `None` on
/// idle timeout (the future is dropped, closing its connection).
pub async fn with_idle_timeout<F: Future>(
    fut: F,
    act: Arc<Activity>,
    idle: Duration,
) -> Option<F::Output> {
    tokio::pin!(fut);
    let watchdog = async {
        loop {
            let quiet = act.idle_for();
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        out = &mut fut => Some(out),
        _ = watchdog => None,
    }
}

pin_project_lite::pin_project! {
    /// Marks activity on every successful read or write and counts bytes read; fails reads
    /// once the shared byte budget is exhausted.
    pub struct Watched<T> {
        #[pin]
        io: T,
        act: Arc<Activity>,
        read_bytes: Arc<AtomicU64>,
        budget: Option<Arc<AtomicU64>>,
    }
}

impl<T> Watched<T> {
    /// Wraps `io`; bytes read are added to `read_bytes`; `budget` (remaining bytes for both
    /// directions together) is decremented by reads and exhausts into an error.
    pub fn new(
        io: T,
        act: Arc<Activity>,
        read_bytes: Arc<AtomicU64>,
        budget: Option<Arc<AtomicU64>>,
    ) -> Self {
        Watched {
            io,
            act,
            read_bytes,
            budget,
        }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.io.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let n = (buf.filled().len() - before) as u64;
            if n > 0 {
                this.act.touch();
                this.read_bytes.fetch_add(n, Ordering::Relaxed);
                if let Some(b) = this.budget {
                    let prev = b.fetch_sub(n.min(b.load(Ordering::Relaxed)), Ordering::Relaxed);
                    if prev < n {
                        return Poll::Ready(Err(io::Error::other(
                            "tunnel byte limit (settings.max_tunnel_bytes) reached",
                        )));
                    }
                }
            }
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            if *n > 0 {
                this.act.touch();
            }
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &res {
            if *n > 0 {
                this.act.touch();
            }
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The result of a splice.
#[derive(Debug, Clone, Default)]
pub struct SpliceOutcome {
    /// Bytes client → upstream.
    pub up: u64,
    /// Bytes upstream → client.
    pub down: u64,
    /// Why it ended abnormally (idle timeout, byte limit, I/O error), if it did.
    pub error: Option<String>,
}

/// Copies bytes both ways between `client` and `upstream` until both sides close, no byte
/// moves for `idle`, or more than `max_bytes` (0 = unlimited) moved in total.
pub async fn splice<A, B>(client: A, upstream: B, idle: Duration, max_bytes: u64) -> SpliceOutcome
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let act = Activity::new();
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let budget = (max_bytes > 0).then(|| Arc::new(AtomicU64::new(max_bytes)));
    let mut a = Watched::new(client, act.clone(), up.clone(), budget.clone());
    let mut b = Watched::new(upstream, act.clone(), down.clone(), budget);
    let res = with_idle_timeout(
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, 64 * 1024, 64 * 1024),
        act,
        idle,
    )
    .await;
    let error = match res {
        None => Some(format!(
            "idle for {} (settings.idle_timeout_ms)",
            crate::connector::fmt_duration(idle)
        )),
        Some(Ok(_)) => None,
        Some(Err(e)) => Some(e.to_string()),
    };
    SpliceOutcome {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn splices_and_counts() {
        let (mut c, c2) = tokio::io::duplex(1024);
        let (u2, mut u) = tokio::io::duplex(1024);
        let t = tokio::spawn(splice(c2, u2, Duration::from_secs(5), 0));
        c.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        u.read_exact(&mut buf).await.unwrap();
        u.write_all(b"world!").await.unwrap();
        let mut buf2 = [0u8; 6];
        c.read_exact(&mut buf2).await.unwrap();
        drop(c);
        drop(u);
        let out = t.await.unwrap();
        assert_eq!((out.up, out.down), (5, 6));
    }

    #[tokio::test]
    async fn idle_timeout_ends_splice() {
        let (_c, c2) = tokio::io::duplex(1024);
        let (u2, _u) = tokio::io::duplex(1024);
        let out = splice(c2, u2, Duration::from_millis(100), 0).await;
        assert!(out.error.unwrap().contains("idle"));
    }

    #[tokio::test]
    async fn byte_limit_ends_splice() {
        let (mut c, c2) = tokio::io::duplex(1 << 16);
        let (u2, mut u) = tokio::io::duplex(1 << 16);
        let t = tokio::spawn(splice(c2, u2, Duration::from_secs(5), 1000));
        let _ = c.write_all(&[0u8; 4000]).await;
        let mut sink = Vec::new();
        let _ = u.read_to_end(&mut sink).await;
        let out = t.await.unwrap();
        assert!(out.error.unwrap().contains("max_tunnel_bytes"));
        assert!(sink.len() <= 1000);
    }
}
