//! Checks of the harness itself, against an in-process reference server built
//! from the same pieces the agent uses (rustls with the ring provider, client
//! certificate verification, tonic over HTTP/2). If these fail, the harness is
//! wrong; if these pass and an agent scenario fails, the agent is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dice_proto::api::RollDieRequest;
use dice_proto::api::dice_service_server::DiceServiceServer;
use dice_proto::testing::{self as reference, Dice, TLS_VERSIONS};
use dice_tests::client::{handshake, is_clean_refusal, roll_once};
use dice_tests::fleet::closed_port;
use dice_tests::{
    Client, HandshakeStage, Identity, KeyFormat, KeyKind, LeafSpec, Pki, fresh_pki,
    poll_until_async,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// What the reference servers here always roll.
const ROLLED: i32 = 4;

/// The mTLS server config the reference server uses, presenting `server`.
fn server_config(pki: &Pki, server: &Identity) -> Arc<rustls::ServerConfig> {
    reference::server_config(&server.cert, &server.key, pki.ca_cert(), TLS_VERSIONS)
        .unwrap_or_else(|error| panic!("a server config for {}: {error}", server.cert.display()))
}

/// Serves DiceService over mTLS on an ephemeral port until the test's runtime ends.
async fn reference_server(pki: &Pki) -> SocketAddr {
    let acceptor = TlsAcceptor::from(server_config(pki, pki.server()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(reference::accept_tls(listener, acceptor, sender));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DiceServiceServer::new(Dice::Always(ROLLED)))
            .serve_with_incoming(ReceiverStream::new(receiver)),
    );
    addr
}

#[test]
fn every_key_form_loads_into_rustls_and_says_what_it_is() {
    let (_dir, pki) = fresh_pki();
    let forms = [
        (KeyKind::Rsa2048, KeyFormat::Pkcs1),
        (KeyKind::Rsa2048, KeyFormat::Pkcs8),
        (KeyKind::EcdsaP256, KeyFormat::Sec1),
        (KeyKind::EcdsaP256, KeyFormat::Pkcs8),
        (KeyKind::EcdsaP384, KeyFormat::Sec1),
        (KeyKind::EcdsaP384, KeyFormat::Pkcs8),
        (KeyKind::Ed25519, KeyFormat::Pkcs8),
    ];
    for (index, (kind, format)) in forms.into_iter().enumerate() {
        let server = pki.issue(
            &LeafSpec::server(&format!("form-{index}"))
                .key(kind)
                .format(format),
        );
        let text = std::fs::read_to_string(&server.key).expect("read the key");
        assert!(
            text.starts_with(format.pem_label()),
            "{kind:?} {format:?}:\n{text}"
        );
        server_config(&pki, &server);
        assert!(
            server.summary.sans.contains(&"IP:127.0.0.1".to_owned()),
            "{:?}",
            server.summary
        );
    }
}

#[tokio::test]
async fn clients_and_handshakes_work_against_a_reference_server() {
    let (_dir, pki) = fresh_pki();
    let addr = reference_server(&pki).await;

    let client = Client::mtls(addr, &pki.client_tls())
        .await
        .expect("connect");
    assert_eq!(client.roll().await.expect("roll"), ROLLED);

    let shook = handshake(addr, &pki.client_tls()).await.expect("handshake");
    assert_eq!(shook.server_cert.serial, pki.server().serial());
    assert_eq!(shook.alpn.as_deref(), Some("h2"));

    let refused = handshake(addr, &pki.client_tls_without_cert())
        .await
        .expect_err("no client certificate");
    assert_eq!(refused.stage, HandshakeStage::FirstRead, "{refused}");

    let other = pki.unrelated("other");
    let refused = handshake(addr, &pki.client_tls_as(other.client()))
        .await
        .expect_err("another CA's client certificate");
    assert_eq!(refused.stage, HandshakeStage::FirstRead, "{refused}");
    assert!(
        roll_once(addr, &pki.client_tls_as(other.client()))
            .await
            .is_err()
    );

    let untrusting = handshake(addr, &other.client_tls())
        .await
        .expect_err("a client that does not trust the server's CA");
    assert_eq!(untrusting.stage, HandshakeStage::Handshake, "{untrusting}");

    let expired = pki.issue(&LeafSpec::client("expired-client").expired());
    assert!(handshake(addr, &pki.client_tls_as(&expired)).await.is_err());
}

#[tokio::test]
async fn a_refused_connection_is_a_clean_refusal() {
    let addr = closed_port();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy();
    let status = dice_proto::api::dice_service_client::DiceServiceClient::new(channel)
        .roll_die(RollDieRequest {})
        .await
        .expect_err("nothing listens there");
    assert!(is_clean_refusal(&status), "{status:?}");
}

/// Serves DiceService, health and reflection over h2c until `shutdown` fires,
/// with tonic's graceful shutdown; returns the address and the server task.
async fn reference_h2c_server(
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<DiceServiceServer<Dice>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dice_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection service");
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(DiceServiceServer::new(Dice::Always(ROLLED)))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move {
                let _ = shutdown.await;
                reporter.set_not_serving::<DiceServiceServer<Dice>>().await;
            },
        );
    let task = tokio::spawn(async move { server.await.expect("reference server") });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_of_a_reference_server_breaks_no_rpc() {
    let (trigger, shutdown) = tokio::sync::oneshot::channel();
    let (addr, server) = reference_h2c_server(shutdown).await;
    let client = Client::h2c(addr).await.expect("connect over h2c");
    assert_eq!(
        client
            .health(dice_proto::DICE_SERVICE_NAME)
            .await
            .expect("health"),
        dice_tests::client::ServingStatus::Serving
    );
    let services = client.list_services().await.expect("reflection");
    assert!(
        services.iter().any(|s| s == dice_proto::DICE_SERVICE_NAME),
        "{services:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let rolled = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop, rolled) = (client.clone(), Arc::clone(&stop), Arc::clone(&rolled));
            tokio::spawn(async move {
                let mut broken = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.roll().await {
                        Ok(_) => {
                            rolled.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) if is_clean_refusal(&status) => {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        Err(status) => broken.push(format!("{status:?}")),
                    }
                }
                broken
            })
        })
        .collect();
    let warmed = poll_until_async(std::time::Duration::from_secs(5), || {
        let rolled = Arc::clone(&rolled);
        async move { rolled.load(Ordering::Relaxed) >= 50 }
    })
    .await;
    assert!(warmed, "the rollers did not get going");
    trigger.send(()).expect("trigger shutdown");
    server.await.expect("the server drains and stops");
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let broken = task.await.expect("roller");
        assert!(broken.is_empty(), "{broken:#?}");
    }
}
