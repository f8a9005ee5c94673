//! Runs the real nginx with the repository's `config/nginx.conf`.
//!
//! The test copy of the example differs only where a test must differ: the
//! listen port (a free one), the two upstream servers (the test's agents),
//! and the certificate folder (the test's [`Pki`], whose files carry the
//! names of `certs/dev/`). [`render_example`] refuses an example that no
//! longer has exactly those lines, so the tests can't drift onto a look-alike.
//!
//! nginx runs in the foreground (`-g 'daemon off;'`) with a private prefix
//! (`-p`) that receives its pid file, logs and temp folders, as the example's
//! header describes. Readiness is a TCP connect to the listen port, polled
//! under a deadline; drop stops the master by PID (see [`Service`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::fixtures::workspace_root;
use crate::pki::Pki;
use crate::service::{Service, Started, free_port};
use crate::tools;

/// The example's listen address, replaced by the test's.
pub const EXAMPLE_LISTEN: &str = "127.0.0.1:9443";

/// The example's upstream servers (the quickstart agents' h2c listeners).
pub const EXAMPLE_UPSTREAMS: [&str; 2] = ["127.0.0.1:50051", "127.0.0.1:50052"];

/// The example's certificate folder, relative to `config/`.
pub const EXAMPLE_CERT_DIR: &str = "../certs/dev/";

/// How often a start is retried when another process took the free port first.
const PORT_ATTEMPTS: usize = 3;

/// `config/nginx.conf`.
pub fn example_path() -> PathBuf {
    workspace_root().join("config/nginx.conf")
}

/// Rewrites the example for a test: listen on `listen`, proxy to `upstreams`,
/// and take certificates from `cert_dir`. Only directives change (comments
/// stay as written). An error says which expected line is gone.
pub fn render_example(
    example: &str,
    listen: SocketAddr,
    upstreams: [SocketAddr; 2],
    cert_dir: &Path,
) -> Result<String, String> {
    let cert_dir = cert_dir
        .to_str()
        .filter(|dir| !dir.contains(|c: char| c.is_whitespace() || ";{}#'\"".contains(c)))
        .ok_or_else(|| format!("{} is not usable in nginx.conf", cert_dir.display()))?;
    let cert_dir = format!("{}/", cert_dir.trim_end_matches('/'));
    let replacements = [
        (
            format!("listen {EXAMPLE_LISTEN} "),
            format!("listen {listen} "),
            1,
        ),
        (
            format!("server {};", EXAMPLE_UPSTREAMS[0]),
            format!("server {};", upstreams[0]),
            1,
        ),
        (
            format!("server {};", EXAMPLE_UPSTREAMS[1]),
            format!("server {};", upstreams[1]),
            1,
        ),
        (format!(" {EXAMPLE_CERT_DIR}"), format!(" {cert_dir}"), 3),
    ];
    let mut counts = [0; 4];
    let mut out = String::with_capacity(example.len() + 256);
    for line in example.lines() {
        // Directives only: a `#` starts a comment (the example has none in strings).
        let (code, comment) = match line.find('#') {
            Some(at) => line.split_at(at),
            None => (line, ""),
        };
        let mut code = code.to_owned();
        for (index, (from, to, _)) in replacements.iter().enumerate() {
            counts[index] += code.matches(from.as_str()).count();
            code = code.replace(from.as_str(), to);
        }
        out.push_str(&code);
        out.push_str(comment);
        out.push('\n');
    }
    for ((from, _, expected), found) in replacements.iter().zip(counts) {
        if found != *expected {
            return Err(format!(
                "config/nginx.conf: expected {expected} directive(s) with {:?}, found {found} \
                 (the nginx tests run this file; update tests/src/nginx.rs to match it)",
                from.trim()
            ));
        }
    }
    Ok(out)
}

/// A running nginx, stopped on drop.
pub struct Nginx {
    service: Service,
    addr: SocketAddr,
    prefix: TempDir,
}

impl Nginx {
    /// Starts nginx with `config/nginx.conf`, rewritten to listen on a free
    /// port, verify clients against `pki`'s CA, serve `pki`'s server
    /// certificate, and balance over `upstreams` (agents' h2c listeners).
    /// Panics, with nginx's output, if it exits or does not listen in time.
    pub fn spawn(pki: &Pki, upstreams: [SocketAddr; 2]) -> Nginx {
        let nginx = tools::nginx();
        let example = std::fs::read_to_string(example_path())
            .unwrap_or_else(|error| panic!("read {}: {error}", example_path().display()));
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let prefix = prefix_dir();
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let config = render_example(&example, addr, upstreams, pki.dir())
                .unwrap_or_else(|error| panic!("{error}"));
            let config_path = prefix.path().join("nginx.conf");
            std::fs::write(&config_path, config).expect("write nginx.conf");

            let mut command = Command::new(&nginx);
            command
                .arg("-p")
                .arg(format!("{}/", prefix.path().display()))
                .arg("-c")
                .arg(&config_path)
                .args(["-e", "stderr", "-g", "daemon off;"]);
            let mut service = Service::spawn("nginx", command, prefix.path());
            service.show_log(config_path);
            service.show_log(prefix.path().join("error.log"));
            match service.wait_listening(addr) {
                Started::Listening => {
                    return Nginx {
                        service,
                        addr,
                        prefix,
                    };
                }
                Started::Exited(status) => {
                    let errors = format!(
                        "{}{}",
                        service.stderr(),
                        std::fs::read_to_string(prefix.path().join("error.log"))
                            .unwrap_or_default()
                    );
                    last = format!(
                        "nginx exited ({status}) before listening\n{}",
                        service.dump()
                    );
                    if !errors.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("{last}");
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The master process's id.
    pub fn pid(&self) -> u32 {
        self.service.pid()
    }

    /// The access log so far: one line per request, with `upstream=` and `grpc_status=`.
    pub fn access_log(&self) -> String {
        self.read("access.log")
    }

    /// The access log once it has at least `count` lines containing
    /// `pattern`: nginx logs a request as it frees it, which can be just
    /// after the client has the response. Panics with [`Nginx::dump`] if it
    /// has not within [`crate::rpc_log::LOG_TIMEOUT`].
    pub fn await_access(&self, pattern: &str, count: usize) -> String {
        let matching = |log: &str| log.lines().filter(|line| line.contains(pattern)).count();
        if !crate::poll_until(crate::rpc_log::LOG_TIMEOUT, || {
            matching(&self.access_log()) >= count
        }) {
            panic!(
                "expected {count} access log lines with {pattern:?}\n{}",
                self.dump()
            );
        }
        self.access_log()
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        self.read("error.log")
    }

    /// The config nginx runs with, the logs, and its output, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "{}\n--- nginx access.log ---\n{}",
            self.service.dump(),
            self.access_log()
        )
    }

    fn read(&self, name: &str) -> String {
        String::from_utf8_lossy(&std::fs::read(self.prefix.path().join(name)).unwrap_or_default())
            .into_owned()
    }
}

/// A fresh prefix folder, readable by nginx's workers: run as root, nginx
/// drops them to `user www-data`, and they use the temp folders in here.
fn prefix_dir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("dice-nginx-")
        .tempdir()
        .expect("create the nginx prefix");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the nginx prefix");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn renders_the_repository_example() {
        let example = std::fs::read_to_string(example_path()).expect("read config/nginx.conf");
        let rendered = render_example(
            &example,
            addr(40001),
            [addr(40002), addr(40003)],
            Path::new("/tmp/pki"),
        )
        .expect("the example has every line the tests rewrite");
        assert!(rendered.contains("listen 127.0.0.1:40001 ssl http2;"));
        assert!(rendered.contains("server 127.0.0.1:40002;"));
        assert!(rendered.contains("server 127.0.0.1:40003;"));
        assert!(rendered.contains("ssl_certificate /tmp/pki/server.pem;"));
        assert!(rendered.contains("ssl_certificate_key /tmp/pki/server-key.pem;"));
        assert!(rendered.contains("ssl_client_certificate /tmp/pki/ca.pem;"));
        // Everything else is the example, line for line.
        assert_eq!(rendered.lines().count(), example.lines().count());
        let changed = (example.lines().zip(rendered.lines()))
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 6, "only the six rewritten directives differ");
    }

    #[test]
    fn refuses_an_example_without_the_expected_lines() {
        let error = render_example(
            "server { listen 127.0.0.1:8080 ssl http2; }",
            addr(1),
            [addr(2), addr(3)],
            Path::new("/tmp/pki"),
        )
        .expect_err("no line to rewrite");
        assert!(error.contains("listen 127.0.0.1:9443"), "{error}");
    }
}
