//! An accepted connection, plaintext or TLS, with what the agent knows about
//! its peer. [`crate::net::http2`] puts an `Arc<ConnInfo>` into every request's
//! extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tracing::debug;

use crate::tls::ClientIdentity;

/// The target of this module's events, as before it moved into `net/`.
const TARGET: &str = "dice_agent::conn";

/// What the agent knows about a connection's peer. Shared, as one `Arc`,
/// by the connection and every request on it.
#[derive(Debug)]
pub struct ConnInfo {
    /// The name of the listener that accepted it.
    pub listener: Arc<str>,
    /// The peer's address.
    pub peer: SocketAddr,
    /// `peer` as text, formatted once for every RPC's log line.
    pub peer_text: Box<str>,
    /// The verified client certificate, on mTLS listeners.
    pub client: Option<Arc<ClientIdentity>>,
    /// The client's certificate chain as it was verified (leaf first), on
    /// mTLS listeners: the admin API's lockout guard checks it against a new
    /// trust bundle. Set once, at the handshake.
    pub client_chain: Option<Arc<[CertificateDer<'static>]>>,
    /// Whether the listener trusts its proxy's client-subject header.
    pub trusted_proxy: bool,
    /// Whether the listener's allow list refused this client: every RPC fails.
    pub denied: bool,
    /// RPCs in flight on this connection, for the idle timeout.
    pub activity: Activity,
}

/// Tracks RPCs on one connection so an idle one can be closed.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `opened` to the last RPC start or end.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn touch(&self, at: Instant) {
        let ms = u64::try_from(at.saturating_duration_since(self.opened).as_millis())
            .unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Records that an RPC started at `at` (the caller's clock reading).
    pub fn rpc_started(&self, at: Instant) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch(at);
    }

    /// Records that an RPC ended at `at`.
    pub fn rpc_ended(&self, at: Instant) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.touch(at);
    }

    /// When the connection becomes idle-expired, or `None` while RPCs are in flight.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle)
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection ready for HTTP/2. It holds its listener's
/// connection slot until it is dropped, and reads as closed once no RPC has
/// run on it for the idle timeout.
pub struct Conn {
    io: Io,
    info: Arc<ConnInfo>,
    idle: IdleTimer,
    /// This listener's open-connections gauge, decremented on drop.
    open: Gauge,
    _slot: OwnedSemaphorePermit,
}

struct IdleTimer {
    limit: Duration,
    sleep: Pin<Box<Sleep>>,
    /// The timer has been polled since it was last set, so it will wake the task.
    armed: bool,
}

impl Conn {
    /// A plaintext (h2c) connection.
    pub fn plain(
        stream: TcpStream,
        info: ConnInfo,
        idle: Duration,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self::new(Io::Plain(stream), info, idle, slot)
    }

    /// A connection whose TLS handshake has finished.
    pub fn tls(
        stream: TlsStream<TcpStream>,
        info: ConnInfo,
        idle: Duration,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self::new(Io::Tls(Box::new(stream)), info, idle, slot)
    }

    fn new(io: Io, info: ConnInfo, limit: Duration, slot: OwnedSemaphorePermit) -> Self {
        let open = crate::metrics::metrics()
            .open_connections
            .get_or_create_owned(&crate::metrics::ListenerLabels {
                listener: info.listener.to_string(),
            });
        open.inc();
        Self {
            open,
            io,
            info: Arc::new(info),
            idle: IdleTimer {
                limit,
                sleep: Box::pin(tokio::time::sleep(limit)),
                armed: false,
            },
            _slot: slot,
        }
    }

    /// What is known about the connection's peer.
    pub fn info(&self) -> Arc<ConnInfo> {
        self.info.clone()
    }

    /// Whether the connection has been idle for the limit. Re-arms the timer
    /// otherwise, so the task wakes when it next could be.
    fn poll_idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        // Once polled, the timer holds the connection task's waker: until it
        // fires there is nothing to check, and polling it on every pending
        // read would cost the timer's bookkeeping each time.
        if self.idle.armed && !self.idle.sleep.is_elapsed() {
            return false;
        }
        loop {
            // Out of cooperative budget, the poll is refused before it
            // registers the timer (tokio wakes the task to try again); only a
            // poll made with budget left leaves the timer armed.
            let had_budget = tokio::task::coop::has_budget_remaining();
            if self.idle.sleep.as_mut().poll(cx).is_pending() {
                self.idle.armed = had_budget;
                return false;
            }
            let deadline = self.info.activity.idle_deadline(self.idle.limit);
            let now = Instant::now();
            match deadline {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => self.idle.sleep.as_mut().reset(deadline.into()),
                None => self
                    .idle
                    .sleep
                    .as_mut()
                    .reset((now + self.idle.limit).into()),
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if polled.is_pending() && self.poll_idle_expired(cx) {
            debug!(target: TARGET, peer = %self.info.peer, listener = %self.info.listener, "closing idle connection");
            // Reads as end of stream: the HTTP/2 server closes the connection.
            return Poll::Ready(Ok(()));
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::Arc;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::sync::{Semaphore, mpsc};

    use super::*;

    async fn idle_conn(idle: Duration) -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let info = ConnInfo {
            listener: Arc::from("test"),
            peer,
            peer_text: peer.to_string().into(),
            client: None,
            client_chain: None,
            trusted_proxy: false,
            denied: false,
            activity: Activity::default(),
        };
        let slot = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a slot");
        (Conn::plain(stream, info, idle, slot), client)
    }

    #[tokio::test]
    async fn a_silent_connection_reads_as_closed_after_the_idle_timeout() {
        let (mut conn, _client) = idle_conn(Duration::from_millis(100)).await;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut byte)).await;
        assert_eq!(read.expect("closed within 5 s").expect("read"), 0);
    }

    #[tokio::test]
    async fn the_idle_timer_arms_even_if_first_polled_out_of_budget() {
        let (mut conn, _client) = idle_conn(Duration::from_millis(100)).await;
        // Spend the task's cooperative budget, then poll the connection once:
        // that poll cannot register the idle timer.
        let (sender, mut receiver) = mpsc::unbounded_channel();
        for _ in 0..1000 {
            sender.send(()).expect("send");
        }
        poll_fn(|cx| {
            while tokio::task::coop::has_budget_remaining() {
                let _ = receiver.poll_recv(cx);
            }
            let mut byte = [0u8; 1];
            let mut buf = ReadBuf::new(&mut byte);
            assert!(Pin::new(&mut conn).poll_read(cx, &mut buf).is_pending());
            Poll::Ready(())
        })
        .await;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut byte)).await;
        assert_eq!(read.expect("closed within 5 s").expect("read"), 0);
    }
}
