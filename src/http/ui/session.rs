//! Dashboard sessions: `/ui/sign-in` exchanges an API token for a random session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` when `server.secure_cookies`), stored as its
//! SHA-256 with the token's name and an expiry; `/ui/sign-out` deletes it.
//!
//! - A session stands for its token as configured *now*: a token removed from the config ends
//!   its sessions, a token made read-only is read-only in them.
//! - Every state-changing form is CSRF-protected twice: its `Origin` (or `Referer`) must be
//!   this server, and it carries `csrf`, an HMAC-SHA256 of a fixed label keyed by the session's
//!   cookie value, which a page of another site can neither read nor compute.
//! - The cookie authenticates pages and the read API (`auth::Reader`, so the deploy page's
//!   `EventSource` works); the JSON write API stays bearer-only.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::super::error::ApiError;
use super::UiError;
use crate::config::ApiToken;
use crate::services::Services;

/// The session cookie's name.
pub(in crate::http) const COOKIE: &str = "dockhand_session";

/// The label a session's CSRF token is the HMAC of.
const CSRF_LABEL: &[u8] = b"dockhand dashboard csrf v1";

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 §5.4: `; `-separated
/// `name=value` pairs, possibly over several headers), if it is there exactly once.
pub(in crate::http) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'));
    match (found.next(), found.next()) {
        (Some(v), None) if !v.is_empty() => Some(v),
        _ => None,
    }
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The token the request's session cookie stands for: `Ok(None)` without a cookie; 401 when the
/// session is unknown, expired, signed out, or its token is no longer configured.
pub(in crate::http) async fn cookie_token(
    headers: &HeaderMap,
    state: &Services,
) -> Result<Option<ApiToken>, ApiError> {
    let Some(value) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let gone = || {
        ApiError::Unauthenticated(
            "session expired or signed out: sign in again at /ui/sign-in".into(),
        )
    };
    let name = state
        .store
        .session(&digest(value))
        .await?
        .ok_or_else(gone)?;
    let token = state.config.tokens.iter().find(|t| t.name == name).cloned();
    token.map(Some).ok_or_else(gone)
}

/// Start a session for `token`: its cookie, to send with `Set-Cookie`.
pub(super) async fn start(state: &Services, token: &ApiToken) -> Result<HeaderValue, ApiError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness for a session: {e}"))?;
    let value = hex::encode(raw);
    let ttl = state.config.server.session_ttl;
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    state
        .store
        .create_session(&digest(&value), &token.name, ttl_ms)
        .await?;
    let secure = if state.config.server.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs()
    );
    HeaderValue::from_str(&cookie).map_err(|e| ApiError::Internal(e.into()))
}

/// End the request's session, if any: the `Set-Cookie` that clears it.
pub(super) async fn end(state: &Services, headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    if let Some(value) = cookie(headers, COOKIE) {
        state.store.delete_session(&digest(value)).await?;
    }
    let secure = if state.config.server.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .map_err(|e| ApiError::Internal(e.into()))
}

/// Who is looking at a page: a signed-in token, or nobody while no token is configured (the
/// read API is open then, and so are the pages, without actions).
pub(super) struct Viewer {
    pub token: Option<ApiToken>,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: Option<String>,
}

impl Viewer {
    /// Whether this viewer may act (sign-in with a token that is not read-only).
    pub fn may_write(&self) -> bool {
        self.token.as_ref().is_some_and(|t| !t.read_only)
    }

    /// Whether this viewer may see app `name`.
    pub fn may(&self, app: &str) -> bool {
        self.token.as_ref().is_none_or(|t| t.may(app))
    }

    /// As the read API's caller.
    pub fn reader(&self) -> super::super::auth::Reader {
        super::super::auth::Reader(self.token.clone())
    }
}

impl FromRequestParts<Services> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &Services) -> Result<Self, UiError> {
        if state.config.tokens.is_empty() {
            return Ok(Viewer {
                token: None,
                csrf: None,
            });
        }
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/ui");
        match cookie_token(&parts.headers, state).await {
            Ok(Some(token)) => Ok(Viewer {
                csrf: cookie(&parts.headers, COOKIE).map(csrf_token),
                token: Some(token),
            }),
            Ok(None) | Err(ApiError::Unauthenticated(_)) => Err(UiError::SignIn(next.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}

/// The CSRF token of the session whose cookie value is `value`.
fn csrf_token(value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(value.as_bytes()).expect("HMAC takes any key");
    mac.update(CSRF_LABEL);
    hex::encode(mac.finalize().into_bytes())
}

/// Refuse a state-changing form unless it comes from a page of this server: its `Origin` (or,
/// without one, its `Referer`) names this host, and — when a session is needed — its `csrf`
/// field is the session's token.
pub(super) fn check_form(
    headers: &HeaderMap,
    state: &Services,
    csrf: Option<&str>,
    needs_session: bool,
) -> Result<(), UiError> {
    if !same_origin(headers, state.config.server.public_url.as_deref()) {
        return Err(UiError::Api(ApiError::Forbidden(
            "cross-site form refused: its Origin is not this server (reload the page and try again)"
                .into(),
        )));
    }
    if !needs_session {
        return Ok(());
    }
    let expected = cookie(headers, COOKIE).map(csrf_token);
    let ok = match (expected, csrf) {
        (Some(expected), Some(sent)) => bool::from(expected.as_bytes().ct_eq(sent.as_bytes())),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(UiError::Api(ApiError::Forbidden(
            "the form's CSRF token is missing or not this session's (reload the page and try again)"
                .into(),
        )))
    }
}

/// Whether the request's `Origin` (else `Referer`) is this server: the `Host` it was sent to,
/// or `public_url`'s host when dockhand sits behind a proxy that rewrites `Host`.
fn same_origin(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| url::Url::parse(v).ok());
    let Some(from) = from else { return false };
    let Some(from) = authority(&from) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let public = public_url
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| authority(&u));
    host.is_some_and(|h| h.eq_ignore_ascii_case(&from))
        || public.is_some_and(|p| p.eq_ignore_ascii_case(&from))
}

/// `host[:port]` of a URL, the port only when not the scheme's default (as `Host` says it).
fn authority(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn the_session_cookie_is_read_among_others_and_only_once() {
        let h = headers(&[(header::COOKIE, "a=1; dockhand_session=abc; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        let h = headers(&[
            (header::COOKIE, "a=1"),
            (header::COOKIE, "dockhand_session=x"),
        ]);
        assert_eq!(cookie(&h, COOKIE), Some("x"));
        // Two values (a cookie planted for a parent domain beside ours): neither is trusted.
        let h = headers(&[(header::COOKIE, "dockhand_session=x; dockhand_session=y")]);
        assert_eq!(cookie(&h, COOKIE), None);
        let h = headers(&[(header::COOKIE, "xdockhand_session=x")]);
        assert_eq!(cookie(&h, COOKIE), None);
    }

    #[test]
    fn a_form_is_same_origin_only_when_its_origin_is_the_host_it_was_sent_to() {
        let host = (header::HOST, "127.0.0.1:8080");
        assert!(same_origin(
            &headers(&[host.clone(), (header::ORIGIN, "http://127.0.0.1:8080")]),
            None
        ));
        assert!(!same_origin(
            &headers(&[host.clone(), (header::ORIGIN, "http://evil.test")]),
            None
        ));
        assert!(!same_origin(
            &headers(&[host.clone(), (header::ORIGIN, "null")]),
            None
        ));
        assert!(!same_origin(&headers(std::slice::from_ref(&host)), None));
        assert!(same_origin(
            &headers(&[
                host.clone(),
                (header::REFERER, "http://127.0.0.1:8080/ui/apps/web")
            ]),
            None
        ));
        assert!(same_origin(
            &headers(&[
                (header::HOST, "10.0.0.5:8080"),
                (header::ORIGIN, "https://deploy.example.com")
            ]),
            Some("https://deploy.example.com")
        ));
    }

    #[test]
    fn each_session_has_its_own_csrf_token() {
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a").len(), 64);
    }
}
