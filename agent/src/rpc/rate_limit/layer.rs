//! The per-RPC layer: a client over its listener's `rpc_rate` gets
//! `RESOURCE_EXHAUSTED` at once, with a message naming the limit. The client
//! is its certificate's subject on mTLS listeners, the proxy's
//! `x-client-subject` header on `trusted_proxy` listeners, else the peer IP.

use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{HeaderMap, Request, Response};
use tower::Service;
use tracing::debug;

use super::limiter::{ListenerLimiter, RateLimiters};
use crate::net::ConnInfo;
use crate::rpc::log::PROXY_CLIENT_SUBJECT_HEADER;

/// The target of this module's events.
const TARGET: &str = "dice_agent::rate_limit";

/// Refuses RPCs over their client's rate.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiters: Arc<RateLimiters>,
}

impl<S> RateLimit<S> {
    /// Serves `inner` to clients within the limits of `limiters`.
    pub fn new(inner: S, limiters: Arc<RateLimiters>) -> Self {
        Self { inner, limiters }
    }
}

/// The response of [`RateLimit`]: the inner service's, or
/// `RESOURCE_EXHAUSTED` at once. Not boxed: it is made for every RPC.
pub type RateLimitFuture<F, E> = Either<F, Ready<Result<Response<tonic::body::Body>, E>>>;

impl<S, ReqBody> Service<Request<ReqBody>> for RateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if self.limiters.any_rpc()
            && let Some(info) = request.extensions().get::<Arc<ConnInfo>>()
            && let Some(Some(message)) = self.limiters.with_listener(&info.listener, |limiter| {
                check(limiter, info, request.headers())
            })
        {
            debug!(target: TARGET, listener = %info.listener, peer = %info.peer, "{message}");
            let status = tonic::Status::resource_exhausted(message);
            return Either::Right(std::future::ready(Ok(status.into_http())));
        }
        Either::Left(self.inner.call(request))
    }
}

/// Who the client is, as the limiter keys it.
enum Client<'a> {
    Identity(&'a [u8]),
    Ip(std::net::IpAddr),
}

fn client<'a>(info: &'a ConnInfo, headers: &'a HeaderMap) -> Client<'a> {
    if let Some(client) = &info.client {
        return Client::Identity(client.subject.as_bytes());
    }
    if info.trusted_proxy
        && let Some(subject) = headers.get(PROXY_CLIENT_SUBJECT_HEADER)
    {
        return Client::Identity(subject.as_bytes());
    }
    Client::Ip(info.peer.ip())
}

/// `None` if the RPC may go on, else the message that refuses it.
fn check(limiter: &ListenerLimiter, info: &ConnInfo, headers: &HeaderMap) -> Option<String> {
    if !limiter.rpc.is_on() {
        return None;
    }
    let client = client(info, headers);
    let key = match client {
        Client::Identity(identity) => limiter.identity_key(identity),
        Client::Ip(ip) => limiter.ip_key(ip),
    };
    if limiter.rpc.admit(key) {
        return None;
    }
    let who = match client {
        Client::Identity(identity) => String::from_utf8_lossy(identity).into_owned(),
        Client::Ip(ip) => ip.to_string(),
    };
    Some(refusal(&who, limiter))
}

/// The message of a refused RPC: the client, the limit and what to do.
fn refusal(who: &str, limiter: &ListenerLimiter) -> String {
    let settings = limiter.settings();
    let rate = settings
        .rpc_rate
        .map_or_else(|| "none".to_owned(), |r| r.to_string());
    format!(
        "rate limit: client {who} exceeds limits.rpc_rate = {rate} (burst {}) on listener {}; retry later",
        settings.rpc_burst(),
        limiter.name
    )
}
