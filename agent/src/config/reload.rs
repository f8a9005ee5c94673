//! Config reload: SIGHUP, or a change of the config file itself, re-reads and
//! validates the whole file. An invalid file changes nothing: each error is
//! logged as `--check` prints it and recorded for the info API and
//! `dice_config_reloads_total{outcome="rejected"}`. A valid one is put in
//! force at once for the keys that can change live (listeners added,
//! removed or changed, their `allow` lists and certificate files, `[admin]`,
//! the connection limits, `log.level`, `metrics.address`, `node.name`, `shutdown.grace_period`,
//! `tls.recheck_connections`); each other key that changed is named in a
//! warning saying it needs a restart, and keeps its old value meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dice_proto::cert::rfc3339;
use dice_proto::info::ReloadResult;
use tracing::{error, info, warn};

use super::{Config, Limits, LiveConfig};
use crate::services::AgentState;

/// The target of this module's events.
const TARGET: &str = "dice_agent::config_reload";

/// Re-reads the config file when asked, and puts a valid one in force.
#[derive(Debug)]
pub struct ConfigReload {
    path: PathBuf,
    /// The text last read, valid or not: an unchanged file is not re-checked
    /// (except on SIGHUP).
    last_source: Option<String>,
    live: Arc<LiveConfig>,
    state: Arc<AgentState>,
}

/// What a reload changed, by config key.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys now in force.
    pub applied: Vec<String>,
    /// Keys that changed in the file but keep their old value until a restart.
    pub need_restart: Vec<String>,
}

impl ConfigReload {
    /// Reloads the file the config in force was loaded from.
    pub fn new(live: Arc<LiveConfig>, state: Arc<AgentState>) -> Self {
        let path = live.current().file.clone();
        let last_source = std::fs::read_to_string(&path).ok();
        Self {
            path,
            last_source,
            live,
            state,
        }
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file: if its text changed, or always when `forced` (SIGHUP).
    pub fn check(&mut self, forced: bool) {
        let source = match std::fs::read_to_string(&self.path) {
            Ok(source) => source,
            Err(error) => {
                // A file replaced by a rename is briefly missing: only SIGHUP
                // reports it; the next event re-reads it.
                if forced {
                    let message = format!("{}: cannot read: {error}", self.path.display());
                    error!(target: TARGET, "{message}");
                    self.reject(message);
                }
                return;
            }
        };
        if !forced && self.last_source.as_deref() == Some(source.as_str()) {
            return;
        }
        self.last_source = Some(source.clone());
        let errors: Vec<String> = match super::parse(&self.path, &source) {
            // The certificate files are checked as `--check` does, so a
            // listener is never re-pointed at files it cannot serve.
            Ok(new) => match crate::tls::load_profiles(&new) {
                Ok(_) => return self.apply(new),
                Err(errors) => errors.iter().map(ToString::to_string).collect(),
            },
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        };
        for error in &errors {
            error!(target: TARGET, "{error}");
        }
        error!(target: TARGET, config = %self.path.display(), errors = errors.len(), "config reload rejected; still running on the previous config: fix the file (dice-agent --check tests it)");
        self.reject(errors.join("; "));
    }

    fn apply(&self, new: Config) {
        let old = self.live.current();
        let (mut merged, mut changes) = merge(&old, new);
        for key in &changes.need_restart {
            warn!(target: TARGET, key = %key, "config key changed but cannot change live: it needs a restart; the old value stays in force");
        }
        if changes.applied.iter().any(|key| key.starts_with("limits.")) {
            info!(target: TARGET, "new limits apply to new connections; HTTP/2 settings of open connections stay as they were");
        }
        let level = changes.applied.iter().any(|key| key == "log.level");
        if changes.applied.is_empty() {
            info!(target: TARGET, config = %self.path.display(), "config reloaded; nothing to change live");
        } else {
            info!(target: TARGET, config = %self.path.display(), changed = %changes.applied.join(","), "config reloaded");
        }
        // Last, so that the lines above are logged at the level they were.
        if level && let Err(error) = crate::log::set_level(&merged.log.level) {
            warn!(target: TARGET, key = "log.level", %error, "log.level not changed");
            merged.log.level.clone_from(&old.log.level);
            changes.applied.retain(|key| key != "log.level");
        }
        if !changes.applied.is_empty() {
            self.live.replace(merged);
        }
        self.record(true, String::new());
    }

    fn reject(&self, message: String) {
        self.record(false, message);
    }

    fn record(&self, ok: bool, error: String) {
        let outcome = if ok { "ok" } else { "rejected" };
        crate::metrics::metrics()
            .config_reloads
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .inc();
        let result = Some(ReloadResult {
            time: rfc3339(crate::unix_now()),
            ok,
            error,
        });
        match self.state.last_config_reload.lock() {
            Ok(mut last) => *last = result,
            Err(poisoned) => *poisoned.into_inner() = result,
        }
    }
}

/// The config to put in force after `new` was read while `old` was in force:
/// `new`'s values for keys that change live, `old`'s for the rest.
pub fn merge(old: &Config, new: Config) -> (Config, Changes) {
    let mut changes = Changes::default();
    let mut merged = old.clone();
    if new.node_name != old.node_name {
        changes.applied.push("node.name".into());
        merged.node_name = new.node_name.clone();
    }
    if new.admin != old.admin {
        changes.applied.push("admin".into());
        merged.admin = new.admin.clone();
    }
    if new.grace_period != old.grace_period {
        changes.applied.push("shutdown.grace_period".into());
        merged.grace_period = new.grace_period;
    }
    if new.recheck_connections != old.recheck_connections {
        changes.applied.push("tls.recheck_connections".into());
        merged.recheck_connections = new.recheck_connections;
    }
    merged.limits = merge_limits(&old.limits, &new.limits, &mut changes);
    merge_listeners(&mut merged, old, &new, &mut changes);
    if new.metrics != old.metrics {
        changes.applied.push("metrics.address".into());
        merged.metrics = new.metrics;
    }
    if new.log.level != old.log.level {
        changes.applied.push("log.level".into());
        merged.log.level = new.log.level.clone();
    }
    let fixed = [
        ("log.format", old.log.format != new.log.format),
        ("reload", old.reload != new.reload),
        ("acme", old.acme != new.acme),
    ];
    for (key, changed) in fixed {
        if changed {
            changes.need_restart.push(key.into());
        }
    }
    (merged, changes)
}

/// `new`'s limits, except those baked into the RPC stack at start, which
/// keep `old`'s values. HTTP/2 settings apply to new connections.
fn merge_limits(old: &Limits, new: &Limits, changes: &mut Changes) -> Limits {
    let mut merged = *new;
    let live = [
        (
            "limits.handshake_timeout",
            old.handshake_timeout != new.handshake_timeout,
        ),
        (
            "limits.max_handshakes",
            old.max_handshakes != new.max_handshakes,
        ),
        (
            "limits.max_connections",
            old.max_connections != new.max_connections,
        ),
        ("limits.idle_timeout", old.idle_timeout != new.idle_timeout),
        (
            "limits.max_concurrent_streams",
            old.max_concurrent_streams != new.max_concurrent_streams,
        ),
        (
            "limits.keepalive_interval",
            old.keepalive_interval != new.keepalive_interval,
        ),
        (
            "limits.keepalive_timeout",
            old.keepalive_timeout != new.keepalive_timeout,
        ),
    ];
    for (key, changed) in live {
        if changed {
            changes.applied.push(key.into());
        }
    }
    let fixed = [
        (
            "limits.max_message_bytes",
            old.max_message_bytes != new.max_message_bytes,
        ),
        (
            "limits.request_timeout",
            old.request_timeout != new.request_timeout,
        ),
    ];
    for (key, changed) in fixed {
        if changed {
            changes.need_restart.push(key.into());
        }
    }
    merged.max_message_bytes = old.max_message_bytes;
    merged.request_timeout = old.request_timeout;
    merged
}

/// Takes the listeners from `new`, naming what changed: a listener added is
/// bound, one removed drains, one whose address, mode or `trusted_proxy`
/// changed is both, and new certificate files or `allow` lists apply to the
/// next handshake.
fn merge_listeners(merged: &mut Config, old: &Config, new: &Config, changes: &mut Changes) {
    for listener in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == listener.name) {
            changes
                .applied
                .push(format!("listeners ({}) removed", listener.name));
        }
    }
    for (index, listener) in new.listeners.iter().enumerate() {
        let Some(was) = old.listeners.iter().find(|l| l.name == listener.name) else {
            changes
                .applied
                .push(format!("listeners[{index}] ({}) added", listener.name));
            continue;
        };
        let rebound = [
            ("address", was.address != listener.address),
            ("mode", was.mode.as_str() != listener.mode.as_str()),
            ("trusted_proxy", was.trusted_proxy != listener.trusted_proxy),
            (
                "tls",
                was.mode.as_str() == listener.mode.as_str() && was.mode != listener.mode,
            ),
            ("allow", was.allow != listener.allow),
            ("limits", was.rate_limits != listener.rate_limits),
        ];
        for (key, changed) in rebound {
            if changed {
                changes.applied.push(format!("listeners[{index}].{key}"));
            }
        }
    }
    merged.listeners = new.listeners.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let source = format!(
            "[node]\nname = \"node-1\"\n[[listeners]]\nname = \"plain\"\naddress = \"127.0.0.1:0\"\nmode = \"h2c\"\n{extra}"
        );
        super::super::parse(Path::new("/test/agent.toml"), &source).expect("a valid config")
    }

    #[test]
    fn live_keys_are_applied_and_the_rest_wait_for_a_restart() {
        let old = config("[limits]\nmax_connections = 10\nrequest_timeout = \"5s\"\n");
        let new = config(
            "[limits]\nmax_connections = 20\nrequest_timeout = \"9s\"\n[log]\nlevel = \"debug\"\n[shutdown]\ngrace_period = \"1s\"\n",
        );
        let (merged, changes) = merge(&old, new);
        assert_eq!(
            changes.applied,
            [
                "shutdown.grace_period",
                "limits.max_connections",
                "log.level"
            ]
        );
        assert_eq!(changes.need_restart, ["limits.request_timeout"]);
        assert_eq!(merged.limits.max_connections, 20);
        assert_eq!(merged.limits.request_timeout, old.limits.request_timeout);
        assert_eq!(merged.log.level, "debug");
        assert_eq!(merged.grace_period, std::time::Duration::from_secs(1));
    }

    #[test]
    fn listeners_added_or_removed_apply_live() {
        let old = config("");
        let new =
            config("[[listeners]]\nname = \"more\"\naddress = \"127.0.0.1:0\"\nmode = \"h2c\"\n");
        let (merged, changes) = merge(&old, new);
        assert_eq!(changes.applied, ["listeners[1] (more) added"]);
        assert!(changes.need_restart.is_empty());
        assert_eq!(merged.listeners.len(), 2);
        let (merged, changes) = merge(&merged, old);
        assert_eq!(changes.applied, ["listeners (more) removed"]);
        assert_eq!(merged.listeners.len(), 1);
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let (_, changes) = merge(&config(""), config(""));
        assert_eq!(changes, Changes::default());
    }
}
