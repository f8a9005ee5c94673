//! Serves the Django example (`examples/django`) with Django's own server,
//! `manage.py runserver --noreload`, from the test venv, and fetches its pages.
//!
//! The site reads its node and certificates from `DICE_NODE`, `DICE_CA`,
//! `DICE_CERT` and `DICE_KEY`. Readiness is a TCP connect to its port, polled
//! under a deadline; drop stops it by PID.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::fixtures::workspace_root;
use crate::pki::Identity;
use crate::service::{Service, Started, free_port};
use crate::tools;

/// How long one page may take to load (a roll has a 5 s deadline).
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a start is retried when another process took the free port first.
const PORT_ATTEMPTS: usize = 3;

/// A running Django example site, stopped on drop.
pub struct DjangoSite {
    service: Service,
    addr: SocketAddr,
    _dir: TempDir,
}

/// A page as the server sent it.
#[derive(Debug, Clone)]
pub struct Page {
    /// The HTTP status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl DjangoSite {
    /// Serves the example on a free port, rolling on `node` with `identity`,
    /// trusting `ca`.
    pub fn spawn(node: impl std::fmt::Display, ca: &Path, identity: &Identity) -> DjangoSite {
        let python = tools::python();
        let site = workspace_root().join("examples/django");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("dice-django-")
                .tempdir()
                .expect("create the Django log dir");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut command = Command::new(&python);
            command
                .current_dir(&site)
                .args(["manage.py", "runserver", "--noreload"])
                .arg(addr.to_string())
                .env("PYTHONUNBUFFERED", "1")
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .env("DICE_NODE", node.to_string())
                .env("DICE_CA", ca)
                .env("DICE_CERT", &identity.cert)
                .env("DICE_KEY", &identity.key)
                .env("DICE_TIMEOUT", "5");
            let mut service = Service::spawn("django", command, dir.path());
            match service.wait_listening(addr) {
                Started::Listening => {
                    return DjangoSite {
                        service,
                        addr,
                        _dir: dir,
                    };
                }
                Started::Exited(status) => {
                    last = format!(
                        "Django exited ({status}) before listening\n{}",
                        service.dump()
                    );
                    if !service.stderr().contains("port is already in use") {
                        break;
                    }
                }
            }
        }
        panic!("{last}");
    }

    /// The site's root URL, `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `GET path` over HTTP/1.1 (`Connection: close`), under [`PAGE_TIMEOUT`].
    pub fn get(&self, path: &str) -> Page {
        get(self.addr, path).unwrap_or_else(|error| {
            panic!(
                "GET http://{}{path}: {error}\n{}",
                self.addr,
                self.service.dump()
            )
        })
    }

    /// Django's output (its request log and the site's warnings).
    pub fn logs(&self) -> String {
        format!("{}{}", self.service.stdout(), self.service.stderr())
    }

    /// Django's output, for failure messages.
    pub fn dump(&self) -> String {
        self.service.dump()
    }
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<Page> {
    let mut stream = TcpStream::connect_timeout(&addr, PAGE_TIMEOUT)?;
    stream.set_read_timeout(Some(PAGE_TIMEOUT))?;
    stream.set_write_timeout(Some(PAGE_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what} in response: {text:?}"),
        )
    };
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    Ok(Page {
        status,
        body: body.to_owned(),
    })
}
