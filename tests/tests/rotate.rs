//! Fleet-wide rotation through the agents' admin API: `dicectl certs rotate`
//! over a fleet with clients rolling throughout (`fleet`), a whole CA
//! rollover with `rotate-ca` and its resumption after an agent died
//! (`rollover`), and every refusal seen from the caller's side, with nothing
//! changed on the node (`refusals`).

mod fleet;
mod refusals;
mod rollover;

use std::path::{Path, PathBuf};

use dice_tests::TlsClient;
use dice_tests::admin::AdminFleet;
use dice_tests::certs_cli::{Rolling, Tally};

/// One background client per node of `fleet`, each rolling on a fresh
/// connection and on one kept open, as `tls`.
async fn roll_everywhere(fleet: &AdminFleet, tls: &TlsClient) -> Vec<Rolling> {
    let mut rolling = Vec::new();
    for node in &fleet.nodes {
        rolling.push(Rolling::start(node.addr(), tls.clone()).await);
    }
    rolling
}

/// Stops the clients and asserts that not one RPC failed and both kinds of
/// connection kept rolling on every node.
async fn assert_no_rpc_failed(fleet: &AdminFleet, rolling: Vec<Rolling>, who: &str) -> Vec<Tally> {
    let mut tallies = Vec::new();
    for (node, rolling) in fleet.nodes.iter().zip(rolling) {
        let tally = rolling.finish().await;
        assert!(
            tally.failed.is_empty(),
            "{who} on {}: {} failed RPCs, first: {:?}\n{}",
            node.name,
            tally.failed.len(),
            tally.failed.first(),
            fleet.logs()
        );
        assert!(
            tally.fresh_ok > 0 && tally.kept_ok > 0,
            "{who} on {} never rolled: {tally:?}",
            node.name
        );
        tallies.push(tally);
    }
    tallies
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// dicectl's JSON output, parsed; panics with the whole run if it is not JSON.
fn json(output: &dice_tests::RunOutput) -> serde_json::Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|error| panic!("dicectl printed no JSON document ({error}):\n{output}"))
}
