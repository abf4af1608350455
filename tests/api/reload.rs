//! Reload adapters (touch / signal / exec / restart) on a real container, and the
//! health-checked fast path that reverts itself, against a real app process.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::engine::Cleanup;
use crate::support::full::{live, spawn_with, V1};
use crate::support::helpers::*;

/// The test app's supervisor (PID 1 of its container): serves a copy of `version.txt` made at
/// start and on each reload — SIGHUP, or a new mtime of `reload.txt` — so the new code answers
/// only once the app reloaded.
const SUPERVISOR: &str = r#"#!/bin/sh
load() { cp /code/version.txt /tmp/www/index.html; }
mkdir -p /tmp/www
load
trap load HUP
httpd -f -p "127.0.0.1:$PORT" -h /tmp/www &
last=$(stat -c %y /code/reload.txt 2>/dev/null)
while :; do
    sleep 0.1 & wait $!
    now=$(stat -c %y /code/reload.txt 2>/dev/null)
    if [ "$now" != "$last" ]; then last=$now; load; fi
done
"#;

async fn get(url: &str) -> String {
    match client().get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("error: {e}"),
    }
}

/// Deploy v1 (full path: the container starts), push a code-only change, and check that the
/// `reload` setting makes the container answer the new version.
async fn the_new_code_answers_after_a_fast_deploy_with(reload: &str) {
    let origin = Origin::new();
    origin.write("supervisor.sh", SUPERVISOR);
    origin.set_exec("supervisor.sh", true);
    origin.write("version.txt", "code 1\n");
    origin.write("reload.txt", "");
    let head = origin.commit("a reloadable app");
    let config = "cmd = [\"/code/supervisor.sh\"]\nexpect_body_contains = \"code 1\"\n";
    let (app, name) = spawn_with(&origin, V1, config).await;
    let _cleanup = Cleanup::app(&name);
    // The reload setting belongs to the app table, before [apps.container].
    let app = {
        let path = app.dir.path().join("dockhand.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("touch = \"uwsgi.ini\"\n", "").replacen(
            "[apps.container]",
            &format!("{reload}\n[apps.container]"),
            1,
        );
        std::fs::write(&path, text).unwrap();
        app.restart().await
    };
    app.deploy(&head).await;
    let port = live(&app, &name).await["port"].as_u64().unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(get(&url).await, "code 1\n");

    origin.write("version.txt", "code 2\n");
    let deploy = app.deploy(&origin.commit("new code")).await;
    assert_eq!(deploy["path"], "fast", "{deploy:#}");
    let reload_step = step(&deploy, "reload").clone();
    // The app reloads asynchronously (a signal handler, a file watcher): give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = get(&format!(
            "http://127.0.0.1:{}/",
            live(&app, &name).await["port"]
        ))
        .await;
        if now == "code 2\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {now:?} after the reload ({reload}): {reload_step:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn touch_reloads_a_watching_app() {
    the_new_code_answers_after_a_fast_deploy_with("touch = \"reload.txt\"").await;
}

#[tokio::test]
async fn signal_hup_reloads_the_container() {
    the_new_code_answers_after_a_fast_deploy_with("signal = \"HUP\"").await;
}

#[tokio::test]
async fn exec_runs_the_reload_command_in_the_container() {
    the_new_code_answers_after_a_fast_deploy_with(
        "exec = [\"/bin/sh\", \"-c\", \"cp /code/version.txt /tmp/www/index.html\"]",
    )
    .await;
}

#[tokio::test]
async fn restart_restarts_the_container() {
    the_new_code_answers_after_a_fast_deploy_with("restart = true").await;
}

#[tokio::test]
async fn an_exec_reload_that_fails_fails_the_deploy_and_restores_the_previous_commit() {
    let origin = Origin::new();
    origin.write("supervisor.sh", SUPERVISOR);
    origin.set_exec("supervisor.sh", true);
    origin.write("version.txt", "code 1\n");
    let head = origin.commit("a reloadable app");
    let (app, name) = spawn_with(
        &origin,
        V1,
        "cmd = [\"/code/supervisor.sh\"]\nexpect_body_contains = \"code 1\"\n",
    )
    .await;
    let _cleanup = Cleanup::app(&name);
    let path = app.dir.path().join("dockhand.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "touch = \"uwsgi.ini\"\n",
        "exec = [\"/bin/sh\", \"-c\", \"echo reload refused >&2; exit 3\"]\n",
    );
    std::fs::write(&path, text).unwrap();
    let app = app.restart().await;
    app.deploy(&head).await;

    origin.write("version.txt", "code 2\n");
    let id = app.push(&origin.commit("new code")).await;
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    let error = deploy["error"].as_str().unwrap();
    assert!(
        error.contains("exited with status 3") && error.contains("reload refused"),
        "{error}"
    );
    assert_eq!(app.volume_snapshot(), origin.snapshot(&head));
}

#[tokio::test]
async fn an_exec_reload_that_never_ends_fails_at_reload_timeout_and_the_queue_goes_on() {
    let origin = Origin::new();
    origin.write("supervisor.sh", SUPERVISOR);
    origin.set_exec("supervisor.sh", true);
    origin.write("version.txt", "code 1\n");
    let head = origin.commit("a reloadable app");
    let (app, name) = spawn_with(
        &origin,
        V1,
        "cmd = [\"/code/supervisor.sh\"]\nexpect_body_contains = \"code 1\"\n",
    )
    .await;
    let _cleanup = Cleanup::app(&name);
    let path = app.dir.path().join("dockhand.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "touch = \"uwsgi.ini\"\n",
        "exec = [\"/bin/sh\", \"-c\", \"test -e /code/hang && sleep 600; exit 0\"]\nreload_timeout = \"1s\"\n",
    );
    std::fs::write(&path, text).unwrap();
    let app = app.restart().await;
    app.deploy(&head).await;

    // This commit's reload never ends.
    origin.write("hang", "");
    let hung = app.push(&origin.commit("a reload that hangs")).await;
    let deploy = app.wait_deploy(hung).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    let error = deploy["error"].as_str().unwrap();
    assert!(
        error.contains("did not finish within 1s (reload_timeout)"),
        "{error}"
    );
    // The next deploy is not stuck behind it.
    origin.remove("hang");
    let next = app.deploy(&origin.commit("reloads again")).await;
    assert_eq!(next["status"], "succeeded", "{next:#}");
}

/// A real app on the host: python3's http.server serving `dir` on a loopback port.
struct HostApp(Child);

impl HostApp {
    fn serve(dir: &std::path::Path, port: u16) -> HostApp {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (scripts/test-env installs it)");
        HostApp(child)
    }
}

impl Drop for HostApp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A commit that breaks the app fails its check; dockhand puts the previous commit back and
/// verifies that the previous version answers, in either layout.
async fn a_broken_commit_is_reverted(layout: &str) {
    let origin = Origin::new();
    origin.write("version.txt", "ok 1\n");
    let good = origin.commit("v1");
    let port = free_port();
    // In the releases layout the app serves the tree under `current`.
    let prefix = if layout.contains("releases") {
        "current/"
    } else {
        ""
    };
    let app = spawn_app_with(
        &origin,
        "",
        &format!(
            "{layout}\n[apps.check]\nurl = \"http://127.0.0.1:{port}/{prefix}version.txt\"\n\
             expect_body_contains = \"ok\"\ninterval = \"100ms\"\ndeadline = \"3s\"\n"
        ),
    )
    .await;
    std::fs::create_dir_all(&app.volume).unwrap();
    let _host = HostApp::serve(&app.volume, port);
    let first = app.deploy(&good).await;
    assert!(stages(&first).contains(&"check".to_string()), "{first:#}");

    origin.write("version.txt", "crashed\n");
    let deploy = app.deploy_to_end(&origin.commit("breaks the app")).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(deploy["reverted"], true, "{deploy:#}");
    let steps = stages(&deploy);
    let tail: Vec<&str> = steps.iter().map(String::as_str).skip(3).collect();
    assert_eq!(
        tail,
        ["reload", "check", "restore", "reload", "verify"],
        "{deploy:#}"
    );
    let answer = get(&format!("http://127.0.0.1:{port}/{prefix}version.txt")).await;
    assert_eq!(answer, "ok 1\n", "the previous version answers again");
    assert!(
        deploy["error"].as_str().unwrap().contains("reverted"),
        "{deploy:#}"
    );
    let state = app.get("/api/apps/web").await;
    assert_eq!(state["deployed"]["commit"], good.as_str());
}

#[tokio::test]
async fn a_commit_that_fails_its_health_check_is_reverted_in_place() {
    a_broken_commit_is_reverted("").await;
}

#[tokio::test]
async fn a_commit_that_fails_its_health_check_is_reverted_in_the_releases_layout() {
    a_broken_commit_is_reverted("layout = \"releases\"").await;
}

/// A host app that reloads its code when its touch file changes, but loses every other touch,
/// as uWSGI loses one that lands before its master's first check after a (re)start.
const FORGETFUL_APP: &str = r#"
import http.server, os, sys, threading, time
root, port, touch = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load():
    try:
        return open(os.path.join(root, "REVISION")).read().split("\n")[0] + "\n"
    except OSError:
        return "none\n"
def mtime():
    try:
        return os.stat(os.path.join(root, touch)).st_mtime
    except OSError:
        return None
state = {"version": load(), "seen": 0}
def watch():
    last = mtime()
    while True:
        time.sleep(0.05)
        now = mtime()
        if now != last:
            last = now
            state["seen"] += 1
            if state["seen"] % 2 == 0:
                state["version"] = load()
threading.Thread(target=watch, daemon=True).start()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = state["version"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

#[tokio::test]
async fn a_touch_the_app_did_not_act_on_is_made_again_until_the_check_passes() {
    let origin = Origin::new();
    origin.write("uwsgi.ini", "[uwsgi]\n");
    let head = origin.commit("v1");
    let port = free_port();
    let app = spawn_app_with(
        &origin,
        "",
        &format!(
            "[apps.check]\nurl = \"http://127.0.0.1:{port}/\"\nexpect_body_contains = \"{{sha}}\"\n\
             interval = \"100ms\"\ndeadline = \"20s\"\n"
        ),
    )
    .await;
    std::fs::create_dir_all(&app.volume).unwrap();
    let script = app.dir.path().join("forgetful.py");
    std::fs::write(&script, FORGETFUL_APP).unwrap();
    let child = Command::new("python3")
        .arg(&script)
        .arg(&app.volume)
        .arg(port.to_string())
        .arg("uwsgi.ini")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 (scripts/test-env installs it)");
    let _host = HostApp(child);
    // Listening (any answer will do) before the deploy touches anything.
    assert!(
        Remote::on_port(port)
            .up_within(Duration::from_secs(10))
            .await,
        "the host app did not start"
    );
    let deploy = app.deploy(&head).await;
    let check = step(&deploy, "check");
    let out = check["output"].as_str().unwrap();
    assert!(out.contains("touched again 1 times"), "{deploy:#}");
    assert_eq!(
        get(&format!("http://127.0.0.1:{port}/")).await,
        format!("{head}\n")
    );
}
