//! Crashes and signals, with dockhand as a real process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::helpers::*;
use crate::support::server::{config_on_a_free_port, Server};

#[tokio::test]
async fn killed_mid_deploy_the_deploy_is_interrupted_undone_and_the_queued_push_still_deploys() {
    let origin = Origin::new();
    let (dir, config) = config_on_a_free_port(&origin);
    let log = dir.path().join("dockhand.log");
    let volume = dir.path().join("volume");
    let server = Server::start(&config, &log).await;
    let a = origin.head();
    assert_eq!(
        server.wait_terminal(server.push(&a).await).await["status"],
        "succeeded"
    );

    // B writes enough files that the kill lands inside its sync step.
    for i in 0..20_000 {
        origin.write(&format!("bulk/{}/{i}.txt", i % 100), &format!("{i}\n"));
    }
    let b = origin.commit("big");
    origin.write("app.py", "VERSION = 3\n");
    let c = origin.commit("after big");
    let id_b = server.push(&b).await;
    let id_c = server.push(&c).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut server = server;
    loop {
        let d = server.deploy(id_b).await;
        let syncing = d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "sync" && s["ok"].is_null());
        if syncing {
            break;
        }
        assert!(
            d["status"] == "queued" || d["status"] == "running",
            "B finished before it could be killed: {d:#}"
        );
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The step row opens before the first write: wait until the sync has renamed a file into
    // place (read while it writes, so anything may vanish under the walk).
    fn has_written_file(dir: &Path) -> bool {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let name = e.file_name();
                match e.file_type() {
                    Ok(t) if t.is_dir() => has_written_file(&e.path()),
                    Ok(t) => t.is_file() && !name.to_string_lossy().starts_with(".dockhand-tmp-"),
                    Err(_) => false,
                }
            })
    }
    while !has_written_file(&volume.join("bulk")) {
        assert!(Instant::now() < deadline, "the sync wrote nothing");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    drop(server);
    assert_ne!(
        snapshot(&volume),
        origin.snapshot(&a),
        "the kill should have left a partial sync"
    );

    let server = Server::start(&config, &log).await;
    let deploy_b = server.deploy(id_b).await;
    assert_eq!(deploy_b["status"], "interrupted", "{deploy_b:#}");
    let recover = step(&deploy_b, "recover");
    assert_eq!(recover["ok"], true, "{recover:#}");
    assert!(
        recover["detail"].as_str().unwrap().contains(&a),
        "{recover:#}"
    );

    // C was acknowledged before the crash: it is resumed, diffed against A, and deployed.
    let deploy_c = server.wait_terminal(id_c).await;
    assert_eq!(deploy_c["status"], "succeeded", "{deploy_c:#}");
    assert_eq!(deploy_c["from_commit"], a.as_str());
    assert_eq!(snapshot(&volume), origin.snapshot(&c));

    // And the server is not wedged: the next push deploys.
    origin.write("app.py", "VERSION = 4\n");
    let d = origin.commit("next");
    assert_eq!(
        server.wait_terminal(server.push(&d).await).await["status"],
        "succeeded"
    );
    assert_eq!(snapshot(&volume), origin.snapshot(&d));
}

/// Files (not directories, not temp files) under `dir`; anything may vanish while it is read.
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            Ok(t) if t.is_file() => usize::from(
                !e.file_name()
                    .to_string_lossy()
                    .starts_with(".dockhand-tmp-"),
            ),
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn killed_again_while_startup_recovery_undoes_a_deploy_the_next_start_finishes_the_undo() {
    let origin = Origin::new();
    let (dir, config) = config_on_a_free_port(&origin);
    let log = dir.path().join("dockhand.log");
    let volume = dir.path().join("volume");
    let server = Server::start(&config, &log).await;
    let a = origin.head();
    assert_eq!(
        server.wait_terminal(server.push(&a).await).await["status"],
        "succeeded"
    );
    for i in 0..20_000 {
        origin.write(&format!("bulk/{}/{i}.txt", i % 100), &format!("{i}\n"));
    }
    let b = origin.commit("big");
    let id_b = server.push(&b).await;
    // Killed once B's sync has written thousands of files, so that undoing them takes a while.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut server = server;
    while files_under(&volume.join("bulk")) < 4_000 {
        assert!(Instant::now() < deadline, "B's sync wrote too little");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    drop(server);
    let written = files_under(&volume.join("bulk"));
    assert!(written < 20_000, "B's sync finished before the kill");

    // The restart undoes B before it answers; killed again once that undo is under way.
    let mut server = Server::spawn(&config, &log);
    loop {
        let left = files_under(&volume.join("bulk"));
        if left < written - 200 {
            assert!(left > 0, "the undo finished before the second kill");
            break;
        }
        assert!(Instant::now() < deadline, "the restart never undid B");
        std::thread::sleep(Duration::from_micros(200));
    }
    server.child.kill().unwrap(); // SIGKILL, mid-restore
    server.child.wait().unwrap();
    drop(server);
    assert_ne!(
        snapshot(&volume),
        origin.snapshot(&a),
        "the undo was cut short"
    );

    // The third start undoes B again, completely.
    let server = Server::start(&config, &log).await;
    assert!(
        snapshot(&volume) == origin.snapshot(&a),
        "the volume is not A again after the third start"
    );
    let deploy_b = server.deploy(id_b).await;
    assert_eq!(deploy_b["status"], "interrupted", "{deploy_b:#}");
    let recovers: Vec<&serde_json::Value> = deploy_b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "recover")
        .collect();
    assert_eq!(recovers.len(), 2, "{deploy_b:#}");
    assert!(recovers[0]["finished_at"].is_null(), "{deploy_b:#}");
    assert_eq!(recovers[1]["ok"], true, "{deploy_b:#}");

    // Later deploys diff from A, which is what the volume holds.
    origin.write("app.py", "VERSION = 9\n");
    let c = origin.commit("next");
    assert_eq!(
        server.wait_terminal(server.push(&c).await).await["status"],
        "succeeded"
    );
    assert_eq!(snapshot(&volume), origin.snapshot(&c));
}

#[tokio::test]
async fn a_deploy_whose_startup_recovery_was_cut_short_twice_is_not_undone_a_third_time() {
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let hook = dir.path().join("hooks/web/pre-deploy");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let hooks = format!("hooks_dir = \"{}\"", dir.path().join("hooks").display());
    let text = config_text(dir.path(), &origin, &hooks, "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()));
    let config = dir.path().join("dockhand.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("dockhand.log");

    // B is planned and held by its pre-deploy hook when dockhand is killed.
    let mut server = Server::start(&config, &log).await;
    origin.write("app.py", "VERSION = 2\n");
    let b = origin.commit("b");
    let id_b = server.push(&b).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = server.deploy(id_b).await;
        let steps = d["steps"].as_array().unwrap();
        if steps.iter().any(|s| s["stage"] == "hook:pre-deploy") {
            break;
        }
        assert!(Instant::now() < deadline, "the hook never ran: {d:#}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    // As two starts that died inside B's recovery would have left it.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("state/dockhand.db").display()
    ))
    .await
    .unwrap();
    for _ in 0..2 {
        sqlx::query(
            "INSERT INTO deploy_steps (deploy_id, stage, detail, started_at) \
             VALUES (?, 'recover', 'remove the partial first deploy', 0)",
        )
        .bind(id_b)
        .execute(&db)
        .await
        .unwrap();
    }
    db.close().await;

    let server = Server::start(&config, &log).await;
    let deploy_b = server.deploy(id_b).await;
    assert_eq!(deploy_b["status"], "interrupted", "{deploy_b:#}");
    let error = deploy_b["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("interrupted 2 times, so it is not tried again"),
        "{deploy_b:#}"
    );
    let recovers = deploy_b["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "recover")
        .count();
    assert_eq!(recovers, 2, "no third recovery: {deploy_b:#}");
}

#[tokio::test]
async fn sigterm_stops_accepting_and_exits_cleanly() {
    let origin = Origin::new();
    let (dir, config) = config_on_a_free_port(&origin);
    let log = dir.path().join("dockhand.log");
    let mut server = Server::start(&config, &log).await;
    let id = server.push(&origin.head()).await;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "dockhand did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        exit.success(),
        "exit status {exit:?}: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    // The accepted deploy either finished or is resumed on the next start.
    let server = Server::start(&config, &log).await;
    assert_eq!(server.wait_terminal(id).await["status"], "succeeded");
}

#[tokio::test]
async fn a_second_dockhand_on_the_same_state_dir_refuses_to_start() {
    let origin = Origin::new();
    let (dir, config) = config_on_a_free_port(&origin);
    let _server = Server::start(&config, &dir.path().join("a.log")).await;
    let other = config_text(dir.path(), &origin, "", "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()));
    let other_config = dir.path().join("other.toml");
    std::fs::write(&other_config, other).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dockhand"))
        .args(["serve", "--config"])
        .arg(&other_config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn check_names_the_bad_field_and_refuses_an_empty_secret() {
    let origin = Origin::new();
    let (dir, config) = config_on_a_free_port(&origin);
    let run = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_dockhand"))
            .args(["check", "--config"])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = run(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("app web")
            && report.contains("branch main")
            && report.contains("touch uwsgi.ini"),
        "{report}"
    );

    std::fs::write(dir.path().join("secret"), "\n").unwrap();
    let out = run(&config);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("secret_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `serve` refuses to start too: no secret must never mean no signature needed.
    let out = Command::new(env!("CARGO_BIN_EXE_dockhand"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());

    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("touch = ", "tuch = ");
    std::fs::write(&config, text).unwrap();
    let out = run(&config);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tuch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn killed_between_stopping_the_old_container_and_starting_the_new_one_the_restart_serves_again(
) {
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let name = crate::support::engine::unique("kill").replace("dockhand-test-", "");
    let _cleanup = crate::support::engine::Cleanup::app(&name);
    let app_port = free_port();
    let container = format!(
        "[apps.container]\nimage = \"127.0.0.1:5000/dockhand-test/app:v1\"\nmount = \"/code\"\nport = {app_port}\n\
         env = {{ BOOT_DELAY = \"3\" }}\nexpect_body_contains = \"v1\"\nhealth_interval = \"100ms\"\n\
         health_deadline = \"30s\"\nstop_grace = \"1s\"\n"
    );
    // Reloaded by a signal, which only a running container can take.
    let text = config_text(dir.path(), &origin, "", &container)
        .replace("touch = \"uwsgi.ini\"\n", "signal = \"HUP\"\n")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()))
        .replace("name = \"web\"", &format!("name = \"{name}\""));
    let config = dir.path().join("dockhand.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("dockhand.log");
    let answers_v1 = || async move {
        let url = format!("http://127.0.0.1:{app_port}/");
        matches!(crate::support::helpers::client().get(url).send().await, Ok(r) if r.status() == 200)
    };

    let mut server = Server::start(&config, &log).await;
    assert_eq!(
        server
            .wait_terminal(server.push(&origin.head()).await)
            .await["status"],
        "succeeded"
    );
    assert!(answers_v1().await);

    origin.write("app.py", "VERSION = 2\n");
    let id = server
        .push(&origin.commit("rebuild\n\nDeploy-Path: full\n"))
        .await;
    wait_for_step(&server, id, "stop-old").await;
    server.child.kill().unwrap(); // SIGKILL: the old container is stopped, the new one is booting
    server.child.wait().unwrap();
    drop(server);
    assert!(
        !answers_v1().await,
        "the old container should be down at the kill"
    );

    let server = Server::start(&config, &log).await;
    let deploy = server.deploy(id).await;
    assert_eq!(deploy["status"], "interrupted");
    // The old container is started on the restored tree: nothing failed undoing the deploy.
    assert_eq!(
        deploy["error"], "dockhand stopped while this deploy was running",
        "{deploy:#}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers_v1().await {
        assert!(
            Instant::now() < deadline,
            "the app did not serve again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let containers = crate::support::engine::app_containers(&name).await;
    assert_eq!(
        containers.len(),
        1,
        "one container of the app: {containers:?}"
    );
}

#[tokio::test]
async fn killed_while_a_full_deploy_has_the_old_container_paused_the_restart_resumes_it_on_its_own_commit(
) {
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let name = crate::support::engine::unique("paused").replace("dockhand-test-", "");
    let _cleanup = crate::support::engine::Cleanup::app(&name);
    // start-first on a fresh port per container; the new one boots for 3 s.
    let container =
        "[apps.container]\nimage = \"127.0.0.1:5000/dockhand-test/app:v1\"\nmount = \"/code\"\n\
         env = { BOOT_DELAY = \"3\" }\nexpect_body_contains = \"v1\"\nhealth_interval = \"100ms\"\n\
         health_deadline = \"30s\"\nstop_grace = \"1s\"\n";
    let api_port = free_port();
    let text = config_text(dir.path(), &origin, "", container)
        .replace("127.0.0.1:0", &format!("127.0.0.1:{api_port}"))
        .replace("name = \"web\"", &format!("name = \"{name}\""));
    let config = dir.path().join("dockhand.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("dockhand.log");
    let volume = dir.path().join("volume");

    let mut server = Server::start(&config, &log).await;
    let first = origin.head();
    assert_eq!(
        server.wait_terminal(server.push(&first).await).await["status"],
        "succeeded"
    );
    let state: serde_json::Value = crate::support::helpers::client()
        .get(format!("http://127.0.0.1:{api_port}/api/apps/{name}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let port = state["container"]["port"].as_u64().unwrap();
    let answers = || async move {
        let url = format!("http://127.0.0.1:{port}/");
        let sent = crate::support::helpers::client()
            .get(url)
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        matches!(sent, Ok(r) if r.status() == 200)
    };
    assert!(answers().await);

    origin.write("app.py", "VERSION = 2\n");
    let id = server
        .push(&origin.commit("rebuild\n\nDeploy-Path: full\n"))
        .await;
    wait_for_step(&server, id, "sync").await;
    server.child.kill().unwrap(); // SIGKILL: the old container is paused, the new one booting
    server.child.wait().unwrap();
    drop(server);
    assert!(!answers().await, "the old container should be paused");
    assert_eq!(
        std::fs::read_to_string(volume.join("app.py")).unwrap(),
        "VERSION = 2\n",
        "the tree should hold the new commit at the kill"
    );

    let server = Server::start(&config, &log).await;
    assert_eq!(server.deploy(id).await["status"], "interrupted");
    assert!(answers().await, "the old container runs again");
    assert_ne!(
        std::fs::read_to_string(volume.join("app.py")).unwrap(),
        "VERSION = 2\n",
        "the tree is back on the old commit"
    );
    let containers = crate::support::engine::app_containers(&name).await;
    assert_eq!(
        containers.len(),
        1,
        "one container of the app: {containers:?}"
    );
}

/// Until deploy `id`'s step `stage` has succeeded (the deploy still running).
async fn wait_for_step(server: &Server, id: i64, stage: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = server.deploy(id).await;
        let done = d["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == stage && s["ok"] == true);
        if done {
            return;
        }
        assert!(
            d["status"] == "queued" || d["status"] == "running",
            "finished before the kill: {d:#}"
        );
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn fetch_timeout_bounds_a_fetch_from_an_origin_that_accepts_and_never_answers() {
    // An "origin" that accepts every connection and never sends a byte.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let text = config_text(dir.path(), &origin, "", "fetch_timeout = \"2s\"\n")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()))
        .replace(
            &format!("repo = \"{}\"", origin.bare.display()),
            &format!("repo = \"http://127.0.0.1:{port}/app.git\""),
        );
    assert!(
        text.contains(&format!("127.0.0.1:{port}/app.git")),
        "{text}"
    );
    let config = dir.path().join("dockhand.toml");
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&config, &dir.path().join("dockhand.log")).await;

    let started = Instant::now();
    let deploy = server
        .wait_terminal(server.push(&origin.head()).await)
        .await;
    let took = started.elapsed();

    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    let error = deploy["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out"), "{deploy:#}");
    // libgit2's own wait was 60 s whatever fetch_timeout said.
    assert!(took < Duration::from_secs(20), "the fetch took {took:?}");
    println!("failed after {took:?}: {error}");
}

#[tokio::test]
async fn the_log_written_to_a_file_has_no_colour_codes() {
    let origin = Origin::new();
    let (dir, config) = config_on_a_free_port(&origin);
    let log = dir.path().join("dockhand.log");
    let server = Server::start(&config, &log).await;
    server
        .wait_terminal(server.push(&origin.head()).await)
        .await;
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.contains("dockhand listening"), "{written}");
    assert!(
        !written.contains('\u{1b}'),
        "ANSI escapes in the log file:\n{written}"
    );
}

#[tokio::test]
async fn the_server_raises_its_open_files_limit_to_the_hard_limit() {
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let port = free_port();
    let text = config_text(dir.path(), &origin, "", "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = dir.path().join("dockhand.toml");
    std::fs::write(&config, text).unwrap();
    // Started with the usual soft default of 1,024 (the hard limit stays what it is).
    let shell = format!(
        "ulimit -S -n 1024 && exec {} serve --config {}",
        env!("CARGO_BIN_EXE_dockhand"),
        config.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &shell])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let limits = |pid: u32| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string();
        let fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        (fields[3].clone(), fields[4].clone())
    };
    // Read once dockhand (the shell exec'd into it) serves.
    assert!(
        Remote::on_port(port)
            .up_within(Duration::from_secs(30))
            .await
    );
    let (soft, hard) = limits(pid);
    let _ = child.kill();
    let _ = child.wait();
    assert_ne!(
        hard, "1024",
        "the hard limit is 1,024 here: nothing to show"
    );
    assert_eq!(soft, hard, "soft open files limit {soft}, hard {hard}");
}

/// A relay in front of the real engine's socket that refuses every container stop with a 500
/// and passes everything else through: what a failing engine does, on demand. Each request
/// gets a connection of its own (`Connection: close`), so every one is looked at.
struct StopRefusingEngine {
    host: String,
    _dir: tempfile::TempDir,
}

impl StopRefusingEngine {
    fn start() -> StopRefusingEngine {
        let engine = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
            .trim_start_matches("unix://")
            .to_string();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, engine.clone()));
            }
        });
        StopRefusingEngine {
            host: format!("unix://{}", socket.display()),
            _dir: dir,
        }
    }
}

async fn relay(mut client: tokio::net::UnixStream, engine: String) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let request_line = head.lines().next().unwrap_or_default();
    let path = request_line.split(' ').nth(1).unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    if request_line.starts_with("POST ") && path.contains("/containers/") && path.ends_with("/stop")
    {
        let body = r#"{"message":"injected: the engine failed to stop the container"}"#;
        let answer = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(answer.as_bytes()).await?;
        return client.shutdown().await;
    }
    let mut rewritten: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut upstream = tokio::net::UnixStream::connect(&engine).await?;
    upstream.write_all(rewritten.as_bytes()).await?;
    upstream.write_all(&buf[end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

#[tokio::test]
async fn stop_first_whose_old_container_will_not_stop_sends_requests_back_to_it() {
    let engine = StopRefusingEngine::start();
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let name = crate::support::engine::unique("nostop").replace("dockhand-test-", "");
    let _cleanup = crate::support::engine::Cleanup::app(&name);
    let proxy_port = free_port();
    let container = format!(
        "[apps.container]\nimage = \"127.0.0.1:5000/dockhand-test/app:v1\"\nmount = \"/code\"\n\
         port = {}\nexpect_body_contains = \"v1\"\nhealth_interval = \"100ms\"\n\
         health_deadline = \"30s\"\nstop_grace = \"1s\"\n\
         [apps.proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\n",
        free_port()
    );
    let text = config_text(dir.path(), &origin, "", &container)
        .replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()))
        .replace("name = \"web\"", &format!("name = \"{name}\""));
    let config = dir.path().join("dockhand.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("dockhand.log");
    let server = Server::spawn_with_env(&config, &log, &[("DOCKER_HOST", &engine.host)]);
    assert!(
        server.up_within(Duration::from_secs(30)).await,
        "dockhand did not start"
    );
    let url = format!("http://127.0.0.1:{proxy_port}/");
    let page = || get_page(&url);
    let first = server
        .wait_terminal(server.push(&origin.head()).await)
        .await;
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert_eq!(page().await, (200, "v1\n".to_string()));

    origin.write("app.py", "VERSION = 2\n");
    let id = server
        .push(&origin.commit("rebuild\n\nDeploy-Path: full\n"))
        .await;
    let deploy = server.wait_terminal(id).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    let stop = deploy["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "stop-old")
        .cloned()
        .unwrap_or_else(|| panic!("no stop-old step: {deploy:#}"));
    assert_eq!(stop["ok"], false, "{deploy:#}");
    // The old container still runs: the proxy sends users back to it, not to 503s.
    assert_eq!(page().await, (200, "v1\n".to_string()), "{deploy:#}");
}
