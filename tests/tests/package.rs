//! The Debian packages: `scripts/package.sh` packages the suite's binaries
//! (no rebuild), and each .deb is read back: files, modes and owners, the
//! conffile, the unit, man pages and completions, the maintainer scripts
//! (syntax, and what they do in a sandbox), lintian, and the packaged
//! binaries run (`--version`, `--check` on the shipped sample config).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use dice_tests::fixtures::workspace_root;
use dice_tests::package::{DEB_REVISION, Deb, ScriptSandbox, packages};
use dice_tests::process::{RUN_TIMEOUT, RunOutput, run_with_timeout};
use dice_tests::{Pki, bins, tempdir};

/// The workspace version, which both packages and binaries carry.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Asserts `path` is in `deb` as a regular file with `mode`, owned by root.
fn assert_file(deb: &Deb, path: &str, mode: &str) {
    let entry = deb.entry(path);
    assert_eq!(entry.mode, mode, "{path}: mode");
    assert!(
        matches!(entry.owner.as_str(), "0/0" | "root/root"),
        "{path}: owned by {}, not root",
        entry.owner
    );
}

/// Decompresses the extracted `path` of `deb` (gzip) and returns its text.
fn gunzip(deb: &Deb, path: &str) -> String {
    let mut command = Command::new("gzip");
    command.arg("-dc").arg(deb.file(path));
    let run = run_with_timeout(command, RUN_TIMEOUT);
    run.assert_success();
    run.stdout
}

/// The completions of `name` in their standard folders.
fn completion_paths(name: &str) -> [String; 3] {
    [
        format!("/usr/share/bash-completion/completions/{name}"),
        format!("/usr/share/zsh/vendor-completions/_{name}"),
        format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
    ]
}

// === contents ===

#[test]
fn package_dice_agent_ships_binary_unit_conffile_man_page_and_completions() {
    let deb = &packages().agent;
    assert_eq!(deb.field("Package"), "dice-agent");
    assert!(
        deb.field("Depends").contains("adduser"),
        "postinst runs adduser: {}",
        deb.field("Depends")
    );

    assert_file(deb, "/usr/bin/dice-agent", "-rwxr-xr-x");
    for entry in deb.entries.values() {
        assert!(
            matches!(entry.owner.as_str(), "0/0" | "root/root"),
            "{entry:?}: every file belongs to root"
        );
        assert!(
            entry.mode.starts_with('d')
                || entry.path == "/usr/bin/dice-agent"
                || entry.mode == "-rw-r--r--",
            "{entry:?}: only the binary is executable, nothing is writable by others"
        );
    }

    // The unit is config/dice-agent.service as it is, running the packaged
    // binary as the user postinst makes.
    let unit_path = "/usr/lib/systemd/system/dice-agent.service";
    assert_file(deb, unit_path, "-rw-r--r--");
    let unit = std::fs::read_to_string(deb.file(unit_path)).expect("read the packaged unit");
    let source = std::fs::read_to_string(workspace_root().join("config/dice-agent.service"))
        .expect("read config/dice-agent.service");
    assert_eq!(
        unit, source,
        "the packaged unit differs from config/dice-agent.service"
    );
    for line in [
        "User=dice",
        "Group=dice",
        "ExecStart=/usr/bin/dice-agent --config /etc/dice/node.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line:?}");
    }

    // The sample config: a conffile, its content the one in packaging/.
    assert_file(deb, "/etc/dice/node.toml", "-rw-r--r--");
    assert_eq!(deb.conffiles(), ["/etc/dice/node.toml"], "DEBIAN/conffiles");
    assert_eq!(
        std::fs::read(deb.file("/etc/dice/node.toml")).expect("read the packaged config"),
        std::fs::read(workspace_root().join("packaging/dice-agent/node.toml"))
            .expect("read packaging/dice-agent/node.toml"),
    );

    let man = "/usr/share/man/man1/dice-agent.1.gz";
    assert_file(deb, man, "-rw-r--r--");
    assert!(
        gunzip(deb, man).contains(".TH dice-agent"),
        "{man} is not the man page"
    );
    for path in completion_paths("dice-agent") {
        assert_file(deb, &path, "-rw-r--r--");
        let text = std::fs::read_to_string(deb.file(&path)).expect("read a completion");
        assert!(
            text.contains("dice-agent"),
            "{path} does not complete dice-agent"
        );
    }
    assert_file(deb, "/usr/share/doc/dice-agent/copyright", "-rw-r--r--");
    assert_file(
        deb,
        "/usr/share/doc/dice-agent/changelog.Debian.gz",
        "-rw-r--r--",
    );
}

#[test]
fn package_dicectl_ships_binary_a_man_page_per_subcommand_and_completions() {
    let deb = &packages().ctl;
    assert_eq!(deb.field("Package"), "dicectl");
    assert_file(deb, "/usr/bin/dicectl", "-rwxr-xr-x");

    // One gzipped page per page `dicectl man --out` writes, and no other.
    let pages = tempdir();
    let mut command = Command::new(bins::ctl_bin());
    command.args(["man", "--out"]).arg(pages.path());
    run_with_timeout(command, RUN_TIMEOUT).assert_success();
    let mut expected: Vec<String> = std::fs::read_dir(pages.path())
        .expect("list the man pages")
        .filter_map(Result::ok)
        .map(|entry| {
            format!(
                "/usr/share/man/man1/{}.gz",
                entry.file_name().to_string_lossy()
            )
        })
        .collect();
    expected.sort();
    let shipped: Vec<String> = deb
        .entries
        .keys()
        .filter(|path| path.starts_with("/usr/share/man/man1/") && *path != "/usr/share/man/man1")
        .cloned()
        .collect();
    assert!(expected.len() > 5, "dicectl man wrote {expected:?}");
    assert_eq!(shipped, expected, "man pages");
    for page in &shipped {
        assert_file(deb, page, "-rw-r--r--");
    }
    assert!(gunzip(deb, "/usr/share/man/man1/dicectl-roll.1.gz").contains(".TH dicectl-roll"));

    for path in completion_paths("dicectl") {
        assert_file(deb, &path, "-rw-r--r--");
        let text = std::fs::read_to_string(deb.file(&path)).expect("read a completion");
        assert!(
            text.contains("rotate-ca"),
            "{path} does not complete dicectl's subcommands"
        );
    }
}

// === the packaged binaries ===

#[test]
fn package_versions_are_the_workspace_version_and_the_binaries_say_so() {
    let packages = packages();
    for (deb, bin) in [(&packages.agent, "dice-agent"), (&packages.ctl, "dicectl")] {
        assert_eq!(
            deb.field("Version"),
            format!("{VERSION}{DEB_REVISION}"),
            "{bin}"
        );
        let mut command = Command::new(deb.file(&format!("/usr/bin/{bin}")));
        command.arg("--version");
        let run = run_with_timeout(command, RUN_TIMEOUT);
        run.assert_success();
        assert!(
            run.stdout.starts_with(&format!("{bin} {VERSION} ")),
            "the packaged {bin} reports another version\n{run}"
        );
    }
}

/// The shipped sample config, its `/etc/dice/tls/` files moved to `tls`
/// (filled from `pki`, the key with `key_mode`), checked by the packaged agent.
fn check_sample(deb: &Deb, dir: &Path, pki: &Pki, key_mode: u32) -> RunOutput {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).expect("create the tls folder");
    std::fs::copy(&pki.server().cert, tls.join("node.pem")).expect("copy the certificate");
    std::fs::copy(&pki.server().key, tls.join("node-key.pem")).expect("copy the key");
    std::fs::copy(pki.ca_cert(), tls.join("ca.pem")).expect("copy the CA");
    std::fs::set_permissions(
        tls.join("node-key.pem"),
        std::fs::Permissions::from_mode(key_mode),
    )
    .expect("chmod the key");
    let sample = std::fs::read_to_string(deb.file("/etc/dice/node.toml")).expect("read the sample");
    assert!(
        sample.contains("\"/etc/dice/tls/"),
        "the sample keeps its keys elsewhere"
    );
    let config = dir.join("node.toml");
    let tls_prefix = format!("\"{}/", tls.display());
    std::fs::write(&config, sample.replace("\"/etc/dice/tls/", &tls_prefix))
        .expect("write the config");
    let mut command = Command::new(deb.file("/usr/bin/dice-agent"));
    command.arg("--config").arg(&config).arg("--check");
    run_with_timeout(command, RUN_TIMEOUT)
}

#[test]
fn package_sample_config_passes_check_with_certificates_only_dice_can_read() {
    let deb = &packages().agent;
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let sample = std::fs::read_to_string(deb.file("/etc/dice/node.toml")).expect("read the sample");
    let table: toml::Table = toml::from_str(&sample).expect("the sample is TOML");
    let modes: Vec<&str> = table["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .filter_map(|listener| listener.get("mode").and_then(toml::Value::as_str))
        .collect();
    assert_eq!(modes, ["mtls", "health"], "the sample's listeners");

    check_sample(deb, &dir.path().join("ok"), &pki, 0o600).assert_success();
    // strict_permissions: a key others may read fails the check.
    check_sample(deb, &dir.path().join("loose"), &pki, 0o640)
        .assert_code(2)
        .assert_stderr_contains("readable by group or others");
}

// === maintainer scripts ===

#[test]
fn package_maintainer_scripts_parse_and_create_the_user_once_and_purge_only_data() {
    let deb = &packages().agent;
    for script in ["postinst", "prerm", "postrm"] {
        let path = deb.control_dir.join(script);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("DEBIAN/{script}: {error}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "DEBIAN/{script} mode");
        let mut command = Command::new("sh");
        command.arg("-n").arg(&path);
        run_with_timeout(command, RUN_TIMEOUT).assert_success();
    }
    let postinst = deb.control_dir.join("postinst");
    let prerm = deb.control_dir.join("prerm");
    let postrm = deb.control_dir.join("postrm");
    let sandbox = ScriptSandbox::new();
    let root = sandbox.root();
    let mode = |path: &Path| std::fs::metadata(path).map(|meta| meta.permissions().mode() & 0o777);
    let called = |calls: &[String], call: &str| calls.iter().any(|c| c == call);

    // First install: the user, its folders, the unit enabled but not started.
    let (run, calls) = sandbox.run(&postinst, &["configure"]);
    run.assert_success();
    assert!(
        called(
            &calls,
            "adduser --system --group --home /var/lib/dice --no-create-home dice"
        ),
        "{calls:#?}"
    );
    assert!(
        called(&calls, "deb-systemd-helper enable dice-agent.service"),
        "{calls:#?}"
    );
    assert!(
        called(&calls, "systemctl --system daemon-reload"),
        "{calls:#?}"
    );
    assert!(
        !calls
            .iter()
            .any(|call| call.starts_with("deb-systemd-invoke")),
        "the service must not start on install: {calls:#?}"
    );
    assert_eq!(mode(&root.join("var/lib/dice")).ok(), Some(0o750));
    assert_eq!(mode(&root.join("etc/dice/tls")).ok(), Some(0o700));

    // Upgrade: the agent keeps running until the new one is configured, then
    // restarts if it ran; the operator's changes stay, no second user.
    std::fs::set_permissions(
        root.join("var/lib/dice"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::write(root.join("etc/dice/tls/node-key.pem"), "key").expect("write a key");
    let old_version = format!("{VERSION}{DEB_REVISION}");
    let (run, calls) = sandbox.run(&prerm, &["upgrade", &old_version]);
    run.assert_success();
    assert!(
        calls.is_empty(),
        "prerm upgrade should leave the agent running: {calls:#?}"
    );
    let (run, calls) = sandbox.run(&postinst, &["configure", &old_version]);
    run.assert_success();
    assert!(
        !calls
            .iter()
            .any(|call| call.starts_with("adduser") || call.starts_with("install")),
        "an upgrade made the user or its folders again: {calls:#?}"
    );
    assert!(
        called(&calls, "deb-systemd-invoke try-restart dice-agent.service"),
        "{calls:#?}"
    );
    assert_eq!(mode(&root.join("var/lib/dice")).ok(), Some(0o755));

    // remove stops the agent and keeps everything; purge deletes the data,
    // keeps the keys and the user.
    let (run, calls) = sandbox.run(&prerm, &["remove"]);
    run.assert_success();
    assert!(
        called(&calls, "deb-systemd-invoke stop dice-agent.service"),
        "{calls:#?}"
    );
    sandbox.run(&postrm, &["remove"]).0.assert_success();
    assert!(root.join("var/lib/dice").is_dir() && root.join("etc/dice/tls/node-key.pem").is_file());
    let (run, calls) = sandbox.run(&postrm, &["purge"]);
    run.assert_success()
        .assert_stderr_contains("is not empty: left in place");
    assert!(
        !root.join("var/lib/dice").exists(),
        "purge left /var/lib/dice"
    );
    assert!(
        root.join("etc/dice/tls/node-key.pem").is_file(),
        "purge deleted the keys"
    );
    assert!(
        !calls
            .iter()
            .any(|call| call.starts_with("deluser") || call.starts_with("userdel")),
        "purge removed the user: {calls:#?}"
    );
    std::fs::remove_file(root.join("etc/dice/tls/node-key.pem")).expect("remove the key");
    sandbox.run(&postrm, &["purge"]).0.assert_success();
    assert!(
        !root.join("etc/dice/tls").exists(),
        "an empty /etc/dice/tls stays after purge"
    );
}

// === lintian ===

#[test]
fn package_lintian_passes_with_each_override_explained() {
    let run = packages().lintian();
    run.assert_success();
    let tags: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.starts_with("E:") || line.starts_with("W:"))
        .collect();
    assert!(tags.is_empty(), "lintian: {tags:#?}\n{run}");
    // Every override has a comment right above its block.
    for package in ["dice-agent", "dicectl"] {
        let path = workspace_root().join(format!("packaging/{package}/lintian-overrides"));
        let text = std::fs::read_to_string(&path).expect("read the overrides");
        let mut explained = false;
        for line in text.lines() {
            if line.starts_with('#') {
                explained = true;
            } else if line.trim().is_empty() {
                explained = false;
            } else {
                assert!(
                    explained,
                    "{}: {line:?} has no comment saying why",
                    path.display()
                );
                assert!(line.starts_with(&format!("{package}: ")), "{line:?}");
            }
        }
    }
}
