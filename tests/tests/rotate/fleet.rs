//! `dicectl certs rotate --all` over a fleet of real agents, with clients
//! rolling on fresh and long-lived connections throughout.

use dice_proto::cert::CertSummary;
use dice_tests::admin::AdminFleet;
use dice_tests::certs_cli::{IssueSpec, os};
use dice_tests::secrets::KeyTraces;

use super::{assert_no_rpc_failed, files_under, json, roll_everywhere};

/// The admin proto, whose fields are all a node ever sends or receives.
const ADMIN_PROTO: &str = include_str!("../../../proto/admin.proto");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_all_rotates_every_node_with_no_failed_rpc_and_keys_only_on_the_nodes() {
    let fleet = AdminFleet::start(8);
    let web = IssueSpec::client("web").issue(&fleet.ca, &fleet.dir().join("web"));
    let before: Vec<CertSummary> = fleet.nodes.iter().map(|n| n.cert_file().summary).collect();
    let rolling = roll_everywhere(&fleet, &web.client(&fleet.ca.cert())).await;

    let ca_dir = fleet.ca.dir.clone();
    let output = fleet
        .ctl_async(os(&[
            &"certs",
            &"rotate",
            &"--all",
            &"--ca-dir",
            &ca_dir,
            &"--output",
            &"json",
        ]))
        .await;
    output.assert_code(0);
    assert_no_rpc_failed(&fleet, rolling, "web").await;

    let report = json(&output);
    assert_eq!(report["schema_version"], 1, "{output}");
    for (index, node) in fleet.nodes.iter().enumerate() {
        let served = fleet.served(index, &fleet.ca.cert()).await;
        let file = node.cert_file().summary;
        assert_ne!(
            served.serial, before[index].serial,
            "{} still serves its old certificate",
            node.name
        );
        assert_eq!(
            served.serial, file.serial,
            "{} serves what its files hold",
            node.name
        );
        assert_eq!(served.sans, before[index].sans, "{}: same SANs", node.name);
        assert_eq!(
            served.subject, before[index].subject,
            "{}: same subject",
            node.name
        );
        let row = report["nodes"]
            .as_array()
            .and_then(|rows| rows.iter().find(|row| row["name"] == node.name.as_str()))
            .unwrap_or_else(|| panic!("no JSON row for {}:\n{output}", node.name));
        assert_eq!(row["result"], "rotated", "{}: {row}", node.name);
        assert_eq!(row["old_serial"], before[index].serial.as_str(), "{row}");
        assert_eq!(row["new_serial"], served.serial.as_str(), "{row}");
        assert!(
            !node.dir.join("server-key.pem.staged").exists(),
            "{}: the staged key must have become the key file",
            node.name
        );
    }

    // Each new key is in its node's key file and nowhere else: not in the CA
    // directory (audit log included), not in dicectl's output, not in another
    // node's folder, not in any agent's log.
    let audit = std::fs::read_to_string(fleet.ca.dir.join("audit.jsonl")).expect("audit.jsonl");
    for node in &fleet.nodes {
        assert!(
            audit.contains(&format!("\"{}\"", node.name)),
            "no audit record for {}:\n{audit}",
            node.name
        );
        let traces = KeyTraces::of(&node.key(), &node.cert());
        traces.assert_absent(&output.combined(), "dicectl's output");
        traces.assert_absent(&fleet.logs(), "the agents' logs");
        for file in files_under(fleet.dir()) {
            if file == node.key() {
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&file).expect("read")).into_owned();
            traces.assert_absent(&text, &file.display().to_string());
        }
    }
}

/// Every field of the admin API: text, flags and certificates, none that
/// could carry a private key (no bytes, no field named for a key but its
/// type and the flag asking for a fresh one).
#[test]
fn the_admin_api_has_no_field_for_a_private_key() {
    let field = regex::Regex::new(r"^\s*(repeated\s+)?(\w+)\s+(\w+)\s*=\s*\d+;").expect("regex");
    let mut fields = Vec::new();
    for line in ADMIN_PROTO.lines() {
        if let Some(found) = field.captures(line) {
            fields.push((found[2].to_owned(), found[3].to_owned()));
        }
    }
    assert!(
        fields.len() > 10,
        "the field pattern matches nothing: {fields:?}"
    );
    for (kind, name) in &fields {
        assert!(
            [
                "string",
                "bool",
                "ServedCertificate",
                "TrustedCa",
                "RollbackTarget"
            ]
            .contains(&kind.as_str()),
            "{kind} {name}: a new field type; make sure it cannot carry a private key"
        );
        if name.contains("key") {
            assert!(
                ["key_type", "fresh_key"].contains(&name.as_str()),
                "{kind} {name}"
            );
        }
        if name.ends_with("pem") {
            assert!(
                ["csr_pem", "chain_pem", "bundle_pem", "pem"].contains(&name.as_str()),
                "{kind} {name}"
            );
        }
    }
}

/// A node that is down fails the run (exit 1, the node named): the nodes
/// before it rotate, and the run stops there (`--max-failed 0`), leaving the
/// rest untouched. Once it is back, the same command rotates the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_stops_the_run_and_the_same_command_finishes_after_its_restart() {
    let mut fleet = AdminFleet::start(3);
    let before: Vec<String> = fleet
        .nodes
        .iter()
        .map(|n| n.cert_file().summary.serial)
        .collect();
    fleet.kill(1);
    let ca_dir = fleet.ca.dir.clone();
    let rotate = os(&[&"certs", &"rotate", &"--all", &"--ca-dir", &ca_dir]);

    let output = fleet.ctl_async(&rotate).await;
    output.assert_code(1);
    let row = |name: &str| {
        output
            .stdout
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{output}"))
            .to_owned()
    };
    assert!(
        row("node-1").contains("rotated"),
        "the canary rotated:\n{output}"
    );
    assert!(
        row("node-2").contains("failed"),
        "node-2 was down:\n{output}"
    );
    assert!(
        row("node-3").contains("not run"),
        "the run stops at the first failure:\n{output}"
    );
    let served = fleet.served(0, &fleet.ca.cert()).await;
    assert_ne!(served.serial, before[0], "node-1 rotated");
    for index in [1, 2] {
        assert_eq!(
            fleet.nodes[index].cert_file().summary.serial,
            before[index],
            "{}'s files were not touched",
            fleet.nodes[index].name
        );
    }

    fleet.restart(1);
    let output = fleet.ctl_async(&rotate).await;
    output.assert_code(0);
    for index in [1, 2] {
        let served = fleet.served(index, &fleet.ca.cert()).await;
        assert_ne!(
            served.serial, before[index],
            "{} rotated:\n{output}",
            fleet.nodes[index].name
        );
    }
}

/// A CA directory that cannot be used is a usage error: exit 2, no node touched.
#[tokio::test]
async fn an_unusable_ca_directory_exits_2_and_touches_no_node() {
    let fleet = AdminFleet::start(1);
    let before = std::fs::read(fleet.nodes[0].cert()).expect("read");
    let missing = fleet.dir().join("no-such-ca");
    let output = fleet
        .ctl_async(os(&[&"certs", &"rotate", &"--all", &"--ca-dir", &missing]))
        .await;
    output.assert_code(2);
    output.assert_stderr_contains("no-such-ca");
    assert_eq!(std::fs::read(fleet.nodes[0].cert()).expect("read"), before);
    assert!(
        !fleet.nodes[0].dir.join("server-key.pem.staged").exists(),
        "no key was staged"
    );
}
