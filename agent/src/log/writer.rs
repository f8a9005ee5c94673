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

    /// A sink whose writes block while its gate is shut, keeping what they write.
    #[derive(Clone, Default)]
    struct Gated {
        shut: Arc<(Mutex<bool>, Condvar)>,
        sink: Sink,
    }

    impl Gated {
        fn shut() -> Self {
            let gated = Self::default();
            *gated.shut.0.lock().expect("gate") = true;
            gated
        }

        fn open(&self) {
            *self.shut.0.lock().expect("gate") = false;
            self.shut.1.notify_all();
        }
    }

    impl Write for Gated {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (shut, opened) = &*self.shut;
            let mut guard = shut.lock().expect("gate");
            while *guard {
                guard = opened.wait(guard).expect("gate");
            }
            drop(guard);
            self.sink.write(bytes)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Opens the gate when dropped, so a failing test does not hang in the
    /// guard's drop.
    struct OpenOnDrop(Gated);

    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.open();
        }
    }

    /// Starts the writer on a shut sink, then writes `line` on a thread of
    /// its own into the quiet log, so that thread writes it directly and
    /// stays in the sink until the gate opens. The receiver hears when
    /// the write returned.
    fn shut_with_a_write_in_flight(
        line: &str,
    ) -> (
        Gated,
        NonBlocking,
        LogGuard,
        std::sync::mpsc::Receiver<()>,
        std::thread::JoinHandle<()>,
    ) {
        let gated = Gated::shut();
        let (writer, guard) = non_blocking(gated.clone());
        std::thread::sleep(QUIET * 2);
        let (returned, thread) = write_on_a_thread(&writer, line.to_owned());
        while !relock(writer.shared.pending.lock()).writing {
            std::thread::yield_now();
        }
        (gated, writer, guard, returned, thread)
    }

    /// Writes `line` on a thread of its own; the receiver hears when it returned.
    fn write_on_a_thread(
        writer: &NonBlocking,
        line: String,
    ) -> (std::sync::mpsc::Receiver<()>, std::thread::JoinHandle<()>) {
        let writer = writer.clone();
        let (done, returned) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            writer
                .make_writer()
                .write_all(line.as_bytes())
                .expect("write");
            let _ = done.send(());
        });
        (returned, thread)
    }

    /// How long a test waits to be sure something is blocked.
    const BLOCKED: Duration = Duration::from_millis(200);

    #[test]
    fn a_full_buffer_makes_logging_wait_and_loses_no_line() {
        // The first line stays in the shut sink, so nothing drains the
        // buffer behind it.
        let (gated, writer, guard, first, first_thread) = shut_with_a_write_in_flight("first\n");
        let _open = OpenOnDrop(gated.clone());
        let line = format!("{}\n", "x".repeat(1023));
        for _ in 0..MAX_PENDING / line.len() {
            writer
                .make_writer()
                .write_all(line.as_bytes())
                .expect("write");
        }
        let (last, last_thread) = write_on_a_thread(&writer, "last\n".to_owned());
        assert!(
            last.recv_timeout(BLOCKED).is_err(),
            "wrote into a full buffer"
        );
        assert!(first.try_recv().is_err(), "the shut sink took a line");
        gated.open();
        last.recv_timeout(Duration::from_secs(10))
            .expect("room once the sink drains");
        first_thread.join().expect("join");
        last_thread.join().expect("join");
        drop(guard);
        let text = gated.sink.text();
        assert_eq!(text.lines().count(), MAX_PENDING / line.len() + 2);
        assert!(text.starts_with("first\n") && text.ends_with("last\n"));
    }

    #[test]
    fn closing_waits_for_a_write_in_flight_and_then_writes_what_is_pending() {
        let (gated, writer, guard, _, in_flight) = shut_with_a_write_in_flight("in flight\n");
        let _open = OpenOnDrop(gated.clone());
        writer.make_writer().write_all(b"pending\n").expect("write");
        let (closed, was_closed) = std::sync::mpsc::channel();
        let dropper = std::thread::spawn(move || {
            drop(guard);
            let _ = closed.send(());
        });
        assert!(
            was_closed.recv_timeout(BLOCKED).is_err(),
            "closed with a write in flight"
        );
        gated.open();
        was_closed
            .recv_timeout(Duration::from_secs(10))
            .expect("closed once the write ended");
        dropper.join().expect("join");
        in_flight.join().expect("join");
        assert_eq!(gated.sink.text(), "in flight\npending\n");
        // Once closed, a line is written directly.
        writer.make_writer().write_all(b"after\n").expect("write");
        assert!(gated.sink.text().ends_with("after\n"));
    }
}
