//! In-process gRPC clients for the agent, over mTLS or h2c: roll, health,
//! reflection and agent info.

use std::error::Error;
use std::net::SocketAddr;

use dice_proto::api::RollDieRequest;
use dice_proto::api::dice_service_client::DiceServiceClient;
use dice_proto::info::agent_info_service_client::AgentInfoServiceClient;
use dice_proto::info::{AgentInfo, GetInfoRequest};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_reflection::pb::v1 as reflection_v1;
use tonic_reflection::pb::v1alpha as reflection_v1alpha;

/// Asks a server's reflection service (`$version`, `v1` or `v1alpha`: the
/// two generated APIs are identical but for their module) to list its
/// services, over `$channel`.
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use $version::server_reflection_client::ServerReflectionClient;
        use $version::server_reflection_request::MessageRequest;
        use $version::server_reflection_response::MessageResponse;

        let mut client = ServerReflectionClient::new($channel);
        let request = $version::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::once(request))
            .await?
            .into_inner();
        match stream.message().await? {
            Some($version::ServerReflectionResponse {
                message_response: Some(MessageResponse::ListServicesResponse(list)),
                ..
            }) => Ok(list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect()),
            other => Err(Status::internal(format!(
                "unexpected reflection answer: {other:?}"
            ))),
        }
    }};
}

pub use crate::handshake::{Handshake, HandshakeError, HandshakeStage, handshake};
pub use crate::tls::TlsClient;
pub use tonic_health::pb::health_check_response::ServingStatus;

/// A gRPC connection to one agent listener (one HTTP/2 connection, reconnected by tonic if lost).
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to an mTLS listener with the `tls` profile. Errors are the
    /// whole error chain as text.
    pub async fn mtls(addr: SocketAddr, tls: &TlsClient) -> Result<Client, String> {
        Ok(Self {
            channel: tls.channel(addr).await?,
        })
    }

    /// Connects to an h2c (plaintext HTTP/2) listener.
    pub async fn h2c(addr: SocketAddr) -> Result<Client, String> {
        let channel = crate::tls::endpoint(addr)?
            .connect()
            .await
            .map_err(|error| error_chain(&error))?;
        Ok(Self { channel })
    }

    /// The underlying channel, for other generated clients.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Calls `/api.DiceService/RollDie` and returns the value rolled.
    pub async fn roll(&self) -> Result<i32, Status> {
        let mut client = DiceServiceClient::new(self.channel.clone());
        let response = client.roll_die(RollDieRequest {}).await?;
        Ok(response.into_inner().value)
    }

    /// Calls `grpc.health.v1.Health/Check` for `service` (`""` for the whole server).
    pub async fn health(&self, service: &str) -> Result<ServingStatus, Status> {
        let mut client = HealthClient::new(self.channel.clone());
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let response = client.check(request).await?.into_inner();
        Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
    }

    /// Opens `grpc.health.v1.Health/Watch` for `service`: a long-lived
    /// server-streaming call that reports every status change.
    pub async fn watch_health(
        &self,
        service: &str,
    ) -> Result<Streaming<HealthCheckResponse>, Status> {
        let mut client = HealthClient::new(self.channel.clone());
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        Ok(client.watch(request).await?.into_inner())
    }

    /// Lists services through gRPC reflection v1.
    pub async fn list_services(&self) -> Result<Vec<String>, Status> {
        list_services!(reflection_v1, self.channel.clone())
    }

    /// Lists services through gRPC reflection v1alpha.
    pub async fn list_services_v1alpha(&self) -> Result<Vec<String>, Status> {
        list_services!(reflection_v1alpha, self.channel.clone())
    }

    /// Calls `dice.agent.v1.AgentInfoService/GetInfo`.
    pub async fn info(&self) -> Result<AgentInfo, Status> {
        let mut client = AgentInfoServiceClient::new(self.channel.clone());
        Ok(client.get_info(GetInfoRequest {}).await?.into_inner())
    }
}

/// Connects over mTLS and rolls once; any failure (connect, TLS or RPC) comes
/// back as text with its whole error chain.
pub async fn roll_once(addr: SocketAddr, tls: &TlsClient) -> Result<i32, String> {
    let client = Client::mtls(addr, tls).await?;
    client.roll().await.map_err(|status| status_chain(&status))
}

/// Whether a failed RPC failed *cleanly* while a server shuts down: it was
/// refused before the server processed it, so a client may retry it elsewhere.
///
/// Clean: a connection the server no longer accepts (connection refused), a
/// stream the server refused (`REFUSED_STREAM`) or its GOAWAY excluded, and
/// `CANCELLED` from the client side (a request never sent because its
/// connection was closing). Broken: a stream the server reset otherwise, a
/// connection closed or reset mid-call, a protocol error, and any other code,
/// `UNAVAILABLE` included.
pub fn is_clean_refusal(status: &Status) -> bool {
    let mut sources = Vec::new();
    let mut source: Option<&(dyn Error + 'static)> = Some(status);
    while let Some(error) = source {
        sources.push(error);
        source = error.source();
    }
    let h2_errors = || {
        sources
            .iter()
            .filter_map(|error| error.downcast_ref::<h2::Error>())
    };
    let refused_by_h2 = || {
        h2_errors().any(|h2| {
            (h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR))
                || h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        })
    };
    match status.code() {
        Code::Unavailable => {
            let connection_refused = sources.iter().any(|error| {
                error
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            });
            connection_refused || refused_by_h2()
        }
        Code::Cancelled => !h2_errors().any(|h2| h2.is_reset() && h2.is_remote()),
        _ => refused_by_h2(),
    }
}

/// An error and all its sources, joined with `: `.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A status's code and message plus its error sources, as text.
pub fn status_chain(status: &Status) -> String {
    error_chain(status)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn unavailable_from(source: impl Error + Send + Sync + 'static) -> Status {
        let mut status = Status::unavailable("transport error");
        status.set_source(Arc::new(source));
        status
    }

    #[test]
    fn a_refused_connection_is_clean() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(is_clean_refusal(&unavailable_from(refused)));
    }

    #[test]
    fn an_unavailable_call_cut_off_mid_way_is_not_clean() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!is_clean_refusal(&unavailable_from(reset)));
        assert!(!is_clean_refusal(&Status::unavailable(
            "error reading a body from connection"
        )));
    }
}
