//! Test certificates, minted with rcgen per test (as linkerd's meshtls tests do).
//!
//! [`Pki::new`] writes the same files `dicectl certs init` does: `ca.pem`,
//! `ca-key.pem`, `server.pem`, `server-key.pem`, `client.pem`, `client-key.pem`.
//! [`Pki::issue`] signs more leaves with the same CA: another key algorithm,
//! another key file form (PKCS#1, SEC1, PKCS#8), other names, or an expired
//! validity. [`Pki::unrelated`] makes a second CA that shares nothing with this one.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dice_proto::cert::CertSummary;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::client::TlsClient;
use crate::config::TlsFiles;
use crate::openssl;

/// The organization every test certificate names.
pub const ORGANIZATION: &str = "dice fleet tests";

/// The common name of the default server certificate.
pub const SERVER_CN: &str = "dice-test-server";

/// The common name of the default client certificate.
pub const CLIENT_CN: &str = "dice-test-client";

/// The key algorithm of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256 with SHA-256 (the default).
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA, 2048 bits (generated with the `openssl` CLI).
    Rsa2048,
}

/// How a private key file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `BEGIN PRIVATE KEY` (any algorithm).
    Pkcs8,
    /// `BEGIN EC PRIVATE KEY` (ECDSA only; converted with the `openssl` CLI).
    Sec1,
    /// `BEGIN RSA PRIVATE KEY` (RSA only).
    Pkcs1,
}

impl KeyFormat {
    /// The PEM label a key file in this form starts with.
    pub fn pem_label(self) -> &'static str {
        match self {
            Self::Pkcs8 => concat!("-----BEGIN ", "PRIVATE KEY-----"),
            Self::Sec1 => concat!("-----BEGIN EC ", "PRIVATE KEY-----"),
            Self::Pkcs1 => concat!("-----BEGIN RSA ", "PRIVATE KEY-----"),
        }
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

/// When a leaf certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validity {
    Current,
    Expired,
    NotYetValid,
    /// Valid since an hour ago, until this long from now.
    ExpiresIn(Duration),
}

/// What to put in a leaf certificate; see [`Pki::issue`].
#[derive(Debug, Clone)]
pub struct LeafSpec {
    name: String,
    role: Role,
    common_name: String,
    sans: Vec<String>,
    key: KeyKind,
    format: KeyFormat,
    validity: Validity,
}

impl LeafSpec {
    /// A server certificate for `localhost` and `127.0.0.1`, written to
    /// `<name>.pem` and `<name>-key.pem`.
    pub fn server(name: &str) -> Self {
        Self::new(
            name,
            Role::Server,
            vec!["localhost".into(), "127.0.0.1".into()],
        )
    }

    /// A client certificate, written to `<name>.pem` and `<name>-key.pem`.
    pub fn client(name: &str) -> Self {
        Self::new(name, Role::Client, vec![format!("{name}.client.test")])
    }

    fn new(name: &str, role: Role, sans: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            role,
            common_name: name.to_owned(),
            sans,
            key: KeyKind::EcdsaP256,
            format: KeyFormat::Pkcs8,
            validity: Validity::Current,
        }
    }

    /// Uses this key algorithm (default ECDSA P-256).
    pub fn key(mut self, key: KeyKind) -> Self {
        self.key = key;
        self
    }

    /// Writes the key in this form (default PKCS#8).
    pub fn format(mut self, format: KeyFormat) -> Self {
        self.format = format;
        self
    }

    /// Replaces the subject alternative names (IP addresses and DNS names).
    pub fn sans<S: Into<String>>(mut self, sans: impl IntoIterator<Item = S>) -> Self {
        self.sans = sans.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the subject common name (default: the file name).
    pub fn common_name(mut self, common_name: &str) -> Self {
        self.common_name = common_name.to_owned();
        self
    }

    /// Makes the certificate expired since yesterday.
    pub fn expired(mut self) -> Self {
        self.validity = Validity::Expired;
        self
    }

    /// Makes the certificate valid until `lifetime` from now (default: 30 days),
    /// e.g. within a health check's expiry warning threshold.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.validity = Validity::ExpiresIn(lifetime);
        self
    }

    /// Makes the certificate valid only from tomorrow.
    pub fn not_yet_valid(mut self) -> Self {
        self.validity = Validity::NotYetValid;
        self
    }
}

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The PEM certificate file (the leaf only; the CA signs leaves directly).
    pub cert: PathBuf,
    /// The PEM private key file.
    pub key: PathBuf,
    /// What the certificate says, including its serial.
    pub summary: CertSummary,
}

impl Identity {
    /// The certificate's serial, lowercase hex (as [`CertSummary::serial`]).
    pub fn serial(&self) -> &str {
        &self.summary.serial
    }
}

/// A CA with a server and a client certificate, written into one directory.
pub struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_cert: PathBuf,
    ca_key: PathBuf,
    server: Identity,
    client: Identity,
}

impl Pki {
    /// Mints a CA (ECDSA P-256), a server certificate for `localhost` and
    /// `127.0.0.1`, and a client certificate into `dir` (created if missing).
    pub fn new(dir: &Path) -> Self {
        Self::with_ca_name(dir, "dice test CA")
    }

    fn with_ca_name(dir: &Path, ca_name: &str) -> Self {
        fs::create_dir_all(dir).expect("create the PKI directory");
        let mut params = CertificateParams::default();
        params.distinguished_name = name(ca_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365);
        params.serial_number = Some(fresh_serial());
        let key = KeyPair::generate().expect("generate the CA key");
        let key_pem = key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(params, key).expect("self-sign the CA");
        let ca_cert = dir.join("ca.pem");
        let ca_key = dir.join("ca-key.pem");
        fs::write(&ca_cert, ca.pem()).expect("write ca.pem");
        write_key(&ca_key, &key_pem);

        let server = issue(&ca, dir, &LeafSpec::server("server").common_name(SERVER_CN));
        let client = issue(&ca, dir, &LeafSpec::client("client").common_name(CLIENT_CN));
        Self {
            dir: dir.to_owned(),
            ca,
            ca_cert,
            ca_key,
            server,
            client,
        }
    }

    /// A second PKI in `<dir>/<name>/` whose CA is unrelated to this one: its
    /// client certificate must be refused by an agent trusting this CA.
    pub fn unrelated(&self, name: &str) -> Pki {
        Self::with_ca_name(&self.dir.join(name), &format!("unrelated CA {name}"))
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.pem`: the CA certificate, which agents use as `client_ca` and clients as roots.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// `ca-key.pem`: the CA's private key (PKCS#8).
    pub fn ca_key(&self) -> &Path {
        &self.ca_key
    }

    /// `server.pem` and `server-key.pem`.
    pub fn server(&self) -> &Identity {
        &self.server
    }

    /// `client.pem` and `client-key.pem`.
    pub fn client(&self) -> &Identity {
        &self.client
    }

    /// The agent-side TLS files: the server certificate, its key, and this CA as `client_ca`.
    pub fn server_tls(&self) -> TlsFiles {
        self.tls_files_for(&self.server)
    }

    /// Agent-side TLS files serving `identity`, with this CA as `client_ca`.
    pub fn tls_files_for(&self, identity: &Identity) -> TlsFiles {
        TlsFiles {
            cert: identity.cert.clone(),
            key: identity.key.clone(),
            client_ca: self.ca_cert.clone(),
        }
    }

    /// A client that trusts this CA and presents the default client certificate.
    pub fn client_tls(&self) -> TlsClient {
        self.client_tls_as(&self.client)
    }

    /// A client that trusts this CA and presents `identity`.
    pub fn client_tls_as(&self, identity: &Identity) -> TlsClient {
        TlsClient::new(&self.ca_cert).identity(identity)
    }

    /// A client that trusts this CA but presents no certificate.
    pub fn client_tls_without_cert(&self) -> TlsClient {
        TlsClient::new(&self.ca_cert)
    }

    /// Signs a leaf certificate with this CA and writes it to
    /// `<dir>/<name>.pem` and `<dir>/<name>-key.pem`, replacing any files there.
    ///
    /// RSA keys are generated, and EC keys converted to SEC1, with the
    /// `openssl` CLI; a missing `openssl` fails the test.
    pub fn issue(&self, spec: &LeafSpec) -> Identity {
        issue(&self.ca, &self.dir, spec)
    }
}

/// Signs the leaf `spec` describes with `ca` and writes it into `dir`.
fn issue(ca: &CertifiedIssuer<'static, KeyPair>, dir: &Path, spec: &LeafSpec) -> Identity {
    let cert_path = dir.join(format!("{}.pem", spec.name));
    let key_path = dir.join(format!("{}-key.pem", spec.name));
    let key = generate_key(spec.key, spec.format, &key_path);

    let mut params = CertificateParams::new(spec.sans.clone()).expect("valid SANs");
    params.distinguished_name = name(&spec.common_name);
    params.serial_number = Some(fresh_serial());
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if spec.key == KeyKind::Rsa2048 {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = vec![match spec.role {
        Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    let now = OffsetDateTime::now_utc();
    (params.not_before, params.not_after) = match spec.validity {
        Validity::Current => (now - Duration::hours(1), now + Duration::days(30)),
        Validity::Expired => (now - Duration::days(30), now - Duration::days(1)),
        Validity::NotYetValid => (now + Duration::days(1), now + Duration::days(30)),
        Validity::ExpiresIn(lifetime) => (now - Duration::hours(1), now + lifetime),
    };
    let cert = params
        .signed_by(&key, ca)
        .expect("sign the leaf certificate");
    fs::write(&cert_path, cert.pem()).expect("write the leaf certificate");
    let summary = CertSummary::parse(cert.der()).expect("rcgen writes valid X.509");
    Identity {
        cert: cert_path,
        key: key_path,
        summary,
    }
}

/// Generates a key of `kind`, writes it to `path` in `format`, and returns it for signing.
fn generate_key(kind: KeyKind, format: KeyFormat, path: &Path) -> KeyPair {
    match (kind, format) {
        (KeyKind::Rsa2048, KeyFormat::Pkcs1 | KeyFormat::Pkcs8) => {
            let pkcs8 = openssl::generate_rsa(path, 2048);
            if format == KeyFormat::Pkcs8 {
                write_key(path, &pkcs8);
            } else {
                restrict(path);
            }
            KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
                .expect("ring loads the RSA key openssl made")
        }
        (KeyKind::EcdsaP256 | KeyKind::EcdsaP384 | KeyKind::Ed25519, KeyFormat::Pkcs8) => {
            let key = KeyPair::generate_for(algorithm(kind)).expect("generate the key");
            write_key(path, &key.serialize_pem());
            key
        }
        (KeyKind::EcdsaP256 | KeyKind::EcdsaP384, KeyFormat::Sec1) => {
            let key = KeyPair::generate_for(algorithm(kind)).expect("generate the key");
            let pkcs8 = path.with_extension("pkcs8.tmp");
            write_key(&pkcs8, &key.serialize_pem());
            openssl::ec_to_sec1(&pkcs8, path);
            fs::remove_file(&pkcs8).expect("remove the PKCS#8 scratch key");
            restrict(path);
            key
        }
        (kind, format) => panic!("a {kind:?} key cannot be written as {format:?}"),
    }
}

fn algorithm(kind: KeyKind) -> &'static rcgen::SignatureAlgorithm {
    match kind {
        KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        KeyKind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, ORGANIZATION);
    name
}

/// A serial unique within this process and unlikely to repeat across runs,
/// so rotation tests can tell two certificates for the same name apart.
pub(crate) fn fresh_serial() -> SerialNumber {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or_default();
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&nanos.to_be_bytes());
    bytes.extend_from_slice(&std::process::id().to_be_bytes());
    bytes.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    bytes[0] = (bytes[0] & 0x7f) | 0x40; // positive, and no leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn write_key(path: &Path, pem: &str) {
    fs::write(path, pem).expect("write the key file");
    restrict(path);
}

fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 600 the key file");
}
