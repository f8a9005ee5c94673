//! `kind = "http_sd"`: a GET of a Prometheus HTTP SD endpoint over HTTP/1.1,
//! plain or HTTPS (the server's certificate checked against `ca`, a client
//! certificate presented if `cert` and `key` are set).
//!
//! The reply must be status 200 with `Content-Type: application/json` and at
//! most [`MAX_BODY`] bytes; anything else fails the source with what was
//! wrong. The caller bounds the whole exchange.

use std::sync::Arc;

use dice_proto::pem::{load_certs, load_key};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::PemFile;

/// The largest reply accepted: 64 MiB, about 500,000 targets.
pub const MAX_BODY: usize = 64 << 20;

/// The TLS client configuration for an `https` endpoint: roots from `ca`, and
/// the client certificate if given. Errors name the fleet file, line and key.
pub fn tls_config(
    ca: &PemFile,
    identity: Option<&(PemFile, PemFile)>,
) -> Result<Arc<ClientConfig>, String> {
    let pem =
        |file: &PemFile, what: &str| format!("{}: {}: {what}", file.source, file.path.display());
    let certs = load_certs(&ca.path).map_err(|error| pem(ca, &error.to_string()))?;
    let mut roots = RootCertStore::empty();
    if roots.add_parsable_certificates(certs).0 == 0 {
        return Err(pem(ca, "no usable CA certificate"));
    }
    let builder = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("cannot build the TLS configuration: {error}"))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = load_certs(&cert.path).map_err(|error| pem(cert, &error.to_string()))?;
            let private_key = load_key(&key.path).map_err(|error| pem(key, &error.to_string()))?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|error| pem(key, &format!("does not go with the certificate: {error}")))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// GETs `url` and returns the body of a 200 `application/json` reply.
pub async fn get(url: &http::Uri, tls: Option<Arc<ClientConfig>>) -> Result<Bytes, String> {
    let host = url.host().unwrap_or_default();
    let https = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(|error| format!("cannot connect to {host}:{port}: {error}"))?;
    if !https {
        return exchange(url, tcp).await;
    }
    let Some(tls) = tls else {
        return Err("an https url needs ca (set it in the [[discovery]] entry)".to_owned());
    };
    let server_name = ServerName::try_from(bare.to_owned())
        .map_err(|_| format!("{host}: not a DNS name or IP address"))?;
    let stream = TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|error| format!("TLS handshake with {host}:{port} failed: {error}"))?;
    exchange(url, stream).await
}

async fn exchange<S>(url: &http::Uri, stream: S) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake failed: {error}"))?;
    // The connection is driven beside the request; it ends when the reply is read.
    let driver = tokio::spawn(connection);
    let authority = url.authority().map(|a| a.as_str()).unwrap_or_default();
    let request = http::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            format!("dicectl/{}", dice_proto::VERSION),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|error| format!("cannot build the request: {error}"))?;
    let reply = sender
        .send_request(request)
        .await
        .map_err(|error| format!("no HTTP reply: {error}"))?;
    let status = reply.status();
    if status != http::StatusCode::OK {
        driver.abort();
        return Err(format!(
            "HTTP status {status} (expected 200 OK: check the endpoint and its log)"
        ));
    }
    let content_type = reply
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        driver.abort();
        return Err(format!(
            "Content-Type {content_type:?} (expected application/json, the Prometheus HTTP SD format)"
        ));
    }
    let body = Limited::new(reply.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|error| format!("cannot read the reply: {error} (at most {MAX_BODY} bytes)"))?;
    driver.abort();
    Ok(body.to_bytes())
}
