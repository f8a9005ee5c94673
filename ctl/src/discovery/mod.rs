//! Discovery: the nodes of a fleet's `[[discovery]]` sources, found at run
//! time and merged with its `[[nodes]]`.
//!
//! - `dns`: `kind = "dns_srv"`, SRV records through hickory-resolver.
//! - `http`: `kind = "http_sd"`, a Prometheus HTTP SD endpoint (hyper, rustls).
//! - `file`: `kind = "file_sd"`, a Prometheus `file_sd` file (JSON or YAML).
//! - `targets`: the target-group format `http_sd` and `file_sd` share.
//!
//! Every source runs at once, each under its own `timeout`. A source fails
//! when it cannot be read at all or when any of its entries is malformed; the
//! nodes of its good entries are kept either way, and each problem is named
//! with the source and the entry ([`Discovery::problems`]).
//!
//! Merging: a node's identity is its address (as written, or as DNS resolved
//! it: `IP:PORT`) and the name its certificate must hold. A node found twice
//! is one node, under the name it was found with first ([[nodes]] first,
//! then the sources in file order); its `source` lists every source that
//! found it, comma-separated, and its labels are the union (the first value
//! wins). A different node whose name is taken gets `NAME@ADDRESS`.

mod dns;
mod file;
mod http;
mod targets;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::Context as _;

use crate::client::NodeTarget;
use crate::fleet::{DiscoverySource, Fleet, FleetNode, SourceSpec};

/// A node a source found, before merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its name.
    pub name: String,
    /// Where it is, and the name its certificate must hold.
    pub target: NodeTarget,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// What one source returned: its nodes, and what was wrong.
#[derive(Debug, Default)]
pub struct SourceResult {
    /// The nodes of its good entries.
    pub found: Vec<Found>,
    /// One message per problem: the whole source, or an entry.
    pub errors: Vec<String>,
}

impl SourceResult {
    fn failed(error: impl Into<String>) -> Self {
        Self {
            found: Vec::new(),
            errors: vec![error.into()],
        }
    }

    /// The nodes of a target-group document, or why it could not be used.
    fn from_document(document: Result<serde_json::Value, String>) -> Self {
        match document.and_then(targets::parse) {
            Ok((found, errors)) => Self { found, errors },
            Err(error) => Self::failed(error),
        }
    }
}

/// What one source contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceReport {
    /// `dns_srv:NAME`, `http_sd:URL` or `file_sd:PATH`.
    pub label: Arc<str>,
    /// Nodes it found (before merging).
    pub found: usize,
    /// Its problems; none if it worked.
    pub errors: Vec<String>,
}

/// What discovery did, source by source, in fleet-file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// One report per `[[discovery]]` entry.
    pub sources: Vec<SourceReport>,
}

impl Discovery {
    /// Whether any source failed.
    pub fn failed(&self) -> bool {
        self.sources.iter().any(|source| !source.errors.is_empty())
    }

    /// Every problem, one line each: `discovery: SOURCE: PROBLEM`.
    pub fn problems(&self) -> Vec<String> {
        (self.sources.iter())
            .flat_map(|source| {
                (source.errors.iter())
                    .map(move |error| format!("discovery: {}: {error}", source.label))
            })
            .collect()
    }
}

/// A source failed and `--allow-partial-discovery` was not given: nothing
/// was contacted. Exit status 1: this is a failure found at run time, not a
/// usage error.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}\n{failed} of {total} discovery sources failed: no node was contacted (fix the sources; roll, health and nodes take --allow-partial-discovery to run on the nodes found, certs and bench commands never do)",
    problems.join("\n")
)]
pub struct DiscoveryFailed {
    /// Every problem, as [`Discovery::problems`] gives them.
    pub problems: Vec<String>,
    /// How many sources failed.
    pub failed: usize,
    /// How many there are.
    pub total: usize,
}

impl DiscoveryFailed {
    /// The error for `discovery`, which failed.
    pub fn new(discovery: &Discovery) -> Self {
        Self {
            problems: discovery.problems(),
            failed: (discovery.sources.iter())
                .filter(|source| !source.errors.is_empty())
                .count(),
            total: discovery.sources.len(),
        }
    }
}

/// Runs every discovery source of `fleet` and appends the nodes found to
/// `fleet.nodes`. A fleet without sources costs nothing.
pub fn discover(fleet: &mut Fleet) -> anyhow::Result<Discovery> {
    if fleet.discovery.is_empty() {
        return Ok(Discovery::default());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime for discovery")?;
    let results = runtime.block_on(futures_util::future::join_all(
        fleet.discovery.iter().map(run_source),
    ));
    let mut discovery = Discovery::default();
    let mut merger = Merger::new(&fleet.nodes);
    for (source, mut result) in fleet.discovery.iter().zip(results) {
        let found = result.found.len();
        for node in result.found {
            if let Err(error) = merger.add(&mut fleet.nodes, node, &source.label) {
                result.errors.push(error);
            }
        }
        discovery.sources.push(SourceReport {
            label: source.label.clone(),
            found,
            errors: result.errors,
        });
    }
    Ok(discovery)
}

/// Runs one source under its deadline.
async fn run_source(source: &DiscoverySource) -> SourceResult {
    let work = async {
        match &source.spec {
            SourceSpec::DnsSrv { name, server } => dns::lookup(name, *server, source.timeout).await,
            SourceSpec::HttpSd(sd) => {
                let tls = match &sd.ca {
                    Some(ca) => match http::tls_config(ca, sd.identity.as_ref()) {
                        Ok(tls) => Some(tls),
                        Err(error) => return SourceResult::failed(error),
                    },
                    None => None,
                };
                SourceResult::from_document(http::get(&sd.url, tls).await.and_then(|body| {
                    serde_json::from_slice(&body).map_err(|error| format!("not JSON: {error}"))
                }))
            }
            SourceSpec::FileSd { path } => SourceResult::from_document(file::read(path).await),
        }
    };
    match tokio::time::timeout(source.timeout, work).await {
        Ok(result) => result,
        Err(_) => SourceResult::failed(format!(
            "no answer within {} (the source's timeout)",
            humantime::format_duration(source.timeout)
        )),
    }
}

/// Merges found nodes into a fleet's node list, by identity.
struct Merger {
    /// (address, server name) -> index in the node list.
    by_identity: HashMap<(String, String), usize>,
    names: HashSet<String>,
}

impl Merger {
    fn new(nodes: &[FleetNode]) -> Self {
        let mut merger = Self {
            by_identity: HashMap::with_capacity(nodes.len()),
            names: HashSet::with_capacity(nodes.len()),
        };
        for (index, node) in nodes.iter().enumerate() {
            merger
                .by_identity
                .entry(identity(&node.target))
                .or_insert(index);
            merger.names.insert(node.name.clone());
        }
        merger
    }

    fn add(
        &mut self,
        nodes: &mut Vec<FleetNode>,
        found: Found,
        source: &Arc<str>,
    ) -> Result<(), String> {
        let key = identity(&found.target);
        if let Some(&index) = self.by_identity.get(&key) {
            let node = &mut nodes[index];
            if !node.source.split(',').any(|s| s == &**source) {
                node.source = format!("{},{source}", node.source).into();
            }
            for (label, value) in found.labels {
                node.labels.entry(label).or_insert(value);
            }
            return Ok(());
        }
        if let Some(problem) = crate::fleet::name_problem(&found.name) {
            return Err(format!(
                "{:?}: not usable as a node name: {problem}",
                found.name
            ));
        }
        let mut name = found.name;
        if self.names.contains(&name) {
            name = format!("{name}@{}", found.target.label());
            let base = name.clone();
            let mut n = 2;
            while self.names.contains(&name) {
                name = format!("{base}#{n}");
                n += 1;
            }
        }
        self.names.insert(name.clone());
        self.by_identity.insert(key, nodes.len());
        nodes.push(FleetNode {
            name,
            target: found.target,
            labels: found.labels,
            source: source.clone(),
        });
        Ok(())
    }
}

/// A node's identity: its address and the name its certificate must hold.
fn identity(target: &NodeTarget) -> (String, String) {
    (
        target.label().to_owned(),
        target.server_name().to_str().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn found(
        name: &str,
        address: &str,
        server_name: Option<&str>,
        labels: &[(&str, &str)],
    ) -> Found {
        Found {
            name: name.to_owned(),
            target: NodeTarget::parse(address, server_name).expect("target"),
            labels: (labels.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_node_found_twice_is_one_node() {
        let mut fleet = crate::fleet::parse(
            Path::new("f.toml"),
            "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nserver_name = \"a.example\"\nlabels = { region = \"eu\" }\n",
        )
        .expect("fleet");
        let mut merger = Merger::new(&fleet.nodes);
        let dns: Arc<str> = "dns_srv:_dice._tcp.example".into();
        let http: Arc<str> = "http_sd:http://sd/".into();
        let nodes = &mut fleet.nodes;
        // The static node again, found by DNS: merged, labels added.
        merger
            .add(
                nodes,
                found(
                    "a.example",
                    "127.0.0.1:1",
                    Some("a.example"),
                    &[("region", "us"), ("weight", "5")],
                ),
                &dns,
            )
            .expect("merged");
        // Same address, another server name: another node, whose name is taken.
        merger
            .add(nodes, found("a", "127.0.0.1:1", None, &[]), &http)
            .expect("added");
        // Found again by the same source and by another.
        merger
            .add(
                nodes,
                found("x", "127.0.0.1:1", Some("a.example"), &[]),
                &dns,
            )
            .expect("merged");
        merger
            .add(
                nodes,
                found("x", "127.0.0.1:1", Some("a.example"), &[]),
                &http,
            )
            .expect("merged");
        let error = merger
            .add(nodes, found("bad name", "127.0.0.1:2", None, &[]), &http)
            .expect_err("a name with a space");
        assert!(error.contains("not usable as a node name"), "{error}");

        assert_eq!(nodes.len(), 2);
        assert_eq!(
            &*nodes[0].source,
            "static,dns_srv:_dice._tcp.example,http_sd:http://sd/"
        );
        assert_eq!(
            nodes[0].labels.get("region").map(String::as_str),
            Some("eu")
        );
        assert_eq!(nodes[0].labels.get("weight").map(String::as_str), Some("5"));
        assert_eq!(nodes[1].name, "a@127.0.0.1:1");
        assert_eq!(&*nodes[1].source, "http_sd:http://sd/");
    }
}
