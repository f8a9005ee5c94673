//! Where a node stands in a CA rollover, read from the node itself: the CAs
//! its listener trusts (fingerprints from `GetInfo`) and whether the leaf it
//! serves was signed by the new CA (its signature checked against the new
//! CA's public key: two CAs may share a name).
//!
//! | phase      | trusts NEW | leaf from NEW | trusts OLD |
//! |------------|------------|---------------|------------|
//! | `start`    | no         | -             | -          |
//! | `trusted`  | yes        | no            | -          |
//! | `reissued` | yes        | yes           | yes        |
//! | `done`     | yes        | yes           | no         |

use std::collections::BTreeSet;

use dice_proto::cert::sha256_hex;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certs::ca::Ca;

/// What a rollover needs to know of a CA directory.
#[derive(Debug, Clone)]
pub struct CaFacts {
    /// The certificate that signs leaves (`ca.pem`).
    pub issuing: CertificateDer<'static>,
    /// The root of its chain (`chain.pem`'s last, else `ca.pem`): what nodes trust.
    pub root: CertificateDer<'static>,
    /// Fingerprints of every CA certificate of the directory (`chain.pem`, else `ca.pem`).
    pub fingerprints: BTreeSet<String>,
}

impl CaFacts {
    /// The facts of a loaded CA directory.
    pub fn of(ca: &Ca) -> Self {
        let root = ca.full_chain.last().unwrap_or(&ca.cert).clone();
        Self {
            issuing: ca.cert.clone(),
            root,
            fingerprints: ca.full_chain.iter().map(|der| sha256_hex(der)).collect(),
        }
    }

    /// Whether `leaf` was signed by this CA's issuing certificate.
    pub fn signed(&self, leaf: &CertificateDer<'_>) -> bool {
        let (Ok((_, leaf)), Ok((_, issuing))) = (
            X509Certificate::from_der(leaf),
            X509Certificate::from_der(&self.issuing),
        ) else {
            return false;
        };
        leaf.verify_signature(Some(issuing.public_key())).is_ok()
    }
}

/// The CAs of a rollover.
#[derive(Debug, Clone)]
pub struct Rollover {
    /// The CA the fleet moves from.
    pub old: CaFacts,
    /// The CA the fleet moves to.
    pub new: CaFacts,
}

impl Rollover {
    /// The rollover from the CA directory `old` to `new`.
    pub fn new(old: &Ca, new: &Ca) -> Self {
        Self {
            old: CaFacts::of(old),
            new: CaFacts::of(new),
        }
    }

    /// OLD's and NEW's roots: dicectl trusts agents of both CAs.
    pub fn roots(&self) -> [CertificateDer<'static>; 2] {
        [self.old.root.clone(), self.new.root.clone()]
    }

    /// The fingerprints untrust removes: OLD's CAs that are not NEW's too
    /// (an intermediate NEW may share OLD's root).
    pub fn removed(&self) -> BTreeSet<String> {
        self.old
            .fingerprints
            .difference(&self.new.fingerprints)
            .cloned()
            .collect()
    }

    /// What a node trusting `trusted` (fingerprints) and serving `leaf` still needs.
    pub fn needs(&self, trusted: &[String], leaf: &CertificateDer<'_>) -> Needs {
        let removed = self.removed();
        Needs {
            trust: !trusted
                .iter()
                .any(|sha| self.new.fingerprints.contains(sha)),
            reissue: !self.new.signed(leaf),
            untrust: trusted.iter().any(|sha| removed.contains(sha)),
        }
    }
}

/// The steps a node still needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// It does not trust NEW yet.
    pub trust: bool,
    /// Its certificate is not from NEW yet.
    pub reissue: bool,
    /// It still trusts OLD.
    pub untrust: bool,
}

impl Needs {
    /// Where it stands.
    pub fn phase(self) -> NodePhase {
        if self.trust {
            NodePhase::Start
        } else if self.reissue {
            NodePhase::Trusted
        } else if self.untrust {
            NodePhase::Reissued
        } else {
            NodePhase::Done
        }
    }

    /// Through `reissue`: trusts NEW and serves a certificate from it.
    pub fn reissued(self) -> bool {
        !self.trust && !self.reissue
    }

    /// The steps left, in order: `trust`, `reissue`, `untrust`.
    pub fn steps(self) -> Vec<&'static str> {
        [
            (self.trust, "trust"),
            (self.reissue, "reissue"),
            (self.untrust, "untrust"),
        ]
        .iter()
        .filter(|(needed, _)| *needed)
        .map(|(_, step)| *step)
        .collect()
    }
}

/// A node's place in a rollover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodePhase {
    /// It does not trust NEW.
    Start,
    /// It trusts NEW; its certificate is not from NEW.
    Trusted,
    /// It serves a certificate from NEW and still trusts OLD.
    Reissued,
    /// It serves a certificate from NEW and trusts NEW, not OLD.
    Done,
}

impl NodePhase {
    /// `start`, `trusted`, `reissued`, `done`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Trusted => "trusted",
            Self::Reissued => "reissued",
            Self::Done => "done",
        }
    }
}

#[cfg(test)]
mod tests {
    use dice_proto::pem::load_certs;

    use super::*;
    use crate::certs::fixtures::init_ca;

    fn ca(dir: &std::path::Path) -> Ca {
        init_ca(dir);
        Ca::load(dir, crate::unix_now()).expect("ca")
    }

    #[test]
    fn phases_from_trust_and_issuer() {
        let (old_dir, new_dir) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (old, new) = (ca(old_dir.path()), ca(new_dir.path()));
        let rollover = Rollover::new(&old, &new);
        let old_leaf = load_certs(&old_dir.path().join("server.pem")).expect("leaf")[0].clone();
        let new_leaf = load_certs(&new_dir.path().join("server.pem")).expect("leaf")[0].clone();
        let (old_sha, new_sha) = (sha256_hex(&old.cert), sha256_hex(&new.cert));

        let start = rollover.needs(std::slice::from_ref(&old_sha), &old_leaf);
        assert_eq!(start.phase(), NodePhase::Start);
        assert_eq!(start.steps(), ["trust", "reissue", "untrust"]);
        let both = [old_sha.clone(), new_sha.clone()];
        assert_eq!(rollover.needs(&both, &old_leaf).phase(), NodePhase::Trusted);
        let reissued = rollover.needs(&both, &new_leaf);
        assert_eq!(reissued.phase(), NodePhase::Reissued);
        assert!(reissued.reissued());
        let done = rollover.needs(std::slice::from_ref(&new_sha), &new_leaf);
        assert_eq!(done.phase(), NodePhase::Done);
        assert!(done.steps().is_empty());
    }

    /// Two CAs with the same name: the issuer is told apart by signature.
    #[test]
    fn same_name_is_not_same_ca() {
        let (old_dir, new_dir) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (old, new) = (ca(old_dir.path()), ca(new_dir.path()));
        assert_eq!(old.summary.subject, new.summary.subject);
        let old_leaf = load_certs(&old_dir.path().join("server.pem")).expect("leaf")[0].clone();
        assert!(CaFacts::of(&old).signed(&old_leaf));
        assert!(!CaFacts::of(&new).signed(&old_leaf));
    }
}
