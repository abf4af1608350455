//! The JSON document inside a webhook body, by its content type: the body itself for
//! `application/json`, the one `payload=` field of a form. Only ever called after the signature
//! over the raw body was verified.

use std::borrow::Cow;

use super::fields::invalid;
use super::PayloadError;

/// The JSON document inside a body: the body itself for `application/json` (charset parameters
/// allowed), the decoded `payload=` field for `application/x-www-form-urlencoded`. Call only after
/// the signature over the raw body was verified.
///
/// The media type is compared case-insensitively and parameters after `;` are ignored. A missing
/// content type is refused like an unknown one: GitHub always sends one. A form body with more
/// than one `payload` field is refused, so there is never a question of which one counts.
pub fn json_body<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<Cow<'a, [u8]>, PayloadError> {
    let Some(content_type) = content_type else {
        return Err(PayloadError::UnsupportedContentType(String::new()));
    };
    let media_type = content_type
        .split_once(';')
        .map_or(content_type, |(media_type, _parameters)| media_type)
        .trim();
    if media_type.eq_ignore_ascii_case("application/json") {
        Ok(Cow::Borrowed(body))
    } else if media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        let mut payloads = form_urlencoded::parse(body).filter(|(key, _)| key == "payload");
        let (_, payload) = payloads.next().ok_or(PayloadError::MissingFormPayload)?;
        if payloads.next().is_some() {
            return Err(invalid(
                "payload",
                "form body has more than one payload= field",
            ));
        }
        Ok(Cow::Owned(payload.into_owned().into_bytes()))
    } else {
        Err(PayloadError::UnsupportedContentType(
            content_type.to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::events::parse;
    use crate::github::events::tests::{PUSH_BRANCH, PUSH_BRANCH_FORM};

    #[test]
    fn form_encoded_push_parses_identically_to_the_json_one() {
        let form = "application/x-www-form-urlencoded";
        let json = json_body(Some(form), PUSH_BRANCH_FORM).expect("form has a payload");
        assert_eq!(json, PUSH_BRANCH);
        assert_eq!(parse("push", &json), parse("push", PUSH_BRANCH));
    }

    #[test]
    fn json_content_type_passes_the_body_through_unchanged() {
        for content_type in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            " application/json ; charset=utf-8",
        ] {
            assert_eq!(
                json_body(Some(content_type), PUSH_BRANCH).as_deref(),
                Ok(PUSH_BRANCH),
                "{content_type}"
            );
        }
    }

    #[test]
    fn form_content_type_accepts_parameters_and_any_case() {
        let content_type = "Application/X-WWW-Form-Urlencoded; charset=utf-8";
        assert_eq!(
            json_body(Some(content_type), b"payload=%7B%7D").as_deref(),
            Ok(&b"{}"[..])
        );
    }

    #[test]
    fn other_content_types_are_unsupported_with_status_415() {
        let cases = [
            None,
            Some(""),
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            Some("application/json-patch+json"),
            Some("application/x-www-form-urlencodedx"),
            Some("json"),
        ];
        for content_type in cases {
            let err = json_body(content_type, PUSH_BRANCH).expect_err("must be refused");
            assert!(
                matches!(err, PayloadError::UnsupportedContentType(_)),
                "{content_type:?}: {err:?}"
            );
            assert_eq!(err.status(), 415);
        }
    }

    #[test]
    fn form_body_without_payload_field_is_missing_form_payload() {
        let form = Some("application/x-www-form-urlencoded");
        for body in [
            &b""[..],
            b"payloads=%7B%7D",
            b"foo=bar&Payload=%7B%7D",
            PUSH_BRANCH,
        ] {
            let err = json_body(form, body).expect_err("no payload field");
            assert_eq!(err, PayloadError::MissingFormPayload);
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn form_body_with_two_payload_fields_is_refused() {
        let form = Some("application/x-www-form-urlencoded");
        let err = json_body(form, b"payload=%7B%7D&payload=%5B%5D").expect_err("ambiguous");
        assert!(matches!(
            err,
            PayloadError::InvalidField {
                field: "payload",
                ..
            }
        ));
    }
}
