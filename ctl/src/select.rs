//! Which nodes a command runs on: `--all`, `--node NAME|HOST:PORT...` or
//! `--label KEY=VALUE...`, resolved against the fleet file (if any).
//!
//! A `--node` value names a fleet node if the fleet file has a node of that
//! name; otherwise it must be a `HOST:PORT` address, which works without any
//! fleet file (ad-hoc use). Nodes come back sorted by name in natural order
//! (`node-2` before `node-10`), without duplicates, so output is stable.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use crate::args::{Label, SelectArgs};
use crate::client::NodeTarget;
use crate::fleet::Fleet;

/// A node to run on: a fleet node, or an ad-hoc address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The fleet name, or the address as given for an ad-hoc node.
    pub name: String,
    /// Where it is and the name its certificate must hold.
    pub target: NodeTarget,
    /// Whether it was given as `--node HOST:PORT` rather than found in the fleet file.
    pub ad_hoc: bool,
    /// Where it came from: `static`, a discovery source, or `ad_hoc`.
    pub source: Arc<str>,
}

/// The `source` of a node given as `--node HOST:PORT`.
pub const AD_HOC_SOURCE: &str = "ad_hoc";

/// What no `--all`, `--node` or `--label` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfNone {
    /// Every node of the fleet file (`health`).
    All,
    /// An error; clap already requires a selection (`roll`).
    Refuse,
}

/// A selection that cannot be resolved. Nothing has run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SelectError(String);

const NO_FLEET_HINT: &str = "pass --fleet FILE, set DICECTL_FLEET, or run where ./fleet.toml is";

/// Resolves the selection flags to nodes, sorted by name.
pub fn select(
    fleet: Option<&Fleet>,
    args: &SelectArgs,
    if_none: IfNone,
    server_name: Option<&str>,
) -> Result<Vec<Node>, SelectError> {
    let mut nodes = if !args.node.is_empty() {
        by_name_or_address(fleet, &args.node, server_name)?
    } else if !args.label.is_empty() {
        by_labels(need_fleet(fleet, "--label")?, &args.label)?
    } else if args.all || if_none == IfNone::All {
        all(need_fleet(
            fleet,
            if args.all { "--all" } else { "health" },
        )?)?
    } else {
        return Err(SelectError(
            "no nodes selected (pass --all, --node NAME|HOST:PORT or --label KEY=VALUE)".into(),
        ));
    };
    if server_name.is_some() && !nodes.iter().any(|node| node.ad_hoc) {
        return Err(SelectError(format!(
            "--server-name applies to --node HOST:PORT only ({})",
            match fleet {
                Some(fleet) => format!(
                    "set server_name on the node in {} instead",
                    fleet.file.display()
                ),
                None => "select nodes by address".to_owned(),
            }
        )));
    }
    nodes.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    Ok(nodes)
}

fn need_fleet<'a>(fleet: Option<&'a Fleet>, what: &str) -> Result<&'a Fleet, SelectError> {
    fleet.ok_or_else(|| {
        SelectError(format!(
            "{what} needs a fleet file, and none was found ({NO_FLEET_HINT}; config/fleet.toml is an example)"
        ))
    })
}

fn all(fleet: &Fleet) -> Result<Vec<Node>, SelectError> {
    if fleet.nodes.is_empty() {
        return Err(SelectError(format!(
            "{}: lists no nodes{} (add [[nodes]] entries with a name and an address)",
            fleet.file.display(),
            if fleet.discovery.is_empty() {
                ""
            } else {
                ", and its [[discovery]] sources found none"
            }
        )));
    }
    Ok(fleet.nodes.iter().map(from_fleet).collect())
}

fn by_labels(fleet: &Fleet, labels: &[Label]) -> Result<Vec<Node>, SelectError> {
    let nodes: Vec<Node> = (fleet.nodes.iter())
        .filter(|node| {
            labels
                .iter()
                .all(|label| node.labels.get(&label.key) == Some(&label.value))
        })
        .map(from_fleet)
        .collect();
    if nodes.is_empty() {
        let wanted: Vec<String> = labels.iter().map(ToString::to_string).collect();
        return Err(SelectError(format!(
            "--label {}: no node in {} has {} (check the labels in the fleet file)",
            wanted.join(" --label "),
            fleet.file.display(),
            if labels.len() == 1 {
                "this label"
            } else {
                "all of these labels"
            }
        )));
    }
    Ok(nodes)
}

fn by_name_or_address(
    fleet: Option<&Fleet>,
    values: &[String],
    server_name: Option<&str>,
) -> Result<Vec<Node>, SelectError> {
    let mut seen = HashSet::new();
    let mut nodes = Vec::with_capacity(values.len());
    for value in values {
        if !seen.insert(value.as_str()) {
            continue;
        }
        if let Some(node) = fleet.and_then(|fleet| fleet.node(value)) {
            nodes.push(from_fleet(node));
            continue;
        }
        match NodeTarget::parse(value, server_name) {
            Ok(target) => nodes.push(Node {
                name: value.clone(),
                target,
                ad_hoc: true,
                source: AD_HOC_SOURCE.into(),
            }),
            // A value without a port was meant as a name.
            Err(_) if !value.contains(':') => {
                return Err(SelectError(match fleet {
                    Some(fleet) => format!(
                        "--node {value:?}: no node of that name in {} ({})",
                        fleet.file.display(),
                        known_names(fleet)
                    ),
                    None => format!(
                        "--node {value:?}: not HOST:PORT, and there is no fleet file to look up node names in ({NO_FLEET_HINT})"
                    ),
                }));
            }
            Err(error) => return Err(SelectError(error.to_string())),
        }
    }
    Ok(nodes)
}

fn known_names(fleet: &Fleet) -> String {
    const SHOWN: usize = 5;
    let mut names: Vec<&str> = fleet.nodes.iter().map(|node| node.name.as_str()).collect();
    if names.is_empty() {
        return "it lists no nodes; or write HOST:PORT".to_owned();
    }
    names.sort_by(|a, b| natural_cmp(a, b));
    let more = names.len().saturating_sub(SHOWN);
    names.truncate(SHOWN);
    let mut text = format!("known: {}", names.join(", "));
    if more > 0 {
        text.push_str(&format!(", and {more} more"));
    }
    text.push_str("; or write HOST:PORT");
    text
}

fn from_fleet(node: &crate::fleet::FleetNode) -> Node {
    Node {
        name: node.name.clone(),
        target: node.target.clone(),
        ad_hoc: false,
        source: node.source.clone(),
    }
}

/// Compares names with runs of digits as numbers: `node-2` < `node-10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (da, ra) = split_digits(a);
                let (db, rb) = split_digits(b);
                let (ta, tb) = (da.trim_start_matches('0'), db.trim_start_matches('0'));
                let order = ta
                    .len()
                    .cmp(&tb.len())
                    .then_with(|| ta.cmp(tb))
                    .then_with(|| da.len().cmp(&db.len()));
                if order != Ordering::Equal {
                    return order;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                (a, b) = (&a[x.len_utf8()..], &b[y.len_utf8()..]);
            }
        }
    }
}

fn split_digits(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::fleet;

    fn fleet() -> Fleet {
        let text = "\
[[nodes]]
name = \"node-10\"
address = \"127.0.0.1:10\"
labels = { region = \"eu\", tier = \"a\" }
[[nodes]]
name = \"node-2\"
address = \"127.0.0.1:2\"
labels = { region = \"eu\" }
[[nodes]]
name = \"node-1\"
address = \"127.0.0.1:1\"
labels = { region = \"us\" }
";
        fleet::parse(Path::new("f.toml"), text).expect("valid fleet")
    }

    fn args(all: bool, node: &[&str], label: &[(&str, &str)]) -> SelectArgs {
        SelectArgs {
            all,
            node: node.iter().map(|s| (*s).to_owned()).collect(),
            label: (label.iter())
                .map(|(k, v)| Label {
                    key: (*k).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect(),
        }
    }

    fn names(nodes: &[Node]) -> Vec<&str> {
        nodes.iter().map(|node| node.name.as_str()).collect()
    }

    #[test]
    fn selects_sorted_by_natural_name_order() {
        let fleet = fleet();
        let all = select(Some(&fleet), &args(true, &[], &[]), IfNone::Refuse, None).expect("all");
        assert_eq!(names(&all), ["node-1", "node-2", "node-10"]);
        let default =
            select(Some(&fleet), &args(false, &[], &[]), IfNone::All, None).expect("default");
        assert_eq!(default, all);

        let eu = select(
            Some(&fleet),
            &args(false, &[], &[("region", "eu")]),
            IfNone::Refuse,
            None,
        )
        .expect("labels");
        assert_eq!(names(&eu), ["node-2", "node-10"]);
        let both = select(
            Some(&fleet),
            &args(false, &[], &[("region", "eu"), ("tier", "a")]),
            IfNone::Refuse,
            None,
        )
        .expect("labels");
        assert_eq!(names(&both), ["node-10"]);
    }

    #[test]
    fn nodes_by_name_or_address() {
        let fleet = fleet();
        let nodes = select(
            Some(&fleet),
            &args(false, &["node-10", "127.0.0.1:9", "node-10"], &[]),
            IfNone::Refuse,
            None,
        )
        .expect("nodes");
        assert_eq!(names(&nodes), ["127.0.0.1:9", "node-10"]);
        assert!(nodes[0].ad_hoc && !nodes[1].ad_hoc);

        let ad_hoc = select(
            None,
            &args(false, &["localhost:8443"], &[]),
            IfNone::Refuse,
            Some("node-1.example"),
        )
        .expect("ad hoc");
        assert_eq!(ad_hoc[0].target.server_name().to_str(), "node-1.example");
    }

    #[test]
    fn unresolvable_selections_say_why() {
        let fleet = fleet();
        let cases: Vec<(Option<&Fleet>, SelectArgs, Option<&str>, &str)> = vec![
            (None, args(true, &[], &[]), None, "--all needs a fleet file"),
            (
                None,
                args(false, &[], &[("a", "b")]),
                None,
                "--label needs a fleet file",
            ),
            (
                None,
                args(false, &["node-1"], &[]),
                None,
                "--node \"node-1\": not HOST:PORT, and there is no fleet file",
            ),
            (
                Some(&fleet),
                args(false, &["node-3"], &[]),
                None,
                "--node \"node-3\": no node of that name in f.toml (known: node-1, node-2, node-10; or write HOST:PORT)",
            ),
            (
                Some(&fleet),
                args(false, &["::1:80"], &[]),
                None,
                "IPv6 addresses need brackets",
            ),
            (
                Some(&fleet),
                args(false, &[], &[("region", "mars")]),
                None,
                "--label region=mars: no node in f.toml has this label",
            ),
            (
                Some(&fleet),
                args(true, &[], &[]),
                Some("x.example"),
                "--server-name applies to --node HOST:PORT only",
            ),
        ];
        for (fleet, args, server_name, expected) in cases {
            let error = select(fleet, &args, IfNone::Refuse, server_name)
                .expect_err(expected)
                .to_string();
            assert!(error.contains(expected), "{error}\nexpected {expected:?}");
        }
        let empty = fleet::parse(Path::new("e.toml"), "").expect("valid");
        let error =
            select(Some(&empty), &args(false, &[], &[]), IfNone::All, None).expect_err("empty");
        assert!(
            error.to_string().starts_with("e.toml: lists no nodes"),
            "{error}"
        );
    }

    #[test]
    fn natural_order() {
        let mut names = vec!["n10", "n2", "n1", "m", "n02", "n1a", "n"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["m", "n", "n1", "n1a", "n2", "n02", "n10"]);
    }
}
