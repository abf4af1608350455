//! `runtime::Docker` against the real engine and the loopback registry that `scripts/test-env`
//! starts. These tests fail (never skip) when the engine is not there.
//!
//! Every container runs with host networking on a free loopback port (env `PORT`) and carries
//! the label `dockhand.test=<unique value>`; a [`Cleanup`] guard removes them all on drop.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dockhand::runtime::{ContainerSpec, Docker, Engine as _, HealthCheck};

use crate::support::engine::{docker, unique, Cleanup, LABEL};
use crate::support::helpers::free_port;

fn image(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

fn app_v1() -> String {
    image(
        "DOCKHAND_TEST_IMAGE_V1",
        "127.0.0.1:5000/dockhand-test/app:v1",
    )
}

fn broken() -> String {
    image(
        "DOCKHAND_TEST_IMAGE_BROKEN",
        "127.0.0.1:5000/dockhand-test/broken:v1",
    )
}

fn spec(name: &str, image: &str, cleanup: &Cleanup, port: u16, boot_delay: u32) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: image.to_string(),
        cmd: None,
        env: vec![
            ("PORT".into(), port.to_string()),
            ("BOOT_DELAY".into(), boot_delay.to_string()),
        ],
        mounts: Vec::new(),
        labels: BTreeMap::from([(LABEL.to_string(), cleanup.value.clone())]),
        network_mode: "host".into(),
        restart_policy: None,
    }
}

fn check(port: u16, expect: &str, deadline: Duration) -> HealthCheck {
    HealthCheck {
        url: format!("http://127.0.0.1:{port}/index.html"),
        expect_status: None,
        expect_body_contains: Some(expect.to_string()),
        grace: Duration::ZERO,
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(1),
        failures: 1000,
        answer_failures: None,
        deadline,
    }
}

/// Creates and starts a container from `image` on a fresh port; returns (id, port).
async fn run(
    docker: &Docker,
    test: &str,
    image: &str,
    cleanup: &Cleanup,
    boot_delay: u32,
) -> (String, u16) {
    let port = free_port();
    let id = docker
        .create(&spec(&unique(test), image, cleanup, port, boot_delay))
        .await
        .expect("create");
    docker.start(&id).await.expect("start");
    (id, port)
}

#[tokio::test]
async fn pull_of_a_pushed_tag_returns_its_repository_digest() {
    let docker = docker().await;
    let image = app_v1();

    let pulled = docker.pull(&image, None).await.expect("pull");

    let digest = pulled.digest.expect("a repo digest");
    assert!(
        digest.starts_with("127.0.0.1:5000/dockhand-test/app@sha256:"),
        "{digest}"
    );
    assert!(
        pulled.image_id.starts_with("sha256:"),
        "{}",
        pulled.image_id
    );
    assert_eq!(docker.image_digest(&image).await.unwrap(), Some(digest));
}

#[tokio::test]
async fn pulling_a_tag_that_does_not_exist_fails_naming_it() {
    let docker = docker().await;
    let image = "127.0.0.1:5000/dockhand-test/app:no-such-tag";

    let err = docker.pull(image, None).await.unwrap_err();

    let text = format!("{err:#}");
    assert!(text.contains(image), "{text}");
}

#[tokio::test]
async fn pulling_from_a_registry_port_with_nothing_listening_fails_without_hanging() {
    let docker = docker().await;
    let image = format!("127.0.0.1:{}/dockhand-test/app:v1", free_port());

    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), docker.pull(&image, None))
        .await
        .expect("the pull hung for 30 s");

    let text = format!("{:#}", result.unwrap_err());
    assert!(text.contains(&image), "{text}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_missing_image_has_no_digest_and_removing_it_reports_false() {
    let docker = docker().await;
    let image = "127.0.0.1:5000/dockhand-test/app:never-pulled";

    assert_eq!(docker.image_digest(image).await.unwrap(), None);
    assert!(!docker.remove_image(image).await.unwrap());
}

#[tokio::test]
async fn option_like_or_empty_image_references_are_refused() {
    let docker = docker().await;

    for image in ["", "-v", "--help"] {
        assert!(docker.pull(image, None).await.is_err(), "{image:?} pulled");
    }
}

#[tokio::test]
async fn app_v1_is_healthy_when_its_body_must_contain_v1_and_stops() {
    let docker = docker().await;
    let cleanup = Cleanup::test(unique("healthy"));
    let (id, port) = run(&docker, "healthy", &app_v1(), &cleanup, 0).await;

    let report = docker
        .wait_healthy(&id, &check(port, "v1", Duration::from_secs(10)))
        .await
        .expect("healthy");

    assert!(report.attempts >= 1);
    let info = docker.inspect(&id).await.unwrap().expect("exists");
    assert!(info.running);
    assert_eq!(info.image_ref, app_v1());
    assert!(info.image_id.starts_with("sha256:"));
    assert_eq!(info.labels.get(LABEL), Some(&cleanup.value));
    // busybox sh as PID 1 ignores SIGTERM: stop waits the grace, then kills.
    docker
        .stop(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    docker
        .stop(&id, Duration::from_secs(1))
        .await
        .expect("stop again");
    let info = docker.inspect(&id).await.unwrap().expect("exists");
    assert!(!info.running);
    assert!(info.exit_code.is_some());
}

#[tokio::test]
async fn app_v1_is_not_healthy_when_v2_is_expected_and_the_error_says_why() {
    let docker = docker().await;
    let cleanup = Cleanup::test(unique("wrong-body"));
    let (id, port) = run(&docker, "wrong-body", &app_v1(), &cleanup, 0).await;

    let started = Instant::now();
    let err = docker
        .wait_healthy(&id, &check(port, "v2", Duration::from_secs(2)))
        .await
        .unwrap_err();

    let text = format!("{err:#}");
    assert!(text.contains("not healthy within"), "{text}");
    assert!(text.contains("does not contain \"v2\""), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn too_many_failed_probes_in_a_row_fail_before_the_deadline() {
    let docker = docker().await;
    let cleanup = Cleanup::test(unique("failures"));
    let (id, port) = run(&docker, "failures", &app_v1(), &cleanup, 0).await;
    let mut check = check(port, "v2", Duration::from_secs(20));
    check.failures = 2;

    let started = Instant::now();
    let err = docker.wait_healthy(&id, &check).await.unwrap_err();

    let text = format!("{err:#}");
    assert!(text.contains("failed 3 health probes in a row"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_container_that_exits_fails_the_health_check_at_once_with_its_exit_code() {
    let docker = docker().await;
    let cleanup = Cleanup::test(unique("broken"));
    let (id, port) = run(&docker, "broken", &broken(), &cleanup, 0).await;

    let started = Instant::now();
    let err = docker
        .wait_healthy(&id, &check(port, "v1", Duration::from_secs(20)))
        .await
        .unwrap_err();

    let text = format!("{err:#}");
    assert!(text.contains("exited with code 1"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let logs = docker.logs_tail(&id, 20).await.expect("logs");
    assert!(logs.contains("exiting with status 1"), "{logs:?}");
}

#[tokio::test]
async fn a_slow_booting_app_is_healthy_after_some_failed_probes() {
    let docker = docker().await;
    let cleanup = Cleanup::test(unique("slow-boot"));
    let (id, port) = run(&docker, "slow-boot", &app_v1(), &cleanup, 2).await;

    let report = docker
        .wait_healthy(&id, &check(port, "v1", Duration::from_secs(6)))
        .await
        .expect("healthy within 6 s");

    assert!(report.attempts > 1, "{report:?}");
    assert!(report.elapsed >= Duration::from_secs(2), "{report:?}");
}

#[tokio::test]
async fn waiting_for_docker_health_on_an_image_without_healthcheck_fails() {
    let docker = docker().await;
    let cleanup = Cleanup::test(unique("no-healthcheck"));
    let (id, _) = run(&docker, "no-healthcheck", &app_v1(), &cleanup, 0).await;

    let err = docker
        .wait_docker_health(&id, Duration::from_secs(5))
        .await
        .unwrap_err();

    assert!(
        format!("{err:#}").contains("no Docker HEALTHCHECK"),
        "{err:#}"
    );
}

#[tokio::test]
async fn creating_a_container_with_a_name_in_use_is_a_conflict() {
    let docker = docker().await;
    let cleanup = Cleanup::test(unique("conflict"));
    let name = unique("conflict");
    let spec = spec(&name, &app_v1(), &cleanup, free_port(), 0);
    docker.create(&spec).await.expect("first create");

    let err = docker.create(&spec).await.unwrap_err();

    let text = format!("{err:#}");
    assert!(text.contains("already in use"), "{text}");
    assert!(text.contains(&name), "{text}");
}

#[tokio::test]
async fn stopping_or_removing_a_missing_container_is_ok() {
    let docker = docker().await;
    let missing = unique("missing");

    docker
        .stop(&missing, Duration::from_secs(1))
        .await
        .expect("stop");
    docker.remove(&missing).await.expect("remove");
    assert_eq!(docker.inspect(&missing).await.unwrap(), None);
}

#[tokio::test]
async fn list_by_label_finds_exactly_this_tests_containers() {
    let docker = docker().await;
    let mine = Cleanup::test(unique("list"));
    let other = Cleanup::test(unique("list-other"));
    let (a, b) = (unique("list-a"), unique("list-b"));
    let a_id = docker
        .create(&spec(&a, &app_v1(), &mine, free_port(), 0))
        .await
        .unwrap();
    docker
        .create(&spec(&b, &app_v1(), &mine, free_port(), 0))
        .await
        .unwrap();
    docker
        .create(&spec(&unique("list-c"), &app_v1(), &other, free_port(), 0))
        .await
        .unwrap();
    docker.start(&a_id).await.unwrap();

    let mut found = docker.list_by_label(LABEL, &mine.value).await.unwrap();

    found.sort_by(|x, y| x.name.cmp(&y.name));
    let names: Vec<_> = found.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [a.as_str(), b.as_str()]);
    assert!(found[0].running);
    assert!(!found[1].running, "created, never started");
}

#[tokio::test]
async fn a_health_url_on_a_non_loopback_host_is_refused() {
    let docker = docker().await;
    let mut check = check(80, "v1", Duration::from_secs(1));
    check.url = "http://192.0.2.1:80/".into();

    let err = docker.wait_healthy("any", &check).await.unwrap_err();

    assert!(
        format!("{err:#}").contains("not a loopback address"),
        "{err:#}"
    );
}

/// A fake engine on a unix socket: speaks API 1.41, and answers a pull with HTTP 200 whose
/// stream carries an error item after some progress — what a real engine does when a layer
/// fails mid-pull.
async fn fake_engine_failing_pulls_mid_stream(socket: &std::path::Path) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::UnixListener::bind(socket).expect("bind fake engine");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split(' ').nth(1).unwrap_or_default();
                let body = if path.contains("/version") {
                    r#"{"ApiVersion":"1.41","Version":"20.10.0"}"#.to_string()
                } else if path.contains("/_ping") {
                    "OK".to_string()
                } else if path.contains("/images/create") {
                    concat!(
                        r#"{"status":"Pulling from dockhand-test/app","id":"v1"}"#,
                        "\n",
                        r#"{"status":"Downloading","id":"abc","progressDetail":{"current":1,"total":2}}"#,
                        "\n",
                        r#"{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}"#,
                        "\n"
                    )
                    .to_string()
                } else {
                    // An inspect after the pull: the image "exists", so only the stream can fail it.
                    r#"{"Id":"sha256:00","RepoDigests":[]}"#.to_string()
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nApi-Version: 1.41\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
}

#[tokio::test]
async fn a_pull_answered_200_whose_stream_carries_an_error_fails() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engine.sock");
    fake_engine_failing_pulls_mid_stream(&socket).await;
    let docker = Docker::connect_to(&format!("unix://{}", socket.display()))
        .await
        .expect("connect to the fake engine");

    let image = "127.0.0.1:5000/dockhand-test/app:v1";
    let err = docker.pull(image, None).await.unwrap_err();

    let text = format!("{err:#}");
    assert!(text.contains("unexpected EOF"), "{text}");
    assert!(text.contains(image), "{text}");
}

#[tokio::test]
async fn connecting_to_a_socket_that_does_not_exist_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.sock");

    let err = Docker::connect_to(&format!("unix://{}", socket.display()))
        .await
        .unwrap_err();

    let text = format!("{err:#}");
    assert!(text.contains("unreachable"), "{text}");
    assert!(text.contains(&socket.display().to_string()), "{text}");
}

#[tokio::test]
async fn a_crash_looping_container_under_a_restart_policy_fails_the_health_check_fast() {
    let docker = docker().await;
    let cleanup = Cleanup::test(unique("crash-loop"));
    let port = free_port();
    let mut looping = spec(&unique("crash-loop"), &broken(), &cleanup, port, 0);
    looping.restart_policy = Some("always".into());
    let id = docker.create(&looping).await.expect("create");
    docker.start(&id).await.expect("start");

    let started = Instant::now();
    let err = docker
        .wait_healthy(&id, &check(port, "v1", Duration::from_secs(20)))
        .await
        .unwrap_err();

    let text = format!("{err:#}");
    assert!(text.contains("not running"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    looping.restart_policy = Some("sometimes".into());
    looping.name = unique("crash-loop");
    let err = docker.create(&looping).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("unknown restart policy"),
        "{err:#}"
    );
}

/// A unix-socket proxy to the real engine that, when told, cuts the connection as the next
/// request arrives — what an engine restart or a socket closed mid-call looks like to a client.
struct FlakyEngine {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    cut_next: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyEngine {
    async fn start() -> FlakyEngine {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let cut_next = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cut = cut_next.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(engine) = tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_engine, mut to_engine) = engine.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = from_client.read(&mut buf).await?;
                            if n == 0 || cut.swap(false, Ordering::SeqCst) {
                                return Ok::<(), std::io::Error>(());
                            }
                            to_engine.write_all(&buf[..n]).await?;
                        }
                    };
                    let down = tokio::io::copy(&mut from_engine, &mut to_client);
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        FlakyEngine {
            _dir: dir,
            path,
            cut_next,
        }
    }

    fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn cut_next_request(&self) {
        self.cut_next.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn engine_calls_survive_a_connection_cut_mid_call_without_duplicating_containers() {
    let flaky = FlakyEngine::start().await;
    let docker = Docker::connect_to(&flaky.url())
        .await
        .expect("connect through the proxy");
    let cleanup = Cleanup::test(unique("flaky"));
    let spec = spec(&unique("flaky"), &app_v1(), &cleanup, free_port(), 0);

    flaky.cut_next_request();
    let id = docker
        .create(&spec)
        .await
        .expect("create after a cut connection");
    flaky.cut_next_request();
    docker
        .start(&id)
        .await
        .expect("start after a cut connection");
    flaky.cut_next_request();
    let info = docker
        .inspect(&id)
        .await
        .expect("inspect after a cut connection")
        .expect("exists");
    assert!(info.running);
    flaky.cut_next_request();
    let listed = docker
        .list_by_label(LABEL, &cleanup.value)
        .await
        .expect("list after a cut connection");
    assert_eq!(listed.len(), 1, "exactly one container: {listed:?}");
    flaky.cut_next_request();
    docker
        .remove(&id)
        .await
        .expect("remove after a cut connection");
    assert!(docker.inspect(&id).await.unwrap().is_none());
}
