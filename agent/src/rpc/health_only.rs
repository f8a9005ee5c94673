//! The dispatch of a `mode = "health"` listener: `grpc.health.v1.Health`
//! (Check and Watch) and nothing else. Every other path is answered here with
//! `UNIMPLEMENTED`, never handed to a service, so a plaintext port open to the
//! network reaches no API beyond "does this node serve".

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{Request, Response};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower::Service;

/// The path prefix of `grpc.health.v1.Health`'s methods.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// What a client calling anything else on a health listener is told.
pub const REFUSED: &str = "this is a health-only listener: it serves grpc.health.v1.Health and nothing else; call other services on an mtls listener";

/// Serves `grpc.health.v1.Health` and refuses every other path.
#[derive(Debug, Clone)]
pub struct HealthOnly {
    health: HealthServer<HealthService>,
}

impl HealthOnly {
    /// Serves `health` alone.
    pub fn new(health: HealthServer<HealthService>) -> Self {
        Self { health }
    }
}

impl<B> Service<Request<B>> for HealthOnly
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError> + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    /// From the health service, or the refusal made here.
    type Future = Either<
        <HealthServer<HealthService> as Service<Request<B>>>::Future,
        Ready<Result<Response<Body>, Infallible>>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // tonic's generated servers answer `Ready` without looking.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            Either::Left(self.health.call(request))
        } else {
            Either::Right(ready(Ok(Status::unimplemented(REFUSED).into_http())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn the_prefix_is_the_health_services() {
        let name = <HealthServer<HealthService> as NamedService>::NAME;
        assert_eq!(HEALTH_PREFIX, format!("/{name}/"));
    }
}
