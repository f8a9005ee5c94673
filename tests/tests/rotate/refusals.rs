//! The admin API seen from the caller's side: every refusal says why, and
//! leaves the node's files byte for byte as they were and its served
//! certificate unchanged. The callers are the ones dicectl never is: a
//! client outside `[admin] allow`, a caller over h2c, a certificate that
//! does not fit the staged key, a bundle that would lock the caller out.

use std::path::{Path, PathBuf};
use std::process::Command;

use dice_proto::info::admin_service_client::AdminServiceClient;
use dice_proto::info::{
    InstallCertificateRequest, PrepareCertificateRequest, PrepareCertificateResponse,
    RollbackRequest, RollbackTarget, SetTrustRequest,
};
use dice_tests::admin::{AdminFleet, AdminNode, OPERATOR, admin_client, sign_csr};
use dice_tests::certs_cli::{CaDir, IssueSpec};
use dice_tests::metrics::scrape;
use dice_tests::{Agent, AgentConfig, Client, ListenerConfig, TlsFiles};
use tonic::Code;
use tonic::transport::Channel;

/// The bytes of a node's three files.
#[derive(Debug, PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Vec<u8>,
}

impl Files {
    fn of(node: &AdminNode) -> Files {
        let read = |path: PathBuf| std::fs::read(&path).expect("read a node file");
        Files {
            cert: read(node.cert()),
            key: read(node.key()),
            client_ca: read(node.client_ca()),
        }
    }
}

/// Asserts that `result` failed with `code` and a message containing `needle`.
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    needle: &str,
    what: &str,
) {
    match result {
        Ok(reply) => panic!("{what}: accepted, replying {reply:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {status:?}");
            assert!(
                status.message().contains(needle),
                "{what}: the message should say \"{needle}\": {}",
                status.message()
            );
        }
    }
}

async fn prepare(admin: &mut AdminServiceClient<Channel>) -> PrepareCertificateResponse {
    admin
        .prepare_certificate(PrepareCertificateRequest::default())
        .await
        .unwrap_or_else(|status| panic!("PrepareCertificate: {status:?}"))
        .into_inner()
}

fn install(chain_pem: String) -> InstallCertificateRequest {
    InstallCertificateRequest {
        listener: String::new(),
        chain_pem,
    }
}

#[tokio::test]
async fn install_refuses_a_certificate_that_does_not_fit_and_changes_nothing() {
    let fleet = AdminFleet::start(1);
    let node = &fleet.nodes[0];
    let tls = fleet.operator_tls(&fleet.ca.cert());
    let mut admin = admin_client(node.addr(), &tls).await;
    let served = fleet.served(0, &fleet.ca.cert()).await;

    let staged = prepare(&mut admin).await;
    assert!(!staged.reused, "{staged:?}");
    let again = prepare(&mut admin).await;
    assert!(again.reused, "the staged key is kept: {again:?}");
    assert_eq!(again.csr_pem, staged.csr_pem, "asked again, the same CSR");
    assert!(node.dir.join("server-key.pem.staged").exists());
    let before = Files::of(node);

    let other_key = IssueSpec::server("other").issue(&fleet.ca, &fleet.dir().join("other"));
    let stranger = CaDir::init(&fleet.dir().join("stranger-ca"));
    let now = time::OffsetDateTime::now_utc();
    let csr = &staged.csr_pem;
    let cases = [
        (
            "a certificate for another key",
            std::fs::read_to_string(&other_key.cert).expect("read"),
            "key",
        ),
        (
            "an expired certificate",
            sign_csr(csr, &fleet.ca, |p| {
                p.not_before = now - time::Duration::days(10);
                p.not_after = now - time::Duration::days(1);
            }),
            "expired",
        ),
        (
            "a certificate with fewer SANs",
            sign_csr(csr, &fleet.ca, |p| p.subject_alt_names.truncate(1)),
            "127.0.0.1",
        ),
        (
            "a certificate without serverAuth",
            sign_csr(csr, &fleet.ca, |p| {
                p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            }),
            "serverAuth",
        ),
        (
            "a certificate from an unknown CA",
            sign_csr(csr, &stranger, |_| {}),
            "client_ca",
        ),
    ];
    for (what, chain, needle) in cases {
        let result = admin.install_certificate(install(chain)).await;
        assert_refused(result, Code::InvalidArgument, needle, what);
        assert_eq!(Files::of(node), before, "{what}: the files changed");
        let now_served = fleet.served(0, &fleet.ca.cert()).await;
        assert_eq!(
            now_served.serial, served.serial,
            "{what}: the served certificate changed"
        );
    }
    let logs = node.agent().logs();
    assert!(
        logs.contains("dice_agent::admin"),
        "admin RPCs are logged under dice_agent::admin:\n{logs}"
    );
    let metrics = node.agent().metrics_addr().expect("a metrics address");
    let exposition = scrape(metrics).await.expect("scrape /metrics");
    let count = |action: &str, outcome: &str| {
        exposition
            .value(
                "dice_admin_requests_total",
                &[("action", action), ("outcome", outcome)],
            )
            .unwrap_or_else(|| panic!("no admin series {action}/{outcome}: {exposition:#?}"))
    };
    assert_eq!(count("prepare", "ok"), 2.0);
    assert_eq!(count("install", "refused"), 5.0);
    assert_eq!(count("install", "ok"), 0.0);

    // The good one is served, and Rollback puts the old pair back.
    let good = sign_csr(csr, &fleet.ca, |_| {});
    let reply = admin
        .install_certificate(install(good))
        .await
        .unwrap_or_else(|status| panic!("InstallCertificate: {status:?}"))
        .into_inner();
    let new_serial = reply
        .served
        .as_ref()
        .map(|c| c.serial.clone())
        .unwrap_or_default();
    assert_eq!(fleet.served(0, &fleet.ca.cert()).await.serial, new_serial);
    assert_eq!(
        reply.previous.map(|c| c.serial),
        Some(served.serial.clone()),
        "the reply names the certificate it replaced"
    );
    assert!(!node.dir.join("server-key.pem.staged").exists());
    admin
        .rollback(RollbackRequest {
            listener: String::new(),
            target: RollbackTarget::Certificate.into(),
        })
        .await
        .unwrap_or_else(|status| panic!("Rollback: {status:?}"));
    assert_eq!(
        fleet.served(0, &fleet.ca.cert()).await.serial,
        served.serial
    );
    assert_eq!(
        Files::of(node),
        before,
        "rolled back to the very same files"
    );
}

#[tokio::test]
async fn admin_rpcs_are_refused_outside_admin_allow_over_h2c_and_when_off() {
    let fleet = AdminFleet::start(1);
    let node = &fleet.nodes[0];
    let before = Files::of(node);
    let files = TlsFiles {
        cert: node.cert(),
        key: node.key(),
        client_ca: node.client_ca(),
    };
    // A second agent on the same files, with an h2c listener whose proxy is
    // trusted, and one with no [admin] table.
    let proxied = Agent::spawn(
        &AgentConfig::new("proxied")
            .tls(files.clone())
            .listener(ListenerConfig::mtls("mtls"))
            .listener(ListenerConfig::h2c("h2c").trusted_proxy())
            .admin([OPERATOR]),
    );
    let off = Agent::spawn(
        &AgentConfig::new("off")
            .tls(files)
            .listener(ListenerConfig::mtls("mtls")),
    );
    let web = IssueSpec::client("web").issue(&fleet.ca, &fleet.dir().join("web"));

    let mut outsider = admin_client(node.addr(), &web.client(&fleet.ca.cert())).await;
    let result = outsider
        .prepare_certificate(PrepareCertificateRequest::default())
        .await;
    assert_refused(
        result,
        Code::PermissionDenied,
        "[admin] allow",
        "a caller outside [admin] allow",
    );
    let logs = node.agent().logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("WARN") && line.contains("web")),
        "the refused caller is logged at warn with its identity:\n{logs}"
    );

    let h2c = Client::h2c(proxied.addr("h2c"))
        .await
        .expect("connect over h2c");
    let mut request = tonic::Request::new(PrepareCertificateRequest::default());
    request
        .metadata_mut()
        .insert("x-client-subject", "CN=ops".parse().expect("header"));
    let result = AdminServiceClient::new(h2c.channel())
        .prepare_certificate(request)
        .await;
    assert_refused(
        result,
        Code::PermissionDenied,
        "mTLS",
        "an admin RPC over h2c",
    );

    let operator = fleet.operator_tls(&fleet.ca.cert());
    let mut switched_off = admin_client(off.addr("mtls"), &operator).await;
    let result = switched_off
        .prepare_certificate(PrepareCertificateRequest::default())
        .await;
    assert_refused(
        result,
        Code::PermissionDenied,
        "[admin]",
        "an agent without [admin]",
    );

    assert_eq!(Files::of(node), before, "no refused call changed a file");
    assert!(
        !node.dir.join("server-key.pem.staged").exists(),
        "no key was staged"
    );
}

#[tokio::test]
async fn set_trust_refuses_a_bundle_that_would_lock_the_caller_out() {
    let fleet = AdminFleet::start(1);
    let node = &fleet.nodes[0];
    let before = Files::of(node);
    let mut admin = admin_client(node.addr(), &fleet.operator_tls(&fleet.ca.cert())).await;
    let stranger = CaDir::init(&fleet.dir().join("stranger-ca"));
    let read = |path: PathBuf| std::fs::read_to_string(path).expect("read a CA certificate");

    let lockout = SetTrustRequest {
        listener: String::new(),
        bundle_pem: read(stranger.cert()),
    };
    assert_refused(
        admin.set_trust(lockout).await,
        Code::FailedPrecondition,
        "lock",
        "a bundle without the caller's CA",
    );
    assert_eq!(Files::of(node), before);

    let wider = SetTrustRequest {
        listener: String::new(),
        bundle_pem: read(fleet.ca.cert()) + &read(stranger.cert()),
    };
    let reply = admin
        .set_trust(wider)
        .await
        .unwrap_or_else(|status| panic!("SetTrust: {status:?}"))
        .into_inner();
    assert_eq!(reply.trusted.len(), 2, "{reply:?}");
    // A client of the stranger CA is served from the next handshake on.
    let stranger_client =
        IssueSpec::client("stranger").issue(&stranger, &fleet.dir().join("stranger"));
    let client = Client::mtls(node.addr(), &stranger_client.client(&fleet.ca.cert()))
        .await
        .expect("connect");
    client
        .roll()
        .await
        .expect("a client of a newly trusted CA rolls");

    admin
        .rollback(RollbackRequest {
            listener: String::new(),
            target: RollbackTarget::Trust.into(),
        })
        .await
        .unwrap_or_else(|status| panic!("Rollback: {status:?}"));
    assert_eq!(
        Files::of(node),
        before,
        "rolled back to the very same bundle"
    );
    // The stranger's CA is no longer trusted: its open connection is cut off.
    let since = std::time::Instant::now();
    let what = "the open connection of a client whose CA was rolled back";
    dice_tests::live::assert_cut_off_in_time(&client, since, what, node.agent()).await;
}

/// Makes a folder immutable (`chattr +i`) until dropped: even root cannot
/// create or rename files in it, as in a read-only secret mount.
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Immutable {
        let status = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .unwrap_or_else(|error| {
                panic!("cannot run chattr (install e2fsprogs) to make a folder read-only: {error}")
            });
        assert!(
            status.success(),
            "chattr +i {} failed ({status}): this test needs a file system with the immutable flag (ext4, xfs, btrfs)",
            dir.display()
        );
        Immutable(dir.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_key_folder_that_cannot_be_written_is_refused_naming_it() {
    let fleet = AdminFleet::start(1);
    let node = &fleet.nodes[0];
    let before = Files::of(node);
    let mut admin = admin_client(node.addr(), &fleet.operator_tls(&fleet.ca.cert())).await;
    let _read_only = Immutable::set(&node.dir);

    let result = admin
        .prepare_certificate(PrepareCertificateRequest::default())
        .await;
    let folder = node.dir.display().to_string();
    assert_refused(
        result,
        Code::FailedPrecondition,
        &folder,
        "a read-only key folder",
    );
    assert_eq!(Files::of(node), before);
}
