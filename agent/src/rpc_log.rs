//! Logs every RPC once it ends, as the old system's interceptor did: method,
//! gRPC status code, duration, authority, peer, user agent, plus the listener
//! and, on mTLS, the client certificate's subject and SANs.
//!
//! The gRPC status usually arrives in the trailers, at the end of the response
//! body, so the log line is written by the response body when it finishes (or
//! is dropped, when the client goes away first).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use tonic::Code;
use tower::{Layer, Service};

use crate::conn::ConnInfo;
use crate::metrics::{MethodLabels, RpcLabels};

/// The request header in which a trusted TLS-terminating proxy passes the
/// verified client certificate's subject (nginx: `$ssl_client_s_dn`).
pub const PROXY_CLIENT_SUBJECT_HEADER: &str = "x-client-subject";

/// Wraps the gRPC router so each RPC is logged when it ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLogLayer;

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> RpcLog<S> {
        RpcLog { inner }
    }
}

/// The service [`RpcLogLayer`] makes.
#[derive(Debug, Clone)]
pub struct RpcLog<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let mut record = RpcRecord::start(&request);
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            record.code = grpc_code(response.headers());
            Ok(response.map(|inner| LoggedBody {
                inner,
                record: Some(record),
            }))
        })
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
struct RpcRecord {
    started: Instant,
    method: String,
    authority: String,
    user_agent: String,
    conn: Option<ConnInfo>,
    proxy_client: Option<String>,
    code: Option<Code>,
}

impl RpcRecord {
    fn start<B>(request: &Request<B>) -> Self {
        let header = |name: http::header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| header(http::header::HOST));
        let conn = request.extensions().get::<ConnInfo>().cloned();
        // The record's life is the RPC's: it also feeds the connection's idle timer.
        if let Some(conn) = &conn {
            conn.activity.rpc_started();
        }
        // Anyone can send this header; only a listener behind a trusted proxy believes it.
        let proxy_client = conn
            .as_ref()
            .filter(|c| c.trusted_proxy)
            .and_then(|_| request.headers().get(PROXY_CLIENT_SUBJECT_HEADER))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Self {
            started: Instant::now(),
            method: request.uri().path().to_owned(),
            authority,
            user_agent: header(http::header::USER_AGENT),
            conn,
            proxy_client,
            code: None,
        }
    }
}

impl Drop for RpcRecord {
    fn drop(&mut self) {
        if let Some(conn) = &self.conn {
            conn.activity.rpc_ended();
        }
        let elapsed = self.started.elapsed();
        let duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // No status at all means the client went away before the RPC ended.
        let code = self.code.unwrap_or(Code::Cancelled);
        record_metrics(&self.method, code, elapsed.as_secs_f64());
        let conn = self.conn.as_ref();
        let client = conn.and_then(|c| c.client.as_deref());
        let subject = client
            .map(|c| c.subject.as_str())
            .or(self.proxy_client.as_deref());
        tracing::info!(
            target: "dice_agent::rpc",
            method = %self.method,
            code = code as i32,
            status = ?code,
            duration_us,
            authority = %self.authority,
            peer = %conn.map(|c| c.peer.to_string()).unwrap_or_default(),
            user_agent = %self.user_agent,
            listener = %conn.map(|c| &*c.listener).unwrap_or(""),
            client.subject = subject,
            client.via_proxy = self.proxy_client.is_some().then_some(true),
            client.sans = client.map(|c| c.sans.join(",")),
            "rpc"
        );
    }
}

fn record_metrics(method: &str, code: Code, seconds: f64) {
    // Paths of no service are labelled as one, so a peer cannot grow the label set.
    let method = if code == Code::Unimplemented {
        "other"
    } else {
        method
    };
    let metrics = crate::metrics::metrics();
    metrics
        .rpcs
        .get_or_create(&RpcLabels {
            method: method.to_owned(),
            code: format!("{code:?}"),
        })
        .inc();
    metrics
        .rpc_duration
        .get_or_create(&MethodLabels {
            method: method.to_owned(),
        })
        .observe(seconds);
}

fn grpc_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}
