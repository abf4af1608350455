//! The one error type of the HTTP layer: each variant knows its status; 5xx bodies are generic
//! and the cause is logged instead.

use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::ErrorBody;
use crate::deploy::target::TargetError;
use crate::deploy::QueueError;
use crate::github::events::PayloadError;
use crate::github::signature::SignatureError;
use crate::store::{rfc3339, AppLock};

/// An HTTP error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A bad webhook signature.
    #[error("{0}")]
    Unauthorized(String),
    /// A missing, wrong or misplaced API token: 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid token not scoped to the app.
    #[error("{0}")]
    Forbidden(String),
    /// The app is locked: 409 naming who locked it, when and why.
    #[error("app {} is locked by {} since {}: {}", .0.app, .0.locked_by, rfc3339(.0.locked_at), .0.reason)]
    Locked(AppLock),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    /// A request body that could not be read (past `body_limit`: 413), answered as axum
    /// answers it.
    #[error(transparent)]
    Body(#[from] BytesRejection),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) | ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Locked(_) => StatusCode::CONFLICT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Body(rejection) => rejection.status(),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Body(rejection) = self {
            return rejection.into_response();
        }
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "internal error");
        }
        let body = ErrorBody {
            error: self.to_string(),
            lock: match &self {
                ApiError::Locked(lock) => Some(super::views::lock(lock)),
                _ => None,
            },
        };
        let mut response = (self.status_code(), Json(body)).into_response();
        if let ApiError::Unauthenticated(_) = &self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dockhand\""),
            );
        }
        response
    }
}

impl From<TargetError> for ApiError {
    fn from(e: TargetError) -> Self {
        match e {
            TargetError::Bad { .. } => ApiError::BadRequest(e.to_string()),
            TargetError::NotFound(m) => ApiError::NotFound(m),
            TargetError::Other(e) => ApiError::Internal(e),
        }
    }
}

impl From<SignatureError> for ApiError {
    fn from(e: SignatureError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> Self {
        match e.status() {
            415 => ApiError::UnsupportedMediaType(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::UnknownApp(_) => ApiError::NotFound(e.to_string()),
            QueueError::Full(_) | QueueError::Closed => ApiError::Unavailable(e.to_string()),
        }
    }
}
