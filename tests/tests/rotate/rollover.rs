//! `dicectl certs rotate-ca`: a whole CA rollover, phase by phase, with
//! clients of both CAs rolling while each is allowed; and an interrupted
//! rollover that the same command resumes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use dice_tests::admin::AdminFleet;
use dice_tests::certs_cli::{CaDir, IssueSpec, Leaf, os};
use dice_tests::python::PyRoll;
use dice_tests::{Client, TlsClient};

use super::{assert_no_rpc_failed, roll_everywhere};

/// A PEM bundle of both CAs, as every client holds during a rollover.
fn both_cas(fleet: &AdminFleet, new: &CaDir) -> PathBuf {
    let path = fleet.dir().join("old-and-new-ca.pem");
    let bundle = [fleet.ca.cert(), new.cert()]
        .iter()
        .map(|file| std::fs::read_to_string(file).expect("read a CA certificate"))
        .collect::<String>();
    std::fs::write(&path, bundle).expect("write the bundle");
    path
}

/// How many certificates a PEM bundle holds.
fn certs_in(path: &Path) -> usize {
    dice_proto::pem::load_certs(path).map_or(0, |certs| certs.len())
}

/// Whether `client` gets a roll out of the node at `addr`.
async fn rolls(addr: std::net::SocketAddr, client: &TlsClient) -> Result<i32, String> {
    let client = Client::mtls(addr, client).await?;
    client.roll().await.map_err(|status| status.to_string())
}

/// `dicectl certs rotate-ca --all --ca-dir OLD --new-ca-dir NEW [--phase PHASE]`.
fn rotate_ca(old: &Path, new: &Path, phase: Option<&str>) -> Vec<OsString> {
    let mut args = os(&[
        &"certs",
        &"rotate-ca",
        &"--all",
        &"--ca-dir",
        &old,
        &"--new-ca-dir",
        &new,
    ]);
    if let Some(phase) = phase {
        args.extend(os(&[&"--phase", &phase]));
    }
    args
}

/// Each node's rollover phase as `dicectl certs status` reads it, in name
/// order, as the fleet's operator or as `operator`.
async fn phases(
    fleet: &AdminFleet,
    old: &Path,
    new: &Path,
    operator: Option<&Leaf>,
) -> Vec<String> {
    let mut args = os(&[
        &"certs",
        &"status",
        &"--all",
        &"--ca-dir",
        &old,
        &"--new-ca-dir",
        &new,
        &"--output",
        &"json",
    ]);
    if let Some(operator) = operator {
        args = as_operator(args, operator);
    }
    let output = fleet.ctl_async(&args).await;
    output.assert_code(0);
    let report = super::json(&output);
    report["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n["phase"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `args`, then `--cert` and `--key` of an operator certificate other than the fleet file's.
fn as_operator(mut args: Vec<OsString>, leaf: &Leaf) -> Vec<OsString> {
    args.extend(os(&[&"--cert", &leaf.cert, &"--key", &leaf.key]));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_ca_rolls_the_fleet_over_to_a_new_ca_with_no_failed_rpc() {
    let fleet = AdminFleet::start(3);
    let new = CaDir::init(&fleet.dir().join("new-ca"));
    let bundle = both_cas(&fleet, &new);
    let web_old = IssueSpec::client("web").issue(&fleet.ca, &fleet.dir().join("web-old"));
    let web_new = IssueSpec::client("web").issue(&new, &fleet.dir().join("web-new"));
    let (old_dir, new_dir) = (fleet.ca.dir.clone(), new.dir.clone());
    let old_clients = roll_everywhere(&fleet, &web_old.client(&bundle)).await;

    // A dry run says what would run and changes nothing.
    let mut dry_run = rotate_ca(&old_dir, &new_dir, None);
    dry_run.push("--dry-run".into());
    let plan = fleet.ctl_async(&dry_run).await;
    plan.assert_code(0);
    plan.assert_stdout_contains("would run trust, reissue, untrust");
    for node in &fleet.nodes {
        assert_eq!(
            certs_in(&node.client_ca()),
            1,
            "{}: a dry run changes nothing",
            node.name
        );
    }
    assert!(
        !old_dir.join("audit.jsonl").exists(),
        "a dry run writes no audit record"
    );

    // trust: every node trusts both CAs; a client of the new CA is served.
    fleet
        .ctl_async(&rotate_ca(&old_dir, &new_dir, Some("trust")))
        .await
        .assert_code(0);
    for node in &fleet.nodes {
        assert_eq!(
            certs_in(&node.client_ca()),
            2,
            "{} trusts both CAs",
            node.name
        );
    }
    assert_eq!(
        phases(&fleet, &old_dir, &new_dir, None).await,
        ["trusted"; 3]
    );
    let new_clients = roll_everywhere(&fleet, &web_new.client(&bundle)).await;

    // reissue: every node serves a certificate of the new CA.
    fleet
        .ctl_async(&rotate_ca(&old_dir, &new_dir, Some("reissue")))
        .await
        .assert_code(0);
    for (index, node) in fleet.nodes.iter().enumerate() {
        let served = fleet.served(index, &new.cert()).await;
        assert_eq!(
            served.serial,
            node.cert_file().summary.serial,
            "{}",
            node.name
        );
    }

    // untrust is refused while the operator's own certificate is from the old CA.
    let refused = fleet
        .ctl_async(&rotate_ca(&old_dir, &new_dir, Some("untrust")))
        .await;
    refused.assert_code(2);
    refused.assert_stderr_contains("dicectl certs issue");
    for node in &fleet.nodes {
        assert_eq!(
            certs_in(&node.client_ca()),
            2,
            "{}: refused, so unchanged",
            node.name
        );
    }

    // The old CA's clients stop before it is dropped; the operator moves to the new CA.
    assert_no_rpc_failed(&fleet, old_clients, "a client of the old CA").await;
    let operator_new = IssueSpec::client("ops").issue(&new, &fleet.dir().join("operator-new"));
    let untrust = as_operator(
        rotate_ca(&old_dir, &new_dir, Some("untrust")),
        &operator_new,
    );
    fleet.ctl_async(&untrust).await.assert_code(0);
    assert_no_rpc_failed(&fleet, new_clients, "a client of the new CA").await;

    for node in &fleet.nodes {
        assert_eq!(
            certs_in(&node.client_ca()),
            1,
            "{} trusts the new CA only",
            node.name
        );
        let old = rolls(node.addr(), &web_old.client(&bundle)).await;
        assert!(
            old.is_err(),
            "{} still serves a client of the old CA: {old:?}",
            node.name
        );
        let new_client = rolls(node.addr(), &web_new.client(&new.cert())).await;
        assert!(
            new_client.is_ok(),
            "{} refuses a client of the new CA: {new_client:?}",
            node.name
        );
    }

    let done = phases(&fleet, &old_dir, &new_dir, Some(&operator_new)).await;
    assert_eq!(done, ["done"; 3]);

    // Nothing is left to do: the same command, without a phase, changes nothing.
    let again = as_operator(rotate_ca(&old_dir, &new_dir, None), &operator_new);
    let output = fleet.ctl_async(&again).await;
    output.assert_code(0);
    for node in &fleet.nodes {
        assert_eq!(certs_in(&node.client_ca()), 1, "{}: {output}", node.name);
    }
}

/// An agent dies between the trust phase and the rest: the run fails naming
/// it; after its restart the same command takes it from where it stands
/// (trust, then reissue), while the nodes already through are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rollover_resumes_from_where_each_node_stands() {
    let mut fleet = AdminFleet::start(3);
    let new = CaDir::init(&fleet.dir().join("new-ca"));
    let (old_dir, new_dir) = (fleet.ca.dir.clone(), new.dir.clone());
    fleet
        .ctl_async(&rotate_ca(&old_dir, &new_dir, Some("trust")))
        .await
        .assert_code(0);

    fleet.kill(1);
    let output = fleet.ctl_async(&rotate_ca(&old_dir, &new_dir, None)).await;
    output.assert_code(1);
    assert!(
        output.combined().contains("node-2"),
        "the dead node is named:\n{output}"
    );
    for index in [0, 2] {
        let node = &fleet.nodes[index];
        let served = fleet.served(index, &new.cert()).await;
        assert_eq!(
            served.serial,
            node.cert_file().summary.serial,
            "{} was reissued",
            node.name
        );
        assert_eq!(
            certs_in(&node.client_ca()),
            2,
            "{}: no untrust while node-2 is behind",
            node.name
        );
    }
    let reissued: Vec<String> = fleet
        .nodes
        .iter()
        .map(|n| n.cert_file().summary.serial)
        .collect();
    let status = os(&[
        &"certs",
        &"status",
        &"--all",
        &"--ca-dir",
        &old_dir,
        &"--new-ca-dir",
        &new_dir,
    ]);
    fleet.ctl_async(&status).await.assert_code(1);

    fleet.restart(1);
    let now = phases(&fleet, &old_dir, &new_dir, None).await;
    assert_eq!(now, ["reissued", "trusted", "reissued"]);
    let output = fleet.ctl_async(&rotate_ca(&old_dir, &new_dir, None)).await;
    // node-2 is reissued now; untrust still waits for an operator certificate of the new CA.
    let served = fleet.served(1, &new.cert()).await;
    assert_eq!(
        served.serial,
        fleet.nodes[1].cert_file().summary.serial,
        "node-2 reissued:\n{output}"
    );
    assert_ne!(served.serial, reissued[1], "node-2 reissued:\n{output}");
    for index in [0, 2] {
        assert_eq!(
            fleet.nodes[index].cert_file().summary.serial,
            reissued[index],
            "{} was through reissue and is left alone:\n{output}",
            fleet.nodes[index].name
        );
    }
    assert!(
        output.combined().contains("dicectl certs issue"),
        "what is left, and how:\n{output}"
    );

    let operator_new = IssueSpec::client("ops").issue(&new, &fleet.dir().join("operator-new"));
    let finish = as_operator(rotate_ca(&old_dir, &new_dir, None), &operator_new);
    fleet.ctl_async(&finish).await.assert_code(0);
    for node in &fleet.nodes {
        assert_eq!(
            certs_in(&node.client_ca()),
            1,
            "{} trusts the new CA only",
            node.name
        );
    }
}

/// The runbook, as the Python web app lives it: an unmodified grpcio client
/// holding both CAs keeps rolling with its old client certificate through
/// trust and reissue, rolls with a new one from trust on, and after untrust
/// only the new one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_follows_the_runbook_through_a_rollover() {
    let fleet = AdminFleet::start(1);
    let new = CaDir::init(&fleet.dir().join("new-ca"));
    let bundle = both_cas(&fleet, &new);
    let web_old = IssueSpec::client("web").issue(&fleet.ca, &fleet.dir().join("web-old"));
    let web_new = IssueSpec::client("web").issue(&new, &fleet.dir().join("web-new"));
    let (old_dir, new_dir) = (fleet.ca.dir.clone(), new.dir.clone());
    let addr = fleet.nodes[0].addr();
    let python = |client: &Leaf| PyRoll::new(addr, &bundle).cert_key(&client.cert, &client.key);

    python(&web_old).rolls();
    fleet
        .ctl_async(&rotate_ca(&old_dir, &new_dir, Some("trust")))
        .await
        .assert_code(0);
    python(&web_old).rolls();
    python(&web_new).rolls();
    fleet
        .ctl_async(&rotate_ca(&old_dir, &new_dir, Some("reissue")))
        .await
        .assert_code(0);
    python(&web_old).rolls();
    python(&web_new).rolls();

    let operator_new = IssueSpec::client("ops").issue(&new, &fleet.dir().join("operator-new"));
    let untrust = as_operator(
        rotate_ca(&old_dir, &new_dir, Some("untrust")),
        &operator_new,
    );
    fleet.ctl_async(&untrust).await.assert_code(0);
    python(&web_new).rolls();
    python(&web_old).fails_with("UNAVAILABLE");
}
