//! A log writer that keeps logging every RPC cheap under load: when lines
//! come faster than one per [`QUIET`] interval, they are appended to a shared
//! buffer and a dedicated thread writes them to stderr in batches (one
//! `write(2)` for many lines, instead of a system call on a worker thread per
//! RPC). A line that arrives while the log is quiet is written at once by the
//! thread that logged it, as a plain stderr writer would, so a lone event
//! (an error, a reload, one RPC) is in the log before anything after it
//! happens.
//!
//! Batches go out at most about [`BATCH_DELAY`] after their first line, or
//! at once when [`HIGH_WATER`] bytes are waiting. The buffer is bounded
//! ([`MAX_PENDING`]): when stderr cannot keep up, logging threads wait for
//! room rather than drop lines, so the RPC log stays complete. [`LogGuard`]
//! writes out whatever is pending when it drops; `main` holds it until the
//! agent exits.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Bytes of log lines waiting for the writer thread before logging threads wait.
pub const MAX_PENDING: usize = 1 << 20;
/// Bytes waiting that make the writer thread write at once.
pub const HIGH_WATER: usize = 64 << 10;
/// How long the writer thread lets a batch gather. Each batch costs a wake-up
/// of the writer thread, which on a small machine takes a core from the
/// runtime's workers: at 1 ms (a thousand a second under load) that cost the
/// agent more than the lines' own `write` calls; see BENCHMARKS.md.
pub const BATCH_DELAY: Duration = Duration::from_millis(10);
/// How long after the last write the log counts as quiet, so that the next
/// line is written at once by the thread that logged it.
pub const QUIET: Duration = Duration::from_millis(1);

struct Pending {
    bytes: Vec<u8>,
    /// Someone (the writer thread, or a logging thread writing directly) is writing.
    writing: bool,
    /// When the last write ended.
    last_write: Instant,
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer thread: lines arrived, a direct write ended, or the guard dropped.
    arrived: Condvar,
    /// Wakes logging threads waiting for room.
    drained: Condvar,
    out: Mutex<Box<dyn Write + Send>>,
}

fn relock<T>(result: Result<T, std::sync::PoisonError<T>>) -> T {
    // A thread that panicked while holding a lock left whole lines behind.
    result.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        relock(self.pending.lock())
    }

    fn write_out(&self, bytes: &[u8]) {
        let mut out = relock(self.out.lock());
        // Nowhere to report a failed write to stderr; the lines are dropped.
        let _ = out.write_all(bytes).and_then(|()| out.flush());
    }
}

/// The `MakeWriter` for the tracing subscriber.
#[derive(Clone)]
pub struct NonBlocking {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NonBlocking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonBlocking")
    }
}

/// Keeps the writer thread; dropping it writes out every pending line.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Starts the writer thread for `out`. If the thread cannot start, every
/// line is written directly instead.
pub fn non_blocking<W: Write + Send + 'static>(out: W) -> (NonBlocking, LogGuard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            bytes: Vec::new(),
            writing: false,
            last_write: Instant::now(),
            closed: false,
        }),
        arrived: Condvar::new(),
        drained: Condvar::new(),
        out: Mutex::new(Box::new(out)),
    });
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("dice-log".to_owned())
        .spawn(move || write_loop(&worker))
        .ok();
    if thread.is_none() {
        shared.lock().closed = true;
    }
    (
        NonBlocking {
            shared: shared.clone(),
        },
        LogGuard { shared, thread },
    )
}

fn write_loop(shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        {
            let mut pending = shared.lock();
            while (pending.bytes.is_empty() || pending.writing) && !pending.closed {
                pending = relock(shared.arrived.wait(pending));
            }
            while pending.writing {
                // Closing while a logging thread writes directly: let it finish.
                pending = relock(shared.arrived.wait(pending));
            }
            if pending.bytes.is_empty() {
                return;
            }
            pending.writing = true;
            pending = relock(
                shared
                    .arrived
                    .wait_timeout_while(pending, BATCH_DELAY, |p| {
                        !p.closed && p.bytes.len() < HIGH_WATER
                    })
                    .map(|(guard, _)| guard)
                    .map_err(|poisoned| std::sync::PoisonError::new(poisoned.into_inner().0)),
            );
            std::mem::swap(&mut pending.bytes, &mut batch);
        }
        shared.drained.notify_all();
        shared.write_out(&batch);
        batch.clear();
        let mut pending = shared.lock();
        pending.writing = false;
        pending.last_write = Instant::now();
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_all();
        self.shared.drained.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's writer: tracing-subscriber formats a whole line, then writes it once.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = self.shared;
        let mut pending = shared.lock();
        let quiet =
            pending.bytes.is_empty() && !pending.writing && pending.last_write.elapsed() >= QUIET;
        if quiet || (pending.closed && !pending.writing && pending.bytes.is_empty()) {
            // Nothing waiting and nobody writing: write it now, from here.
            pending.writing = true;
            drop(pending);
            shared.write_out(line);
            let mut pending = shared.lock();
            pending.writing = false;
            pending.last_write = Instant::now();
            let more = !pending.bytes.is_empty() || pending.closed;
            drop(pending);
            if more {
                shared.arrived.notify_all();
            }
            return Ok(line.len());
        }
        while pending.bytes.len() >= MAX_PENDING && !pending.closed {
            pending = relock(shared.drained.wait(pending));
        }
        let before = pending.bytes.len();
        pending.bytes.extend_from_slice(line);
        let after = pending.bytes.len();
        let writing = pending.writing;
        drop(pending);
        // The first line of a batch wakes the writer, unless a write is under
        // way (its end wakes it); so does the line that fills a batch.
        if (before == 0 && !writing) || (before < HIGH_WATER && after >= HIGH_WATER) {
            shared.arrived.notify_all();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for NonBlocking {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_capture::Capture as Sink;

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_drops() {
        let sink = Sink::default();
        let (writer, guard) = non_blocking(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        let line = format!("thread {t} line {i}\n");
                        writer
                            .make_writer()
                            .write_all(line.as_bytes())
                            .expect("write");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("join");
        }
        drop(guard);
        let text = sink.text();
        assert_eq!(text.lines().count(), 40_000);
        for t in 0..4 {
            let prefix = format!("thread {t} line ");
            let order: Vec<usize> = text
                .lines()
                .filter_map(|line| line.strip_prefix(&prefix))
                .map(|i| i.parse().expect("number"))
                .collect();
            assert_eq!(order, (0..10_000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_line_in_a_quiet_log_is_written_before_write_returns() {
        let sink = Sink::default();
        let (writer, _guard) = non_blocking(sink.clone());
        for i in 0..3 {
            std::thread::sleep(QUIET * 2);
            let line = format!("quiet {i}\n");
            writer
                .make_writer()
                .write_all(line.as_bytes())
                .expect("write");
            assert!(sink.text().ends_with(&line), "{:?}", sink.text());
        }
    }
}
