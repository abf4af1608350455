//! The full path end to end on the real engine and registry: push → plan → pull → new
//! container healthy → old one retired; on failure the old one keeps serving.

use std::time::Duration;

use serde_json::Value;

use dockhand::runtime::Engine as _;

use crate::support::engine::{docker, unique, Cleanup};
use crate::support::full::*;
use crate::support::helpers::*;

/// A test app with its own name (containers are labelled with it) and a container spec.
async fn spawn(origin: &Origin, image: &str) -> (TestApp, String) {
    spawn_with(origin, image, "").await
}

async fn answer(port: u64) -> String {
    answer_at(port, "/").await
}

async fn answer_at(port: u64, path: &str) -> String {
    get_page(&format!("http://127.0.0.1:{port}{path}")).await.1
}

/// An app whose first deploy put V1 live, and what it served then.
struct Served {
    app: TestApp,
    name: String,
    _cleanup: Cleanup,
    /// The deployed commit.
    good: String,
    /// The live container after the first deploy (`id`, `port`, …).
    before: Value,
}

impl Served {
    async fn on_v1(origin: &Origin, extra: &str) -> Served {
        let (app, name) = spawn_with(origin, V1, extra).await;
        let _cleanup = Cleanup::app(&name);
        let good = origin.head();
        app.deploy(&good).await;
        let before = live(&app, &name).await;
        Served {
            app,
            name,
            _cleanup,
            good,
            before,
        }
    }

    /// The operator points the app at another image and restarts dockhand.
    async fn repointed(self, image: &str) -> Served {
        let Served {
            app,
            name,
            _cleanup,
            good,
            before,
        } = self;
        let config = app.dir.path().join("dockhand.toml");
        let text = std::fs::read_to_string(&config).unwrap().replace(V1, image);
        std::fs::write(&config, text).unwrap();
        let app = app.restart().await;
        Served {
            app,
            name,
            _cleanup,
            good,
            before,
        }
    }
}

#[tokio::test]
async fn first_deploy_starts_a_healthy_container_then_code_pushes_stay_fast_and_lockfile_pushes_swap_it(
) {
    let origin = Origin::new();
    let (app, name) = spawn(&origin, V1).await;
    let _cleanup = Cleanup::app(&name);

    // No container yet: full path.
    let first = app.deploy(&origin.head()).await;
    assert_eq!(first["path"], "full", "{first:#}");
    assert!(
        first["digest"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:5000/dockhand-test/app@sha256:"),
        "{first:#}"
    );
    let c1 = live(&app, &name).await;
    assert!(answer(c1["port"].as_u64().unwrap()).await.contains("v1"));
    assert_eq!(app.volume_snapshot(), origin.snapshot(&origin.head()));

    // Code only: fast path, same container.
    origin.write("app.py", "VERSION = 2\n");
    let fast = app.deploy(&origin.commit("code")).await;
    assert_eq!(fast["path"], "fast", "{fast:#}");
    assert_eq!(live(&app, &name).await["id"], c1["id"]);

    // A lockfile changed: full path, a new container, the old one gone.
    origin.write("requirements.txt", "django==5.1\n");
    let full = app.deploy(&origin.commit("deps")).await;
    assert_eq!(full["path"], "full", "{full:#}");
    assert!(
        full["reason"]
            .as_str()
            .unwrap()
            .contains("requirements.txt"),
        "{full:#}"
    );
    let c2 = live(&app, &name).await;
    assert_ne!(c2["id"], c1["id"]);
    assert!(answer(c2["port"].as_u64().unwrap()).await.contains("v1"));
    let engine = docker().await;
    assert!(
        engine
            .inspect(c1["id"].as_str().unwrap())
            .await
            .unwrap()
            .is_none(),
        "old container not removed"
    );
    assert_eq!(app.volume_snapshot(), origin.snapshot(&origin.head()));
}

#[tokio::test]
async fn a_new_image_that_never_gets_healthy_fails_and_the_old_container_keeps_serving() {
    let origin = Origin::new();
    let Served {
        app,
        name,
        good,
        before,
        _cleanup,
    } = Served::on_v1(&origin, "").await.repointed(BROKEN).await;
    origin.write("app.py", "VERSION = 3\n");
    let id = app.push(&origin.commit("v3")).await;
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(deploy["path"], "full");
    assert_eq!(
        stages(&deploy),
        // The new version failed its trial on a copy of the tree: nothing else happened.
        ["fetch", "plan", "pull", "stage", "trial", "trial-health"]
    );

    assert_eq!(live(&app, &name).await["id"], before["id"]);
    assert!(
        answer(before["port"].as_u64().unwrap())
            .await
            .contains("v1"),
        "the old version must keep answering"
    );
    assert_eq!(
        app.volume_snapshot(),
        origin.snapshot(&good),
        "the volume is back on the deployed commit"
    );
    let containers = crate::support::engine::app_containers(&name).await;
    assert_eq!(
        containers.len(),
        1,
        "the failed container was not removed: {containers:?}"
    );
}

#[tokio::test]
async fn an_image_that_does_not_exist_fails_the_pull_and_touches_nothing() {
    let origin = Origin::new();
    let Served {
        app,
        name: _,
        good,
        before,
        _cleanup,
    } = Served::on_v1(&origin, "")
        .await
        .repointed("127.0.0.1:5000/dockhand-test/app:nope")
        .await;
    origin.write("app.py", "VERSION = 4\n");
    let deploy = app.deploy_to_end(&origin.commit("v4")).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(stages(&deploy), ["fetch", "plan", "pull"]);
    assert!(
        deploy["error"].as_str().unwrap().contains("nope"),
        "{deploy:#}"
    );
    assert_eq!(app.volume_snapshot(), origin.snapshot(&good));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(answer(before["port"].as_u64().unwrap())
        .await
        .contains("v1"));
}

#[tokio::test]
async fn after_a_crash_lost_the_live_container_and_left_a_stray_one_a_restart_serves_the_last_good_version(
) {
    let origin = Origin::new();
    let (app, name) = spawn(&origin, V1).await;
    let _cleanup = Cleanup::app(&name);
    app.deploy(&origin.head()).await;
    let before = live(&app, &name).await;

    // What a kill between retiring the old container and recording the new one can leave: the
    // recorded container gone, another one of the app running.
    let engine = docker().await;
    engine.remove(before["id"].as_str().unwrap()).await.unwrap();
    let stray = dockhand::runtime::ContainerSpec {
        name: unique("stray"),
        image: V1.to_string(),
        cmd: None,
        env: vec![("PORT".into(), "1".into())],
        mounts: vec![],
        labels: [("dockhand.app".to_string(), name.clone())].into(),
        network_mode: "host".into(),
        restart_policy: None,
    };
    let stray = engine.create(&stray).await.unwrap();

    let app = app.restart().await;
    let after = live(&app, &name).await;
    assert_ne!(after["id"], before["id"]);
    assert!(
        answer(after["port"].as_u64().unwrap()).await.contains("v1"),
        "the app must serve again"
    );
    assert!(
        engine.inspect(&stray).await.unwrap().is_none(),
        "the stray container must be removed"
    );
    let containers = crate::support::engine::app_containers(&name).await;
    assert_eq!(containers.len(), 1, "{containers:?}");
}

/// A registry of one test's own on a free loopback port, stopped on drop (or by `stop`).
struct OwnRegistry {
    child: std::process::Child,
    addr: String,
    published: Vec<String>,
    _dir: tempfile::TempDir,
}

impl OwnRegistry {
    async fn start() -> OwnRegistry {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry is missing: run scripts/test-env");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while client()
            .get(format!("http://{addr}/v2/"))
            .send()
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "registry on {addr} never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        OwnRegistry {
            child,
            addr,
            published: Vec::new(),
            _dir: dir,
        }
    }

    /// Tag `source` into this registry and push it; the local tag stays.
    fn publish(&mut self, source: &str, repository: &str) -> String {
        let tag = format!("{}/{repository}:v1", self.addr);
        docker_cli(&["tag", source, &tag]);
        docker_cli(&["push", &tag]);
        self.published.push(tag.clone());
        tag
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
        for tag in &self.published {
            let _ = std::process::Command::new("/usr/bin/docker")
                .args(["rmi", tag])
                .output();
        }
    }
}

#[tokio::test]
async fn a_lost_live_container_comes_back_at_boot_from_the_local_image_while_its_registry_is_down_judged_by_its_healthcheck(
) {
    let source = std::env::var("DOCKHAND_TEST_IMAGE_HEALTHCHECK")
        .expect("DOCKHAND_TEST_IMAGE_HEALTHCHECK is not set: run scripts/test-env");
    let mut registry = OwnRegistry::start().await;
    let image = registry.publish(&source, "revive/app");
    let origin = Origin::new();
    // The HTTP probe of this path gets 404 for ever: only the image's HEALTHCHECK passes it.
    let (app, name) = spawn_with(&origin, &image, "health_path = \"/no-such-page\"\n").await;
    let _cleanup = Cleanup::app(&name);
    app.deploy(&origin.head()).await;
    let before = live(&app, &name).await;

    // The live container is lost and the registry goes down; then dockhand restarts.
    let engine = docker().await;
    engine.remove(before["id"].as_str().unwrap()).await.unwrap();
    registry.stop();

    let app = app.restart().await;
    let after = live(&app, &name).await;
    assert_ne!(after["id"], before["id"], "the container was recreated");
    assert!(
        answer(after["port"].as_u64().unwrap()).await.contains("v1"),
        "the app must serve again"
    );
    assert_eq!(crate::support::engine::app_containers(&name).await.len(), 1);
}

#[tokio::test]
async fn stop_first_on_a_fixed_port_swaps_in_place_and_starts_the_old_container_again_when_the_new_one_fails(
) {
    let origin = Origin::new();
    let port = free_port();
    let (app, name) = spawn_with(&origin, V1, &format!("port = {port}\n")).await;
    let _cleanup = Cleanup::app(&name);
    app.deploy(&origin.head()).await;
    let c1 = live(&app, &name).await;
    assert_eq!(c1["port"], port);

    origin.write("app.py", "VERSION = 5\n");
    let full = app
        .deploy(&origin.commit("rebuild\n\nDeploy-Path: full\n"))
        .await;
    assert_eq!(
        stages(&full),
        // The tree changes only once the old container is stopped.
        ["fetch", "plan", "pull", "stop-old", "sync", "start", "health", "retire"]
    );
    let c2 = live(&app, &name).await;
    assert_ne!(c2["id"], c1["id"]);
    assert!(answer(u64::from(port)).await.contains("v1"));

    let config = app.dir.path().join("dockhand.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(V1, BROKEN);
    std::fs::write(&config, text).unwrap();
    let app = app.restart().await;
    origin.write("app.py", "VERSION = 6\n");
    let id = app.push(&origin.commit("broken image")).await;
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert!(
        stages(&deploy).contains(&"restart-old".to_string()),
        "{deploy:#}"
    );
    assert_eq!(live(&app, &name).await["id"], c2["id"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = match client()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if body.contains("v1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old container did not come back on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn start_first_with_a_fixed_port_is_a_config_error() {
    let text = "[server]\nstate_dir = \"/tmp/dh-s\"\n[[apps]]\nname = \"a\"\nrepo = \"/tmp/r\"\nsecret = \"x\"\n\
                volume = \"/tmp/dh-v\"\n[apps.container]\nimage = \"i\"\nmount = \"/c\"\nport = 8080\n\
                strategy = \"start-first\"\n";
    let err = dockhand::config::Config::parse(text, std::path::Path::new("/")).unwrap_err();
    assert!(format!("{err:#}").contains("stop-first"), "{err:#}");
}

#[tokio::test]
async fn images_of_older_full_deploys_beyond_keep_images_are_removed() {
    let origin = Origin::new();
    let repo = own_repository("prune");
    let (app, name) = spawn_with(
        &origin,
        &format!("{repo}:{{short_sha}}"),
        "keep_images = 1\n",
    )
    .await;
    let _cleanup = Cleanup::app(&name);
    let mut tags = Vec::new();
    for i in 0..3 {
        if i > 0 {
            origin.write("app.py", &format!("VERSION = {i}\n"));
            origin.commit("next image");
        }
        let head = origin.head();
        tags.push(publish_for_commit(V1, &repo, &head));
        let deploy = app.deploy(&head).await;
        assert_eq!(deploy["path"], "full", "{deploy:#}");
    }
    let engine = docker().await;
    assert!(
        engine.image_digest(&tags[0]).await.unwrap().is_none(),
        "{} should be pruned",
        tags[0]
    );
    assert!(
        engine.image_digest(&tags[1]).await.unwrap().is_none(),
        "{} should be pruned",
        tags[1]
    );
    assert!(
        engine.image_digest(&tags[2]).await.unwrap().is_some(),
        "the live image must stay"
    );
    assert!(answer(live(&app, &name).await["port"].as_u64().unwrap())
        .await
        .contains("v1"));
}

#[tokio::test]
async fn a_registry_that_is_down_fails_the_pull_and_the_old_container_keeps_serving() {
    let closed = free_port();
    let origin = Origin::new();
    let down = format!("127.0.0.1:{closed}/dockhand-test/app:v1");
    let Served {
        app,
        name,
        good,
        before,
        _cleanup,
    } = Served::on_v1(&origin, "").await.repointed(&down).await;
    origin.write("app.py", "VERSION = 7\n");
    let id = app.push(&origin.commit("registry down")).await;
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(stages(&deploy), ["fetch", "plan", "pull"]);
    assert_eq!(live(&app, &name).await["id"], before["id"]);
    assert!(answer(before["port"].as_u64().unwrap())
        .await
        .contains("v1"));
    assert_eq!(app.volume_snapshot(), origin.snapshot(&good));
}

#[tokio::test]
async fn a_private_registry_image_needs_the_configured_credentials() {
    let registry = std::env::var("DOCKHAND_TEST_PRIVATE_REGISTRY")
        .expect("DOCKHAND_TEST_PRIVATE_REGISTRY is not set: run scripts/test-env (it starts the auth registry)");
    let user = std::env::var("DOCKHAND_TEST_PRIVATE_USER").unwrap();
    let image = format!("{registry}/private/app:v1");

    // Without credentials the pull is refused and nothing starts.
    let origin = Origin::new();
    let (app, name) = spawn(&origin, &image).await;
    let _cleanup = Cleanup::app(&name);
    let id = app.push(&origin.head()).await;
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(stages(&deploy), ["fetch", "plan", "pull"]);
    assert!(crate::support::engine::app_containers(&name)
        .await
        .is_empty());

    // With them it deploys. The password comes from an env var of dockhand's.
    let var = format!("DOCKHAND_TEST_REGISTRY_PASSWORD_{}", std::process::id());
    std::env::set_var(
        &var,
        std::env::var("DOCKHAND_TEST_PRIVATE_PASSWORD").unwrap(),
    );
    let origin = Origin::new();
    let extra = format!("registry_username = \"{user}\"\nregistry_password_env = \"{var}\"\n");
    let (app, name) = spawn_with(&origin, &image, &extra).await;
    let _cleanup = Cleanup::app(&name);
    let deploy = app.deploy(&origin.head()).await;
    assert_eq!(deploy["path"], "full");
    assert!(answer(live(&app, &name).await["port"].as_u64().unwrap())
        .await
        .contains("v1"));
}

#[tokio::test]
async fn an_image_with_a_docker_healthcheck_is_judged_by_it_not_by_the_http_probe() {
    let image = std::env::var("DOCKHAND_TEST_IMAGE_HEALTHCHECK")
        .expect("DOCKHAND_TEST_IMAGE_HEALTHCHECK is not set: run scripts/test-env");
    let origin = Origin::new();
    // The HTTP probe of this path would get 404 for ever; the image's HEALTHCHECK decides.
    let (app, name) = spawn_with(&origin, &image, "health_path = \"/no-such-page\"\n").await;
    let _cleanup = Cleanup::app(&name);
    let deploy = app.deploy(&origin.head()).await;
    let health = step(&deploy, "health");
    assert!(
        health["detail"].as_str().unwrap().contains("HEALTHCHECK"),
        "{health:#}"
    );
    assert!(answer(live(&app, &name).await["port"].as_u64().unwrap())
        .await
        .contains("v1"));
}

#[tokio::test]
async fn credentials_from_a_docker_config_json_pull_a_private_image() {
    use base64::Engine as _;
    let registry = std::env::var("DOCKHAND_TEST_PRIVATE_REGISTRY")
        .expect("DOCKHAND_TEST_PRIVATE_REGISTRY is not set: run scripts/test-env (it starts the auth registry)");
    let login = format!(
        "{}:{}",
        std::env::var("DOCKHAND_TEST_PRIVATE_USER").unwrap(),
        std::env::var("DOCKHAND_TEST_PRIVATE_PASSWORD").unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let config_json = dir.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(login);
    std::fs::write(
        &config_json,
        format!("{{\"auths\":{{\"{registry}\":{{\"auth\":\"{auth}\"}}}}}}"),
    )
    .unwrap();

    let origin = Origin::new();
    let extra = format!("docker_config = \"{}\"\n", config_json.display());
    let (app, name) = spawn_with(&origin, &format!("{registry}/private/app:v1"), &extra).await;
    let _cleanup = Cleanup::app(&name);
    app.deploy(&origin.head()).await;
    assert!(answer(live(&app, &name).await["port"].as_u64().unwrap())
        .await
        .contains("v1"));
}

#[tokio::test]
async fn a_full_deploy_of_a_new_image_serves_the_new_version() {
    let origin = Origin::new();
    let repo = own_repository("version");
    let (app, name) = spawn_with(
        &origin,
        &format!("{repo}:{{short_sha}}"),
        "expect_body_contains = \"v\"\n",
    )
    .await;
    let _cleanup = Cleanup::app(&name);
    publish_for_commit(V1, &repo, &origin.head());
    app.deploy(&origin.head()).await;
    assert!(answer(live(&app, &name).await["port"].as_u64().unwrap())
        .await
        .contains("v1"));

    origin.write("requirements.txt", "flask==3\n");
    let head = origin.commit("new dependencies, new image");
    publish_for_commit("127.0.0.1:5000/dockhand-test/app:v2", &repo, &head);
    let deploy = app.deploy(&head).await;
    assert_eq!(deploy["path"], "full");
    assert!(
        deploy["digest"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{repo}@sha256:")),
        "{deploy:#}"
    );
    assert!(
        answer(live(&app, &name).await["port"].as_u64().unwrap())
            .await
            .contains("v2"),
        "the new version answers"
    );
}

#[tokio::test]
async fn the_configured_command_extra_mounts_and_restart_policy_reach_the_container() {
    let origin = Origin::new();
    let extra = tempfile::tempdir().unwrap();
    std::fs::write(extra.path().join("greeting.txt"), "hello from the host\n").unwrap();
    let config = format!(
        "cmd = [\"/bin/sh\", \"-c\", \"cp /extra/greeting.txt /www/ && exec httpd -f -p 127.0.0.1:$PORT -h /www\"]\n\
         restart = \"on-failure\"\n\
         mounts = [{{ source = \"{}\", target = \"/extra\", read_only = true }}]\n",
        extra.path().display()
    );
    let (app, name) = spawn_with(&origin, V1, &config).await;
    let _cleanup = Cleanup::app(&name);
    app.deploy(&origin.head()).await;
    let container = live(&app, &name).await;
    let port = container["port"].as_u64().unwrap();

    let greeting = answer_at(port, "/greeting.txt").await;
    assert_eq!(greeting, "hello from the host\n", "cmd and the extra mount");
    let docker_cli = |args: &[&str]| {
        std::process::Command::new("/usr/bin/docker")
            .args(args)
            .output()
            .unwrap()
    };
    let id = container["id"].as_str().unwrap();
    let policy = docker_cli(&["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", id]);
    assert_eq!(String::from_utf8_lossy(&policy.stdout).trim(), "on-failure");
    let write = docker_cli(&["exec", id, "touch", "/extra/x"]);
    assert!(!write.status.success(), "the extra mount must be read-only");
}

/// Issue 12, defect 9: Docker's `config.json` was read on an async thread, so a read that does
/// not return (a FIFO here; a hung network filesystem in the field) stalled every request of
/// the server, not only the deploy that needed it. The server here runs on the test's one
/// thread, as a server on one core would.
#[tokio::test]
async fn a_docker_config_read_that_hangs_holds_its_deploy_not_the_server() {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let reading = Arc::new(AtomicBool::new(false));
    let released = Arc::new(AtomicBool::new(false));
    let (release, release_asked) = std::sync::mpsc::channel::<()>();
    // The other end of the FIFO, on a thread of its own: it notices the reader (opening for
    // writing without blocking fails until one is there), then answers `{}` when asked — or
    // after 20 s, so a stalled server does not hang the test for ever.
    let writer = std::thread::spawn({
        let (fifo, reading, released) = (fifo.clone(), reading.clone(), released.clone());
        move || {
            let nonblocking = rustix::fs::OFlags::NONBLOCK.bits() as i32;
            let give_up = std::time::Instant::now() + Duration::from_secs(60);
            let mut file = loop {
                match std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(nonblocking)
                    .open(&fifo)
                {
                    Ok(file) => break file,
                    Err(_) if std::time::Instant::now() < give_up => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("the deploy never read {}: {e}", fifo.display()),
                }
            };
            reading.store(true, Ordering::SeqCst);
            let _ = release_asked.recv_timeout(Duration::from_secs(20));
            released.store(true, Ordering::SeqCst);
            file.write_all(b"{}").unwrap();
        }
    });

    let origin = Origin::new();
    let extra = format!("docker_config = \"{}\"\n", fifo.display());
    let (app, name) = spawn_with(&origin, V1, &extra).await;
    let _cleanup = Cleanup::app(&name);
    let id = app.push(&origin.head()).await;
    while !reading.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        !released.load(Ordering::SeqCst),
        "/healthz answered only once the config.json read returned: the read held the server"
    );
    release.send(()).unwrap();
    writer.join().unwrap();
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
}
