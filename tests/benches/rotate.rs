//! `dicectl certs rotate --all` over [`AGENTS`] real agents: a program that
//! prints numbers, not a timed test. Run it with `scripts/bench-rotate.sh`,
//! which builds the release binaries and points `DICE_AGENT_BIN` and
//! `DICECTL_BIN` at them.
//!
//! Every agent serves its own ECDSA P-256 certificate from one CA directory
//! and has the admin API on for the operator's certificate. While dicectl
//! rotates the whole fleet, [`LOADED`] nodes (spread over the fleet) each have
//! a client rolling without pause, on a fresh connection (a full handshake)
//! and on one connection kept open; every RPC they make must succeed. Each
//! run is one `dicectl` process, timed from spawn to exit. The goal is a
//! wall time under 5 s for 100 agents on a 2-core machine, with 0 failed
//! RPCs: a failed rotation, a failed RPC, or a loaded node whose client got no
//! roll through makes it exit 1 after the last run. `DICE_BENCH_RUNS=N`
//! changes the number of runs (default [`DEFAULT_RUNS`]);
//! `DICE_BENCH_AGENTS=N` the number of agents.

use std::time::{Duration, Instant};

use dice_tests::admin::AdminFleet;
use dice_tests::certs_cli::{IssueSpec, Rolling, os};

/// Agents in the fleet, unless `DICE_BENCH_AGENTS` says otherwise.
const AGENTS: usize = 100;
/// Nodes with a client rolling throughout.
const LOADED: usize = 10;
/// Timed runs, unless `DICE_BENCH_RUNS` says otherwise.
const DEFAULT_RUNS: usize = 3;

fn main() {
    let agents = dice_tests::env_positive("DICE_BENCH_AGENTS", AGENTS);
    let runs = dice_tests::env_positive("DICE_BENCH_RUNS", DEFAULT_RUNS);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the rolling clients");

    let setup = Instant::now();
    let fleet = AdminFleet::start(agents);
    let web = IssueSpec::client("web").issue(&fleet.ca, &fleet.dir().join("web"));
    println!(
        "dicectl certs rotate --all: {agents} agents (ECDSA P-256), {LOADED} of them under continuous load, {cores} cores; set up in {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    let ca_dir = fleet.ca.dir.clone();
    let step = (agents / LOADED).max(1);
    let mut walls = Vec::new();
    let (mut failed_runs, mut failed_rpcs) = (0, 0);
    for run in 1..=runs {
        let rolling = runtime.block_on(async {
            let mut rolling = Vec::new();
            for node in fleet.nodes.iter().step_by(step) {
                rolling.push(Rolling::start(node.addr(), web.client(&fleet.ca.cert())).await);
            }
            rolling
        });
        let start = Instant::now();
        let output = fleet.ctl(os(&[
            &"certs",
            &"rotate",
            &"--all",
            &"--ca-dir",
            &ca_dir,
            &"--output",
            &"json",
        ]));
        let wall = start.elapsed();
        if output.code() != Some(0) {
            eprintln!("run {run}: the rotation failed:\n{output}");
            failed_runs += 1;
        }
        let (mut ok, mut failed) = (0, Vec::new());
        for (node, rolling) in rolling.into_iter().enumerate() {
            let tally = runtime.block_on(rolling.finish());
            ok += tally.fresh_ok + tally.kept_ok;
            failed.extend(tally.failed);
            if tally.fresh_ok == 0 || tally.kept_ok == 0 {
                failed.push(format!(
                    "loaded node {node}: {} rolls on fresh connections and {} on the kept one \
                     during the run",
                    tally.fresh_ok, tally.kept_ok
                ));
            }
        }
        println!(
            "run {run}: wall {:.0} ms, {:.1} ms per node; {ok} RPCs during the run, {} failed{}",
            ms(wall),
            ms(wall) / agents as f64,
            failed.len(),
            failed
                .first()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        );
        failed_rpcs += failed.len();
        walls.push(wall);
    }
    walls.sort();
    println!(
        "wall median {:.0} ms, min {:.0} ms, max {:.0} ms over {runs} runs: {:.1} ms per node (median)",
        ms(walls[walls.len() / 2]),
        ms(walls[0]),
        ms(walls[walls.len() - 1]),
        ms(walls[walls.len() / 2]) / agents as f64
    );
    if failed_runs > 0 || failed_rpcs > 0 {
        eprintln!(
            "rotate bench: {failed_runs} of {runs} rotations failed and {failed_rpcs} RPCs failed \
             during them; the goal is none"
        );
        std::process::exit(1);
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
