//! The rustls crypto provider. Only ring is compiled in; naming it explicitly
//! keeps rustls from looking for a process-wide default.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// Returns the ring crypto provider both binaries build their TLS configs with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
