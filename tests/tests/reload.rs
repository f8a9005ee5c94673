//! Certificate hot reload against the real agent: files replaced the ways
//! operators and orchestrators replace them, bad files that must not be
//! served, CA bundle rotation (resumption included), a connection that lives
//! through rotations, and SIGHUP.
//!
//! Every test checks the old serial before the change and the new one after,
//! polling fresh handshakes under a deadline. Except in the one test of the
//! poll timer, `reload.poll_interval` is off, so only the file watcher (and
//! the agent's retry of failing files) can make the agent notice a change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dice_proto::api::RollDieRequest;
use dice_proto::api::dice_service_client::DiceServiceClient;
use dice_tests::client::{handshake, roll_once};
use dice_tests::reuse::{ResumingClient, counted_channel};
use dice_tests::rotation::{
    KubeVolume, LiveTls, RELOAD_TIMEOUT, Replace, assert_serial_holds, await_log, await_ok,
    await_reload, await_serial, ca_bundle, read, replace, served_serial, tls_secret,
};
use dice_tests::{
    Agent, AgentConfig, Client, HandshakeStage, LeafSpec, Pki, Signal, TlsClient, tempdir,
};
use rustls::{AlertDescription, HandshakeKind, SupportedProtocolVersion};
use tempfile::TempDir;

/// `[reload]` with the poll timer off: file events (and retries) only.
const EVENTS_ONLY: &str = "[reload]\npoll_interval = \"0s\"\n";

/// How long a change no watch can see must go unnoticed: six debounces.
const UNWATCHED_WINDOW: Duration = Duration::from_millis(300);

/// An agent serving files the test rewrites, with its info API client.
struct Rig {
    _dir: TempDir,
    pki: Pki,
    live: LiveTls,
    agent: Agent,
    info: Client,
    client: TlsClient,
}

impl Rig {
    /// An agent serving `live/{cert,key,ca}.pem` (the PKI's server certificate
    /// and CA), with `reload` as its `[reload]` table.
    async fn start(reload: &str) -> Rig {
        let dir = tempdir();
        let pki = Pki::new(&dir.path().join("pki"));
        let live = LiveTls::install(&dir.path().join("live"), pki.server(), &[pki.ca_cert()]);
        Self::start_serving(dir, pki, live, reload).await
    }

    /// An agent serving `live`, whose files the caller has laid out.
    async fn start_serving(dir: TempDir, pki: Pki, live: LiveTls, reload: &str) -> Rig {
        let config = AgentConfig::standard(&pki)
            .tls(live.tls_files())
            .extra(reload);
        let agent = Agent::spawn(&config);
        let info = Client::h2c(agent.addr("h2c"))
            .await
            .expect("connect to the h2c listener");
        let client = pki.client_tls();
        Rig {
            _dir: dir,
            pki,
            live,
            agent,
            info,
            client,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.agent.addr("mtls")
    }

    /// A fresh handshake shows `serial`.
    async fn assert_serving(&self, serial: &str, when: &str) {
        assert_eq!(
            served_serial(self.addr(), &self.client).await,
            serial,
            "{when}: fresh handshakes should show serial {serial}"
        );
    }

    /// The serial of the certificate the agent started with, after checking
    /// that a fresh handshake shows it (`when`).
    async fn original_serial(&self, when: &str) -> String {
        let old = self.pki.server().serial().to_owned();
        self.assert_serving(&old, when).await;
        old
    }

    /// The info API reports `serial` for the mTLS listener.
    async fn assert_info_serial(&self, serial: &str) {
        let info = self.info.info().await.expect("GetInfo");
        let cert = info
            .certificates
            .get("mtls")
            .expect("the info API lists the mtls listener");
        assert_eq!(cert.serial, serial, "the info API's certificate: {info:?}");
    }

    /// Waits until fresh handshakes show `next`, then checks the info API
    /// agrees and the last reload succeeded.
    async fn await_rotated_to(&self, next: &str) {
        await_serial(self.addr(), &self.client, next).await;
        self.assert_info_serial(next).await;
        let last = await_reload(&self.info, "a successful reload", |last| last.ok).await;
        assert!(last.error.is_empty(), "{last:?}");
        assert!(!last.time.is_empty(), "{last:?}");
    }

    /// Waits until the info API reports a failed reload whose error
    /// contains every one of `needles`, and returns the error.
    async fn await_rejected(&self, needles: &[&str]) -> String {
        let what = format!("a failed reload whose error mentions {needles:?}");
        let last = await_reload(&self.info, &what, |last| {
            !last.ok && needles.iter().all(|needle| last.error.contains(needle))
        })
        .await;
        last.error
    }

    /// Waits until the reload is rejected, in the info API and in a `WARN`
    /// line that both mention every one of `needles`; then checks that fresh
    /// handshakes (`when`) and the info API still show `old`. Returns the
    /// reload error.
    async fn assert_kept_after_rejection(&self, old: &str, needles: &[&str], when: &str) -> String {
        let error = self.await_rejected(needles).await;
        self.await_warned(needles).await;
        self.assert_serving(old, when).await;
        self.assert_info_serial(old).await;
        error
    }

    /// Waits until the log has a `WARN` line rejecting a reload that
    /// mentions every one of `needles`, and returns it.
    async fn await_warned(&self, needles: &[&str]) -> String {
        let what = format!("a WARN line rejecting the reload and mentioning {needles:?}");
        await_log(&self.agent, &what, |line| {
            line.contains("WARN")
                && line.contains("certificate reload rejected")
                && needles.iter().all(|needle| line.contains(needle))
        })
        .await
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

#[tokio::test]
async fn certificate_overwritten_in_place_is_served() {
    let rig = Rig::start(EVENTS_ONLY).await;
    let old = rig.original_serial("before the rotation").await;
    rig.assert_info_serial(&old).await;

    let next = rig.pki.issue(&LeafSpec::server("next"));
    rig.live.rotate(&next, Replace::InPlace);
    rig.await_rotated_to(next.serial()).await;
    roll_once(rig.addr(), &rig.client)
        .await
        .expect("roll after the rotation");
}

/// Ready means watching: a change made the moment the ready file appears is
/// not lost (with the poll timer off nothing else would pick it up).
#[tokio::test]
async fn change_made_right_after_ready_is_not_missed() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let live = LiveTls::install(&dir.path().join("live"), pki.server(), &[pki.ca_cert()]);
    let next = pki.issue(&LeafSpec::server("next"));
    let config = AgentConfig::standard(&pki)
        .tls(live.tls_files())
        .extra(EVENTS_ONLY);
    let agent = Agent::spawn(&config);
    live.rotate(&next, Replace::Rename);
    await_serial(agent.addr("mtls"), &pki.client_tls(), next.serial()).await;
}

#[tokio::test]
async fn certificate_renamed_over_the_old_file_is_served() {
    let rig = Rig::start(EVENTS_ONLY).await;
    rig.original_serial("before the rotation").await;

    let next = rig.pki.issue(&LeafSpec::server("next"));
    rig.live.rotate(&next, Replace::Rename);
    rig.await_rotated_to(next.serial()).await;

    // And again: the watch on the folder outlives the inode it first saw.
    let third = rig.pki.issue(&LeafSpec::server("third"));
    rig.live.rotate(&third, Replace::Rename);
    rig.await_rotated_to(third.serial()).await;
}

#[tokio::test]
async fn kubernetes_data_symlink_swap_is_served() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let ca = ca_bundle(&[pki.ca_cert()]);
    let mut volume = KubeVolume::new(&dir.path().join("secret"), &tls_secret(pki.server(), &ca));
    let live = volume.live_tls();
    let old = pki.server().serial().to_owned();
    let rig = Rig::start_serving(dir, pki, live, EVENTS_ONLY).await;
    rig.assert_serving(&old, "before the swap").await;

    // Two swaps: the second proves the agent still follows `..data` after
    // the folder it first resolved to was deleted.
    for name in ["second", "third"] {
        let next = rig.pki.issue(&LeafSpec::server(name));
        volume.swap(&tls_secret(&next, &ca));
        rig.await_rotated_to(next.serial()).await;
    }
}

#[tokio::test]
async fn new_key_before_its_certificate_keeps_serving_the_old_pair() {
    let rig = Rig::start("[reload]\npoll_interval = \"0s\"\nsettle_period = \"500ms\"\n").await;
    let old = rig.original_serial("before the rotation").await;

    let next = rig.pki.issue(&LeafSpec::server("next"));
    rig.live.write_key(&next, Replace::Rename);
    let key = path_str(&rig.live.key);
    let warning = rig.await_warned(&[key]).await;
    assert!(
        warning.contains("does not match the certificate"),
        "the warning should say why: {warning}"
    );
    let error = rig.await_rejected(&[key, "does not match"]).await;
    assert!(
        error.contains("tls.key"),
        "the error names the key: {error}"
    );

    // A mismatched pair would fail the client's signature check: these
    // handshakes succeeding with the old serial prove the old pair serves.
    for _ in 0..5 {
        rig.assert_serving(&old, "with only the key replaced").await;
    }
    roll_once(rig.addr(), &rig.client)
        .await
        .expect("roll with only the key replaced");
    rig.assert_info_serial(&old).await;

    // Past the settle period, the disagreement becomes an error an operator must act on.
    let escalated = await_log(
        &rig.agent,
        "an ERROR line after the settle period",
        |line| line.contains("ERROR") && line.contains("settle period") && line.contains(key),
    )
    .await;
    assert!(
        escalated.contains(&old),
        "names the serial still served: {escalated}"
    );
    rig.assert_serving(&old, "after the settle period").await;

    rig.live.write_cert(&next, Replace::Rename);
    rig.await_rotated_to(next.serial()).await;
}

#[tokio::test]
async fn corrupt_certificate_keeps_the_old_one_and_says_why() {
    let rig = Rig::start(EVENTS_ONLY).await;
    let old = rig.original_serial("before the change").await;

    // Half a certificate, as a copy that was cut short leaves it.
    let next = rig.pki.issue(&LeafSpec::server("next"));
    let pem = read(&next.cert);
    replace(&rig.live.cert, &pem[..pem.len() / 2], Replace::InPlace);
    let cert = path_str(&rig.live.cert);
    let error = rig
        .assert_kept_after_rejection(&old, &[cert], "with a corrupt certificate file")
        .await;
    assert!(
        error.contains("tls.cert"),
        "the error names the certificate: {error}"
    );

    // A whole pair then goes through.
    rig.live.rotate(&next, Replace::Rename);
    rig.await_rotated_to(next.serial()).await;
}

#[tokio::test]
async fn deleted_certificate_keeps_the_old_one_and_says_why() {
    let rig = Rig::start(EVENTS_ONLY).await;
    let old = rig.original_serial("before the change").await;

    let saved = read(&rig.live.cert);
    std::fs::remove_file(&rig.live.cert).expect("delete the certificate");
    let cert = path_str(&rig.live.cert);
    rig.assert_kept_after_rejection(
        &old,
        &[cert, "no such file"],
        "with the certificate deleted",
    )
    .await;

    // Put back as it was: nothing to swap, and the info API must stop
    // reporting a failure that is over.
    replace(&rig.live.cert, &saved, Replace::Rename);
    let last = await_reload(&rig.info, "the reload error cleared", |last| last.ok).await;
    assert!(last.error.is_empty(), "{last:?}");
    await_log(&rig.agent, "the files agree again", |line| {
        line.contains("agree with the served material again")
    })
    .await;
    rig.assert_serving(&old, "with the certificate restored")
        .await;
}

#[tokio::test]
async fn expired_certificate_is_rejected() {
    let rig = Rig::start(EVENTS_ONLY).await;
    let old = rig.original_serial("before the change").await;

    let expired = rig.pki.issue(&LeafSpec::server("expired").expired());
    rig.live.rotate(&expired, Replace::Rename);
    let cert = path_str(&rig.live.cert);
    let error = rig
        .assert_kept_after_rejection(
            &old,
            &[cert, "expired"],
            "with an expired certificate on disk",
        )
        .await;
    assert!(
        error.contains(expired.serial()),
        "names the serial: {error}"
    );
}

/// Whether a fresh handshake as `client` is refused by the server as signed
/// by a CA it does not trust (the `UnknownCA` alert; not, say, a timeout or a
/// connection that could not be made).
async fn refused(addr: SocketAddr, client: &TlsClient) -> Result<(), String> {
    match handshake(addr, client).await {
        Ok(shook) => Err(format!("accepted (serial {})", shook.server_cert.serial)),
        Err(error) if error.stage == HandshakeStage::Connect => {
            panic!("could not even connect: {error}")
        }
        Err(error) if error.alert == Some(AlertDescription::UnknownCA) => Ok(()),
        Err(error) => Err(format!("refused, but not as UnknownCA: {error}")),
    }
}

/// Whether a fresh handshake as `client` is accepted.
async fn accepted(addr: SocketAddr, client: &TlsClient) -> Result<(), String> {
    handshake(addr, client)
        .await
        .map(drop)
        .map_err(|error| error.to_string())
}

/// Rotates `client_ca` from the old CA to old+new to new, checking who gets
/// in at each step, and that a session resumed before the old CA was dropped
/// does not get its client back in afterwards.
async fn client_ca_rotation(version: &'static SupportedProtocolVersion) {
    let rig = Rig::start(EVENTS_ONLY).await;
    let addr = rig.addr();
    let new_pki = rig.pki.unrelated("new-ca");
    let old_ca = rig.pki.ca_cert().to_owned();
    let new_ca = new_pki.ca_cert().to_owned();
    // Both trust the (unchanged) server certificate's CA.
    let old_client = rig.pki.client_tls();
    let new_client = TlsClient::new(&old_ca).identity(new_pki.client());

    refused(addr, &new_client)
        .await
        .expect("a new-CA client before the rotation");
    accepted(addr, &old_client)
        .await
        .expect("an old-CA client before the rotation");

    rig.live
        .write_client_ca(&[old_ca.as_path(), new_ca.as_path()], Replace::Rename);
    await_ok(RELOAD_TIMEOUT, "a new-CA client accepted", async || {
        accepted(addr, &new_client).await
    })
    .await;
    accepted(addr, &old_client)
        .await
        .expect("an old-CA client with both CAs trusted");
    roll_once(addr, &new_client)
        .await
        .expect("a new-CA client rolls");
    roll_once(addr, &old_client)
        .await
        .expect("an old-CA client rolls");

    // One client config, one session store: the second connection resumes.
    let resuming = ResumingClient::new(&old_client, &[version]);
    let first = resuming.connect(addr).await;
    assert!(first.accepted(), "{first:?}");
    assert_eq!(first.kind, Some(HandshakeKind::Full), "{first:?}");
    let second = resuming.connect(addr).await;
    assert!(second.accepted(), "{second:?}");
    assert_eq!(
        second.kind,
        Some(HandshakeKind::Resumed),
        "the agent should let a client resume within one generation of material: {second:?}"
    );

    rig.live
        .write_client_ca(&[new_ca.as_path()], Replace::Rename);
    await_ok(RELOAD_TIMEOUT, "an old-CA client refused", async || {
        refused(addr, &old_client).await
    })
    .await;
    accepted(addr, &new_client)
        .await
        .expect("a new-CA client after the old CA was dropped");

    // The resuming client still holds tickets from before the drop. The new
    // material has a session cache of its own, so the agent cannot resume
    // them: a full handshake, which verifies the client certificate against
    // the new bundle, and refuses it.
    let after = resuming.connect(addr).await;
    assert!(
        !after.accepted(),
        "a client whose CA was dropped got back in on a session from before the drop: {after:?}"
    );
    assert_eq!(
        after.alert,
        Some(AlertDescription::UnknownCA),
        "a client whose CA was dropped should be refused as UnknownCA: {after:?}"
    );
    assert_ne!(after.kind, Some(HandshakeKind::Resumed), "{after:?}");
    let last = await_reload(&rig.info, "a successful reload", |last| last.ok).await;
    assert!(last.error.is_empty(), "{last:?}");
}

#[tokio::test]
async fn client_ca_rotation_over_tls13_refuses_dropped_ca_even_on_resumption() {
    client_ca_rotation(&rustls::version::TLS13).await;
}

#[tokio::test]
async fn client_ca_rotation_over_tls12_refuses_dropped_ca_even_on_resumption() {
    client_ca_rotation(&rustls::version::TLS12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_connection_keeps_rolling_across_rotations() {
    let rig = Rig::start(EVENTS_ONLY).await;
    let (channel, connections) = counted_channel(rig.addr(), &rig.client)
        .await
        .expect("open the long-lived channel");
    let stop = Arc::new(AtomicBool::new(false));
    let rolls = Arc::new(AtomicUsize::new(0));
    let roller = tokio::spawn({
        let (stop, rolls) = (stop.clone(), rolls.clone());
        let mut dice = DiceServiceClient::new(channel);
        async move {
            let (mut failed, mut first_errors) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match dice.roll_die(RollDieRequest {}).await {
                    Ok(_) => {
                        rolls.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(status) => {
                        failed += 1;
                        if first_errors.len() < 5 {
                            first_errors.push(status.to_string());
                        }
                    }
                }
            }
            (failed, first_errors)
        }
    });

    let mut served = vec![rig.pki.server().serial().to_owned()];
    for (index, how) in [
        Replace::Rename,
        Replace::InPlace,
        Replace::Rename,
        Replace::InPlace,
    ]
    .into_iter()
    .enumerate()
    {
        let next = rig
            .pki
            .issue(&LeafSpec::server(&format!("rotation-{index}")));
        let before = rolls.load(Ordering::SeqCst);
        rig.live.rotate(&next, how);
        rig.await_rotated_to(next.serial()).await;
        // The roller keeps going on the same connection after the swap.
        await_ok(RELOAD_TIMEOUT, "rolls after the rotation", async || {
            let now = rolls.load(Ordering::SeqCst);
            if now > before + 10 {
                Ok(())
            } else {
                Err(format!("{now} rolls"))
            }
        })
        .await;
        served.push(next.serial().to_owned());
    }
    stop.store(true, Ordering::SeqCst);
    let (failed, first_errors) = tokio::time::timeout(Duration::from_secs(10), roller)
        .await
        .expect("the roller stops")
        .expect("the roller does not panic");
    assert_eq!(
        failed, 0,
        "rolls failed on the long-lived connection, first: {first_errors:?}"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the channel reconnected: the connection did not survive the rotations ({served:?})"
    );
    assert!(rolls.load(Ordering::SeqCst) > 40);
}

#[tokio::test]
async fn sighup_rechecks_unchanged_files_and_records_it() {
    let rig = Rig::start(EVENTS_ONLY).await;
    let old = rig.pki.server().serial().to_owned();
    let before = rig
        .info
        .info()
        .await
        .expect("GetInfo")
        .last_reload
        .unwrap_or_default();
    assert!(
        before.time.is_empty(),
        "no reload has happened yet: {before:?}"
    );

    rig.agent.signal(Signal::HUP);
    await_log(&rig.agent, "the SIGHUP line", |line| {
        line.contains("SIGHUP")
    })
    .await;
    await_log(&rig.agent, "the unchanged line", |line| {
        line.contains("certificate material unchanged") && line.contains(&old)
    })
    .await;
    let last = await_reload(&rig.info, "a recorded re-check", |last| {
        !last.time.is_empty()
    })
    .await;
    assert!(last.ok && last.error.is_empty(), "{last:?}");
    rig.assert_serving(&old, "after SIGHUP with nothing changed")
        .await;
}

/// An agent whose files change where no watch can see: the configured files
/// are symlinks through a symlinked folder (`live/cert.pem ->
/// ../store/current/cert.pem`, `store/current -> gen1`). The agent watches
/// `live/` and the folder the files resolve into (`store/gen1/`), not
/// `store/`, so re-pointing `store/current` at `gen2` makes no event.
struct Unwatched {
    rig: Rig,
    store: PathBuf,
    old: String,
    next: dice_tests::Identity,
}

impl Unwatched {
    /// Lays out `gen1` (the PKI's server certificate) and `gen2` (a new one),
    /// starts the agent on `gen1` with `reload`, and checks the premise: the
    /// agent watches `store/gen1/` but not `store/`.
    async fn start(reload: &str) -> Unwatched {
        use std::os::unix::fs::symlink;

        let dir = tempdir();
        let pki = Pki::new(&dir.path().join("pki"));
        let store = dir.path().join("store");
        let next = pki.issue(&LeafSpec::server("next"));
        LiveTls::install(&store.join("gen1"), pki.server(), &[pki.ca_cert()]);
        LiveTls::install(&store.join("gen2"), &next, &[pki.ca_cert()]);
        symlink("gen1", store.join("current")).expect("link store/current");
        let live_dir = dir.path().join("live");
        std::fs::create_dir(&live_dir).expect("create live/");
        for name in ["cert.pem", "key.pem", "ca.pem"] {
            symlink(
                Path::new("../store/current").join(name),
                live_dir.join(name),
            )
            .expect("link a live file");
        }
        let live = LiveTls {
            cert: live_dir.join("cert.pem"),
            key: live_dir.join("key.pem"),
            client_ca: live_dir.join("ca.pem"),
        };
        let old = pki.server().serial().to_owned();
        let rig = Rig::start_serving(dir, pki, live, reload).await;

        let gen1 = std::fs::canonicalize(store.join("gen1")).expect("resolve gen1");
        await_log(&rig.agent, "a watch on store/gen1", |line| {
            line.contains("watching for certificate changes") && line.contains(path_str(&gen1))
        })
        .await;
        let logs = rig.agent.logs();
        let watched: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains("watching for certificate changes"))
            .filter_map(|line| line.split("dir=").nth(1))
            .map(|dir| dir.split_whitespace().next().unwrap_or_default())
            .collect();
        let store_real = std::fs::canonicalize(&store).expect("resolve store");
        assert!(
            !watched
                .iter()
                .any(|dir| Path::new(dir) == store || Path::new(dir) == store_real),
            "store/ is watched after all; these tests need a change no watch sees: {watched:?}"
        );
        rig.assert_serving(&old, "before the change").await;
        Unwatched {
            rig,
            store,
            old,
            next,
        }
    }

    /// Re-points `store/current` at `gen2` with one rename.
    fn change(&self) {
        use std::os::unix::fs::symlink;

        let staged = self.store.join("current.tmp");
        symlink("gen2", &staged).expect("link store/current.tmp");
        std::fs::rename(&staged, self.store.join("current")).expect("re-point store/current");
        assert_eq!(
            std::fs::canonicalize(&self.rig.live.cert).expect("resolve cert.pem"),
            std::fs::canonicalize(self.store.join("gen2").join("cert.pem")).expect("resolve")
        );
    }
}

/// With the poll timer off, only SIGHUP can make the agent notice an
/// unwatched change.
#[tokio::test]
async fn sighup_picks_up_a_change_no_watched_folder_sees() {
    let unwatched = Unwatched::start(EVENTS_ONLY).await;
    let rig = &unwatched.rig;
    unwatched.change();
    // Nothing may wake the agent now: not the change, and not its own reads
    // of the files (an open is an event in a watched folder too).
    assert_serial_holds(rig.addr(), &rig.client, &unwatched.old, UNWATCHED_WINDOW).await;

    rig.agent.signal(Signal::HUP);
    rig.await_rotated_to(unwatched.next.serial()).await;
    await_log(&rig.agent, "the SIGHUP line", |line| {
        line.contains("SIGHUP")
    })
    .await;
}

/// The poll timer backs up the watcher: it finds an unwatched change on its own.
#[tokio::test]
async fn poll_timer_picks_up_a_change_no_watched_folder_sees() {
    let unwatched = Unwatched::start("[reload]\npoll_interval = \"200ms\"\n").await;
    let rig = &unwatched.rig;
    unwatched.change();
    rig.await_rotated_to(unwatched.next.serial()).await;
    // A SIGHUP would be logged before the reload it caused.
    await_log(&rig.agent, "the reload line", |line| {
        line.contains("certificate reloaded")
    })
    .await;
    assert!(
        !rig.agent.logs().contains("SIGHUP"),
        "no SIGHUP was sent; the poll timer should have found the change"
    );
}

/// Appends to a file every few milliseconds until dropped.
struct BusyWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BusyWriter {
    fn start(path: PathBuf) -> BusyWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                use std::io::Write as _;
                let mut file = std::fs::File::create(&path).expect("create the busy file");
                while !stop.load(Ordering::SeqCst) {
                    let _ = writeln!(file, "busy");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        BusyWriter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BusyWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A folder that never goes quiet: another program appends to a file beside
/// the certificate more often than the agent's 50 ms debounce. The agent must
/// still pick up a rotation, and still stop on SIGTERM.
#[tokio::test]
async fn busy_folder_does_not_hold_off_reloads_or_shutdown() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let live = LiveTls::install(&dir.path().join("live"), pki.server(), &[pki.ca_cert()]);
    let config = AgentConfig::standard(&pki)
        .tls(live.tls_files())
        .grace_period("1s")
        .extra(EVENTS_ONLY);
    let mut agent = Agent::spawn(&config);
    let (addr, client) = (agent.addr("mtls"), pki.client_tls());
    assert_eq!(served_serial(addr, &client).await, pki.server().serial());

    let _busy = BusyWriter::start(dir.path().join("live").join("busy.log"));
    let next = pki.issue(&LeafSpec::server("next"));
    live.rotate(&next, Replace::Rename);
    await_serial(addr, &client, next.serial()).await;

    agent.signal(Signal::TERM);
    agent.assert_clean_exit(
        Duration::from_secs(5),
        "after SIGTERM, with a 1 s grace period",
    );
}
