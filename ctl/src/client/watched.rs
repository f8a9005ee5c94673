//! [`Watched`]: a stream that keeps the error that broke it, and looks behind
//! a broken write for the TLS alert that explains it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::is_tls_error;

/// The first I/O error on a connection, shared between the stream and its connector.
#[derive(Debug, Clone, Default)]
pub(super) struct FirstError(Arc<Mutex<Option<Recorded>>>);

/// An I/O error kept in a form that can be handed out more than once.
#[derive(Debug, Clone)]
enum Recorded {
    /// A TLS error, such as a fatal alert from the node.
    Tls(rustls::Error),
    /// Any other I/O error.
    Io(io::ErrorKind, String),
}

impl FirstError {
    fn record(&self, error: &io::Error) {
        let Ok(mut slot) = self.0.lock() else { return };
        if slot.is_none() {
            let tls = error
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            *slot = Some(match tls {
                Some(tls) => Recorded::Tls(tls.clone()),
                None => Recorded::Io(error.kind(), error.to_string()),
            });
        }
    }

    /// The error to report when the connection is asked for again.
    pub(super) fn to_io_error(&self) -> io::Error {
        let recorded = self.0.lock().ok().and_then(|slot| slot.clone());
        match recorded {
            Some(Recorded::Tls(error)) => io::Error::new(io::ErrorKind::InvalidData, error),
            Some(Recorded::Io(kind, message)) => {
                io::Error::new(kind, format!("the connection to the node broke: {message}"))
            }
            None => io::Error::new(
                io::ErrorKind::NotConnected,
                "the node closed the connection",
            ),
        }
    }
}

/// A stream that records its first I/O error in a [`FirstError`].
///
/// It also explains broken writes. A node that refuses the client certificate
/// after a TLS 1.3 handshake sends an alert and closes; our next write may
/// then fail with a broken pipe or a reset while the alert, which says why,
/// is still unread. On such a write error the stream reads what is left
/// (waiting for the socket to turn readable, which a reset makes it) and
/// reports a TLS error found there instead of the write error.
#[derive(Debug)]
pub(super) struct Watched<S> {
    inner: S,
    first_error: FirstError,
    /// A write error that means the peer is gone, waiting to be explained.
    broken: Option<io::Error>,
}

/// How many reads a broken write may spend looking for the alert that explains it.
const MAX_EXPLAIN_READS: usize = 16;

impl<S> Watched<S> {
    pub(super) fn new(inner: S, first_error: FirstError) -> Self {
        Self {
            inner,
            first_error,
            broken: None,
        }
    }
}

impl<S: AsyncRead + Unpin> Watched<S> {
    fn watch<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(error)) = &poll {
            self.first_error.record(error);
        }
        poll
    }

    /// Passes a write-side result through, explaining a broken connection first.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(Err(error)) if peer_is_gone(&error) => {
                self.broken = Some(error);
                self.poll_explain(cx).map(Err)
            }
            other => self.watch(other),
        }
    }

    /// Reads until the TLS error behind `self.broken` shows up, or the stream
    /// ends or fails for another reason; then returns the error to report.
    fn poll_explain(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        // The connection is dead, so whatever data is read here has no reader.
        let mut scratch = [0; 4096];
        for _ in 0..MAX_EXPLAIN_READS {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(Err(read_error)) if is_tls_error(&read_error) => {
                    self.broken = None;
                    self.first_error.record(&read_error);
                    return Poll::Ready(read_error);
                }
                Poll::Ready(_) => break,
            }
        }
        let error = self.broken.take().unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the node closed the connection")
        });
        self.first_error.record(&error);
        Poll::Ready(error)
    }

    /// A write-side call: explains a pending broken write before trying again.
    fn poll_write_side<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.broken.is_some() {
            return self.poll_explain(cx).map(Err);
        }
        let poll = write(Pin::new(&mut self.inner), cx);
        self.watch_write(cx, poll)
    }
}

/// Whether a write error means the peer closed or reset the connection.
fn peer_is_gone(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        error.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.watch(poll)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_side(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_side(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_side(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_side(cx, |inner, cx| inner.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{NodeError, NodeErrorKind};

    /// When tonic asks for the connection again, the connector answers with the
    /// error that broke it, and a TLS alert there still classifies as `tls`.
    #[test]
    fn a_broken_connection_reports_its_first_error() {
        let first = FirstError::default();
        let closed = first.to_io_error();
        assert_eq!(closed.to_string(), "the node closed the connection");

        first.record(&io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::DecryptError),
        ));
        first.record(&io::Error::new(io::ErrorKind::BrokenPipe, "later"));
        let status = tonic::Status::from_error(Box::new(first.to_io_error()));
        let error = NodeError::from_status(status);
        assert_eq!(error.kind(), NodeErrorKind::Tls, "{error}");
        assert!(error.to_string().contains("DecryptError"), "{error}");

        let reset = FirstError::default();
        reset.record(&io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset by peer",
        ));
        assert_eq!(
            reset.to_io_error().to_string(),
            "the connection to the node broke: reset by peer"
        );
    }

    /// A peer that is gone: writes fail with `write_error`, reads yield `reads` in turn.
    struct GonePeer {
        write_error: io::ErrorKind,
        reads: std::collections::VecDeque<Poll<io::Result<&'static [u8]>>>,
    }

    impl AsyncRead for GonePeer {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.reads.pop_front() {
                Some(Poll::Pending) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Poll::Ready(Ok(data))) => {
                    buf.put_slice(data);
                    Poll::Ready(Ok(()))
                }
                Some(Poll::Ready(Err(error))) => Poll::Ready(Err(error)),
                None => Poll::Ready(Ok(())),
            }
        }
    }

    impl AsyncWrite for GonePeer {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(self.write_error.into()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write_to(peer: GonePeer) -> (io::Error, FirstError) {
        use tokio::io::AsyncWriteExt;
        let first = FirstError::default();
        let mut stream = Watched::new(peer, first.clone());
        let error = stream
            .write_all(b"PRI * HTTP/2.0")
            .await
            .expect_err("peer is gone");
        (error, first)
    }

    #[tokio::test]
    async fn a_broken_write_is_explained_by_the_alert_behind_it() {
        let alert = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
            )
        };
        let peer = GonePeer {
            write_error: io::ErrorKind::BrokenPipe,
            reads: [
                Poll::Pending,
                Poll::Ready(Ok(&b"data"[..])),
                Poll::Ready(Err(alert())),
            ]
            .into(),
        };
        let (error, first) = write_to(peer).await;
        assert_eq!(error.to_string(), "received fatal alert: BadCertificate");
        let again =
            NodeError::from_status(tonic::Status::from_error(Box::new(first.to_io_error())));
        assert_eq!(again.kind(), NodeErrorKind::Tls, "{again}");

        // No alert behind it: the write error stands.
        let peer = GonePeer {
            write_error: io::ErrorKind::ConnectionReset,
            reads: [Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))].into(),
        };
        let (error, _) = write_to(peer).await;
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);

        // Other write errors are not looked into.
        let peer = GonePeer {
            write_error: io::ErrorKind::PermissionDenied,
            reads: [Poll::Ready(Err(alert()))].into(),
        };
        let (error, _) = write_to(peer).await;
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
    }
}
