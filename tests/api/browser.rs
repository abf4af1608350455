//! The dashboard in real browsers (issue 13): tests/browser/dashboard.mjs drives Debian's
//! Chromium (over CDP) and Firefox ESR (over WebDriver BiDi) with playwright-core, all three
//! installed by scripts/test-env, through sign-in, a deploy watched
//! live, a rollback, lock and unlock, a CSRF attempt from another origin, phone width, sign-out
//! and a read-only token, against this dockhand. A missing node, playwright-core or browser
//! fails the test: it never skips.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::dashboard::*;
use crate::support::helpers::*;
use crate::support::ops::ADMIN;

/// A `pre-deploy` hook that sleeps, so a deploy is still running when its page opens.
fn slow_hooks() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("pre-deploy");
    std::fs::write(&hook, "#!/bin/sh\nsleep 2\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_works_in_chromium_sign_in_live_deploy_rollback_lock_csrf_read_only_sign_out()
{
    drive("chromium").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_works_in_firefox_sign_in_live_deploy_rollback_lock_csrf_read_only_sign_out()
{
    drive("firefox").await;
}

/// tests/browser/dashboard.mjs in `browser` against a dockhand of its own; then what the
/// browser did is checked through the API.
async fn drive(browser: &'static str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("node_modules/playwright-core").is_dir(),
        "node_modules/playwright-core is missing: run scripts/test-env (npm ci)"
    );
    let hooks = slow_hooks();
    let origin = Origin::new();
    let ops = spawn_dashboard(
        &origin,
        &format!("hooks_dir = \"{}\"", hooks.path().display()),
    )
    .await;
    let first = ops.pushed(&origin.head()).await;
    origin.write("app.py", "print('from the dashboard')\n");
    let next = origin.commit("greet from the dashboard");

    // Screenshots land in docs/ when asked for (DOCKHAND_SCREENSHOTS=docs; Chromium's only).
    let shots = std::env::var("DOCKHAND_SCREENSHOTS")
        .map(|d| root.join(d).display().to_string())
        .unwrap_or_default();
    let script = root.join("tests/browser/dashboard.mjs");
    let base = ops.app.url("");
    let first_id = first["id"].to_string();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .current_dir(root)
            .env("BROWSER", browser)
            .env("DOCKHAND_URL", base.trim_end_matches('/'))
            .env("ADMIN_TOKEN", ADMIN)
            .env("VIEWER_TOKEN", VIEWER)
            .env("FIRST_DEPLOY", first_id)
            .env("NEXT_COMMIT", next)
            .env("SCREENSHOTS", shots)
            .output()
            .expect("node (Node.js 20+, which scripts/test-env checks)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "the {browser} run failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.matches("ok - ").count(),
        10,
        "every check ran:\n{stdout}"
    );

    // What the browser did is what the API says happened.
    let deploys = ops.get("/api/apps/web/deploys").await;
    let deploys = deploys["deploys"].as_array().unwrap();
    let triggers: Vec<_> = deploys
        .iter()
        .map(|d| d["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers, ["rollback", "manual", "push"], "{deploys:#?}");
    assert!(deploys.iter().all(|d| d["status"] == "succeeded"));
    assert_eq!(deploys[0]["rollback_of"], first["id"]);
    assert_eq!(
        ops.get("/api/apps/web").await["locked"],
        serde_json::Value::Null
    );
}
