//! The ACME account: its key lives in `[acme] account_key` (PKCS#8 PEM,
//! mode 0600), made and registered on the first start and looked up by that
//! key on every later one, so a restart never registers a new account.

use std::path::Path;

use base64::Engine as _;
use instant_acme::{Account, AccountCredentials, ExternalAccountKey, Key, NewAccount};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::client::Https;
use crate::config::{AcmeConfig, FileRef};

/// Mode of the account key file.
const KEY_MODE: u32 = 0o600;

/// The account of `config.account_key` at `config.directory`: looked up by
/// the key when the file exists, registered (with the external account
/// binding, if configured) and saved when it does not.
pub async fn open(config: &AcmeConfig, http: &Https) -> Result<Account, String> {
    let file = &config.account_key;
    match std::fs::read(&file.path) {
        Ok(pem) => {
            let key = parse_key(&file.path, &pem).map_err(|e| format!("{}: {e}", file.locate()))?;
            let key_der = PrivateKeyDer::Pkcs8(key);
            let signer = signing_key(&key_der, file)?;
            let found = Account::builder_with_http(Box::new(http.clone()))
                .from_key((signer, key_der.clone_key()), config.directory.clone())
                .await;
            let (account, _) = match found {
                Err(instant_acme::Error::Api(problem)) if is_account_missing(&problem) => {
                    // The CA forgot the account (a fresh CA database): register the key again.
                    let signer = signing_key(&key_der, file)?;
                    let registered = Account::builder_with_http(Box::new(http.clone()))
                        .create_from_key((signer, key_der), config.directory.clone())
                        .await
                        .map_err(|e| {
                            format!(
                                "{}: the ACME server has no account for this key and refused a new one: {e}",
                                file.locate()
                            )
                        })?;
                    tracing::info!(target: super::TARGET, account = registered.0.id(), key = %file.path.display(), "registered the account key again: the ACME server did not know it");
                    registered
                }
                found => found.map_err(|e| {
                    format!(
                        "{}: cannot find the account at {}: {e}",
                        file.locate(),
                        config.directory
                    )
                })?,
            };
            Ok(account)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => register(config, http).await,
        Err(error) => Err(format!("{}: cannot read: {error}", file.locate())),
    }
}

async fn register(config: &AcmeConfig, http: &Https) -> Result<Account, String> {
    let eab = match &config.eab {
        Some(eab) => {
            let key = read_mac_key(&eab.hmac_key_file).map_err(|e| {
                format!(
                    "{}: {e} (write the key exactly as the CA gave it)",
                    eab.hmac_key_file.locate()
                )
            })?;
            Some(ExternalAccountKey::new(eab.kid.clone(), &key))
        }
        None => None,
    };
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(Box::new(http.clone()))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(|e| {
            format!(
                "cannot register an ACME account at {}: {e}",
                config.directory
            )
        })?;
    save_key(&config.account_key.path, &credentials)
        .map_err(|e| format!("{}: {e}", config.account_key.locate()))?;
    tracing::info!(target: super::TARGET, account = account.id(), key = %config.account_key.path.display(), "registered an ACME account");
    Ok(account)
}

fn save_key(path: &Path, credentials: &AccountCredentials) -> Result<(), String> {
    let pem = rcgen::KeyPair::try_from(credentials.private_key())
        .map_err(|e| format!("cannot encode the account key: {e}"))?
        .serialize_pem();
    dice_proto::atomic::write(path, pem.as_bytes(), KEY_MODE)
        .map(|_| ())
        .map_err(|e| format!("cannot save the account key: {e}"))
}

fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivatePkcs8KeyDer<'static>, String> {
    match dice_proto::pem::parse_key(path, pem).map_err(|e| e.to_string())? {
        PrivateKeyDer::Pkcs8(key) => Ok(key),
        _ => Err("the account key is not PKCS#8 (\"BEGIN PRIVATE KEY\")".to_owned()),
    }
}

fn signing_key(key: &PrivateKeyDer<'static>, file: &FileRef) -> Result<Key, String> {
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        return Err(format!("{}: the account key is not PKCS#8", file.locate()));
    };
    Key::from_pkcs8_der(pkcs8.clone_key())
        .map_err(|e| format!("{}: not an ECDSA P-256 account key: {e}", file.locate()))
}

/// Whether the ACME server says the account does not exist.
pub fn is_account_missing(problem: &instant_acme::Problem) -> bool {
    problem.r#type.as_deref() == Some(ACCOUNT_DOES_NOT_EXIST)
}

/// The problem type of an unknown account (RFC 8555 section 6.7).
pub const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// The external account binding's MAC key from `file` (base64url, as CAs hand it out).
pub fn read_mac_key(file: &FileRef) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(&file.path).map_err(|e| format!("cannot read: {e}"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .map_err(|e| format!("not a base64url MAC key: {e}"))
}

/// Checks that `pem`, read from `file`, is a usable account key.
pub fn check_key(file: &FileRef, pem: &[u8]) -> Result<(), String> {
    let key = parse_key(&file.path, pem)?;
    signing_key(&PrivateKeyDer::Pkcs8(key), file).map(|_| ())
}
