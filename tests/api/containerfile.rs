//! dockhand's own image (Containerfile), run on the real engine with the documented mounts:
//! it must perform a full and a fast deploy like the binary does.

use std::time::Duration;

use dockhand::runtime::Engine as _;

use crate::support::engine::{docker, unique};
use crate::support::helpers::*;

#[tokio::test]
async fn the_containerised_dockhand_performs_a_full_and_a_fast_deploy() {
    let image = std::env::var("DOCKHAND_TEST_SELF_IMAGE")
        .expect("DOCKHAND_TEST_SELF_IMAGE is not set: run scripts/test, which builds the Containerfile image");
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("self").replace("dockhand-test-", "");
    let port = free_port();
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
    let _dockhand = crate::support::engine::Cleanup::test(name.clone());
    let _apps = crate::support::engine::Cleanup::app(&name);
    engine.start(&id).await.unwrap();

    let remote = Remote::on_port(port);
    if !remote.up_within(Duration::from_secs(30)).await {
        panic!(
            "containerised dockhand did not start:
{}",
            engine.logs_tail(&id, 20).await.unwrap_or_default()
        );
    }
    let deploy = |after: String| {
        let remote = &remote;
        async move { remote.wait_terminal(remote.push(&after).await).await }
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
