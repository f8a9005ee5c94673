//! `dicectl certs inspect`: what certificate files say, whether a key
//! belongs to a certificate, and whether a chain verifies against a CA.
//!
//! Loading is strict (an unreadable file, or one with no certificate, is a
//! usage error and nothing is reported); what the certificates say is data:
//! an expired certificate, a key that does not match or a chain that does not
//! verify is a problem of that file, shown in the report, and makes the run
//! exit 1. Chains are verified by webpki with the ring algorithms, as the
//! agent and dicectl verify their peers, for each extended key usage the
//! leaf has (serverAuth, clientAuth).

use std::path::{Path, PathBuf};

use dice_proto::cert::{CertSummary, check_chain_links, parse_chain, rfc3339};
use dice_proto::pem::{PemError, load_certs, load_key};
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::keys::{self, describe_spki};
use super::{CertsError, ca};

/// What `dicectl certs inspect` should look at.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// The certificate files (PEM, or a single DER certificate), leaf first in each.
    pub files: Vec<PathBuf>,
    /// CA bundle the chains must verify against.
    pub ca: Option<PathBuf>,
    /// Private keys: the first goes with the first file's leaf, and so on.
    pub keys: Vec<PathBuf>,
}

/// What `inspect` found.
#[derive(Debug, Clone)]
pub struct InspectReport {
    /// One per file, in the order given.
    pub files: Vec<FileReport>,
}

impl InspectReport {
    /// Whether no file has a problem.
    pub fn ok(&self) -> bool {
        self.files.iter().all(FileReport::ok)
    }
}

/// What one file holds.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Its certificates, in file order.
    pub certificates: Vec<CertDetails>,
    /// The `--key` that goes with it, if one was given.
    pub key: Option<KeyCheck>,
    /// The chain verification against `--ca`, if given.
    pub chain: Option<ChainCheck>,
    /// Why the file is not OK: expired, key mismatch, unverifiable chain.
    pub problems: Vec<String>,
}

impl FileReport {
    /// Whether the file has no problem.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What one certificate says.
#[derive(Debug, Clone)]
pub struct CertDetails {
    /// Subject, issuer, serial, SANs, validity.
    pub summary: CertSummary,
    /// Whole days left at the time of the run; negative once expired.
    pub days_left: i64,
    /// `ECDSA P-256`, `RSA 2048`, `Ed25519`, ...
    pub key_type: String,
    /// Whether it is a CA certificate (basicConstraints CA:TRUE).
    pub is_ca: bool,
    /// A CA's path length constraint.
    pub path_len: Option<u32>,
    /// Whether it is signed by its own key (a root).
    pub self_signed: bool,
    /// Key usages, e.g. `digitalSignature`, `keyCertSign`.
    pub key_usage: Vec<String>,
    /// Extended key usages, e.g. `serverAuth`, `clientAuth`.
    pub extended_key_usage: Vec<String>,
}

/// Whether a private key belongs to the file's first certificate.
#[derive(Debug, Clone)]
pub struct KeyCheck {
    /// The key file.
    pub path: PathBuf,
    /// Whether its public half is the certificate's public key.
    pub matches: bool,
}

/// Whether a file's chain verifies against the `--ca` bundle.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    /// The CA bundle.
    pub ca: PathBuf,
    /// Whether it verified (for every usage the leaf has).
    pub verified: bool,
    /// The usages it was verified for: `serverAuth`, `clientAuth`, or `CA`.
    pub usages: Vec<String>,
    /// Why it did not verify.
    pub error: Option<String>,
}

const CERT_HINT: &str = "pass certificate files in PEM (or one DER certificate)";
const KEY_HINT: &str = "pass --key the PEM private key of the FILE's first certificate";
const CA_HINT: &str = "pass --ca the PEM bundle of the CAs the chains must verify against";

/// Loads every file, then checks each at `now` (Unix seconds).
pub fn inspect(options: &InspectOptions, now: i64) -> Result<InspectReport, CertsError> {
    if options.keys.len() > options.files.len() {
        return Err(CertsError::Message(format!(
            "--key given {} times for {} certificate file(s): the first --key goes with the first FILE, the second with the second",
            options.keys.len(),
            options.files.len()
        )));
    }
    let files = options
        .files
        .iter()
        .map(|path| load_any(path).map(|certs| (path, certs)))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = options
        .keys
        .iter()
        .map(|path| {
            let der = load_key(path).map_err(|e| CertsError::pem(&e, KEY_HINT))?;
            let key = keys::key_pair(&der).map_err(|message| CertsError::File {
                path: path.clone(),
                message,
            })?;
            Ok((path.clone(), key))
        })
        .collect::<Result<Vec<_>, CertsError>>()?;
    let anchors = match &options.ca {
        Some(path) => Some((
            path.clone(),
            load_certs(path).map_err(|e| CertsError::pem(&e, CA_HINT))?,
        )),
        None => None,
    };

    let reports = files
        .into_iter()
        .enumerate()
        .map(|(index, (path, certs))| {
            let key = keys.get(index).map(|(path, key)| (path.as_path(), key));
            let ca = anchors
                .as_ref()
                .map(|(path, certs)| (path.as_path(), certs.as_slice()));
            check_file(path, &certs, key, ca, now)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InspectReport { files: reports })
}

/// Every certificate in a PEM file, or the one certificate of a DER file.
fn load_any(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertsError> {
    match load_certs(path) {
        Ok(certs) => Ok(certs),
        Err(PemError::Missing { .. }) => {
            let bytes = std::fs::read(path).map_err(|source| CertsError::Io {
                path: path.to_owned(),
                action: "cannot read",
                source,
            })?;
            match X509Certificate::from_der(&bytes) {
                Ok(([], _)) => Ok(vec![CertificateDer::from(bytes)]),
                _ => Err(CertsError::File {
                    path: path.to_owned(),
                    message: format!("no certificate found ({CERT_HINT})"),
                }),
            }
        }
        Err(error) => Err(CertsError::pem(&error, CERT_HINT)),
    }
}

fn check_file(
    path: &Path,
    certs: &[CertificateDer<'static>],
    key: Option<(&Path, &rcgen::KeyPair)>,
    ca: Option<(&Path, &[CertificateDer<'static>])>,
    now: i64,
) -> Result<FileReport, CertsError> {
    let parsed = parse_chain(certs).map_err(|e| CertsError::File {
        path: path.to_owned(),
        message: format!("certificate {} is not valid X.509: {}", e.number, e.reason),
    })?;
    let mut problems = Vec::new();
    let mut details = Vec::with_capacity(certs.len());
    for (i, (der, cert)) in certs.iter().zip(&parsed).enumerate() {
        let summary = CertSummary::parse(der).map_err(|e| CertsError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if now > summary.not_after {
            problems.push(format!(
                "certificate {} (\"{}\") expired at {}",
                i + 1,
                summary.subject,
                rfc3339(summary.not_after)
            ));
        } else if now < summary.not_before {
            problems.push(format!(
                "certificate {} (\"{}\") is not valid until {}",
                i + 1,
                summary.subject,
                rfc3339(summary.not_before)
            ));
        }
        details.push(details_of(summary, cert, der, now));
    }
    // A file that starts with a leaf is a chain and must link up; one that
    // starts with a CA may be a bundle of unrelated CAs.
    if !details[0].is_ca
        && let Err(message) = check_chain_links(certs)
    {
        problems.push(message);
    }
    let key = key.map(|(key_path, key)| {
        let matches = keys::matches(key, parsed[0].public_key());
        if !matches {
            problems.push(format!(
                "the key in {} does not match certificate 1 (\"{}\")",
                key_path.display(),
                details[0].summary.subject
            ));
        }
        KeyCheck {
            path: key_path.to_owned(),
            matches,
        }
    });
    let chain = ca.map(|(ca_path, anchors)| {
        let check = verify(certs, &parsed[0], details[0].is_ca, ca_path, anchors, now);
        if let Some(error) = &check.error {
            problems.push(format!(
                "the chain does not verify against {}: {error}",
                ca_path.display()
            ));
        }
        check
    });
    Ok(FileReport {
        path: path.to_owned(),
        certificates: details,
        key,
        chain,
        problems,
    })
}

fn details_of(
    summary: CertSummary,
    cert: &X509Certificate<'_>,
    der: &CertificateDer<'_>,
    now: i64,
) -> CertDetails {
    let constraints = cert.basic_constraints().ok().flatten().map(|ext| ext.value);
    let is_ca = constraints.is_some_and(|c| c.ca);
    let key_usage = match cert.key_usage() {
        Ok(Some(ext)) => {
            let usage = ext.value;
            [
                (usage.digital_signature(), "digitalSignature"),
                (usage.non_repudiation(), "nonRepudiation"),
                (usage.key_encipherment(), "keyEncipherment"),
                (usage.data_encipherment(), "dataEncipherment"),
                (usage.key_agreement(), "keyAgreement"),
                (usage.key_cert_sign(), "keyCertSign"),
                (usage.crl_sign(), "cRLSign"),
                (usage.encipher_only(), "encipherOnly"),
                (usage.decipher_only(), "decipherOnly"),
            ]
            .into_iter()
            .filter(|&(set, _)| set)
            .map(|(_, name)| name.to_owned())
            .collect()
        }
        _ => Vec::new(),
    };
    let extended_key_usage = match cert.extended_key_usage() {
        Ok(Some(ext)) => {
            let eku = ext.value;
            [
                (eku.any, "any"),
                (eku.server_auth, "serverAuth"),
                (eku.client_auth, "clientAuth"),
                (eku.code_signing, "codeSigning"),
                (eku.email_protection, "emailProtection"),
                (eku.time_stamping, "timeStamping"),
                (eku.ocsp_signing, "OCSPSigning"),
            ]
            .into_iter()
            .filter(|&(set, _)| set)
            .map(|(_, name)| name.to_owned())
            .chain(eku.other.iter().map(ToString::to_string))
            .collect()
        }
        _ => Vec::new(),
    };
    CertDetails {
        days_left: summary.days_left(now),
        key_type: describe_spki(cert.public_key()),
        is_ca,
        path_len: constraints.and_then(|c| c.path_len_constraint),
        self_signed: ca::is_self_signed(der),
        key_usage,
        extended_key_usage,
        summary,
    }
}

/// Verifies the file's chain against the anchors in `ca_path`.
fn verify(
    certs: &[CertificateDer<'static>],
    leaf: &X509Certificate<'_>,
    leaf_is_ca: bool,
    ca_path: &Path,
    anchors: &[CertificateDer<'static>],
    now: i64,
) -> ChainCheck {
    let check = |usages: Vec<String>, error: Option<String>| ChainCheck {
        ca: ca_path.to_owned(),
        verified: error.is_none(),
        usages,
        error,
    };
    if leaf_is_ca {
        return check(vec!["CA".to_owned()], verify_ca(certs, anchors).err());
    }
    let trust_anchors: Vec<TrustAnchor<'_>> = anchors
        .iter()
        .filter_map(|der| webpki::anchor_from_trusted_cert(der).ok())
        .collect();
    if trust_anchors.is_empty() {
        return check(
            Vec::new(),
            Some(format!("{}: no usable CA certificate", ca_path.display())),
        );
    }
    let end_entity = match EndEntityCert::try_from(&certs[0]) {
        Ok(cert) => cert,
        Err(error) => return check(Vec::new(), Some(explain(&error, ca_path))),
    };
    let eku = leaf
        .extended_key_usage()
        .ok()
        .flatten()
        .map(|ext| ext.value);
    let mut usages = Vec::new();
    match eku {
        Some(eku) => {
            if eku.server_auth {
                usages.push(("serverAuth", KeyUsage::server_auth()));
            }
            if eku.client_auth {
                usages.push(("clientAuth", KeyUsage::client_auth()));
            }
            if usages.is_empty() {
                return check(
                    Vec::new(),
                    Some("the certificate is for neither serverAuth nor clientAuth: TLS peers refuse it".to_owned()),
                );
            }
        }
        // No extended key usage: valid for any, so for TLS servers and clients alike.
        None => usages.push(("any", KeyUsage::server_auth())),
    }
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or_default(),
    ));
    let algorithms = dice_proto::crypto::provider()
        .signature_verification_algorithms
        .all;
    let mut verified = Vec::new();
    for (name, usage) in usages {
        if let Err(error) = end_entity.verify_for_usage(
            algorithms,
            &trust_anchors,
            &certs[1..],
            time,
            usage,
            None,
            None,
        ) {
            return check(verified, Some(explain(&error, ca_path)));
        }
        verified.push(name.to_owned());
    }
    check(verified, None)
}

/// A CA certificate verifies if it is one of the anchors, if an anchor
/// signed it, or if the file's chain links up from it to such a certificate.
fn verify_ca(
    certs: &[CertificateDer<'static>],
    anchors: &[CertificateDer<'static>],
) -> Result<(), String> {
    let parsed_anchors: Vec<X509Certificate<'_>> = anchors
        .iter()
        .filter_map(|der| X509Certificate::from_der(der.as_ref()).ok().map(|(_, c)| c))
        .collect();
    let trusted = |der: &CertificateDer<'_>| -> bool {
        if anchors.contains(der) {
            return true;
        }
        X509Certificate::from_der(der.as_ref()).is_ok_and(|(_, cert)| {
            parsed_anchors.iter().any(|anchor| {
                cert.issuer() == anchor.subject()
                    && cert.verify_signature(Some(anchor.public_key())).is_ok()
            })
        })
    };
    if trusted(&certs[0]) {
        return Ok(());
    }
    for end in 2..=certs.len() {
        if check_chain_links(&certs[..end]).is_err() {
            break;
        }
        if trusted(&certs[end - 1]) {
            return Ok(());
        }
    }
    let issuer = X509Certificate::from_der(certs[0].as_ref())
        .map(|(_, cert)| cert.issuer().to_string())
        .unwrap_or_default();
    Err(format!(
        "not issued by a CA in the bundle (its issuer is \"{issuer}\")"
    ))
}

/// webpki's verdict in words.
fn explain(error: &webpki::Error, ca_path: &Path) -> String {
    use webpki::Error as E;
    match error {
        E::UnknownIssuer => format!(
            "unknown issuer: no path to a CA in {} (is it the right CA, and does the file hold the intermediates?)",
            ca_path.display()
        ),
        E::CertExpired { .. } => "a certificate of the chain has expired".to_owned(),
        E::CertNotValidYet { .. } => "a certificate of the chain is not valid yet".to_owned(),
        E::RequiredEkuNotFoundContext(_) => {
            "a certificate of the chain does not allow this usage (extended key usage)".to_owned()
        }
        E::PathLenConstraintViolated => {
            "a CA's path length constraint forbids this many intermediates".to_owned()
        }
        E::InvalidSignatureForPublicKey => format!(
            "a signature does not verify with the key of the CA of that name in {} (another CA with the same name, e.g. a second `dicectl certs init`?)",
            ca_path.display()
        ),
        E::CaUsedAsEndEntity => "the first certificate is a CA, not a leaf".to_owned(),
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "a signature uses an algorithm rustls does not accept".to_owned()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use time::OffsetDateTime;

    use super::*;
    use crate::certs::KeyType;
    use crate::certs::build::Role;
    use crate::certs::fixtures::{init_ca, issue_options};
    use crate::certs::intermediate::{IntermediateOptions, intermediate};
    use crate::certs::issue::issue;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        /// Two unrelated roots, an intermediate under the first, and a server from the intermediate.
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("temp dir");
            let now = OffsetDateTime::now_utc();
            for root in ["root", "other"] {
                init_ca(&dir.path().join(root));
            }
            let options = IntermediateOptions {
                ca_dir: dir.path().join("root"),
                out: dir.path().join("inter"),
                name: "inter".to_owned(),
                days: 100,
                key_type: KeyType::EcdsaP256,
                force: false,
            };
            intermediate(&options, now).expect("intermediate");
            let (inter, out) = (dir.path().join("inter"), dir.path().join("out"));
            let mut options = issue_options(&inter, &out, Role::Server, "node");
            options.days = 10;
            options.key_type = KeyType::Ed25519;
            issue(&options, now).expect("issue");
            Self { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn inspect(
            &self,
            files: &[&str],
            ca: Option<&str>,
            keys: &[&str],
            now: i64,
        ) -> InspectReport {
            let options = InspectOptions {
                files: files.iter().map(|f| self.path(f)).collect(),
                ca: ca.map(|c| self.path(c)),
                keys: keys.iter().map(|k| self.path(k)).collect(),
            };
            inspect(&options, now).expect("inspect")
        }
    }

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_leaf_verifies_through_its_intermediate_and_its_key_matches() {
        let fx = Fixture::new();
        let report = fx.inspect(
            &["out/node.pem"],
            Some("root/ca.pem"),
            &["out/node-key.pem"],
            now(),
        );
        assert!(report.ok(), "{report:?}");
        let file = &report.files[0];
        assert_eq!(file.certificates.len(), 2);
        assert_eq!(file.certificates[0].key_type, "Ed25519");
        assert!(file.certificates[1].is_ca && !file.certificates[1].self_signed);
        assert_eq!(file.certificates[1].path_len, Some(0));
        assert!(file.key.as_ref().is_some_and(|k| k.matches));
        let chain = file.chain.as_ref().expect("chain");
        assert_eq!(chain.usages, ["serverAuth"]);

        let text = crate::certs::inspect_output::text(&report);
        assert!(
            text.contains("certificate 2 of 2: CA, path length 0"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&crate::certs::inspect_output::json(&report)).expect("json");
        assert_eq!(json["files"][0]["certificates"][0]["key_type"], "Ed25519");
    }

    #[test]
    fn problems_are_data_and_name_what_is_wrong() {
        let fx = Fixture::new();
        let report = fx.inspect(
            &["out/node.pem"],
            Some("other/ca.pem"),
            &["root/server-key.pem"],
            now(),
        );
        let problems = &report.files[0].problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("does not match certificate 1"),
            "{problems:?}"
        );
        // Both roots are named "dice fleet dev CA": the names match, the signature does not.
        assert!(
            problems[1].contains("another CA with the same name"),
            "{problems:?}"
        );

        let later = now() + 30 * 86_400;
        let report = fx.inspect(&["out/node.pem"], None, &[], later);
        assert!(!report.ok());
        assert!(
            report.files[0].problems[0].contains("expired at"),
            "{report:?}"
        );
        assert!(report.files[0].certificates[0].days_left < 0);
    }

    #[test]
    fn ca_files_verify_against_their_root_and_bundles_are_not_chains() {
        let fx = Fixture::new();
        let bundle = fx.path("bundle.pem");
        let text = [fx.path("root/ca.pem"), fx.path("other/ca.pem")]
            .iter()
            .map(|p| fs::read_to_string(p).expect("read"))
            .collect::<String>();
        fs::write(&bundle, text).expect("write");
        let report = fx.inspect(
            &["inter/ca.pem", "inter/chain.pem", "bundle.pem"],
            Some("root/ca.pem"),
            &[],
            now(),
        );
        assert!(report.ok(), "{report:?}");
        let report = fx.inspect(&["inter/ca.pem"], Some("other/ca.pem"), &[], now());
        assert!(report.files[0].problems[0].contains("not issued by a CA in the bundle"));
    }

    #[test]
    fn der_files_load_and_extra_keys_are_refused() {
        let fx = Fixture::new();
        let der = load_certs(&fx.path("root/ca.pem")).expect("pem")[0].to_vec();
        fs::write(fx.path("root.der"), der).expect("write");
        let report = fx.inspect(&["root.der"], None, &[], now());
        assert!(report.files[0].certificates[0].self_signed);

        let options = InspectOptions {
            files: vec![fx.path("root.der")],
            ca: None,
            keys: vec![fx.path("root/ca-key.pem"), fx.path("root/server-key.pem")],
        };
        let error = inspect(&options, now()).expect_err("two keys, one file");
        assert!(error.to_string().contains("--key given 2 times"), "{error}");
    }
}
