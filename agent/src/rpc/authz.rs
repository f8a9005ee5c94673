//! Authorization beyond "any certificate from the CA": a listener's `allow`
//! list names the client identities it serves. An identity is a DNS or URI
//! subject alternative name (`spiffe://...` included) or the subject's common
//! name; a pattern matches it exactly, or with `*` standing for any run of
//! characters. The decision is made once per connection, at the handshake;
//! every RPC on a denied connection fails with `PERMISSION_DENIED`.

use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use tower::Service;

use crate::net::ConnInfo;
use crate::tls::ClientIdentity;

/// The client identities a listener serves; empty means any verified client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<String>,
}

impl AllowList {
    /// An allow list of `patterns`.
    pub fn new(patterns: Vec<String>) -> Self {
        Self { patterns }
    }

    /// Whether the list is empty, so any verified client is served.
    pub fn allows_any(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns, as configured.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `client` holds an identity some pattern matches.
    pub fn allows(&self, client: &ClientIdentity) -> bool {
        self.allows_any()
            || client.identities().any(|identity| {
                self.patterns
                    .iter()
                    .any(|pattern| glob_match(pattern, identity))
            })
    }
}

/// Matches `text` against `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Refuses every RPC on a connection whose client the allow list denied.
#[derive(Debug, Clone)]
pub struct Authz<S> {
    inner: S,
}

impl<S> Authz<S> {
    /// Serves `inner` to allowed clients only.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

/// The response of [`Authz`]: the inner service's, or `PERMISSION_DENIED`
/// at once. Not a boxed future: it is made for every RPC.
pub type AuthzFuture<F, E> = Either<F, Ready<Result<Response<tonic::body::Body>, E>>>;

impl<S, ReqBody> Service<Request<ReqBody>> for Authz<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = AuthzFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let denied = request
            .extensions()
            .get::<Arc<ConnInfo>>()
            .is_some_and(|c| c.denied);
        if denied {
            let status = tonic::Status::permission_denied(
                "this client certificate is not in the listener's allow list",
            );
            return Either::Right(std::future::ready(Ok(status.into_http())));
        }
        Either::Left(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_stars() {
        let cases = [
            ("dicectl", "dicectl", true),
            ("dicectl", "dicectl2", false),
            ("*.fleet.example", "a.fleet.example", true),
            ("*.fleet.example", "fleet.example", false),
            (
                "spiffe://dice/ns/*/sa/web",
                "spiffe://dice/ns/prod/sa/web",
                true,
            ),
            (
                "spiffe://dice/ns/*/sa/web",
                "spiffe://dice/ns/prod/sa/db",
                false,
            ),
            ("*", "anything", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYcZ", false),
            ("ab*ba", "aba", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn allow_list_checks_sans_and_common_name() {
        let client = ClientIdentity {
            subject: "CN=web-1, O=dice".into(),
            common_name: Some("web-1".into()),
            sans: vec![
                "DNS:web-1.fleet.example".into(),
                "URI:spiffe://dice/web".into(),
            ],
        };
        assert!(AllowList::default().allows(&client));
        assert!(AllowList::new(vec!["web-*".into()]).allows(&client));
        assert!(AllowList::new(vec!["spiffe://dice/web".into()]).allows(&client));
        assert!(AllowList::new(vec!["*.fleet.example".into()]).allows(&client));
        assert!(!AllowList::new(vec!["spiffe://dice/db".into(), "db-*".into()]).allows(&client));
        // The SAN type prefix is not part of the identity.
        assert!(!AllowList::new(vec!["DNS:*".into()]).allows(&client));
    }
}
