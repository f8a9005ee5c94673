//! What the info API shows of the ACME client: when it asks next, and how
//! its last attempts went. One ACME client per process.

use std::sync::{Mutex, OnceLock, PoisonError};

use dice_proto::cert::rfc3339;
use dice_proto::info::AcmeStatus;

use crate::config::AcmeConfig;

static STATUS: OnceLock<Mutex<AcmeStatus>> = OnceLock::new();

fn update(change: impl FnOnce(&mut AcmeStatus)) {
    if let Some(status) = STATUS.get() {
        change(&mut status.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Starts reporting for `config`; the renewal counters start at 0.
pub fn init(config: &AcmeConfig) {
    for outcome in ["ok", "failed"] {
        drop(
            crate::metrics::metrics()
                .acme_renewals
                .get_or_create(&crate::metrics::OutcomeLabels { outcome }),
        );
    }
    let _ = STATUS.set(Mutex::new(AcmeStatus {
        directory: config.directory.clone(),
        challenge: config.challenge.as_str().to_owned(),
        ..AcmeStatus::default()
    }));
}

/// The state now; `None` without `[acme]`.
pub fn snapshot() -> Option<AcmeStatus> {
    STATUS.get().map(|status| {
        status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    })
}

/// The account in use.
pub fn account(url: &str) {
    update(|status| status.account = url.to_owned());
}

/// The next attempt is due at `time` (Unix seconds).
pub fn next_attempt(time: i64) {
    update(|status| status.next_attempt = rfc3339(time));
}

/// A certificate was obtained at `time`.
pub fn succeeded(time: i64) {
    update(|status| {
        status.last_success = rfc3339(time);
        status.last_error.clear();
        status.last_error_time.clear();
        status.failures = 0;
    });
}

/// An attempt failed at `time`, the `failures`th in a row.
pub fn failed(error: &str, failures: u32, time: i64) {
    update(|status| {
        status.last_error = error.to_owned();
        status.last_error_time = rfc3339(time);
        status.failures = failures;
    });
}
