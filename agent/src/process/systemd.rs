//! systemd readiness notification (`Type=notify`): READY=1 once every
//! listener is bound, RELOADING=1 while a SIGHUP re-check runs, STOPPING=1 on
//! shutdown. Without `NOTIFY_SOCKET` in the environment each call does nothing.

use sd_notify::NotifyState;
use tracing::warn;

/// The target of this module's events, as before it moved into `process/`.
const TARGET: &str = "dice_agent::systemd";

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!(target: TARGET, %error, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Tells systemd the agent is serving.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Tells systemd a reload started; [`ready`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Tells systemd the agent is shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}
