//! The webhook endpoint as GitHub (and an attacker) sees it.

use serde_json::Value;

use crate::support::helpers::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/github");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

#[tokio::test]
async fn missing_signature_is_401_even_with_a_valid_legacy_sha1_header() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let body = push_payload("refs/heads/main", &origin.head(), false);
    let response = app
        .client
        .post(app.url("/hooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery_id())
        .header(
            "X-Hub-Signature",
            "sha1=0000000000000000000000000000000000000000",
        )
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(app.deploys().await.is_empty());
}

#[tokio::test]
async fn malformed_signature_headers_are_401() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let body = push_payload("refs/heads/main", &origin.head(), false);
    let good = sign(SECRET, &body);
    let hex = good.trim_start_matches("sha256=");
    let cases = [
        String::new(),
        hex.to_string(),
        format!("sha258={hex}"),
        format!("sha1={hex}"),
        format!("sha256={}", &hex[..63]),
        format!("sha256={hex}0"),
        format!("sha256={}g", &hex[..63]),
    ];
    for header in cases {
        let response = app
            .deliver(
                "/hooks/github",
                "push",
                &delivery_id(),
                body.clone(),
                &header,
            )
            .await;
        assert_eq!(response.status(), 401, "header {header:?}");
    }
    assert!(app.deploys().await.is_empty());
}

#[tokio::test]
async fn wrong_signature_is_401_and_never_reveals_the_expected_mac() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let body = push_payload("refs/heads/main", &origin.head(), false);
    let expected = sign(SECRET, &body);
    let wrong = sign("not the secret", &body);
    for path in ["/hooks/github", "/hooks/github/web"] {
        let response = app
            .deliver(path, "push", &delivery_id(), body.clone(), &wrong)
            .await;
        assert_eq!(response.status(), 401);
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(expected.trim_start_matches("sha256=")),
            "{text}"
        );
    }
    assert!(app.deploys().await.is_empty());
}

#[tokio::test]
async fn signature_covers_the_raw_bytes_including_escapes_and_non_ascii() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let body = push_payload("refs/heads/main", &origin.head(), false);
    // Same JSON value, different bytes: an escape sequence and raw non-ASCII in a string.
    let text = String::from_utf8(body).unwrap().replace(
        "\"message\":\"test\"",
        "\"message\" : \"t\\u001best \u{e9}\u{1F680}\"",
    );
    let body = text.into_bytes();
    let response = app.send_signed("/hooks/github", "push", body.clone()).await;
    assert_eq!(response.status(), 202);
    // Re-serialising changes the bytes and must not verify.
    let reserialised =
        serde_json::to_vec(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
    assert_ne!(reserialised, body);
    let response = app
        .deliver(
            "/hooks/github",
            "push",
            &delivery_id(),
            reserialised,
            &sign(SECRET, &body),
        )
        .await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn ping_fixture_answers_200_and_deploys_nothing() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let body = fixture("ping.json");
    let response = app
        .send_signed("/hooks/github/web", "ping", body.clone())
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "pong");
    assert!(app.deploys().await.is_empty());
}

#[tokio::test]
async fn real_github_push_fixtures_get_the_documented_answers() {
    let origin = Origin::new();
    // The fixtures are pushes to Codertocat/Hello-World's `master` and tags.
    let edit = |t: String| {
        t.replace(REPOSITORY, "Codertocat/Hello-World")
            .replace("branch = \"main\"", "branch = \"master\"")
    };
    let app = spawn_app_edited(&origin, "", "tags = \"*\"", edit).await;
    let send = |name: &'static str, content_type: &'static str| {
        let body = fixture(name);
        let signature = sign(SECRET, &body);
        let app = &app;
        async move {
            let response = app
                .deliver_as(
                    "/hooks/github",
                    "push",
                    &delivery_id(),
                    body,
                    &signature,
                    content_type,
                )
                .await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or_default())
        }
    };
    for (name, content_type) in [
        ("push-branch.json", "application/json"),
        ("push-branch.form", "application/x-www-form-urlencoded"),
        ("push-tag.json", "application/json"),
        // Branch creation deploys too (SECURITY.md 13: diffed against what is deployed).
        ("push-branch-created.json", "application/json"),
    ] {
        let (status, body) = send(name, content_type).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (202, Some("queued")),
            "{name}: {body}"
        );
        assert!(body["deploy_id"].is_i64(), "{name}: {body}");
    }
    let (status, body) = send("push-branch-deleted.json", "application/json").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("ignored")),
        "{body}"
    );
    assert!(
        body["reason"].as_str().unwrap().contains("deleted"),
        "{body}"
    );
    let (status, _) = send("push-branch.json", "text/plain").await;
    assert_eq!(status, 415);
}

#[tokio::test]
async fn other_events_are_acknowledged_as_ignored_and_recorded() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let body = br#"{"action":"opened","repository":{"full_name":"acme/web"}}"#.to_vec();
    let response = app
        .send_signed("/hooks/github", "issues", body.clone())
        .await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "ignored");
    assert!(answer["reason"].as_str().unwrap().contains("issues"));
}

#[tokio::test]
async fn missing_event_or_delivery_header_is_400_and_get_is_405() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let body = push_payload("refs/heads/main", &origin.head(), false);
    let response = app
        .client
        .post(app.url("/hooks/github"))
        .header("X-GitHub-Delivery", delivery_id())
        .header("X-Hub-Signature-256", sign(SECRET, &body))
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("x-github-event"));
    let response = app
        .client
        .post(app.url("/hooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", sign(SECRET, &body))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        app.client
            .get(app.url("/hooks/github"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert!(app.deploys().await.is_empty());
}

#[tokio::test]
async fn malformed_payloads_are_400_naming_the_field_and_change_nothing() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let valid = String::from_utf8(push_payload("refs/heads/main", &origin.head(), false)).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"ref\":\"refs/heads/main\"".to_vec(), "JSON"),
        (b"[]".to_vec(), "JSON"),
        (
            valid
                .replacen(
                    "\"before\":\"0000000000000000000000000000000000000000\"",
                    "\"before\":null",
                    1,
                )
                .into_bytes(),
            "before",
        ),
        (
            valid
                .replace("\"ref\":\"refs/heads/main\"", "\"ref\":42")
                .into_bytes(),
            "ref",
        ),
        (
            valid
                .replace("\"forced\":false", "\"forced\":\"yes\"")
                .into_bytes(),
            "forced",
        ),
        (
            valid
                .replace("\"pusher\"", "\"x\"")
                .replace("\"repository\"", "\"repo\"")
                .into_bytes(),
            "repository",
        ),
    ];
    for (body, field) in cases {
        let response = app.send_signed("/hooks/github", "push", body.clone()).await;
        assert_eq!(response.status(), 400, "{}", String::from_utf8_lossy(&body));
        let text = response.text().await.unwrap();
        assert!(text.contains(field), "{text} should name {field}");
    }
    assert!(app.deploys().await.is_empty());
}

#[tokio::test]
async fn option_like_ref_names_are_rejected() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let response = app
        .push_ref("refs/heads/-upload-pack=touch", &origin.head(), false)
        .await;
    assert_eq!(response.status(), 400);
    assert!(app.deploys().await.is_empty());
}

#[tokio::test]
async fn redelivery_answers_200_with_the_original_deploy_and_triggers_nothing() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let body = push_payload("refs/heads/main", &origin.head(), false);
    let id = delivery_id();
    let first = app
        .deliver(
            "/hooks/github",
            "push",
            &id,
            body.clone(),
            &sign(SECRET, &body),
        )
        .await;
    assert_eq!(first.status(), 202);
    let location = first.headers()["location"].to_str().unwrap().to_string();
    let first: Value = first.json().await.unwrap();
    assert_eq!(location, format!("/api/deploys/{}", first["deploy_id"]));
    let again = app
        .deliver(
            "/hooks/github",
            "push",
            &id,
            body.clone(),
            &sign(SECRET, &body),
        )
        .await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["deploy_id"], first["deploy_id"]);
    assert_eq!(app.deploys().await.len(), 1);
}

#[tokio::test]
async fn untracked_ref_and_other_repository_are_ignored_with_the_reason() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let response = app
        .push_ref("refs/heads/feature", &origin.head(), false)
        .await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "ignored");
    assert!(answer["reason"]
        .as_str()
        .unwrap()
        .contains("refs/heads/feature"));

    let body = String::from_utf8(push_payload("refs/heads/main", &origin.head(), false))
        .unwrap()
        .replace(REPOSITORY, "acme/other")
        .into_bytes();
    let response = app
        .send_signed("/hooks/github/web", "push", body.clone())
        .await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "ignored");
    assert!(answer["reason"].as_str().unwrap().contains("acme/other"));
    assert!(app.deploys().await.is_empty());
}

#[tokio::test]
async fn branch_deletion_is_recorded_as_ignored_and_leaves_the_volume_alone() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let head = origin.head();
    app.deploy(&head).await;
    let before = app.volume_snapshot();
    let body = String::from_utf8(push_payload("refs/heads/main", &"0".repeat(40), false))
        .unwrap()
        .replace("\"deleted\":false", "\"deleted\":true")
        .into_bytes();
    let response = app.send_signed("/hooks/github", "push", body.clone()).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "ignored");
    assert_eq!(app.deploys().await.len(), 1);
    assert_eq!(app.volume_snapshot(), before);
}

#[tokio::test]
async fn unknown_app_endpoint_is_404() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let body = push_payload("refs/heads/main", &origin.head(), false);
    let response = app
        .send_signed("/hooks/github/nope", "push", body.clone())
        .await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn two_signature_or_delivery_headers_are_refused_whichever_is_valid() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let body = push_payload("refs/heads/main", &origin.head(), false);
    let valid = sign(SECRET, &body);
    let wrong = sign("not the secret", &body);
    for path in ["/hooks/github", "/hooks/github/web"] {
        for (first, second) in [(&valid, &wrong), (&wrong, &valid), (&valid, &valid)] {
            let response = app
                .client
                .post(app.url(path))
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", delivery_id())
                .header("Content-Type", "application/json")
                .header("X-Hub-Signature-256", first.as_str())
                .header("X-Hub-Signature-256", second.as_str())
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{path}");
            let text = response.text().await.unwrap();
            assert!(text.contains("more than one X-Hub-Signature-256"), "{text}");
        }
        let response = app
            .client
            .post(app.url(path))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", delivery_id())
            .header("X-GitHub-Delivery", delivery_id())
            .header("Content-Type", "application/json")
            .header("X-Hub-Signature-256", valid.as_str())
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains("more than once"), "{text}");
    }
    assert!(app.deploys().await.is_empty());
}
