//! dockhand's own image (Containerfile), run on the real engine with the documented mounts:
//! it must perform a full and a fast deploy like the binary does.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::docker::{docker, unique};
use crate::helpers::*;

#[tokio::test]
async fn the_containerised_dockhand_performs_a_full_and_a_fast_deploy() {
    let image = std::env::var("DOCKHAND_TEST_SELF_IMAGE")
        .expect("DOCKHAND_TEST_SELF_IMAGE is not set: run scripts/test, which builds the Containerfile image");
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("self").replace("dockhand-test-", "");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let container = "[apps.container]\nimage = \"127.0.0.1:5000/dockhand-test/app:v1\"\nmount = \"/code\"\n\
                     expect_body_contains = \"v1\"\nhealth_interval = \"100ms\"\nhealth_deadline = \"20s\"\nstop_grace = \"1s\"\n";
    let text = config_text(dir.path(), &origin, "", container)
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace("name = \"web\"", &format!("name = \"{name}\""));
    let config = dir.path().join("dockhand.toml");
    std::fs::write(&config, text).unwrap();

    let engine = docker().await;
    let same = |p: &std::path::Path| dockhand::runtime::Mount {
        source: p.to_path_buf(),
        target: p.display().to_string(),
        read_only: false,
    };
    let spec = dockhand::runtime::ContainerSpec {
        name: unique("dockhand"),
        image,
        cmd: Some(vec![
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ]),
        env: vec![],
        mounts: vec![
            same(std::path::Path::new("/var/run/docker.sock")),
            same(dir.path()),
            same(origin.bare.parent().unwrap()),
        ],
        labels: [("dockhand.test".to_string(), name.clone())].into(),
        network_mode: "host".into(),
        restart_policy: None,
    };
    let id = engine.create(&spec).await.unwrap();
    let _cleanup = crate::full_path::Cleanup(vec![
        ("dockhand.test", name.clone()),
        ("dockhand.app", name.clone()),
    ]);
    engine.start(&id).await.unwrap();

    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        let logs = engine.logs_tail(&id, 20).await.unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "containerised dockhand did not start:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deploy = |after: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let body = push_payload("refs/heads/main", &after, false);
            let response = http
                .post(format!("{base}/hooks/github"))
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", delivery_id())
                .header("X-Hub-Signature-256", sign(SECRET, &body))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            let id = response.json::<Value>().await.unwrap()["deploy_id"]
                .as_i64()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let d: Value = http
                    .get(format!("{base}/api/deploys/{id}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if d["status"] != "queued" && d["status"] != "running" {
                    return d;
                }
                assert!(Instant::now() < deadline, "{d:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let full = deploy(origin.head()).await;
    assert_eq!(
        (full["status"].as_str(), full["path"].as_str()),
        (Some("succeeded"), Some("full")),
        "{full:#}"
    );
    origin.write("app.py", "VERSION = 2\n");
    let fast = deploy(origin.commit("code")).await;
    assert_eq!(
        (fast["status"].as_str(), fast["path"].as_str()),
        (Some("succeeded"), Some("fast")),
        "{fast:#}"
    );
    assert_eq!(
        snapshot(&dir.path().join("volume")),
        origin.snapshot(&origin.head())
    );
}
