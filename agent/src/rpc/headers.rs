//! The gRPC headers the layers read or write, named once rather than parsed
//! at every lookup.

use http::HeaderName;

/// The RPC's status code, in a trailers-only response's headers or in the trailers.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The status message that goes with [`GRPC_STATUS`].
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// The header in which a gRPC client sends its deadline.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
