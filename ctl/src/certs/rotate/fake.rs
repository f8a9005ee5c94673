//! A fake agent for the rotation tests: mTLS on `127.0.0.1:0`, serving
//! `AgentInfoService`, `AdminService` and the health service, with the
//! served certificate swapped in memory as the real agent swaps it.
//!
//! Client certificates are verified against the CAs given at spawn;
//! `SetTrust` records the bundle for `GetInfo` without changing that.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use dice_proto::cert::{CertSummary, rfc3339, sha256_hex};
use dice_proto::info::admin_service_server::{AdminService, AdminServiceServer};
use dice_proto::info::agent_info_service_server::{AgentInfoService, AgentInfoServiceServer};
use dice_proto::info::{
    AgentInfo, CertificateInfo, GetInfoRequest, InstallCertificateRequest,
    InstallCertificateResponse, PrepareCertificateRequest, PrepareCertificateResponse,
    RollbackRequest, RollbackResponse, RollbackTarget, ServedCertificate, SetTrustRequest,
    SetTrustResponse, TlsState, TrustedCa,
};
use dice_proto::pem::pem_chain;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::certs::build;

/// How the fake misbehaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quirks {
    /// Its CSRs ask for another subject.
    pub csr_subject: Option<&'static str>,
    /// It accepts an install but keeps serving the old certificate.
    pub ignore_install: bool,
}

/// A served certificate: its chain and key.
#[derive(Clone)]
struct Pair {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<CertifiedKey>,
}

struct State {
    served: Pair,
    previous: Option<Pair>,
    staged: Option<KeyPair>,
    trusted: Vec<CertificateDer<'static>>,
    previous_trust: Option<Vec<CertificateDer<'static>>>,
    quirks: Quirks,
    /// The RPCs called, in order: `prepare`, `install`, `set_trust`, `rollback`.
    calls: Vec<&'static str>,
}

type Shared = Arc<Mutex<State>>;

fn pair(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Pair {
    let key = CertifiedKey::from_der(chain.clone(), key, &dice_proto::crypto::provider())
        .expect("the fake's certificate and key match");
    Pair {
        chain,
        key: Arc::new(key),
    }
}

#[derive(Debug)]
struct Resolver(Shared);

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.lock().expect("lock").served.key.clone())
    }
}

/// A fake agent serving until dropped.
pub struct FakeAgent {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Shared,
    accept: JoinHandle<()>,
    serve: JoinHandle<()>,
}

impl FakeAgent {
    /// Serves `chain` with `key`, verifying clients against `client_cas`
    /// and reporting `trusted` as its client CA bundle.
    pub async fn spawn(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_cas: &[CertificateDer<'static>],
        trusted: Vec<CertificateDer<'static>>,
        quirks: Quirks,
    ) -> Self {
        let state = Arc::new(Mutex::new(State {
            served: pair(chain, key),
            previous: None,
            staged: None,
            trusted,
            previous_trust: None,
            quirks,
            calls: Vec::new(),
        }));
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(client_cas.iter().cloned());
        let provider = dice_proto::crypto::provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .expect("verifier");
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver(state.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel(4);
        let accept = tokio::spawn(dice_proto::testing::accept_tls(
            listener,
            TlsAcceptor::from(Arc::new(config)),
            tx,
        ));
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(
                dice_proto::DICE_SERVICE_NAME,
                tonic_health::ServingStatus::Serving,
            )
            .await;
        let service = Service(state.clone());
        let serve = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(AgentInfoServiceServer::new(service.clone()))
                .add_service(AdminServiceServer::new(service))
                .serve_with_incoming(ReceiverStream::new(rx))
                .await
                .expect("serve");
        });
        Self {
            addr,
            state,
            accept,
            serve,
        }
    }

    /// The RPCs called so far.
    pub fn calls(&self) -> Vec<&'static str> {
        self.state.lock().expect("lock").calls.clone()
    }

    /// The leaf served now.
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.state.lock().expect("lock").served.chain[0].clone()
    }

    /// The client CA bundle it reports.
    pub fn trusted(&self) -> Vec<CertificateDer<'static>> {
        self.state.lock().expect("lock").trusted.clone()
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.accept.abort();
        self.serve.abort();
    }
}

#[derive(Clone)]
struct Service(Shared);

fn served_certificate(der: &CertificateDer<'_>) -> ServedCertificate {
    let summary = CertSummary::parse(der).expect("served certificate parses");
    ServedCertificate {
        serial: summary.serial,
        sha256: sha256_hex(der),
        not_after: rfc3339(summary.not_after),
        subject: summary.subject,
        issuer: summary.issuer,
    }
}

fn trusted_ca(der: &CertificateDer<'_>) -> TrustedCa {
    let summary = CertSummary::parse(der).expect("CA parses");
    TrustedCa {
        subject: summary.subject,
        sha256: sha256_hex(der),
        not_after: rfc3339(summary.not_after),
        pem: pem_chain([der]),
    }
}

fn parse_pem(text: &str) -> Result<Vec<CertificateDer<'static>>, Status> {
    dice_proto::pem::parse_certs(std::path::Path::new("request"), text.as_bytes())
        .map_err(|error| Status::invalid_argument(error.to_string()))
}

#[tonic::async_trait]
impl AgentInfoService for Service {
    async fn get_info(&self, _: Request<GetInfoRequest>) -> Result<Response<AgentInfo>, Status> {
        let state = self.0.lock().expect("lock");
        let leaf = &state.served.chain[0];
        let summary = CertSummary::parse(leaf).expect("parses");
        let mut info = AgentInfo {
            node: "fake".to_owned(),
            admin_enabled: true,
            ..AgentInfo::default()
        };
        info.certificates.insert(
            "main".to_owned(),
            CertificateInfo {
                subject: summary.subject,
                serial: summary.serial,
                not_after: rfc3339(summary.not_after),
                sans: summary.sans,
                days_left: summary.not_after.saturating_sub(crate::unix_now()) / 86_400,
                sha256: sha256_hex(leaf),
                issuer: summary.issuer,
            },
        );
        info.tls.insert(
            "main".to_owned(),
            TlsState {
                trusted: state.trusted.iter().map(trusted_ca).collect(),
                key_staged: state.staged.is_some(),
            },
        );
        Ok(Response::new(info))
    }
}

#[tonic::async_trait]
impl AdminService for Service {
    async fn prepare_certificate(
        &self,
        _: Request<PrepareCertificateRequest>,
    ) -> Result<Response<PrepareCertificateResponse>, Status> {
        let mut state = self.0.lock().expect("lock");
        state.calls.push("prepare");
        // The dev PKI's server certificates have a CN and DNS and IP SANs only.
        let served = CertSummary::parse(&state.served.chain[0]).expect("parses");
        let mut params = CertificateParams::default();
        params.distinguished_name = build::common_name(
            state
                .quirks
                .csr_subject
                .or(served.common_name.as_deref())
                .expect("a CN"),
        );
        params.subject_alt_names = served
            .sans
            .iter()
            .map(|san| match san.split_once(':') {
                Some(("IP", ip)) => SanType::IpAddress(ip.parse().expect("ip")),
                Some((_, dns)) => SanType::DnsName(dns.try_into().expect("dns")),
                None => panic!("SAN without a kind: {san}"),
            })
            .collect();
        let key = match state.staged.take() {
            Some(key) => key,
            None => KeyPair::generate().expect("key"),
        };
        let csr_pem = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .expect("csr");
        state.staged = Some(key);
        Ok(Response::new(PrepareCertificateResponse {
            csr_pem,
            key_type: "ecdsa-p256".to_owned(),
            reused: false,
            served: Some(served_certificate(&state.served.chain[0])),
        }))
    }

    async fn install_certificate(
        &self,
        request: Request<InstallCertificateRequest>,
    ) -> Result<Response<InstallCertificateResponse>, Status> {
        let chain = parse_pem(&request.into_inner().chain_pem)?;
        let mut state = self.0.lock().expect("lock");
        state.calls.push("install");
        let Some(key) = state.staged.take() else {
            return Err(Status::failed_precondition("no staged key"));
        };
        let der = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let previous = state.served.clone();
        let new = pair(chain, der);
        let response = InstallCertificateResponse {
            served: Some(served_certificate(&new.chain[0])),
            previous: Some(served_certificate(&previous.chain[0])),
        };
        if !state.quirks.ignore_install {
            state.served = new;
        }
        state.previous = Some(previous);
        Ok(Response::new(response))
    }

    async fn set_trust(
        &self,
        request: Request<SetTrustRequest>,
    ) -> Result<Response<SetTrustResponse>, Status> {
        let bundle = parse_pem(&request.into_inner().bundle_pem)?;
        let mut state = self.0.lock().expect("lock");
        state.calls.push("set_trust");
        let previous = std::mem::replace(&mut state.trusted, bundle);
        let response = SetTrustResponse {
            trusted: state.trusted.iter().map(trusted_ca).collect(),
            previous: previous.iter().map(trusted_ca).collect(),
        };
        state.previous_trust = Some(previous);
        Ok(Response::new(response))
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<RollbackResponse>, Status> {
        let target = request.into_inner().target;
        let mut state = self.0.lock().expect("lock");
        state.calls.push("rollback");
        if target == i32::from(RollbackTarget::Certificate) {
            let previous = state
                .previous
                .take()
                .ok_or_else(|| Status::failed_precondition("no backup"))?;
            state.served = previous;
        } else {
            let previous = state
                .previous_trust
                .take()
                .ok_or_else(|| Status::failed_precondition("no backup"))?;
            state.trusted = previous;
        }
        Ok(Response::new(RollbackResponse {
            served: Some(served_certificate(&state.served.chain[0])),
            trusted: state.trusted.iter().map(trusted_ca).collect(),
        }))
    }
}
