//! Hostile-peer tests' instruments: a good client that keeps rolling in the
//! background while a test abuses the agent ([`Roller`]), the agent's memory
//! before and after ([`Rss`]), the agent's `/metrics` ([`scrape`]), and a
//! gRPC call made with the `h2` crate so the test controls the bytes of the
//! request body ([`raw_call`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tonic::codegen::{Bytes, http};

use crate::client::{Client, status_chain};
use crate::tls::TlsClient;

/// The longest one background roll may take before it counts as a failure.
pub const ROLL_DEADLINE: Duration = Duration::from_secs(5);

/// The pause between two background rolls: about 100 rolls a second, enough
/// to see a hiccup without starving the abuse of CPU.
const ROLL_PAUSE: Duration = Duration::from_millis(10);

/// How much more resident memory than before the abuse the agent may use,
/// at its peak or after: generous, yet far below what buffering any of the
/// abuses without a bound would take.
pub const MAX_RSS_GROWTH_KIB: u64 = 64 * 1024;

/// Where the good client rolls.
#[derive(Debug, Clone)]
pub enum Target {
    /// An mTLS listener, with this client profile.
    Mtls(SocketAddr, TlsClient),
    /// An h2c listener.
    H2c(SocketAddr),
}

impl Target {
    async fn connect(&self) -> Result<Client, String> {
        match self {
            Target::Mtls(addr, tls) => Client::mtls(*addr, tls).await,
            Target::H2c(addr) => Client::h2c(*addr).await,
        }
    }
}

/// What the good client saw.
#[derive(Debug, Default, Clone)]
pub struct RollStats {
    /// Rolls that returned a value, on the long-lived connection.
    pub ok: u64,
    /// Rolls on a fresh connection each that returned a value.
    pub fresh_ok: u64,
    /// Rolls that failed (either kind).
    pub failed: u64,
    /// The first few failures.
    pub errors: Vec<String>,
    /// The slowest successful roll.
    pub slowest: Duration,
}

impl RollStats {
    fn record(&mut self, fresh: bool, started: Instant, result: Result<i32, String>) {
        match result {
            Ok(value) if (1..=6).contains(&value) => {
                if fresh {
                    self.fresh_ok += 1;
                } else {
                    self.ok += 1;
                }
                self.slowest = self.slowest.max(started.elapsed());
            }
            Ok(value) => self.fail(format!("rolled {value}")),
            Err(error) => self.fail(error),
        }
    }

    fn fail(&mut self, error: String) {
        self.failed += 1;
        if self.errors.len() < 5 {
            self.errors.push(error);
        }
    }
}

/// A good client rolling in the background on its own connection, and
/// optionally on a fresh connection every few rolls too.
pub struct Roller {
    stop: Arc<AtomicBool>,
    task: JoinHandle<RollStats>,
}

impl Roller {
    /// Connects to `target`, rolls once (panicking if that fails), then keeps
    /// rolling until [`Roller::finish`]. With `fresh_every = Some(n)`, every
    /// `n`th roll is made on a new connection of its own.
    pub async fn start(target: Target, fresh_every: Option<u64>) -> Roller {
        let client = target
            .connect()
            .await
            .unwrap_or_else(|error| panic!("the good client cannot connect: {error}"));
        let first = client.roll().await;
        assert!(first.is_ok(), "the good client's first roll: {first:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(roll_loop(target, client, fresh_every, stop.clone()));
        Roller { stop, task }
    }

    /// Stops rolling and returns what the client saw.
    pub async fn finish(self) -> RollStats {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.await {
            Ok(stats) => stats,
            Err(error) => panic!("the good client's task failed: {error}"),
        }
    }
}

async fn roll_loop(
    target: Target,
    client: Client,
    fresh_every: Option<u64>,
    stop: Arc<AtomicBool>,
) -> RollStats {
    let mut stats = RollStats::default();
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        count += 1;
        let fresh = fresh_every.is_some_and(|n| count.is_multiple_of(n));
        let started = Instant::now();
        let roll = async {
            if fresh {
                target.connect().await?.roll().await
            } else {
                client.roll().await
            }
            .map_err(|status| status_chain(&status))
        };
        let result = match tokio::time::timeout(ROLL_DEADLINE, roll).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {ROLL_DEADLINE:?}")),
        };
        let what = if fresh { "fresh connection: " } else { "" };
        stats.record(fresh, started, result.map_err(|e| format!("{what}{e}")));
        tokio::time::sleep(ROLL_PAUSE).await;
    }
    stats
}

/// A process's resident memory now and at its peak, KiB, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    /// `VmRSS`.
    pub now_kib: u64,
    /// `VmHWM`: the peak since the process started.
    pub peak_kib: u64,
}

impl Rss {
    /// Reads `/proc/PID/status`.
    pub fn of(pid: u32) -> Rss {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|error| panic!("read /proc/{pid}/status: {error}"));
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        Rss {
            now_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
        }
    }
}

/// The agent's memory and a good client's rolls around one abuse.
pub struct Watch {
    pid: u32,
    before: Rss,
    started: Instant,
    roller: Roller,
}

impl Watch {
    /// Starts the good client on `target` (see [`Roller::start`]) and notes
    /// the agent's memory.
    pub async fn start(pid: u32, target: Target, fresh_every: Option<u64>) -> Watch {
        let roller = Roller::start(target, fresh_every).await;
        Watch {
            pid,
            before: Rss::of(pid),
            started: Instant::now(),
            roller,
        }
    }

    /// Stops the good client and prints the numbers; panics if any roll
    /// failed, if there were none, or if the agent's memory grew by more
    /// than [`MAX_RSS_GROWTH_KIB`] (now or at its peak).
    pub async fn finish(self, what: &str) -> RollStats {
        let stats = self.roller.finish().await;
        let after = Rss::of(self.pid);
        let growth = after.now_kib.saturating_sub(self.before.now_kib);
        let peak_growth = after.peak_kib.saturating_sub(self.before.now_kib);
        eprintln!(
            "abuse {what}: {:.1}s; good client: {} rolls ok + {} on fresh connections, {} failed, slowest {:?}; \
             agent RSS before {} KiB, after {} KiB (+{growth}), peak {} KiB (+{peak_growth})",
            self.started.elapsed().as_secs_f64(),
            stats.ok,
            stats.fresh_ok,
            stats.failed,
            stats.slowest,
            self.before.now_kib,
            after.now_kib,
            after.peak_kib,
        );
        assert_eq!(
            stats.failed, 0,
            "{what}: the good client failed {} times: {:?}",
            stats.failed, stats.errors
        );
        assert!(stats.ok > 0, "{what}: the good client never rolled");
        assert!(
            growth.max(peak_growth) < MAX_RSS_GROWTH_KIB,
            "{what}: agent RSS grew from {} KiB to {} KiB (peak {} KiB)",
            self.before.now_kib,
            after.now_kib,
            after.peak_kib
        );
        stats
    }
}

/// Fetches `http://ADDR/metrics` and returns its body.
pub async fn scrape(addr: SocketAddr) -> String {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .unwrap_or_else(|_| panic!("GET http://{addr}/metrics timed out"))
        .unwrap_or_else(|error| panic!("GET http://{addr}/metrics: {error}"));
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => body.to_owned(),
        _ => panic!("GET http://{addr}/metrics: {response}"),
    }
}

/// The value of sample `name` with exactly `labels` (in any order) in a
/// Prometheus text exposition; `None` if there is no such sample.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if series_name != name {
            return None;
        }
        let mut found: Vec<(&str, &str)> = series_labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((key, value.trim_matches('"')))
            })
            .collect();
        let mut wanted = labels.to_vec();
        found.sort_unstable();
        wanted.sort_unstable();
        (found == wanted).then(|| value.parse().ok()).flatten()
    })
}

/// What a gRPC call made with [`raw_call`] got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReply {
    /// The HTTP status.
    pub http_status: u16,
    /// `grpc-status`, from the response headers (trailers-only) or trailers.
    pub grpc_status: Option<i32>,
    /// `grpc-message`, percent-encoded as sent.
    pub grpc_message: Option<String>,
}

/// Opens an HTTP/2 connection over `io` with the `h2` crate, driving it in
/// a task of its own. The caller owns the returned sender.
pub async fn h2_connect<T>(io: T) -> Result<h2::client::SendRequest<Bytes>, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io)
        .await
        .map_err(|error| format!("HTTP/2 handshake: {error}"))?;
    tokio::spawn(async move {
        // The connection ends when the test drops its sender or the server closes it.
        let _ = connection.await;
    });
    Ok(send)
}

/// Calls `path` with `body` as the raw request body (gRPC framing included,
/// as the caller built it). With `end = false` the request body is never
/// finished, as a stalled client would leave it.
pub async fn raw_call(
    send: &h2::client::SendRequest<Bytes>,
    path: &str,
    body: Vec<u8>,
    end: bool,
) -> Result<RawReply, String> {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|error| error.to_string())?;
    let mut send = send
        .clone()
        .ready()
        .await
        .map_err(|error| format!("connection: {error}"))?;
    let (response, mut stream) = send
        .send_request(request, body.is_empty() && end)
        .map_err(|error| format!("send request: {error}"))?;
    // Send the body in flow-controlled pieces, in a task of its own: the
    // server may answer (and reset the stream) long before it is all sent.
    let sender = tokio::spawn(async move {
        let mut rest = Bytes::from(body);
        while !rest.is_empty() {
            stream.reserve_capacity(rest.len().min(64 * 1024));
            let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(granted)) => granted,
                _ => return,
            };
            let chunk = rest.split_to(granted.min(rest.len()));
            let last = rest.is_empty() && end;
            if stream.send_data(chunk, last).is_err() {
                return;
            }
        }
        // Keeps the stream open when `end` is false until the task is aborted.
        std::future::pending::<()>().await;
    });
    let reply = async {
        let response = response
            .await
            .map_err(|error| format!("response: {error}"))?;
        let http_status = response.status().as_u16();
        let header = |map: &http::HeaderMap, name: &str| {
            map.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut grpc_status = header(response.headers(), "grpc-status");
        let mut grpc_message = header(response.headers(), "grpc-message");
        if grpc_status.is_none() {
            let mut body = response.into_body();
            while let Some(data) = body.data().await {
                let data = data.map_err(|error| format!("response body: {error}"))?;
                let _ = body.flow_control().release_capacity(data.len());
            }
            let trailers = body
                .trailers()
                .await
                .map_err(|error| format!("trailers: {error}"))?
                .unwrap_or_default();
            grpc_status = header(&trailers, "grpc-status");
            grpc_message = header(&trailers, "grpc-message");
        }
        Ok(RawReply {
            http_status,
            grpc_status: grpc_status.and_then(|s| s.parse().ok()),
            grpc_message,
        })
    }
    .await;
    sender.abort();
    reply
}
