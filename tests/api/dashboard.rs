//! The dashboard (issue 13): read-only tokens, sessions, CSRF and the pages, against a real
//! server, a real git origin and a real SQLite file.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::dashboard::*;
use crate::support::helpers::*;

#[tokio::test]
async fn a_read_only_token_reads_but_every_write_answers_403_and_queues_nothing() {
    let origin = Origin::new();
    let ops = spawn_dashboard(&origin, "").await;
    let id = ops.pushed(&origin.head()).await["id"].as_i64().unwrap();
    for path in ["/api/apps", "/api/apps/web", "/api/apps/web/deploys"] {
        let response = ops.call(Method::GET, path, Some(VIEWER), Value::Null).await;
        assert_eq!(response.status(), 200, "GET {path}");
    }
    origin.write("app.py", "print('next')\n");
    origin.commit("next");
    let writes = [
        (Method::POST, "/api/apps/web/deploy"),
        (Method::POST, "/api/apps/web/rollback"),
        (Method::POST, "/api/apps/web/lock"),
        (Method::DELETE, "/api/apps/web/lock"),
        (Method::POST, "/api/apps/web/maintenance"),
    ];
    for (method, path) in writes {
        let response = ops
            .call(method.clone(), path, Some(VIEWER), json!({ "reason": "x" }))
            .await;
        assert_eq!(response.status(), 403, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"], "token \"viewer\" is read-only",
            "{method} {path}"
        );
    }
    let deploys = ops.get("/api/apps/web/deploys").await;
    let deploys = deploys["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 1, "nothing queued: {deploys:#?}");
    assert_eq!(deploys[0]["id"], id);
    assert_eq!(ops.get("/api/apps/web").await["locked"], Value::Null);
}
