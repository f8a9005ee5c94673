//! The closed-loop load generator behind `dicectl bench`.
//!
//! Long-lived mode: every node gets `connections` connections, opened before
//! the clock starts; each connection is driven by one task that keeps
//! `streams` RollDie RPCs in flight, sending the next as soon as one ends. A
//! connection that breaks is opened again (with a backoff) and the failure
//! counted. New-connection mode: each of the `connections` tasks per node
//! opens a connection (TCP, a full TLS handshake as the client never resumes
//! sessions, HTTP/2), makes one RPC on it and closes it, again and again.
//!
//! Only what ends inside the measurement window counts: the window opens
//! after the warm-up and lasts `duration`. No RPC starts after it closes;
//! those still in flight then get `timeout` to end and are not counted
//! (those that do not end by then count as `timeout` errors). The run is
//! thus bounded in time (warm-up + duration + timeout, plus connection
//! set-up under the same timeout) and in concurrency (connections x streams).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dice_proto::api::RollDieRequest;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rustls::ClientConfig;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use super::connect::{self, Client, ConnectError, Connection};
use super::histogram::Histogram;
use super::target::BenchNode;

/// Connections opened at once before the clock starts.
const OPEN_AT_ONCE: usize = 64;
/// The first pause after a failed connect; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Connections per node (long-lived), or connection loops per node (new-connection mode).
    pub connections: usize,
    /// RPCs in flight per connection (long-lived mode).
    pub streams: usize,
    /// The measurement window.
    pub duration: Duration,
    /// Load before the window opens, not counted.
    pub warmup: Duration,
    /// Deadline of each connect and each RPC still in flight when the window closes.
    pub timeout: Duration,
    /// One connection per RPC.
    pub new_connection_per_rpc: bool,
}

/// What one node did within the window.
#[derive(Debug, Clone, Default)]
pub struct NodeStats {
    /// Latency of each successful RPC, microseconds (with the connection set-up in new-connection mode).
    pub latency: Histogram,
    /// Failures by status: a gRPC code (`unavailable`, ...) or a connection step (`connect`, `tls`, `http2`, `timeout`).
    pub errors: BTreeMap<&'static str, u64>,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Connections opened (TCP + TLS + HTTP/2) within the window.
    pub handshakes: u64,
}

impl NodeStats {
    fn error(&mut self, kind: &'static str, message: impl FnOnce() -> String) {
        *self.errors.entry(kind).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{kind}: {}", message()));
        }
    }

    fn merge(&mut self, other: NodeStats) {
        self.latency.merge(&other.latency);
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.handshakes += other.handshakes;
    }

    /// Failed RPCs and connections.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The measurement window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
    /// When RPCs still in flight are given up on.
    hard_stop: Instant,
}

impl Window {
    fn contains(&self, at: Instant) -> bool {
        at >= self.start && at <= self.end
    }
}

/// Loads every node at once and returns each node's stats, in the order of `nodes`.
pub async fn run(
    nodes: &[BenchNode],
    tls: Option<Arc<ClientConfig>>,
    settings: Settings,
) -> Vec<NodeStats> {
    let mut opened: Vec<Vec<Option<Connection>>> = Vec::new();
    let mut setup: Vec<NodeStats> = nodes.iter().map(|_| NodeStats::default()).collect();
    if !settings.new_connection_per_rpc {
        opened = open_all(nodes, tls.as_ref(), settings, &mut setup).await;
    }
    let start = Instant::now() + settings.warmup;
    let window = Window {
        start,
        end: start + settings.duration,
        hard_stop: start + settings.duration + settings.timeout,
    };
    let mut tasks = JoinSet::new();
    for (index, node) in nodes.iter().enumerate() {
        let slots: Vec<Option<Connection>> = match opened.get_mut(index) {
            Some(connections) => std::mem::take(connections),
            None => (0..settings.connections).map(|_| None).collect(),
        };
        for connection in slots {
            let node = node.clone();
            let tls = tls.clone();
            if settings.new_connection_per_rpc {
                tasks.spawn(async move {
                    (
                        index,
                        one_rpc_per_connection(&node, tls, settings, window).await,
                    )
                });
            } else {
                tasks.spawn(async move {
                    (
                        index,
                        long_lived(&node, tls, connection, settings, window).await,
                    )
                });
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, stats)) => setup[index].merge(stats),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("a load task was cancelled: {error}"),
        }
    }
    setup
}

/// Opens every long-lived connection, [`OPEN_AT_ONCE`] at a time. A failure
/// leaves its slot empty (the task retries) and is counted.
async fn open_all(
    nodes: &[BenchNode],
    tls: Option<&Arc<ClientConfig>>,
    settings: Settings,
    stats: &mut [NodeStats],
) -> Vec<Vec<Option<Connection>>> {
    let mut opened: Vec<Vec<Option<Connection>>> = nodes.iter().map(|_| Vec::new()).collect();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(OPEN_AT_ONCE));
    let mut tasks = JoinSet::new();
    for (index, node) in nodes.iter().enumerate() {
        for _ in 0..settings.connections {
            let node = node.clone();
            let tls = tls.cloned();
            let semaphore = semaphore.clone();
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                let deadline = Instant::now() + settings.timeout;
                (index, connect::open(&node, tls.as_ref(), deadline).await)
            });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, Ok(connection))) => opened[index].push(Some(connection)),
            Ok((index, Err(error))) => {
                stats[index].error(error.kind, || error.message.clone());
                opened[index].push(None);
            }
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("a connect task was cancelled: {error}"),
        }
    }
    opened
}

type Rpc = (Instant, Result<(), tonic::Status>);

async fn roll(mut client: Client) -> Rpc {
    let started = Instant::now();
    let result = client.roll_die(RollDieRequest {}).await.map(drop);
    (started, result)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// Keeps `streams` RPCs in flight on one connection until the window closes.
async fn long_lived(
    node: &BenchNode,
    tls: Option<Arc<ClientConfig>>,
    mut connection: Option<Connection>,
    settings: Settings,
    window: Window,
) -> NodeStats {
    let mut stats = NodeStats::default();
    let mut in_flight = FuturesUnordered::new();
    let mut backoff = FIRST_BACKOFF;
    // One timer for the whole run rather than one per RPC.
    let hard_stop = sleep_until(window.hard_stop);
    tokio::pin!(hard_stop);
    loop {
        let now = Instant::now();
        if now >= window.end && in_flight.is_empty() {
            break;
        }
        if connection.as_ref().is_none_or(Connection::is_closed) && in_flight.is_empty() {
            connection = None;
            if now >= window.end {
                break;
            }
            match connect::open(node, tls.as_ref(), now + settings.timeout).await {
                Ok(opened) => {
                    backoff = FIRST_BACKOFF;
                    if window.contains(Instant::now()) {
                        stats.handshakes += 1;
                    }
                    connection = Some(opened);
                }
                Err(error) => {
                    if window.contains(Instant::now()) {
                        stats.error(error.kind, || error.message.clone());
                    }
                    let pause = backoff.min(window.end.saturating_duration_since(Instant::now()));
                    sleep(pause).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        if let Some(open) = connection.as_ref().filter(|c| !c.is_closed()) {
            while in_flight.len() < settings.streams && Instant::now() < window.end {
                in_flight.push(roll(open.client.clone()));
            }
        }
        tokio::select! {
            biased;
            done = in_flight.next() => {
                let Some((started, result)) = done else { continue };
                let ended = Instant::now();
                if !window.contains(ended) {
                    continue;
                }
                match result {
                    Ok(()) => stats.latency.record(micros(ended - started)),
                    Err(status) => stats.error(code_name(status.code()), || status.message().to_owned()),
                }
            }
            () = &mut hard_stop => {
                for _ in 0..in_flight.len() {
                    stats.error("timeout", || "no reply before the window closed plus --timeout".to_owned());
                }
                break;
            }
        }
    }
    stats
}

/// Opens a connection, makes one RPC and closes it, until the window closes.
async fn one_rpc_per_connection(
    node: &BenchNode,
    tls: Option<Arc<ClientConfig>>,
    settings: Settings,
    window: Window,
) -> NodeStats {
    let mut stats = NodeStats::default();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let deadline = started + settings.timeout;
        let connection = match connect::open(node, tls.as_ref(), deadline).await {
            Ok(connection) => connection,
            Err(ConnectError { kind, message }) => {
                if window.contains(Instant::now()) {
                    stats.error(kind, || message);
                }
                // A refused connect fails at once: don't spin on it.
                let pause = backoff.min(window.end.saturating_duration_since(Instant::now()));
                sleep(pause).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        let handshaken = Instant::now();
        let mut client = connection.client.clone();
        let result = timeout_at(deadline, client.roll_die(RollDieRequest {})).await;
        let ended = Instant::now();
        drop(client);
        drop(connection);
        if window.contains(handshaken) {
            stats.handshakes += 1;
        }
        if !window.contains(ended) {
            continue;
        }
        match result {
            Ok(Ok(_)) => stats.latency.record(micros(ended - started)),
            Ok(Err(status)) => {
                stats.error(code_name(status.code()), || status.message().to_owned())
            }
            Err(_) => stats.error("timeout", || {
                "no reply to RollDie before --timeout".to_owned()
            }),
        }
    }
    stats
}

/// A gRPC status code as the report names it: `unavailable`, `deadline_exceeded`, ...
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}
