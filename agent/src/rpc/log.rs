//! Logs every RPC once it ends, as the old system's interceptor did: method,
//! gRPC status code, duration, authority, peer, user agent, plus the listener
//! and, on mTLS, the client certificate's subject and SANs.
//!
//! The gRPC status usually arrives in the trailers, at the end of the response
//! body, so the log line is written by the response body when it finishes (or
//! is dropped, when the client goes away first).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use tonic::Code;
use tower::Service;

use super::headers::GRPC_STATUS;
use crate::log::{RpcLine, RpcSink};
use crate::net::ConnInfo;

/// The request header in which a trusted TLS-terminating proxy passes the
/// verified client certificate's subject (nginx: `$ssl_client_s_dn`).
pub const PROXY_CLIENT_SUBJECT_HEADER: &str = "x-client-subject";

/// Wraps the gRPC services so each RPC is logged, to its sink, when it ends.
#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
    sink: RpcSink,
    /// A health listener's: each line is logged at `DEBUG`.
    probes: bool,
}

impl<S> RpcLog<S> {
    /// Logs the RPCs `inner` serves to `sink`.
    pub fn new(inner: S, sink: RpcSink) -> Self {
        Self {
            inner,
            sink,
            probes: false,
        }
    }

    /// Logs the RPCs of a health listener, at `DEBUG`: they are probes sent
    /// every few seconds. They are counted in the metrics as any RPC.
    pub fn probes(inner: S) -> Self {
        Self {
            inner,
            sink: RpcSink::default(),
            probes: true,
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let mut record = RpcRecord::start(&request, self.sink);
        record.probe = self.probes;
        RpcLogFuture {
            inner: self.inner.call(request),
            record: Some(record),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`RpcLog`], its body carrying the RPC's record. If the
    /// future is dropped first (the client went away), the record logs then.
    pub struct RpcLogFuture<F> {
        #[pin]
        inner: F,
        record: Option<RpcRecord>,
    }
}

impl<F, B, E> Future for RpcLogFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<LoggedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let mut record = this.record.take().expect("polled after completion");
        record.code = grpc_code(response.headers());
        Poll::Ready(Ok(response.map(|inner| LoggedBody {
            inner,
            record: Some(record),
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that logs its RPC when it ends.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        record: Option<RpcRecord>,
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(trailers), Some(record)) = (frame.trailers_ref(), this.record.as_mut())
                {
                    record.code = grpc_code(trailers).or(record.code);
                    this.record.take();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(record) = this.record.as_mut() {
                    record.code = record.code.or(Some(Code::Internal));
                }
                this.record.take();
            }
            Poll::Ready(None) => {
                this.record.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// What is known about one RPC; logs itself when dropped.
///
/// Everything taken from the request is a cheap clone of the request's own
/// bytes (`Bytes`-backed URI parts and header values), not a `String`: the
/// record is made for every RPC, and text is only needed if the line is written.
struct RpcRecord {
    started: Instant,
    path: Option<PathAndQuery>,
    authority: Option<Authority>,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    conn: Option<Arc<ConnInfo>>,
    proxy_client: Option<HeaderValue>,
    code: Option<Code>,
    sink: RpcSink,
    /// Logged at `DEBUG` (a health listener's probe).
    probe: bool,
}

impl RpcRecord {
    fn start<B>(request: &Request<B>, sink: RpcSink) -> Self {
        let headers = request.headers();
        let authority = request.uri().authority().cloned();
        let started = Instant::now();
        let conn = request.extensions().get::<Arc<ConnInfo>>().cloned();
        // The record's life is the RPC's: it also feeds the connection's idle timer.
        if let Some(conn) = &conn {
            conn.activity.rpc_started(started);
        }
        // Anyone can send this header; only a listener behind a trusted proxy believes it.
        let proxy_client = conn
            .as_ref()
            .filter(|c| c.trusted_proxy)
            .and_then(|_| headers.get(PROXY_CLIENT_SUBJECT_HEADER))
            .filter(|v| v.to_str().is_ok())
            .cloned();
        Self {
            started,
            path: request.uri().path_and_query().cloned(),
            host: if authority.is_none() {
                headers.get(http::header::HOST).cloned()
            } else {
                None
            },
            authority,
            user_agent: headers.get(http::header::USER_AGENT).cloned(),
            conn,
            proxy_client,
            code: None,
            sink,
            probe: false,
        }
    }
}

/// A header's text, or `""` if it is not visible ASCII.
fn text(value: Option<&HeaderValue>) -> &str {
    value.and_then(|v| v.to_str().ok()).unwrap_or("")
}

impl Drop for RpcRecord {
    fn drop(&mut self) {
        let ended = Instant::now();
        if let Some(conn) = &self.conn {
            conn.activity.rpc_ended(ended);
        }
        let elapsed = ended.saturating_duration_since(self.started);
        let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // No status at all means the client went away before the RPC ended.
        let code = self.code.unwrap_or(Code::Cancelled);
        let method = self.path.as_ref().map_or("/", PathAndQuery::path);
        crate::metrics::record_rpc(method, code, elapsed.as_secs_f64());
        let conn = self.conn.as_ref();
        let client = conn.and_then(|c| c.client.as_deref());
        let proxy_client = self.proxy_client.as_ref().and_then(|v| v.to_str().ok());
        let authority = match &self.authority {
            Some(authority) => authority.as_str(),
            None => text(self.host.as_ref()),
        };
        let line = RpcLine {
            method,
            code,
            duration_us,
            authority,
            peer: conn.map(|c| &*c.peer_text),
            user_agent: text(self.user_agent.as_ref()),
            listener: conn.map_or("", |c| &*c.listener),
            client_subject: client.map(|c| c.subject.as_str()).or(proxy_client),
            via_proxy: proxy_client.is_some(),
            client_sans: client.map(|c| c.sans.as_slice()),
        };
        if self.probe {
            line.log_probe();
        } else {
            line.log(self.sink);
        }
    }
}

fn grpc_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get(GRPC_STATUS)?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}
