//! The releases layout: `releases/<sha>/` per deployed commit, `current` switched in one rename,
//! unchanged files shared by hard links, kept releases reused, old ones pruned.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::helpers::*;

const RELEASES: &str = "layout = \"releases\"\nkeep_releases = 3\n";

fn current(volume: &Path) -> String {
    let target = std::fs::read_link(volume.join("current")).unwrap();
    target.to_str().unwrap().to_string()
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

fn releases(volume: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(volume.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn each_deploy_is_a_release_sharing_unchanged_files_and_current_names_the_live_one() {
    let origin = Origin::new();
    let app = spawn_app_with(&origin, "", RELEASES).await;
    let first = origin.head();
    app.deploy(&first).await;
    assert_eq!(current(&app.volume), format!("releases/{first}"));
    let one = app.volume.join("releases").join(&first);
    assert_eq!(snapshot(&one), origin.snapshot(&first));
    let names: Vec<String> = std::fs::read_dir(&app.volume)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "only releases/ and current: {names:?}");

    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("v2");
    let deploy = app.deploy(&second).await;
    let two = app.volume.join("releases").join(&second);
    assert_eq!(current(&app.volume), format!("releases/{second}"));
    assert_eq!(snapshot(&two), origin.snapshot(&second));
    assert_eq!(
        inode(&one.join("static/style.css")),
        inode(&two.join("static/style.css")),
        "an unchanged file is shared"
    );
    assert_ne!(inode(&one.join("app.py")), inode(&two.join("app.py")));
    assert_eq!(
        std::fs::read_to_string(one.join("app.py")).unwrap(),
        "VERSION = 1\n",
        "the previous release is untouched"
    );
    let sync = &deploy["steps"][2];
    assert_eq!(sync["stage"], "sync");
    assert!(
        sync["output"].as_str().unwrap().contains("hard-linked"),
        "{sync}"
    );
}

#[tokio::test]
async fn going_back_to_a_kept_release_writes_nothing_and_pruning_keeps_the_newest_and_the_live_one()
{
    let origin = Origin::new();
    let app = spawn_app_with(&origin, "", RELEASES).await;
    let first = origin.head();
    app.deploy(&first).await;
    let mut commits = vec![first.clone()];
    for n in 2..=4 {
        origin.write("app.py", &format!("VERSION = {n}\n"));
        commits.push(origin.commit(&format!("v{n}")));
        app.deploy(commits.last().unwrap()).await;
    }
    // keep_releases = 3: the newest three releases.
    let mut newest: Vec<String> = commits[1..].to_vec();
    newest.sort();
    assert_eq!(releases(&app.volume), newest);

    // Back to v3 (kept), force-pushed at the origin: `current` switches, nothing is written.
    let v3 = commits[2].clone();
    let kept_inode = inode(&app.volume.join("releases").join(&v3).join("app.py"));
    origin.git(&["reset", "-q", "--hard", &v3]);
    origin.git(&["push", "-q", "-f", "origin", "HEAD:refs/heads/main"]);
    let response = app.push_ref("refs/heads/main", &v3, true).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().await.unwrap()["deploy_id"]
        .as_i64()
        .unwrap();
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
    assert_eq!(current(&app.volume), format!("releases/{v3}"));
    let sync = step(&deploy, "sync");
    assert!(
        sync["output"].as_str().unwrap().contains("nothing written"),
        "{sync}"
    );
    assert_eq!(
        inode(&app.volume.join("releases").join(&v3).join("app.py")),
        kept_inode
    );

    // One more deploy: the oldest kept release goes, never the live one or the one before it.
    origin.write("app.py", "VERSION = 5\n");
    let v5 = origin.commit("v5");
    app.deploy(&v5).await;
    let left = releases(&app.volume);
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.contains(&v5) && left.contains(&v3), "{left:?}");
}

/// A reader in its own process: opens `current` once per round (as an app does per request)
/// and reads two files through that handle; prints `rounds mixed versions_seen` on stdin close.
const READER: &str = r#"
import os, sys, threading
volume = sys.argv[1]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
rounds = mixed = 0
seen = set()
while not stop.is_set():
    try:
        d = os.open(os.path.join(volume, "current"), os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        continue
    try:
        def read(name):
            fd = os.open(name, os.O_RDONLY, dir_fd=d)
            try:
                return os.read(fd, 100)
            finally:
                os.close(fd)
        a, b = read("a.txt"), read("sub/b.txt")
    finally:
        os.close(d)
    rounds += 1
    seen.add(a)
    if a != b:
        mixed += 1
print(rounds, mixed, len(seen))
"#;

#[tokio::test]
async fn a_reader_of_current_never_sees_two_commits_mixed_during_50_deploys() {
    let origin = Origin::new();
    origin.write("a.txt", "0\n");
    origin.write("sub/b.txt", "0\n");
    let app = spawn_app_with(&origin, "", RELEASES).await;
    app.deploy(&origin.commit("round 0")).await;

    let mut reader = Command::new("python3")
        .args(["-c", READER])
        .arg(&app.volume)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test-env installs it)");
    for round in 1..=50 {
        origin.write("a.txt", &format!("{round}\n"));
        origin.write("sub/b.txt", &format!("{round}\n"));
        app.deploy(&origin.commit(&format!("round {round}"))).await;
    }
    drop(reader.stdin.take());
    let out = reader.wait_with_output().unwrap();
    let out = String::from_utf8(out.stdout).unwrap();
    let figures: Vec<u64> = out.split_whitespace().map(|n| n.parse().unwrap()).collect();
    let [rounds, mixed, versions] = figures[..] else {
        panic!("reader said {out:?}");
    };
    assert!(
        versions > 1,
        "the reader must overlap the deploys (saw {versions} versions in {rounds} rounds)"
    );
    assert_eq!(
        mixed, 0,
        "{mixed} of {rounds} reads saw files of two commits"
    );
}

#[tokio::test]
async fn an_app_deployed_in_place_before_gets_a_full_release_on_its_next_deploy() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    app.deploy(&origin.head()).await;
    let config = app.dir.path().join("dockhand.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}{RELEASES}")).unwrap();
    let app = app.restart().await;

    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("v2");
    app.deploy(&second).await;
    assert_eq!(current(&app.volume), format!("releases/{second}"));
    assert_eq!(
        snapshot(&app.volume.join("releases").join(&second)),
        origin.snapshot(&second),
        "the whole tree, not just the change"
    );
}

#[tokio::test]
async fn a_rollback_over_the_api_to_a_kept_release_only_switches_current() {
    let origin = Origin::new();
    let ops = crate::support::ops::spawn_ops(&origin, RELEASES).await;
    let first = origin.head();
    ops.pushed(&first).await;
    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("v2");
    ops.pushed(&second).await;
    let before = inode(&ops.app.volume.join("releases").join(&first).join("app.py"));

    let rollback = ops
        .asked("/api/apps/web/rollback", serde_json::json!({}))
        .await;
    assert_eq!(rollback["status"], "succeeded", "{rollback:#}");
    assert_eq!(rollback["trigger"], "rollback");
    assert_eq!(current(&ops.app.volume), format!("releases/{first}"));
    let sync = step(&rollback, "sync");
    assert!(
        sync["output"].as_str().unwrap().contains("nothing written"),
        "{sync}"
    );
    let after = inode(&ops.app.volume.join("releases").join(&first).join("app.py"));
    assert_eq!(before, after, "the kept release was reused as it was");
}

#[tokio::test]
async fn a_deploy_answered_succeeded_has_already_pruned_its_releases_and_shows_the_step() {
    let origin = Origin::new();
    let ops = crate::support::ops::spawn_ops(&origin, RELEASES).await;
    for n in 1..=4 {
        if n > 1 {
            origin.write("app.py", &format!("VERSION = {n}\n"));
            origin.commit(&format!("v{n}"));
        }
        // `?wait` answers at the status event: nothing may still run after it.
        let (status, done) = ops
            .post("/api/apps/web/deploy?wait=true", serde_json::json!({}))
            .await;
        assert_eq!(
            (status.as_u16(), &done["status"]),
            (200, &"succeeded".into())
        );
        let kept = releases(&ops.app.volume).len();
        assert_eq!(
            kept,
            n.min(3),
            "releases right after deploy {n} answered: {done:#}"
        );
        let steps = ops
            .get(&format!("/api/deploys/{}", done["deploy_id"]))
            .await["steps"]
            .clone();
        let pruned = steps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "prune-releases");
        assert!(pruned, "deploy {n}'s steps: {steps:#}");
    }
}
