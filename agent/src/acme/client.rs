//! The HTTPS client instant-acme talks through: one HTTP/1.1 connection per
//! request over rustls (*ring*), trusting `[acme] ca` or the system roots.
//! ACME makes a handful of requests per renewal, so nothing is pooled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use instant_acme::{BodyWrapper, BytesResponse, Error, HttpClient};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::AcmeConfig;

/// How long one request (connect, handshake, response) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTPS client for the ACME server.
#[derive(Clone)]
pub struct Https {
    tls: TlsConnector,
}

impl Https {
    /// A client trusting `config.ca`, or the system roots when it is unset.
    pub fn new(config: &AcmeConfig) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        match &config.ca {
            Some(ca) => {
                let certs = dice_proto::pem::load_certs(&ca.path)
                    .map_err(|e| format!("{}: {e}", ca.locate()))?;
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: unusable CA certificate: {e}", ca.locate()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err("no system root certificates found to check the ACME server with (install ca-certificates, or set [acme] ca)".to_owned());
                }
            }
        }
        let tls = ClientConfig::builder_with_provider(dice_proto::crypto::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot build the ACME client's TLS config: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: TlsConnector::from(Arc::new(tls)),
        })
    }

    async fn send(
        tls: TlsConnector,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Result<BytesResponse, String> {
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("https") {
            return Err(format!("{uri}: not an https URL"));
        }
        let host = uri.host().ok_or_else(|| format!("{uri}: no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let name =
            ServerName::try_from(host.clone()).map_err(|e| format!("{uri}: bad host name: {e}"))?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{host}:{port}: {e}"))?;
        tokio::spawn(connection);
        let method = request.method().clone();
        let (mut parts, body) = request.into_parts();
        // HTTP/1.1 wants a Host header; the URI stays absolute-form-free.
        if let Ok(value) =
            http::HeaderValue::from_str(uri.authority().map_or(&host, |a| a.as_str()))
        {
            parts.headers.insert(http::header::HOST, value);
        }
        parts.uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| format!("{uri}: {e}"))?;
        let response = sender
            .send_request(http::Request::from_parts(parts, body))
            .await
            .map_err(|e| format!("{method} {uri}: {e}"))?;
        // The only GET instant-acme sends is for the directory: anything but
        // a success there means the URL is not an ACME directory.
        if method == http::Method::GET && !response.status().is_success() {
            return Err(format!(
                "GET {uri}: HTTP {}: not an ACME directory (check [acme] directory)",
                response.status()
            ));
        }
        Ok(BytesResponse::from(response))
    }
}

impl HttpClient for Https {
    fn request(
        &self,
        request: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            let uri = request.uri().clone();
            match tokio::time::timeout(REQUEST_TIMEOUT, Self::send(tls, request)).await {
                Ok(result) => result.map_err(|message| Error::Other(message.into())),
                Err(_) => Err(Error::Other(
                    format!("{uri}: no response within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}
