//! The HTTP surface: webhook receivers and the JSON API, as one axum router.
//!
//! Handlers parse and answer; they never call git2 or the container engine themselves — work
//! goes through the store and the deploy queue.

mod api;
mod auth;
mod body;
mod error;
mod events;
mod metrics;
mod ops;
mod ui;
mod views;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::services::Services;

pub use error::ApiError;

/// Webhook deliveries whose bodies (each up to `body_limit`) may be read at once; more wait
/// for a slot with their body unread, bounded by the listener's connection cap.
const WEBHOOK_BODIES: usize = 16;

/// Run a handler's state-changing work in a task of its own and wait for it. The work then runs
/// to its end even when its caller stops waiting (the client went away, `request_timeout`
/// passed): dropping the caller's future never stops it between two writes — say after a
/// deploy was recorded `queued` and before its worker was told, which left it queued until the
/// next restart. A panic in the work answers 500.
async fn to_the_end<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("the request's work ended: {e}")))?
}

/// The whole router: each submodule's routes, with body cap, request timeout, request ids and
/// tracing; `/metrics` too unless `server.metrics_listen` gives it a listener of its own.
pub fn router(state: Services) -> Router {
    let own_listener = state.config.server.metrics_listen.is_some();
    let body_limit = usize::try_from(state.config.server.body_limit).unwrap_or(usize::MAX);
    let deadlines = Deadlines {
        request: state.config.server.request_timeout,
        wait: state.config.server.wait_timeout,
    };
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request| {
        let path = req
            .extensions()
            .get::<MatchedPath>()
            .map_or("-", MatchedPath::as_str);
        let id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::debug_span!("http", method = %req.method(), path, request_id = id)
    });
    // Webhook bodies are buffered whole before the HMAC: only so many at once.
    let bodies = Arc::new(tokio::sync::Semaphore::new(WEBHOOK_BODIES));
    let mut routes = Router::new()
        .merge(webhook::router(bodies))
        .merge(api::router())
        .merge(ops::router())
        .merge(events::router())
        .merge(ui::router());
    if !own_listener {
        routes = routes.merge(metrics::router());
    }
    routes
        // A declared Content-Length over the cap is refused before reading; a chunked body is
        // cut off (413) as soon as it passes the cap. Either way before any HMAC work.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(
                    SequentialRequestId::default(),
                ))
                .layer(trace)
                .layer(middleware::from_fn_with_state(deadlines, deadline))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// What `server.metrics_listen` serves: `GET /metrics` and nothing else (404), with the
/// request timeout.
pub fn metrics_router(state: Services) -> Router {
    let deadlines = Deadlines {
        request: state.config.server.request_timeout,
        wait: state.config.server.wait_timeout,
    };
    metrics::router()
        .layer(middleware::from_fn_with_state(deadlines, deadline))
        .with_state(state)
}

/// How long a request may take: `request` (headers, body and answer: slow clients get 408),
/// plus `wait` for an API call with `?wait=true`, which holds its answer until the deploy ends.
#[derive(Clone, Copy)]
struct Deadlines {
    request: Duration,
    wait: Duration,
}

async fn deadline(State(d): State<Deadlines>, request: Request, next: Next) -> Response {
    let waits = request.uri().path().starts_with("/api/")
        && request.uri().query().is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == "wait" && ops::wait_flag(&v) == Some(true))
        });
    let limit = if waits { d.request + d.wait } else { d.request };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// Request ids `<process start, hex>-<counter>`: unique per process run and cheap (a UUID v4
/// costs a getrandom call per request).
#[derive(Clone)]
struct SequentialRequestId {
    prefix: Arc<str>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for SequentialRequestId {
    fn default() -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        SequentialRequestId {
            prefix: format!("{:x}", started.as_millis()).into(),
            next: Arc::default(),
        }
    }
}

impl MakeRequestId for SequentialRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
            .parse()
            .ok()
            .map(RequestId::new)
    }
}
