//! `dicectl certs intermediate`: an intermediate CA signed by the CA in a CA
//! directory, written as a CA directory of its own: `ca.pem` (the
//! intermediate), `ca-key.pem`, and `chain.pem` (the intermediate, then each
//! CA above it up to the root). `certs issue --ca-dir` on it issues leaves
//! whose files carry the intermediate, so agents serve the whole chain and
//! clients verify through it to the root they trust.

use std::fmt;
use std::path::PathBuf;

use dice_proto::pem::pem_chain;
use time::OffsetDateTime;

use super::build::{self, Validity};
use super::ca::{CA_CERT, CA_CHAIN, CA_KEY, Ca};
use super::keys::{KeyAlgorithm, KeyType};
use super::write::{self, Output};
use super::{CertsError, Issued};

/// The intermediate's common name when `--name` is not given.
pub const DEFAULT_NAME: &str = "dice fleet intermediate CA";

/// What `dicectl certs intermediate` should do.
#[derive(Debug, Clone)]
pub struct IntermediateOptions {
    /// The parent CA's directory.
    pub ca_dir: PathBuf,
    /// Where the intermediate's CA directory goes; created if missing.
    pub out: PathBuf,
    /// The intermediate's common name.
    pub name: String,
    /// Days of validity (cut short to the parent's not-after).
    pub days: u32,
    /// The intermediate key's type.
    pub key_type: KeyType,
    /// Overwrite existing files.
    pub force: bool,
}

/// What `intermediate` made and wrote.
#[derive(Debug, Clone)]
pub struct IntermediateReport {
    /// The files written: key, certificate, chain.
    pub files: Vec<PathBuf>,
    /// What the intermediate certificate says.
    pub issued: Issued,
    /// Its key's algorithm.
    pub key: KeyAlgorithm,
    /// Its path length constraint.
    pub path_len: u8,
    /// Certificates in `chain.pem`.
    pub chain_len: usize,
    /// Set when the validity was cut short to the parent's not-after (Unix seconds).
    pub clamped_to: Option<i64>,
}

impl fmt::Display for IntermediateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::issue::describe(f, &self.files, &self.issued, self.key)?;
        writeln!(
            f,
            "CA     path length {} (signs leaf certificates{}); chain.pem holds {} certificates, root last",
            self.path_len,
            if self.path_len == 0 {
                " only"
            } else {
                " and intermediates"
            },
            self.chain_len
        )?;
        super::issue::clamp_note(f, self.clamped_to, "parent CA's")
    }
}

/// Makes the intermediate CA at `now` and writes its directory.
pub fn intermediate(
    options: &IntermediateOptions,
    now: OffsetDateTime,
) -> Result<IntermediateReport, CertsError> {
    if options.name.trim().is_empty() {
        return Err(CertsError::Message(
            "--name: empty (name the intermediate CA, e.g. --name \"dice fleet eu CA\")".to_owned(),
        ));
    }
    let [cert_path, key_path, chain_path] =
        [CA_CERT, CA_KEY, CA_CHAIN].map(|name| options.out.join(name));
    write::refuse_existing(
        [
            key_path.as_path(),
            cert_path.as_path(),
            chain_path.as_path(),
        ],
        options.force,
    )?;

    let parent = Ca::load(&options.ca_dir, now.unix_timestamp())?;
    let path_len = match parent.path_len {
        Some(0) => {
            return Err(CertsError::File {
                path: parent.dir.join(CA_CERT),
                message: format!(
                    "\"{}\" has path length 0: it may sign leaf certificates but no intermediate CA (issue leaves from it with `dicectl certs issue`, or make a new root with `dicectl certs init`)",
                    parent.summary.subject
                ),
            });
        }
        Some(len) => u8::try_from(len - 1).unwrap_or(u8::MAX),
        None => 0,
    };
    let algorithm = KeyAlgorithm::from(options.key_type);
    let key = algorithm.generate().map_err(CertsError::Message)?;
    let validity = Validity::new(now, options.days, Some(parent.summary.not_after));
    let params = build::ca_params(
        build::common_name(&options.name),
        Some(path_len),
        validity,
        true,
    );
    let cert = params
        .signed_by(&key, &parent.issuer)
        .map_err(|source| CertsError::Generate {
            what: "intermediate CA",
            source,
        })?;
    let issued = Issued::parse("CA", cert.der())?;
    let chain_len = 1 + parent.full_chain.len();
    let chain = pem_chain(std::iter::once(cert.der()).chain(&parent.full_chain));

    write::create_dir(&options.out)?;
    let files = write::write_all(&[
        Output::key(key_path, key.serialize_pem()),
        Output::cert(cert_path, cert.pem()),
        Output::cert(chain_path, chain),
    ])?;
    Ok(IntermediateReport {
        files,
        issued,
        key: algorithm,
        path_len,
        chain_len,
        clamped_to: validity.clamped.then_some(parent.summary.not_after),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use dice_proto::pem::load_certs;

    use super::*;
    use crate::certs::build::Role;
    use crate::certs::fixtures::{init_ca, issue_options};
    use crate::certs::issue::issue;

    fn options(ca_dir: &Path, out: &Path) -> IntermediateOptions {
        IntermediateOptions {
            ca_dir: ca_dir.to_owned(),
            out: out.to_owned(),
            name: DEFAULT_NAME.to_owned(),
            days: 1825,
            key_type: KeyType::EcdsaP384,
            force: false,
        }
    }

    #[test]
    fn leaves_from_an_intermediate_carry_it_and_chain_to_the_root() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        init_ca(&root);
        let inter = dir.path().join("inter");
        let report =
            intermediate(&options(&root, &inter), OffsetDateTime::now_utc()).expect("intermediate");
        assert_eq!(report.path_len, 0);
        assert_eq!(report.chain_len, 2);
        assert_eq!(report.issued.summary.issuer, "CN=dice fleet dev CA");

        let leaf_options =
            issue_options(&inter, &dir.path().join("leaves"), Role::Server, "node-1");
        let leaf =
            issue(&leaf_options, OffsetDateTime::now_utc()).expect("issue from the intermediate");
        assert_eq!(leaf.intermediates, 1);
        let chain = load_certs(&dir.path().join("leaves/node-1.pem")).expect("chain");
        assert_eq!(chain.len(), 2);
        let mut full = chain.clone();
        full.extend(load_certs(&root.join(CA_CERT)).expect("root"));
        dice_proto::cert::check_chain_links(&full).expect("leaf -> intermediate -> root");

        // Path length 0: no intermediate below this one.
        let error = intermediate(
            &options(&inter, &dir.path().join("deeper")),
            OffsetDateTime::now_utc(),
        )
        .expect_err("path length 0");
        assert!(error.to_string().contains("has path length 0"), "{error}");
    }
}
