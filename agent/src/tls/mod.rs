//! TLS for the mTLS listeners: the certificate material ([`TlsMaterial`],
//! read from the files and checked), revocation lists, the swappable
//! [`TlsProfile`] handshakes read, hot reload, expiry warnings, and the
//! identity a verified client certificate carries.

mod crl;
mod expiry;
mod identity;
mod material;
mod profile;
mod reload;

pub use crl::{ParsedCrl, check_crl_signer, parse_crls};
pub(crate) use expiry::run as watch_expiry;
pub(crate) use identity::ClientIdentity;
pub use material::{CaCert, TlsBytes, TlsError, TlsMaterial};
pub use profile::{TlsProfile, load_profiles};
pub(crate) use reload::Reloader;
