//! Atomic file replacement, as the agent's admin API and dicectl's
//! certificate commands both do it: a temp file `DIR/.NAME.tmp` in the same
//! folder, created exclusively with its final mode, written and flushed, then
//! renamed over the target, and the folder flushed. A reader sees the old
//! file or the new one, never a part of it, and a key is never readable by
//! others, not even briefly.
//!
//! A path that is a symlink (a Kubernetes-style `..data` layout) is
//! followed: the file it points at is replaced and the link kept, and the
//! temp file sits beside that file, so the rename stays on one filesystem.
//!
//! Errors carry the [`Step`] that failed and the I/O error; each caller
//! words them its own way.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The step of an atomic write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creating the temp file.
    Create,
    /// Writing or flushing the temp file.
    Write,
    /// Renaming the temp file over the target.
    Replace,
}

impl Step {
    /// `cannot create`, `cannot write`, `cannot replace`.
    pub fn action(self) -> &'static str {
        match self {
            Self::Create => "cannot create",
            Self::Write => "cannot write",
            Self::Replace => "cannot replace",
        }
    }
}

/// An atomic write that failed; no temp file is left behind.
#[derive(Debug)]
pub struct WriteError {
    /// What failed.
    pub step: Step,
    /// The file being replaced (a symlink's target, not the link).
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.path.display(),
            self.step.action(),
            self.source
        )
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Replaces the file `path` points at with `contents`, created with `mode`,
/// then flushes its folder (best effort: the file itself is on disk by then).
/// Returns the file replaced.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, WriteError> {
    let target = stage(path, contents, mode)?.commit()?;
    let _ = sync_dir(folder(&target));
    Ok(target)
}

/// A temp file written and flushed, waiting to be renamed over its target.
/// Dropped without [`Staged::commit`], it is removed.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

/// Writes `contents` to the temp file beside the file `path` points at,
/// created with `mode` and flushed to disk. A temp file an earlier crash
/// left behind is replaced.
pub fn stage(path: &Path, contents: &[u8], mode: u32) -> Result<Staged, WriteError> {
    let target = resolve_symlink(path);
    let fail = |step, source| WriteError {
        step,
        path: target.clone(),
        source,
    };
    let tmp = temp_path(&target);
    let mut file = create_new(&tmp, mode).map_err(|source| fail(Step::Create, source))?;
    let staged = Staged {
        tmp,
        target: target.clone(),
        committed: false,
    };
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| fail(Step::Write, source))?;
    Ok(staged)
}

impl Staged {
    /// Renames the temp file over the target; returns the target.
    pub fn commit(mut self) -> Result<PathBuf, WriteError> {
        match fs::rename(&self.tmp, &self.target) {
            Ok(()) => {
                self.committed = true;
                Ok(self.target.clone())
            }
            Err(source) => Err(WriteError {
                step: Step::Replace,
                path: self.target.clone(),
                source,
            }),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error that matters is the one being returned.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The file a symlink at `path` points at, or `path` itself.
pub fn resolve_symlink(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

/// The folder holding `path`: its parent, or `.` for a bare file name.
pub fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Flushes the folder `dir`, so renames in it survive a crash.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).and_then(|dir| dir.sync_all())
}

/// Flushes the folder `dir` (a no-op where folders cannot be opened).
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// `DIR/.NAME.tmp`: hidden, in the same folder so the rename stays on one filesystem.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Creates `path` exclusively with `mode`, replacing a temp file a crash left behind.
fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    match open_new(path, mode) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open_new(path, mode)
        }
        other => other,
    }
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_with_the_mode_over_a_leftover_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("k.pem");
        fs::write(&key, "old").expect("seed");
        fs::write(dir.path().join(".k.pem.tmp"), "crashed").expect("leftover");
        assert_eq!(write(&key, b"new", 0o600).expect("write"), key);
        assert_eq!(fs::read_to_string(&key).expect("read"), "new");
        let mode = fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(names(dir.path()), ["k.pem"]);
    }

    #[test]
    fn follows_a_symlink_and_keeps_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("data")).expect("mkdir");
        fs::write(dir.path().join("data/tls.crt"), "old").expect("seed");
        let link = dir.path().join("tls.crt");
        std::os::unix::fs::symlink("data/tls.crt", &link).expect("symlink");
        let target = write(&link, b"new", 0o644).expect("write");
        assert!(target.ends_with("data/tls.crt"), "{}", target.display());
        let meta = fs::symlink_metadata(&link).expect("link");
        assert!(meta.file_type().is_symlink());
        assert_eq!(fs::read_to_string(&link).expect("read"), "new");
    }

    #[test]
    fn a_dropped_stage_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let staged = stage(&dir.path().join("a.pem"), b"x", 0o644).expect("stage");
        assert_eq!(names(dir.path()), [".a.pem.tmp"]);
        drop(staged);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_rename_names_the_target_and_cleans_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A folder where the file should go: the rename fails.
        let target = dir.path().join("cert.pem");
        fs::create_dir(&target).expect("mkdir");
        fs::write(target.join("inside"), "x").expect("fill");
        let error = write(&target, b"x", 0o644).expect_err("rename over a folder");
        assert_eq!(error.step, Step::Replace);
        assert_eq!(error.path, target);
        assert!(
            error.to_string().contains("cert.pem: cannot replace: "),
            "{error}"
        );
        assert_eq!(names(dir.path()), ["cert.pem"]);
    }

    #[test]
    fn the_folder_of_a_bare_name_is_the_current_one() {
        assert_eq!(folder(Path::new("k.pem")), Path::new("."));
        assert_eq!(folder(Path::new("/etc/k.pem")), Path::new("/etc"));
    }
}
