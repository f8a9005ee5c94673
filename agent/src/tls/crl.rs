//! Certificate revocation lists from `tls.crl` files: parsed, and checked to
//! be signed by a CA in `client_ca`.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::prelude::FromDer;

/// One certificate revocation list from a `tls.crl` file.
#[derive(Debug, Clone)]
pub struct ParsedCrl {
    /// The CRL's DER bytes, as rustls takes them.
    pub der: CertificateRevocationListDer<'static>,
    /// Its issuer's distinguished name, e.g. `CN=dice CA, O=dice`.
    pub issuer: String,
    /// When the next CRL is due (Unix seconds), if it says.
    pub next_update: Option<i64>,
}

/// Parses the CRLs in a file: PEM (one or more `X509 CRL` blocks) or DER.
/// Public so the fuzz targets (`fuzz/`) can feed it arbitrary bytes.
pub fn parse_crls(bytes: &[u8]) -> Result<Vec<ParsedCrl>, String> {
    let ders: Vec<CertificateRevocationListDer<'static>> =
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            CertificateRevocationListDer::pem_slice_iter(bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("not valid PEM: {e:?}"))?
        } else {
            vec![CertificateRevocationListDer::from(bytes.to_vec())]
        };
    if ders.is_empty() {
        return Err("no CRL found (expected '-----BEGIN X509 CRL-----' or a DER CRL)".to_owned());
    }
    ders.into_iter()
        .map(|der| {
            let (_, crl) =
                x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref())
                    .map_err(|e| format!("not a valid CRL: {e}"))?;
            let next_update = crl.next_update().map(|t| t.timestamp());
            let issuer = crl.issuer().to_string();
            Ok(ParsedCrl {
                der,
                issuer,
                next_update,
            })
        })
        .collect()
}

/// Checks that a CA in `client_ca` signed `crl`. `Ok(false)` when no CA there
/// has the CRL's issuer name (the CRL can revoke nothing); an error when one
/// does but did not sign it. rustls would fail every handshake of that CA's
/// clients with such a CRL ("invalid certificate revocation list: BadSignature").
pub fn check_crl_signer(
    crl: &ParsedCrl,
    client_ca: &[CertificateDer<'static>],
) -> Result<bool, String> {
    let (_, parsed) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(crl.der.as_ref())
            .map_err(|e| format!("not a valid CRL: {e}"))?;
    let issuer = parsed.issuer().as_raw();
    let mut named = false;
    for ca in client_ca {
        let Ok((_, ca)) = x509_parser::certificate::X509Certificate::from_der(ca.as_ref()) else {
            continue;
        };
        if ca.subject().as_raw() != issuer {
            continue;
        }
        named = true;
        if parsed.verify_signature(ca.public_key()).is_ok() {
            return Ok(true);
        }
    }
    if named {
        Err(format!(
            "CRL is not signed by the client CA \"{}\" it names: every client of that CA would be refused",
            crl.issuer
        ))
    } else {
        Ok(false)
    }
}
