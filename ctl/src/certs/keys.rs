//! Private keys: the key types dicectl makes, loading keys in the forms
//! openssl, cfssl and rcgen write, and telling which key a certificate holds.
//!
//! rcgen with the ring backend signs with PKCS#8 keys only and cannot make
//! RSA keys, so PKCS#1 (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`) keys
//! are rewrapped as PKCS#8 here, and RSA keys are made with the `rsa` crate.
//! Keys are always written as PKCS#8 (`PRIVATE KEY`).

use std::fmt;

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

/// A key algorithm dicectl can make keys for and sign with.
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

/// `rsaEncryption` (1.2.840.113549.1.1.1), DER-encoded.
const OID_RSA_ENCRYPTION_DER: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// `id-ecPublicKey` (1.2.840.10045.2.1), DER-encoded.
const OID_EC_PUBLIC_KEY_DER: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
/// `[0]` EXPLICIT, the parameters of a SEC1 `ECPrivateKey`.
const TAG_EC_PARAMETERS: u8 = 0xa0;

/// Rewraps a PKCS#1 or SEC1 key as PKCS#8 (RFC 5208 `PrivateKeyInfo`); PKCS#8 passes through.
pub fn to_pkcs8(key: &PrivateKeyDer<'_>) -> Result<Vec<u8>, String> {
    let algorithm = match key {
        PrivateKeyDer::Pkcs8(pkcs8) => return Ok(pkcs8.secret_pkcs8_der().to_vec()),
        PrivateKeyDer::Pkcs1(_) => {
            let mut algorithm = OID_RSA_ENCRYPTION_DER.to_vec();
            algorithm.extend_from_slice(&[TAG_NULL, 0x00]);
            algorithm
        }
        PrivateKeyDer::Sec1(ec) => {
            let curve = sec1_curve(ec.secret_sec1_der()).ok_or(
                "EC key without a named curve: write it with its parameters (openssl ec -param_enc named_curve)",
            )?;
            let mut algorithm = OID_EC_PUBLIC_KEY_DER.to_vec();
            algorithm.extend_from_slice(curve);
            algorithm
        }
        _ => return Err("unsupported private key form".to_owned()),
    };
    let inner = key.secret_der();
    let mut body = vec![TAG_INTEGER, 0x01, 0x00];
    body.extend(tlv(TAG_SEQUENCE, &algorithm));
    body.extend(tlv(TAG_OCTET_STRING, inner));
    Ok(tlv(TAG_SEQUENCE, &body))
}

/// The named-curve OID (as a whole TLV) of a SEC1 `ECPrivateKey`:
/// `SEQUENCE { INTEGER 1, OCTET STRING, [0] OID, [1] BIT STRING }`.
fn sec1_curve(der: &[u8]) -> Option<&[u8]> {
    let (tag, mut fields, _) = read_tlv(der)?;
    if tag != TAG_SEQUENCE {
        return None;
    }
    while !fields.is_empty() {
        let (tag, value, rest) = read_tlv(fields)?;
        if tag == TAG_EC_PARAMETERS {
            let (inner_tag, _, _) = read_tlv(value)?;
            return (inner_tag == TAG_OID).then_some(value);
        }
        fields = rest;
    }
    None
}

/// Reads one DER TLV: (tag, value, the bytes after it). Single-byte tags only.
fn read_tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Encodes one DER TLV.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let len = value.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;

    #[test]
    fn der_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 1000, 70_000] {
            let value = vec![7u8; len];
            let encoded = tlv(TAG_OCTET_STRING, &value);
            let (tag, read, rest) = read_tlv(&encoded).expect("parses");
            assert_eq!((tag, read.len(), rest.len()), (TAG_OCTET_STRING, len, 0));
        }
        assert_eq!(read_tlv(&[0x30, 0x05, 0x01]), None);
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
