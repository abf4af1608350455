//! Reloading the config and restarting dockhand itself under load: the listening sockets of
//! the API and of the proxies go to the next process, and no connection is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::support::helpers::*;
use crate::support::server::Server;

/// A plain upstream the proxy forwards to: python's http.server on a loopback port.
struct Upstream(std::process::Child);

impl Upstream {
    fn start(port: u16, dir: &Path) -> Upstream {
        std::fs::write(dir.join("index.html"), "upstream\n").unwrap();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Upstream(child)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills the dockhand that took over (not our child) when the test ends.
struct Successor(PathBuf);

impl Successor {
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.0).ok()?.trim().parse().ok()
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Requests on fresh connections (each one a new TCP connect, as a new visitor's) to every
/// URL, every 10 ms, until stopped; returns how many were sent and the failures.
struct Visitors {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Visitors {
    fn start(urls: Vec<String>) -> Visitors {
        let stop = CancellationToken::new();
        let sent = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (st, s, f) = (stop.clone(), sent.clone(), failures.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut requests = tokio::task::JoinSet::new();
            while !st.is_cancelled() {
                tick.tick().await;
                for url in &urls {
                    let (client, url, s, f) = (client.clone(), url.clone(), s.clone(), f.clone());
                    requests.spawn(async move {
                        s.fetch_add(1, Ordering::Relaxed);
                        match client.get(&url).send().await {
                            Ok(r) if r.status().is_success() => {}
                            Ok(r) => f.lock().unwrap().push(format!("{url}: {}", r.status())),
                            Err(e) => f
                                .lock()
                                .unwrap()
                                .push(format!("{url}: {e}: {:?}", std::error::Error::source(&e))),
                        }
                    });
                }
            }
            while requests.join_next().await.is_some() {}
        });
        Visitors {
            stop,
            task,
            sent,
            failures,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.cancel();
        self.task.await.unwrap();
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

/// dockhand on a fixed API port with app `web` behind a proxy on a fixed port, forwarding to
/// a python upstream; `more` is appended to the config.
fn config(dir: &Path, origin: &Origin, api: u16, proxy: u16, upstream: u16, more: &str) -> String {
    config_text(dir, origin, "", "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{api}"))
        + &format!(
            "[apps.proxy]\nlisten = \"127.0.0.1:{proxy}\"\nupstream = \"127.0.0.1:{upstream}\"\n{more}"
        )
}

/// dockhand (the real binary) serving app `web` behind its proxy, and what the tests need of it.
struct Running {
    origin: Origin,
    dir: tempfile::TempDir,
    /// API, proxy, upstream.
    ports: (u16, u16, u16),
    path: PathBuf,
    log: PathBuf,
    server: Server,
    successor: Successor,
    _upstream: Upstream,
}

async fn running() -> Running {
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let (api, proxy, up) = (free_port(), free_port(), free_port());
    let upstream = Upstream::start(up, dir.path());
    let path = dir.path().join("dockhand.toml");
    std::fs::write(&path, config(dir.path(), &origin, api, proxy, up, "")).unwrap();
    let log = dir.path().join("dockhand.log");
    let server = Server::start(&path, &log).await;
    let successor = Successor(dir.path().join("state/dockhand.lock"));
    Running {
        origin,
        dir,
        ports: (api, proxy, up),
        path,
        log,
        server,
        successor,
        _upstream: upstream,
    }
}

/// `dockhand reload` of `config`, which must succeed (else the server's `log` is shown).
async fn reloaded(config: &Path, log: &Path) -> std::process::Output {
    let out = reload_cli(config).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(log).unwrap()
    );
    out
}

/// `dockhand reload`, awaited: the test's runtime keeps running its load (and its clients'
/// connection tasks) meanwhile.
async fn reload_cli(config: &Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_dockhand"))
        .args(["reload", "--config"])
        .arg(config)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_reload_hands_the_sockets_to_a_new_process_and_refuses_no_connection() {
    let mut r = running().await;
    let (origin, dir, path, log) = (&r.origin, &r.dir, r.path.clone(), r.log.clone());
    let (api, proxy, up) = r.ports;
    let before = r.server.pid();
    let proxied = format!("http://127.0.0.1:{proxy}/");
    assert_eq!(get_page(&proxied).await, (200, "upstream\n".to_string()));

    let visitors = Visitors::start(vec![
        proxied.clone(),
        format!("http://127.0.0.1:{api}/healthz"),
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The new config adds an app: visible over the API once the new process serves.
    let second = format!(
        "\n[[apps]]\nname = \"second\"\nrepo = \"{}\"\nsecret_file = \"{}\"\nvolume = \"{}\"\n{NO_POLL}",
        origin.bare.display(),
        dir.path().join("secret").display(),
        dir.path().join("volume2").display()
    );
    std::fs::write(
        &path,
        config(dir.path(), origin, api, proxy, up, "") + &second,
    )
    .unwrap();
    let out = reloaded(&path, &log).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("handed its sockets"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, failures) = visitors.finish().await;

    let after = r.successor.pid().unwrap();
    assert_ne!(after, before, "the lock file still names the old process");
    let deadline = Instant::now() + Duration::from_secs(40);
    let exit = loop {
        if let Some(exit) = r.server.child_mut().try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the old dockhand did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:#?}",
        failures.len()
    );
    assert!(sent > 100, "only {sent} requests were sent");
    // The new process serves the new config, and the proxy still forwards.
    let apps = get_page(&format!("http://127.0.0.1:{api}/api/apps"))
        .await
        .1;
    assert!(apps.contains("\"second\""), "{apps}");
    assert_eq!(get_page(&proxied).await, (200, "upstream\n".to_string()));
}

#[tokio::test]
async fn an_invalid_config_is_refused_and_the_running_dockhand_keeps_serving() {
    let mut r = running().await;
    let (origin, dir, path, log) = (&r.origin, &r.dir, r.path.clone(), r.log.clone());
    let (api, proxy, up) = r.ports;
    let good = config(dir.path(), origin, api, proxy, up, "");

    // The CLI validates first: nothing is sent.
    std::fs::write(
        &path,
        good.replace("[apps.proxy]", "[apps.proxy]\nhold_maximum = 3"),
    )
    .unwrap();
    let out = reload_cli(&path).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hold_maximum"), "{err}");
    // A SIGHUP sent some other way: the server validates and refuses it itself.
    let status = Command::new("kill")
        .args(["-HUP", &r.server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("reload refused")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        r.server.child_mut().try_wait().unwrap().is_none(),
        "the old dockhand exited"
    );
    assert_eq!(
        get_page(&format!("http://127.0.0.1:{proxy}/")).await,
        (200, "upstream\n".to_string())
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("state/dockhand.lock"))
            .unwrap()
            .trim(),
        r.server.pid().to_string()
    );
}

#[tokio::test]
async fn sockets_systemd_holds_are_served_by_name_and_the_connection_that_started_dockhand_is_answered(
) {
    // systemd-socket-activate is what a `.socket` unit does, from the command line: it holds
    // the listening sockets, starts the service on the first connection and passes them by
    // name (LISTEN_FDS, LISTEN_FDNAMES). A dockhand that bound the addresses itself would fail:
    // they are taken.
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let (api, proxy, up) = (free_port(), free_port(), free_port());
    let _upstream = Upstream::start(up, dir.path());
    let path = dir.path().join("dockhand.toml");
    std::fs::write(&path, config(dir.path(), &origin, api, proxy, up, "")).unwrap();
    let log = dir.path().join("dockhand.log");
    let mut activator = Command::new("systemd-socket-activate")
        .args([
            "-l",
            &format!("127.0.0.1:{api}"),
            "-l",
            &format!("127.0.0.1:{proxy}"),
            "--fdname=api:proxy/web",
        ])
        .arg(env!("CARGO_BIN_EXE_dockhand"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd): run scripts/test-env");
    let _successor = Successor(dir.path().join("state/dockhand.lock"));
    let listening = format!("Listening on 127.0.0.1:{proxy}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&listening)
    {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing runs dockhand yet: this request waits in the socket's backlog, starts it, and is
    // answered by it.
    let first = client()
        .get(format!("http://127.0.0.1:{proxy}/"))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let first = first.unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(first.status(), 200, "{text}");
    assert_eq!(first.text().await.unwrap(), "upstream\n");
    assert!(
        Remote::on_port(api)
            .up_within(Duration::from_secs(10))
            .await
    );
    let _ = activator.kill();
    let _ = activator.wait();
}

#[tokio::test]
async fn a_reload_that_changes_a_real_apps_image_refuses_nothing_and_the_next_push_runs_the_new_image(
) {
    use crate::support::uwsgi::{image, origin_with, UWSGI_INI};
    let origin = origin_with(UWSGI_INI);
    let head = origin.commit("v0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let name = crate::support::engine::unique("reimage").replace("dockhand-test-", "");
    let _cleanup = crate::support::engine::Cleanup::app(&name);
    let (api, proxy) = (free_port(), free_port());
    let v2 = std::env::var("DOCKHAND_TEST_IMAGE_UWSGI2").expect("DOCKHAND_TEST_IMAGE_UWSGI2");
    let text = |image: &str| {
        config_text(dir.path(), &origin, "", "")
            .replace("127.0.0.1:0", &format!("127.0.0.1:{api}"))
            .replace("name = \"web\"", &format!("name = \"{name}\""))
            + &format!(
                "[apps.container]\nimage = \"{image}\"\nmount = \"/app\"\n\
                 health_path = \"/version\"\nexpect_body_contains = \"{{sha}}\"\n\
                 health_interval = \"100ms\"\nstop_grace = \"5s\"\n\
                 [apps.proxy]\nlisten = \"127.0.0.1:{proxy}\"\n"
            )
    };
    let path = dir.path().join("dockhand.toml");
    std::fs::write(&path, text(&image())).unwrap();
    let log = dir.path().join("dockhand.log");
    let server = Server::start(&path, &log).await;
    let _successor = Successor(dir.path().join("state/dockhand.lock"));
    let first = server.wait_terminal(server.push(&head).await).await;
    assert_eq!(first["status"], "succeeded", "{first:#}");
    let proxied = format!("http://127.0.0.1:{proxy}/");

    let visitors = Visitors::start(vec![proxied.clone()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&path, text(&v2)).unwrap();
    reloaded(&path, &log).await;
    // The next push is a code change; the image named in the config is new: the full path.
    origin.write("VERSION", "v1\n");
    let next = origin.commit("v1");
    let deploy = server.wait_terminal(server.push(&next).await).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, failures) = visitors.finish().await;

    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
    assert_eq!(deploy["path"], "full", "{deploy:#}");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {failures:#?}",
        failures.len()
    );
    let version = get_page(&format!("{proxied}version")).await.1;
    assert!(
        version.contains("version=v1 ") && version.contains("deps=2"),
        "{version}"
    );
}
