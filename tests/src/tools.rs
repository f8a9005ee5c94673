//! Programs the compatibility tests need from outside the workspace: nginx
//! and Chromium from the system package manager, and the Python of the test
//! virtual environment (grpcio, Django and `dice_client`).
//!
//! Each is found through an environment variable first (`DICE_NGINX`,
//! `DICE_CHROMIUM`, `DICE_PYTHON`), then in the usual place. A missing one
//! fails the test with the command that provides it; no test skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::fixtures::workspace_root;

/// What provides nginx and Chromium.
pub const INSTALL_SYSTEM_TOOLS: &str = "apt-get install nginx chromium";

/// What makes the Python test environment.
pub const SETUP_PYTHON: &str = "./scripts/setup-test-env.sh";

/// nginx: `$DICE_NGINX`, else `nginx` on `PATH`, else `/usr/sbin/nginx`.
pub fn nginx() -> PathBuf {
    find_program("nginx", "DICE_NGINX", &["/usr/sbin/nginx"])
}

/// Chromium: `$DICE_CHROMIUM`, else `chromium` on `PATH`, else `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    find_program("chromium", "DICE_CHROMIUM", &["/usr/bin/chromium"])
}

/// The test venv's Python: `$DICE_PYTHON`, else `.venv/bin/python` in the
/// workspace. Checked once per test process: it must import `grpc`,
/// `dice_client` (with its generated stubs) and `django`.
pub fn python() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let python = match std::env::var_os("DICE_PYTHON").filter(|value| !value.is_empty()) {
                Some(path) => PathBuf::from(path),
                None => workspace_root().join(".venv/bin/python"),
            };
            assert!(
                python.is_file(),
                "the test Python {} does not exist: run `{SETUP_PYTHON}` (it makes .venv with \
                 grpcio, grpcio-tools, Django and dice_client), or set DICE_PYTHON to such a python",
                python.display()
            );
            check_python(&python);
            python
        })
        .clone()
}

fn check_python(python: &Path) {
    let output = Command::new(python)
        .args(["-c", "import grpc, django, dice_client._proto.api_pb2_grpc"])
        .output()
        .unwrap_or_else(|error| panic!("could not run {}: {error}", python.display()));
    assert!(
        output.status.success(),
        "{} cannot import grpc, django and dice_client: run `{SETUP_PYTHON}`\n{}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `$env` if set (it must name a file), else `name` on `PATH`, else the first
/// of `fallbacks` that exists. Panics naming [`INSTALL_SYSTEM_TOOLS`].
pub fn find_program(name: &str, env: &str, fallbacks: &[&str]) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env}={} does not name a file: point it at {name}, or unset it and \
             `{INSTALL_SYSTEM_TOOLS}`",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH or in {fallbacks:?}: `{INSTALL_SYSTEM_TOOLS}` \
                 (or set {env} to its path)"
            )
        })
}
