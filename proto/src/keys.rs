//! Private keys: the key types dice fleet makes (dicectl for its CA
//! directories, the agent for certificate rotation), loading keys in the forms
//! openssl, cfssl and rcgen write, and telling which key a certificate holds.
//!
//! rcgen with the ring backend signs with PKCS#8 keys only and cannot make
//! RSA keys, so PKCS#1 (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`) keys
//! are rewrapped as PKCS#8 here (with the `der`, `pkcs1` and `pkcs8` crates),
//! and RSA keys are made with the `rsa` crate.
//! Keys are always written as PKCS#8 (`PRIVATE KEY`).

use std::fmt;

use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use pkcs8::{AlgorithmIdentifierRef, PrivateKeyInfo};
use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The key types `--key-type` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default)
    #[default]
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384
    #[value(name = "ecdsa-p384")]
    EcdsaP384,
    /// Ed25519
    #[value(name = "ed25519")]
    Ed25519,
    /// RSA, 2048 bits, signing with SHA-256
    #[value(name = "rsa2048")]
    Rsa2048,
    /// RSA, 4096 bits, signing with SHA-256
    #[value(name = "rsa4096")]
    Rsa4096,
}

/// A key algorithm dice fleet can make keys for and sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA with a modulus of this many bits.
    Rsa(usize),
}

impl KeyType {
    /// The name `--key-type` and the admin API give it, e.g. `ecdsa-p256`.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256 => "ecdsa-p256",
            Self::EcdsaP384 => "ecdsa-p384",
            Self::Ed25519 => "ed25519",
            Self::Rsa2048 => "rsa2048",
            Self::Rsa4096 => "rsa4096",
        }
    }

    /// The key type named `name` (as [`KeyType::name`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
            .find(|key_type| key_type.name() == name)
    }

    /// Every name, for error messages: `ecdsa-p256, ecdsa-p384, ...`.
    pub fn names() -> String {
        <Self as clap::ValueEnum>::value_variants()
            .iter()
            .map(|key_type| key_type.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl From<KeyType> for KeyAlgorithm {
    fn from(key_type: KeyType) -> Self {
        match key_type {
            KeyType::EcdsaP256 => Self::EcdsaP256,
            KeyType::EcdsaP384 => Self::EcdsaP384,
            KeyType::Ed25519 => Self::Ed25519,
            KeyType::Rsa2048 => Self::Rsa(2048),
            KeyType::Rsa4096 => Self::Rsa(4096),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    /// `ECDSA P-256`, `ECDSA P-384`, `Ed25519`, `RSA 2048`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ECDSA P-256"),
            Self::EcdsaP384 => f.write_str("ECDSA P-384"),
            Self::Ed25519 => f.write_str("Ed25519"),
            Self::Rsa(bits) => write!(f, "RSA {bits}"),
        }
    }
}

/// RSA sizes ring signs with: 2048 to 8192 bits.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

impl KeyAlgorithm {
    /// The algorithm of a certificate's public key; `Err` describes one
    /// dicectl cannot make keys for (e.g. `ECDSA P-521`, `RSA 1024`).
    pub fn of_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, String> {
        let oid = &spki.algorithm.algorithm;
        if *oid == OID_SIG_ED25519 {
            return Ok(Self::Ed25519);
        }
        if *oid == OID_PKCS1_RSAENCRYPTION {
            let bits = match spki.parsed() {
                Ok(PublicKey::RSA(rsa)) => modulus_bits(rsa.modulus),
                _ => 0,
            };
            return if RSA_BITS.contains(&bits) {
                Ok(Self::Rsa(bits))
            } else {
                Err(format!("RSA {bits}"))
            };
        }
        if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            return match curve {
                Some(c) if c == OID_EC_P256 => Ok(Self::EcdsaP256),
                Some(c) if c == OID_NIST_EC_P384 => Ok(Self::EcdsaP384),
                Some(c) if c == OID_NIST_EC_P521 => Err("ECDSA P-521".to_owned()),
                Some(c) => Err(format!("EC curve {c}")),
                None => Err("EC (unnamed curve)".to_owned()),
            };
        }
        Err(format!("unknown algorithm {oid}"))
    }

    /// The [`KeyType`] that makes keys of this algorithm, if there is one
    /// (RSA sizes other than 2048 and 4096 have none).
    pub fn key_type(self) -> Option<KeyType> {
        match self {
            Self::EcdsaP256 => Some(KeyType::EcdsaP256),
            Self::EcdsaP384 => Some(KeyType::EcdsaP384),
            Self::Ed25519 => Some(KeyType::Ed25519),
            Self::Rsa(2048) => Some(KeyType::Rsa2048),
            Self::Rsa(4096) => Some(KeyType::Rsa4096),
            Self::Rsa(_) => None,
        }
    }

    /// Whether this is RSA (whose leaves also get the keyEncipherment usage).
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa(_))
    }

    /// Generates a new key.
    pub fn generate(self) -> Result<KeyPair, String> {
        let fixed = match self {
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
            Self::Rsa(bits) => return generate_rsa(bits),
        };
        KeyPair::generate_for(fixed)
            .map_err(|error| format!("cannot generate a {self} key: {error}"))
    }
}

/// How a certificate's public key reads: `ECDSA P-256`, `RSA 3072`, or what it is instead.
pub fn describe_spki(spki: &SubjectPublicKeyInfo<'_>) -> String {
    KeyAlgorithm::of_spki(spki).map_or_else(|other| other, |alg| alg.to_string())
}

fn modulus_bits(modulus: &[u8]) -> usize {
    let digits: &[u8] = match modulus.iter().position(|&b| b != 0) {
        Some(first) => &modulus[first..],
        None => &[],
    };
    match digits.first() {
        Some(&top) => digits.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

fn generate_rsa(bits: usize) -> Result<KeyPair, String> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .map_err(|error| format!("cannot generate an RSA {bits} key: {error}"))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|error| format!("cannot encode the RSA {bits} key: {error}"))?;
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der.as_bytes()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .map_err(|error| format!("cannot use the RSA {bits} key: {error}"))
}

/// A private key in any form dice fleet reads, as a key rcgen can sign with.
pub fn key_pair(key: &PrivateKeyDer<'_>) -> Result<KeyPair, String> {
    let pkcs8 = to_pkcs8(key)?;
    KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8.as_slice())).map_err(|error| {
        format!(
            "unsupported private key: {error} (dicectl signs with ECDSA P-256 or P-384, Ed25519, or RSA 2048 to 8192 bits)"
        )
    })
}

/// Whether `key` is the private half of the public key in `spki`.
pub fn matches(key: &KeyPair, spki: &SubjectPublicKeyInfo<'_>) -> bool {
    key.der_bytes() == spki.subject_public_key.data.as_ref()
}

/// `id-ecPublicKey` (1.2.840.10045.2.1), the PKCS#8 algorithm of every EC key.
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// `[0]` EXPLICIT, the parameters (the named curve) of a SEC1 `ECPrivateKey`.
const TAG_EC_PARAMETERS: Tag = Tag::ContextSpecific {
    constructed: true,
    number: TagNumber::N0,
};

/// Rewraps a PKCS#1 or SEC1 key as PKCS#8 (RFC 5208 `PrivateKeyInfo`); PKCS#8 passes through.
pub fn to_pkcs8(key: &PrivateKeyDer<'_>) -> Result<Vec<u8>, String> {
    let curve;
    let algorithm = match key {
        PrivateKeyDer::Pkcs8(pkcs8) => return Ok(pkcs8.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Pkcs1(_) => pkcs1::ALGORITHM_ID,
        PrivateKeyDer::Sec1(ec) => {
            curve = sec1_curve(ec.secret_sec1_der()).ok_or(
                "EC key without a named curve: write it with its parameters (openssl ec -param_enc named_curve)",
            )?;
            AlgorithmIdentifierRef {
                oid: OID_EC_PUBLIC_KEY,
                parameters: Some(AnyRef::from(&curve)),
            }
        }
        _ => return Err("unsupported private key form".to_owned()),
    };
    PrivateKeyInfo::new(algorithm, key.secret_der())
        .to_der()
        .map_err(|error| format!("cannot rewrap the key as PKCS#8: {error}"))
}

/// The named curve of a SEC1 `ECPrivateKey`:
/// `SEQUENCE { INTEGER 1, OCTET STRING, [0] OID, [1] BIT STRING }`.
fn sec1_curve(der: &[u8]) -> Option<ObjectIdentifier> {
    let mut reader = SliceReader::new(der).ok()?;
    let parameters = reader
        .sequence(|fields| {
            let mut parameters = None;
            while !fields.is_finished() {
                let field = AnyRef::decode(fields)?;
                if field.tag() == TAG_EC_PARAMETERS && parameters.is_none() {
                    parameters = Some(field.value());
                }
            }
            Ok(parameters)
        })
        .ok()??;
    ObjectIdentifier::from_der(parameters).ok()
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;

    /// Bytes from hex, for the expected encodings below.
    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// PKCS#1 and SEC1 keys rewrap into the same PKCS#8 bytes, short and long
    /// lengths alike, as the hand-written DER encoder this replaced wrote.
    #[test]
    fn pkcs1_and_sec1_keys_rewrap_as_before() {
        // A PKCS#1 body is wrapped as it is, never parsed.
        let small = hex("3003020100");
        let pkcs1 = PrivateKeyDer::Pkcs1(small.clone().into());
        assert_eq!(
            to_pkcs8(&pkcs1),
            Ok(hex(
                "3019020100300d06092a864886f70d010101050004053003020100"
            ))
        );
        let large = [hex("30820128"), vec![7; 296]].concat();
        let pkcs1 = PrivateKeyDer::Pkcs1(large.clone().into());
        let prefix = hex("30820142020100300d06092a864886f70d01010105000482012c");
        assert_eq!(to_pkcs8(&pkcs1), Ok([prefix, large].concat()));

        // An openssl P-256 key (`openssl ecparam -genkey -noout`): the curve
        // moves into the algorithm, the SEC1 key stays whole.
        let sec1 = hex(concat!(
            "30770201010420e7b91f75c840c1900634699202e469a6623fd3b872076226554f59a5",
            "7349a223a00a06082a8648ce3d030107a14403420004145400aa6108e6c99e3bb6d2d0",
            "8566b6e8f8230565a12b3bec2f9c288adb8a84f7c2ceafa136a12d58a51ff9fbc184b6",
            "1b3a68abd19438f5205d0defde5941b4",
        ));
        let key = PrivateKeyDer::Sec1(sec1.clone().into());
        let prefix = hex("308193020100301306072a8648ce3d020106082a8648ce3d0301070479");
        assert_eq!(to_pkcs8(&key), Ok([prefix, sec1].concat()));
        key_pair(&key).expect("ring signs with the rewrapped key");

        // Without the [0] parameters there is no curve to name.
        let unnamed = PrivateKeyDer::Sec1(hex("300602010104010a").into());
        let error = to_pkcs8(&unnamed).expect_err("no curve");
        assert!(error.contains("without a named curve"), "{error}");
    }

    #[test]
    fn key_type_names_match_the_flag_values() {
        for key_type in <KeyType as clap::ValueEnum>::value_variants() {
            let flag = clap::ValueEnum::to_possible_value(key_type).expect("value");
            assert_eq!(flag.get_name(), key_type.name());
            assert_eq!(KeyType::from_name(key_type.name()), Some(*key_type));
            assert_eq!(KeyAlgorithm::from(*key_type).key_type(), Some(*key_type));
        }
        assert_eq!(KeyType::from_name("rsa1024"), None);
    }

    #[test]
    fn modulus_bits_ignore_the_sign_byte() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x7f, 0x00]), 15);
        assert_eq!(modulus_bits(&[]), 0);
    }

    /// Every type makes a key that signs a certificate whose public key reads as that type.
    #[test]
    fn every_key_type_generates_and_is_recognized() {
        for key_type in [
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Ed25519,
            KeyType::Rsa2048,
        ] {
            let algorithm = KeyAlgorithm::from(key_type);
            let key = algorithm.generate().expect("generate");
            let cert = rcgen::CertificateParams::new(vec!["k.example".to_owned()])
                .expect("params")
                .self_signed(&key)
                .expect("self-sign");
            let (_, x509) = X509Certificate::from_der(cert.der()).expect("parse");
            assert_eq!(KeyAlgorithm::of_spki(x509.public_key()), Ok(algorithm));
            assert!(matches(&key, x509.public_key()), "{algorithm}");

            // The PEM the key is written as loads back as the same key.
            let pem = key.serialize_pem();
            let reloaded = key_pair(&PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("pem"))
                .expect("reload");
            assert!(matches(&reloaded, x509.public_key()), "{algorithm}");

            let other = algorithm.generate().expect("generate");
            assert!(!matches(&other, x509.public_key()), "{algorithm}");
        }
    }
}
