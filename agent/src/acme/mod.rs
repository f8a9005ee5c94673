//! `[acme]`: the agent as an ACME client (RFC 8555) of the fleet's CA. It
//! obtains the certificate of `[tls]` before serving when the files are
//! missing, then renews it once `renew_before` of its lifetime is left, for as
//! long as it runs. A fresh key is made on the node for every certificate;
//! only its CSR is sent.
//!
//! An issued pair is checked, written atomically to `tls.cert`/`tls.key` and
//! swapped into every profile serving those files under their file lock, as
//! the admin API installs one: the reloader then finds the files unchanged.
//! While the ACME server is down or refuses, the current certificate keeps
//! serving and attempts back off exponentially (capped); each failure is
//! logged at warn, at error once the certificate is within
//! `tls.expiry_warning` of its end. The state shows in the info API and the
//! metrics.
//!
//! Modules: `client` (HTTPS to the ACME server), `accept` (the accept loop
//! of the validation servers), `account` (the account key
//! file), `issue` (one order), `challenges` (what is pending; the tls-alpn-01
//! certificate resolver), `http01` (the http-01 responder), `alpn` (the
//! tls-alpn-01 handshakes on the named listener), `schedule` (when to renew),
//! `status` (what the info API shows).

mod accept;
mod account;
mod alpn;
mod challenges;
mod client;
mod http01;
mod issue;
mod schedule;
mod status;

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use dice_proto::cert::rfc3339;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{AcmeConfig, Challenge, Config, Mode, TlsFiles};
use crate::tls::{TlsBytes, TlsMaterial, TlsProfile};
use client::Https;
use issue::Issued;

pub(crate) use alpn::{accept as accept_tls, challenges_for as tls_alpn_challenges};
pub(crate) use challenges::Challenges;
pub(crate) use status::snapshot as status;

/// The target of the ACME client's events.
const TARGET: &str = "dice_agent::acme";

/// The longest the first certificate may take (account, order, validation,
/// issuance) before the agent gives up and exits 1.
pub const FIRST_ISSUANCE_TIMEOUT: Duration = Duration::from_secs(90);

/// Mode of the key file written.
const KEY_MODE: u32 = 0o600;
/// Mode of the certificate file written.
const CERT_MODE: u32 = 0o644;

/// The ACME client, ready before the listeners serve.
pub(crate) struct Acme {
    config: AcmeConfig,
    http: Https,
    challenges: Arc<Challenges>,
    account: Option<instant_acme::Account>,
    /// The http-01 responder's socket, bound at start.
    http01: Option<TcpListener>,
}

impl Acme {
    /// Binds the http-01 responder and, when `tls.cert` or `tls.key` is
    /// missing or unusable, obtains the first certificate (under
    /// [`FIRST_ISSUANCE_TIMEOUT`]). Errors carry the ACME server's own words.
    pub async fn start(config: &Config, acme: &AcmeConfig) -> anyhow::Result<Self> {
        let http = Https::new(acme).map_err(|e| anyhow!("acme: {e}"))?;
        let challenges = Arc::new(Challenges::default());
        status::init(acme);
        let http01 = match &acme.challenge {
            Challenge::Http01 { address } => Some(TcpListener::bind(address).await.map_err(|e| {
                anyhow!(
                    "acme.http_address: cannot bind {address}: {e} (free the port or change http_address in {})",
                    config.file.display()
                )
            })?),
            Challenge::TlsAlpn01 { listener, .. } => {
                alpn::register(listener, challenges.clone());
                None
            }
        };
        let mut this = Self {
            config: acme.clone(),
            http,
            challenges,
            account: None,
            http01,
        };
        if let Some(reason) = needs_first_certificate(config, acme) {
            info!(target: TARGET, directory = %acme.directory, identifiers = %identifiers(acme), challenge = acme.challenge.as_str(), %reason, "obtaining the first certificate from the ACME server");
            let issued = tokio::time::timeout(FIRST_ISSUANCE_TIMEOUT, this.first())
                .await
                .map_err(|_| {
                    anyhow!(
                        "acme: no certificate from {} within {FIRST_ISSUANCE_TIMEOUT:?}",
                        acme.directory
                    )
                })?
                .map_err(|e| {
                    status::failed(&e, 1, crate::unix_now());
                    anyhow!(
                        "acme: cannot obtain the first certificate from {}: {e}",
                        acme.directory
                    )
                })?;
            write_pair(acme, &issued).map_err(|e| anyhow!("acme: {e}"))?;
            status::succeeded(crate::unix_now());
            count("ok");
            info!(target: TARGET, cert = %acme.cert.path.display(), "first certificate obtained");
        }
        Ok(this)
    }

    /// The first certificate: with the tls-alpn-01 listener not yet serving,
    /// its address answers validation handshakes alone meanwhile.
    async fn first(&mut self) -> Result<Issued, String> {
        let stop = CancellationToken::new();
        let responder = match &self.config.challenge {
            Challenge::TlsAlpn01 { address, listener } => {
                let socket = TcpListener::bind(address).await.map_err(|e| {
                    format!("listener {listener}: cannot bind {address} to answer tls-alpn-01: {e}")
                })?;
                Some(tokio::spawn(alpn::serve_alone(
                    socket,
                    self.challenges.clone(),
                    stop.clone(),
                )))
            }
            Challenge::Http01 { .. } => None,
        };
        let http01 = self.spawn_http01(&stop);
        let result = self.attempt().await;
        stop.cancel();
        if let Some(task) = responder {
            let _ = task.await;
        }
        if let Some(task) = http01 {
            // Hands the socket back for the renewals.
            if let Ok(Some(socket)) = task.await {
                self.http01 = Some(socket);
            }
        }
        result
    }

    fn spawn_http01(
        &mut self,
        stop: &CancellationToken,
    ) -> Option<tokio::task::JoinHandle<Option<TcpListener>>> {
        let socket = self.http01.take()?;
        let challenges = self.challenges.clone();
        let stop = stop.clone();
        Some(tokio::spawn(async move {
            http01::serve(&socket, challenges, stop).await;
            Some(socket)
        }))
    }

    /// One attempt: the account (opened once), then an order; once more
    /// at once with the account looked up again if the CA no longer knows it.
    async fn attempt(&mut self) -> Result<Issued, String> {
        let cached = self.account.is_some();
        match self.attempt_once().await {
            Err(error) if cached && self.account.is_none() => {
                info!(target: TARGET, %error, "the ACME server no longer knows the account: looking it up again");
                self.attempt_once().await
            }
            result => result,
        }
    }

    async fn attempt_once(&mut self) -> Result<Issued, String> {
        let account = match &self.account {
            Some(account) => account.clone(),
            None => {
                let account = account::open(&self.config, &self.http).await?;
                status::account(account.id());
                self.account = Some(account.clone());
                account
            }
        };
        let issued = issue::issue(&self.config, &account, &self.challenges).await;
        if issued
            .as_ref()
            .is_err_and(|e| e.contains(account::ACCOUNT_DOES_NOT_EXIST))
        {
            // Looked up (or registered) again on the next attempt.
            self.account = None;
        }
        issued
    }

    /// Renews the certificate of `profiles` (every profile serving
    /// `tls.cert`) until `stop`.
    pub async fn run(mut self, profiles: Vec<Arc<TlsProfile>>, stop: CancellationToken) {
        let Some(first) = profiles.first().cloned() else {
            warn!(target: TARGET, "no mtls listener serves tls.cert: nothing to renew");
            return;
        };
        let http01 = self.spawn_http01(&stop);
        let expiry_warning = first.files.expiry_warning;
        let mut installs = first.subscribe();
        let mut failures: u32 = 0;
        loop {
            let material = first.material();
            let leaf = &material.leaf;
            let now = crate::unix_now();
            let due = if failures == 0 {
                schedule::renew_at(
                    leaf.not_before,
                    leaf.not_after,
                    self.config.renew_before,
                    rand::random::<f64>(),
                )
            } else {
                now + schedule::backoff(failures).as_secs() as i64
            };
            status::next_attempt(due);
            crate::metrics::metrics().acme_next_renewal.set(due);
            info!(target: TARGET, serial = %leaf.serial, not_after = %rfc3339(leaf.not_after), next_attempt = %rfc3339(due), "next certificate request scheduled");
            let wait = Duration::from_secs(u64::try_from(due - now).unwrap_or(0));
            tokio::select! {
                () = stop.cancelled() => break,
                // A certificate from elsewhere (a file reload): schedule from it.
                changed = installs.changed(), if failures == 0 => {
                    if changed.is_err() { break; }
                    continue;
                }
                () = tokio::time::sleep(wait) => {}
            }
            let attempt = tokio::select! {
                () = stop.cancelled() => break,
                attempt = self.attempt() => attempt,
            };
            let now = crate::unix_now();
            let installed =
                attempt.and_then(|issued| install(&self.config, &profiles, &issued, now));
            match installed {
                Ok(serial) => {
                    failures = 0;
                    status::succeeded(now);
                    count("ok");
                    info!(target: TARGET, old_serial = %material.leaf.serial, new_serial = %serial, "certificate renewed from the ACME server");
                    // Our own install: no need to wake on it.
                    installs.borrow_and_update();
                }
                Err(message) => {
                    failures = failures.saturating_add(1);
                    status::failed(&message, failures, now);
                    count("failed");
                    let left = first.material().leaf.not_after - now;
                    let retry = schedule::backoff(failures);
                    let urgent = expiry_warning.is_some_and(|w| left <= w.as_secs() as i64);
                    if urgent {
                        error!(target: TARGET, error = %message, failures, retry_in = ?retry, not_after = %rfc3339(first.material().leaf.not_after), "cannot renew the certificate from the ACME server, and it expires soon: check the ACME server");
                    } else {
                        warn!(target: TARGET, error = %message, failures, retry_in = ?retry, "cannot renew the certificate from the ACME server; still serving the current one");
                    }
                }
            }
        }
        if let Some(task) = http01 {
            let _ = task.await;
        }
    }
}

/// Why the first certificate must be obtained before serving, or `None` when
/// `tls.cert` and `tls.key` load and are valid now.
fn needs_first_certificate(config: &Config, acme: &AcmeConfig) -> Option<String> {
    let files = acme_files(config, acme)?;
    match TlsMaterial::load(&files, crate::unix_now()) {
        Ok(_) => None,
        Err(error) if error.file == acme.cert || error.file == acme.key => Some(error.message),
        // Another file (the client CA) is at fault: loading the profiles says so.
        Err(_) => None,
    }
}

/// The files of the first mTLS listener serving `tls.cert`.
fn acme_files(config: &Config, acme: &AcmeConfig) -> Option<TlsFiles> {
    config
        .listeners
        .iter()
        .find_map(|listener| match &listener.mode {
            Mode::Mtls(files) if files.cert == acme.cert => Some(files.clone()),
            _ => None,
        })
}

/// Checks the files `[acme]` reads (for `--check`): the `ca` bundle, the
/// account key if it exists, the external account binding's MAC key.
pub fn check_files(acme: &AcmeConfig) -> Vec<crate::tls::TlsError> {
    let mut errors = Vec::new();
    let mut fail = |file: &crate::config::FileRef, message: String, hint: &'static str| {
        errors.push(crate::tls::TlsError {
            file: file.clone(),
            message,
            hint,
        });
    };
    if let Some(ca) = &acme.ca
        && let Err(error) = dice_proto::pem::load_certs(&ca.path)
    {
        fail(
            ca,
            error.to_string(),
            "point it at the PEM bundle of the CA that signs the ACME server's HTTPS certificate",
        );
    }
    if let Ok(pem) = std::fs::read(&acme.account_key.path)
        && let Err(error) = account::check_key(&acme.account_key, &pem)
    {
        fail(
            &acme.account_key,
            error,
            "remove it to register a new account, or restore the account's key",
        );
    }
    if let Some(eab) = &acme.eab
        && let Err(error) = account::read_mac_key(&eab.hmac_key_file)
    {
        fail(
            &eab.hmac_key_file,
            error,
            "write the MAC key exactly as the CA gave it, in base64url",
        );
    }
    errors
}

/// Whether `profile` serves the files `[acme]` writes.
pub(crate) fn manages(acme: &AcmeConfig, profile: &TlsProfile) -> bool {
    profile.files.cert == acme.cert && profile.files.key == acme.key
}

fn identifiers(acme: &AcmeConfig) -> String {
    acme.identifiers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn count(outcome: &'static str) {
    crate::metrics::metrics()
        .acme_renewals
        .get_or_create(&crate::metrics::OutcomeLabels { outcome })
        .inc();
}

/// Writes the first pair: nothing serves the files yet.
fn write_pair(acme: &AcmeConfig, issued: &Issued) -> Result<(), String> {
    dice_proto::atomic::write(&acme.key.path, issued.key_pem.as_bytes(), KEY_MODE)
        .map_err(|e| format!("{}: {e}", acme.key.locate()))?;
    dice_proto::atomic::write(&acme.cert.path, issued.chain_pem.as_bytes(), CERT_MODE)
        .map_err(|e| format!("{}: {e}", acme.cert.locate()))?;
    Ok(())
}

/// Checks `issued` against every profile serving the files, writes them and
/// swaps the new material in, all under the profiles' file locks. Returns the new serial.
fn install(
    acme: &AcmeConfig,
    profiles: &[Arc<TlsProfile>],
    issued: &Issued,
    now: i64,
) -> Result<String, String> {
    let _locks: Vec<_> = profiles.iter().map(|p| p.lock_files()).collect();
    let mut materials = Vec::with_capacity(profiles.len());
    for profile in profiles {
        let bytes = TlsBytes::read(&profile.files)
            .map_err(|e| e.to_string())?
            .with_cert_and_key(
                issued.chain_pem.clone().into_bytes(),
                issued.key_pem.clone().into_bytes(),
                KEY_MODE,
            );
        let material = TlsMaterial::from_bytes(&profile.files, bytes, now)
            .map_err(|e| format!("the issued certificate does not load: {e}"))?;
        materials.push(material);
    }
    write_pair(acme, issued)?;
    let mut serial = String::new();
    for (profile, material) in profiles.iter().zip(materials) {
        serial = material.leaf.serial.clone();
        material.log_warnings();
        profile.install(material);
    }
    Ok(serial)
}
