//! Writes certificate and key files atomically: a temp file in the same
//! directory, created with its final mode, flushed, then renamed over the
//! target. A reader (an agent watching the folder) sees the old file or the
//! new one, never a half-written one, and a key is never readable by others,
//! not even briefly.

use std::fs;
use std::path::{Path, PathBuf};

use dice_proto::atomic::{self, WriteError};

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
    // On an early return, the temp files not yet renamed are dropped, which removes them.
    let staged = outputs
        .iter()
        .map(|output| atomic::stage(&output.path, output.contents.as_bytes(), output.mode))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error)?;
    let mut written = Vec::with_capacity(staged.len());
    for file in staged {
        written.push(file.commit().map_err(io_error)?);
    }
    let mut dirs: Vec<&Path> = written.iter().map(|path| atomic::folder(path)).collect();
    dirs.dedup();
    for dir in dirs {
        atomic::sync_dir(dir).map_err(|source| CertsError::Io {
            path: dir.to_owned(),
            action: "cannot sync directory",
            source,
        })?;
    }
    Ok(outputs.iter().map(|o| o.path.clone()).collect())
}

/// Writes `contents` to `path` through a temp file in the same directory and a rename.
///
/// If `path` is a symlink (a Kubernetes-style `..data` layout), the file it
/// points at is replaced and the link kept.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertsError> {
    atomic::write(path, contents, mode).map_err(io_error)?;
    Ok(())
}

fn io_error(error: WriteError) -> CertsError {
    CertsError::Io {
        path: error.path,
        action: error.step.action(),
        source: error.source,
    }
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
