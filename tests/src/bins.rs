//! Finds the `dice-agent` and `dicectl` binaries under test.
//!
//! Cargo sets `CARGO_BIN_EXE_*` only for tests in the package that owns the
//! binary, so this crate reads `DICE_AGENT_BIN` / `DICECTL_BIN`, and otherwise
//! looks in the target directory the test executable was built into (as
//! ripgrep's `tests/util.rs` does).

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::SystemTime;

/// The agent binary: `$DICE_AGENT_BIN`, else `dice-agent` beside the test executable.
pub fn agent_bin() -> PathBuf {
    let path = find("dice-agent", "DICE_AGENT_BIN");
    static WARNED: Once = Once::new();
    WARNED.call_once(|| warn_if_stale(&path, &["agent", "proto"]));
    path
}

/// The admin CLI binary: `$DICECTL_BIN`, else `dicectl` beside the test executable.
pub fn ctl_bin() -> PathBuf {
    let path = find("dicectl", "DICECTL_BIN");
    static WARNED: Once = Once::new();
    WARNED.call_once(|| warn_if_stale(&path, &["ctl", "proto"]));
    path
}

/// The benchmark suite's bare tonic server: `$DICE_REFERENCE_BIN`, else
/// `dice-reference` beside the test executable.
pub fn reference_bin() -> PathBuf {
    find("dice-reference", "DICE_REFERENCE_BIN")
}

fn find(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env}={} does not name a file: build it with `cargo build --workspace --bins` \
             or point {env} at the {name} binary",
            path.display()
        );
        return path;
    }
    let dir = target_dir();
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{name} binary not found at {}: run `cargo build --workspace --bins` first \
         (or set {env} to the binary's path)",
        path.display()
    );
    path
}

/// The directory cargo put the binaries in: the test executable lives in
/// `target/<profile>/deps/`, the binaries in `target/<profile>/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path is readable");
    let parent = exe.parent().unwrap_or(Path::new("."));
    if parent.ends_with("deps") {
        parent.parent().unwrap_or(parent).to_owned()
    } else {
        parent.to_owned()
    }
}

/// Warns (once per test process) when a source file of `crates` is newer than
/// the binary: `cargo test -p dice-tests` does not rebuild the binaries.
fn warn_if_stale(bin: &Path, crates: &[&str]) {
    let Some(built) = modified(bin) else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let newer = crates
        .iter()
        .flat_map(|krate| {
            [
                root.join(krate).join("src"),
                root.join(krate).join("Cargo.toml"),
            ]
        })
        .filter_map(|path| newest(&path).filter(|(time, _)| *time > built))
        .max_by_key(|(time, _)| *time);
    if let Some((_, source)) = newer {
        eprintln!(
            "warning: {} is older than {}: run `cargo build --workspace --bins` to test the current code",
            bin.display(),
            source.display()
        );
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

/// The newest file at or under `path`, with its modification time.
fn newest(path: &Path) -> Option<(SystemTime, PathBuf)> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return Some((meta.modified().ok()?, path.to_owned()));
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| newest(&entry.path()))
        .max_by_key(|(time, _)| *time)
}
