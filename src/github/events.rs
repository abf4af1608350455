//! Typed views of the webhook payloads dockhand acts on.

/// A push event, with only the fields dockhand uses. Never indexed into: every field is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Full ref name, e.g. `refs/heads/main` or `refs/tags/v1.2.0`.
    pub git_ref: String,
    /// 40 hex digits; all zeros when the ref was created.
    pub before: String,
    /// 40 hex digits; all zeros when the ref was deleted. For an annotated tag, the tag object.
    pub after: String,
    pub created: bool,
    pub deleted: bool,
    pub forced: bool,
    pub repository: Repository,
    /// Who pushed (`pusher.name`), for the record.
    pub pusher: Option<String>,
    /// `head_commit.message`, for deploy trailers; may be absent.
    pub head_message: Option<String>,
}

/// The repository a payload names; matched against app config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repository {
    pub full_name: String,
    pub clone_url: Option<String>,
    pub ssh_url: Option<String>,
    pub html_url: Option<String>,
    pub git_url: Option<String>,
}

/// A delivery's event, from the `X-GitHub-Event` header and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ping {
        zen: Option<String>,
        hook_id: Option<u64>,
    },
    Push(Push),
    /// Any other event name; dockhand acknowledges and ignores it.
    Other(String),
}

/// Why a body could not be understood; each is a 4xx naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error(
        "unsupported content type {0:?}: use application/json or application/x-www-form-urlencoded"
    )]
    UnsupportedContentType(String),
    #[error("form body has no payload= field")]
    MissingFormPayload,
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("field {field}: {problem}")]
    InvalidField {
        field: &'static str,
        problem: String,
    },
}

impl PayloadError {
    /// Which HTTP status this error should produce: 415 for content type, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            PayloadError::UnsupportedContentType(_) => 415,
            _ => 400,
        }
    }
}

/// The JSON document inside a body: the body itself for `application/json` (charset parameters
/// allowed), the decoded `payload=` field for `application/x-www-form-urlencoded`. Call only after
/// the signature over the raw body was verified.
pub fn json_body(content_type: Option<&str>, body: &[u8]) -> Result<Vec<u8>, PayloadError> {
    todo!("{content_type:?} {}", body.len())
}

/// Parse a delivery: `event` is the `X-GitHub-Event` header value, `json` from [`json_body`].
pub fn parse(event: &str, json: &[u8]) -> Result<Event, PayloadError> {
    todo!("{event} {}", json.len())
}
