//! Replacing certificate files under a running agent the ways operators and
//! orchestrators do, and waiting until the agent shows what was written.
//!
//! - [`replace`] rewrites one file in place (`cp new old`) or through a temp
//!   file renamed over it (what most tools do).
//! - [`LiveTls`] is the `cert`/`key`/`client_ca` trio an agent serves, in a
//!   folder of its own that a test rewrites.
//! - [`KubeVolume`] lays files out as the kubelet projects a Secret
//!   (`NAME -> ..data/NAME`, `..data -> ..TIMESTAMP/`) and swaps them the way it does.
//! - [`await_serial`], [`await_reload`] and [`await_log`] poll fresh handshakes,
//!   the info API and the log under a deadline; nothing here sleeps to
//!   synchronize. [`assert_serial_holds`] watches for a change that must not come.

use std::fmt::Display;
use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dice_proto::info::ReloadResult;

use crate::agent::Agent;
use crate::client::{Client, Handshake, TlsClient, handshake};
use crate::config::TlsFiles;
use crate::pki::Identity;
use crate::poll::POLL_INTERVAL;

/// How long a change may take to show: the agent debounces file events for
/// 50 ms; the rest is slack for a loaded machine running tests in parallel.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How a file is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Truncate the file and write the new bytes into the same inode, as
    /// `cp new.pem old.pem` does: a reader can see it empty or half written.
    InPlace,
    /// Write a temp file in the same folder, then rename it over the old one:
    /// a reader sees the old file or the new one, never a mix.
    Rename,
}

/// Replaces the content of `path` with `bytes`, `how`. A file created by
/// [`Replace::Rename`] keeps the permissions of the file it replaces.
pub fn replace(path: &Path, bytes: &[u8], how: Replace) {
    match how {
        Replace::InPlace => {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .unwrap_or_else(|error| panic!("open {} for writing: {error}", path.display()));
            file.write_all(bytes)
                .unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
        }
        Replace::Rename => {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let temp = path.with_file_name(format!(
                ".{name}.tmp-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            fs::write(&temp, bytes)
                .unwrap_or_else(|error| panic!("write {}: {error}", temp.display()));
            if let Ok(meta) = fs::metadata(path) {
                fs::set_permissions(&temp, meta.permissions()).expect("copy the permissions");
            }
            fs::rename(&temp, path).unwrap_or_else(|error| {
                panic!("rename {} to {}: {error}", temp.display(), path.display())
            });
        }
    }
}

/// Reads a file the test wrote; panics naming it if it cannot.
pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// The CA certificates in `cas`, concatenated into one PEM bundle.
pub fn ca_bundle(cas: &[&Path]) -> Vec<u8> {
    let mut bundle = Vec::new();
    for ca in cas {
        bundle.extend_from_slice(&read(ca));
        if !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
    }
    bundle
}

/// The certificate, key and client CA bundle an agent serves, as `cert.pem`,
/// `key.pem` and `ca.pem` in a folder that holds nothing else.
#[derive(Debug, Clone)]
pub struct LiveTls {
    /// `cert.pem`: the served certificate.
    pub cert: PathBuf,
    /// `key.pem`: its private key.
    pub key: PathBuf,
    /// `ca.pem`: the bundle client certificates must chain to.
    pub client_ca: PathBuf,
}

impl LiveTls {
    /// Creates `dir` holding `identity`'s certificate and key and a bundle of `cas`.
    pub fn install(dir: &Path, identity: &Identity, cas: &[&Path]) -> Self {
        fs::create_dir_all(dir).expect("create the live TLS folder");
        let live = Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: dir.join("ca.pem"),
        };
        replace(&live.key, &read(&identity.key), Replace::InPlace);
        replace(&live.cert, &read(&identity.cert), Replace::InPlace);
        replace(&live.client_ca, &ca_bundle(cas), Replace::InPlace);
        live
    }

    /// The `[tls]` table that serves these files.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
        }
    }

    /// Writes `identity`'s key, then its certificate, each `how`. Between the
    /// two writes the files disagree, as they do with most rotation tools.
    pub fn rotate(&self, identity: &Identity, how: Replace) {
        self.write_key(identity, how);
        self.write_cert(identity, how);
    }

    /// Writes `identity`'s certificate only.
    pub fn write_cert(&self, identity: &Identity, how: Replace) {
        replace(&self.cert, &read(&identity.cert), how);
    }

    /// Writes `identity`'s key only.
    pub fn write_key(&self, identity: &Identity, how: Replace) {
        replace(&self.key, &read(&identity.key), how);
    }

    /// Replaces the client CA bundle with the certificates in `cas`.
    pub fn write_client_ca(&self, cas: &[&Path], how: Replace) {
        replace(&self.client_ca, &ca_bundle(cas), how);
    }
}

/// The files of a `kubernetes.io/tls` Secret with a CA bundle, for a
/// [`KubeVolume`]: `tls.crt` and `tls.key` from `identity`, `ca.crt` from `ca`.
pub fn tls_secret(identity: &Identity, ca: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tls.crt", read(&identity.cert)),
        ("tls.key", read(&identity.key)),
        ("ca.crt", ca.to_vec()),
    ]
}

/// Files laid out as the kubelet projects a Secret into a pod: `dir/NAME` is
/// a symlink to `..data/NAME`, and `..data` a symlink to a `..TIMESTAMP`
/// folder holding the real files.
///
/// [`KubeVolume::swap`] updates them as the kubelet does: it writes a new
/// `..TIMESTAMP` folder, points a `..data_tmp` symlink at it, renames
/// `..data_tmp` over `..data` (one rename switches every file at once), and
/// removes the old folder. The `NAME` symlinks themselves never change.
#[derive(Debug)]
pub struct KubeVolume {
    dir: PathBuf,
    current: PathBuf,
    generation: u64,
}

impl KubeVolume {
    /// Creates `dir` holding `files` (`(name, content)`).
    pub fn new(dir: &Path, files: &[(&str, Vec<u8>)]) -> Self {
        fs::create_dir_all(dir).expect("create the volume folder");
        let mut volume = Self {
            dir: dir.to_owned(),
            current: PathBuf::new(),
            generation: 0,
        };
        volume.current = volume.write_generation(files);
        symlink(
            volume.current.file_name().expect("a folder name"),
            dir.join("..data"),
        )
        .expect("link ..data");
        for (name, _) in files {
            symlink(Path::new("..data").join(name), dir.join(name)).expect("link a file");
        }
        volume
    }

    /// The files of a [`tls_secret`] volume, as a config names them.
    pub fn live_tls(&self) -> LiveTls {
        LiveTls {
            cert: self.path("tls.crt"),
            key: self.path("tls.key"),
            client_ca: self.path("ca.crt"),
        }
    }

    /// The path a config names for `name`: the symlink `dir/NAME`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The `..TIMESTAMP` folder `..data` points at now.
    pub fn current(&self) -> &Path {
        &self.current
    }

    /// Switches every file to `files` with one rename, then removes the old
    /// folder. Returns when the rename was made, for latency measurements.
    pub fn swap(&mut self, files: &[(&str, Vec<u8>)]) -> Instant {
        let next = self.write_generation(files);
        let staged = self.dir.join("..data_tmp");
        symlink(next.file_name().expect("a folder name"), &staged).expect("link ..data_tmp");
        let renamed = Instant::now();
        fs::rename(&staged, self.dir.join("..data")).expect("rename ..data_tmp over ..data");
        let old = std::mem::replace(&mut self.current, next);
        fs::remove_dir_all(&old)
            .unwrap_or_else(|error| panic!("remove {}: {error}", old.display()));
        renamed
    }

    fn write_generation(&mut self, files: &[(&str, Vec<u8>)]) -> PathBuf {
        self.generation += 1;
        let now = time::OffsetDateTime::now_utc();
        let folder = self.dir.join(format!(
            "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            self.generation
        ));
        fs::create_dir(&folder).expect("create a ..TIMESTAMP folder");
        for (name, content) in files {
            fs::write(folder.join(name), content).expect("write a projected file");
        }
        folder
    }
}

/// Calls `probe` every [`POLL_INTERVAL`] until it returns `Ok`, and returns
/// that value. After `timeout`, panics with `what` and the last `Err`.
pub async fn await_ok<T>(
    timeout: Duration,
    what: impl Display,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not seen within {timeout:?}; last seen: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The serial of the certificate one fresh handshake (a new TLS session,
/// never resumed) shows; panics if the handshake fails.
pub async fn served_serial(addr: SocketAddr, tls: &TlsClient) -> String {
    match handshake(addr, tls).await {
        Ok(shook) => shook.server_cert.serial,
        Err(error) => panic!("a fresh handshake with {addr} failed: {error}"),
    }
}

/// Polls fresh handshakes until the agent presents the certificate with
/// `serial`, within [`RELOAD_TIMEOUT`]. Every handshake on the way must succeed.
pub async fn await_serial(addr: SocketAddr, tls: &TlsClient, serial: &str) -> Handshake {
    await_ok(
        RELOAD_TIMEOUT,
        format_args!("a handshake presenting serial {serial}"),
        async || match handshake(addr, tls).await {
            Ok(shook) if shook.server_cert.serial == serial => Ok(shook),
            Ok(shook) => Err(format!("serial {}", shook.server_cert.serial)),
            Err(error) => panic!("a handshake failed while waiting for serial {serial}: {error}"),
        },
    )
    .await
}

/// Runs fresh handshakes back to back for `period` and checks that every one
/// shows `serial`: for a change the agent must not act on (yet). This is an
/// observation window, not synchronization; `period` should span several
/// of the agent's 50 ms debounces.
pub async fn assert_serial_holds(
    addr: SocketAddr,
    tls: &TlsClient,
    serial: &str,
    period: Duration,
) {
    let start = Instant::now();
    let mut handshakes = 0;
    while start.elapsed() < period {
        let seen = served_serial(addr, tls).await;
        handshakes += 1;
        assert_eq!(
            seen,
            serial,
            "handshake {handshakes}, {:?} into a {period:?} window: the served certificate changed",
            start.elapsed()
        );
    }
}

/// Polls the info API until its `last_reload` satisfies `check`, within
/// [`RELOAD_TIMEOUT`], and returns it.
pub async fn await_reload(
    info: &Client,
    what: &str,
    check: impl Fn(&ReloadResult) -> bool,
) -> ReloadResult {
    await_ok(RELOAD_TIMEOUT, what, async || {
        let info = info.info().await.map_err(|status| status.to_string())?;
        let last = info.last_reload.unwrap_or_default();
        if check(&last) {
            Ok(last)
        } else {
            Err(format!("{last:?}"))
        }
    })
    .await
}

/// Polls the agent's log until a line satisfies `check`, within
/// [`RELOAD_TIMEOUT`], and returns that line.
pub async fn await_log(agent: &Agent, what: &str, check: impl Fn(&str) -> bool) -> String {
    await_ok(RELOAD_TIMEOUT, what, async || {
        let logs = agent.logs();
        match logs.lines().find(|line| check(line)) {
            Some(line) => Ok(line.to_owned()),
            None => Err(format!(
                "no such line in {} lines of log",
                logs.lines().count()
            )),
        }
    })
    .await
}

/// Polls the agent's log until a `WARN` line contains `needle`, asserts that
/// it names `file` and its config key `key`, and returns it.
pub async fn await_warning(agent: &Agent, needle: &str, file: &Path, key: &str) -> String {
    let what = format!("a WARN line with {needle:?}");
    let warning = await_log(agent, &what, |line| {
        line.contains("WARN") && line.contains(needle)
    })
    .await;
    assert!(
        warning.contains(&file.display().to_string()) && warning.contains(key),
        "the warning should name {} and its key {key}: {warning}",
        file.display()
    );
    warning
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_or_swaps_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = crate::tempdir();
        let path = dir.path().join("file.pem");
        replace(&path, b"one", Replace::InPlace);
        let inode = fs::metadata(&path).expect("stat").ino();
        replace(&path, b"two", Replace::InPlace);
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(fs::metadata(&path).expect("stat").ino(), inode);
        replace(&path, b"three", Replace::Rename);
        assert_eq!(fs::read(&path).expect("read"), b"three");
        assert_ne!(fs::metadata(&path).expect("stat").ino(), inode);
        let names: Vec<_> = fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(names.len(), 1, "the temp file is gone after the rename");
    }

    #[test]
    fn kube_volume_switches_every_file_with_one_rename() {
        let dir = crate::tempdir();
        let root = dir.path().join("volume");
        let mut volume = KubeVolume::new(&root, &[("a", b"a1".to_vec()), ("b", b"b1".to_vec())]);
        let first = volume.current().to_owned();
        assert_eq!(fs::read(volume.path("a")).expect("read a"), b"a1");
        assert_eq!(
            fs::read_link(volume.path("a")).expect("a is a symlink"),
            Path::new("..data/a")
        );
        volume.swap(&[("a", b"a2".to_vec()), ("b", b"b2".to_vec())]);
        assert_eq!(fs::read(volume.path("a")).expect("read a"), b"a2");
        assert_eq!(fs::read(volume.path("b")).expect("read b"), b"b2");
        assert!(!first.exists(), "the old ..TIMESTAMP folder is removed");
        assert!(!root.join("..data_tmp").exists());
        assert_eq!(
            fs::canonicalize(volume.path("b")).expect("resolve b"),
            fs::canonicalize(volume.current().join("b")).expect("resolve")
        );
    }
}
