//! The full path's test setup: the registry's test images, an app with a container spec and a
//! name of its own, images published for a commit, and what the API says runs.

use serde_json::Value;

use crate::support::engine::unique;
use crate::support::helpers::*;

pub(crate) const V1: &str = "127.0.0.1:5000/dockhand-test/app:v1";
pub(crate) const BROKEN: &str = "127.0.0.1:5000/dockhand-test/broken:v1";

pub(crate) async fn spawn_with(origin: &Origin, image: &str, extra: &str) -> (TestApp, String) {
    let name = unique("full").replace("dockhand-test-", "");
    // Health answers must contain "v1" unless the test says otherwise.
    let expect = if extra.contains("expect_body_contains") {
        ""
    } else {
        "expect_body_contains = \"v1\"\n"
    };
    let container = format!(
        "[apps.container]\nimage = \"{image}\"\nmount = \"/code\"\n{expect}\
         health_interval = \"100ms\"\nhealth_deadline = \"20s\"\nstop_grace = \"1s\"\n{extra}"
    );
    let app = spawn_app_edited(origin, "", &container, |t| {
        t.replace("name = \"web\"", &format!("name = \"{name}\""))
    })
    .await;
    (app, name)
}

/// An image repository of the test's own in the test registry, so no shared image is touched.
pub(crate) fn own_repository(test: &str) -> String {
    format!(
        "127.0.0.1:5000/dockhand-test/{}",
        unique(test).replace("dockhand-test-", "")
    )
}

/// Publish `source` as `repository:<short sha of commit>` in the registry (not kept locally),
/// the tag an image template `{short_sha}` names for that commit.
pub(crate) fn publish_for_commit(source: &str, repository: &str, commit: &str) -> String {
    let tag = format!("{repository}:{}", &commit[..dockhand::config::SHORT_SHA]);
    for args in [
        ["tag", source, tag.as_str()].as_slice(),
        &["push", &tag],
        &["rmi", &tag],
    ] {
        let _ = docker_cli(args);
    }
    tag
}

/// Run the docker CLI, which must succeed; its stdout.
pub(crate) fn docker_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("/usr/bin/docker")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) async fn live(app: &TestApp, name: &str) -> Value {
    app.get(&format!("/api/apps/{name}")).await["container"].clone()
}
