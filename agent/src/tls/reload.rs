//! Hot reload of certificate material.
//!
//! The folders holding every configured file are watched (watching a file
//! itself loses the watch when it is replaced by a rename, and a Kubernetes
//! `..data` symlink swap never touches it); events are debounced, backed up by
//! a periodic re-check, and SIGHUP forces one. Whether anything changed is
//! decided on content, never on mtime or event kind. New material is checked
//! in full before it is swapped in; until it passes, the last good material
//! keeps serving, the failure is logged (warn, then error once the files have
//! disagreed for the settle period) and shown in the info API.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dice_proto::cert::rfc3339;
use dice_proto::info::ReloadResult;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{TlsBytes, TlsError, TlsMaterial, TlsProfile};
use crate::config::{ConfigReload, ReloadConfig};
use crate::services::AgentState;

/// The target of this module's events, as before it moved into `tls/`.
const TARGET: &str = "dice_agent::reload";

/// Quiet time after a file event before files are read, so a burst of writes
/// (a certificate, then its key) is read once, after the last of them.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// The longest a burst of file events can put off reading the files (and
/// SIGHUP, the poll timer and shutdown): a folder written to more often than
/// [`DEBOUNCE`] never goes quiet.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);
/// How often material that failed its checks is re-read while it keeps failing.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Why a reload check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A file event, the poll timer or a retry: act only if the content changed.
    Changed,
    /// SIGHUP: re-check everything and log the outcome even if nothing changed.
    Forced,
}

/// A profile whose files currently fail their checks.
struct Failing {
    since: Instant,
    error: String,
    escalated: bool,
}

/// Watches certificate files and swaps new material into the profiles.
pub struct Reloader {
    profiles: Vec<Arc<TlsProfile>>,
    failing: Vec<Option<Failing>>,
    state: Arc<AgentState>,
    config: ReloadConfig,
    /// The config file, re-read on its own changes and on SIGHUP.
    config_file: ConfigReload,
    hangup: Signal,
    /// Woken by the watcher on any event in a watched folder.
    events: mpsc::Receiver<()>,
    /// Profiles of listeners a config reload added or re-pointed, to follow too.
    adopt: mpsc::UnboundedReceiver<Arc<TlsProfile>>,
    adopt_sender: mpsc::UnboundedSender<Arc<TlsProfile>>,
    /// The folders of certificate files, where any event wakes the reloader.
    cert_dirs: Arc<Mutex<BTreeSet<PathBuf>>>,
    /// Kept for its watches; `None` if watching failed (then polls and SIGHUP only).
    watcher: Option<notify::RecommendedWatcher>,
}

impl Reloader {
    /// Prepares a reloader for `profiles`, installing the SIGHUP handler and
    /// the file watches now, so a SIGHUP sent or a file changed once the agent
    /// is ready is never lost; then re-reads the files once, for changes made
    /// after they were loaded but before the watches began.
    pub fn new(
        profiles: Vec<Arc<TlsProfile>>,
        state: Arc<AgentState>,
        config: ReloadConfig,
        config_file: ConfigReload,
    ) -> std::io::Result<Self> {
        let (sender, events) = mpsc::channel::<()>(1);
        let (adopt_sender, adopt) = mpsc::unbounded_channel();
        let mut reloader = Self {
            failing: profiles.iter().map(|_| None).collect(),
            profiles,
            state,
            config,
            config_file,
            hangup: signal(SignalKind::hangup())?,
            events,
            adopt,
            adopt_sender,
            cert_dirs: Arc::default(),
            watcher: None,
        };
        reloader.watcher = reloader.watch(sender);
        reloader.check_all(Trigger::Changed);
        Ok(reloader)
    }

    /// Where to send the profile of a listener a config reload added or
    /// re-pointed at other files, so that its files are watched too.
    pub fn follower(&self) -> mpsc::UnboundedSender<Arc<TlsProfile>> {
        self.adopt_sender.clone()
    }

    /// Follows `profile` from now on, watching the folders of its files.
    fn adopt(&mut self, profile: Arc<TlsProfile>) {
        if self.profiles.iter().any(|p| Arc::ptr_eq(p, &profile)) {
            return;
        }
        let files = &profile.files;
        let paths = [&files.cert, &files.key, &files.client_ca]
            .into_iter()
            .chain(&files.crl)
            .map(|file| file.path.as_path())
            .collect();
        for dir in dirs_of(paths) {
            let added = self
                .cert_dirs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(dir.clone());
            if let (true, Some(watcher)) = (added, self.watcher.as_mut()) {
                match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        info!(target: TARGET, dir = %dir.display(), "watching for certificate changes")
                    }
                    Err(error) => {
                        warn!(target: TARGET, dir = %dir.display(), %error, "cannot watch folder; relying on reload.poll_interval and SIGHUP")
                    }
                }
            }
        }
        self.profiles.push(profile);
        self.failing.push(None);
    }

    /// Watches and reloads until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut poll = self.config.poll_interval.map(|period| {
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        loop {
            let retry = self.failing.iter().any(Option::is_some);
            let trigger = tokio::select! {
                () = stop.cancelled() => return,
                Some(profile) = self.adopt.recv() => {
                    self.adopt(profile);
                    continue;
                }
                Some(()) = self.events.recv() => {
                    // Quiet for DEBOUNCE, or MAX_DEBOUNCE at most: a folder that never
                    // goes quiet must not hold off reloads, SIGHUP or shutdown.
                    let give_up = tokio::time::Instant::now() + MAX_DEBOUNCE;
                    loop {
                        let quiet = (tokio::time::Instant::now() + DEBOUNCE).min(give_up);
                        tokio::select! {
                            () = stop.cancelled() => return,
                            event = tokio::time::timeout_at(quiet, self.events.recv()) => {
                                let more = matches!(event, Ok(Some(())));
                                if !more || tokio::time::Instant::now() >= give_up {
                                    break;
                                }
                            }
                        }
                    }
                    Trigger::Changed
                }
                _ = self.hangup.recv() => {
                    info!(target: TARGET, "SIGHUP: re-reading the config file and re-checking all certificate material");
                    Trigger::Forced
                }
                _ = tick(poll.as_mut()) => Trigger::Changed,
                () = tokio::time::sleep(RETRY_INTERVAL), if retry => Trigger::Changed,
            };
            if trigger == Trigger::Forced {
                crate::process::systemd::reloading();
                self.check_all(trigger);
                crate::process::systemd::ready();
            } else {
                self.check_all(trigger);
            }
        }
    }

    /// Starts a watcher on the folder of every configured file, and of the
    /// file a symlink points at. Without one, the poll timer alone notices changes.
    ///
    /// In a folder of certificate files any change wakes the reloader (a
    /// Kubernetes `..data` swap touches no configured name); in the config
    /// file's own folder only a change naming the config file does, so that
    /// busy neighbours (a log file, say) never hold off a reload.
    fn watch(&self, events: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
        *self
            .cert_dirs
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = dirs_of(self.cert_paths());
        let cert_dirs = self.cert_dirs.clone();
        let config_file = self.config_file.path().to_owned();
        let config_names: Vec<PathBuf> = std::iter::once(config_file.clone())
            .chain(std::fs::canonicalize(&config_file).ok())
            .collect();
        let mut watcher = match notify::recommended_watcher(
            move |event: notify::Result<notify::Event>| {
                // Opening a file is no change, and the checks open every file:
                // waking on opens would make each check wake the next, forever.
                let relevant = |event: &notify::Event| {
                    event.paths.iter().any(|path| {
                        config_names.contains(path)
                            || path.parent().is_some_and(|dir| {
                                cert_dirs
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .contains(dir)
                            })
                    })
                };
                if event.is_ok_and(|event| !is_read(&event.kind) && relevant(&event)) {
                    // A full channel already holds a wake-up: nothing is lost.
                    let _ = events.try_send(());
                }
            },
        ) {
            Ok(watcher) => watcher,
            Err(error) => {
                warn!(target: TARGET, %error, "cannot watch certificate files; relying on reload.poll_interval and SIGHUP");
                return None;
            }
        };
        for dir in self.watched_dirs() {
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    info!(target: TARGET, dir = %dir.display(), "watching for certificate changes")
                }
                Err(error) => {
                    warn!(target: TARGET, dir = %dir.display(), %error, "cannot watch folder; relying on reload.poll_interval and SIGHUP")
                }
            }
        }
        Some(watcher)
    }

    fn watched_dirs(&self) -> BTreeSet<PathBuf> {
        let mut paths = self.cert_paths();
        paths.push(self.config_file.path());
        dirs_of(paths)
    }

    /// Every certificate, key, CA and CRL file of every profile.
    fn cert_paths(&self) -> Vec<&Path> {
        let mut paths = Vec::new();
        for profile in &self.profiles {
            let files = &profile.files;
            paths.extend(
                [&files.cert, &files.key, &files.client_ca]
                    .into_iter()
                    .chain(&files.crl)
                    .map(|file| file.path.as_path()),
            );
        }
        paths
    }

    fn check_all(&mut self, trigger: Trigger) {
        self.config_file.check(trigger == Trigger::Forced);
        for index in 0..self.profiles.len() {
            self.check(index, trigger);
        }
    }

    fn check(&mut self, index: usize, trigger: Trigger) {
        let profile = self.profiles[index].clone();
        // The whole check holds the files' lock: an admin install replaces
        // the certificate and key together (this read sees both old or both
        // new) and swaps its material in before it lets go, so what is read
        // here is never older than what is served.
        let _files = profile.lock_files();
        let current = profile.material();
        let bytes = match TlsBytes::read(&profile.files) {
            Ok(bytes) => bytes,
            Err(error) => return self.reject(index, &error, trigger),
        };
        if bytes.fingerprint() == current.fingerprint {
            if self.failing[index].take().is_some() {
                info!(target: TARGET, cert = %profile.files.cert.path.display(), serial = %current.leaf.serial, "certificate files agree with the served material again");
                // The failure recorded for the info API is over: say so.
                self.record(true, String::new());
            } else if trigger == Trigger::Forced {
                info!(target: TARGET, cert = %profile.files.cert.path.display(), serial = %current.leaf.serial, "certificate material unchanged");
                self.record(true, String::new());
            }
            return;
        }
        match TlsMaterial::from_bytes(&profile.files, bytes, crate::unix_now()) {
            Ok(material) => {
                info!(target: TARGET,
                    cert = %profile.files.cert.path.display(),
                    key = %profile.files.key.path.display(),
                    client_ca = %profile.files.client_ca.path.display(),
                    old_serial = %current.leaf.serial,
                    new_serial = %material.leaf.serial,
                    not_after = %rfc3339(material.leaf.not_after),
                    "certificate reloaded"
                );
                material.log_warnings();
                profile.install(material);
                self.failing[index] = None;
                self.record(true, String::new());
            }
            Err(error) => self.reject(index, &error, trigger),
        }
    }

    fn reject(&mut self, index: usize, error: &TlsError, trigger: Trigger) {
        let serving = self.profiles[index].material().leaf.serial.clone();
        let message = error.to_string();
        let settle = self.config.settle_period;
        match &mut self.failing[index] {
            Some(failing) if failing.error == message && trigger == Trigger::Changed => {
                if !failing.escalated && failing.since.elapsed() >= settle {
                    failing.escalated = true;
                    error!(target: TARGET, error = %message, serving_serial = %serving, settle_period = ?settle, "certificate files still unusable after the settle period; still serving the previous certificate: fix the files");
                }
            }
            failing => {
                warn!(target: TARGET, error = %message, serving_serial = %serving, "certificate reload rejected; still serving the previous certificate");
                let since = failing.as_ref().map_or_else(Instant::now, |f| f.since);
                *failing = Some(Failing {
                    since,
                    error: message.clone(),
                    escalated: false,
                });
            }
        }
        self.record(false, message);
    }

    fn record(&self, ok: bool, error: String) {
        let outcome = if ok { "ok" } else { "rejected" };
        crate::metrics::metrics()
            .reloads
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .inc();
        let result = ReloadResult {
            time: rfc3339(crate::unix_now()),
            ok,
            error,
        };
        match self.state.last_reload.lock() {
            Ok(mut last) => *last = result,
            Err(poisoned) => *poisoned.into_inner() = result,
        }
    }
}

/// The folders of `paths`, and of the files they point at if symlinks.
fn dirs_of(paths: Vec<&Path>) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for file in paths {
        let resolved = std::fs::canonicalize(file).ok();
        for path in std::iter::once(file).chain(resolved.as_deref()) {
            if let Some(dir) = path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                dirs.insert(dir.to_owned());
            }
        }
    }
    dirs
}

/// An event that only says a file was opened or read. A write that ends
/// (`Close(Write)`) counts as a change.
fn is_read(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if *access != AccessKind::Close(AccessMode::Write))
}

async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn opens_and_reads_are_not_changes() {
        let reads = [
            AccessKind::Open(AccessMode::Any),
            AccessKind::Close(AccessMode::Read),
            AccessKind::Read,
            AccessKind::Any,
        ];
        for kind in reads {
            assert!(is_read(&EventKind::Access(kind)), "{kind:?}");
        }
        let changes = [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
        ];
        for kind in changes {
            assert!(!is_read(&kind), "{kind:?}");
        }
    }
}
