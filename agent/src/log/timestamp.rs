//! Log line timestamps, formatted as tracing-subscriber's default timer
//! formats them, with the calendar arithmetic done once a second.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The last second of 9999, the last one written with a four-digit year.
const LAST_FOUR_DIGIT_YEAR: u64 = 253_402_300_799;

thread_local! {
    /// The second last formatted on this thread, and its text without the `Z`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Timestamps exactly as tracing-subscriber's default `SystemTime` timer
/// writes them (`2026-11-29T01:43:30.554772Z`, UTC, microseconds), with the
/// date and time of day formatted once per second per thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timestamp;

impl FormatTime for Timestamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let since = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) if since.as_secs() <= LAST_FOUR_DIGIT_YEAR => since,
            _ => return tracing_subscriber::fmt::time::SystemTime.format_time(w),
        };
        let secs = since.as_secs();
        SECOND.with_borrow_mut(|(second, text)| {
            if *second != secs {
                // Fits in i64: at most LAST_FOUR_DIGIT_YEAR.
                *text = dice_proto::cert::rfc3339(secs as i64);
                text.pop(); // the `Z`
                *second = secs;
            }
            w.write_str(text)?;
            let fraction = fraction(since.subsec_micros());
            // ASCII digits and punctuation: always UTF-8.
            w.write_str(std::str::from_utf8(&fraction).unwrap_or(".000000Z"))
        })
    }
}

/// `.uuuuuuZ`: the microseconds (below 1,000,000), six digits, and the zone,
/// written without `core::fmt` (it is part of every log line).
fn fraction(micros: u32) -> [u8; 8] {
    let mut text = *b".000000Z";
    let mut rest = micros;
    for digit in text[1..7].iter_mut().rev() {
        // A digit: rest % 10 < 10.
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(timer: &impl FormatTime) -> String {
        let mut text = String::new();
        timer
            .format_time(&mut Writer::new(&mut text))
            .expect("format");
        text
    }

    #[test]
    fn fractions_have_six_digits() {
        for micros in [0, 7, 42, 999, 123_456, 999_999] {
            assert_eq!(fraction(micros), format!(".{micros:06}Z").as_bytes());
        }
    }

    #[test]
    fn timestamps_look_like_tracing_subscribers() {
        for _ in 0..3 {
            let ours = format(&Timestamp);
            let theirs = format(&tracing_subscriber::fmt::time::SystemTime);
            assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
            // Same up to the minute (a second may tick between the two calls).
            assert_eq!(ours[..16], theirs[..16], "{ours} vs {theirs}");
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
        }
    }
}
