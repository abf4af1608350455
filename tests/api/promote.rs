//! Promote the exact artifact: `POST /api/apps/{to}/promote {from_deploy}` (and
//! `dockhand promote`) runs the commit another app's deploy ran, recorded `trigger = promote`
//! with a link to it; refused with a 400 naming why for a deploy that cannot be promoted.
//! Real server, real git repositories, real SQLite file.

use serde_json::{json, Value};

use crate::support::helpers::*;
use crate::support::ops::{spawn_ops_edited, Ops};

/// `web` and `other` track `origin`; `elsewhere` tracks a second repository.
async fn two_repositories(origin: &Origin, elsewhere: &Origin, volume: &std::path::Path) -> Ops {
    let third = format!(
        "\n[[apps]]\nname = \"elsewhere\"\nrepo = \"{}\"\nsecret = \"third secret\"\nvolume = \"{}\"\n{NO_POLL}",
        elsewhere.bare.display(),
        volume.display()
    );
    spawn_ops_edited(origin, "", "", |t| format!("{t}{third}")).await
}

fn field_error(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_promote_runs_the_commit_another_apps_deploy_ran_and_links_to_it() {
    let (origin, elsewhere) = (Origin::new(), Origin::new());
    let scratch = tempfile::tempdir().unwrap();
    let ops = two_repositories(&origin, &elsewhere, &scratch.path().join("elsewhere")).await;
    let staged = ops.pushed(&origin.head()).await;
    let staged_id = staged["id"].as_i64().unwrap();
    // web moves on; the promote still runs what deploy `staged_id` ran.
    origin.write("app.py", "VERSION = 2\n");
    ops.pushed(&origin.commit("v2")).await;

    let done = ops
        .asked(
            "/api/apps/other/promote",
            json!({ "from_deploy": staged_id }),
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        (&done["trigger"], &done["promoted_from"], &done["to_commit"]),
        (&json!("promote"), &json!(staged_id), &staged["to_commit"]),
        "{done:#}"
    );
    let other = ops.get("/api/apps/other").await;
    assert_eq!(
        other["deployed"]["commit"], staged["to_commit"],
        "{other:#}"
    );

    // What cannot be promoted is refused, naming the field and why; nothing is queued.
    let before = ops.get("/api/apps/other/deploys").await["deploys"]
        .as_array()
        .unwrap()
        .len();
    let own = done["id"].as_i64().unwrap();
    let theirs = ops.asked("/api/apps/elsewhere/deploy", json!({})).await;
    assert_eq!(theirs["status"], "succeeded", "{theirs:#}");
    let cases = [
        (json!({ "from_deploy": own }), 400, "itself"),
        (json!({ "from_deploy": 0 }), 400, "positive"),
        (
            json!({ "from_deploy": theirs["id"] }),
            400,
            "one repository",
        ),
        (json!({ "from_deploy": 999_999 }), 404, "no deploy 999999"),
        (json!({ "from_deploy": "1" }), 400, "from_deploy"),
        (json!({ "from": 1 }), 400, "from"),
    ];
    for (body, status, says) in cases {
        let (got, answer) = ops.post("/api/apps/other/promote", body.clone()).await;
        assert_eq!(got.as_u16(), status, "{body}: {answer:#}");
        assert!(field_error(&answer).contains(says), "{body}: {answer:#}");
    }
    let after = ops.get("/api/apps/other/deploys").await["deploys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, before, "a refused promote records no deploy");
}

#[tokio::test]
async fn a_failed_deploy_is_not_promoted() {
    let (origin, elsewhere) = (Origin::new(), Origin::new());
    let scratch = tempfile::tempdir().unwrap();
    let ops = two_repositories(&origin, &elsewhere, &scratch.path().join("elsewhere")).await;
    ops.pushed(&origin.head()).await;
    // A first deploy into a volume dockhand did not write fails (adopt = false).
    std::fs::create_dir_all(scratch.path().join("elsewhere")).unwrap();
    std::fs::write(scratch.path().join("elsewhere/foreign"), "x").unwrap();
    let failed = ops.asked("/api/apps/elsewhere/deploy", json!({})).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let (status, answer) = ops
        .post(
            "/api/apps/web/promote",
            json!({ "from_deploy": failed["id"] }),
        )
        .await;
    assert_eq!(status, 400, "{answer:#}");
    assert!(
        field_error(&answer).contains("is failed; promote a deploy that succeeded"),
        "{answer:#}"
    );
}
