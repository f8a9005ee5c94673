//! Unit-level checks of what a reload decides on, without a process or a
//! socket: `dice_agent::tls::TlsMaterial` accepts a matching, current pair
//! and names the file at fault for everything else; and two materials built
//! from the same bytes do not share TLS sessions, so a reload ends resumption.

use std::path::Path;
use std::sync::Arc;

use dice_agent::config::{FileRef, TlsFiles};
use dice_agent::tls::TlsMaterial;
use dice_tests::reuse::ResumingClient;
use dice_tests::rotation::read;
use dice_tests::{LeafSpec, fresh_pki};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConfig, ServerConnection};

fn file_ref(key: &str, path: &Path) -> FileRef {
    FileRef {
        path: path.to_owned(),
        key: key.to_owned(),
        line: 1,
        origin: "node.toml".into(),
    }
}

fn files(cert: &Path, key: &Path, client_ca: &Path) -> TlsFiles {
    TlsFiles {
        cert: file_ref("tls.cert", cert),
        key: file_ref("tls.key", key),
        client_ca: file_ref("tls.client_ca", client_ca),
        crl: Vec::new(),
        strict_permissions: false,
        expiry_warning: None,
    }
}

/// What loading a case's files should do.
enum Expect<'a> {
    /// Load, serving the certificate with this serial.
    Serves(&'a str),
    /// Fail, blaming the file set by this config key, with these words in the error.
    Rejects(&'a str, &'a str),
}

#[test]
fn material_is_checked_as_a_unit_and_errors_name_the_file() {
    let (dir, pki) = fresh_pki();
    let server = pki.server();
    let other = pki.issue(&LeafSpec::server("other"));
    let expired = pki.issue(&LeafSpec::server("expired").expired());
    let early = pki.issue(&LeafSpec::server("early").not_yet_valid());
    let scratch = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write a scratch file");
        path
    };
    let pem = read(&server.cert);
    let half = scratch("half.pem", &pem[..pem.len() / 2]);
    let empty = scratch("empty.pem", b"");
    let missing = dir.path().join("missing.pem");
    let ca = pki.ca_cert();

    let cases = [
        (
            "a matching, current pair",
            files(&server.cert, &server.key, ca),
            Expect::Serves(server.serial()),
        ),
        (
            "the key of another certificate",
            files(&server.cert, &other.key, ca),
            Expect::Rejects("tls.key", "the key does not match the certificate"),
        ),
        (
            "an expired certificate",
            files(&expired.cert, &expired.key, ca),
            Expect::Rejects("tls.cert", "expired"),
        ),
        (
            "a certificate valid from tomorrow",
            files(&early.cert, &early.key, ca),
            Expect::Rejects("tls.cert", "is not valid until"),
        ),
        (
            "half a certificate file",
            files(&half, &server.key, ca),
            Expect::Rejects("tls.cert", ""),
        ),
        (
            "an empty key file",
            files(&server.cert, &empty, ca),
            Expect::Rejects("tls.key", "no private key"),
        ),
        (
            "an empty CA bundle",
            files(&server.cert, &server.key, &empty),
            Expect::Rejects("tls.client_ca", "no certificate"),
        ),
        (
            "a deleted certificate",
            files(&missing, &server.key, ca),
            Expect::Rejects("tls.cert", "no such file"),
        ),
    ];
    for (what, files, expected) in cases {
        let result = TlsMaterial::load(&files, dice_agent::unix_now());
        match (result, expected) {
            (Ok(material), Expect::Serves(serial)) => {
                assert_eq!(material.leaf.serial, serial, "{what}")
            }
            (Err(error), Expect::Rejects(key, words)) => {
                let text = error.to_string();
                assert_eq!(error.file.key, key, "{what}: the file at fault: {text}");
                assert!(text.contains(words), "{what}: {text:?} lacks {words:?}");
                assert!(
                    text.contains(path_str(&error.file.path)),
                    "{what}: the error names the path: {text}"
                );
            }
            (Ok(material), Expect::Rejects(..)) => {
                panic!("{what}: accepted (serial {})", material.leaf.serial)
            }
            (Err(error), Expect::Serves(_)) => panic!("{what}: rejected: {error}"),
        }
    }
}

#[test]
fn sessions_do_not_outlive_the_material_that_made_them() {
    let (_dir, pki) = fresh_pki();
    let server = pki.server();
    let files = files(&server.cert, &server.key, pki.ca_cert());
    let first = TlsMaterial::load(&files, dice_agent::unix_now()).expect("load");
    // The same bytes, loaded again: what a reload of a touched file builds.
    let second = TlsMaterial::load(&files, dice_agent::unix_now()).expect("load again");
    assert_eq!(first.fingerprint, second.fingerprint);

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = Arc::new(ResumingClient::rustls_config(&pki.client_tls(), &[version]));
        let shake = |server: &Arc<ServerConfig>| handshake_in_memory(&client, server);
        assert_eq!(
            shake(&first.server_config),
            HandshakeKind::Full,
            "{version:?}"
        );
        assert_eq!(
            shake(&first.server_config),
            HandshakeKind::Resumed,
            "{version:?}: one material resumes its own sessions"
        );
        assert_eq!(
            shake(&second.server_config),
            HandshakeKind::Full,
            "{version:?}: new material must not resume the old material's sessions"
        );
    }
}

/// Runs a handshake between `client` and `server` through memory buffers,
/// then lets the server's session tickets reach the client, and says how
/// the client's side went.
fn handshake_in_memory(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> HandshakeKind {
    let name = ServerName::try_from("localhost").expect("a valid name");
    let mut client = ClientConnection::new(Arc::clone(client), name).expect("client connection");
    let mut server = ServerConnection::new(Arc::clone(server)).expect("server connection");
    for _ in 0..20 {
        if !(client.is_handshaking()
            || server.is_handshaking()
            || client.wants_write()
            || server.wants_write())
        {
            return client.handshake_kind().expect("the handshake finished");
        }
        let mut buf = Vec::new();
        client.write_tls(&mut buf).expect("client writes");
        let mut unread = buf.as_slice();
        while !unread.is_empty() {
            server.read_tls(&mut unread).expect("server reads");
            server
                .process_new_packets()
                .expect("the server accepts the client");
        }
        let mut buf = Vec::new();
        server.write_tls(&mut buf).expect("server writes");
        let mut unread = buf.as_slice();
        while !unread.is_empty() {
            client.read_tls(&mut unread).expect("client reads");
            client
                .process_new_packets()
                .expect("the client accepts the server");
        }
    }
    panic!("the in-memory handshake did not finish");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}
