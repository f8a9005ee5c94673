//! PKIs that other tools make, reproduced in the test itself, and OpenSSL as
//! a verifier and a client of what dicectl makes.
//!
//! - [`ForeignPki::openssl`]: everything made with the `openssl` CLI as an
//!   operator would: an RSA 2048 CA with a PKCS#1 key (`genrsa -traditional`),
//!   `req -x509`, leaves signed with `x509 -req` from an extension file.
//! - [`ForeignPki::cfssl`]: cfssl's formats (cfssl itself is not packaged):
//!   an ECDSA P-256 CA whose key is SEC1 and whose key usage is certSign and
//!   cRLSign only, leaves with RSA 2048 PKCS#1 or ECDSA P-256 SEC1 keys, every
//!   not-before backdated 5 minutes, files named `NAME.pem` and `NAME-key.pem`
//!   as `cfssljson -bare` names them. Keys come from openssl; rcgen signs.
//! - [`openssl_verify`] and [`s_client`] run `openssl verify` and
//!   `openssl s_client` against dicectl's certificates and a live agent.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::certs_cli::Leaf;
use crate::openssl;
use crate::pki::ORGANIZATION;
use crate::process::{RunOutput, run_with_timeout};

/// How long an `openssl verify` or `openssl s_client` run may take.
const OPENSSL_TIMEOUT: StdDuration = StdDuration::from_secs(20);

/// How cfssl backdates every certificate's not-before.
pub const CFSSL_BACKDATE: Duration = Duration::minutes(5);

/// What a leaf is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// serverAuth, SANs `localhost` and `127.0.0.1`.
    Server,
    /// clientAuth, SAN `DNS:NAME`.
    Client,
}

/// A key as the foreign tool writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignKey {
    /// RSA 2048, `BEGIN RSA PRIVATE KEY` (PKCS#1).
    Rsa2048Pkcs1,
    /// ECDSA P-256, `BEGIN EC PRIVATE KEY` (SEC1).
    EcP256Sec1,
}

impl ForeignKey {
    /// The PEM label the key file starts with.
    pub fn pem_label(self) -> &'static str {
        match self {
            Self::Rsa2048Pkcs1 => concat!("-----BEGIN RSA ", "PRIVATE KEY-----"),
            Self::EcP256Sec1 => concat!("-----BEGIN EC ", "PRIVATE KEY-----"),
        }
    }

    /// Generates the key into `path` with openssl, mode 0600.
    fn generate(self, path: &Path) {
        let out = path_str(path);
        match self {
            Self::Rsa2048Pkcs1 => openssl::run(&["genrsa", "-traditional", "-out", out, "2048"]),
            Self::EcP256Sec1 => openssl::run(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                out,
            ]),
        };
        restrict(path);
    }

    /// The key in `path`, converted to PKCS#8 for rcgen to sign with.
    fn load_for_rcgen(path: &Path) -> KeyPair {
        let pkcs8 = openssl::run(&["pkcs8", "-topk8", "-nocrypt", "-in", path_str(path)]);
        KeyPair::from_pem(&pkcs8)
            .or_else(|_| KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256))
            .expect("rcgen loads the key openssl made")
    }
}

enum Signer {
    /// `openssl x509 -req` with the CA files and this config.
    Openssl { config: PathBuf },
    /// rcgen, as the CA.
    Rcgen(Box<CertifiedIssuer<'static, KeyPair>>),
}

/// A CA made by another tool, in the `--ca-dir` layout (`ca.pem`, `ca-key.pem`).
pub struct ForeignPki {
    dir: PathBuf,
    signer: Signer,
}

/// The openssl config: an empty request DN (the subject comes from `-subj`) and the CA's extensions.
const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
";

impl ForeignPki {
    /// An RSA 2048 CA made with the openssl CLI, its key in PKCS#1 form.
    pub fn openssl(dir: &Path) -> ForeignPki {
        fs::create_dir_all(dir).expect("create the PKI folder");
        let config = dir.join("openssl.cnf");
        fs::write(&config, OPENSSL_CONFIG).expect("write openssl.cnf");
        let key = dir.join("ca-key.pem");
        ForeignKey::Rsa2048Pkcs1.generate(&key);
        openssl::run(&[
            "req",
            "-x509",
            "-new",
            "-key",
            path_str(&key),
            "-sha256",
            "-days",
            "30",
            "-subj",
            &format!("/CN=openssl test CA/O={ORGANIZATION}"),
            "-config",
            path_str(&config),
            "-extensions",
            "v3_ca",
            "-out",
            path_str(&dir.join("ca.pem")),
        ]);
        ForeignPki {
            dir: dir.to_owned(),
            signer: Signer::Openssl { config },
        }
    }

    /// A cfssl-style CA: ECDSA P-256 with a SEC1 key, key usage certSign and
    /// cRLSign, not-before 5 minutes ago, valid 5 years.
    pub fn cfssl(dir: &Path) -> ForeignPki {
        fs::create_dir_all(dir).expect("create the PKI folder");
        let key_path = dir.join("ca-key.pem");
        ForeignKey::EcP256Sec1.generate(&key_path);
        let key = ForeignKey::load_for_rcgen(&key_path);
        let mut params = CertificateParams::default();
        params.distinguished_name = subject("cfssl test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CFSSL_BACKDATE;
        params.not_after = now + Duration::days(5 * 365);
        let ca = CertifiedIssuer::self_signed(params, key).expect("self-sign the cfssl CA");
        fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
        ForeignPki {
            dir: dir.to_owned(),
            signer: Signer::Rcgen(Box::new(ca)),
        }
    }

    /// The folder, laid out as `dicectl certs --ca-dir` reads it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues `NAME.pem` and `NAME-key.pem` for `usage`, with a `key` made by openssl.
    pub fn leaf(&self, name: &str, usage: Usage, key: ForeignKey) -> Leaf {
        let cert_path = self.dir.join(format!("{name}.pem"));
        let key_path = self.dir.join(format!("{name}-key.pem"));
        key.generate(&key_path);
        let sans = match usage {
            Usage::Server => vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            Usage::Client => vec![name.to_owned()],
        };
        match &self.signer {
            Signer::Openssl { config } => {
                self.openssl_sign(config, name, usage, &sans, &key_path, &cert_path)
            }
            Signer::Rcgen(ca) => {
                let mut params = CertificateParams::new(sans).expect("valid SANs");
                params.distinguished_name = subject(name);
                params.is_ca = IsCa::ExplicitNoCa;
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                params.extended_key_usages = vec![match usage {
                    Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
                    Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
                }];
                params.use_authority_key_identifier_extension = true;
                params.serial_number = Some(serial());
                let now = OffsetDateTime::now_utc();
                params.not_before = now - CFSSL_BACKDATE;
                params.not_after = now + Duration::days(365);
                let leaf_key = ForeignKey::load_for_rcgen(&key_path);
                let cert = params
                    .signed_by(&leaf_key, ca.as_ref())
                    .expect("sign the cfssl-style leaf");
                fs::write(&cert_path, cert.pem()).expect("write the leaf");
            }
        }
        Leaf::at(&cert_path, &key_path)
    }

    fn openssl_sign(
        &self,
        config: &Path,
        name: &str,
        usage: Usage,
        sans: &[String],
        key: &Path,
        cert: &Path,
    ) {
        let csr = self.dir.join(format!("{name}.csr"));
        openssl::run(&[
            "req",
            "-new",
            "-key",
            path_str(key),
            "-subj",
            &format!("/CN={name}/O={ORGANIZATION}"),
            "-config",
            path_str(config),
            "-out",
            path_str(&csr),
        ]);
        let alt_names: Vec<String> = sans
            .iter()
            .map(|san| match san.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{san}"),
                Err(_) => format!("DNS:{san}"),
            })
            .collect();
        let extensions = format!(
            "[leaf]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = {}\nsubjectAltName = {}\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
            match usage {
                Usage::Server => "serverAuth",
                Usage::Client => "clientAuth",
            },
            alt_names.join(", ")
        );
        let ext_file = self.dir.join(format!("{name}.ext"));
        fs::write(&ext_file, extensions).expect("write the extension file");
        let serial = format!("0x{}", hex(&serial().to_bytes()));
        openssl::run(&[
            "x509",
            "-req",
            "-in",
            path_str(&csr),
            "-CA",
            path_str(&self.ca_cert()),
            "-CAkey",
            path_str(&self.dir.join("ca-key.pem")),
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-sha256",
            "-extfile",
            path_str(&ext_file),
            "-extensions",
            "leaf",
            "-out",
            path_str(cert),
        ]);
    }
}

/// `openssl verify -x509_strict -purpose PURPOSE -CAfile CA [-untrusted U] LEAF`.
/// `purpose` is `sslserver` or `sslclient`.
pub fn openssl_verify(
    ca: &Path,
    untrusted: Option<&Path>,
    leaf: &Path,
    purpose: &str,
) -> RunOutput {
    openssl::run(&["version"]);
    let mut command = Command::new("openssl");
    command.args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"]);
    command.arg(ca);
    if let Some(untrusted) = untrusted {
        command.arg("-untrusted").arg(untrusted);
    }
    command.arg(leaf);
    run_with_timeout(command, OPENSSL_TIMEOUT)
}

/// `openssl s_client` to `addr` as a gRPC client would connect: ALPN h2,
/// verifying the server for `localhost` against `ca`, presenting `cert`
/// and `key` (plus the intermediates in `chain`), and failing on a
/// verification error. Its stdin is empty, so it closes after the handshake.
pub fn s_client(
    addr: SocketAddr,
    ca: &Path,
    cert: &Path,
    key: &Path,
    chain: Option<&Path>,
) -> RunOutput {
    openssl::run(&["version"]);
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .args(["-alpn", "h2", "-verify_return_error", "-CAfile"])
        .arg(ca)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key);
    if let Some(chain) = chain {
        command.arg("-cert_chain").arg(chain);
    }
    run_with_timeout(command, OPENSSL_TIMEOUT)
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, ORGANIZATION);
    name
}

/// A positive 20-byte serial (cfssl's size), unique within this process.
fn serial() -> SerialNumber {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&nanos.to_be_bytes());
    bytes.extend_from_slice(&(COUNTER.fetch_add(1, Ordering::Relaxed) as u32).to_be_bytes());
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 600 the key file");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}
