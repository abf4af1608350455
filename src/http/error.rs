//! The one error type of the HTTP layer: each variant knows its status; 5xx bodies are generic
//! and the cause is logged instead.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::deploy::QueueError;
use crate::github::events::PayloadError;
use crate::github::signature::SignatureError;

/// An HTTP error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "internal error");
        }
        (
            self.status_code(),
            Json(json!({ "error": self.to_string() })),
        )
            .into_response()
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
