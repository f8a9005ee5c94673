//! `dicectl certs init`: a dev PKI (a CA, a server and a client certificate).
//!
//! Everything is generated in memory first and only then written, each file
//! atomically, so a failed run never leaves a half-written key behind a valid name.

use std::fmt;
use std::path::PathBuf;

use dice_proto::cert::rfc3339;
use rcgen::{Issuer, KeyPair};
use time::OffsetDateTime;

use super::build::{self, Role, Validity};
use super::keys::KeyAlgorithm;
use super::write::{self, Output};
use super::{CertsError, Issued, San};

pub use super::ca::{CA_CERT, CA_KEY};

/// The server (dice-agent) certificate's file name.
pub const SERVER_CERT: &str = "server.pem";
/// The server private key's file name.
pub const SERVER_KEY: &str = "server-key.pem";
/// The client (dicectl) certificate's file name.
pub const CLIENT_CERT: &str = "client.pem";
/// The client private key's file name.
pub const CLIENT_KEY: &str = "client-key.pem";

/// Every file `init` writes, in the order it writes them.
pub const FILES: [&str; 6] = [
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    CLIENT_CERT,
    CLIENT_KEY,
];

/// Common name of the dev CA.
pub const CA_COMMON_NAME: &str = "dice fleet dev CA";
/// Common name of the server certificate.
pub const SERVER_COMMON_NAME: &str = "dice-agent";
/// Common name (and only DNS SAN) of the client certificate.
pub const CLIENT_COMMON_NAME: &str = "dicectl";

/// How long the CA is valid: 10 years.
const CA_DAYS: u32 = 3650;
/// How long the server and client certificates are valid: 1 year.
const LEAF_DAYS: u32 = 365;
/// The CA's path length constraint: it may sign one level of intermediate CAs
/// (`dicectl certs intermediate`), which sign leaf certificates only.
const CA_PATH_LEN: u8 = 1;
/// Server SANs used when `--server-san` is not given: local connections by name, IPv4 and IPv6.
pub const DEFAULT_SERVER_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The server SANs used when none are given.
pub fn default_server_sans() -> Vec<San> {
    DEFAULT_SERVER_SANS
        .iter()
        .map(|text| text.parse().expect("the default SANs are valid"))
        .collect()
}

/// What `dicectl certs init` should do.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Directory the six files go to; created if missing.
    pub out: PathBuf,
    /// SANs of the server certificate; empty means [`DEFAULT_SERVER_SANS`].
    pub server_sans: Vec<San>,
    /// Overwrite existing files.
    pub force: bool,
}

/// What `init` wrote.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
    /// The CA, server and client certificates.
    pub issued: Vec<Issued>,
}

impl fmt::Display for InitReport {
    /// One line per file written, then one per certificate with its subject and expiry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for path in &self.files {
            writeln!(f, "wrote {}", path.display())?;
        }
        for issued in &self.issued {
            let summary = &issued.summary;
            write!(
                f,
                "{:<6} subject \"{}\" not after {}",
                issued.role,
                summary.subject,
                rfc3339(summary.not_after)
            )?;
            if !summary.sans.is_empty() && issued.role == "server" {
                write!(f, " SANs {}", summary.sans.join(", "))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// Makes the dev PKI in `options.out`, valid from `now` (backdated 5 minutes).
///
/// Refuses with [`CertsError::Exists`] before generating anything if one of the
/// six files already exists and `options.force` is false.
pub fn init(options: &InitOptions, now: OffsetDateTime) -> Result<InitReport, CertsError> {
    let paths: Vec<PathBuf> = FILES.iter().map(|name| options.out.join(name)).collect();
    write::refuse_existing(paths.iter().map(PathBuf::as_path), options.force)?;

    let sans = if options.server_sans.is_empty() {
        default_server_sans()
    } else {
        options.server_sans.clone()
    };
    let (contents, issued) = generate(&sans, now)?;

    write::create_dir(&options.out)?;
    let outputs: Vec<Output> = paths
        .into_iter()
        .zip(contents)
        .enumerate()
        .map(|(index, (path, text))| {
            // Odd positions of FILES are the keys.
            if index % 2 == 1 {
                Output::key(path, text)
            } else {
                Output::cert(path, text)
            }
        })
        .collect();
    let files = write::write_all(&outputs)?;
    Ok(InitReport { files, issued })
}

/// Generates the three key pairs and certificates in memory: the PEM text of
/// each of [`FILES`], in order, and what each certificate says.
fn generate(
    server_sans: &[San],
    now: OffsetDateTime,
) -> Result<(Vec<String>, Vec<Issued>), CertsError> {
    let generate_error = |what| move |source| CertsError::Generate { what, source };
    let ca_key = new_key("CA")?;
    let ca_validity = Validity::new(now, CA_DAYS, None);
    let ca_params = build::ca_params(
        build::common_name(CA_COMMON_NAME),
        Some(CA_PATH_LEN),
        ca_validity,
        false,
    );
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(generate_error("CA"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_validity = Validity::new(now, LEAF_DAYS, None);

    let leaf = |role: Role, name: &str, sans: &[San]| {
        let what = role.as_str();
        let sans = sans
            .iter()
            .map(San::to_rcgen)
            .collect::<Result<Vec<_>, _>>()
            .map_err(generate_error(what))?;
        let key = new_key(what)?;
        let params = build::leaf_params(
            build::common_name(name),
            sans,
            build::role_usages(role),
            KeyAlgorithm::EcdsaP256,
            leaf_validity,
        );
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(generate_error(what))?;
        Ok::<_, CertsError>((cert, key))
    };
    let (server, server_key) = leaf(Role::Server, SERVER_COMMON_NAME, server_sans)?;
    let client_san = San::Dns(CLIENT_COMMON_NAME.to_owned());
    let (client, client_key) = leaf(Role::Client, CLIENT_COMMON_NAME, &[client_san])?;

    let issued = vec![
        Issued::parse("CA", ca_cert.der())?,
        Issued::parse("server", server.der())?,
        Issued::parse("client", client.der())?,
    ];
    let contents = vec![
        ca_cert.pem(),
        ca_key_pem,
        server.pem(),
        server_key.serialize_pem(),
        client.pem(),
        client_key.serialize_pem(),
    ];
    Ok((contents, issued))
}

fn new_key(what: &'static str) -> Result<KeyPair, CertsError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|source| CertsError::Generate { what, source })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use dice_proto::cert::CertSummary;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn default_sans_are_localhost_and_loopbacks() {
        let sans: Vec<String> = default_server_sans()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(sans, ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]);
    }

    fn options(out: &Path) -> InitOptions {
        InitOptions {
            out: out.to_owned(),
            server_sans: Vec::new(),
            force: false,
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path)
            .expect("file exists")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn init_writes_six_files_with_private_keys_0600() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("pki/dev");
        let report = init(&options(&out), OffsetDateTime::now_utc()).expect("init");

        let names: Vec<_> = report
            .files
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, FILES);
        for name in [CA_KEY, SERVER_KEY, CLIENT_KEY] {
            assert_eq!(mode(&out.join(name)), 0o600, "{name}");
        }
        for name in [CA_CERT, SERVER_CERT, CLIENT_CERT] {
            // 0644 less the umask: at least the owner can read it.
            assert_eq!(mode(&out.join(name)) & 0o600, 0o600, "{name}");
        }
        let leftovers: Vec<_> = fs::read_dir(&out)
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

        let text = report.to_string();
        assert!(text.contains(&format!("wrote {}", out.join(SERVER_KEY).display())));
        assert!(text.contains("subject \"CN=dice fleet dev CA\""), "{text}");
        assert!(text.contains("subject \"CN=dice-agent\""), "{text}");
        assert!(text.contains("subject \"CN=dicectl\""), "{text}");
        assert!(text.contains("not after "), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }

    #[test]
    fn certificates_say_what_was_asked() {
        let now = OffsetDateTime::now_utc();
        let sans = vec![
            "node-1.example".parse().expect("san"),
            "10.1.2.3".parse().expect("san"),
        ];
        let (_, issued) = generate(&sans, now).expect("generate");
        let [ca, server, client] = [&issued[0], &issued[1], &issued[2]].map(|i| &i.summary);
        let now = now.unix_timestamp();

        assert_eq!(ca.subject, "CN=dice fleet dev CA");
        assert_eq!(ca.issuer, ca.subject);
        assert_eq!(ca.not_before, now - 300);
        assert_eq!(ca.not_after, now + 3650 * 86_400);

        assert_eq!(server.subject, "CN=dice-agent");
        assert_eq!(server.issuer, "CN=dice fleet dev CA");
        assert_eq!(server.sans, ["DNS:node-1.example", "IP:10.1.2.3"]);
        assert_eq!(server.not_after, now + 365 * 86_400);

        assert_eq!(client.subject, "CN=dicectl");
        assert_eq!(client.sans, ["DNS:dicectl"]);
        assert_eq!(client.not_before, now - 300);
    }

    #[test]
    fn init_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join(CLIENT_KEY), "old").expect("seed");

        let error = init(&options(dir.path()), OffsetDateTime::now_utc())
            .expect_err("an existing file must stop init");
        let text = error.to_string();
        assert!(text.contains("client-key.pem: already exists"), "{text}");
        assert!(text.contains("--force"), "{text}");
        // Nothing was written.
        assert!(!dir.path().join(CA_CERT).exists());
        assert_eq!(
            fs::read_to_string(dir.path().join(CLIENT_KEY)).expect("read"),
            "old"
        );

        let forced = InitOptions {
            force: true,
            ..options(dir.path())
        };
        init(&forced, OffsetDateTime::now_utc()).expect("--force overwrites");
        assert!(
            fs::read_to_string(dir.path().join(CLIENT_KEY))
                .expect("read")
                .contains("PRIVATE KEY")
        );
        assert_eq!(mode(&dir.path().join(CLIENT_KEY)), 0o600);
    }

    /// Proves the PKI works: a handshake where the server verifies the client
    /// against the CA, and the client verifies the server for each default SAN.
    #[tokio::test]
    async fn dev_pki_completes_mutual_tls() {
        let dir = tempfile::tempdir().expect("temp dir");
        init(&options(dir.path()), OffsetDateTime::now_utc()).expect("init");
        let file = |name| dir.path().join(name);

        let client_config =
            crate::tls::client_config(&file(CA_CERT), &file(CLIENT_CERT), &file(CLIENT_KEY))
                .expect("client config");
        let server_config =
            crate::testing::server_config(&file(CA_CERT), &file(SERVER_CERT), &file(SERVER_KEY));

        for name in DEFAULT_SERVER_SANS {
            let server_name = ServerName::try_from(name).expect("valid name");
            let (client_io, server_io) = tokio::io::duplex(16 * 1024);
            let acceptor = tokio_rustls::TlsAcceptor::from(server_config.clone());
            let server = tokio::spawn(async move {
                let mut tls = acceptor.accept(server_io).await?;
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .map(|cert| CertSummary::parse(cert).expect("parse").subject);
                tls.write_all(b"ok").await?;
                tls.shutdown().await?;
                Ok::<_, io::Error>(peer)
            });
            let connector = tokio_rustls::TlsConnector::from(client_config.clone());
            let mut tls = connector
                .connect(server_name, client_io)
                .await
                .unwrap_or_else(|e| panic!("handshake as {name}: {e}"));
            let mut reply = Vec::new();
            tls.read_to_end(&mut reply).await.expect("read");
            assert_eq!(reply, b"ok");
            let peer = server.await.expect("join").expect("server side");
            assert_eq!(peer.as_deref(), Some("CN=dicectl"));
        }
    }
}
