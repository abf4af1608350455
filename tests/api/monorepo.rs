//! One webhook for a monorepo: an app with `paths` deploys only the pushes that change
//! something under them; the others are recorded `ignored` with the reason, and `plan` shows
//! the match. Real server, real git repositories, real SQLite file.

use crate::support::helpers::*;
use crate::support::ops::spawn_ops;
use serde_json::json;

const WEB_ONLY: &str = "paths = [\"services/web/**\", \"shared/*.toml\"]\n";

#[tokio::test]
async fn a_push_outside_the_apps_paths_is_ignored_with_the_reason_and_changes_nothing() {
    let origin = Origin::new();
    origin.write("services/web/app.py", "WEB = 1\n");
    origin.write("services/api/app.py", "API = 1\n");
    let first = origin.commit("two services");
    let ops = spawn_ops(&origin, WEB_ONLY).await;
    // The first deploy has nothing to compare with: it runs.
    ops.pushed(&first).await;
    let volume = &ops.app.volume;

    origin.write("services/api/app.py", "API = 2\n");
    let api_only = origin.commit("api only");
    let before = snapshot(volume);
    let ignored = ops.app.deploy_to_end(&api_only).await;
    assert_eq!(ignored["status"], "ignored", "{ignored:#}");
    let reason = ignored["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("services/web/**") && reason.contains("1 changed elsewhere"),
        "the reason names the paths and what changed: {ignored:#}"
    );
    assert_eq!(snapshot(volume), before, "an ignored push writes nothing");
    let app = ops.get("/api/apps/web").await;
    assert_eq!(app["deployed"]["commit"], first.as_str(), "{app:#}");

    // A plan says a push of it would be ignored, and a deploy by hand still runs it.
    let (status, plan) = ops.post("/api/apps/web/plan", json!({})).await;
    assert_eq!(status, 200, "{plan:#}");
    assert_eq!(
        plan["paths"],
        json!({"patterns": ["services/web/**", "shared/*.toml"], "matching": 0}),
        "{plan:#}"
    );

    // A push under the paths deploys, and brings the other service's change along.
    origin.write("services/web/app.py", "WEB = 2\n");
    let web = origin.commit("web");
    ops.pushed(&web).await;
    assert_eq!(
        std::fs::read_to_string(volume.join("services/web/app.py")).unwrap(),
        "WEB = 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("services/api/app.py")).unwrap(),
        "API = 2\n"
    );

    // A file-name pattern without a slash matches in any directory, as in full_paths.
    origin.write("shared/deep/extra.toml", "x = 1\n");
    let nested = origin.commit("nested toml");
    let ran = ops.app.deploy_to_end(&nested).await;
    assert_eq!(
        ran["status"], "ignored",
        "shared/*.toml is one level: {ran:#}"
    );
    origin.write("shared/base.toml", "x = 2\n");
    let shared = origin.commit("shared toml");
    ops.pushed(&shared).await;
}

#[tokio::test]
async fn a_deploy_asked_for_by_hand_runs_whatever_its_paths_say() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, WEB_ONLY).await;
    ops.pushed(&origin.head()).await;
    origin.write("README.md", "elsewhere\n");
    origin.commit("docs");
    let done = ops.asked("/api/apps/web/deploy", json!({})).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        std::fs::read_to_string(ops.app.volume.join("README.md")).unwrap(),
        "elsewhere\n"
    );
}
