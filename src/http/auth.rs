//! API authentication: `Authorization: Bearer <token>` against the configured `[[tokens]]`.
//!
//! - Writes (`Writer`) always need a token; with none configured the write API is off.
//! - Reads (`Reader`) need a token once any is configured; with none configured they are open.
//! - A token in the query string (`?token=`, `?access_token=`) is refused with 401 even when
//!   valid: URLs end up in logs and browser history.
//! - The presented token's SHA-256 is compared with every configured token's in constant time,
//!   all of them, without stopping at a match.
//! - A valid token that is not scoped to the app asked about gets 403.
//! - A `read_only` token is a `Reader`; as a `Writer` it gets 403 before anything is looked at.
//! - A `Reader` without `Authorization` may be a dashboard session (`ui::session`'s cookie,
//!   standing for its token); a `Writer` never is: the JSON write API stays bearer-only, so a
//!   cookie can never make a cross-site write (the dashboard's forms have CSRF checks instead).

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::error::ApiError;
use crate::config::{ApiToken, AppConfig, TokenDigest};
use crate::services::Services;

/// Query parameters that would carry a token.
const QUERY_TOKEN_NAMES: [&str; 2] = ["token", "access_token"];

/// A caller allowed to change state: always a configured token.
pub struct Writer(pub ApiToken);

/// A caller allowed to read: a token, or anyone while no token is configured.
pub struct Reader(pub Option<ApiToken>);

impl Writer {
    /// The token's name, recorded as the actor.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The app called `name`, if this token may act on it: 403 when it may not (whether or not
    /// the app exists, so a scoped token learns nothing about other apps), 404 when unknown.
    pub fn app<'a>(&self, state: &'a Services, name: &str) -> Result<&'a AppConfig, ApiError> {
        scoped_app(Some(&self.0), state, name)
    }
}

impl Reader {
    /// Whether this caller may see app `name`.
    pub fn may(&self, app: &str) -> bool {
        self.0.as_ref().is_none_or(|t| t.may(app))
    }

    /// As [`Writer::app`].
    pub fn app<'a>(&self, state: &'a Services, name: &str) -> Result<&'a AppConfig, ApiError> {
        scoped_app(self.0.as_ref(), state, name)
    }

    /// 403 unless this caller may see app `name`.
    pub fn check(&self, name: &str) -> Result<(), ApiError> {
        if self.may(name) {
            Ok(())
        } else {
            Err(forbidden(self.0.as_ref(), name))
        }
    }
}

fn scoped_app<'a>(
    token: Option<&ApiToken>,
    state: &'a Services,
    name: &str,
) -> Result<&'a AppConfig, ApiError> {
    if token.is_some_and(|t| !t.may(name)) {
        return Err(forbidden(token, name));
    }
    state
        .config
        .app(name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown app {name:?}")))
}

fn forbidden(token: Option<&ApiToken>, app: &str) -> ApiError {
    let name = token.map_or("-", |t| t.name.as_str());
    ApiError::Forbidden(format!("token {name:?} is not scoped to app {app:?}"))
}

impl FromRequestParts<Services> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Services) -> Result<Self, ApiError> {
        refuse_query_token(parts)?;
        if state.config.tokens.is_empty() {
            return Err(ApiError::Unauthenticated(
                "no API tokens are configured: the write API is off (add [[tokens]])".into(),
            ));
        }
        let token = authenticate(parts, &state.config.tokens)?;
        writable(token).map(Writer)
    }
}

impl FromRequestParts<Services> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Services) -> Result<Self, ApiError> {
        refuse_query_token(parts)?;
        if state.config.tokens.is_empty() {
            return Ok(Reader(None));
        }
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            if let Some(token) = super::ui::cookie_token(&parts.headers, state).await? {
                return Ok(Reader(Some(token)));
            }
        }
        authenticate(parts, &state.config.tokens).map(|t| Reader(Some(t)))
    }
}

/// The token itself when it may write; 403 when it is `read_only`.
pub(super) fn writable(token: ApiToken) -> Result<ApiToken, ApiError> {
    if token.read_only {
        return Err(ApiError::Forbidden(format!(
            "token {:?} is read-only",
            token.name
        )));
    }
    Ok(token)
}

fn refuse_query_token(parts: &Parts) -> Result<(), ApiError> {
    let Some(query) = parts.uri.query() else {
        return Ok(());
    };
    let carries_token = form_urlencoded::parse(query.as_bytes())
        .any(|(k, _)| QUERY_TOKEN_NAMES.iter().any(|n| k.eq_ignore_ascii_case(n)));
    if carries_token {
        return Err(ApiError::Unauthenticated(
            "a token in the query string is refused (URLs are logged); send Authorization: Bearer <token>".into(),
        ));
    }
    Ok(())
}

fn authenticate(parts: &Parts, tokens: &[ApiToken]) -> Result<ApiToken, ApiError> {
    let presented = bearer(&parts.headers)?;
    find(tokens, presented)
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("invalid token".into()))
}

/// The token of the request's one `Authorization: Bearer <token>` header.
pub(super) fn bearer(headers: &axum::http::HeaderMap) -> Result<&[u8], ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::Unauthenticated(
            "missing Authorization: Bearer <token> (exactly one)".into(),
        ));
    };
    let bytes = value.as_bytes();
    let presented = bytes
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
        .and_then(|_| bytes.get(7..))
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthenticated("Authorization must be: Bearer <token>".into()))?;
    Ok(presented)
}

/// Whether `presented` is the token of `digest`, compared in constant time over digests.
pub(super) fn is_token(digest: &TokenDigest, presented: &[u8]) -> bool {
    digest.0.ct_eq(&TokenDigest::of(presented).0).into()
}

/// The token whose digest equals the presented token's; every token is compared, in constant
/// time, whatever matched before.
pub(super) fn find<'a>(tokens: &'a [ApiToken], presented: &[u8]) -> Option<&'a ApiToken> {
    let digest = TokenDigest::of(presented);
    let mut found = 0u64; // index + 1 of the match; 0 = none
    for (i, token) in tokens.iter().enumerate() {
        let index = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1);
        found.conditional_assign(&index, token.digest.0.ct_eq(&digest.0));
    }
    let index = usize::try_from(found).ok()?.checked_sub(1)?;
    tokens.get(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenScope;

    fn token(name: &str, value: &str) -> ApiToken {
        ApiToken {
            name: name.into(),
            digest: TokenDigest::of(value.as_bytes()),
            scope: TokenScope::All,
            read_only: false,
        }
    }

    #[test]
    fn the_matching_token_is_found_wherever_it_is_in_the_list() {
        let tokens = [token("a", "alpha"), token("b", "beta"), token("c", "gamma")];
        assert_eq!(find(&tokens, b"alpha").map(|t| t.name.as_str()), Some("a"));
        assert_eq!(find(&tokens, b"gamma").map(|t| t.name.as_str()), Some("c"));
        assert!(find(&tokens, b"delta").is_none());
        assert!(find(&tokens, b"alph").is_none());
        assert!(find(&[], b"alpha").is_none());
    }
}
