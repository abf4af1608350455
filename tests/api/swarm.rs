//! Swarm services (issue 14) on the real 3-node swarm `scripts/test-env` starts (one dockerd
//! per node, each in a network namespace of its own): a push rolls the service out pinned by
//! digest on every node, a broken image is rolled back by Swarm with the old digest serving, a
//! rollback over the API runs the recorded digest, and `check` asks the manager.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::engine::unique;
use crate::support::full::{docker_cli, own_repository, publish_for_commit, BROKEN, V1};
use crate::support::helpers::*;
use crate::support::ops::{spawn_ops_edited, Ops};

const V2: &str = "127.0.0.1:5000/dockhand-test/app:v2";

/// The swarm scripts/test-env started: its manager's socket and the registry address the
/// nodes pull from (the same storage as 127.0.0.1:5000).
struct Cluster {
    manager: String,
    registry: String,
}

fn cluster() -> Cluster {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is unset: run scripts/test-env (it starts the 3-node swarm) and source its env file")
        })
    };
    Cluster {
        manager: var("DOCKHAND_TEST_SWARM_MANAGER"),
        registry: var("DOCKHAND_TEST_SWARM_REGISTRY"),
    }
}

/// How often a test service's HEALTHCHECK runs, and how many misses make it unhealthy.
const HEALTH_TIMING: [&str; 4] = ["--health-interval", "500ms", "--health-retries", "3"];

/// The docker CLI against the manager; must succeed. Returns stdout.
fn on_manager(c: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["-H", c.manager.as_str()];
    all.extend_from_slice(args);
    docker_cli(&all)
}

/// One task the manager wants running, as `docker inspect` shows it.
#[derive(Debug)]
struct Task {
    node: String,
    image: String,
    state: String,
}

/// A 3-replica host-network service of the test's own, one task per node, removed on drop
/// (`KEEP_SERVICE=1` keeps it, to look at after a failure).
struct Service {
    name: String,
    manager: String,
}

impl Service {
    /// A health-checked service of `image` (its HEALTHCHECK: the app answers on its port).
    fn create(c: &Cluster, image: &str) -> Service {
        // Host networking: each service of the run on a port of its own on every node.
        let port = free_port().to_string();
        let health = format!("wget -q -O /dev/null http://127.0.0.1:{port}/ || exit 1");
        let env = format!("PORT={port}");
        let options = [
            &["--env", &env, "--health-cmd", &health][..],
            &HEALTH_TIMING,
            &["--stop-grace-period", "2s"],
        ]
        .concat();
        Service::create_with(c, 3, &options, image, &[])
    }

    /// `docker service create` of `replicas` host-network replicas, one per node, with `options`,
    /// `image` and `command`; returns once all three run.
    fn create_with(
        c: &Cluster,
        replicas: usize,
        options: &[&str],
        image: &str,
        command: &[&str],
    ) -> Service {
        let name = unique("swarm");
        let count = replicas.to_string();
        let mut args = vec![
            "service",
            "create",
            "--detach",
            "--name",
            &name,
            "--replicas",
            &count,
            "--replicas-max-per-node",
            "1",
            "--network",
            "host",
        ];
        args.extend_from_slice(options);
        args.push(image);
        args.extend_from_slice(command);
        on_manager(c, &args);
        let service = Service {
            name,
            manager: c.manager.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let tasks = service.tasks(c);
            if tasks.len() == replicas && tasks.iter().all(|t| t.state == "running") {
                return service;
            }
            assert!(
                Instant::now() < deadline,
                "service never ran {replicas} tasks: {tasks:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The tasks the manager wants running.
    fn tasks(&self, c: &Cluster) -> Vec<Task> {
        let ids = on_manager(
            c,
            &[
                "service",
                "ps",
                "-q",
                "--filter",
                "desired-state=running",
                &self.name,
            ],
        );
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["inspect", "--type", "task"];
        args.extend(ids);
        let tasks: Vec<Value> = serde_json::from_str(&on_manager(c, &args)).unwrap();
        tasks
            .iter()
            .map(|t| Task {
                node: t["NodeID"].as_str().unwrap_or_default().to_string(),
                image: t["Spec"]["ContainerSpec"]["Image"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                state: t["Status"]["State"].as_str().unwrap().to_string(),
            })
            .collect()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::env::var("KEEP_SERVICE").is_ok() {
            return;
        }
        let _ = Command::new("/usr/bin/docker")
            .args(["-H", &self.manager, "service", "rm", &self.name])
            .output();
    }
}

/// The sha256 part of a reference pinned by digest.
fn sha(reference: &str) -> &str {
    reference.rsplit('@').next().unwrap()
}

fn step<'a>(deploy: &'a Value, stage: &str) -> &'a Value {
    deploy["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage)
        .unwrap_or_else(|| panic!("no {stage} step: {deploy:#}"))
}

/// Every wanted task runs `digest`, one per node on three nodes, and runs.
fn assert_everywhere(c: &Cluster, service: &Service, digest: &str) {
    let tasks = service.tasks(c);
    let nodes: BTreeSet<&str> = tasks.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes.len(), 3, "{tasks:?}");
    for t in &tasks {
        assert_eq!(sha(&t.image), sha(digest), "{tasks:?}");
        assert_eq!(t.state, "running", "{tasks:?}");
    }
}

async fn spawn(origin: &Origin, c: &Cluster, service: &Service, repository: &str) -> Ops {
    let image = repository.replace("127.0.0.1:5000", &c.registry);
    let section = format!(
        "[apps.swarm]\nservice = \"{}\"\nmanager = \"{}\"\nimage = \"{image}:{{short_sha}}\"\n\
         monitor = \"1s\"\ndeadline = \"50s\"\n",
        service.name, c.manager
    );
    spawn_ops_edited(origin, "", &section, |t| t).await
}

#[tokio::test]
async fn a_push_rolls_the_service_out_by_digest_on_every_node_swarm_rolls_a_broken_image_back_and_a_rollback_runs_the_recorded_digest(
) {
    let c = cluster();
    let origin = Origin::new();
    let repository = own_repository("swarm");
    let first = origin.head();
    let tag = publish_for_commit(V1, &repository, &first);
    let service = Service::create(&c, &tag.replace("127.0.0.1:5000", &c.registry));
    let ops = spawn(&origin, &c, &service, &repository).await;

    let one = ops.pushed(&first).await;
    assert_eq!(one["path"], "full", "{one:#}");
    let digest_one = one["digest"].as_str().unwrap().to_string();
    assert_everywhere(&c, &service, &digest_one);

    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("v2");
    publish_for_commit(V2, &repository, &second);
    let two = ops.pushed(&second).await;
    let digest_two = two["digest"].as_str().unwrap().to_string();
    assert_ne!(sha(&digest_two), sha(&digest_one), "{two:#}");
    assert_everywhere(&c, &service, &digest_two);
    let rollout = step(&two, "rollout");
    let out = rollout["output"].as_str().unwrap();
    assert_eq!(
        out.lines()
            .filter(|l| l.contains(": running (desired running)"))
            .count(),
        3,
        "{out}"
    );
    assert!(
        rollout["detail"].as_str().unwrap().contains("stop-first"),
        "{rollout:#}"
    );

    // A broken image: its tasks exit, Swarm rolls back, the previous digest keeps serving.
    origin.write("app.py", "VERSION = 3\n");
    let third = origin.commit("broken");
    publish_for_commit(BROKEN, &repository, &third);
    let three = ops.app.deploy_to_end(&third).await;
    assert_eq!(three["status"], "failed", "{three:#}");
    let error = three["error"].as_str().unwrap();
    assert!(
        error.contains("rolled service") && error.contains("back"),
        "{error}"
    );
    assert_everywhere(&c, &service, &digest_two);

    // A rollback to the first deploy runs the digest it recorded.
    let (status, answer) = ops
        .post(
            "/api/apps/web/rollback?wait=true",
            json!({ "to": one["id"] }),
        )
        .await;
    assert_eq!(status, 200, "{answer:#}");
    let back = ops
        .get(&format!("/api/deploys/{}", answer["deploy_id"]))
        .await;
    assert_eq!(back["status"], "succeeded", "{back:#}");
    assert_eq!(back["digest"], digest_one.as_str(), "{back:#}");
    assert_everywhere(&c, &service, &digest_one);
}

#[tokio::test]
async fn check_asks_the_manager_for_the_service_and_names_one_that_is_missing() {
    let c = cluster();
    let origin = Origin::new();
    let repository = own_repository("swarm-check");
    let tag = publish_for_commit(V1, &repository, &origin.head());
    let service = Service::create(&c, &tag.replace("127.0.0.1:5000", &c.registry));
    let ops = spawn(&origin, &c, &service, &repository).await;
    let config = ops.app.dir.path().join("dockhand.toml");
    let found = dockhand::cli::check_swarm_services(&config).await.unwrap();
    assert!(
        found.contains(&format!(
            "app web is service {} (3 replica(s))",
            service.name
        )),
        "{found}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace(&service.name, "no-such-service")).unwrap();
    let missing = dockhand::cli::check_swarm_services(&config)
        .await
        .unwrap_err();
    assert!(
        format!("{missing:#}").contains("service no-such-service does not exist on the manager"),
        "{missing:#}"
    );
}

/// dockhand's own image (the Containerfile's, which scripts/test builds from the test build's
/// binary) pushed to the test registry under a name of the test's own, as the nodes name it.
fn agent_image(c: &Cluster) -> String {
    let local = std::env::var("DOCKHAND_TEST_SELF_IMAGE").unwrap_or_else(|_| {
        panic!("DOCKHAND_TEST_SELF_IMAGE is unset: run scripts/test, which builds dockhand's image from the Containerfile")
    });
    let tag = format!("{}:1", own_repository("agent"));
    docker_cli(&["tag", &local, &tag]);
    docker_cli(&["push", &tag]);
    docker_cli(&["rmi", &tag]);
    tag.replace("127.0.0.1:5000", &c.registry)
}

/// Each node's own directory behind `/srv/dockhand-node/<name>` (what its tasks mount), as
/// the host sees it.
fn node_dirs(name: &str) -> Vec<std::path::PathBuf> {
    let dirs = std::env::var("DOCKHAND_TEST_SWARM_NODE_DIRS")
        .expect("DOCKHAND_TEST_SWARM_NODE_DIRS is unset: run scripts/test-env");
    dirs.split_whitespace()
        .map(|entry| {
            let (_, dir) = entry.split_once('=').unwrap();
            let dir = std::path::Path::new(dir).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        })
        .collect()
}

/// What every node's `current` serves of `file`.
fn served_everywhere(dirs: &[std::path::PathBuf], file: &str) -> Vec<String> {
    dirs.iter()
        .map(|d| std::fs::read_to_string(d.join("current").join(file)).unwrap_or_default())
        .collect()
}

/// The ids of the tasks the manager wants running: the same ids after a deploy mean no task
/// was replaced.
fn task_ids(c: &Cluster, service: &Service) -> BTreeSet<String> {
    on_manager(
        c,
        &[
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            &service.name,
        ],
    )
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

#[tokio::test]
async fn a_code_push_reaches_every_nodes_tree_without_replacing_a_task_and_a_node_that_cannot_build_switches_none(
) {
    let c = cluster();
    let agent = agent_image(&c);
    let origin = Origin::new();
    origin.write("index.html", "one\n");
    let one = origin.commit("one");
    let dir_name = unique("code").replace("dockhand-test-", "");
    let dirs = node_dirs(&dir_name);
    let code_dir = format!(
        "{}/{dir_name}",
        std::env::var("DOCKHAND_TEST_SWARM_NODE_DIR").expect("DOCKHAND_TEST_SWARM_NODE_DIR")
    );
    // The app serves its code directory (busybox httpd), which the tasks mount from the node.
    let port = free_port().to_string();
    let image = V1.replace("127.0.0.1:5000", &c.registry);
    let mount = format!("type=bind,source={code_dir},target=/code");
    let httpd = ["busybox", "httpd", "-f", "-p", &port, "-h", "/code"];
    let service = Service::create_with(&c, 3, &["--mount", &mount], &image, &httpd);
    let before = task_ids(&c, &service);
    let section = format!(
        "[apps.swarm]\nservice = \"{}\"\nmanager = \"{}\"\nimage = \"{image}\"\ncode_dir = \"{code_dir}\"\n\
         agent_image = \"{agent}\"\ndeadline = \"60s\"\n",
        service.name, c.manager
    );
    let ops = spawn_ops_edited(&origin, "", &section, |t| t).await;

    let first = ops.pushed(&one).await;
    assert_eq!(first["path"], "fast", "{first:#}");
    assert_eq!(served_everywhere(&dirs, "index.html"), ["one\n"; 3]);
    let build = step(&first, "build");
    assert_eq!(
        build["output"]
            .as_str()
            .unwrap()
            .matches(": complete")
            .count(),
        3,
        "{build:#}"
    );

    origin.write("index.html", "two\n");
    let two = origin.commit("two");
    let second = ops.pushed(&two).await;
    assert_eq!(second["path"], "fast", "{second:#}");
    assert_eq!(served_everywhere(&dirs, "index.html"), ["two\n"; 3]);
    assert_eq!(
        task_ids(&c, &service),
        before,
        "no task may be replaced by a fast deploy"
    );

    // One node cannot build the next release (a file stands where its directory would go):
    // phase 1 fails there, and no node switches.
    origin.write("index.html", "three\n");
    let three = origin.commit("three");
    let blocked = dirs[2].join("releases").join(&three);
    std::fs::write(&blocked, "not a release\n").unwrap();
    let failed = ops.app.deploy_to_end(&three).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("the release was not built on n3"), "{error}");
    assert_eq!(served_everywhere(&dirs, "index.html"), ["two\n"; 3]);
    assert_eq!(task_ids(&c, &service), before);
    std::fs::remove_file(&blocked).unwrap();
}

#[tokio::test]
async fn under_load_through_the_proxy_full_and_fast_deploys_of_a_3_task_service_fail_no_request() {
    let c = cluster();
    let agent = agent_image(&c);
    let origin = Origin::new();
    origin.write("index.html", "0\n");
    let start = origin.commit("start");
    let dir_name = unique("code").replace("dockhand-test-", "");
    let dirs = node_dirs(&dir_name);
    for dir in &dirs {
        std::fs::write(dir.join("ok"), "ok\n").unwrap();
    }
    let code_dir = format!(
        "{}/{dir_name}",
        std::env::var("DOCKHAND_TEST_SWARM_NODE_DIR").expect("DOCKHAND_TEST_SWARM_NODE_DIR")
    );
    // One tag that moves ({branch}): a commit touching the Dockerfile takes the full path,
    // one touching only code the fast path.
    let repository = own_repository("swarm-load");
    let local_tag = format!("{repository}:main");
    let publish = |source: &str| {
        docker_cli(&["tag", source, &local_tag]);
        docker_cli(&["push", &local_tag]);
    };
    publish(V1);
    let image = local_tag.replace("127.0.0.1:5000", &c.registry);
    let port = free_port();
    let health = format!("wget -q -O /dev/null http://127.0.0.1:{port}/ok || exit 1");
    let mount = format!("type=bind,source={code_dir},target=/code");
    let options = [
        &["--mount", &mount, "--health-cmd", &health][..],
        &HEALTH_TIMING,
        // Killed at once when Swarm stops it (no graceful window to hide behind): requests in
        // flight and new ones meet a dead task until the proxy's pool drops it.
        &["--stop-signal", "SIGKILL"],
    ]
    .concat();
    let listen = port.to_string();
    let httpd = ["busybox", "httpd", "-f", "-p", &listen, "-h", "/code"];
    let service = Service::create_with(&c, 3, &options, &image, &httpd);
    let proxy_port = free_port();
    let section = format!(
        "[apps.swarm]\nservice = \"{}\"\nmanager = \"{}\"\nimage = \"{}:{{branch}}\"\n\
         code_dir = \"{code_dir}\"\nagent_image = \"{agent}\"\nport = {port}\nmonitor = \"1s\"\n\
         deadline = \"50s\"\n[apps.proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\n",
        service.name,
        c.manager,
        repository.replace("127.0.0.1:5000", &c.registry)
    );
    let ops = spawn_ops_edited(&origin, "", &section, |t| t).await;
    assert_eq!(ops.pushed(&start).await["path"], "fast");
    let url = format!("http://127.0.0.1:{proxy_port}/current/index.html");
    // The proxy's pool follows the tasks (read every second).
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(&url).await.map(|r| r.status()).ok() != Some(reqwest::StatusCode::OK) {
        assert!(Instant::now() < deadline, "the proxy never reached a task");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let load = crate::support::load::Load::start(url, 50);
    for round in 1..=2 {
        // Full: the image changes (the Dockerfile did), Swarm replaces each task in turn.
        origin.write("Dockerfile", &format!("FROM app:{round}\n"));
        origin.write("index.html", &format!("full {round}\n"));
        let full = origin.commit("image");
        publish(if round % 2 == 1 { V2 } else { V1 });
        assert_eq!(ops.pushed(&full).await["path"], "full");
        // The nodes' code moved with the image.
        assert_eq!(
            served_everywhere(&dirs, "index.html"),
            vec![format!("full {round}\n"); 3]
        );
        // Fast: the code only, every node's release switched, no task replaced.
        origin.write("index.html", &format!("fast {round}\n"));
        let fast = origin.commit("code");
        assert_eq!(ops.pushed(&fast).await["path"], "fast");
        assert_eq!(
            served_everywhere(&dirs, "index.html"),
            vec![format!("fast {round}\n"); 3]
        );
    }
    let (samples, took) = load.finish().await;
    assert!(
        samples.len() > 100,
        "{} requests in {took:?}",
        samples.len()
    );
    let answers = none_failed(&samples);
    assert!(answers.contains("fast 2\n"), "{answers:?}");
}

#[tokio::test]
async fn a_lone_task_replaced_by_a_full_deploy_costs_requests_time_through_the_proxy_not_errors() {
    let c = cluster();
    let origin = Origin::new();
    let repository = own_repository("swarm-lone");
    let local_tag = format!("{repository}:main");
    for args in [
        ["tag", V1, local_tag.as_str()].as_slice(),
        &["push", &local_tag],
    ] {
        docker_cli(args);
    }
    let image = local_tag.replace("127.0.0.1:5000", &c.registry);
    let port = free_port();
    let health = format!("wget -q -O /dev/null http://127.0.0.1:{port}/ || exit 1");
    let listen = port.to_string();
    // One task, killed at once when stopped: stop-first leaves nothing serving until the new
    // one is healthy.
    let options = [
        &["--health-cmd", &health][..],
        &HEALTH_TIMING,
        &["--stop-signal", "SIGKILL"],
    ]
    .concat();
    let httpd = ["busybox", "httpd", "-f", "-p", &listen, "-h", "/www"];
    let service = Service::create_with(&c, 1, &options, &image, &httpd);
    let proxy_port = free_port();
    let section = format!(
        "[apps.swarm]\nservice = \"{}\"\nmanager = \"{}\"\nimage = \"{}:{{branch}}\"\nport = {port}\n\
         monitor = \"1s\"\ndeadline = \"50s\"\n[apps.proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\n",
        service.name,
        c.manager,
        repository.replace("127.0.0.1:5000", &c.registry)
    );
    let ops = spawn_ops_edited(&origin, "", &section, |t| t).await;
    let url = format!("http://127.0.0.1:{proxy_port}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(&url).await.map(|r| r.status()).ok() != Some(reqwest::StatusCode::OK) {
        assert!(
            Instant::now() < deadline,
            "the proxy never reached the task"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let load = crate::support::load::Load::start(url, 50);
    for source in [V2, V1] {
        origin.write("app.py", &format!("# {source}\n"));
        let commit = origin.commit("image");
        docker_cli(&["tag", source, &local_tag]);
        docker_cli(&["push", &local_tag]);
        assert_eq!(ops.pushed(&commit).await["path"], "full");
    }
    let (samples, _) = load.finish().await;
    let answers = none_failed(&samples);
    assert!(
        answers.contains("v2\n") && answers.contains("v1\n"),
        "{answers:?}"
    );
}

/// Every request of the load answered 200 (else a failure naming how many, the slowest answer
/// and the first errors); the bodies seen.
fn none_failed(samples: &[crate::support::load::Sample]) -> BTreeSet<&str> {
    let failed: Vec<&String> = samples
        .iter()
        .filter_map(|s| s.answer.as_ref().err())
        .collect();
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    assert!(
        failed.is_empty(),
        "{} of {} failed (slowest answer {slowest:?}): {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    samples
        .iter()
        .filter_map(|s| s.answer.as_deref().ok())
        .collect()
}
