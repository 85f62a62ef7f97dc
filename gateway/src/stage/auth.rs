//! auth: `Authorization: Bearer <project token>` for endpoints that are not public.
//!
//! Exactly one Authorization header with the Bearer scheme and a well-formed token (RFC 6750
//! `b64token`) is accepted; everything else is a 401 with `WWW-Authenticate: Bearer`. Tokens
//! are compared by SHA-256 in constant time, against every token of the project. Tokens in
//! the query string are never looked at. The header is removed before forwarding: the
//! project token is Portico's credential, not the worker's.

use std::sync::Arc;

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::access::EndpointAccess;
use crate::endpoint::Endpoint;
use crate::error::{AuthFailure, ProxyError};
use crate::metrics::DenyReason;

/// Checks the request's bearer token; returns the token's name (the caller identity), or
/// `None` on a public endpoint.
pub fn check(
    endpoint: &Endpoint,
    access: &EndpointAccess,
    headers: &mut HeaderMap,
) -> Result<Option<Arc<str>>, ProxyError> {
    if access.public {
        return Ok(None);
    }
    let verdict = match bearer(headers) {
        Err(failure) => Err(failure),
        Ok(token) => access.verify(token).ok_or(AuthFailure::InvalidToken),
    };
    match verdict {
        Ok(credential) => {
            credential.requests.increment(1);
            let name = Arc::clone(&credential.name);
            headers.remove(AUTHORIZATION);
            Ok(Some(name))
        }
        Err(failure) => {
            endpoint.metrics.denied(match failure {
                AuthFailure::InvalidToken => DenyReason::InvalidToken,
                AuthFailure::Missing => DenyReason::MissingToken,
                AuthFailure::Malformed(_) => DenyReason::MalformedAuthorization,
            });
            Err(ProxyError::Unauthorized(failure))
        }
    }
}

/// The token of the one `Authorization: Bearer` header (the admin listener checks its token
/// with this too).
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthFailure> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthFailure::Missing)?;
    if values.next().is_some() {
        return Err(AuthFailure::Malformed("more than one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthFailure::Malformed("the Authorization header is not ASCII"))?;
    if value.trim().is_empty() {
        return Err(AuthFailure::Missing);
    }
    let (scheme, token) = value.split_once(' ').ok_or(AuthFailure::Malformed(
        "expected `Authorization: Bearer <token>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::Malformed("only the Bearer scheme is accepted"));
    }
    let token = token.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err(AuthFailure::Malformed(
            "the bearer token is empty or malformed",
        ));
    }
    Ok(token)
}

/// RFC 6750 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn bearer_of(values: &[&[u8]]) -> Result<String, AuthFailure> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        }
        bearer(&headers).map(str::to_string)
    }

    /// Well-formed headers give the token; the scheme is case-insensitive.
    #[test]
    fn reads_bearer_tokens() {
        assert_eq!(bearer_of(&[b"Bearer ptk_abc"]).unwrap(), "ptk_abc");
        assert_eq!(bearer_of(&[b"bearer ptk_abc"]).unwrap(), "ptk_abc");
        assert_eq!(
            bearer_of(&[b"BEARER  a.b-c~d+e/f=="]).unwrap(),
            "a.b-c~d+e/f=="
        );
    }

    /// Every bad form is refused, and says which way.
    #[test]
    fn refuses_bad_headers() {
        assert_eq!(bearer_of(&[]), Err(AuthFailure::Missing));
        assert_eq!(bearer_of(&[b""]), Err(AuthFailure::Missing));
        assert_eq!(bearer_of(&[b"   "]), Err(AuthFailure::Missing));
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer ===",
            b"Basic dXNlcjpwYXNz",
            b"Token ptk_abc",
            b"Bearer ptk abc",
            b"Bearer ptk_abc,Bearer x",
            b"Bearer \xff\xfe",
        ] {
            assert!(
                matches!(bearer_of(&[bad]), Err(AuthFailure::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            bearer_of(&[b"Bearer a", b"Bearer b"]),
            Err(AuthFailure::Malformed(_))
        ));
    }
}
