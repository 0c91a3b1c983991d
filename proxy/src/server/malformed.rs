//! Requests hyper's HTTP/1 parser refuses (an invalid request target such as
//! `CONNECT host:443:22`, obs-folded headers, duplicate `Content-Length`, an oversized head)
//! never reach a handler: hyper answers them itself with a bare status and no body. Every
//! refusal of bottle carries `X-Bottle-Deny` and a one-line reason, so [`Canned`] wraps the
//! client side of each connection and replaces those canned answers on their way out (and
//! audits them).
//!
//! A canned answer is recognised by its shape: a 4xx/5xx status line whose only headers are
//! `content-length: 0`, `date` and `connection`. Every response a handler produces carries
//! `Via` (forwarded ones) or `X-Bottle-Deny` (denies), so none of them has that shape.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::audit::{AuditLog, AuditRecord};

/// Rewrites hyper's canned error responses into bottle deny responses (see module docs).
pub(crate) struct Canned<T> {
    io: T,
    audit: AuditLog,
    /// A replacement being written: bytes, how many are written, the length to report.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T> Canned<T> {
    /// Wraps a client connection.
    pub fn new(io: T, audit: AuditLog) -> Self {
        Canned {
            io,
            audit,
            pending: None,
        }
    }
}

/// If `buf` is exactly one canned hyper error response, its status code.
pub(crate) fn canned_status(buf: &[u8]) -> Option<u16> {
    let end = memchr::memmem::find(buf, b"\r\n\r\n")?;
    if end + 4 != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()?;
    if !(400..600).contains(&code) {
        return None;
    }
    let mut saw_len = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" if value.trim() == "0" => saw_len = true,
            "date" | "connection" => {}
            _ => return None,
        }
    }
    saw_len.then_some(code)
}

/// The bottle deny that replaces a canned answer with status `code`.
fn replacement(code: u16) -> Vec<u8> {
    let (reason, detail) = match code {
        431 => (
            "too_large",
            "request head too large for the proxy's parser (settings.max_request_head)",
        ),
        414 => ("too_large", "request target too long"),
        505 => ("bad_request", "HTTP version not supported"),
        _ => (
            "bad_request",
            "malformed HTTP/1.1 request refused by the parser (invalid request target, obs-folded or invalid header, conflicting Content-Length, or bad framing)",
        ),
    };
    let body = format!(
        "bottle: (request) {detail} ({reason}) — blocked by bottle policy; retrying via another route or address will not help.\n"
    );
    let status = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_REQUEST);
    format!(
        "HTTP/1.1 {} {}\r\nx-bottle-deny: {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes()
}

impl<T> Canned<T> {
    fn audit_canned(&self, code: u16) {
        let reason = if code == 431 || code == 414 {
            "too_large"
        } else {
            "bad_request"
        };
        self.audit.record(AuditRecord::deny_unread(reason, None));
    }
}

impl<T: AsyncWrite + Unpin> Canned<T> {
    /// Writes the pending replacement; `Ready(Ok(n))` with the length hyper asked to write.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            let Some((bytes, done, report)) = self.pending.as_mut() else {
                return Poll::Ready(Ok(0));
            };
            if *done == bytes.len() {
                let n = *report;
                self.pending = None;
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut self.io).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                other => return other,
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Canned<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Canned<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match canned_status(buf) {
                Some(code) => {
                    this.audit_canned(code);
                    this.pending = Some((replacement(code), 0, buf.len()));
                }
                None => return Pin::new(&mut this.io).poll_write(cx, buf),
            }
        }
        this.drive(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            let first = bufs.iter().find(|b| !b.is_empty());
            let only_one = bufs.iter().filter(|b| !b.is_empty()).count() == 1;
            match first.filter(|_| only_one).and_then(|b| canned_status(b)) {
                Some(code) => {
                    this.audit_canned(code);
                    let len = first.map_or(0, |b| b.len());
                    this.pending = Some((replacement(code), 0, len));
                }
                None => return Pin::new(&mut this.io).poll_write_vectored(cx, bufs),
            }
        }
        this.drive(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_some() {
            match self.drive(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_canned_shapes() {
        let canned =
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 12:00:00 GMT\r\n\r\n";
        assert_eq!(canned_status(canned), Some(400));
        let canned431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(canned_status(canned431), Some(431));
        // Deny responses and forwarded ones are never rewritten.
        let ours =
            b"HTTP/1.1 400 Bad Request\r\nx-bottle-deny: bad_request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(canned_status(ours), None);
        let fwd = b"HTTP/1.1 400 Bad Request\r\nvia: 1.1 bottle-x\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(canned_status(fwd), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(canned_status(ok), None);
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nx";
        assert_eq!(canned_status(with_body), None);
    }

    #[test]
    fn replacement_is_a_well_formed_deny() {
        let r = String::from_utf8(replacement(400)).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains("x-bottle-deny: bad_request"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(body.lines().count(), 1);
    }
}
