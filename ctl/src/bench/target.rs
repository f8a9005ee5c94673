//! Which nodes `dicectl bench` loads, and how each is spoken to: an address
//! written `h2c://HOST:PORT` is plaintext HTTP/2; `https://HOST:PORT`, a bare
//! `HOST:PORT` and every fleet node are mTLS.

use std::collections::HashSet;

use crate::args::SelectArgs;
use crate::client::NodeTarget;

/// The prefix that marks a plaintext (h2c) address.
pub const H2C_SCHEME: &str = "h2c://";
/// The prefix that marks an mTLS address (the default without one).
pub const HTTPS_SCHEME: &str = "https://";

/// How a node is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS with the client certificate, ALPN h2.
    Mtls,
    /// Plaintext HTTP/2 with prior knowledge.
    H2c,
}

impl Transport {
    /// `mtls` or `h2c`, as in the agent's config and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mtls => "mtls",
            Self::H2c => "h2c",
        }
    }
}

/// A node to load.
#[derive(Debug, Clone)]
pub struct BenchNode {
    /// The fleet name, or the address as given (with its scheme).
    pub name: String,
    /// Where it is and the name its certificate must hold.
    pub target: NodeTarget,
    /// mTLS or h2c.
    pub transport: Transport,
}

/// The selection with schemes taken off `--node` values, and the addresses that asked for h2c.
#[derive(Debug)]
pub struct Stripped {
    /// What [`crate::select::select`] resolves.
    pub select: SelectArgs,
    /// Addresses given as `h2c://ADDR`.
    pub h2c: HashSet<String>,
    /// Whether any node needs TLS (so the client certificate files too).
    pub needs_tls: bool,
}

/// Takes the schemes off `--node` values.
pub fn strip(select: &SelectArgs) -> Stripped {
    let mut h2c = HashSet::new();
    let mut needs_tls = select.all || !select.label.is_empty();
    let node = select
        .node
        .iter()
        .map(|value| {
            if let Some(addr) = value.strip_prefix(H2C_SCHEME) {
                h2c.insert(addr.to_owned());
                addr.to_owned()
            } else {
                needs_tls = true;
                value.strip_prefix(HTTPS_SCHEME).unwrap_or(value).to_owned()
            }
        })
        .collect();
    Stripped {
        select: SelectArgs {
            all: select.all,
            node,
            label: select.label.clone(),
        },
        h2c,
        needs_tls,
    }
}

/// Turns selected nodes into bench nodes, h2c where the address asked for it.
pub fn bench_nodes(nodes: Vec<crate::select::Node>, h2c: &HashSet<String>) -> Vec<BenchNode> {
    nodes
        .into_iter()
        .map(|node| {
            let plain = node.ad_hoc && h2c.contains(node.target.label());
            BenchNode {
                name: if plain {
                    format!("{H2C_SCHEME}{}", node.name)
                } else {
                    node.name
                },
                target: node.target,
                transport: if plain {
                    Transport::H2c
                } else {
                    Transport::Mtls
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_pick_the_transport() {
        let select = SelectArgs {
            node: vec![
                "h2c://127.0.0.1:50051".into(),
                "https://127.0.0.1:8443".into(),
                "127.0.0.1:8444".into(),
            ],
            ..SelectArgs::default()
        };
        let stripped = strip(&select);
        assert!(stripped.needs_tls);
        assert_eq!(
            stripped.select.node,
            ["127.0.0.1:50051", "127.0.0.1:8443", "127.0.0.1:8444"]
        );
        let nodes =
            crate::select::select(None, &stripped.select, crate::select::IfNone::Refuse, None)
                .expect("addresses");
        let nodes = bench_nodes(nodes, &stripped.h2c);
        let found: Vec<(&str, Transport)> = nodes
            .iter()
            .map(|node| (node.name.as_str(), node.transport))
            .collect();
        assert_eq!(
            found,
            [
                ("127.0.0.1:8443", Transport::Mtls),
                ("127.0.0.1:8444", Transport::Mtls),
                ("h2c://127.0.0.1:50051", Transport::H2c),
            ]
        );
        let only_plain = SelectArgs {
            node: vec!["h2c://127.0.0.1:1".into()],
            ..SelectArgs::default()
        };
        assert!(!strip(&only_plain).needs_tls);
    }
}
