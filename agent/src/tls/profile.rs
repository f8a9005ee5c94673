//! The swappable certificate material of one or more listeners.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::watch;

use super::{TlsError, TlsMaterial};
use crate::config::{Config, Mode, TlsFiles};

/// The certificate material one or more listeners serve, swappable at runtime:
/// each handshake reads the current server config, so installing new material
/// is a single atomic swap and open connections keep what they started with.
#[derive(Debug)]
pub struct TlsProfile {
    /// The files this profile serves.
    pub files: TlsFiles,
    current: ArcSwap<TlsMaterial>,
    /// Held while the files are read (by the reloader) or replaced (by the
    /// admin API), so a reader never sees a half-replaced certificate and key.
    files_lock: Mutex<()>,
    /// Counts installs, so open connections can be checked again after each.
    installs: watch::Sender<u64>,
}

impl TlsProfile {
    /// A profile serving `material`, loaded from `files`.
    pub fn new(files: TlsFiles, material: TlsMaterial) -> Self {
        export_not_after(&files, &material);
        Self {
            files,
            current: ArcSwap::from_pointee(material),
            files_lock: Mutex::new(()),
            installs: watch::Sender::new(0),
        }
    }

    /// The server config for the next handshake.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load().server_config.clone()
    }

    /// The material being served now.
    pub fn material(&self) -> Arc<TlsMaterial> {
        self.current.load_full()
    }

    /// Locks the profile's files: no one else reads or replaces them until
    /// the guard is dropped. Hold it for file work only, never across an await.
    pub fn lock_files(&self) -> MutexGuard<'_, ()> {
        self.files_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves `material` from the next handshake on.
    pub fn install(&self, material: TlsMaterial) {
        export_not_after(&self.files, &material);
        self.current.store(Arc::new(material));
        self.installs.send_modify(|count| *count += 1);
    }

    /// Wakes on every [`TlsProfile::install`] from now on (a file reload, or
    /// an admin install, trust change or rollback).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.installs.subscribe()
    }
}

fn export_not_after(files: &TlsFiles, material: &TlsMaterial) {
    crate::metrics::metrics()
        .cert_not_after
        .get_or_create(&crate::metrics::CertLabels {
            cert: files.cert.path.display().to_string(),
        })
        .set(material.leaf.not_after);
}

/// Loads the certificate material of every mTLS listener, once per distinct set of files.
pub fn load_profiles(config: &Config) -> Result<HashMap<TlsFiles, Arc<TlsProfile>>, Vec<TlsError>> {
    let now = crate::unix_now();
    let mut profiles = HashMap::new();
    let mut errors = Vec::new();
    for listener in &config.listeners {
        let Mode::Mtls(files) = &listener.mode else {
            continue;
        };
        if profiles.contains_key(files) || errors.iter().any(|e: &TlsError| files_contain(files, e))
        {
            continue;
        }
        match TlsMaterial::load(files, now) {
            Ok(material) => {
                profiles.insert(
                    files.clone(),
                    Arc::new(TlsProfile::new(files.clone(), material)),
                );
            }
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(profiles)
    } else {
        Err(errors)
    }
}

fn files_contain(files: &TlsFiles, error: &TlsError) -> bool {
    [&files.cert, &files.key, &files.client_ca]
        .into_iter()
        .chain(&files.crl)
        .any(|file| *file == error.file)
}
