//! `limits.request_timeout`: an RPC that has not answered within the limit,
//! or within the client's own deadline (`grpc-timeout`) if that is shorter,
//! fails with `CANCELLED` ("Timeout expired"), as tonic's server timeout
//! does. The timer is only made if the RPC does not answer on its first
//! poll, so a quick RPC never touches the runtime's timer: making one reads
//! the clock and takes a reference to the runtime, shared by every worker.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tokio::time::Sleep;
use tower::Service;

use super::headers::GRPC_TIMEOUT;

/// Bounds every RPC's time to answer by `limit` (and the client's deadline).
#[derive(Debug, Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> RequestTimeout<S> {
    /// Cancels the RPCs of `inner` that take longer than `limit`.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

impl<S, ReqBody> Service<Request<ReqBody>> for RequestTimeout<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = RequestTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let limit = match client_deadline(request.headers()) {
            Some(deadline) => deadline.min(self.limit),
            None => self.limit,
        };
        RequestTimeoutFuture {
            inner: self.inner.call(request),
            limit,
            sleep: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of [`RequestTimeout`]: the inner service's, or
    /// `CANCELLED` once the time is up, counted from the first poll.
    pub struct RequestTimeoutFuture<F> {
        #[pin]
        inner: F,
        limit: Duration,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F, E> Future for RequestTimeoutFuture<F>
where
    F: Future<Output = Result<Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let ready @ Poll::Ready(_) = this.inner.poll(cx) {
            return ready;
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.limit)));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            std::task::ready!(sleep.poll(cx));
        }
        Poll::Ready(Ok(tonic::Status::cancelled("Timeout expired").into_http()))
    }
}

/// The client's deadline from `grpc-timeout` (gRPC over HTTP/2: at most 8
/// digits and a unit, `H`, `M`, `S`, `m`, `u` or `n`); `None` if it is
/// absent or malformed, as tonic treats it.
fn client_deadline(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount = digits
        .iter()
        .fold(0u64, |sum, digit| sum * 10 + u64::from(digit - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, value.parse().expect("header value"));
        client_deadline(&headers)
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(deadline("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(deadline("3M"), Some(Duration::from_secs(180)));
        assert_eq!(deadline("5S"), Some(Duration::from_secs(5)));
        assert_eq!(deadline("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            deadline("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(deadline("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(client_deadline(&HeaderMap::new()), None);
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for value in ["", "S", "100", "123456789S", "1.5S", "-1S", "10s", "10 S"] {
            assert_eq!(deadline(value), None, "{value:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_rpc_is_cancelled_at_the_shorter_deadline() {
        let stalled = tower::service_fn(|_: Request<()>| {
            std::future::pending::<Result<Response<tonic::body::Body>, std::convert::Infallible>>()
        });
        let mut service = RequestTimeout::new(stalled, Duration::from_secs(30));
        let request = Request::builder()
            .header(GRPC_TIMEOUT, "2S")
            .body(())
            .expect("request");
        let started = tokio::time::Instant::now();
        let response = service.call(request).await.expect("a response");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let status = tonic::Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::Cancelled);
        assert_eq!(status.message(), "Timeout expired");
    }
}
