//! `dice-agent --check` and config errors: valid configs print a summary and
//! exit 0; every invalid fixture exits 2 with a message naming the file and
//! saying what is wrong; the examples in `config/` all pass.

use std::path::Path;

use dice_tests::client::roll_once;
use dice_tests::fixtures::{
    Fixture, fixtures_dir, stage, stage_example, toml_files, workspace_root,
};
use dice_tests::pki::SERVER_CN;
use dice_tests::process::check_config;
use dice_tests::{Agent, AgentConfig, ListenerConfig, fresh_pki, run_agent, tempdir};

#[test]
fn check_on_a_valid_config_exits_zero_and_summarizes_it() {
    let (dir, pki) = fresh_pki();
    let config = AgentConfig::new("check-node-42")
        .tls(pki.server_tls())
        .listener(ListenerConfig::mtls("public-check"))
        .listener(ListenerConfig::h2c("local-check"));
    let path = dir.path().join("node.toml");
    config.write(&path);

    let output = check_config(&path);
    output.assert_success();
    let text = output.combined();
    for needle in ["check-node-42", "public-check", "local-check", SERVER_CN] {
        assert!(
            text.contains(needle),
            "--check output lacks {needle:?}\n{output}"
        );
    }
}

#[test]
fn every_invalid_fixture_exits_2_with_its_message() {
    let fixtures = Fixture::load_dir(&fixtures_dir().join("config/invalid"));
    assert!(
        fixtures.len() >= 8,
        "expected at least 8 invalid fixtures, found {}",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for fixture in &fixtures {
        assert!(
            !fixture.expect.is_empty(),
            "{} states no `# expect:` substring",
            fixture.path.display()
        );
        let staged = stage(fixture);
        let output = check_config(&staged.config);
        let mut problems = Vec::new();
        if output.code() != Some(2) {
            problems.push(format!("exit {:?}, expected 2", output.code()));
        }
        if !output.stderr.contains(&fixture.file_name) {
            problems.push(format!(
                "stderr does not name the file {}",
                fixture.file_name
            ));
        }
        for needle in &fixture.expect {
            if !output.stderr.contains(needle.as_str()) {
                problems.push(format!("stderr lacks {needle:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n{output}",
                fixture.file_name,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn invalid_config_without_check_also_exits_2() {
    let fixture = Fixture::load(&fixtures_dir().join("config/invalid/bad-address.toml"));
    let staged = stage(&fixture);
    let output = run_agent([Path::new("--config"), &staged.config]);
    output.assert_code(2);
    for needle in &fixture.expect {
        output.assert_stderr_contains(needle);
    }
}

#[test]
fn missing_config_file_exits_2_and_names_it() {
    let dir = tempdir();
    let path = dir.path().join("no-such-node.toml");
    let output = check_config(&path);
    output
        .assert_code(2)
        .assert_stderr_contains("no-such-node.toml");
}

#[test]
fn unknown_flag_exits_2() {
    run_agent(["--no-such-flag"]).assert_code(2);
}

/// Asserts that `dice-agent --check` passes `config` (staged from `name`).
fn assert_passes_check(config: &Path, name: impl std::fmt::Display) {
    let output = check_config(config);
    assert_eq!(
        output.code(),
        Some(0),
        "{name} should pass --check\n{output}"
    );
}

#[test]
fn every_valid_fixture_passes_check() {
    let fixtures = Fixture::load_dir(&fixtures_dir().join("config/valid"));
    assert!(!fixtures.is_empty(), "no valid fixtures found");
    for fixture in &fixtures {
        assert_passes_check(&stage(fixture).config, &fixture.file_name);
    }
}

#[tokio::test]
async fn valid_fixtures_resolve_paths_against_the_config_folder_and_serve() {
    // The agent runs with this crate's directory as its working directory; the
    // config and its relative certificate paths live in a temp directory.
    for name in ["minimal.toml", "full.toml"] {
        let fixture = Fixture::load(&fixtures_dir().join("config/valid").join(name));
        let staged = stage(&fixture);
        let tls = staged.pki.client_tls();
        let agent = Agent::spawn_file(staged.dir, staged.config, &[]);
        for listener in agent
            .listeners()
            .iter()
            .filter(|l| l.mode == dice_tests::Mode::Mtls)
        {
            let value = roll_once(listener.addr, &tls)
                .await
                .unwrap_or_else(|error| {
                    panic!(
                        "{name}: roll on {}: {error}\n{}",
                        listener.name,
                        agent.dump()
                    )
                });
            assert!((1..=6).contains(&value));
        }
    }
}

#[test]
fn every_example_agent_config_passes_check() {
    let dir = workspace_root().join("config");
    let examples: Vec<_> = toml_files(&dir)
        .into_iter()
        .filter(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            !name.starts_with("fleet")
        })
        .collect();
    assert!(
        !examples.is_empty(),
        "{} holds no example agent config (*.toml not starting with `fleet`)",
        dir.display()
    );
    for example in &examples {
        assert_passes_check(&stage_example(example).config, example.display());
    }
}
