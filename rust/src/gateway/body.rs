//! Body wrappers of the data path: one boxed body type, an idle timeout and a size limit.
//!
//! The errors they yield ([`BodyError`]) travel inside hyper's errors; [`body_error`] finds them again
//! so that the request handler can answer 408/413/504 rather than a generic 502.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type of the data path (requests to nodes, answers to clients).
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why a body stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The client sent nothing for the client idle time.
    ClientIdle,
    /// The node sent nothing for the read timeout.
    UpstreamIdle,
    /// The client's body went over the size limit.
    TooLarge,
    /// The client's body broke off: a malformed chunk, or the connection closed before its end.
    ClientBroken,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BodyError::ClientIdle => "timed out waiting for the client's request body",
            BodyError::UpstreamIdle => "timed out waiting for the node's response body",
            BodyError::TooLarge => "the request body is over the size limit",
            BodyError::ClientBroken => "the request body could not be read",
        })
    }
}

impl std::error::Error for BodyError {}

/// The [`BodyError`] somewhere in `err`'s source chain.
pub fn body_error(err: &(dyn std::error::Error + 'static)) -> Option<BodyError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<BodyError>() {
            return Some(*found);
        }
        current = e.source();
    }
    None
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(data: Bytes) -> ProxyBody {
    Full::new(data).map_err(|never| match never {}).boxed_unsync()
}

/// Tells when a body made no progress for its idle time: between `idle` and twice that.
///
/// Progress is a counter bumped per frame (no clock read); the timer is armed lazily, only once the
/// body is pending, and re-armed when it fires after progress. A body that is ready at once costs no
/// timer at all.
pub struct IdleTimer {
    idle: Duration,
    frames: u64,
    armed_at: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    pub fn new(idle: Duration) -> Self {
        IdleTimer { idle, frames: 0, armed_at: 0, timer: None }
    }

    /// The body yielded a frame.
    #[inline]
    pub fn progress(&mut self) {
        self.frames = self.frames.wrapping_add(1);
    }

    /// Poll while the body is pending: ready once it has been idle too long.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.timer {
                None => {
                    self.timer = Some(Box::pin(tokio::time::sleep(self.idle)));
                    self.armed_at = self.frames;
                }
                Some(timer) => match timer.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) if self.frames == self.armed_at => return Poll::Ready(()),
                    Poll::Ready(()) => {
                        timer.as_mut().reset(Instant::now() + self.idle);
                        self.armed_at = self.frames;
                    }
                },
            }
        }
    }
}

/// `inner` with an idle timeout ([`IdleTimer`]): it fails with `on_idle` when it makes no progress.
pub struct Idle<B> {
    inner: B,
    on_idle: BodyError,
    timer: IdleTimer,
}

impl<B> Idle<B> {
    pub fn new(inner: B, idle: Duration, on_idle: BodyError) -> Self {
        Idle { inner, on_idle, timer: IdleTimer::new(idle) }
    }
}

impl<B> Body for Idle<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer.progress();
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.poll_expired(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(this.on_idle)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `inner`, telling a receiver when it has been read to its end (or failed, or was dropped: the
/// receiver then sees the sender gone).
pub struct Ended {
    inner: ProxyBody,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Ended {
    pub fn wrap(inner: ProxyBody) -> (ProxyBody, tokio::sync::oneshot::Receiver<()>) {
        let (done, ended) = tokio::sync::oneshot::channel();
        let done = if inner.is_end_stream() {
            let _ = done.send(());
            None
        } else {
            Some(done)
        };
        (Ended { inner, done }.boxed_unsync(), ended)
    }
}

impl Body for Ended {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let finished = match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if finished {
            if let Some(done) = this.done.take() {
                let _ = done.send(());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client connection whose writes may not stall longer than the client idle time (a client that
/// stops reading its answers, or an event stream, is cut off rather than holding the connection, its
/// buffers and a node connection forever).
pub struct StallGuard<I> {
    inner: I,
    timer: IdleTimer,
}

impl<I> StallGuard<I> {
    pub fn new(inner: I, idle: Duration) -> Self {
        StallGuard { inner, timer: IdleTimer::new(idle) }
    }

    fn stalled<T>(&mut self, cx: &mut Context<'_>, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.timer.progress();
                Poll::Ready(result)
            }
            Poll::Pending => match self.timer.poll_expired(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client stopped reading",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for StallGuard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for StallGuard<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.stalled(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.stalled(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.stalled(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// `inner`, failing with [`BodyError::TooLarge`] once more than `limit` bytes went through.
pub struct Limited<B> {
    inner: B,
    remaining: u64,
}

impl<B> Limited<B> {
    pub fn new(inner: B, limit: u64) -> Self {
        Limited { inner, remaining: limit }
    }
}

impl<B> Body for Limited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.remaining = 0;
                        return Poll::Ready(Some(Err(Box::new(BodyError::TooLarge))));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that never yields a frame.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }

    #[derive(Debug)]
    struct Outer(BodyError);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "outer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn finds_body_errors_in_a_chain() {
        assert_eq!(body_error(&Outer(BodyError::TooLarge)), Some(BodyError::TooLarge));
        assert_eq!(body_error(&std::io::Error::other("x")), None);
    }

    #[tokio::test]
    async fn limited_fails_past_the_limit() {
        let ok = Limited::new(full(Bytes::from_static(b"12345")), 5).collect().await;
        assert_eq!(ok.unwrap().to_bytes(), Bytes::from_static(b"12345"));
        let err = Limited::new(full(Bytes::from_static(b"123456")), 5).collect().await.err().unwrap();
        assert_eq!(body_error(&*err), Some(BodyError::TooLarge));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_times_out_only_without_progress() {
        let err = Idle::new(Stalled, Duration::from_secs(2), BodyError::UpstreamIdle).collect().await.err().unwrap();
        assert_eq!(body_error(&*err), Some(BodyError::UpstreamIdle));
        let ready = Idle::new(full(Bytes::from_static(b"x")), Duration::from_millis(1), BodyError::ClientIdle);
        assert_eq!(ready.collect().await.unwrap().to_bytes(), Bytes::from_static(b"x"));
    }
}
