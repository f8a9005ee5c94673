//! The admin operations on real files in a temp folder, with certificates
//! made by rcgen, and the authorization of the service.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dice_proto::info::admin_service_server::AdminService;
use dice_proto::info::{PrepareCertificateRequest, RollbackTarget};
use dice_proto::pem::pem_chain;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use tonic::Code;
use x509_parser::prelude::FromDer;

use super::audit::Change;
use super::{Admin, files, install, rollback, staged, trust};
use crate::config::{AdminConfig, FileRef, TlsFiles};
use crate::net::ConnInfo;
use crate::rpc::AllowList;
use crate::services::AgentState;
use crate::tls::{ClientIdentity, TlsBytes, TlsMaterial, TlsProfile};

// === a test PKI ===

/// A CA that signs test certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_serial() -> SerialNumber {
    SerialNumber::from(SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(next_serial());
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Signs `params` (given a serial and an authority key identifier) for `key`.
    fn sign(
        &self,
        mut params: CertificateParams,
        key: &impl rcgen::PublicKeyData,
    ) -> CertificateDer<'static> {
        params.serial_number = Some(next_serial());
        params.use_authority_key_identifier_extension = true;
        params
            .signed_by(key, &self.issuer)
            .expect("sign")
            .der()
            .clone()
    }

    fn server(&self, key: &KeyPair, sans: &[&str]) -> CertificateDer<'static> {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, "node-1");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, key)
    }

    fn client(&self, name: &str) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, &KeyPair::generate().expect("key"))
    }

    /// Signs `csr_pem` as a dicectl would, with `edit` applied to the params first.
    fn sign_csr(&self, csr_pem: &str, edit: impl FnOnce(&mut CertificateParams)) -> String {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).expect("CSR");
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        csr.params.serial_number = Some(next_serial());
        csr.params.use_authority_key_identifier_extension = true;
        edit(&mut csr.params);
        csr.signed_by(&self.issuer).expect("sign CSR").pem()
    }
}

fn pem(der: &CertificateDer<'_>) -> String {
    pem_chain([der])
}

fn file_ref(path: PathBuf, key: &str) -> FileRef {
    FileRef {
        origin: path.with_file_name("node.toml"),
        path,
        key: key.to_owned(),
        line: 1,
    }
}

/// A node's certificate files in a temp folder, served by a profile.
struct Node {
    _dir: tempfile::TempDir,
    ca: Ca,
    profile: TlsProfile,
    /// The admin's client chain, from `ca`.
    admin: Vec<CertificateDer<'static>>,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new("dice test CA");
        let key = KeyPair::generate().expect("key");
        let leaf = ca.server(&key, &["node-1.test", "127.0.0.1"]);
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("server.pem"), pem(&leaf)).expect("write");
        files::write_atomically(
            &path("server-key.pem"),
            key.serialize_pem().as_bytes(),
            0o600,
        )
        .expect("write key");
        std::fs::write(path("ca.pem"), pem(&ca.der)).expect("write");
        let files = TlsFiles {
            cert: file_ref(path("server.pem"), "tls.cert"),
            key: file_ref(path("server-key.pem"), "tls.key"),
            client_ca: file_ref(path("ca.pem"), "tls.client_ca"),
            crl: Vec::new(),
            strict_permissions: false,
            expiry_warning: None,
        };
        let material = TlsMaterial::load(&files, crate::unix_now()).expect("material");
        let admin = vec![ca.client("dicectl")];
        Self {
            _dir: dir,
            ca,
            profile: TlsProfile::new(files, material),
            admin,
        }
    }

    fn files(&self) -> &TlsFiles {
        &self.profile.files
    }

    fn prepare(&self, fresh: bool) -> staged::Prepared {
        let leaf = self.profile.material().leaf_der.clone();
        staged::prepare(self.files(), &leaf, None, fresh).expect("prepare")
    }

    fn install(
        &self,
        chain_pem: &str,
    ) -> Result<dice_proto::info::InstallCertificateResponse, tonic::Status> {
        install::install(
            &self.profile,
            "public",
            chain_pem,
            crate::unix_now(),
            &mut Change::default(),
        )
    }

    /// Every file in the folder, with its bytes.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = self.files().cert.path.parent().expect("folder");
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("list")
            .map(|entry| {
                let path = entry.expect("entry").path();
                let bytes = std::fs::read(&path).expect("read");
                (path, bytes)
            })
            .collect();
        entries.sort();
        entries
    }

    /// Whether the files read now fingerprint as the served material: the
    /// reloader would see nothing to do.
    fn files_match_served(&self) -> bool {
        TlsBytes::read(self.files()).expect("read").fingerprint()
            == self.profile.material().fingerprint
    }
}

fn csr_public_key(csr_pem: &str) -> Vec<u8> {
    let der = ::pem::parse(csr_pem).expect("CSR PEM");
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.contents())
            .expect("CSR");
    csr.certification_request_info.subject_pki.raw.to_vec()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

// === PrepareCertificate ===

#[test]
fn prepare_stages_a_key_and_reuses_it_until_asked_for_a_fresh_one() {
    let node = Node::new();
    let staged_path = files::staged(&node.files().key.path);
    let first = node.prepare(false);
    assert!(!first.reused);
    assert_eq!(first.key_type, "ecdsa-p256");
    assert_eq!(mode(&staged_path), 0o600);
    assert!(staged_path.ends_with("server-key.pem.staged"));

    let again = node.prepare(false);
    assert!(again.reused);
    assert_eq!(
        csr_public_key(&first.csr_pem),
        csr_public_key(&again.csr_pem)
    );

    let fresh = node.prepare(true);
    assert!(!fresh.reused);
    assert_ne!(
        csr_public_key(&first.csr_pem),
        csr_public_key(&fresh.csr_pem)
    );

    // The CSR asks for the served subject and SANs.
    let csr = CertificateSigningRequestParams::from_pem(&fresh.csr_pem).expect("CSR");
    let cert = node.ca.sign_csr(&fresh.csr_pem, |_| {});
    let der = dice_proto::pem::parse_certs(Path::new("x"), cert.as_bytes()).expect("cert");
    let summary = dice_proto::cert::CertSummary::parse(&der[0]).expect("summary");
    assert_eq!(summary.subject, node.profile.material().leaf.subject);
    assert_eq!(summary.sans, node.profile.material().leaf.sans);
    assert_eq!(csr.params.subject_alt_names.len(), 2);
}

#[test]
fn prepare_of_another_key_type_makes_a_new_key() {
    let node = Node::new();
    node.prepare(false);
    let leaf = node.profile.material().leaf_der.clone();
    let ed = staged::prepare(
        node.files(),
        &leaf,
        Some(dice_proto::keys::KeyType::Ed25519),
        false,
    )
    .expect("prepare");
    assert_eq!((ed.key_type.as_str(), ed.reused), ("ed25519", false));
}

// === InstallCertificate ===

#[test]
fn install_serves_the_staged_key_and_keeps_a_backup() {
    let node = Node::new();
    let old = node.profile.material();
    let (old_cert, old_key) = (
        std::fs::read(&node.files().cert.path).expect("cert"),
        std::fs::read(&node.files().key.path).expect("key"),
    );
    let prepared = node.prepare(false);
    let staged_path = files::staged(&node.files().key.path);
    let staged_key = std::fs::read(&staged_path).expect("staged");
    let chain = node.ca.sign_csr(&prepared.csr_pem, |_| {});

    let reply = node.install(&chain).expect("install");
    let served = reply.served.expect("served");
    assert_eq!(reply.previous.expect("previous").serial, old.leaf.serial);
    let now = node.profile.material();
    assert_eq!(served.serial, now.leaf.serial);
    assert_ne!(served.serial, old.leaf.serial);
    assert_eq!(served.sha256, dice_proto::cert::sha256_hex(&now.leaf_der));

    assert_eq!(
        std::fs::read(&node.files().key.path).expect("key"),
        staged_key
    );
    assert_eq!(mode(&node.files().key.path), 0o600);
    assert!(!staged_path.exists());
    let previous_key = files::previous(&node.files().key.path);
    assert_eq!(std::fs::read(&previous_key).expect("backup"), old_key);
    assert_eq!(mode(&previous_key), 0o600);
    assert_eq!(
        std::fs::read(files::previous(&node.files().cert.path)).expect("backup"),
        old_cert
    );
    assert!(node.files_match_served());

    // A second install has no staged key.
    let error = node.install(&chain).expect_err("nothing staged");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(
        error.message(),
        "no key is staged for listener public: call PrepareCertificate first"
    );
}

#[test]
fn install_refusals_say_why_and_change_no_file() {
    let node = Node::new();
    let prepared = node.prepare(false);
    let other_key = KeyPair::generate().expect("key");
    let other_ca = Ca::new("some other CA");
    let cases: Vec<(String, &str)> = vec![
        (
            pem(&node.ca.server(&other_key, &["node-1.test", "127.0.0.1"])),
            "is for another key, not the staged one",
        ),
        (
            node.ca.sign_csr(&prepared.csr_pem, |p| {
                p.not_before = rcgen::date_time_ymd(2001, 1, 1);
                p.not_after = rcgen::date_time_ymd(2002, 1, 1);
            }),
            "expired at 2002-01-01T00:00:00Z",
        ),
        (
            node.ca.sign_csr(&prepared.csr_pem, |p| {
                p.subject_alt_names.truncate(1);
            }),
            "lacks SANs the node serves now: IP:127.0.0.1",
        ),
        (
            other_ca.sign_csr(&prepared.csr_pem, |_| {}),
            "the certificate's issuer \"CN=some other CA\" is neither in client_ca nor the issuer of the certificate served now",
        ),
        (
            node.ca.sign_csr(&prepared.csr_pem, |p| {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }),
            "does not carry extended key usage serverAuth",
        ),
        ("not PEM".to_owned(), "chain_pem: no certificate found"),
    ];
    let before = node.snapshot();
    let serial = node.profile.material().leaf.serial.clone();
    for (chain, expected) in cases {
        let error = node.install(&chain).expect_err(expected);
        assert_eq!(error.code(), Code::InvalidArgument, "{}", error.message());
        assert!(
            error.message().contains(expected),
            "{expected:?} in {:?}",
            error.message()
        );
        assert_eq!(node.snapshot(), before, "{expected}");
        assert_eq!(node.profile.material().leaf.serial, serial);
    }
}

// === SetTrust ===

#[test]
fn set_trust_refuses_a_bundle_that_would_lock_the_caller_out() {
    let node = Node::new();
    let new_ca = Ca::new("dice new CA");
    let before = node.snapshot();
    let error = trust::set_trust(
        &node.profile,
        &pem(&new_ca.der),
        &node.admin,
        crate::unix_now(),
        &mut Change::default(),
    )
    .expect_err("lockout");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(
        error.message(),
        "refused: your client certificate (CN=dicectl, issued by CN=dice test CA) would not verify under this bundle, so this change would lock you out: include the CA that issued it"
    );
    assert_eq!(node.snapshot(), before);

    let leaf = pem(&node.profile.material().leaf_der);
    let error = trust::set_trust(
        &node.profile,
        &leaf,
        &node.admin,
        crate::unix_now(),
        &mut Change::default(),
    )
    .expect_err("not a CA");
    assert!(
        error.message().contains("is not a CA certificate"),
        "{}",
        error.message()
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
fn set_trust_then_rollback_round_trip() {
    let node = Node::new();
    let new_ca = Ca::new("dice new CA");
    let old_bundle = std::fs::read(&node.files().client_ca.path).expect("bundle");
    let both = format!("{}{}", pem(&node.ca.der), pem(&new_ca.der));
    let mut change = Change::default();
    let reply = trust::set_trust(
        &node.profile,
        &both,
        &node.admin,
        crate::unix_now(),
        &mut change,
    )
    .expect("set trust");
    assert_eq!(reply.trusted.len(), 2);
    assert_eq!(reply.previous.len(), 1);
    assert_eq!(
        reply.trusted[1].sha256,
        dice_proto::cert::sha256_hex(&new_ca.der)
    );
    assert_eq!(change.new.split(',').count(), 2);
    assert_eq!(node.profile.material().client_cas.len(), 2);
    let backup = files::previous(&node.files().client_ca.path);
    assert_eq!(std::fs::read(&backup).expect("backup"), old_bundle);
    assert!(node.files_match_served());

    let reply = rollback::rollback(
        &node.profile,
        RollbackTarget::Trust,
        crate::unix_now(),
        &mut Change::default(),
    )
    .expect("rollback");
    assert_eq!(reply.trusted.len(), 1);
    assert_eq!(
        std::fs::read(&node.files().client_ca.path).expect("bundle"),
        old_bundle
    );
    assert!(!backup.exists());
    assert!(node.files_match_served());
}

// === Rollback ===

#[test]
fn rollback_puts_the_previous_certificate_back_once() {
    let node = Node::new();
    let old_serial = node.profile.material().leaf.serial.clone();
    let before = node.snapshot();
    let prepared = node.prepare(false);
    node.install(&node.ca.sign_csr(&prepared.csr_pem, |_| {}))
        .expect("install");
    assert_ne!(node.profile.material().leaf.serial, old_serial);

    let reply = rollback::rollback(
        &node.profile,
        RollbackTarget::Certificate,
        crate::unix_now(),
        &mut Change::default(),
    )
    .expect("rollback");
    assert_eq!(reply.served.expect("served").serial, old_serial);
    assert_eq!(node.profile.material().leaf.serial, old_serial);
    assert_eq!(node.snapshot(), before);
    assert!(node.files_match_served());

    let error = rollback::rollback(
        &node.profile,
        RollbackTarget::Certificate,
        crate::unix_now(),
        &mut Change::default(),
    )
    .expect_err("nothing left");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(
        error.message().starts_with("nothing to roll back: no "),
        "{}",
        error.message()
    );
    assert!(
        error.message().ends_with("server.pem.previous"),
        "{}",
        error.message()
    );
}

// === unwritable folders ===

#[test]
fn an_unwritable_folder_is_managed_by_another_tool() {
    if rustix::process::geteuid().is_root() {
        // root writes anywhere: nothing to check.
        return;
    }
    let node = Node::new();
    let dir = node.files().key.path.parent().expect("folder").to_owned();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    let leaf = node.profile.material().leaf_der.clone();
    let error = staged::prepare(node.files(), &leaf, None, false).expect_err("read-only");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(
        error.message().contains("cannot write")
            && error.message().contains("managed by another tool"),
        "{}",
        error.message()
    );
}

// === authorization ===

fn conn(client: Option<&CertificateDer<'static>>) -> Arc<ConnInfo> {
    let peer = "127.0.0.1:1".parse().expect("address");
    let identity = client.map(|der| {
        let summary = dice_proto::cert::CertSummary::parse(der).expect("summary");
        Arc::new(ClientIdentity {
            subject: summary.subject,
            common_name: summary.common_name,
            sans: summary.sans,
        })
    });
    Arc::new(ConnInfo {
        listener: Arc::from("public"),
        peer,
        peer_text: "127.0.0.1:1".into(),
        client: identity,
        client_chain: client.map(|der| Arc::from(vec![der.clone()])),
        trusted_proxy: true,
        denied: false,
        activity: Default::default(),
    })
}

async fn prepare_as(
    admin: &Admin,
    conn: Arc<ConnInfo>,
    listener: &str,
) -> Result<dice_proto::info::PrepareCertificateResponse, tonic::Status> {
    let mut request = tonic::Request::new(PrepareCertificateRequest {
        listener: listener.to_owned(),
        ..Default::default()
    });
    request.extensions_mut().insert(conn);
    admin
        .prepare_certificate(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The state of a node named `node-1` serving `profile` as listener
/// `public`, with `admin` as its `[admin]` table.
fn agent_state(profile: Arc<TlsProfile>, admin: Option<AdminConfig>) -> Arc<AgentState> {
    let source =
        "[node]\nname = \"node-1\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\nmode = \"h2c\"\n";
    let mut config = crate::config::parse(std::path::Path::new("/test/agent.toml"), source)
        .expect("a minimal config");
    config.admin = admin;
    Arc::new(AgentState {
        rate_limits: Arc::new(crate::rpc::RateLimiters::new(&config)),
        live: Arc::new(crate::config::LiveConfig::new(config)),
        profiles: arc_swap::ArcSwap::from_pointee(vec![("public".to_owned(), profile)]),
        last_reload: Default::default(),
        last_config_reload: Default::default(),
    })
}

#[tokio::test]
async fn admin_rpcs_need_mtls_an_admin_table_and_an_allowed_caller() {
    let node = Node::new();
    let dicectl = node.admin[0].clone();
    let other = node.ca.client("web-1");
    let profile = Arc::new(node.profile);
    let allow = AdminConfig {
        allow: AllowList::new(vec!["dicectl".into()]),
    };
    let on = Admin::new(agent_state(profile.clone(), Some(allow)));
    let off = Admin::new(agent_state(profile.clone(), None));

    let denied = |result: Result<_, tonic::Status>, expected: &str| {
        let error = result.expect_err(expected);
        assert_eq!(error.code(), Code::PermissionDenied);
        assert_eq!(error.message(), expected);
    };
    denied(
        prepare_as(&on, conn(None), "").await,
        "admin RPCs are served on mTLS listeners only",
    );
    denied(
        prepare_as(&off, conn(Some(&dicectl)), "").await,
        "admin RPCs are off on this node: its config has no [admin] table",
    );
    denied(
        prepare_as(&on, conn(Some(&other)), "").await,
        "client CN=web-1 (DNS:web-1) is not in [admin] allow",
    );
    let error = prepare_as(&on, conn(Some(&dicectl)), "nope")
        .await
        .expect_err("no such listener");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(
        error.message(),
        "no mtls listener named \"nope\" on this node: its mtls listeners are public"
    );
    let reply = prepare_as(&on, conn(Some(&dicectl)), "")
        .await
        .expect("prepare");
    assert!(
        reply
            .csr_pem
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
    );
    assert_eq!(
        reply.served.expect("served").serial,
        profile.material().leaf.serial
    );
}

// === symlinked files ===

#[test]
fn install_and_rollback_write_through_symlinks() {
    use std::os::unix::fs::symlink;
    let node = Node::new();
    // A Kubernetes-style layout: the configured paths are links into `..data/`.
    let dir = node.files().cert.path.parent().expect("folder").to_owned();
    let data = dir.join("..data");
    std::fs::create_dir(&data).expect("mkdir");
    let links = TlsFiles {
        cert: file_ref(dir.join("tls.crt"), "tls.cert"),
        key: file_ref(dir.join("tls.key"), "tls.key"),
        ..node.files().clone()
    };
    for (link, file) in [
        (&links.cert.path, &node.files().cert.path),
        (&links.key.path, &node.files().key.path),
    ] {
        let name = file.file_name().expect("name");
        std::fs::rename(file, data.join(name)).expect("move");
        symlink(data.join(name), link).expect("symlink");
    }
    let profile = TlsProfile::new(
        links.clone(),
        TlsMaterial::load(&links, crate::unix_now()).expect("material"),
    );
    let leaf = profile.material().leaf_der.clone();
    let prepared = staged::prepare(&links, &leaf, None, false).expect("prepare");
    assert!(data.join("server-key.pem.staged").exists());
    let chain = node.ca.sign_csr(&prepared.csr_pem, |_| {});
    install::install(
        &profile,
        "public",
        &chain,
        crate::unix_now(),
        &mut Change::default(),
    )
    .expect("install");
    for link in [&links.cert.path, &links.key.path] {
        let meta = std::fs::symlink_metadata(link).expect("link");
        assert!(
            meta.file_type().is_symlink(),
            "{} is still a link",
            link.display()
        );
    }
    assert!(data.join("server.pem.previous").exists());
    assert!(data.join("server-key.pem.previous").exists());
    assert_eq!(
        TlsBytes::read(&links).expect("read").fingerprint(),
        profile.material().fingerprint
    );
    rollback::rollback(
        &profile,
        RollbackTarget::Certificate,
        crate::unix_now(),
        &mut Change::default(),
    )
    .expect("rollback");
    assert_eq!(profile.material().leaf_der, leaf);
}

// === the info API ===

#[tokio::test]
async fn info_reports_fingerprints_trust_and_the_staged_key() {
    use dice_proto::info::GetInfoRequest;
    use dice_proto::info::agent_info_service_server::AgentInfoService;
    let node = Node::new();
    let ca_sha256 = dice_proto::cert::sha256_hex(&node.ca.der);
    let profile = Arc::new(node.profile);
    let admin = AdminConfig {
        allow: AllowList::new(vec!["dicectl".into()]),
    };
    let info = crate::services::Info::new(agent_state(profile.clone(), Some(admin)));
    let get = || async {
        info.get_info(tonic::Request::new(GetInfoRequest {}))
            .await
            .expect("info")
            .into_inner()
    };
    let reply = get().await;
    assert!(reply.admin_enabled);
    let material = profile.material();
    let cert = &reply.certificates["public"];
    assert_eq!(cert.sha256, material.leaf_sha256);
    assert_eq!(cert.issuer, "CN=dice test CA");
    let tls = &reply.tls["public"];
    assert!(!tls.key_staged);
    assert_eq!(tls.trusted.len(), 1);
    assert_eq!(tls.trusted[0].sha256, ca_sha256);
    assert!(
        tls.trusted[0]
            .pem
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );

    staged::prepare(&profile.files, &material.leaf_der, None, false).expect("prepare");
    assert!(get().await.tls["public"].key_staged);
}
