//! A fleet whose certificates dicectl rotates through the agents' admin API.
//!
//! [`AdminFleet::start`] makes a CA directory with `dicectl certs init`, an
//! operator client certificate (`CN=ops`, the identity every agent's
//! `[admin] allow` lists), and per node its own folder with its own server
//! certificate, key and client CA bundle (the admin API rewrites them, so no
//! two nodes share a file). Each node is a real agent with one mTLS listener
//! named `mtls`; a fleet file lists them for `dicectl --fleet`. A node can be
//! killed and restarted on the same port, so the same fleet file reaches it.
//!
//! [`admin_client`] calls the admin API directly, for the refusals dicectl
//! would never send.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dice_proto::cert::CertSummary;
use dice_proto::info::admin_service_client::AdminServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::agent::{Agent, Signal};
use crate::certs_cli::{CaDir, IssueSpec, Leaf};
use crate::client::{Client, TlsClient};
use crate::config::{AgentConfig, ListenerConfig, TlsFiles};
use crate::fleet::{FleetFile, run_ctl_in};
use crate::process::RunOutput;

/// The operator's client identity, listed in every node's `[admin] allow`.
pub const OPERATOR: &str = "ops";

/// How long a killed agent may take to be reaped.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// One node of an [`AdminFleet`].
pub struct AdminNode {
    /// The node's name: `node-1`, `node-2`, ...
    pub name: String,
    /// The node's own folder: `server.pem`, `server-key.pem`, `client-ca.pem`.
    pub dir: PathBuf,
    /// The running agent; `None` while killed.
    pub agent: Option<Agent>,
    /// The port its mTLS listener binds, kept across restarts.
    pub port: u16,
}

impl AdminNode {
    /// The certificate file the agent serves.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The key file of that certificate.
    pub fn key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    /// The CA bundle client certificates must chain to.
    pub fn client_ca(&self) -> PathBuf {
        self.dir.join("client-ca.pem")
    }

    /// The mTLS listener's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The running agent.
    ///
    /// # Panics
    ///
    /// If the node was killed and not restarted.
    pub fn agent(&self) -> &Agent {
        self.agent
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    /// What the certificate file says now.
    pub fn cert_file(&self) -> Leaf {
        Leaf::at(&self.cert(), &self.key())
    }

    /// The agent's config: its files, one mTLS listener on [`AdminNode::port`],
    /// admin RPCs for [`OPERATOR`], metrics on an ephemeral loopback port.
    pub fn config(&self) -> AgentConfig {
        AgentConfig::new(&self.name)
            .tls(TlsFiles {
                cert: self.cert(),
                key: self.key(),
                client_ca: self.client_ca(),
            })
            .listener(ListenerConfig::mtls("mtls").address(&self.addr().to_string()))
            .admin([OPERATOR])
            .log_level("info")
            .extra("[metrics]\naddress = \"127.0.0.1:0\"\n")
    }
}

/// A fleet of agents with the admin API on, a CA directory and an operator certificate.
pub struct AdminFleet {
    dir: TempDir,
    /// The CA directory every node's certificate came from.
    pub ca: CaDir,
    /// The operator's client certificate (`CN=ops`), issued by [`AdminFleet::ca`].
    pub operator: Leaf,
    /// The nodes, in name order.
    pub nodes: Vec<AdminNode>,
}

impl AdminFleet {
    /// `count` agents, each serving its own certificate from a fresh CA
    /// directory and trusting that CA for clients.
    pub fn start(count: usize) -> AdminFleet {
        let dir = crate::tempdir();
        let ca = CaDir::init(&dir.path().join("ca"));
        let operator = IssueSpec::client(OPERATOR).issue(&ca, &dir.path().join("operator"));
        let mut fleet = AdminFleet {
            dir,
            ca,
            operator,
            nodes: Vec::new(),
        };
        for index in 1..=count {
            let node = fleet.prepare_node(&format!("node-{index}"));
            fleet.nodes.push(node);
        }
        // Start the agents only once every certificate exists, then write the fleet file.
        for node in &mut fleet.nodes {
            let agent = Agent::spawn(&node.config());
            node.port = agent.addr("mtls").port();
            node.agent = Some(agent);
        }
        fleet.write_fleet_file();
        fleet
    }

    /// Issues `name`'s certificate into its own folder, with the CA as its client CA.
    fn prepare_node(&self, name: &str) -> AdminNode {
        let node_dir = self.dir.path().join(name);
        let issued = IssueSpec::server(name).issue(&self.ca, &node_dir);
        std::fs::rename(&issued.cert, node_dir.join("server.pem")).expect("name the certificate");
        std::fs::rename(&issued.key, node_dir.join("server-key.pem")).expect("name the key");
        std::fs::copy(self.ca.cert(), node_dir.join("client-ca.pem"))
            .expect("copy the client CA bundle");
        AdminNode {
            name: name.to_owned(),
            dir: node_dir,
            agent: None,
            // Port 0 until the agent has bound one; then kept.
            port: 0,
        }
    }

    /// The test's folder (CA directory, operator, node folders, fleet file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The fleet file: every node, and `[client]` presenting the operator
    /// certificate and trusting the CA directory's CA.
    pub fn fleet_file(&self) -> PathBuf {
        self.dir.path().join("fleet.toml")
    }

    fn write_fleet_file(&self) {
        let mut fleet = FleetFile {
            client: Vec::new(),
            nodes: Vec::new(),
        };
        for node in &self.nodes {
            fleet = fleet.node(&node.name, node.addr());
        }
        let path = |path: &Path| crate::config::quote(path.to_str().expect("UTF-8 paths"));
        fleet
            .client("ca", &path(&self.ca.cert()))
            .client("cert", &path(&self.operator.cert))
            .client("key", &path(&self.operator.key))
            .client("timeout", "\"10s\"")
            .write(&self.fleet_file());
    }

    /// Runs `dicectl --fleet FLEET ARGS...` in the test's folder.
    pub fn ctl<I, S>(&self, args: I) -> RunOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<OsString> = vec!["--fleet".into(), self.fleet_file().into()];
        all.extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        run_ctl_in(self.dir.path(), all).0
    }

    /// [`AdminFleet::ctl`] on a blocking thread, so the test's background
    /// clients keep rolling while dicectl runs.
    pub async fn ctl_async<I, S>(&self, args: I) -> RunOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let dir = self.dir.path().to_owned();
        let mut all: Vec<OsString> = vec!["--fleet".into(), self.fleet_file().into()];
        all.extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        tokio::task::spawn_blocking(move || run_ctl_in(&dir, all).0)
            .await
            .expect("the dicectl runner thread")
    }

    /// A client presenting the operator certificate and trusting `ca`.
    pub fn operator_tls(&self, ca: &Path) -> TlsClient {
        self.operator.client(ca).server_name("localhost")
    }

    /// Kills node `index` (SIGKILL) and reaps it.
    pub fn kill(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let mut agent = node
            .agent
            .take()
            .unwrap_or_else(|| panic!("{} is not running", node.name));
        agent.signal(Signal::KILL);
        assert!(
            agent.wait_exit(EXIT_TIMEOUT).is_some(),
            "{} did not die on SIGKILL",
            node.name
        );
    }

    /// Starts node `index` again, on the port it had.
    pub fn restart(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        assert!(node.agent.is_none(), "{} is still running", node.name);
        node.agent = Some(Agent::spawn(&node.config()));
    }

    /// The certificate node `index` serves now, from a fresh handshake
    /// trusting `ca`.
    pub async fn served(&self, index: usize, ca: &Path) -> CertSummary {
        let node = &self.nodes[index];
        match crate::handshake::handshake(node.addr(), &self.operator_tls(ca)).await {
            Ok(handshake) => handshake.server_cert,
            Err(error) => panic!("handshake with {}: {error:?}", node.name),
        }
    }

    /// Everything every running agent has logged, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|node| {
                let agent = node.agent.as_ref()?;
                Some(format!("--- {} ---\n{}", node.name, agent.logs()))
            })
            .collect()
    }
}

/// An admin API client on a fresh mTLS connection to `addr`.
pub async fn admin_client(addr: SocketAddr, tls: &TlsClient) -> AdminServiceClient<Channel> {
    let client = Client::mtls(addr, tls)
        .await
        .unwrap_or_else(|error| panic!("connect to {addr}: {error}"));
    AdminServiceClient::new(client.channel())
}

/// Signs the PEM CSR `csr_pem` as the CA in `ca`: a server certificate
/// (serverAuth) valid from 5 minutes ago for a year, with the CSR's subject,
/// SANs and key, unless `adjust` changes the parameters. Returns the PEM.
pub fn sign_csr(
    csr_pem: &str,
    ca: &CaDir,
    adjust: impl FnOnce(&mut rcgen::CertificateParams),
) -> String {
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .unwrap_or_else(|error| panic!("the agent's CSR does not parse or verify: {error}"));
    let now = time::OffsetDateTime::now_utc();
    let params = &mut csr.params;
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let mut serial: [u8; 16] = rand::random();
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    adjust(params);
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
    };
    let ca_key = rcgen::KeyPair::from_pem(&read(ca.key())).expect("the CA directory's key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read(ca.cert()), ca_key)
        .expect("the CA directory's certificate");
    csr.signed_by(&issuer).expect("sign the CSR").pem()
}
