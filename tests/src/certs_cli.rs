//! `dicectl certs` from the test side: CA directories and leaves made by the
//! real binary ([`CaDir`], [`IssueSpec`]), the agent-side and client-side TLS
//! files for them, and [`Rolling`], a client that keeps rolling on fresh
//! connections while a test rotates the agent's certificate under it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dice_proto::cert::CertSummary;
use tokio::task::JoinHandle;

use crate::client::{Client, TlsClient, status_chain};
use crate::config::TlsFiles;
use crate::process::{Ctl, RunOutput};

/// Every `--key-type` value, in the order the help lists them.
pub const KEY_TYPES: [&str; 5] = ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa2048", "rsa4096"];

/// Runs `dicectl certs ARGS...` and returns what it did.
pub fn certs<I, S>(args: I) -> RunOutput
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut all: Vec<OsString> = vec!["certs".into()];
    all.extend(args.into_iter().map(Into::into));
    Ctl::run(all)
}

/// A CA directory made by `dicectl certs init` or `certs intermediate`.
#[derive(Debug, Clone)]
pub struct CaDir {
    /// The directory.
    pub dir: PathBuf,
}

impl CaDir {
    /// `dicectl certs init --out DIR` (a root CA, plus the dev server and client pair).
    pub fn init(dir: &Path) -> CaDir {
        certs(["init".into(), "--out".into(), dir.as_os_str().to_owned()]).assert_success();
        CaDir {
            dir: dir.to_owned(),
        }
    }

    /// `dicectl certs intermediate --ca-dir SELF --out OUT --key-type KEY_TYPE`.
    pub fn intermediate(&self, out: &Path, key_type: &str) -> CaDir {
        let output = certs([
            OsString::from("intermediate"),
            "--ca-dir".into(),
            self.dir.clone().into(),
            "--out".into(),
            out.into(),
            "--key-type".into(),
            key_type.into(),
        ]);
        output.assert_success();
        CaDir {
            dir: out.to_owned(),
        }
    }

    /// `ca.pem`: the CA certificate (an intermediate's own, for an intermediate).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `ca-key.pem`.
    pub fn key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    /// `chain.pem`: an intermediate, then each CA up to the root.
    pub fn chain(&self) -> PathBuf {
        self.dir.join("chain.pem")
    }
}

/// What to ask `dicectl certs issue` for.
#[derive(Debug, Clone)]
pub struct IssueSpec {
    role: &'static str,
    name: String,
    sans: Vec<String>,
    key_type: String,
    days: Option<u32>,
}

impl IssueSpec {
    /// `--server NAME --san localhost --san 127.0.0.1`.
    pub fn server(name: &str) -> Self {
        Self::new("--server", name, &["localhost", "127.0.0.1"])
    }

    /// `--client NAME` (SAN: NAME).
    pub fn client(name: &str) -> Self {
        Self::new("--client", name, &[])
    }

    fn new(role: &'static str, name: &str, sans: &[&str]) -> Self {
        Self {
            role,
            name: name.to_owned(),
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
            key_type: "ecdsa-p256".to_owned(),
            days: None,
        }
    }

    /// `--key-type TYPE`.
    pub fn key_type(mut self, key_type: &str) -> Self {
        self.key_type = key_type.to_owned();
        self
    }

    /// Replaces the SANs.
    pub fn sans(mut self, sans: &[&str]) -> Self {
        self.sans = sans.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// `--days N`.
    pub fn days(mut self, days: u32) -> Self {
        self.days = Some(days);
        self
    }

    /// The command line, without the `dicectl certs` prefix.
    pub fn args(&self, ca: &CaDir, out: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "issue".into(),
            "--ca-dir".into(),
            ca.dir.clone().into(),
            self.role.into(),
            self.name.clone().into(),
            "--key-type".into(),
            self.key_type.clone().into(),
            "--out".into(),
            out.into(),
        ];
        for san in &self.sans {
            args.push("--san".into());
            args.push(san.into());
        }
        if let Some(days) = self.days {
            args.push("--days".into());
            args.push(days.to_string().into());
        }
        args
    }

    /// Runs `dicectl certs issue` from `ca` into `out`; panics unless it succeeds.
    pub fn issue(&self, ca: &CaDir, out: &Path) -> Leaf {
        certs(self.args(ca, out)).assert_success();
        Leaf::at(
            &out.join(format!("{}.pem", self.name)),
            &out.join(format!("{}-key.pem", self.name)),
        )
    }
}

/// A certificate file and its key, as dicectl (or another tool) wrote them.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate chain file, leaf first.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
    /// What the leaf says now.
    pub summary: CertSummary,
    /// How many certificates the file holds.
    pub chain_len: usize,
}

impl Leaf {
    /// Reads the certificate at `cert` (whose key is at `key`).
    pub fn at(cert: &Path, key: &Path) -> Leaf {
        let chain = dice_proto::pem::load_certs(cert).unwrap_or_else(|e| panic!("{e}"));
        let summary = CertSummary::parse(&chain[0]).expect("a valid certificate");
        Leaf {
            cert: cert.to_owned(),
            key: key.to_owned(),
            summary,
            chain_len: chain.len(),
        }
    }

    /// The leaf's serial, lowercase hex.
    pub fn serial(&self) -> &str {
        &self.summary.serial
    }

    /// The agent's `[tls]` files: this certificate and key, clients verified against `client_ca`.
    pub fn tls_files(&self, client_ca: &Path) -> TlsFiles {
        TlsFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: client_ca.to_owned(),
        }
    }

    /// A client presenting this certificate and trusting `ca`.
    pub fn client(&self, ca: &Path) -> TlsClient {
        TlsClient::new(ca).cert_key(&self.cert, &self.key)
    }

    /// `dicectl certs renew --ca-dir CA --cert CERT --key KEY [ARGS]`; panics
    /// unless it succeeds, and returns the renewed leaf.
    pub fn renew(&self, ca: &CaDir, args: &[&str]) -> (Leaf, RunOutput) {
        let mut all: Vec<OsString> = vec![
            "renew".into(),
            "--ca-dir".into(),
            ca.dir.clone().into(),
            "--cert".into(),
            self.cert.clone().into(),
            "--key".into(),
            self.key.clone().into(),
        ];
        all.extend(args.iter().map(OsString::from));
        let output = certs(all);
        output.assert_success();
        (Leaf::at(&self.cert, &self.key), output)
    }

    /// Copies the certificate and key into `dir` (e.g. so a client keeps its
    /// own copy while the originals are renewed).
    pub fn copy_to(&self, dir: &Path) -> Leaf {
        std::fs::create_dir_all(dir).expect("create the copy's folder");
        let cert = dir.join(self.cert.file_name().expect("a file name"));
        let key = dir.join(self.key.file_name().expect("a file name"));
        std::fs::copy(&self.cert, &cert).expect("copy the certificate");
        std::fs::copy(&self.key, &key).expect("copy the key");
        Leaf::at(&cert, &key)
    }
}

/// `dicectl certs inspect SERVER CLIENT --key SERVER_KEY --key CLIENT_KEY --ca CA`,
/// then `extra` (e.g. `--output json`).
pub fn inspect_pair(server: &Leaf, client: &Leaf, ca: &Path, extra: &[&str]) -> RunOutput {
    let mut args = os(&[
        &"inspect",
        &server.cert,
        &client.cert,
        &"--key",
        &server.key,
        &"--key",
        &client.key,
        &"--ca",
        &ca,
    ]);
    args.extend(extra.iter().map(OsString::from));
    certs(args)
}

/// `dicectl roll --node ADDR --ca CA --cert CERT --key KEY`, expecting a value from 1 to 6.
pub fn ctl_roll(addr: SocketAddr, ca: &Path, client: &Leaf) -> i32 {
    Ctl::roll(addr, ca, &client.cert, &client.key).assert_rolled()
}

/// How long one background roll may take.
const ROLL_DEADLINE: Duration = Duration::from_secs(5);
/// The pause between two background rolls.
const ROLL_PAUSE: Duration = Duration::from_millis(5);

/// What a [`Rolling`] client saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Rolls on a fresh connection (a new TLS handshake) that returned a value.
    pub fresh_ok: u64,
    /// Rolls on the one long-lived connection that returned a value.
    pub kept_ok: u64,
    /// Rolls that failed, with the first few errors.
    pub failed: Vec<String>,
}

/// A client that rolls in the background until [`Rolling::finish`], each
/// time on a fresh connection and then on one connection kept open throughout.
pub struct Rolling {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Tally>,
}

impl Rolling {
    /// Connects (panicking if that fails) and starts rolling.
    pub async fn start(addr: SocketAddr, tls: TlsClient) -> Rolling {
        let kept = Client::mtls(addr, &tls)
            .await
            .unwrap_or_else(|error| panic!("the background client cannot connect: {error}"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut tally = Tally::default();
            while !flag.load(Ordering::Relaxed) {
                let fresh = async {
                    let client = Client::mtls(addr, &tls).await?;
                    client.roll().await.map_err(|status| status_chain(&status))
                };
                match tokio::time::timeout(ROLL_DEADLINE, fresh).await {
                    Ok(Ok(_)) => tally.fresh_ok += 1,
                    Ok(Err(error)) => tally.failed.push(format!("fresh connection: {error}")),
                    Err(_) => tally.failed.push("fresh connection: no answer".to_owned()),
                }
                match tokio::time::timeout(ROLL_DEADLINE, kept.roll()).await {
                    Ok(Ok(_)) => tally.kept_ok += 1,
                    Ok(Err(status)) => tally
                        .failed
                        .push(format!("kept connection: {}", status_chain(&status))),
                    Err(_) => tally.failed.push("kept connection: no answer".to_owned()),
                }
                tokio::time::sleep(ROLL_PAUSE).await;
            }
            tally
        });
        Rolling { stop, task }
    }

    /// Stops rolling and returns what the client saw.
    pub async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.await {
            Ok(tally) => tally,
            Err(error) => panic!("the background client's task failed: {error}"),
        }
    }
}

/// Turns a list of paths and strings into command-line arguments.
pub fn os(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<std::ffi::OsString> {
    args.iter().map(|arg| arg.as_ref().to_owned()).collect()
}

/// An agent named `node` serving `server` on an mTLS listener named `mtls`,
/// verifying clients against `client_ca`.
pub fn serve(node: &str, server: &Leaf, client_ca: &Path) -> crate::Agent {
    crate::Agent::spawn(
        &crate::AgentConfig::new(node)
            .tls(server.tls_files(client_ca))
            .listener(crate::ListenerConfig::mtls("mtls")),
    )
}
