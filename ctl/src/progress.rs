//! A progress line on stderr while a large fan-out runs: `dicectl: 532/1000 nodes`.
//!
//! Shown only when stderr is a terminal and the run has at least
//! [`PROGRESS_MIN_NODES`] nodes; otherwise nothing at all is written, so
//! logs and pipes never see it. Redrawn at most every [`REDRAW_INTERVAL`],
//! and erased when the run ends, before any result is printed.

use std::io::{self, IsTerminal as _, Write};
use std::time::{Duration, Instant};

/// Runs with fewer nodes finish too fast for a progress line to help.
pub const PROGRESS_MIN_NODES: usize = 20;
/// The shortest time between two redraws.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

/// The progress line of one fan-out.
pub struct Progress {
    total: usize,
    done: usize,
    last_draw: Option<Instant>,
    out: Option<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("total", &self.total)
            .field("done", &self.done)
            .field("enabled", &self.out.is_some())
            .finish()
    }
}

impl Progress {
    /// Progress on stderr for `total` nodes, if stderr is a terminal and the run is large.
    pub fn stderr(total: usize) -> Self {
        let out: Option<Box<dyn Write + Send>> = (total >= PROGRESS_MIN_NODES
            && io::stderr().is_terminal())
        .then(|| Box::new(io::stderr()) as Box<dyn Write + Send>);
        Self::to(total, out)
    }

    /// No progress line.
    pub fn disabled() -> Self {
        Self::to(0, None)
    }

    fn to(total: usize, out: Option<Box<dyn Write + Send>>) -> Self {
        Self {
            total,
            done: 0,
            last_draw: None,
            out,
        }
    }

    /// Counts one finished node, redrawing if the last draw is old enough.
    pub fn advance(&mut self) {
        self.done += 1;
        let due = self
            .last_draw
            .is_none_or(|last| last.elapsed() >= REDRAW_INTERVAL);
        if due && self.done < self.total {
            self.draw();
        }
    }

    /// Erases the line.
    pub fn finish(&mut self) {
        if self.last_draw.is_some()
            && let Some(out) = &mut self.out
        {
            // Nothing useful is left to do if stderr itself is gone.
            let _ = write!(out, "\r\x1b[2K").and_then(|()| out.flush());
        }
        self.last_draw = None;
    }

    fn draw(&mut self) {
        let Some(out) = &mut self.out else { return };
        let _ = write!(out, "\r\x1b[2Kdicectl: {}/{} nodes", self.done, self.total)
            .and_then(|()| out.flush());
        self.last_draw = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn draws_then_erases() {
        let out = Shared::default();
        let mut progress = Progress::to(3, Some(Box::new(out.clone())));
        progress.advance();
        progress.advance(); // within the redraw interval: not drawn
        progress.advance(); // the last one: erased by finish, not drawn
        progress.finish();
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text, "\r\x1b[2Kdicectl: 1/3 nodes\r\x1b[2K");
    }

    #[test]
    fn disabled_writes_nothing() {
        let mut progress = Progress::disabled();
        progress.advance();
        progress.finish();
        assert!(progress.out.is_none());
    }
}
