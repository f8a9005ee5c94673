//! Sends each request to its gRPC service. `api.DiceService`, which nearly
//! every RPC is for, is called directly; health, reflection and the info API
//! go through tonic's router. The router (axum underneath) matches the path,
//! records it in the request and boxes the request and response bodies again,
//! work that is measurable on a RollDie that takes a few microseconds.

use std::convert::Infallible;
use std::task::{Context, Poll};

use dice_proto::api::dice_service_server::DiceServiceServer;
use futures_util::future::Either;
use http::{Request, Response};
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::service::Routes;
use tower::Service;

use crate::services::Dice;

/// The agent's gRPC services behind one path dispatch.
#[derive(Debug, Clone)]
pub struct Dispatch {
    dice: DiceServiceServer<Dice>,
    others: Routes,
}

/// The path prefix of `api.DiceService`'s methods.
const DICE_PREFIX: &str = "/api.DiceService/";

impl Dispatch {
    /// Serves `dice` directly and every other path through `others`.
    pub fn new(dice: DiceServiceServer<Dice>, others: Routes) -> Self {
        Self {
            dice,
            others: others.prepare(),
        }
    }
}

impl<B> Service<Request<B>> for Dispatch
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError> + Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    /// From `api.DiceService`, or from the router for any other path.
    type Future = Either<
        <DiceServiceServer<Dice> as Service<Request<B>>>::Future,
        <Routes as Service<Request<B>>>::Future,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are always ready: tonic's generated servers and its router
        // answer `Ready` without looking.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path().starts_with(DICE_PREFIX) {
            Either::Left(self.dice.call(request))
        } else {
            Either::Right(self.others.call(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn the_prefix_is_dice_services() {
        let name = <DiceServiceServer<Dice> as NamedService>::NAME;
        assert_eq!(DICE_PREFIX, format!("/{name}/"));
    }
}
