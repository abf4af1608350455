//! The dashboard: server-rendered pages under `/ui`, built on the same handlers and `api::`
//! views as the JSON API, so a page shows exactly what `GET /api/…` answers and an action does
//! exactly what its `POST /api/…` does.
//!
//! - `session`: sign-in, the session cookie, CSRF checks, the `Viewer` of a page;
//! - `pages`: the overview, one app (history and delivery ledger), one deploy;
//! - `actions`: confirmation pages and the forms that deploy, roll back, lock, switch
//!   maintenance.
//!
//! Every answer carries a strict Content-Security-Policy (only this server's own stylesheet
//! and script, no inline code, no framing); the assets are compiled into the binary.

mod actions;
mod pages;
mod render;
mod session;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::error::ApiError;
use crate::services::Services;

pub(super) use session::cookie_token;

/// The stylesheet, the deploy page's script and the icon, compiled in.
const CSS: &str = include_str!("assets/dockhand.css");
const JS: &str = include_str!("assets/deploy.js");
const ICON: &str = include_str!("assets/favicon.svg");

const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `/ui/…`.
pub(super) fn router() -> Router<Services> {
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/apps/{app}", get(pages::app))
        .route("/ui/deploys/{id}", get(pages::deploy))
        .route("/ui/apps/{app}/confirm", get(actions::confirm))
        .route("/ui/apps/{app}/do/{action}", post(actions::act))
        .route("/ui/assets/{file}", get(asset))
        .layer(middleware::from_fn(security_headers))
}

/// What every dashboard answer carries.
async fn security_headers(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "dockhand.css" => (CSS, "text/css; charset=utf-8"),
        "deploy.js" => (JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (ICON, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Why a dashboard request did not get its page.
pub(super) enum UiError {
    /// Not signed in: to the sign-in page, then back to this path.
    SignIn(String),
    /// The API's refusal, shown on a page with its status.
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::Api(e)
    }
}

impl From<anyhow::Error> for UiError {
    fn from(e: anyhow::Error) -> Self {
        UiError::Api(ApiError::Internal(e))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::SignIn(next) => {
                let to = format!(
                    "/ui/sign-in?next={}",
                    percent_encoding::utf8_percent_encode(
                        &next,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                );
                Redirect::to(&to).into_response()
            }
            UiError::Api(e) => {
                let status = e.status_code();
                if let ApiError::Internal(cause) = &e {
                    tracing::error!(error = format!("{cause:#}"), "internal error (dashboard)");
                }
                (status, render::error_page(status, &e.to_string())).into_response()
            }
        }
    }
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Where to go after signing in: a dashboard path only (never another site).
fn local_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/ui" || n.starts_with("/ui/") || n.starts_with("/ui?"))
                && !n.contains('\\') =>
        {
            n
        }
        _ => "/ui",
    }
}

async fn sign_in_page(
    State(state): State<Services>,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    render::sign_in(
        local_next(q.next.as_deref()),
        None,
        state.config.tokens.is_empty(),
    )
    .into_response()
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
    next: Option<String>,
}

/// `POST /ui/sign-in` `token=…`: a session for the token, then the page asked for.
async fn sign_in(
    State(state): State<Services>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, UiError> {
    session::check_form(&headers, &state, None, false)?;
    let next = local_next(form.next.as_deref()).to_string();
    let token = super::auth::find(&state.config.tokens, form.token.trim().as_bytes()).cloned();
    let Some(token) = token else {
        let page = render::sign_in(
            &next,
            Some("That token is not one of this server's [[tokens]]."),
            state.config.tokens.is_empty(),
        );
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    };
    let cookie = session::start(&state, &token).await?;
    tracing::info!(token = token.name, "dashboard sign-in");
    Ok(redirect_setting(&next, cookie))
}

/// A 303 to `to` that sets (or clears) the session cookie.
fn redirect_setting(to: &str, cookie: HeaderValue) -> Response {
    let mut response = Redirect::to(to).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

/// `POST /ui/sign-out`: the session is deleted (its cookie opens nothing any more).
async fn sign_out(
    State(state): State<Services>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, UiError> {
    session::check_form(&headers, &state, form.csrf.as_deref(), true)?;
    let cookie = session::end(&state, &headers).await?;
    Ok(redirect_setting("/ui/sign-in", cookie))
}
