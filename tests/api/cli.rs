//! The CLI client (issue 5): the real `dockhand` binary run as a command against a real
//! running server with API tokens, real git repositories and a real SQLite file. Its stdout
//! is a pipe, so `--follow` prints plain lines.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use serde_json::{json, Value};

use crate::support::helpers::*;
use crate::support::ops::{spawn_ops, spawn_ops_edited, Ops, ADMIN};

/// What one run of the CLI did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `dockhand ARGS` against `url` with `token` in `DOCKHAND_TOKEN` (none: unset). Async:
/// the server runs in this test's runtime, so the CLI must not block it.
async fn dockhand_at(url: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dockhand"));
    command
        .args(args)
        .env("DOCKHAND_URL", url)
        .env_remove("DOCKHAND_TOKEN")
        .env_remove("DOCKHAND_TOKEN_FILE")
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("DOCKHAND_TOKEN", token);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(90), command.output())
        .await
        .expect("the CLI did not finish within 90 s")
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `dockhand ARGS` as the admin token against `ops`.
async fn dockhand(ops: &Ops, args: &[&str]) -> Run {
    dockhand_at(&ops.app.url(""), Some(ADMIN), args).await
}

/// The deploy id in `deploy N queued (…)`, the first line `deploy`/`rollback` print.
fn queued_id(run: &Run) -> i64 {
    run.stdout
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("deploy "))
        .and_then(|l| l.split(' ').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no deploy id in:\n{run}"))
}

/// `app`'s row of `dockhand status` (which must exit 0).
async fn status_row(ops: &Ops, app: &str) -> String {
    let status = dockhand(ops, &["status"]).await;
    assert_eq!(status.code, 0, "{status}");
    status
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{app} ")))
        .unwrap_or_else(|| panic!("no row for {app}:\n{status}"))
        .to_string()
}

#[tokio::test]
async fn deploy_follow_prints_each_step_as_a_plain_line_and_exits_0_when_it_succeeds() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;

    let run = dockhand(&ops, &["deploy", "web", "--follow"]).await;

    assert_eq!(run.code, 0, "{run}");
    let id = queued_id(&run);
    let deploy = ops.wait(id).await;
    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
    for stage in stages(&deploy) {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with('[') && l.contains(&format!("] {stage}")))
            .unwrap_or_else(|| panic!("no line for step {stage}:\n{run}"));
        assert!(line.contains(" … ok ("), "{line}\n{run}");
        assert!(line.ends_with(" ms)") || line.ends_with(" s)"), "{line}");
    }
    assert!(
        run.stdout.contains(&format!("/api/deploys/{id}")),
        "the URL of the deploy is printed:\n{run}"
    );
    assert_eq!(
        run.stdout.lines().last(),
        Some(format!("deploy {id} succeeded").as_str()),
        "{run}"
    );
    assert!(run.stderr.is_empty(), "{run}");
}

#[tokio::test]
async fn a_failing_deploy_exits_1_with_the_failed_step_and_logs_show_its_output() {
    let origin = Origin::new();
    let hooks = tempfile::tempdir().unwrap();
    let hook = hooks.path().join("web/pre-deploy");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'migrations pending: 0042_add_index'\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server_extra = format!("hooks_dir = \"{}\"", hooks.path().display());
    let ops = spawn_ops_edited(&origin, &server_extra, "", |t| t).await;

    let run = dockhand(&ops, &["deploy", "web", "--follow"]).await;

    assert_eq!(run.code, 1, "a failed deploy exits 1:\n{run}");
    let id = queued_id(&run);
    assert_eq!(ops.wait(id).await["status"], "failed");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("] hook:pre-deploy") && l.contains("FAILED")),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("\n    migrations pending: 0042_add_index\n"),
        "the step's output, indented:\n{run}"
    );
    assert!(
        run.stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("deploy {id} failed: "))),
        "{run}"
    );

    // A finished deploy: `logs` shows it and exits 0 (a read); `logs --follow` replays it
    // and exits as the deploy ended.
    let logs = dockhand(&ops, &["logs", &id.to_string()]).await;
    assert_eq!(logs.code, 0, "{logs}");
    assert!(
        logs.stdout
            .starts_with(&format!("deploy {id} of web: manual by admin")),
        "{logs}"
    );
    assert!(logs.stdout.contains("FAILED"), "{logs}");
    assert!(
        logs.stdout
            .contains("    migrations pending: 0042_add_index"),
        "{logs}"
    );
    assert!(logs.stdout.contains("\nerror: "), "{logs}");
    let replay = dockhand(&ops, &["logs", &id.to_string(), "--follow"]).await;
    assert_eq!(replay.code, 1, "{replay}");
    assert!(replay.stdout.contains("] hook:pre-deploy"), "{replay}");

    let json = dockhand(&ops, &["logs", &id.to_string(), "--json"]).await;
    assert_eq!(json.code, 0, "{json}");
    let printed: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(printed, ops.get(&format!("/api/deploys/{id}")).await);
}

#[tokio::test]
async fn history_prints_a_table_of_deploys_and_json_prints_the_apis_answer() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let first = ops.pushed(&origin.head()).await;
    origin.write("app.py", "VERSION = 2\n");
    let second_sha = origin.commit("second");
    let deploy = dockhand(&ops, &["deploy", "web", "--follow"]).await;
    assert_eq!(deploy.code, 0, "{deploy}");
    let id = queued_id(&deploy);

    let run = dockhand(&ops, &["history", "web"]).await;

    assert_eq!(run.code, 0, "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two deploys:\n{run}");
    for column in [
        "ID", "WHEN", "TRIGGER", "WHO", "REF", "SHA", "PATH", "STATUS", "DURATION",
    ] {
        assert!(lines[0].contains(column), "{column}:\n{run}");
    }
    let newest: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(newest[0], id.to_string(), "newest first:\n{run}");
    for cell in ["manual", "admin", &second_sha[..7], "fast", "succeeded"] {
        assert!(newest.contains(&cell), "{cell}:\n{run}");
    }
    let oldest: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(oldest[0], first["id"].to_string(), "{run}");
    for cell in [
        "push",
        "octocat",
        "main",
        &origin.git(&["rev-parse", "--short=7", "HEAD~1"]),
    ] {
        assert!(oldest.contains(&cell), "{cell}:\n{run}");
    }

    let json = dockhand(&ops, &["history", "web", "--limit", "1", "--json"]).await;
    assert_eq!(json.code, 0, "{json}");
    let printed: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(printed, ops.get("/api/apps/web/deploys?limit=1").await);

    // `plan --json` is the API's plan, unchanged (a plan changes nothing, so both agree).
    let plan = dockhand(&ops, &["plan", "web", "--json"]).await;
    assert_eq!(plan.code, 0, "{plan}");
    let (status, api) = ops.post("/api/apps/web/plan", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&plan.stdout).unwrap(), api);
    let plain = dockhand(&ops, &["plan", "web"]).await;
    assert!(
        plain
            .stdout
            .starts_with(&format!("web: would deploy {}", &second_sha[..7])),
        "{plain}"
    );
}

#[tokio::test]
async fn lock_refuses_deploys_with_the_apis_message_until_unlock() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    ops.pushed(&origin.head()).await;

    let lock = dockhand(&ops, &["lock", "web", "--reason", "migrating db"]).await;
    assert_eq!(lock.code, 0, "{lock}");
    assert!(
        lock.stdout.starts_with("web locked by admin since "),
        "{lock}"
    );
    assert!(lock.stdout.trim_end().ends_with(": migrating db"), "{lock}");

    let refused = dockhand(&ops, &["deploy", "web", "--follow"]).await;
    assert_eq!(refused.code, 2, "{refused}");
    assert!(refused.stdout.is_empty(), "{refused}");
    assert!(
        refused
            .stderr
            .starts_with("error: app web is locked by admin since "),
        "{refused}"
    );
    assert!(
        refused.stderr.trim_end().ends_with(": migrating db"),
        "{refused}"
    );

    let web = status_row(&ops, "web").await;
    assert!(web.contains("by admin since"), "{web}");
    assert!(web.contains("migrating db"), "{web}");

    let unlock = dockhand(&ops, &["unlock", "web"]).await;
    assert_eq!(unlock.code, 0, "{unlock}");
    assert!(
        unlock
            .stdout
            .starts_with("web unlocked (was locked by admin"),
        "{unlock}"
    );
    let again = dockhand(&ops, &["unlock", "web"]).await;
    assert_eq!(again.stdout.trim_end(), "web was not locked", "{again}");
    let deploy = dockhand(&ops, &["deploy", "web", "--follow"]).await;
    assert_eq!(deploy.code, 0, "{deploy}");
}

#[tokio::test]
async fn status_shows_every_app_and_json_is_the_apis_answer() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let deployed = ops.pushed(&origin.head()).await;

    let run = dockhand(&ops, &["status"]).await;

    assert_eq!(run.code, 0, "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("APP "), "{run}");
    let web: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("{run}"))
        .split_whitespace()
        .collect();
    assert_eq!(web[1], &origin.head()[..7], "{run}");
    assert!(
        web.contains(&format!("#{}", deployed["id"]).as_str()),
        "{run}"
    );
    assert!(web.contains(&"succeeded"), "{run}");
    assert!(
        lines.iter().any(|l| l.starts_with("other ")),
        "every app the token may see:\n{run}"
    );

    let json = dockhand(&ops, &["status", "--json"]).await;
    assert_eq!(json.code, 0, "{json}");
    let printed: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(printed, ops.get("/api/apps").await);
}

#[tokio::test]
async fn rollback_to_a_deploy_id_follows_to_success_and_locks_the_app() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let first = ops.pushed(&origin.head()).await;
    origin.write("app.py", "VERSION = 2\n");
    ops.pushed(&origin.commit("second")).await;

    let id = first["id"].to_string();
    let run = dockhand(&ops, &["rollback", "web", "--to", &id, "--follow"]).await;

    assert_eq!(run.code, 0, "{run}");
    let rollback = ops.wait(queued_id(&run)).await;
    assert_eq!(rollback["trigger"], "rollback");
    assert_eq!(rollback["rollback_of"], first["id"]);
    assert_eq!(rollback["to_commit"], first["to_commit"]);
    let app = ops.get("/api/apps/web").await;
    assert_eq!(app["locked"]["locked_by"], "admin", "{app:#}");
}

#[tokio::test]
async fn missing_or_wrong_tokens_and_an_unreachable_server_give_clear_errors() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let url = ops.app.url("");

    let run = dockhand_at(&url, None, &["deploy", "web"]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.starts_with("error: "), "{run}");
    assert!(run.stderr.contains("set DOCKHAND_TOKEN"), "{run}");
    assert!(run.stdout.is_empty(), "{run}");

    let wrong = "wrong-token-0123456789abcdef";
    let run = dockhand_at(&url, Some(wrong), &["history", "web"]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("DOCKHAND_TOKEN"), "{run}");
    assert!(
        !run.stderr.contains(wrong),
        "the token is never printed:\n{run}"
    );

    let nobody = format!("http://127.0.0.1:{}", free_port());
    let run = dockhand_at(&nobody, Some(ADMIN), &["status"]).await;
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .starts_with(&format!("error: cannot reach dockhand at {nobody}")),
        "{run}"
    );
    assert!(!run.stderr.contains(ADMIN), "{run}");

    let run = dockhand_at(&url, Some(ADMIN), &["deploy", "web", "--full", "--fast"]).await;
    assert_eq!(run.code, 2, "usage errors exit 2:\n{run}");
}

#[tokio::test]
async fn maintenance_on_and_off_switch_the_proxy_and_status_shows_it() {
    let origin = Origin::new();
    let upstream = format!("127.0.0.1:{}", free_port());
    let proxy = format!("[apps.proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n");
    let ops = spawn_ops(&origin, &proxy).await;

    let on = dockhand(&ops, &["maintenance", "web", "on"]).await;
    assert_eq!(on.code, 0, "{on}");
    assert!(on.stdout.starts_with("web maintenance on"), "{on}");
    assert_eq!(ops.get("/api/apps/web").await["proxy"]["maintenance"], true);
    let web = status_row(&ops, "web").await;
    assert!(web.ends_with(" maintenance"), "{web}");

    let off = dockhand(&ops, &["maintenance", "web", "off"]).await;
    assert_eq!(off.code, 0, "{off}");
    assert!(off.stdout.starts_with("web maintenance off"), "{off}");
    let web = status_row(&ops, "web").await;
    assert!(web.ends_with(&format!("→ {upstream}")), "{web}");

    let none = dockhand(&ops, &["maintenance", "other", "on"]).await;
    assert_eq!(none.code, 2, "{none}");
    assert!(none.stderr.contains("no [apps.proxy]"), "{none}");
}
