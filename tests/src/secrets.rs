//! Looking for private key material where it must never be: log lines,
//! `--check` output, `Debug` output. A key leaks in many spellings, so
//! [`KeyTraces`] holds pieces of it in each: the base64 of its PEM body (as
//! written, and re-wrapped), and its DER bytes as lowercase hex, uppercase
//! hex, and a Rust `Debug` byte list. A private key file also holds the public
//! key, which the certificate shows anyway: pieces found in the certificate,
//! in any of the same spellings, are not looked for.

use std::path::Path;

use rustls::pki_types::PrivateKeyDer;

/// How many characters (or bytes) a piece of key material must share with a
/// text to count as a leak: long enough never to match by chance.
const PIECE: usize = 24;

/// Pieces of one private key, in every spelling looked for.
#[derive(Debug, Clone)]
pub struct KeyTraces {
    file: String,
    pieces: Vec<String>,
}

impl KeyTraces {
    /// Reads the PEM key file at `path` and the certificate of its public key, `cert`.
    pub fn of(path: &Path, cert: &Path) -> KeyTraces {
        let pem = std::fs::read_to_string(path)
            .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
        let key = dice_proto::pem::load_key(path)
            .unwrap_or_else(|error| panic!("{} is a key: {error}", path.display()));
        let der = match &key {
            PrivateKeyDer::Pkcs1(key) => key.secret_pkcs1_der(),
            PrivateKeyDer::Sec1(key) => key.secret_sec1_der(),
            PrivateKeyDer::Pkcs8(key) => key.secret_pkcs8_der(),
            _ => panic!("{}: an unknown key form", path.display()),
        };
        let base64: Vec<&str> = pem
            .lines()
            .filter(|line| !line.starts_with("-----") && !line.trim().is_empty())
            .collect();
        // Every key of one type starts with the same structure (version,
        // algorithm, lengths: about 36 bytes, 48 base64 characters): skip it.
        let joined: String = base64.concat().chars().skip(48).collect();
        let mut pieces = Vec::new();
        // Whole lines as written (after the first), and windows of the joined
        // text (in case it was re-wrapped).
        pieces.extend(
            base64
                .iter()
                .skip(1)
                .filter(|line| line.len() >= PIECE)
                .map(|line| line.to_string()),
        );
        pieces.extend(windows(&joined, PIECE));
        let secret = &der[der.len().min(36)..];
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        pieces.extend(windows(&hex, 2 * PIECE));
        pieces.extend(windows(&hex.to_uppercase(), 2 * PIECE));
        let list = secret
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        pieces.extend(windows(&list, 3 * PIECE));
        let public = public_spellings(cert);
        pieces.retain(|piece| !public.contains(piece.as_str()));
        KeyTraces {
            file: path.display().to_string(),
            pieces,
        }
    }

    /// The first piece of the key found in `text`, if any.
    pub fn found_in(&self, text: &str) -> Option<&str> {
        self.pieces
            .iter()
            .find(|piece| text.contains(piece.as_str()))
            .map(String::as_str)
    }

    /// Panics, naming the key file and where, if `text` holds a piece of the key.
    pub fn assert_absent(&self, text: &str, place: &str) {
        if let Some(piece) = self.found_in(text) {
            panic!(
                "{place} holds material of the private key {}: {piece:?}",
                self.file
            );
        }
    }
}

/// A certificate file's PEM text, and its DER in each spelling [`KeyTraces`] looks for.
fn public_spellings(cert: &Path) -> String {
    let pem = std::fs::read_to_string(cert)
        .unwrap_or_else(|error| panic!("read {}: {error}", cert.display()));
    let mut text = pem.clone();
    text.push_str(&pem.lines().collect::<String>());
    for der in dice_proto::pem::load_certs(cert)
        .unwrap_or_else(|error| panic!("{} is a certificate: {error}", cert.display()))
    {
        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
        text.push_str(&format!(
            "\n{hex}\n{}\n{:?}\n",
            hex.to_uppercase(),
            der.as_ref()
        ));
    }
    text
}

/// Substrings of `text` of `len` characters, starting every `len / 3` characters.
fn windows(text: &str, len: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < len {
        return Vec::new();
    }
    (0..=chars.len() - len)
        .step_by((len / 3).max(1))
        .map(|start| chars[start..start + len].iter().collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_key_in_any_spelling_and_nothing_in_other_text() {
        let dir = crate::tempdir();
        let pki = crate::Pki::new(dir.path());
        let traces = KeyTraces::of(&pki.server().key, &pki.server().cert);
        let pem = std::fs::read_to_string(&pki.server().key).expect("read the key");
        assert!(traces.found_in(&pem).is_some());
        let key = dice_proto::pem::load_key(&pki.server().key).expect("load the key");
        let PrivateKeyDer::Pkcs8(pkcs8) = key else {
            panic!("the harness writes PKCS#8 keys")
        };
        let der = pkcs8.secret_pkcs8_der().to_vec();
        assert!(traces.found_in(&format!("{der:?}")).is_some());
        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
        assert!(traces.found_in(&format!("key={hex}")).is_some());
        let pem_of_another = std::fs::read_to_string(&pki.client().key).expect("read");
        assert!(traces.found_in(&pem_of_another).is_none());
        assert!(
            traces
                .found_in("INFO listening address=127.0.0.1:8443")
                .is_none()
        );
    }
}
