//! `GET /metrics`: the Prometheus registry as OpenMetrics text, behind the metrics bearer token
//! when one is configured. On `server.listen` beside the API, or alone on `metrics_listen`
//! ([`super::metrics_router`]), where everything else is 404.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::auth;
use super::error::ApiError;
use crate::metrics::CONTENT_TYPE;
use crate::services::Services;

/// `GET /metrics`.
pub(super) fn router() -> Router<Services> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<Services>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(digest) = &state.config.server.metrics_token {
        let presented = auth::bearer(&headers).map_err(|_| {
            ApiError::Unauthenticated(
                "GET /metrics needs Authorization: Bearer <token>, the token of \
                 server.metrics_token_env / metrics_token_file"
                    .into(),
            )
        })?;
        if !auth::is_token(digest, presented) {
            return Err(ApiError::Unauthenticated(
                "invalid metrics token (server.metrics_token_env / metrics_token_file)".into(),
            ));
        }
    }
    // The gauges read from the history; a store that does not answer still gets the rest out.
    if let Err(e) = state.metrics.refresh(&state.store).await {
        tracing::warn!(
            error = format!("{e:#}"),
            "metrics: reading the queue depth failed"
        );
    }
    Ok((
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response())
}
