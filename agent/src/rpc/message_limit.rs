//! A request message larger than `limits.max_message_bytes` fails with
//! `RESOURCE_EXHAUSTED`, the code gRPC specifies for a message over the
//! receiver's limit (grpc-core, grpc-go and grpc-java send it). tonic's decoder
//! refuses such a message before reading it, but says `OUT_OF_RANGE`; this
//! layer rewrites that one status, in the headers of a trailers-only response
//! (unary and server-streaming RPCs) or in the trailers (client streams),
//! and leaves every other response alone.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Response};
use http_body::{Body, Frame};

use super::headers::{GRPC_MESSAGE, GRPC_STATUS};

/// The start of tonic's `grpc-message` for a message over the limit, percent-encoded
/// as it is on the wire ("Error, decoded message length too large: found N bytes, ...").
const TOO_LARGE: &str = "Error,%20decoded%20message%20length%20too%20large";

/// `grpc-status` of `OUT_OF_RANGE` and of `RESOURCE_EXHAUSTED`.
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// Rewrites tonic's `OUT_OF_RANGE` for an oversize request to
/// `RESOURCE_EXHAUSTED`: in the headers of a trailers-only response (unary
/// and server-streaming RPCs) here, in the trailers (client streams) as the
/// body ends. The layer is `ServiceBuilder::map_response` with this function.
pub fn rewrite_response<B>(mut response: Response<B>) -> Response<TrailersRewrite<B>> {
    rewrite(response.headers_mut());
    response.map(|inner| TrailersRewrite { inner })
}

/// Sets `grpc-status` to `RESOURCE_EXHAUSTED` if `headers` carry tonic's
/// oversize-message `OUT_OF_RANGE`.
fn rewrite(headers: &mut HeaderMap) {
    let Some(status) = headers.get(GRPC_STATUS) else {
        return;
    };
    let too_large = status == OUT_OF_RANGE
        && headers
            .get(GRPC_MESSAGE)
            .and_then(|message| message.to_str().ok())
            .is_some_and(|message| message.starts_with(TOO_LARGE));
    if too_large {
        headers.insert(GRPC_STATUS, HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers get the same rewrite as the headers.
    pub struct TrailersRewrite<B> {
        #[pin]
        inner: B,
    }
}

impl<B: Body> Body for TrailersRewrite<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = self.project().inner.poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    rewrite(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers of a trailers-only response carrying `status`, as tonic writes them.
    fn headers(status: tonic::Status) -> HeaderMap {
        status.into_http::<()>().headers().clone()
    }

    #[test]
    fn only_the_oversize_message_status_is_rewritten() {
        // The message tonic's decoder uses (tonic/src/codec/decode.rs).
        let mut oversize = headers(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 4097 bytes, the limit is: 4096 bytes",
        ));
        rewrite(&mut oversize);
        assert_eq!(oversize["grpc-status"], RESOURCE_EXHAUSTED);

        let mut other = headers(tonic::Status::out_of_range("page 7 of 3"));
        rewrite(&mut other);
        assert_eq!(other["grpc-status"], OUT_OF_RANGE);

        let mut ok = HeaderMap::new();
        rewrite(&mut ok);
        assert!(ok.is_empty());
    }
}
