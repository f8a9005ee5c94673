//! The admin API's file work: where the staged key and the backups live,
//! atomic writes (a temp file in the same folder, flushed, then renamed over
//! the target), and the status a file that cannot be written gets.
//!
//! A configured path that is a symlink (a Kubernetes-style `..data` layout)
//! is followed: the file it points at is replaced and the link kept, and the
//! staged key and backups sit beside that file, so every rename stays on one
//! filesystem.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dice_proto::atomic::{self, Step, resolve_symlink};
use tonic::Status;

/// Mode of private key files (the key, its backup and the staged key).
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificate files, which are public (less the umask).
pub const CERT_MODE: u32 = 0o644;

/// Suffix of the key PrepareCertificate stages: `server-key.pem.staged`.
pub const STAGED_SUFFIX: &str = ".staged";
/// Suffix of the backups Rollback restores: `server.pem.previous`.
pub const PREVIOUS_SUFFIX: &str = ".previous";

/// A file that could not be written, read or replaced.
#[derive(Debug)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What was being done, e.g. `cannot write`.
    pub action: &'static str,
    /// Why it failed.
    pub source: io::Error,
}

impl FileError {
    fn new(path: &Path, action: &'static str, source: io::Error) -> Self {
        Self {
            path: path.to_owned(),
            action,
            source,
        }
    }

    /// `FAILED_PRECONDITION` for a file the agent may not write (permissions,
    /// a read-only mount): another tool manages it. `INTERNAL` otherwise.
    pub fn status(&self) -> Status {
        let path = self.path.display();
        match self.source.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                Status::failed_precondition(format!(
                    "{path}: cannot write ({}): these certificates are managed by another tool; rotate them there, or make the folder writable by dice-agent",
                    self.source
                ))
            }
            _ => Status::internal(format!("{path}: {}: {}", self.action, self.source)),
        }
    }
}

/// `suffix` appended to the name of the file `path` points at.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = resolve_symlink(path).into_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where the staged key of the key file `key` lives: `<key>.staged`.
pub fn staged(key: &Path) -> PathBuf {
    beside(key, STAGED_SUFFIX)
}

/// Where the backup of `path` lives: `<path>.previous`.
pub fn previous(path: &Path) -> PathBuf {
    beside(path, PREVIOUS_SUFFIX)
}

/// Reads `path`; `Ok(None)` if it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(FileError::new(path, "cannot read", error)),
    }
}

/// The permission bits of `path` (following symlinks).
pub fn mode(path: &Path) -> Result<u32, FileError> {
    fs::metadata(path)
        .map(|meta| meta.permissions().mode() & 0o777)
        .map_err(|error| FileError::new(path, "cannot read", error))
}

/// Replaces the file `path` points at with `contents`, created with `mode`:
/// readers see the old file or the new one, never a part of it.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    atomic::write(path, contents, mode).map_err(|error| {
        let action = match error.step {
            Step::Create | Step::Write => "cannot write",
            Step::Replace => "cannot replace",
        };
        FileError::new(&error.path, action, error.source)
    })?;
    Ok(())
}

/// Renames `from` over the file `to` points at.
pub fn rename_over(from: &Path, to: &Path) -> Result<(), FileError> {
    let target = resolve_symlink(to);
    fs::rename(from, &target).map_err(|error| FileError::new(&target, "cannot replace", error))?;
    // Best effort: the file itself is already on disk.
    let _ = atomic::sync_dir(atomic::folder(&target));
    Ok(())
}

/// Removes `path`; a file already gone is fine.
pub fn remove(path: &Path) -> Result<(), FileError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(FileError::new(path, "cannot remove", error))
        }
        _ => Ok(()),
    }
}

/// File changes that can be undone: each write, rename or removal records
/// what the file held before, and [`Transaction::undo`] puts it all back.
/// Used so an operation that fails midway leaves the files as it found them.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Each changed file (its target), with what it held before (`None`: it did not exist) and its mode.
    done: Vec<(PathBuf, Option<Vec<u8>>, u32)>,
}

impl Transaction {
    /// [`write_atomically`], remembering what `path` held.
    pub fn write(&mut self, path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
        let target = resolve_symlink(path);
        let before = read_if_exists(&target)?;
        write_atomically(&target, contents, mode)?;
        self.done.push((target, before, mode));
        Ok(())
    }

    /// [`rename_over`], remembering what both files held (`from` is a key, mode 0600).
    pub fn rename(&mut self, from: &Path, to: &Path, mode: u32) -> Result<(), FileError> {
        let target = resolve_symlink(to);
        let moved = read_if_exists(from)?;
        let before = read_if_exists(&target)?;
        rename_over(from, &target)?;
        self.done.push((from.to_owned(), moved, KEY_MODE));
        self.done.push((target, before, mode));
        Ok(())
    }

    /// [`remove`], remembering what `path` held.
    pub fn remove(&mut self, path: &Path, mode: u32) -> Result<(), FileError> {
        let before = read_if_exists(path)?;
        remove(path)?;
        self.done.push((path.to_owned(), before, mode));
        Ok(())
    }

    /// Puts every changed file back as it was, newest change first. Returns
    /// what could not be put back (an operator must look at those files).
    pub fn undo(self) -> Vec<FileError> {
        let mut failed = Vec::new();
        for (path, before, mode) in self.done.into_iter().rev() {
            let restored = match before {
                Some(bytes) => write_atomically(&path, &bytes, mode),
                None => remove(&path),
            };
            if let Err(error) = restored {
                failed.push(error);
            }
        }
        failed
    }
}

/// Runs `steps`; if one fails, undoes those done before it and returns the
/// failure's status. Whatever cannot be put back is logged at error.
pub fn all_or_nothing(
    steps: impl FnOnce(&mut Transaction) -> Result<(), FileError>,
) -> Result<(), Status> {
    let mut transaction = Transaction::default();
    let Err(error) = steps(&mut transaction) else {
        return Ok(());
    };
    for stuck in transaction.undo() {
        tracing::error!(target: super::TARGET, file = %stuck.path.display(), error = %stuck.source, "{}: cannot put the file back after a failed change: check it by hand", stuck.action);
    }
    Err(error.status())
}
