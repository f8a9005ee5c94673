//! The Debian packages under test: `scripts/package.sh --no-build` packages
//! the binaries the suite already built (no second, release build), once per
//! test process, into a temp directory; [`Deb`] reads one back with
//! `dpkg-deb` (control fields, file list with modes and owners, maintainer
//! scripts, extracted files); [`Packages::lintian`] runs lintian on both.
//!
//! Missing tools fail the test with the command that installs them:
//! cargo-deb from cargo, lintian and dpkg-dev from apt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::bins;
use crate::fixtures::workspace_root;
use crate::process::{RunOutput, run_with_timeout};

/// The cargo-deb `scripts/system-packages.sh` installs.
pub const INSTALL_CARGO_DEB: &str = "cargo install cargo-deb --version 3.8.0 --locked";

/// What provides lintian, dpkg-shlibdeps and strip.
pub const INSTALL_DEB_TOOLS: &str = "apt-get install lintian dpkg-dev binutils";

/// How long packaging both binaries may take on a loaded machine.
const PACKAGE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long lintian may take over both packages.
pub const LINTIAN_TIMEOUT: Duration = Duration::from_secs(180);

/// The Debian revision `cargo deb` appends to the workspace version.
pub const DEB_REVISION: &str = "-1";

/// The two packages, built once per test process.
pub struct Packages {
    /// Holds the .deb files (and the extracted trees) until the process ends.
    _dir: TempDir,
    /// `dice-agent_VERSION_ARCH.deb`, read back.
    pub agent: Deb,
    /// `dicectl_VERSION_ARCH.deb`, read back.
    pub ctl: Deb,
}

/// Packages the suite's binaries (first call), then returns them.
pub fn packages() -> &'static Packages {
    static PACKAGES: OnceLock<Packages> = OnceLock::new();
    PACKAGES.get_or_init(build)
}

fn build() -> Packages {
    check_tools();
    // The binaries the suite runs live in target/<profile dir>/: package those.
    let agent = bins::agent_bin();
    bins::ctl_bin();
    let bin_dir = agent.parent().expect("the agent binary has a folder");
    let target = bin_dir.parent().expect("the profile folder has a parent");
    let profile = match bin_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => panic!("{}: not a profile folder", bin_dir.display()),
    };
    let dir = tempfile::Builder::new()
        .prefix("dice-debs-")
        .tempdir()
        .expect("create a temp dir for the packages");
    let out = dir.path().join("debs");
    let mut command = Command::new(workspace_root().join("scripts/package.sh"));
    command
        .args(["--no-build", "--fast", "--profile", profile, "--out"])
        .arg(&out)
        .env("CARGO_TARGET_DIR", target);
    let run = run_with_timeout(command, PACKAGE_TIMEOUT);
    run.assert_success();
    let paths: Vec<PathBuf> = run.stdout.lines().map(PathBuf::from).collect();
    let find = |name: &str| -> Deb {
        let path = paths
            .iter()
            .find(|path| {
                path.file_name()
                    .and_then(|file| file.to_str())
                    .is_some_and(|file| file.starts_with(&format!("{name}_")))
            })
            .unwrap_or_else(|| panic!("package.sh printed no {name} package\n{run}"));
        Deb::open(path, &dir.path().join(name))
    };
    let agent = find("dice-agent");
    let ctl = find("dicectl");
    Packages {
        _dir: dir,
        agent,
        ctl,
    }
}

/// Fails unless cargo-deb, dpkg-deb, dpkg-shlibdeps and lintian are here.
fn check_tools() {
    let cargo_deb = Command::new("cargo").args(["deb", "--version"]).output();
    assert!(
        cargo_deb.is_ok_and(|output| output.status.success()),
        "cargo-deb is missing: `{INSTALL_CARGO_DEB}` (scripts/test.sh installs it)"
    );
    for tool in ["dpkg-deb", "dpkg-shlibdeps", "strip", "lintian"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|output| output.status.success());
        assert!(
            found,
            "{tool} is missing: `{INSTALL_DEB_TOOLS}` (scripts/test.sh installs them)"
        );
    }
}

/// One file or folder of a package's data archive, as `dpkg-deb -c` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `-rwxr-xr-x`, `drwxr-xr-x`, `lrwxrwxrwx`.
    pub mode: String,
    /// `root/root` or `0/0`: user and group, as the archive stores them.
    pub owner: String,
    /// The absolute installed path, e.g. `/usr/bin/dice-agent`.
    pub path: String,
}

/// A .deb file, read back with `dpkg-deb`.
pub struct Deb {
    /// The .deb file.
    pub path: PathBuf,
    /// Control fields (`Package`, `Version`, `Depends`, ...).
    pub control: BTreeMap<String, String>,
    /// The data archive's entries, by installed path.
    pub entries: BTreeMap<String, Entry>,
    /// The control archive, extracted: `conffiles`, `postinst`, ...
    pub control_dir: PathBuf,
    /// The data archive, extracted: `usr/bin/...`, `etc/...`.
    pub root: PathBuf,
}

impl Deb {
    /// Reads `path`, extracting it under `work` (created).
    pub fn open(path: &Path, work: &Path) -> Deb {
        let control_dir = work.join("DEBIAN");
        let root = work.join("root");
        std::fs::create_dir_all(work).expect("create the extraction folder");
        dpkg_deb(&["-e"], path, Some(&control_dir));
        dpkg_deb(&["-x"], path, Some(&root));
        let fields = dpkg_deb(&["-f"], path, None);
        let listing = dpkg_deb(&["-c"], path, None);
        Deb {
            path: path.to_owned(),
            control: parse_control(&fields.stdout),
            entries: parse_listing(&listing.stdout),
            control_dir,
            root,
        }
    }

    /// The control field `name`; panics if it is missing.
    pub fn field(&self, name: &str) -> &str {
        self.control
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| {
                panic!(
                    "{} has no {name} field: {:?}",
                    self.path.display(),
                    self.control
                )
            })
    }

    /// The entry at the installed path `path`; panics, listing them all, if absent.
    pub fn entry(&self, path: &str) -> &Entry {
        self.entries.get(path).unwrap_or_else(|| {
            panic!(
                "{} does not contain {path}; it has:\n{}",
                self.path.display(),
                self.entries.keys().cloned().collect::<Vec<_>>().join("\n")
            )
        })
    }

    /// The extracted copy of the installed path `path`.
    pub fn file(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The paths listed in `DEBIAN/conffiles`.
    pub fn conffiles(&self) -> Vec<String> {
        std::fs::read_to_string(self.control_dir.join("conffiles"))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Packages {
    /// `lintian` on both packages at once (one start-up), failing on errors
    /// and warnings; the overrides shipped in each package apply.
    pub fn lintian(&self) -> RunOutput {
        let mut command = Command::new("lintian");
        command
            .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
            .arg(&self.agent.path)
            .arg(&self.ctl.path);
        run_with_timeout(command, LINTIAN_TIMEOUT)
    }
}

fn dpkg_deb(args: &[&str], deb: &Path, dest: Option<&Path>) -> RunOutput {
    let mut command = Command::new("dpkg-deb");
    command.args(args).arg(deb);
    if let Some(dest) = dest {
        command.arg(dest);
    }
    let run = run_with_timeout(command, Duration::from_secs(60));
    run.assert_success();
    run
}

/// `Key: value` lines, continuation lines appended.
fn parse_control(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(value) = last.as_ref().and_then(|key| fields.get_mut(key)) {
                let value: &mut String = value;
                value.push('\n');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            fields.insert(key.to_owned(), value.trim().to_owned());
            last = Some(key.to_owned());
        }
    }
    fields
}

/// `dpkg-deb -c` lines: `MODE OWNER SIZE DATE TIME ./PATH[ -> TARGET]`.
fn parse_listing(text: &str) -> BTreeMap<String, Entry> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mode = words.next()?.to_owned();
            let owner = words.next()?.to_owned();
            let path = words.nth(3)?;
            let path = path.trim_start_matches('.').trim_end_matches('/');
            let path = if path.is_empty() { "/" } else { path };
            Some((
                path.to_owned(),
                Entry {
                    mode,
                    owner,
                    path: path.to_owned(),
                },
            ))
        })
        .collect()
}

/// Runs a package's maintainer scripts without touching this machine: paths
/// go under a temp `DPKG_ROOT`, and the programs that would change the host
/// (`adduser`, `getent`'s answer, `install -o`, `chown`, `deb-systemd-helper`,
/// `deb-systemd-invoke`, `systemctl`, and the user tools) are stand-ins
/// first on `PATH` that log each call. `adduser` records the user it made, so
/// `getent passwd` finds it on the next run, as on a real host. The scripts
/// run as on a host where systemd runs: their test for `/run/systemd/system`
/// looks under the sandbox's root, where that folder exists.
pub struct ScriptSandbox {
    dir: TempDir,
}

/// The stand-ins: each logs `NAME ARGS...` to `$SANDBOX/calls`.
const STAND_INS: &[(&str, &str)] = &[
    (
        "getent",
        r#"[ "$1" = passwd ] && [ -f "$SANDBOX/users/$2" ] && { cat "$SANDBOX/users/$2"; exit 0; }
exit 2"#,
    ),
    (
        "adduser",
        r#"for user; do :; done
mkdir -p "$SANDBOX/users"
echo "$user:x:999:999::/var/lib/$user:/usr/sbin/nologin" >"$SANDBOX/users/$user""#,
    ),
    (
        "install",
        r#"mode=; dir=; for arg; do [ "$prev" = -m ] && mode=$arg; prev=$arg; dir=$arg; done
mkdir -p "$dir" && { [ -z "$mode" ] || chmod "$mode" "$dir"; }"#,
    ),
    ("chown", ":"),
    (
        "deb-systemd-helper",
        r#"[ "$1" = --quiet ] && [ "$2" = was-enabled ] && exit 0
:"#,
    ),
    ("deb-systemd-invoke", ":"),
    ("systemctl", ":"),
    ("useradd", ":"),
    ("userdel", ":"),
    ("deluser", ":"),
    ("groupadd", ":"),
    ("addgroup", ":"),
];

impl ScriptSandbox {
    /// A fresh sandbox: an empty root and the stand-ins.
    pub fn new() -> ScriptSandbox {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("dice-maint-")
            .tempdir()
            .expect("create the sandbox");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("create the stand-ins' folder");
        std::fs::create_dir_all(dir.path().join("root/run/systemd/system"))
            .expect("create the root, where systemd runs");
        for (name, body) in STAND_INS {
            let path = bin.join(name);
            let script = format!("#!/bin/sh\necho \"{name} $*\" >>\"$SANDBOX/calls\"\n{body}\n");
            std::fs::write(&path, script).expect("write a stand-in");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("make a stand-in executable");
        }
        ScriptSandbox { dir }
    }

    /// The `DPKG_ROOT` the scripts see.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Runs `script` (a file of the package's control archive) with `args`;
    /// returns its output and the stand-in calls it made.
    pub fn run(&self, script: &Path, args: &[&str]) -> (RunOutput, Vec<String>) {
        let calls = self.dir.path().join("calls");
        let _ = std::fs::remove_file(&calls);
        let text = std::fs::read_to_string(script)
            .unwrap_or_else(|error| panic!("read {}: {error}", script.display()));
        assert!(
            !text.contains("$DPKG_ROOT/run/systemd"),
            "the sandbox would not see the script's own systemd check"
        );
        let copy = self.dir.path().join("script");
        std::fs::write(
            &copy,
            text.replace("/run/systemd/system", "$DPKG_ROOT/run/systemd/system"),
        )
        .expect("write the script's copy");
        let mut command = Command::new("sh");
        command
            .arg(&copy)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display()),
            )
            .env("SANDBOX", self.dir.path())
            .env("DPKG_ROOT", self.root())
            .env("DPKG_MAINTSCRIPT_PACKAGE", "dice-agent");
        let run = run_with_timeout(command, Duration::from_secs(30));
        let calls = std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        (run, calls)
    }
}

impl Default for ScriptSandbox {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dpkg_deb_listings_and_control_fields() {
        let listing = "drwxr-xr-x 0/0               0 2026-12-06 00:00 ./usr/bin/\n\
                       -rwxr-xr-x 0/0        13775752 2026-12-06 00:00 ./usr/bin/dice-agent\n";
        let entries = parse_listing(listing);
        assert_eq!(entries["/usr/bin"].mode, "drwxr-xr-x");
        assert_eq!(
            entries["/usr/bin/dice-agent"],
            Entry {
                mode: "-rwxr-xr-x".into(),
                owner: "0/0".into(),
                path: "/usr/bin/dice-agent".into()
            }
        );
        let control = parse_control("Package: dicectl\nDescription: short\n long one\n");
        assert_eq!(control["Package"], "dicectl");
        assert_eq!(control["Description"], "short\nlong one");
    }

    #[test]
    fn names_the_cargo_deb_the_scripts_install() {
        let script = std::fs::read_to_string(workspace_root().join("scripts/system-packages.sh"))
            .expect("read scripts/system-packages.sh");
        let version = script
            .lines()
            .find_map(|line| line.strip_prefix("CARGO_DEB_VERSION="))
            .expect("CARGO_DEB_VERSION in system-packages.sh");
        assert!(INSTALL_CARGO_DEB.contains(&format!("--version {version} ")));
    }
}
