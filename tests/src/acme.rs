//! A real ACME server for one test: Debian's `pebble`, bound to 127.0.0.1 on
//! ports of its own, serving HTTPS with a certificate from the test's [`Pki`]
//! (so the agent trusts it through `[acme] ca`), validating challenges for
//! real on the ports the agent answers them on, with short certificate lives
//! so renewals happen inside a test.
//!
//! Pebble makes a new root CA every time it starts: [`Pebble::roots`] fetches
//! it from the management interface, for clients that check the agent's
//! certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pki::Pki;
use crate::service::{Service, Started, free_port};
use crate::tls::TlsClient;

/// How many times [`Pebble::start`] picks fresh ports for itself.
const PORT_TRIES: usize = 3;

/// What provides pebble.
pub const INSTALL_PEBBLE: &str = "apt-get install pebble";

/// pebble: `$DICE_PEBBLE`, else `pebble` on `PATH`, else `/usr/bin/pebble`.
pub fn pebble_bin() -> PathBuf {
    let path = std::env::var_os("DICE_PEBBLE")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("pebble"))
                    .find(|candidate| candidate.is_file())
            })
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/pebble"));
    assert!(
        path.is_file(),
        "pebble (the ACME test server) is not installed: run `{INSTALL_PEBBLE}`, or set DICE_PEBBLE to its path"
    );
    path
}

/// How a [`Pebble`] is set up.
#[derive(Debug, Clone)]
pub struct PebbleOptions {
    /// `certificateValidityPeriod`, seconds.
    pub validity_secs: u64,
    /// The port pebble validates http-01 on (the agent's `http_address` port).
    pub http_port: u16,
    /// The port pebble validates tls-alpn-01 on (the agent's `tls_alpn_listener` port).
    pub tls_port: u16,
    /// External account binding required, with this key id and base64url MAC key.
    pub eab: Option<(String, String)>,
}

impl PebbleOptions {
    /// Certificates valid for `validity_secs`, challenge ports picked now.
    pub fn new(validity_secs: u64) -> Self {
        Self {
            validity_secs,
            http_port: free_port(),
            tls_port: free_port(),
            eab: None,
        }
    }
}

/// A running pebble, stopped on drop.
pub struct Pebble {
    service: Option<Service>,
    command: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    /// Its ACME listener.
    pub listen: SocketAddr,
    /// Its management listener (roots, intermediates).
    pub management: SocketAddr,
    /// The options it runs with.
    pub options: PebbleOptions,
    /// The CA file that signs its HTTPS certificate: the agent's `[acme] ca`.
    pub https_ca: PathBuf,
    starts: u32,
}

impl Pebble {
    /// Starts pebble with `options`, its HTTPS certificate from `pki`, its files in `dir`.
    /// Its own two ports are picked free; if another process takes one first,
    /// it starts again on fresh ones.
    pub fn start(dir: &Path, pki: &Pki, options: PebbleOptions) -> Pebble {
        let mut pebble = Pebble {
            service: None,
            command: pebble_bin(),
            config: dir.join("pebble.json"),
            dir: dir.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            management: SocketAddr::from(([127, 0, 0, 1], 0)),
            options,
            https_ca: pki.ca_cert().to_owned(),
            starts: 0,
        };
        for _ in 0..PORT_TRIES {
            pebble.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
            pebble.management = SocketAddr::from(([127, 0, 0, 1], free_port()));
            pebble.write_config(pki);
            match pebble.spawn() {
                (service, true) => {
                    pebble.service = Some(service);
                    return pebble;
                }
                (service, false) if service.dump().contains("address already in use") => continue,
                (service, false) => panic!("pebble did not start\n{}", service.dump()),
            }
        }
        panic!("pebble found no free ports in {PORT_TRIES} tries");
    }

    fn write_config(&self, pki: &Pki) {
        let options = &self.options;
        let mut eab = String::new();
        if let Some((kid, key)) = &options.eab {
            eab = format!(
                r#","externalAccountBindingRequired": true, "externalAccountMACKeys": {{"{kid}": "{key}"}}"#
            );
        }
        std::fs::write(
            &self.config,
            format!(
                r#"{{"pebble": {{
  "listenAddress": "{listen}",
  "managementListenAddress": "{management}",
  "certificate": "{cert}",
  "privateKey": "{key}",
  "httpPort": {http},
  "tlsPort": {tls},
  "ocspResponderURL": "",
  "certificateValidityPeriod": {validity}{eab}
}}}}"#,
                listen = self.listen,
                management = self.management,
                cert = pki.server().cert.display(),
                key = pki.server().key.display(),
                http = options.http_port,
                tls = options.tls_port,
                validity = options.validity_secs,
            ),
        )
        .expect("write pebble.json");
    }

    /// Restarts the process with the same config and ports (after [`Pebble::stop`]).
    pub fn run(&mut self) {
        match self.spawn() {
            (service, true) => self.service = Some(service),
            (service, false) => panic!("pebble did not start again\n{}", service.dump()),
        }
    }

    /// Starts the process and waits until both its listeners accept
    /// connections (`true`) or it exits (`false`).
    fn spawn(&mut self) -> (Service, bool) {
        self.starts += 1;
        let mut command = Command::new(&self.command);
        command
            .arg("-config")
            .arg(&self.config)
            // Real validation, no random sleeps, no random bad nonces, no
            // authorization reuse (every renewal is validated again).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_VA_ALWAYS_VALID", "0")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .current_dir(&self.dir);
        let mut service = Service::spawn(&format!("pebble-{}", self.starts), command, &self.dir);
        // Both listeners: pebble opens its management one (roots) separately.
        let listening = [self.listen, self.management]
            .into_iter()
            .all(|address| matches!(service.wait_listening(address), Started::Listening));
        (service, listening)
    }

    /// Stops the process (the ports go quiet until [`Pebble::run`]).
    pub fn stop(&mut self) {
        if let Some(mut service) = self.service.take() {
            service.stop();
        }
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// Pebble's current root (PEM), from its management interface.
    pub async fn root(&self) -> String {
        self.management_get("/roots/0").await
    }

    /// Writes pebble's current root to `path`, adding it to what is there, and returns
    /// a client that trusts the result and presents `pki`'s client certificate,
    /// checking the name `127.0.0.1`.
    pub async fn trusting_client(&self, path: &Path, pki: &Pki) -> TlsClient {
        let mut bundle = std::fs::read_to_string(path).unwrap_or_default();
        bundle.push_str(&self.root().await);
        std::fs::write(path, bundle).expect("write the pebble roots");
        TlsClient::new(path)
            .identity(pki.client())
            .server_name("127.0.0.1")
    }

    async fn management_get(&self, path: &str) -> String {
        let tls = TlsClient::new(&self.https_ca).server_name("127.0.0.1");
        let mut config = tls.rustls_config().expect("client config");
        config.alpn_protocols.clear();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.management)
            .await
            .expect("connect to pebble's management interface");
        let name = ServerName::try_from("127.0.0.1").expect("an IP is a server name");
        let mut stream = connector
            .connect(name, tcp)
            .await
            .expect("TLS to pebble's management interface");
        stream
            .write_all(
                format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.management).as_bytes(),
            )
            .await
            .expect("send the request");
        let mut response = Vec::new();
        // Pebble may end the TLS session without close_notify: keep what was read.
        let _ = stream.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("bad response to GET {path}: {text}"));
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "GET {path}: {head}"
        );
        body.to_owned()
    }

    /// Everything pebble logged, for assertions and failure messages.
    pub fn logs(&self) -> String {
        self.service
            .as_ref()
            .map(Service::stdout)
            .unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where an ACME-managed node keeps its files, and the config that says so.
#[derive(Debug, Clone)]
pub struct AcmeNode {
    /// `tls.cert` (missing until the agent obtains it).
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
    /// `acme.account_key`.
    pub account_key: PathBuf,
    /// The `[acme]` table's lines, more may be added.
    pub acme: Vec<String>,
    /// The mTLS listener.
    pub listener: crate::ListenerConfig,
    /// `tls.client_ca`: `pki`'s CA.
    pub client_ca: PathBuf,
    /// More `[tls]` lines (`expiry_warning = "45s"`).
    pub tls: Vec<String>,
}

impl AcmeNode {
    /// A node in `dir` getting its certificate for `127.0.0.1` from `pebble`
    /// over http-01, renewing with 2/3 of the lifetime left, and trusting
    /// `pki`'s clients. No certificate files exist yet.
    pub fn http01(dir: &Path, pki: &Pki, pebble: &Pebble) -> AcmeNode {
        let node = Self::new(dir, pki, pebble);
        node.key_value("challenge", "\"http-01\"").key_value(
            "http_address",
            &format!("\"127.0.0.1:{}\"", pebble.options.http_port),
        )
    }

    /// As [`AcmeNode::http01`], over tls-alpn-01 on the mTLS listener, bound
    /// to the port pebble validates on.
    pub fn tls_alpn01(dir: &Path, pki: &Pki, pebble: &Pebble) -> AcmeNode {
        let mut node = Self::new(dir, pki, pebble);
        node.listener = crate::ListenerConfig::mtls("mtls")
            .address(&format!("127.0.0.1:{}", pebble.options.tls_port));
        node.key_value("challenge", "\"tls-alpn-01\"")
            .key_value("tls_alpn_listener", "\"mtls\"")
    }

    fn new(dir: &Path, pki: &Pki, pebble: &Pebble) -> AcmeNode {
        let files = dir.join("acme");
        std::fs::create_dir_all(&files).expect("create the node's folder");
        let node = AcmeNode {
            cert: files.join("node.pem"),
            key: files.join("node-key.pem"),
            account_key: files.join("account.pem"),
            acme: Vec::new(),
            listener: crate::ListenerConfig::mtls("mtls"),
            client_ca: pki.ca_cert().to_owned(),
            tls: Vec::new(),
        };
        let account_key = format!("{:?}", node.account_key.display().to_string());
        node.key_value("directory", &format!("{:?}", pebble.directory()))
            .key_value(
                "ca",
                &format!("{:?}", pebble.https_ca.display().to_string()),
            )
            .key_value("identifiers", "[\"127.0.0.1\"]")
            .key_value("account_key", &account_key)
            .key_value("renew_before", "\"2/3\"")
    }

    /// Sets (or replaces) `KEY = VALUE` in `[acme]`, `value` as raw TOML.
    pub fn key_value(mut self, key: &str, value: &str) -> AcmeNode {
        self.acme
            .retain(|line| !line.starts_with(&format!("{key} =")));
        self.acme.push(format!("{key} = {value}"));
        self
    }

    /// Adds `KEY = VALUE` to `[tls]`, `value` as raw TOML.
    pub fn tls_key_value(mut self, key: &str, value: &str) -> AcmeNode {
        self.tls.push(format!("{key} = {value}"));
        self
    }

    /// The agent config: node `acme-node`, `[tls]`, the listener, `[metrics]`, `[acme]`.
    pub fn config(&self) -> crate::AgentConfig {
        let path = |path: &Path| format!("{:?}", path.display().to_string());
        crate::AgentConfig::new("acme-node")
            .extra(&format!(
                "[tls]\ncert = {}\nkey = {}\nclient_ca = {}\n{}\n",
                path(&self.cert),
                path(&self.key),
                path(&self.client_ca),
                self.tls.join("\n")
            ))
            .listener(self.listener.clone())
            .extra("[metrics]\naddress = \"127.0.0.1:0\"\n")
            .extra(&format!("[acme]\n{}\n", self.acme.join("\n")))
    }
}
