//! Writes certificate and key files atomically: a temp file in the same
//! directory, created with its final mode, flushed, then renamed over the
//! target. A reader (an agent watching the folder) sees the old file or the
//! new one, never a half-written one, and a key is never readable by others,
//! not even briefly.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::CertsError;

/// Mode of private key files: readable by the owner only.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificate files, which are public (less the umask).
pub const CERT_MODE: u32 = 0o644;

/// A file to be written.
#[derive(Debug)]
pub struct Output {
    /// Where it goes.
    pub path: PathBuf,
    /// What it holds (PEM text).
    pub contents: String,
    /// Its permission bits.
    pub mode: u32,
}

impl Output {
    /// A private key file, mode 0600.
    pub fn key(path: PathBuf, contents: String) -> Self {
        Self {
            path,
            contents,
            mode: KEY_MODE,
        }
    }

    /// A certificate file, mode 0644.
    pub fn cert(path: PathBuf, contents: String) -> Self {
        Self {
            path,
            contents,
            mode: CERT_MODE,
        }
    }
}

/// Refuses with [`CertsError::Exists`] if any of `paths` exists and `force` is false.
pub fn refuse_existing<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
    force: bool,
) -> Result<(), CertsError> {
    if force {
        return Ok(());
    }
    for path in paths {
        // symlink_metadata so a dangling link also counts as "exists".
        if fs::symlink_metadata(path).is_ok() {
            return Err(CertsError::Exists {
                path: path.to_owned(),
            });
        }
    }
    Ok(())
}

/// Creates `dir` and its parents if missing.
pub fn create_dir(dir: &Path) -> Result<(), CertsError> {
    fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_owned(),
        action: "cannot create directory",
        source,
    })
}

/// Writes every output atomically: first each one's temp file (written and
/// flushed), then the renames, back to back and in order, then a sync of
/// their directories. Readers see each file old or new, and the window in
/// which some are new and others old is as short as two renames.
pub fn write_all(outputs: &[Output]) -> Result<Vec<PathBuf>, CertsError> {
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(outputs.len());
    for output in outputs {
        let target = resolve_symlink(&output.path);
        match stage(&target, output.contents.as_bytes(), output.mode) {
            Ok(tmp) => staged.push((tmp, target)),
            Err(error) => {
                for (tmp, _) in &staged {
                    // Best effort: the error that matters is the one being returned.
                    let _ = fs::remove_file(tmp);
                }
                return Err(error);
            }
        }
    }
    let mut written = Vec::with_capacity(staged.len());
    for (index, (tmp, target)) in staged.iter().enumerate() {
        if let Err(source) = fs::rename(tmp, target) {
            for (tmp, _) in &staged[index..] {
                let _ = fs::remove_file(tmp);
            }
            return Err(CertsError::Io {
                path: target.clone(),
                action: "cannot replace",
                source,
            });
        }
        written.push(target.clone());
    }
    let mut dirs: Vec<&Path> = written.iter().filter_map(|p| p.parent()).collect();
    dirs.dedup();
    for dir in dirs {
        sync_dir(dir)?;
    }
    Ok(outputs.iter().map(|o| o.path.clone()).collect())
}

/// Writes `contents` to `path` through a temp file in the same directory and a rename.
///
/// If `path` is a symlink (a Kubernetes-style `..data` layout), the file it
/// points at is replaced and the link kept.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertsError> {
    let target = resolve_symlink(path);
    let tmp = stage(&target, contents, mode)?;
    fs::rename(&tmp, &target).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        CertsError::Io {
            path: target.clone(),
            action: "cannot replace",
            source,
        }
    })
}

/// Writes `contents` to the temp file beside `path`, created with `mode` and
/// flushed to disk, and returns the temp file's path.
fn stage(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, CertsError> {
    let io_error = |action, source| CertsError::Io {
        path: path.to_owned(),
        action,
        source,
    };
    let tmp = temp_path(path);
    let mut file = create_new(&tmp, mode).map_err(|source| io_error("cannot create", source))?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error("cannot write", source));
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    Ok(tmp)
}

/// The file a symlink at `path` points at, or `path` itself.
fn resolve_symlink(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

/// `DIR/.NAME.tmp`: hidden, in the same directory so the rename stays on one filesystem.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Creates `path` exclusively with `mode`, replacing a temp file left by an earlier crashed run.
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

/// Flushes the directory so the renames survive a crash.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), CertsError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| CertsError::Io {
            path: dir.to_owned(),
            action: "cannot sync directory",
            source,
        })
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), CertsError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_0600_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("k.pem");
        // Even over a world-readable file, the new key is 0600.
        fs::write(&key, "old").expect("seed");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_all(&[Output::key(key.clone(), "new".into())]).expect("write");
        assert_eq!(fs::read_to_string(&key).expect("read"), "new");
        assert_eq!(mode(&key), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["k.pem"]);
    }

    #[test]
    fn a_symlink_keeps_pointing_at_the_replaced_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("mkdir");
        fs::write(data.join("tls.crt"), "old").expect("seed");
        let link = dir.path().join("tls.crt");
        std::os::unix::fs::symlink("data/tls.crt", &link).expect("symlink");
        write_atomically(&link, b"new", CERT_MODE).expect("write");
        assert!(
            fs::symlink_metadata(&link)
                .expect("link")
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&link).expect("read"), "new");
    }

    #[test]
    fn existing_files_are_refused_unless_forced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.pem");
        fs::write(&path, "x").expect("seed");
        let error = refuse_existing([path.as_path()], false).expect_err("exists");
        assert!(
            error
                .to_string()
                .ends_with("a.pem: already exists (pass --force to replace it)")
        );
        refuse_existing([path.as_path()], true).expect("forced");
    }
}
