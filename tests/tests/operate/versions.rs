//! `--version` of both binaries, and their shell completions (run in bash)
//! and man pages.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use dice_tests::fixtures::workspace_root;
use dice_tests::process::{RUN_TIMEOUT, run_with_timeout};
use dice_tests::{Ctl, run_agent, tempdir};
use regex::Regex;

use super::{VERSION, version_line};

#[test]
fn both_binaries_print_their_version_and_git_commit() {
    for (binary, long, short) in [
        ("dice-agent", run_agent(["--version"]), run_agent(["-V"])),
        ("dicectl", Ctl::run(["--version"]), Ctl::run(["-V"])),
    ] {
        long.assert_success();
        short.assert_success();
        assert_eq!(long.stdout, short.stdout, "{binary}: -V and --version");
        let (version, commit) = version_line(binary, &long);
        assert_eq!(version, VERSION, "{binary}");
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(workspace_root())
                .args(args)
                .output()
                .unwrap_or_else(|error| {
                    panic!(
                        "{binary} reports commit {commit}, and checking it needs git: {error} \
                         (apt-get install git)"
                    )
                })
        };
        if commit == "unknown" {
            // Right only for a build outside a git checkout (a source tarball).
            let inside = git(&["rev-parse", "--is-inside-work-tree"]);
            assert_ne!(
                String::from_utf8_lossy(&inside.stdout).trim(),
                "true",
                "{binary} reports commit unknown but was built in a git checkout: its build \
                 could not run git (apt-get install git, then cargo build --workspace --bins)"
            );
            continue;
        }
        // The binary may predate HEAD, but its commit must exist in this repository.
        let git = git(&["cat-file", "-t", &commit]);
        assert_eq!(
            String::from_utf8_lossy(&git.stdout).trim(),
            "commit",
            "{binary} reports commit {commit}, which this repository does not have: {}",
            String::from_utf8_lossy(&git.stderr)
        );
    }
}

// === completions and man pages ===

/// Sources a bash completion script and asks it to complete `words` (the last
/// one being completed); returns the candidates.
fn bash_complete(script: &Path, binary: &str, words: &[&str]) -> Vec<String> {
    const DRIVER: &str = r#"
set -u
source "$1"
spec=$(complete -p "$2") || exit 3
fn=${spec#*-F }
fn=${fn%% *}
shift 2
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
prev=""
if (( COMP_CWORD > 0 )); then prev=${COMP_WORDS[COMP_CWORD-1]}; fi
"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "$prev"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let mut command = Command::new("bash");
    command
        .args(["-c", DRIVER, "bash"])
        .arg(script)
        .arg(binary)
        .arg(binary)
        .args(words);
    let output = run_with_timeout(command, RUN_TIMEOUT);
    output.assert_success();
    output.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn completions_and_man_pages_generate_for_both_binaries() {
    let dir = tempdir();
    let agent_flags = [
        "--config",
        "--check",
        "--ready-file",
        "--log-format",
        "--man",
    ];
    let ctl_words = [
        "roll", "health", "certs", "init", "--fleet", "--output", "--count",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let agent = run_agent(["--completions", shell]);
        let ctl = Ctl::run(["completions", shell]);
        for (binary, output, words) in [
            ("dice-agent", &agent, &agent_flags[..]),
            ("dicectl", &ctl, &ctl_words[..]),
        ] {
            output.assert_success();
            assert_eq!(output.stderr, "", "{binary} {shell}: stderr\n{output}");
            let script = &output.stdout;
            for word in words {
                // fish names long flags without their dashes: `-l config`.
                let word = match shell {
                    "fish" => word.trim_start_matches('-'),
                    _ => word,
                };
                assert!(
                    script.contains(word),
                    "{binary} {shell} completions lack {word}\n{output}"
                );
            }
            let marker = match shell {
                "bash" => "complete -F _".to_owned(),
                "zsh" => format!("#compdef {binary}\n"),
                _ => format!("complete -c {binary} "),
            };
            assert!(
                script.contains(&marker),
                "{binary} {shell} completions lack {marker:?}\n{output}"
            );
        }
    }

    // The bash scripts parse, and complete what a user types.
    let agent_script = dir.path().join("dice-agent.bash");
    let ctl_script = dir.path().join("dicectl.bash");
    std::fs::write(&agent_script, run_agent(["--completions", "bash"]).stdout).expect("write");
    std::fs::write(&ctl_script, Ctl::run(["completions", "bash"]).stdout).expect("write");
    for script in [&agent_script, &ctl_script] {
        let mut check = Command::new("bash");
        check.arg("-n").arg(script);
        run_with_timeout(check, RUN_TIMEOUT).assert_success();
    }
    let cases: [(&Path, &str, &[&str], &[&str]); 6] = [
        (&agent_script, "dice-agent", &["--con"], &["--config"]),
        (
            &agent_script,
            "dice-agent",
            &["--log-format", ""],
            &["text", "json"],
        ),
        (
            &agent_script,
            "dice-agent",
            &["--completions", ""],
            &["bash", "zsh", "fish"],
        ),
        (&ctl_script, "dicectl", &["ro"], &["roll"]),
        (&ctl_script, "dicectl", &["certs", ""], &["init"]),
        (
            &ctl_script,
            "dicectl",
            &["roll", "--output", ""],
            &["table", "json"],
        ),
    ];
    for (script, binary, words, expected) in cases {
        let candidates = bash_complete(script, binary, words);
        for want in expected {
            assert!(
                candidates.iter().any(|candidate| candidate == want),
                "`{binary} {}<TAB>` offers {candidates:?}, not {want}",
                words.join(" ")
            );
        }
    }

    // Man pages: roff, titled with the binary's name, section 1.
    for (binary, output) in [
        ("dice-agent", run_agent(["--man"])),
        ("dicectl", Ctl::run(["man"])),
    ] {
        output.assert_success();
        let page = &output.stdout;
        let title = page
            .lines()
            .find(|line| line.starts_with(".TH "))
            .unwrap_or_else(|| panic!("{binary} man page has no .TH line\n{output}"));
        assert!(
            title.starts_with(&format!(".TH {binary} 1 ")) && title.contains(VERSION),
            "{binary} man page title: {title:?}"
        );
        // Only roff preamble (`.ie`/`.el` string definitions) may precede the title.
        let before_title: Vec<&str> = page.lines().take_while(|line| *line != title).collect();
        assert!(
            before_title
                .iter()
                .all(|line| line.starts_with(".ie ") || line.starts_with(".el ")),
            "{binary} man page: text before .TH: {before_title:?}"
        );
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH VERSION"] {
            assert!(
                page.lines().any(|line| line == section),
                "{binary} man page lacks {section}"
            );
        }
        let escaped = binary.replace('-', "\\-");
        assert!(
            page.contains(&format!("{escaped} \\- ")),
            "{binary} man page NAME section"
        );
    }
    assert!(run_agent(["--man"]).stdout.contains("\\-\\-config"));

    // `dicectl man --out DIR` writes every page the top page refers to.
    let man_dir = dir.path().join("man");
    let written = Ctl::run([OsStr::new("man"), OsStr::new("--out"), man_dir.as_os_str()]);
    written.assert_success();
    let listed: Vec<PathBuf> = written.stdout.lines().map(PathBuf::from).collect();
    let top = std::fs::read_to_string(man_dir.join("dicectl.1")).expect("read dicectl.1");
    assert_eq!(
        top,
        Ctl::run(["man"]).stdout,
        "dicectl.1 is what `dicectl man` prints"
    );
    let reference = Regex::new(r"^(dicectl(\\-[a-z]+)+)\(1\)$").expect("regex");
    let mut referenced: Vec<String> = top
        .lines()
        .filter_map(|line| reference.captures(line))
        .map(|captures| captures[1].replace("\\-", "-"))
        .collect();
    referenced.push("dicectl-certs-init".to_owned());
    for name in [
        "dicectl-roll",
        "dicectl-health",
        "dicectl-certs",
        "dicectl-man",
    ] {
        assert!(
            referenced.iter().any(|r| r == name),
            "dicectl.1 lacks {name}(1)"
        );
    }
    assert!(
        !referenced.iter().any(|r| r == "dicectl-help"),
        "dicectl.1 refers to a help page"
    );
    for name in &referenced {
        let path = man_dir.join(format!("{name}.1"));
        assert!(
            listed.contains(&path),
            "{} not listed\n{written}",
            path.display()
        );
        let page = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{name}(1) is referred to, but: {error}"));
        let title = page
            .lines()
            .find(|line| line.starts_with(".TH "))
            .unwrap_or("");
        assert!(
            title.starts_with(&format!(".TH {name} 1 ")) && title.contains(VERSION),
            "{name}.1 title: {title:?}"
        );
    }

    // An unknown shell is a usage error.
    run_agent(["--completions", "tcsh"]).assert_code(2);
    Ctl::run(["completions", "tcsh"]).assert_code(2);
}
