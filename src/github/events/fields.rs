//! Reading one field of a JSON object: JSON null counts as absent, a wrong type is refused
//! rather than guessed, and every error names the field (`repository.full_name`). Ref names and
//! commit SHAs are checked here too, so contributor-controlled text never reaches git unchecked.

use super::PayloadError;

pub(super) type Object = serde_json::Map<String, serde_json::Value>;

pub(super) fn invalid(field: &'static str, problem: impl Into<String>) -> PayloadError {
    PayloadError::InvalidField {
        field,
        problem: problem.into(),
    }
}

/// The value under `key`, treating JSON null like an absent key.
pub(super) fn present<'a>(object: &'a Object, key: &str) -> Option<&'a serde_json::Value> {
    object.get(key).filter(|value| !value.is_null())
}

pub(super) fn required_str<'a>(
    object: &'a Object,
    key: &str,
    field: &'static str,
) -> Result<&'a str, PayloadError> {
    optional_str(object, key, field)?.ok_or_else(|| invalid(field, "missing or null"))
}

pub(super) fn optional_str<'a>(
    object: &'a Object,
    key: &str,
    field: &'static str,
) -> Result<Option<&'a str>, PayloadError> {
    match present(object, key) {
        None => Ok(None),
        Some(value) => value
            .as_str()
            .map(Some)
            .ok_or_else(|| invalid(field, "expected a string")),
    }
}

pub(super) fn optional_object<'a>(
    object: &'a Object,
    key: &str,
    field: &'static str,
) -> Result<Option<&'a Object>, PayloadError> {
    match present(object, key) {
        None => Ok(None),
        Some(value) => value
            .as_object()
            .map(Some)
            .ok_or_else(|| invalid(field, "expected an object")),
    }
}

/// A boolean that is false when absent; null or any other type is refused rather than guessed.
pub(super) fn flag(object: &Object, key: &str, field: &'static str) -> Result<bool, PayloadError> {
    match object.get(key) {
        None => Ok(false),
        Some(value) => value
            .as_bool()
            .ok_or_else(|| invalid(field, "expected true or false")),
    }
}

/// A full commit SHA-1: 40 hex digits of either case, returned in lower case.
pub(super) fn commit_sha(
    object: &Object,
    key: &str,
    field: &'static str,
) -> Result<String, PayloadError> {
    let sha = required_str(object, key, field)?;
    if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha.to_ascii_lowercase())
    } else {
        Err(invalid(field, "expected 40 hex digits"))
    }
}

/// Refuse ref names that git itself would refuse (`git check-ref-format`) and any that could
/// be taken for an option once passed as an argument. GitHub only ever sends valid refs, so
/// this rejects nothing real; it keeps contributor-controlled text out of argv surprises.
pub(super) fn check_ref(git_ref: &str) -> Result<(), &'static str> {
    let Some(rest) = git_ref.strip_prefix("refs/") else {
        return Err("must start with refs/");
    };
    if git_ref.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if git_ref.contains("..") {
        return Err("contains ..");
    }
    if git_ref.contains("@{") {
        return Err("contains @{");
    }
    if git_ref
        .chars()
        .any(|c| matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Err("contains a character git forbids in ref names");
    }
    if git_ref.ends_with('.') {
        return Err("ends with .");
    }
    for component in rest.split('/') {
        if component.is_empty() {
            return Err("has an empty component");
        }
        if component.starts_with('-') {
            return Err("has a component starting with -");
        }
        if component.starts_with('.') {
            return Err("has a component starting with .");
        }
        if component.ends_with(".lock") {
            return Err("has a component ending with .lock");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::github::events::tests::{
        assert_invalid_field, edited_push, set, AFTER, BRANCH_BEFORE,
    };
    use crate::github::events::Event;

    #[test]
    fn unsafe_refs_are_invalid_field() {
        let refs = [
            "",
            "main",
            "heads/main",
            "-refs/heads/main",
            "refs/",
            "refs/heads/-x",
            "refs/heads/--upload-pack=evil",
            "refs/-x/main",
            "refs/heads/a..b",
            "refs/heads/..",
            "refs/heads/a\0b",
            "refs/heads/a\nb",
            "refs/heads/a\x1bb",
            "refs/heads/a\x7fb",
            "refs/heads/a b",
            "refs/heads/a~1",
            "refs/heads/a^",
            "refs/heads/a:b",
            "refs/heads/a?",
            "refs/heads/a*",
            "refs/heads/a[b",
            "refs/heads/a\\b",
            "refs/heads/a@{1}",
            "refs/heads//main",
            "refs/heads/main/",
            "refs/heads/main.",
            "refs/heads/.hidden",
            "refs/heads/main.lock",
            "REFS/heads/main",
        ];
        for git_ref in refs {
            let result = edited_push(|push| set(push, "ref", Some(json!(git_ref))));
            assert_invalid_field(result, "ref", &format!("{git_ref:?}"));
        }
    }

    #[test]
    fn ordinary_refs_are_accepted() {
        let refs = [
            "refs/heads/main",
            "refs/heads/feature/new-thing_2",
            "refs/heads/a-",
            "refs/heads/v1.2",
            "refs/tags/v1.2.0",
            "refs/tags/release@2024",
            "refs/heads/ünïcødé",
        ];
        for git_ref in refs {
            let parsed = edited_push(|push| set(push, "ref", Some(json!(git_ref))));
            let Ok(Event::Push(parsed)) = parsed else {
                panic!("{git_ref:?} must be accepted: {parsed:?}");
            };
            assert_eq!(parsed.git_ref, git_ref);
        }
    }

    #[test]
    fn malformed_commit_shas_are_invalid_field() {
        let shas = [
            "",
            &AFTER[..39],
            &format!("{AFTER}0"),
            &format!("{}g", &AFTER[..39]),
            &format!(" {}", &AFTER[..39]),
            &format!("0x{}", &AFTER[..38]),
            "6113728",
            "refs/heads/main",
        ];
        for field in ["before", "after"] {
            for sha in shas {
                let result = edited_push(|push| set(push, field, Some(json!(sha))));
                assert_invalid_field(result, field, &format!("{field} = {sha:?}"));
            }
        }
    }

    #[test]
    fn upper_case_commit_shas_are_normalized_to_lower_case() {
        let parsed = edited_push(|push| {
            set(push, "before", Some(json!(BRANCH_BEFORE.to_uppercase())));
            set(push, "after", Some(json!(AFTER.to_uppercase())));
        });
        let Ok(Event::Push(parsed)) = parsed else {
            panic!("expected a push: {parsed:?}");
        };
        assert_eq!(
            (parsed.before.as_str(), parsed.after.as_str()),
            (BRANCH_BEFORE, AFTER)
        );
    }
}
