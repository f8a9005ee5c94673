//! `dicectl nodes`: the fleet as `--all` will see it, discovered nodes
//! included, without contacting any node.
//!
//! Loads the fleet file, runs its `[[discovery]]` sources
//! ([`crate::discovery`]), selects as `health` does (every node by default)
//! and writes name, address, server name, labels and source per node
//! ([`crate::output::nodes`]). A failed source is named on stderr and makes
//! the exit status 1, unless `--allow-partial-discovery`; the nodes found are
//! listed either way.

use std::collections::HashMap;

use anyhow::anyhow;

use crate::args::{GlobalArgs, OutputFormat};
use crate::cli::NodesArgs;
use crate::discovery::{self, Discovery, DiscoveryFailed};
use crate::fleet::{self, FleetNode};
use crate::{Outcome, output, select};

/// What `dicectl nodes` found.
#[derive(Debug)]
pub struct NodesReport<'a> {
    /// The fleet file.
    pub fleet: &'a std::path::Path,
    /// The selected nodes, sorted by name.
    pub nodes: Vec<&'a FleetNode>,
    /// What each discovery source did.
    pub discovery: &'a Discovery,
}

/// Runs `dicectl nodes`.
pub fn run(global: &GlobalArgs, args: &NodesArgs) -> anyhow::Result<Outcome> {
    let path = fleet::locate(global.fleet.as_deref()).ok_or_else(|| {
        anyhow!(
            "nodes needs a fleet file, and none was found (pass --fleet FILE, set {}, or run where ./fleet.toml is; config/fleet.toml is an example)",
            fleet::FLEET_ENV
        )
    })?;
    let mut fleet = fleet::load(&path)?;
    let discovery = discovery::discover(&mut fleet)?;
    let selected = if fleet.nodes.is_empty() {
        Vec::new()
    } else {
        select::select(Some(&fleet), &args.select, select::IfNone::All, None)?
    };
    let by_name: HashMap<&str, &FleetNode> = (fleet.nodes.iter())
        .map(|node| (node.name.as_str(), node))
        .collect();
    let nodes = (selected.iter())
        .filter_map(|node| by_name.get(node.name.as_str()).copied())
        .collect();
    let report = NodesReport {
        fleet: &fleet.file,
        nodes,
        discovery: &discovery,
    };
    output::nodes::write(&report, global.output.unwrap_or(OutputFormat::Table))?;
    if !discovery.failed() {
        return Ok(Outcome::Success);
    }
    if args.discovery.allow_partial_discovery {
        output::warnings(
            &(discovery.problems().into_iter())
                .map(|problem| format!("{problem} (going on: --allow-partial-discovery)"))
                .collect::<Vec<_>>(),
        );
        return Ok(Outcome::Success);
    }
    let failed = DiscoveryFailed::new(&discovery);
    output::warnings(&failed.problems);
    output::warnings(&[format!(
        "{} of {} discovery sources failed; the nodes above are those found (pass --allow-partial-discovery to accept them)",
        failed.failed, failed.total
    )]);
    Ok(Outcome::NodeFailed)
}
