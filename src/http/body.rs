//! JSON request bodies read as the `api` request types, so every 400 names the field that is
//! wrong.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// A JSON object body read as `T`, whatever its content type; an empty (or all-whitespace)
/// body is `T::default()`, and a `null` field is an absent one.
///
/// Rejected with an [`ApiError`]: [`ApiError::Body`] when the body cannot be read (413 past the
/// cap), else a 400 `"<field>: <what is wrong>"` — `body:` when it is not a JSON object at all.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await?;
        parse(&bytes).map(AppJson)
    }
}

fn parse<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // Read whole first: a body that is not JSON, or not an object, is named so before any of
    // its fields.
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("body: not valid JSON ({e})")))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest("body: must be a JSON object".into()));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body" } else { &path };
        ApiError::BadRequest(format!("{field}: {}", reason(&e.inner().to_string())))
    })
}

/// serde's wording, made short: `must be a string`, `must be true or false`, `unknown field;
/// expected ref, path, force`; anything else (a type's own check) as serde says it.
fn reason(serde: &str) -> String {
    let invalid = serde.strip_prefix("invalid type: ");
    if let Some((_, expected)) = invalid.and_then(|m| m.rsplit_once(", expected ")) {
        let expected = if expected == "a boolean" {
            "true or false"
        } else {
            expected
        };
        return format!("must be {expected}");
    }
    let unknown = serde.strip_prefix("unknown field `");
    if let Some((_, expected)) = unknown.and_then(|m| m.split_once("`, expected ")) {
        // serde lists them as "`a`", "`a` or `b`" or "one of `a`, `b`, `c`".
        let expected = expected.strip_prefix("one of ").unwrap_or(expected);
        let expected = expected.replace("` or `", ", ").replace('`', "");
        return format!("unknown field; expected {expected}");
    }
    serde.to_string()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;
    use crate::api::{DeployRequest, LockRequest, PlanRequest, RollbackRequest, RollbackTarget};

    fn message<T: DeserializeOwned + Default + std::fmt::Debug>(body: &str) -> String {
        parse::<T>(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn empty_bodies_are_defaults_and_null_is_absent() {
        assert_eq!(
            parse::<DeployRequest>(b" \n ").unwrap(),
            DeployRequest::default()
        );
        let body: RollbackRequest = parse(br#"{"to": null, "force": null}"#).unwrap();
        assert_eq!(body, RollbackRequest::default());
        let body: DeployRequest = parse(br#"{"ref": "main", "path": "fast"}"#).unwrap();
        assert_eq!(body.git_ref.as_deref(), Some("main"));
        assert_eq!(body.path.as_deref(), Some("fast"));
    }

    #[test]
    fn bad_bodies_name_the_field_as_before() {
        assert_eq!(
            message::<DeployRequest>(r#"{"ref": 1}"#),
            "ref: must be a string"
        );
        assert_eq!(
            message::<DeployRequest>(r#"{"force": "yes"}"#),
            "force: must be true or false"
        );
        assert_eq!(
            message::<PlanRequest>(r#"{"ref": ["main"]}"#),
            "ref: must be a string"
        );
        assert_eq!(
            message::<DeployRequest>(r#"{"colour": "blue"}"#),
            "colour: unknown field; expected ref, path, force"
        );
        assert_eq!(
            message::<RollbackRequest>(r#"{"colour": 1}"#),
            "colour: unknown field; expected to, force"
        );
        assert_eq!(
            message::<LockRequest>(r#"{"colour": 1}"#),
            "colour: unknown field; expected reason"
        );
        assert_eq!(message::<PlanRequest>("[1]"), "body: must be a JSON object");
        assert_eq!(
            message::<PlanRequest>("null"),
            "body: must be a JSON object"
        );
        assert!(message::<PlanRequest>("{").starts_with("body: not valid JSON ("));
    }

    #[test]
    fn a_rollback_goes_to_a_commit_or_tag_or_a_positive_deploy_id() {
        let to = |body: &str| parse::<RollbackRequest>(body.as_bytes()).unwrap().to;
        assert_eq!(to(r#"{"to": 41}"#), Some(RollbackTarget::Deploy(41)));
        assert_eq!(
            to(r#"{"to": "v1"}"#),
            Some(RollbackTarget::Spec("v1".into()))
        );
        assert_eq!(
            message::<RollbackRequest>(r#"{"to": true}"#),
            "to: must be a commit id or tag (string) or a deploy id (number)"
        );
        for (id, shown) in [("-3", "-3"), ("0", "0"), ("2.0", "2.0")] {
            assert_eq!(
                message::<RollbackRequest>(&format!(r#"{{"to": {id}}}"#)),
                format!("to: deploy id {shown} must be a positive integer")
            );
        }
        assert_eq!(
            message::<RollbackRequest>(r#"{"to": 18446744073709551615}"#),
            "to: deploy id 18446744073709551615 must be a positive integer"
        );
    }

    #[tokio::test]
    async fn the_extractor_reads_any_content_type() {
        let request = Request::builder()
            .header("content-type", "text/plain")
            .body(Body::from(r#"{"ref": "main"}"#))
            .unwrap();
        let AppJson(body) = AppJson::<PlanRequest>::from_request(request, &())
            .await
            .map_err(|e| e.to_string())
            .unwrap();
        assert_eq!(body.git_ref.as_deref(), Some("main"));
    }
}
