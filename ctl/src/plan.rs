//! What a fan-out command will do, resolved before anything runs: the fleet
//! file (if any), the nodes, one shared TLS client configuration, the
//! deadline per node and the fan-out width. Every error here is a usage or
//! config error (exit 2): nothing has touched the network yet.
//!
//! Precedence, for each setting: the flag, else the fleet file's `[client]`
//! key, else the default ([`crate::fleet::DEFAULT_TIMEOUT`], ...).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dice_proto::pem::load_certs;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;

use crate::args::{ConnArgs, SelectArgs};
use crate::discovery::{self, DiscoveryFailed};
use crate::fleet::{self, Fleet};
use crate::select::{self, Node};
use crate::tls::{self, ClientFiles, PemFile};

/// Everything a fan-out needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The nodes, sorted by name.
    pub nodes: Vec<Node>,
    /// The TLS client configuration every connection shares.
    pub tls: Arc<ClientConfig>,
    /// The deadline per node.
    pub timeout: Duration,
    /// Nodes in flight at once.
    pub concurrency: usize,
    /// `health` warns about certificates expiring sooner than this.
    pub expiry_warning: Duration,
    /// The fleet file used, if any.
    pub fleet: Option<PathBuf>,
    /// dicectl's own client certificate chain, leaf first.
    pub client_chain: Vec<CertificateDer<'static>>,
}

impl Plan {
    /// Whether this is the first slice's scripting form: one `--node HOST:PORT`, no fleet node.
    pub fn is_single_ad_hoc(&self) -> bool {
        matches!(&self.nodes[..], [node] if node.ad_hoc)
    }
}

/// What a command asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `--fleet` or `$DICECTL_FLEET`.
    pub fleet: Option<&'a Path>,
    /// `--all`, `--node`, `--label`.
    pub select: &'a SelectArgs,
    /// What an empty selection means.
    pub if_none: select::IfNone,
    /// The connection flags.
    pub conn: &'a ConnArgs,
    /// `--expiry-warning`, for `health`.
    pub expiry_warning: Option<Duration>,
    /// CA certificates to trust beside `--ca` (`certs rotate-ca`: the old and the new root).
    pub extra_roots: &'a [CertificateDer<'static>],
    /// `--allow-partial-discovery`: run on the nodes found even if a
    /// `[[discovery]]` source failed (each failure is still named on stderr).
    pub allow_partial_discovery: bool,
}

impl<'a> Request<'a> {
    /// The nodes `select` picks, reached as `conn` says: an empty selection is
    /// refused, no `--expiry-warning`, no extra roots.
    pub fn new(fleet: Option<&'a Path>, select: &'a SelectArgs, conn: &'a ConnArgs) -> Self {
        Self {
            fleet,
            select,
            if_none: select::IfNone::Refuse,
            conn,
            expiry_warning: None,
            extra_roots: &[],
            allow_partial_discovery: false,
        }
    }
}

/// Loads the fleet file, selects the nodes and builds the TLS configuration.
pub fn plan(request: Request<'_>) -> anyhow::Result<Plan> {
    let fleet = match fleet::locate(request.fleet) {
        Some(path) => Some(load_and_discover(&path, request.allow_partial_discovery)?),
        None => None,
    };
    let conn = request.conn;
    let nodes = select::select(
        fleet.as_ref(),
        request.select,
        request.if_none,
        conn.server_name.as_deref(),
    )?;
    let files = client_files(fleet.as_ref(), conn)?;
    let tls = tls::client_config_with_roots(&files, request.extra_roots)?;
    // The TLS configuration above loaded the same file: it parses.
    let client_chain = load_certs(&files.cert.path).unwrap_or_default();
    let client = fleet.as_ref().map(|fleet| &fleet.client);
    Ok(Plan {
        nodes,
        tls,
        timeout: (conn.timeout)
            .or(client.map(|c| c.timeout))
            .unwrap_or(fleet::DEFAULT_TIMEOUT),
        concurrency: (conn.concurrency)
            .or(client.map(|c| c.concurrency))
            .unwrap_or(fleet::DEFAULT_CONCURRENCY),
        expiry_warning: (request.expiry_warning)
            .or(client.map(|c| c.expiry_warning))
            .unwrap_or(fleet::DEFAULT_EXPIRY_WARNING),
        fleet: fleet.map(|fleet| fleet.file),
        client_chain,
    })
}

/// Loads the fleet file at `path` and adds the nodes its `[[discovery]]`
/// sources find. A failed source is a [`DiscoveryFailed`] error (exit status
/// 1, nothing contacted), unless `allow_partial`: then each problem is a
/// warning on stderr and the nodes found are used.
pub fn load_and_discover(path: &Path, allow_partial: bool) -> anyhow::Result<Fleet> {
    let mut fleet = fleet::load(path)?;
    let discovery = discovery::discover(&mut fleet)?;
    if discovery.failed() {
        if !allow_partial {
            return Err(DiscoveryFailed::new(&discovery).into());
        }
        crate::output::warnings(
            &(discovery.problems().into_iter())
                .map(|problem| format!("{problem} (going on: --allow-partial-discovery)"))
                .collect::<Vec<_>>(),
        );
    }
    Ok(fleet)
}

/// Each TLS file from its flag, else from the fleet file's `[client]`.
fn client_files(fleet: Option<&Fleet>, conn: &ConnArgs) -> anyhow::Result<ClientFiles> {
    let client = fleet.map(|fleet| &fleet.client);
    let pick = |flag: &'static str, given: &Option<PathBuf>, set: Option<&PemFile>| {
        given
            .as_deref()
            .map(|path| PemFile::flag(flag, path))
            .or_else(|| set.cloned())
    };
    let ca = pick("--ca", &conn.ca, client.and_then(|c| c.ca.as_ref()));
    let cert = pick("--cert", &conn.cert, client.and_then(|c| c.cert.as_ref()));
    let key = pick("--key", &conn.key, client.and_then(|c| c.key.as_ref()));
    match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Ok(ClientFiles { ca, cert, key }),
        (ca, cert, key) => {
            let missing: Vec<&str> = [
                (ca.is_none(), "ca"),
                (cert.is_none(), "cert"),
                (key.is_none(), "key"),
            ]
            .iter()
            .filter(|(missing, _)| *missing)
            .map(|(_, name)| *name)
            .collect();
            let flags: Vec<String> = missing.iter().map(|name| format!("--{name}")).collect();
            let message = match fleet {
                Some(fleet) => {
                    let keys: Vec<String> = missing
                        .iter()
                        .map(|name| format!("client.{name}"))
                        .collect();
                    format!(
                        "no client certificate files: {} sets no {} (set {} in its [client] table, or pass {})",
                        fleet.file.display(),
                        keys.join(", "),
                        if keys.len() == 1 { "it" } else { "them" },
                        flags.join(", ")
                    )
                }
                None => format!(
                    "no client certificate files: missing {} (pass --ca, --cert and --key, or use a fleet file with a [client] table: --fleet FILE)",
                    flags.join(", ")
                ),
            };
            Err(anyhow::anyhow!(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Pki;

    fn conn(pki: &Pki) -> ConnArgs {
        ConnArgs {
            ca: Some(pki.file("ca.pem")),
            cert: Some(pki.file("client.pem")),
            key: Some(pki.file("client-key.pem")),
            ..ConnArgs::default()
        }
    }

    fn select_nodes(nodes: &[&str]) -> SelectArgs {
        SelectArgs {
            node: nodes.iter().map(|s| (*s).to_owned()).collect(),
            ..SelectArgs::default()
        }
    }

    #[test]
    fn ad_hoc_needs_no_fleet_file() {
        let pki = Pki::new();
        let select = select_nodes(&["127.0.0.1:8443"]);
        let conn = conn(&pki);
        let plan = plan(Request::new(None, &select, &conn)).expect("plan");
        assert!(plan.is_single_ad_hoc());
        assert_eq!(plan.timeout, fleet::DEFAULT_TIMEOUT);
        assert_eq!(plan.concurrency, fleet::DEFAULT_CONCURRENCY);
        assert!(plan.fleet.is_none());
    }

    #[test]
    fn missing_tls_files_are_named() {
        let pki = Pki::new();
        let select = select_nodes(&["127.0.0.1:8443"]);
        let partial = ConnArgs {
            key: None,
            ..conn(&pki)
        };
        let error = plan(Request::new(None, &select, &partial)).expect_err("no key");
        assert_eq!(
            error.to_string(),
            "no client certificate files: missing --key (pass --ca, --cert and --key, or use a fleet file with a [client] table: --fleet FILE)"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("fleet.toml");
        std::fs::write(
            &file,
            "[[nodes]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n",
        )
        .expect("write");
        let none = ConnArgs::default();
        let error = plan(Request::new(Some(&file), &select, &none)).expect_err("no files");
        let text = error.to_string();
        assert!(
            text.ends_with("sets no client.ca, client.cert, client.key (set them in its [client] table, or pass --ca, --cert, --key)"),
            "{text}"
        );
    }

    #[test]
    fn flags_override_the_fleet_file() {
        let pki = Pki::new();
        let dir = pki.file("");
        let file = dir.join("fleet.toml");
        std::fs::write(
            &file,
            "[client]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\ntimeout = \"2s\"\nconcurrency = 3\nexpiry_warning = \"30d\"\n[[nodes]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n",
        )
        .expect("write");
        let select = select_nodes(&["a"]);
        let none = ConnArgs::default();
        let from_file = plan(Request::new(Some(&file), &select, &none)).expect("plan");
        assert_eq!(from_file.timeout, Duration::from_secs(2));
        assert_eq!(from_file.concurrency, 3);
        assert_eq!(from_file.expiry_warning, Duration::from_secs(30 * 86_400));
        assert!(!from_file.is_single_ad_hoc());

        let flags = ConnArgs {
            timeout: Some(Duration::from_millis(300)),
            concurrency: Some(9),
            // A bad flag file shows the flag wins: its error names --ca.
            ca: Some(dir.join("missing.pem")),
            ..ConnArgs::default()
        };
        let error = plan(Request::new(Some(&file), &select, &flags)).expect_err("bad --ca");
        assert!(error.to_string().starts_with("--ca: "), "{error}");
        let flags = ConnArgs { ca: None, ..flags };
        let plan = plan(Request::new(Some(&file), &select, &flags)).expect("plan");
        assert_eq!(plan.timeout, Duration::from_millis(300));
        assert_eq!(plan.concurrency, 9);
    }
}
