//! Request framing the HTTP/1 parser hides. A request with both `Content-Length` and
//! `Transfer-Encoding` is a request-smuggling vector; hyper accepts it (it drops
//! `Content-Length` and reads the body as chunked), so by the time a handler runs, the
//! evidence is gone. [`Watch`] reads along with hyper on the client side of an HTTP/1
//! connection, follows the framing of each request (head, then a `Content-Length` or chunked
//! body) and queues one [`Verdict`] per request head, in order; the handler of the n-th
//! request takes the n-th verdict and refuses a bad one (400 `bad_request`).
//!
//! Tracking stops (every later verdict is "fine") at an HTTP/2 preface, a `CONNECT`, an
//! `Upgrade` request, or anything it cannot follow; hyper's own checks still apply there.
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the framing of one request head said.
pub(crate) type Verdict = Option<&'static str>;

/// The verdict queue shared by a [`Watch`] and its connection's handler.
#[derive(Clone, Default)]
pub(crate) struct Verdicts(Arc<Mutex<VecDeque<Verdict>>>);

impl Verdicts {
    /// The next request's verdict (`None`: nothing wrong, or not tracked).
    pub fn next(&self) -> Verdict {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .flatten()
    }

    fn push(&self, v: Verdict) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(v);
    }
}

/// Where the tracker is in the byte stream.
#[derive(Debug)]
enum State {
    /// Reading a head.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    /// Reading trailer lines after the last chunk.
    Trailers,
    /// Not following any more.
    Off,
}

/// Largest head or line the tracker buffers before giving up (hyper enforces its own limit).
const MAX_LINE: usize = 1 << 20;

/// Follows request framing on bytes read from a client connection.
pub(crate) struct Tracker {
    state: State,
    /// The head or line read so far.
    buf: Vec<u8>,
    verdicts: Verdicts,
    first: bool,
}

impl Tracker {
    /// A tracker feeding `verdicts`.
    pub fn new(verdicts: Verdicts) -> Self {
        Tracker {
            state: State::Head,
            buf: Vec::new(),
            verdicts,
            first: true,
        }
    }

    /// Follows `data` (the next bytes read).
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.first && !data.is_empty() {
            self.first = false;
            if data.starts_with(b"PRI * HTTP/2") || data.starts_with(b"PRI ") {
                self.state = State::Off;
            }
        }
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64) as usize;
                    *n -= take as u64;
                    data = &data[take..];
                    if *n == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64) as usize;
                    *n -= take as u64;
                    data = &data[take..];
                    if *n == 0 {
                        // The CRLF after the data is read as an empty size line.
                        self.state = State::ChunkSize;
                    }
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    let is_head = matches!(self.state, State::Head);
                    let marker: &[u8] = if is_head { b"\r\n\r\n" } else { b"\n" };
                    let before = self.buf.len();
                    self.buf.extend_from_slice(data);
                    let from = before.saturating_sub(marker.len() - 1);
                    let Some(pos) = memchr::memmem::find(&self.buf[from..], marker) else {
                        data = &[];
                        if self.buf.len() > MAX_LINE {
                            self.state = State::Off;
                        }
                        continue;
                    };
                    let end = from + pos + marker.len();
                    data = &data[end - before..];
                    let mut unit = std::mem::take(&mut self.buf);
                    unit.truncate(end);
                    if is_head {
                        self.on_head(&unit);
                    } else {
                        self.on_line(&unit);
                    }
                }
            }
        }
    }

    fn on_head(&mut self, head: &[u8]) {
        // Blank lines between requests are allowed before a request line.
        let trimmed = head.iter().position(|b| !matches!(b, b'\r' | b'\n'));
        let Some(start) = trimmed else {
            self.state = State::Head;
            return;
        };
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head[start..]) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                // hyper refuses it too (and closes); nothing more to follow.
                self.verdicts.push(None);
                self.state = State::Off;
                return;
            }
        }
        let mut cl = None;
        let mut te = None;
        let mut upgrade = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = Some(h.value.to_ascii_lowercase());
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let connect = req
            .method
            .is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"));
        let verdict = (cl.is_some() && te.is_some())
            .then_some("request has both Content-Length and Transfer-Encoding (RFC 9112 §6.3)");
        self.verdicts.push(verdict);
        self.state = if connect || upgrade {
            State::Off
        } else if let Some(te) = te {
            if te.ends_with(b"chunked") {
                State::ChunkSize
            } else {
                State::Off
            }
        } else {
            match cl {
                Some(0) | None => State::Head,
                Some(n) => State::Body(n),
            }
        };
    }

    fn on_line(&mut self, line: &[u8]) {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if let State::Trailers = self.state {
            self.state = if text.is_empty() {
                State::Head
            } else {
                State::Trailers
            };
            return;
        }
        if text.is_empty() {
            // The CRLF that ends a chunk's data.
            self.state = State::ChunkSize;
            return;
        }
        let hex = text.split(|&b| b == b';').next().unwrap_or(b"");
        let size = std::str::from_utf8(hex)
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
        self.state = match size {
            Some(0) => State::Trailers,
            Some(n) => State::ChunkData(n),
            None => State::Off,
        };
    }
}

/// A client connection whose reads go through a [`Tracker`].
pub(crate) struct Watch<T> {
    io: T,
    tracker: Tracker,
}

impl<T> Watch<T> {
    /// Wraps `io`, queueing verdicts into `verdicts`.
    pub fn new(io: T, verdicts: Verdicts) -> Self {
        Watch {
            io,
            tracker: Tracker::new(verdicts),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watch<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.tracker.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watch<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(stream: &[&[u8]]) -> Vec<Verdict> {
        let v = Verdicts::default();
        let mut t = Tracker::new(v.clone());
        for chunk in stream {
            t.feed(chunk);
        }
        let q = v.0.lock().unwrap();
        q.iter().copied().collect()
    }

    #[test]
    fn follows_bodies_and_flags_cl_with_te() {
        let s: &[&[u8]] = &[
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel",
            b"lo",
            b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext\r\nabc\r\n",
            b"0\r\nX-T: 1\r\n\r\n",
            b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        let v = verdicts(s);
        assert_eq!(v.len(), 5, "{v:?}");
        assert_eq!(v[0], None);
        assert_eq!(v[1], None);
        assert_eq!(v[2], None);
        assert!(v[3].is_some());
        assert_eq!(v[4], None);
    }

    #[test]
    fn byte_by_byte_gives_the_same_verdicts() {
        let whole = b"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n1\r\nz\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        let v = verdicts(&bytes);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].is_some());
        assert_eq!(v[1], None);
    }

    #[test]
    fn stops_at_connect_upgrade_and_h2() {
        assert_eq!(
            verdicts(&[b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"]),
            vec![None]
        );
        assert!(verdicts(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).is_empty());
    }
}
