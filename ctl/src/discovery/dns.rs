//! `kind = "dns_srv"`: one node per SRV record, through hickory-resolver.
//!
//! The node's address is the SRV target's first address (A or AAAA: from the
//! reply's additional section if the server sent it, else looked up) and the
//! SRV port; its name and TLS server name are the target's name. DNS is not
//! trusted for identity: the node's certificate must still hold that name.
//! Priority and weight become the labels `priority` and `weight`. A target
//! of `.` means "no service here" (RFC 2782) and is skipped.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use super::{Found, SourceResult};
use crate::client::NodeTarget;

/// Looks up the SRV records of `name` at `server` (else the system resolver)
/// and each target's address. The caller bounds the whole lookup; each query
/// is also bounded, so a silent server costs at most `timeout`.
pub async fn lookup(name: &str, server: Option<SocketAddr>, timeout: Duration) -> SourceResult {
    let resolver = match resolver(server, timeout) {
        Ok(resolver) => resolver,
        Err(error) => return SourceResult::failed(error),
    };
    let asked = match server {
        Some(server) => format!("DNS server {server}"),
        None => "the system resolver".to_owned(),
    };
    let records = match resolver.srv_lookup(name).await {
        Ok(lookup) => lookup,
        Err(error) if error.is_no_records_found() => {
            return SourceResult::failed(format!(
                "{asked} has no SRV records for {name} (check the name, and that the server serves its zone)"
            ));
        }
        Err(error) => {
            return SourceResult::failed(format!(
                "cannot ask {asked} for the SRV records of {name}: {error}"
            ));
        }
    };
    // Servers usually send the targets' addresses along (RFC 2782's
    // additional section); only the others cost a query each.
    let mut known: HashMap<String, IpAddr> = HashMap::new();
    for record in records.additionals() {
        let ip = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        let name = record.name.to_utf8();
        known
            .entry(name.trim_end_matches('.').to_owned())
            .or_insert(ip);
    }
    let mut result = SourceResult::default();
    for (index, record) in records.answers().iter().enumerate() {
        let RData::SRV(srv) = &record.data else {
            continue;
        };
        let target = srv.target.to_utf8();
        let target = target.trim_end_matches('.');
        if target.is_empty() {
            continue;
        }
        let address = match known.get(target) {
            Some(ip) => Some(*ip),
            None => match resolver.lookup_ip(target).await {
                Ok(addresses) => addresses.iter().next(),
                Err(_) => None,
            },
        };
        let Some(address) = address else {
            result.errors.push(format!(
                "record {index} ({target}:{}): {asked} has no address for {target}",
                srv.port
            ));
            continue;
        };
        let address = SocketAddr::new(address, srv.port);
        match NodeTarget::parse(&address.to_string(), Some(target)) {
            Ok(node) => result.found.push(Found {
                name: target.to_owned(),
                target: node,
                labels: BTreeMap::from([
                    ("priority".to_owned(), srv.priority.to_string()),
                    ("weight".to_owned(), srv.weight.to_string()),
                ]),
            }),
            Err(error) => result
                .errors
                .push(format!("record {index} ({target}:{}): {error}", srv.port)),
        }
    }
    if result.found.is_empty() && result.errors.is_empty() {
        result.errors.push(format!(
            "{asked} answered for {name} with no usable SRV record (a target of \".\" means no service)"
        ));
    }
    result
}

/// A resolver asking `server` over UDP, then TCP, or the system's resolvers.
fn resolver(server: Option<SocketAddr>, timeout: Duration) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(server) => {
            let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut name_server.connections {
                connection.port = server.port();
            }
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                TokioRuntimeProvider::default(),
            )
        }
        None => Resolver::builder_tokio().map_err(|error| {
            format!("cannot read the system resolver's configuration: {error} (set server = \"IP:PORT\")")
        })?,
    };
    let options: &mut ResolverOpts = builder.options_mut();
    // Two tries of half the source's deadline each: a lost UDP packet is retried.
    options.timeout = timeout / 2;
    options.attempts = 2;
    builder
        .build()
        .map_err(|error| format!("cannot build a DNS resolver: {error}"))
}
