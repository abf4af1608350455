//! Deploy hooks: real executables in a real hooks directory, run by real deploys.
//!
//! Each hook is a small `/bin/sh` script the test writes; it records what it was given
//! (`/proc/$$/environ` is exactly the environment dockhand passed) into a scratch directory
//! outside the hooks directory and the volume.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::helpers::{spawn_app_with, stages, step, Origin, TestApp};

/// The operator's hooks directory, and a scratch directory the hooks write what they saw into.
struct Hooks {
    dir: TempDir,
    out: TempDir,
}

impl Hooks {
    fn new() -> Hooks {
        Hooks {
            dir: tempfile::tempdir().unwrap(),
            out: tempfile::tempdir().unwrap(),
        }
    }

    /// The `[server]` line that points dockhand at this directory.
    fn server_extra(&self) -> String {
        format!("hooks_dir = \"{}\"", self.dir.path().display())
    }

    /// Write an executable `/bin/sh` hook at `rel` (`pre-deploy`, `web/post-deploy`, …); `OUT`
    /// in `body` is replaced by the scratch directory. Returns its path.
    fn install(&self, rel: &str, body: &str) -> PathBuf {
        let path = self.write(rel, body);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Write a hook file without making it executable.
    fn write(&self, rel: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let body = body.replace("OUT", &self.out.path().display().to_string());
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        path
    }

    fn out(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.out(name))
            .unwrap_or_else(|e| panic!("the hook wrote no {name}: {e}"))
    }

    /// The environment a hook saved with `cat /proc/$$/environ > OUT/<name>`.
    fn env(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        let raw = std::fs::read(self.out(name))
            .unwrap_or_else(|e| panic!("the hook wrote no {name}: {e}"));
        raw.split(|b| *b == 0)
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let eq = kv.iter().position(|b| *b == b'=').unwrap();
                (
                    String::from_utf8(kv[..eq].to_vec()).unwrap(),
                    kv[eq + 1..].to_vec(),
                )
            })
            .collect()
    }
}

/// A hook line that saves its environment as `OUT/<name>`.
fn save_env(name: &str) -> String {
    format!("cat /proc/$$/environ > OUT/{name}")
}

/// Push `after`, wait until the deploy is over; returns it with its steps.
/// The step of `stage` (the first one).
/// A commit's message exactly as git stores it (what hooks get as DOCKHAND_MESSAGE).
fn raw_message(origin: &Origin, commit: &str) -> Vec<u8> {
    let object = std::process::Command::new("git")
        .arg("-C")
        .arg(&origin.work)
        .args(["cat-file", "commit", commit])
        .output()
        .unwrap()
        .stdout;
    let body = object.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    object[body..].to_vec()
}

/// An origin, an empty hooks directory, and a dockhand that deployed the origin's first
/// commit (returned last) with no hooks yet.
async fn deployed_once() -> (Origin, Hooks, TestApp, String) {
    let origin = Origin::new();
    let first = origin.head();
    let hooks = Hooks::new();
    let app = spawn_app_with(&origin, &hooks.server_extra(), "").await;
    app.deploy(&first).await;
    (origin, hooks, app, first)
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[tokio::test]
async fn hooks_get_exactly_the_documented_environment_and_no_arguments() {
    let (origin, hooks, app, first) = deployed_once().await;

    let pre = hooks.install(
        "pre-deploy",
        &format!(
            "{}\nprintf '%s %s\\n' \"$0\" \"$#\" > OUT/pre.argv\npwd > OUT/pre.cwd\n\
             readlink /proc/$$/fd/0 > OUT/pre.stdin\nread -r _ _ _ _ pgrp _ < /proc/$$/stat\n\
             echo \"$pgrp $$\" > OUT/pre.pgrp\necho global >> OUT/order\n\
             echo 'pre-deploy says hi'\necho 'and to stderr' >&2",
            save_env("pre.env")
        ),
    );
    let app_pre = hooks.install("web/pre-deploy", "echo app >> OUT/order");
    let post = hooks.install("web/post-deploy", &save_env("post.env"));
    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("second");
    let deploy = app.deploy(&second).await;

    // Stages in order: hooks after the plan and before the sync; post-deploy after the reload.
    assert_eq!(
        stages(&deploy),
        [
            "fetch",
            "plan",
            "hook:pre-deploy",
            "hook:pre-deploy",
            "sync",
            "reload",
            "hook:post-deploy"
        ]
    );
    assert_eq!(hooks.read("order"), "global\napp\n");
    let pre_step = step(&deploy, "hook:pre-deploy");
    assert_eq!(pre_step["detail"], pre.display().to_string());
    assert_eq!(pre_step["ok"], true);
    let output = pre_step["output"].as_str().unwrap();
    assert!(output.contains("pre-deploy says hi"), "{output}");
    assert!(output.contains("and to stderr"), "{output}");
    assert!(output.ends_with("[exited with status 0]"), "{output}");
    let app_step = &deploy["steps"][3];
    assert_eq!(app_step["detail"], app_pre.display().to_string());

    // argv is only the hook's path; cwd is its directory; stdin is /dev/null; own group.
    assert_eq!(hooks.read("pre.argv"), format!("{} 0\n", pre.display()));
    assert_eq!(
        hooks.read("pre.cwd").trim(),
        hooks.dir.path().to_str().unwrap()
    );
    assert_eq!(hooks.read("pre.stdin").trim(), "/dev/null");
    let pgrp = hooks.read("pre.pgrp");
    let (group, pid) = pgrp.trim().split_once(' ').unwrap();
    assert_eq!(group, pid, "a hook leads its own process group");

    let mut expected: BTreeMap<String, Vec<u8>> = [
        (
            "PATH",
            bytes("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ),
        ("DOCKHAND_STAGE", bytes("pre-deploy")),
        ("DOCKHAND_APP", bytes("web")),
        ("DOCKHAND_DEPLOY_ID", bytes(&deploy["id"].to_string())),
        ("DOCKHAND_FROM", bytes(&first)),
        ("DOCKHAND_TO", bytes(&second)),
        ("DOCKHAND_REF", bytes("refs/heads/main")),
        ("DOCKHAND_PATH", bytes("fast")),
        ("DOCKHAND_TREE", bytes(app.volume.to_str().unwrap())),
        ("DOCKHAND_TRIGGER", bytes("push")),
        ("DOCKHAND_MESSAGE", raw_message(&origin, &second)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(home) = std::env::var_os("HOME") {
        expected.insert("HOME".into(), home.into_encoded_bytes());
    }
    assert_eq!(hooks.env("pre.env"), expected);

    expected.insert("DOCKHAND_STAGE".into(), bytes("post-deploy"));
    expected.insert("DOCKHAND_STATUS".into(), bytes("succeeded"));
    assert_eq!(hooks.env("post.env"), expected);
    assert_eq!(
        step(&deploy, "hook:post-deploy")["detail"],
        post.display().to_string()
    );
}

#[tokio::test]
async fn a_failing_pre_deploy_hook_aborts_before_anything_changes_and_on_failure_hears_of_it() {
    let (origin, hooks, app, first) = deployed_once().await;
    let before = app.volume_snapshot();
    let pre = hooks.install(
        "web/pre-deploy",
        "echo 'migrations are pending'\necho 'refusing' >&2\nexit 3",
    );
    hooks.install("on-failure", &save_env("fail.env"));

    origin.write("app.py", "VERSION = 2\n");
    origin.write("new.txt", "new\n");
    let second = origin.commit("second");
    let deploy = app.deploy_to_end(&second).await;

    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    let error = deploy["error"].as_str().unwrap();
    assert_eq!(
        error,
        format!("pre-deploy hook {} exited with status 3", pre.display())
    );
    assert_eq!(
        app.volume_snapshot(),
        before,
        "the volume is byte-identical"
    );
    assert_eq!(
        stages(&deploy),
        ["fetch", "plan", "hook:pre-deploy", "hook:on-failure"]
    );
    let hook = step(&deploy, "hook:pre-deploy");
    assert_eq!(hook["ok"], false);
    let output = hook["output"].as_str().unwrap();
    assert!(output.starts_with("exited with status 3"), "{output}");
    assert!(
        output.contains("migrations are pending\nrefusing"),
        "{output}"
    );
    let deployed = app.get("/api/apps/web").await;
    assert_eq!(deployed["deployed"]["commit"], first.as_str());

    let env = hooks.env("fail.env");
    assert_eq!(env["DOCKHAND_STAGE"], bytes("on-failure"));
    assert_eq!(env["DOCKHAND_STATUS"], bytes("failed"));
    assert_eq!(env["DOCKHAND_ERROR"], bytes(error));
    assert_eq!(env["DOCKHAND_FROM"], bytes(&first));
    assert_eq!(env["DOCKHAND_TO"], bytes(&second));
    assert_eq!(step(&deploy, "hook:on-failure")["ok"], true);
}

#[tokio::test]
async fn a_hook_past_its_timeout_is_killed_with_its_whole_process_group() {
    let origin = Origin::new();
    let hooks = Hooks::new();
    let app = spawn_app_with(&origin, &hooks.server_extra(), "hook_timeout = \"1s\"").await;
    // A background grandchild that holds the output pipe, and a foreground sleep.
    hooks.install(
        "pre-deploy",
        "sleep 300 &\necho $! > OUT/grandchild.pid\necho started\nsleep 300",
    );
    let started = Instant::now();
    let deploy = app.deploy_to_end(&origin.head()).await;

    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    let error = deploy["error"].as_str().unwrap();
    assert!(
        error.ends_with("timed out after 1s (its process group was killed)"),
        "{error}"
    );
    let output = step(&deploy, "hook:pre-deploy")["output"].as_str().unwrap();
    assert!(output.contains("started"), "{output}");
    assert!(app.volume_snapshot().is_empty(), "nothing was deployed");

    let pid: u32 = hooks.read("grandchild.pid").trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} survived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `pid` runs (a zombie waiting for a slow reaper does not count).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_failing_post_deploy_hook_fails_the_deploy_but_the_new_version_stays_live() {
    let (origin, hooks, app, _) = deployed_once().await;
    let post = hooks.install("web/post-deploy", "echo 'cache warm-up failed'\nexit 1");
    hooks.install("web/on-failure", &save_env("fail.env"));

    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("second");
    let deploy = app.deploy_to_end(&second).await;

    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    let error = deploy["error"].as_str().unwrap();
    assert_eq!(
        error,
        format!(
            "post-deploy hook {} exited with status 1; the new version stays live (commit {second})",
            post.display()
        )
    );
    assert_eq!(
        stages(&deploy),
        [
            "fetch",
            "plan",
            "sync",
            "reload",
            "hook:post-deploy",
            "hook:on-failure"
        ]
    );
    let output = step(&deploy, "hook:post-deploy")["output"]
        .as_str()
        .unwrap();
    assert!(output.contains("cache warm-up failed"), "{output}");
    // The state says what runs: the new commit, put there by this (failed) deploy.
    assert_eq!(app.volume_snapshot(), origin.snapshot(&second));
    let state = app.get("/api/apps/web").await;
    assert_eq!(state["deployed"]["commit"], second.as_str());
    assert_eq!(state["deployed"]["deploy_id"], deploy["id"]);
    let env = hooks.env("fail.env");
    assert_eq!(env["DOCKHAND_STATUS"], bytes("failed"));
    assert_eq!(env["DOCKHAND_ERROR"], bytes(error));
}

#[tokio::test]
async fn with_revert_on_hook_failure_a_failing_post_deploy_hook_puts_the_previous_commit_back() {
    let origin = Origin::new();
    let first = origin.head();
    let hooks = Hooks::new();
    let app = spawn_app_with(
        &origin,
        &hooks.server_extra(),
        "revert_on_hook_failure = true",
    )
    .await;
    let good = app.deploy(&first).await;
    hooks.install("web/post-deploy", "echo 'smoke test failed'\nexit 1");

    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("second");
    let deploy = app.deploy_to_end(&second).await;

    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(deploy["reverted"], true, "{deploy:#}");
    assert_eq!(
        stages(&deploy),
        [
            "fetch",
            "plan",
            "sync",
            "reload",
            "hook:post-deploy",
            "restore",
            "reload"
        ]
    );
    assert_eq!(app.volume_snapshot(), origin.snapshot(&first));
    let state = app.get("/api/apps/web").await;
    assert_eq!(state["deployed"]["commit"], first.as_str());
    assert_eq!(state["deployed"]["deploy_id"], good["id"]);
}

#[tokio::test]
async fn hook_files_in_the_deployed_repository_are_never_run() {
    let origin = Origin::new();
    let hooks = Hooks::new();
    let operator = hooks.install("post-deploy", "echo ran > OUT/operator");
    let app = spawn_app_with(&origin, &hooks.server_extra(), "").await;
    let marker = hooks.out("pwned");
    let planted = format!("#!/bin/sh\ntouch {}\n", marker.display());
    for rel in [
        "hooks/pre-deploy",
        "hooks/post-deploy",
        "hooks/web/pre-deploy",
        "hooks/web/post-deploy",
        ".dockhand/hooks/pre-deploy",
        ".dockhand/hooks/post-deploy",
        "pre-deploy",
        "post-deploy",
    ] {
        origin.write(rel, &planted);
        origin.set_exec(rel, true);
    }
    let commit = origin.commit("ship some hooks");
    let deploy = app.deploy(&commit).await;

    assert_eq!(hooks.read("operator"), "ran\n");
    assert_eq!(
        stages(&deploy)
            .iter()
            .filter(|s| s.starts_with("hook:"))
            .count(),
        1
    );
    assert_eq!(
        step(&deploy, "hook:post-deploy")["detail"],
        operator.display().to_string()
    );
    assert!(!marker.exists(), "a repository's hook ran");
    assert!(
        app.volume.join("hooks/pre-deploy").exists(),
        "they are only data"
    );
}

#[tokio::test]
async fn commit_messages_and_ref_names_with_shell_syntax_reach_hooks_only_as_data() {
    let origin = Origin::new();
    let hooks = Hooks::new();
    let app = spawn_app_with(&origin, &hooks.server_extra(), "tags = \"**\"").await;
    let pwned = std::env::temp_dir().join(format!("pwned-{}", std::process::id()));
    let p = pwned.display();
    // The hook uses the values the way hooks do: quoted, as arguments to other programs.
    hooks.install(
        "pre-deploy",
        &format!(
            "{}\nprintf '%s' \"$DOCKHAND_MESSAGE\" > OUT/message\nprintf '%s' \"$DOCKHAND_REF\" > OUT/ref",
            save_env("env")
        ),
    );
    let message = format!(
        "$(touch {p}-dollar)\n\n`touch {p}-backtick`; touch {p}-semicolon; \
         '\"$(touch {p}-quoted)\"' && touch {p}-and | touch {p}-pipe\n"
    );
    origin.write("app.py", "VERSION = 'x'\n");
    let commit = origin.commit(&message);
    let tag = "v1$(touch${IFS}".to_string() + &format!("{p}-ref);`touch${{IFS}}{p}-ref2`'\"");
    let git_ref = format!("refs/tags/{tag}");
    let tag_object = origin.annotated_tag(&tag);
    let response = app.push_ref(&git_ref, &tag_object, false).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["deploy_id"]
        .as_i64()
        .unwrap();
    let deploy = app.wait_deploy(id).await;

    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
    let env = hooks.env("env");
    assert_eq!(env["DOCKHAND_MESSAGE"], raw_message(&origin, &commit));
    assert_eq!(env["DOCKHAND_MESSAGE"], bytes(&message));
    assert_eq!(env["DOCKHAND_REF"], bytes(&git_ref));
    assert_eq!(hooks.read("message"), message);
    assert_eq!(hooks.read("ref"), git_ref);
    let dir = pwned.parent().unwrap();
    let name = pwned.file_name().unwrap().to_str().unwrap();
    let created: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(name))
        .map(|e| e.path())
        .collect();
    assert!(created.is_empty(), "payload text ran as code: {created:?}");
}

#[tokio::test]
async fn a_hook_file_that_is_not_executable_fails_check_and_the_deploys_that_reach_it() {
    let origin = Origin::new();
    let hooks = Hooks::new();
    let app = spawn_app_with(&origin, &hooks.server_extra(), "").await;
    let config = app.dir.path().join("dockhand.toml");
    let report = dockhand::cli::check_report(&config).unwrap();
    assert!(report.contains("hooks: from"), "{report}");

    let hook = hooks.write("web/pre-deploy", "touch OUT/ran");
    let err = format!("{:#}", dockhand::cli::check_report(&config).unwrap_err());
    assert!(
        err.contains(&format!("hook {} is not executable", hook.display())),
        "{err}"
    );
    let deploy = app.deploy_to_end(&origin.head()).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(
        deploy["error"],
        format!(
            "pre-deploy hook {} is not executable (chmod +x it, or remove it)",
            hook.display()
        )
    );
    assert!(app.volume_snapshot().is_empty());
    assert!(!hooks.out("ran").exists());

    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let report = dockhand::cli::check_report(&config).unwrap();
    assert!(
        report.contains(&format!("hooks    pre-deploy {}", hook.display())),
        "{report}"
    );
}

/// The operator's hooks directory may not be anywhere a deploy writes.
#[tokio::test]
async fn a_hooks_dir_inside_a_volume_is_refused() {
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "s\n").unwrap();
    std::fs::create_dir_all(dir.path().join("volume/hooks")).unwrap();
    let text = crate::support::helpers::config_text(
        dir.path(),
        &origin,
        &format!(
            "hooks_dir = \"{}\"",
            dir.path().join("volume/hooks").display()
        ),
        "",
    );
    let err = format!(
        "{:#}",
        dockhand::config::Config::parse(&text, Path::new("/")).unwrap_err()
    );
    assert!(err.contains("must not overlap server.hooks_dir"), "{err}");
}

/// A loopback HTTP server that records every request (`METHOD path`, body) and answers 200.
async fn recorder() -> (std::net::SocketAddr, Arc<Mutex<Vec<(String, String)>>>) {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let log = seen.clone();
    let router = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        async move {
            let line = format!("{} {}", req.method(), req.uri());
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap();
            log.lock()
                .unwrap()
                .push((line, String::from_utf8_lossy(&body).into_owned()));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, seen)
}

/// Install a shipped example (`hooks/examples/<name>`) at `rel` in the hooks directory.
fn install_example(hooks: &Hooks, name: &str, rel: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hooks/examples")
        .join(name);
    let path = hooks.dir.path().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(source, &path).unwrap();
}

#[tokio::test]
async fn the_shipped_notify_slack_and_warm_cache_examples_work_as_hooks() {
    let origin = Origin::new();
    let hooks = Hooks::new();
    let (upstream, seen) = recorder().await;
    let proxy = format!("[apps.proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"");
    let app = spawn_app_with(&origin, &hooks.server_extra(), &proxy).await;
    let root = hooks.dir.path();
    install_example(&hooks, "warm-cache", "post-deploy");
    std::fs::write(root.join("dockhand-api"), format!("{}\n", app.url(""))).unwrap();
    std::fs::write(
        root.join("warm-cache.paths"),
        "# warm these\n/\n/about?x=1\n",
    )
    .unwrap();
    install_example(&hooks, "notify-slack", "web/post-deploy");
    install_example(&hooks, "notify-slack", "web/on-failure");
    let slack = format!("http://{upstream}/slack/T000/B000\n");
    std::fs::write(root.join("web/slack-webhook-url"), slack).unwrap();

    origin.write("app.py", "VERSION = 2\n");
    let commit = origin.commit("Ship it <!channel> & \"quotes\" $(id)\n\nbody");
    let deploy = app.deploy(&commit).await;

    let output = step(&deploy, "hook:post-deploy")["output"]
        .as_str()
        .unwrap();
    assert!(output.contains("warm-cache: /about?x=1 -> 200"), "{output}");
    let requests = seen.lock().unwrap().clone();
    let lines: Vec<&str> = requests.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(lines, ["GET /", "GET /about?x=1", "POST /slack/T000/B000"]);
    let posted: Value = serde_json::from_str(&requests[2].1).unwrap();
    let text = posted["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            ":white_check_mark: *web* deploy {} succeeded (push, fast path)",
            deploy["id"]
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "→ {} on `refs/heads/main`: Ship it &lt;!channel&gt; &amp; \"quotes\" $(id)",
            &commit[..12]
        )),
        "{text}"
    );

    // A failure notifies with the error.
    seen.lock().unwrap().clear();
    hooks.install("web/pre-deploy", "exit 4");
    origin.write("app.py", "VERSION = 3\n");
    let failed = app.deploy_to_end(&origin.commit("third")).await;
    assert_eq!(failed["status"], "failed");
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let text = serde_json::from_str::<Value>(&requests[0].1).unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.starts_with(":x: *web* deploy"), "{text}");
    assert!(text.ends_with("exited with status 4"), "{text}");
}

#[tokio::test]
async fn plan_lists_the_hooks_a_deploy_would_run_in_order() {
    let origin = Origin::new();
    let hooks = Hooks::new();
    let pre = hooks.install("pre-deploy", "true");
    let post = hooks.install("web/post-deploy", "true");
    hooks.install("web/on-failure", "true");
    hooks.install("web/post-rollback", "true");
    let ops =
        crate::support::ops::spawn_ops_edited(&origin, &hooks.server_extra(), "", |t| t).await;
    let (status, plan) = ops.post("/api/apps/web/plan", serde_json::json!({})).await;
    assert_eq!(status, 200, "{plan:#}");
    let listed: Vec<(&str, &str)> = plan["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["stage"].as_str().unwrap(), h["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("pre-deploy", pre.to_str().unwrap()),
            ("post-deploy", post.to_str().unwrap())
        ]
    );
}
