//! Body types and the metering wrapper used for audit byte counts and pool return.
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};

/// Boxed error type of proxy bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type flowing through the proxy (streamed, never buffered).
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body with these bytes.
pub fn full(b: Bytes) -> ProxyBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes a (metered) hyper body.
pub fn boxed_hyper<B>(b: B) -> ProxyBody
where
    B: Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    b.map_err(|e: hyper::Error| -> BoxError { Box::new(e) })
        .boxed_unsync()
}

/// Boxes a body that already has the proxy error type.
pub fn boxed<B>(b: B) -> ProxyBody
where
    B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    b.boxed_unsync()
}

pin_project_lite::pin_project! {
    /// Counts data bytes into a shared counter and runs `on_done` exactly once, when the
    /// stream ends or the body is dropped (whichever comes first).
    pub struct Metered<B> {
        #[pin]
        inner: B,
        count: Arc<AtomicU64>,
        on_done: Option<Box<dyn FnOnce(bool) + Send>>,
    }

    impl<B> PinnedDrop for Metered<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_done.take() {
                f(false);
            }
        }
    }
}

impl<B> Metered<B> {
    /// Wraps `inner`; `on_done(completed)` is called with `true` after the last frame and
    /// `false` if the body is dropped early or fails.
    pub fn new(
        inner: B,
        count: Arc<AtomicU64>,
        on_done: Option<Box<dyn FnOnce(bool) + Send>>,
    ) -> Self {
        Metered {
            inner,
            count,
            on_done,
        }
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let res = inner.as_mut().poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.count.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                // A length-delimited body is complete after its last data frame; the
                // consumer may never poll again for the end, so finish here.
                if inner.is_end_stream() {
                    if let Some(f) = this.on_done.take() {
                        f(true);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(f) = this.on_done.take() {
                    f(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(f) = this.on_done.take() {
                    f(false);
                }
            }
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
