//! Typed views of the webhook payloads dockhand acts on.
//!
//! Layout: this file holds the types and `parse` (ping and push bodies, field by field);
//! `body` finds the JSON document in a body by its content type; `fields` reads one field of a
//! JSON object, every error naming the field, and checks ref names and commit SHAs. Nothing is
//! ever indexed into: a missing, null or wrong-typed field is an `InvalidField`, never a panic.

mod body;
mod fields;

pub use body::json_body;
use fields::{
    check_ref, commit_sha, flag, invalid, optional_object, optional_str, present, required_str,
    Object,
};

/// `before` or `after` of all zeros: the ref did not exist on that side of the push.
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// A push event, with only the fields dockhand uses. Never indexed into: every field is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Full ref name, e.g. `refs/heads/main` or `refs/tags/v1.2.0`.
    pub git_ref: String,
    /// 40 lower-case hex digits; all zeros ([`ZERO_SHA`]) when the ref was created.
    pub before: String,
    /// 40 lower-case hex digits; all zeros ([`ZERO_SHA`]) when the ref was deleted. For an
    /// annotated tag, the tag object.
    pub after: String,
    /// The push created the ref; `before` is then all zeros and must not be diffed against.
    pub created: bool,
    /// The push deleted the ref; there is nothing to check out.
    pub deleted: bool,
    /// The push was forced; `after` need not descend from `before`.
    pub forced: bool,
    /// The repository pushed to.
    pub repository: Repository,
    /// Who pushed (`pusher.name`), for the record.
    pub pusher: Option<String>,
    /// `head_commit.message`, for deploy trailers; may be absent.
    pub head_message: Option<String>,
}

/// The repository a payload names; matched against app config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repository {
    /// `owner/name`, never empty.
    pub full_name: String,
    /// The URLs GitHub lists, when present; informational, config decides where to fetch from.
    pub clone_url: Option<String>,
    pub ssh_url: Option<String>,
    pub html_url: Option<String>,
    pub git_url: Option<String>,
}

/// A delivery's event, from the `X-GitHub-Event` header and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per delivery, moved a few times; boxing would only add noise at match sites"
)]
pub enum Event {
    /// Sent once when a webhook is created; answered without deploying.
    Ping {
        zen: Option<String>,
        hook_id: Option<u64>,
    },
    /// A branch or tag moved, was created or was deleted.
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

/// Parse a delivery: `event` is the `X-GitHub-Event` header value, `json` from [`json_body`].
///
/// Only `ping` and `push` bodies are read; any other event becomes [`Event::Other`] without
/// looking at the body, since dockhand ignores it anyway.
pub fn parse(event: &str, json: &[u8]) -> Result<Event, PayloadError> {
    match event {
        "ping" => parse_ping(&root_object(json)?),
        "push" => parse_push(&root_object(json)?).map(Event::Push),
        other => Ok(Event::Other(other.to_owned())),
    }
}

fn root_object(json: &[u8]) -> Result<Object, PayloadError> {
    match serde_json::from_slice(json) {
        Ok(serde_json::Value::Object(object)) => Ok(object),
        Ok(_) => Err(PayloadError::InvalidJson(
            "top level is not an object".to_owned(),
        )),
        Err(err) => Err(PayloadError::InvalidJson(err.to_string())),
    }
}

fn parse_ping(body: &Object) -> Result<Event, PayloadError> {
    let zen = optional_str(body, "zen", "zen")?.map(str::to_owned);
    let hook_id = match present(body, "hook_id") {
        None => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or_else(|| invalid("hook_id", "expected a non-negative integer"))?,
        ),
    };
    Ok(Event::Ping { zen, hook_id })
}

fn parse_push(body: &Object) -> Result<Push, PayloadError> {
    let git_ref = required_str(body, "ref", "ref")?;
    check_ref(git_ref).map_err(|problem| invalid("ref", problem))?;

    let repository = optional_object(body, "repository", "repository")?
        .ok_or_else(|| invalid("repository", "missing or null"))?;
    let full_name = required_str(repository, "full_name", "repository.full_name")?;
    if full_name.is_empty() {
        return Err(invalid("repository.full_name", "empty"));
    }
    let url = |key, field| optional_str(repository, key, field).map(|url| url.map(str::to_owned));
    let repository = Repository {
        full_name: full_name.to_owned(),
        clone_url: url("clone_url", "repository.clone_url")?,
        ssh_url: url("ssh_url", "repository.ssh_url")?,
        html_url: url("html_url", "repository.html_url")?,
        git_url: url("git_url", "repository.git_url")?,
    };

    let pusher = match optional_object(body, "pusher", "pusher")? {
        Some(pusher) => optional_str(pusher, "name", "pusher.name")?.map(str::to_owned),
        None => None,
    };
    // null is what GitHub sends when a branch or tag is deleted.
    let head_message = match optional_object(body, "head_commit", "head_commit")? {
        Some(head) => optional_str(head, "message", "head_commit.message")?.map(str::to_owned),
        None => None,
    };

    Ok(Push {
        git_ref: git_ref.to_owned(),
        before: commit_sha(body, "before", "before")?,
        after: commit_sha(body, "after", "after")?,
        created: flag(body, "created", "created")?,
        deleted: flag(body, "deleted", "deleted")?,
        forced: flag(body, "forced", "forced")?,
        repository,
        pusher,
        head_message,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    const PING: &[u8] = include_bytes!("../../../tests/fixtures/github/ping.json");
    pub(super) const PUSH_BRANCH: &[u8] =
        include_bytes!("../../../tests/fixtures/github/push-branch.json");
    pub(super) const PUSH_BRANCH_FORM: &[u8] =
        include_bytes!("../../../tests/fixtures/github/push-branch.form");
    const PUSH_BRANCH_CREATED: &[u8] =
        include_bytes!("../../../tests/fixtures/github/push-branch-created.json");
    const PUSH_BRANCH_DELETED: &[u8] =
        include_bytes!("../../../tests/fixtures/github/push-branch-deleted.json");
    const PUSH_TAG: &[u8] = include_bytes!("../../../tests/fixtures/github/push-tag.json");
    const PUSH_TAG_DELETED: &[u8] =
        include_bytes!("../../../tests/fixtures/github/push-tag-deleted.json");

    pub(super) const AFTER: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
    pub(super) const BRANCH_BEFORE: &str = "d70c5c6fa638b6a2b2c3e1f0f4b7a3b0c1d2e3f4";

    fn hello_world() -> Repository {
        Repository {
            full_name: "Codertocat/Hello-World".to_owned(),
            clone_url: Some("https://github.com/Codertocat/Hello-World.git".to_owned()),
            ssh_url: Some("git@github.com:Codertocat/Hello-World.git".to_owned()),
            html_url: Some("https://github.com/Codertocat/Hello-World".to_owned()),
            git_url: Some("git://github.com/Codertocat/Hello-World.git".to_owned()),
        }
    }

    fn push(json: &[u8]) -> Push {
        match parse("push", json) {
            Ok(Event::Push(push)) => push,
            other => panic!("expected a push, got {other:?}"),
        }
    }

    /// The branch push fixture with `edit` applied, parsed as a push.
    pub(super) fn edited_push(edit: impl FnOnce(&mut Value)) -> Result<Event, PayloadError> {
        let mut value: Value = serde_json::from_slice(PUSH_BRANCH).expect("fixture is JSON");
        edit(&mut value);
        parse(
            "push",
            &serde_json::to_vec(&value).expect("a Value serializes"),
        )
    }

    pub(super) fn assert_invalid_field(
        result: Result<Event, PayloadError>,
        expected: &str,
        case: &str,
    ) {
        match result {
            Err(PayloadError::InvalidField { field, .. }) => assert_eq!(field, expected, "{case}"),
            other => panic!("{case}: expected InvalidField({expected}), got {other:?}"),
        }
    }

    /// Sets `path` (dot-separated) inside the document, or removes it when `new` is None.
    pub(super) fn set(value: &mut Value, path: &str, new: Option<Value>) {
        let (parents, last) = path.rsplit_once('.').map_or(("", path), |(p, l)| (p, l));
        let mut target = value;
        for key in parents.split('.').filter(|key| !key.is_empty()) {
            target = target.get_mut(key).expect("fixture has the parent");
        }
        let object = target.as_object_mut().expect("parent is an object");
        match new {
            Some(new) => object.insert(last.to_owned(), new),
            None => object.remove(last),
        };
    }

    #[test]
    fn branch_push_fixture_parses_to_its_fields() {
        assert_eq!(
            push(PUSH_BRANCH),
            Push {
                git_ref: "refs/heads/master".to_owned(),
                before: BRANCH_BEFORE.to_owned(),
                after: AFTER.to_owned(),
                created: false,
                deleted: false,
                forced: false,
                repository: hello_world(),
                pusher: Some("Codertocat".to_owned()),
                head_message: Some("Initial commit".to_owned()),
            }
        );
    }

    #[test]
    fn tag_push_fixture_parses_as_a_created_tag() {
        let tag = push(PUSH_TAG);
        assert_eq!(tag.git_ref, "refs/tags/simple-tag");
        assert_eq!(tag.before, ZERO_SHA);
        assert_eq!(tag.after, AFTER);
        assert!(tag.created && !tag.deleted && !tag.forced);
        assert_eq!(
            tag.head_message.as_deref(),
            Some("Adding a .gitignore file")
        );
        assert_eq!(tag.repository, hello_world());
    }

    #[test]
    fn branch_creation_fixture_has_zero_before_and_created() {
        let created = push(PUSH_BRANCH_CREATED);
        assert_eq!(created.git_ref, "refs/heads/master");
        assert_eq!(created.before, ZERO_SHA);
        assert_eq!(created.after, AFTER);
        assert!(created.created && !created.deleted);
        assert_eq!(created.head_message.as_deref(), Some("Initial commit"));
    }

    #[test]
    fn branch_deletion_fixture_is_deleted_with_no_head_message() {
        let deleted = push(PUSH_BRANCH_DELETED);
        assert_eq!(deleted.git_ref, "refs/heads/simple-branch");
        assert_eq!(deleted.before, AFTER);
        assert_eq!(deleted.after, ZERO_SHA);
        assert!(deleted.deleted && !deleted.created);
        assert_eq!(deleted.head_message, None);
        assert_eq!(deleted.pusher.as_deref(), Some("Codertocat"));
    }

    #[test]
    fn tag_deletion_fixture_is_deleted_with_no_head_message() {
        let deleted = push(PUSH_TAG_DELETED);
        assert_eq!(deleted.git_ref, "refs/tags/simple-tag");
        assert_eq!(deleted.after, ZERO_SHA);
        assert!(deleted.deleted);
        assert_eq!(deleted.head_message, None);
    }

    #[test]
    fn ping_fixture_parses_zen_and_hook_id() {
        assert_eq!(
            parse("ping", PING),
            Ok(Event::Ping {
                zen: Some("Anything added dilutes everything else.".to_owned()),
                hook_id: Some(109948940),
            })
        );
    }

    #[test]
    fn ping_without_zen_or_hook_id_still_parses() {
        assert_eq!(
            parse("ping", br#"{"zen": null}"#),
            Ok(Event::Ping {
                zen: None,
                hook_id: None
            })
        );
    }

    #[test]
    fn ping_with_wrong_typed_fields_is_invalid_field() {
        assert_invalid_field(parse("ping", br#"{"hook_id": "1"}"#), "hook_id", "string");
        assert_invalid_field(parse("ping", br#"{"hook_id": -1}"#), "hook_id", "negative");
        assert_invalid_field(parse("ping", br#"{"zen": 1}"#), "zen", "number");
    }

    const REQUIRED: [&str; 5] = [
        "ref",
        "before",
        "after",
        "repository",
        "repository.full_name",
    ];

    #[test]
    fn missing_required_fields_are_invalid_field_naming_the_field() {
        for field in REQUIRED {
            let result = edited_push(|push| set(push, field, None));
            assert_invalid_field(result, field, "missing");
        }
    }

    #[test]
    fn null_fields_are_invalid_field_naming_the_field() {
        let nullable = REQUIRED.iter().chain(&["created", "deleted", "forced"]);
        for &field in nullable {
            let result = edited_push(|push| set(push, field, Some(Value::Null)));
            assert_invalid_field(result, field, "null");
        }
    }

    #[test]
    fn wrong_typed_fields_are_invalid_field_naming_the_field() {
        let cases = [
            ("ref", json!(1)),
            ("ref", json!(["refs/heads/main"])),
            ("before", json!(123)),
            ("after", json!(true)),
            ("created", json!("yes")),
            ("deleted", json!("yes")),
            ("forced", json!(1)),
            ("repository", json!("Codertocat/Hello-World")),
            ("repository", json!([])),
            ("repository.full_name", json!(5)),
            ("repository.full_name", json!({})),
            ("repository.clone_url", json!(5)),
            ("repository.ssh_url", json!(false)),
            ("repository.html_url", json!([])),
            ("repository.git_url", json!({})),
            ("pusher", json!("Codertocat")),
            ("pusher.name", json!(7)),
            ("head_commit", json!("Initial commit")),
            ("head_commit.message", json!(3)),
        ];
        for (field, value) in cases {
            let result = edited_push(|push| set(push, field, Some(value.clone())));
            assert_invalid_field(result, field, &format!("{field} = {value}"));
        }
    }

    #[test]
    fn empty_repository_full_name_is_invalid_field() {
        let result = edited_push(|push| set(push, "repository.full_name", Some(json!(""))));
        assert_invalid_field(result, "repository.full_name", "empty");
    }

    #[test]
    fn absent_booleans_default_to_false() {
        let parsed = edited_push(|push| {
            set(push, "created", None);
            set(push, "deleted", None);
            set(push, "forced", None);
        });
        let Ok(Event::Push(parsed)) = parsed else {
            panic!("expected a push: {parsed:?}");
        };
        assert!(!parsed.created && !parsed.deleted && !parsed.forced);
    }

    #[test]
    fn forced_push_is_reported_as_forced() {
        let parsed = edited_push(|push| set(push, "forced", Some(json!(true))));
        assert!(matches!(parsed, Ok(Event::Push(Push { forced: true, .. }))));
    }

    #[test]
    fn absent_optional_fields_are_none() {
        let parsed = edited_push(|push| {
            set(push, "pusher", None);
            set(push, "head_commit", Some(Value::Null));
            set(push, "commits", Some(json!([])));
            set(push, "repository.clone_url", None);
            set(push, "repository.ssh_url", Some(Value::Null));
            set(push, "repository.html_url", None);
            set(push, "repository.git_url", None);
        });
        let Ok(Event::Push(parsed)) = parsed else {
            panic!("expected a push: {parsed:?}");
        };
        assert_eq!(parsed.pusher, None);
        assert_eq!(parsed.head_message, None);
        assert_eq!(
            parsed.repository,
            Repository {
                full_name: "Codertocat/Hello-World".to_owned(),
                ..Repository::default()
            }
        );
    }

    #[test]
    fn pusher_and_head_commit_without_name_or_message_are_none() {
        let parsed = edited_push(|push| {
            set(push, "pusher", Some(json!({})));
            set(push, "head_commit", Some(json!({"id": AFTER})));
        });
        let Ok(Event::Push(parsed)) = parsed else {
            panic!("expected a push: {parsed:?}");
        };
        assert_eq!((parsed.pusher, parsed.head_message), (None, None));
    }

    #[test]
    fn truncated_json_is_invalid_json() {
        for json in [
            &PUSH_BRANCH[..PUSH_BRANCH.len() / 2],
            &PUSH_BRANCH[..1],
            b"",
        ] {
            let err = parse("push", json).expect_err("truncated");
            assert!(matches!(err, PayloadError::InvalidJson(_)), "{err:?}");
            assert_eq!(err.status(), 400);
        }
        assert!(matches!(
            parse("ping", &PING[..PING.len() - 3]),
            Err(PayloadError::InvalidJson(_))
        ));
    }

    #[test]
    fn json_that_is_not_an_object_is_invalid_json() {
        for json in [&b"[]"[..], b"null", b"\"push\"", b"42"] {
            assert!(matches!(
                parse("push", json),
                Err(PayloadError::InvalidJson(_))
            ));
        }
    }

    #[test]
    fn other_events_are_named_and_their_bodies_ignored() {
        assert_eq!(
            parse("issues", b"not even json"),
            Ok(Event::Other("issues".to_owned()))
        );
        assert_eq!(
            parse("pull_request", PUSH_BRANCH),
            Ok(Event::Other("pull_request".to_owned()))
        );
        // Event names are case-sensitive: GitHub sends them in lower case.
        assert_eq!(
            parse("Push", PUSH_BRANCH),
            Ok(Event::Other("Push".to_owned()))
        );
    }

    #[test]
    fn invalid_field_errors_are_400_and_name_the_field() {
        let err = edited_push(|push| set(push, "after", None)).expect_err("no after");
        assert_eq!(err.status(), 400);
        assert!(err.to_string().starts_with("field after:"), "{err}");
    }
}
