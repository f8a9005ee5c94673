//! Servers for `dicectl`'s `[[discovery]]` sources, on `127.0.0.1`:
//!
//! - [`Dnsmasq`]: the real dnsmasq serving SRV and A records on an ephemeral
//!   port, ready once it answers a DNS query.
//! - [`SdServer`]: a Prometheus HTTP SD endpoint (hyper), plain or HTTPS with
//!   a client certificate required, whose reply (status, content type, body)
//!   a test sets and changes.
//! - [`spawn_ctl`]: `dicectl` with its stdout piped, for reading JSON lines
//!   while it runs.

use std::convert::Infallible;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::bins;
use crate::pki::Pki;
use crate::poll::poll_until;
use crate::tools::find_program;

/// What provides dnsmasq.
pub const INSTALL_DNSMASQ: &str = "apt-get install dnsmasq-base";

/// How long dnsmasq may take to answer its first query.
const DNS_READY_TIMEOUT: Duration = Duration::from_secs(10);

// === impl Dnsmasq ===

/// One SRV record: `name` points at `target:port`.
#[derive(Debug, Clone)]
pub struct Srv {
    /// The SRV name, e.g. `_dice._tcp.fleet.example`.
    pub name: String,
    /// The target host name.
    pub target: String,
    /// The port.
    pub port: u16,
    /// The priority.
    pub priority: u16,
    /// The weight.
    pub weight: u16,
}

/// The real dnsmasq, answering for the records it was given on
/// `127.0.0.1:PORT` (UDP and TCP), nothing else. Killed and reaped on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Dnsmasq {
    /// Starts dnsmasq answering for `zone` (a name in it without records is
    /// NXDOMAIN, not refused) with `srv` records and `hosts` (name, IPv4) A
    /// records, and waits until it answers a query.
    pub fn spawn(zone: &str, srv: &[Srv], hosts: &[(&str, &str)]) -> Self {
        let program = find_program("dnsmasq", "DICE_DNSMASQ", &["/usr/sbin/dnsmasq"]);
        let probe_name = format!("ready.{zone}");
        // A port that was free a moment ago; if another process takes it first,
        // dnsmasq exits and the next try picks another.
        for _ in 0..5 {
            let port = free_udp_port();
            let mut command = Command::new(&program);
            command.args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--user=root",
                "--cache-size=0",
            ]);
            command.arg(format!("--port={port}"));
            command.arg(format!("--local=/{zone}/"));
            for record in srv {
                command.arg(format!(
                    "--srv-host={},{},{},{},{}",
                    record.name, record.target, record.port, record.priority, record.weight
                ));
            }
            for (name, ip) in hosts {
                command.arg(format!("--host-record={name},{ip}"));
            }
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!(
                        "cannot run {}: {error} (`{INSTALL_DNSMASQ}`)",
                        program.display()
                    )
                });
            let mut dnsmasq = Self {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            let answered = poll_until(DNS_READY_TIMEOUT, || {
                dnsmasq.exited() || answers(dnsmasq.addr, &probe_name)
            });
            if answered && !dnsmasq.exited() {
                return dnsmasq;
            }
        }
        panic!("dnsmasq did not start answering on 127.0.0.1 after 5 tries");
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    socket.local_addr().expect("local addr").port()
}

/// Whether `server` answers an SRV query for `name` (any answer will do).
fn answers(server: SocketAddr, name: &str) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let id: u16 = 0x5a17;
    // Header: id, flags (recursion desired), one question.
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        query.push(u8::try_from(label.len()).expect("a DNS label is short"));
        query.extend_from_slice(label.as_bytes());
    }
    // The root label, QTYPE SRV (33), QCLASS IN.
    query.extend_from_slice(&[0, 0, 33, 0, 1]);
    if socket.send_to(&query, server).is_err() {
        return false;
    }
    let mut reply = [0u8; 512];
    matches!(socket.recv_from(&mut reply), Ok((n, _)) if n >= 12 && reply[..2] == id.to_be_bytes() && reply[2] & 0x80 != 0)
}

// === impl SdServer ===

/// What the endpoint replies.
#[derive(Debug, Clone)]
pub struct SdReply {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: String,
    /// The body.
    pub body: String,
}

impl SdReply {
    /// A 200 `application/json` reply with `body`.
    pub fn json(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            content_type: "application/json".to_owned(),
            body: body.into(),
        }
    }
}

/// A Prometheus HTTP SD endpoint on `127.0.0.1:0`, serving [`SdReply`] at
/// every path. Stopped on drop.
#[derive(Debug)]
pub struct SdServer {
    /// Where it listens.
    pub addr: SocketAddr,
    reply: Arc<Mutex<SdReply>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SdServer {
    /// A plain HTTP endpoint.
    pub fn http(reply: SdReply) -> Self {
        Self::start(reply, None)
    }

    /// An HTTPS endpoint serving `pki`'s server certificate (`127.0.0.1`,
    /// `localhost`) and requiring a client certificate from its CA.
    pub fn https(reply: SdReply, pki: &Pki) -> Self {
        let roots = {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(
                dice_proto::pem::load_certs(pki.ca_cert()).expect("the test CA"),
            );
            Arc::new(roots)
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .expect("a client verifier");
        let chain = dice_proto::pem::load_certs(&pki.server().cert).expect("server.pem");
        let key = dice_proto::pem::load_key(&pki.server().key).expect("server-key.pem");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server certificate");
        Self::start(
            reply,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }

    fn start(reply: SdReply, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the SD server");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local addr");
        let reply = Arc::new(Mutex::new(reply));
        let (stop, stopped) = oneshot::channel();
        let shared = reply.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the SD server's runtime");
            runtime.block_on(serve(listener, tls, shared, stopped));
        });
        Self {
            addr,
            reply,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Replaces what it replies from now on.
    pub fn set(&self, reply: SdReply) {
        *self.reply.lock().expect("the reply lock") = reply;
    }

    /// `http://127.0.0.1:PORT/targets` (or `https://`).
    pub fn url(&self, https: bool) -> String {
        format!(
            "{}://{}/targets",
            if https { "https" } else { "http" },
            self.addr
        )
    }
}

impl Drop for SdServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    reply: Arc<Mutex<SdReply>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("a tokio listener");
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let reply = reply.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let reply = reply.lock().expect("the reply lock").clone();
                async move {
                    let response = hyper::Response::builder()
                        .status(reply.status)
                        .header("content-type", reply.content_type)
                        .body(Full::new(Bytes::from(reply.body)))
                        .expect("a valid response");
                    Ok::<_, Infallible>(response)
                }
            });
            match tls {
                None => {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
        });
    }
}

// === dicectl, streaming ===

/// Starts `dicectl ARGS...` in `dir` with stdout piped (stderr too), without
/// the caller's `DICECTL_FLEET`. The caller reads and reaps it.
pub fn spawn_ctl(dir: &Path, args: &[&str]) -> Child {
    Command::new(bins::ctl_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("DICECTL_FLEET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dicectl")
}

/// `path` as a TOML string.
pub fn toml_path(path: &Path) -> String {
    crate::config::quote(path.to_str().expect("test paths are UTF-8"))
}
