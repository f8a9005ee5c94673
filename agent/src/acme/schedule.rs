//! When to renew: once `renew_before` of the lifetime is left, minus a random
//! share of up to a tenth of that window (so a fleet issued at once does not
//! renew at once), and after a failure with capped exponential backoff. The
//! jitter never reaches back past halfway to the start of the window, so even
//! a `renew_before` close to 1 leaves time between two renewals.

use std::time::Duration;

use crate::config::Fraction;

/// The first wait after a failed renewal; it doubles with each failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between renewal attempts after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When (Unix seconds) to renew a certificate valid from `not_before` to
/// `not_after`. `jitter` in `[0, 1)` picks the point in the jitter window.
pub fn renew_at(not_before: i64, not_after: i64, renew_before: Fraction, jitter: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    let window = renew_before.of(lifetime);
    // A tenth of the window at most: with "1/3" of 24 h, up to 48 min earlier.
    let most = (window / 10).min((lifetime - window) / 2);
    let spread = (most as f64 * jitter.clamp(0.0, 1.0)) as i64;
    not_after - window - spread
}

/// The wait before attempt number `failures + 1` after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_with_a_third_left_and_jitter_earlier() {
        let third = Fraction { num: 1, den: 3 };
        // 24 hour certificate: renew with 8 h left, up to 48 min earlier.
        assert_eq!(renew_at(0, 86_400, third, 0.0), 57_600);
        assert_eq!(renew_at(0, 86_400, third, 0.999), 57_600 - 2_877);
        assert_eq!(renew_at(100, 100, third, 0.5), 100);
        // Renewing with 59/60 of a minute left: never before the issuance.
        let late = Fraction { num: 59, den: 60 };
        assert_eq!(renew_at(0, 60, late, 0.0), 1);
        assert!(renew_at(0, 60, late, 0.999) >= 0);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
