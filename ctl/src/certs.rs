//! `dicectl certs init`: makes a dev PKI (a CA, a server and a client certificate) with rcgen.
//!
//! Everything is generated in memory first and only then written, each file
//! atomically (a temp file in the same directory, then a rename), so a failed
//! run never leaves a half-written key behind a valid name.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use dice_proto::cert::{CertSummary, rfc3339};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, DnsName};
use time::{Duration, OffsetDateTime};

/// The CA certificate's file name.
pub const CA_CERT: &str = "ca.pem";
/// The CA private key's file name.
pub const CA_KEY: &str = "ca-key.pem";
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
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long the server and client certificates are valid: 1 year.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// How far `not_before` is backdated, so a peer whose clock is a little behind accepts them.
const BACKDATE: Duration = Duration::minutes(5);
/// Server SANs used when `--server-san` is not given: local connections by name, IPv4 and IPv6.
pub const DEFAULT_SERVER_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Mode of the private key files: readable by the owner only.
const KEY_MODE: u32 = 0o600;
/// Mode of the certificate files, which are public.
const CERT_MODE: u32 = 0o644;

// === impl San ===

/// A subject alternative name: an IP address if it parses as one, else a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// A DNS name, e.g. `node-1.example`.
    Dns(String),
    /// An IP address, e.g. `127.0.0.1` or `::1`.
    Ip(IpAddr),
}

/// A SAN that is neither an IP address nor a valid DNS name.
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: not an IP address or a DNS name (e.g. node-1.example, 10.0.0.7, ::1)")]
pub struct SanParseError(String);

impl FromStr for San {
    type Err = SanParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // `[::1]` is how IPv6 is usually written next to a port; accept it here too.
        let bare = text
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        match DnsName::try_from(text) {
            Ok(_) => Ok(Self::Dns(text.to_owned())),
            Err(_) => Err(SanParseError(text.to_owned())),
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => write!(f, "DNS:{name}"),
            Self::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

impl San {
    fn to_rcgen(&self) -> Result<SanType, rcgen::Error> {
        Ok(match self {
            Self::Dns(name) => SanType::DnsName(name.as_str().try_into()?),
            Self::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

/// The server SANs used when none are given.
pub fn default_server_sans() -> Vec<San> {
    DEFAULT_SERVER_SANS
        .iter()
        .map(|text| text.parse().expect("the default SANs are valid"))
        .collect()
}

// === impl Init ===

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

/// What went wrong making the dev PKI.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file would be overwritten and `--force` was not given.
    #[error("{}: already exists (pass --force to replace the dev PKI in that directory)", .path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A directory or file could not be created or written.
    #[error("{}: {action}", .path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What was being done, e.g. `cannot create directory`.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// rcgen refused the parameters, e.g. a SAN it cannot encode.
    #[error("cannot generate the {what} certificate")]
    Generate {
        /// Which certificate: `CA`, `server` or `client`.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate rcgen made could not be read back, which would be a bug.
    #[error("cannot read back the {what} certificate")]
    Summary {
        /// Which certificate.
        what: &'static str,
        /// The parse error.
        #[source]
        source: dice_proto::cert::CertParseError,
    },
}

/// One certificate that `init` made, for the report.
#[derive(Debug, Clone)]
pub struct Issued {
    /// `CA`, `server` or `client`.
    pub role: &'static str,
    /// Subject, serial, SANs and validity.
    pub summary: CertSummary,
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

/// A PEM file to be written.
struct Output {
    name: &'static str,
    contents: String,
    mode: u32,
}

/// Makes the dev PKI in `options.out`, valid from `now` (backdated 5 minutes).
///
/// Refuses with [`CertsError::Exists`] before generating anything if one of the
/// six files already exists and `options.force` is false.
pub fn init(options: &InitOptions, now: OffsetDateTime) -> Result<InitReport, CertsError> {
    if !options.force {
        for name in FILES {
            let path = options.out.join(name);
            // symlink_metadata so a dangling link also counts as "exists".
            if fs::symlink_metadata(&path).is_ok() {
                return Err(CertsError::Exists { path });
            }
        }
    }

    let sans = if options.server_sans.is_empty() {
        default_server_sans()
    } else {
        options.server_sans.clone()
    };
    let (outputs, issued) = generate(&sans, now)?;

    fs::create_dir_all(&options.out).map_err(|source| CertsError::Io {
        path: options.out.clone(),
        action: "cannot create directory",
        source,
    })?;
    let mut files = Vec::with_capacity(outputs.len());
    for output in &outputs {
        let path = options.out.join(output.name);
        write_atomically(&path, output.contents.as_bytes(), output.mode)?;
        files.push(path);
    }
    sync_dir(&options.out)?;
    Ok(InitReport { files, issued })
}

/// Generates the three key pairs and certificates in memory.
fn generate(
    server_sans: &[San],
    now: OffsetDateTime,
) -> Result<(Vec<Output>, Vec<Issued>), CertsError> {
    let not_before = now - BACKDATE;

    let ca_key = new_key("CA")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = common_name(CA_COMMON_NAME);
    // Path length 0: this CA signs leaf certificates only.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = now + CA_VALIDITY;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|source| CertsError::Generate { what: "CA", source })?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_sans = server_sans
        .iter()
        .map(San::to_rcgen)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertsError::Generate {
            what: "server",
            source,
        })?;
    let server = leaf(
        "server",
        SERVER_COMMON_NAME,
        server_sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        not_before,
        now + LEAF_VALIDITY,
        &issuer,
    )?;
    let client_san = San::Dns(CLIENT_COMMON_NAME.to_owned())
        .to_rcgen()
        .map_err(|source| CertsError::Generate {
            what: "client",
            source,
        })?;
    let client = leaf(
        "client",
        CLIENT_COMMON_NAME,
        vec![client_san],
        ExtendedKeyUsagePurpose::ClientAuth,
        not_before,
        now + LEAF_VALIDITY,
        &issuer,
    )?;

    let issued = vec![
        summarize("CA", ca_cert.der())?,
        summarize("server", server.cert.der())?,
        summarize("client", client.cert.der())?,
    ];
    let outputs = vec![
        cert_output(CA_CERT, ca_cert.pem()),
        key_output(CA_KEY, ca_key_pem),
        cert_output(SERVER_CERT, server.cert.pem()),
        key_output(SERVER_KEY, server.key.serialize_pem()),
        cert_output(CLIENT_CERT, client.cert.pem()),
        key_output(CLIENT_KEY, client.key.serialize_pem()),
    ];
    Ok((outputs, issued))
}

struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn leaf(
    what: &'static str,
    common: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Leaf, CertsError> {
    let key = new_key(what)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(common);
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|source| CertsError::Generate { what, source })?;
    Ok(Leaf { cert, key })
}

fn new_key(what: &'static str) -> Result<KeyPair, CertsError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|source| CertsError::Generate { what, source })
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn summarize(role: &'static str, der: &CertificateDer<'_>) -> Result<Issued, CertsError> {
    let summary =
        CertSummary::parse(der).map_err(|source| CertsError::Summary { what: role, source })?;
    Ok(Issued { role, summary })
}

fn cert_output(name: &'static str, contents: String) -> Output {
    Output {
        name,
        contents,
        mode: CERT_MODE,
    }
}

fn key_output(name: &'static str, contents: String) -> Output {
    Output {
        name,
        contents,
        mode: KEY_MODE,
    }
}

// === writing ===

/// Writes `contents` to `path` through a temp file in the same directory and a rename.
///
/// The temp file is created with `mode` (so a key is never readable by others,
/// not even briefly), flushed to disk, then renamed over `path`.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertsError> {
    let io_error = |action, source| CertsError::Io {
        path: path.to_owned(),
        action,
        source,
    };
    let tmp = temp_path(path);
    let mut file = create_new(&tmp, mode).map_err(|source| io_error("cannot create", source))?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error("cannot write", source))
        .and_then(|()| fs::rename(&tmp, path).map_err(|source| io_error("cannot replace", source)));
    if written.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// `DIR/.NAME.tmp`: hidden, in the same directory so the rename stays on one filesystem.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Creates `path` exclusively with `mode`, replacing a temp file left by an earlier crashed run.
fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    match open_new(path, mode) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open_new(path, mode)
        }
        other => other,
    }
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Flushes the directory so the renames survive a crash.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), CertsError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| CertsError::Io {
            path: dir.to_owned(),
            action: "cannot sync directory",
            source,
        })
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), CertsError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn sans_parse_as_ip_or_dns() {
        let cases = [
            ("localhost", San::Dns("localhost".into())),
            (
                "node-1.dice.example",
                San::Dns("node-1.dice.example".into()),
            ),
            ("127.0.0.1", San::Ip("127.0.0.1".parse().expect("ip"))),
            ("::1", San::Ip("::1".parse().expect("ip"))),
            ("[fd00::7]", San::Ip("fd00::7".parse().expect("ip"))),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<San>().ok(), Some(want), "{text}");
        }
        for bad in ["", "has space", "under_score!", "a..b", "-lead.example"] {
            let error = bad.parse::<San>().expect_err(bad);
            assert!(
                error
                    .to_string()
                    .contains("not an IP address or a DNS name")
            );
        }
    }

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
