//! The fast path end to end: push → 202 → the volume holds exactly the new tree, reloaded.

use std::time::{Duration, SystemTime};

use crate::support::helpers::*;

fn mtime(path: &std::path::Path) -> SystemTime {
    std::fs::symlink_metadata(path).unwrap().modified().unwrap()
}

#[tokio::test]
async fn push_deploys_exactly_the_new_tree_touches_the_reload_file_and_records_steps() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let first = origin.head();
    let deploy = app.deploy(&first).await;
    assert_eq!(app.volume_snapshot(), origin.snapshot(&first));
    assert_eq!(stages(&deploy), ["fetch", "plan", "sync", "reload"]);
    assert!(
        deploy["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ok"] == true),
        "{deploy:#}"
    );
    assert_eq!(deploy["to_commit"], first.as_str());
    assert_eq!(deploy["path"], "fast");
    let touched = mtime(&app.volume.join("uwsgi.ini"));

    tokio::time::sleep(Duration::from_millis(20)).await;
    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("v2");
    let deploy = app.deploy(&second).await;
    assert_eq!(app.volume_snapshot(), origin.snapshot(&second));
    assert_eq!(deploy["from_commit"], first.as_str());
    assert!(
        deploy["reason"]
            .as_str()
            .unwrap()
            .contains("1 paths change"),
        "{deploy:#}"
    );
    assert!(
        mtime(&app.volume.join("uwsgi.ini")) > touched,
        "reload file was not touched"
    );

    let state = app.get("/api/apps/web").await;
    assert_eq!(state["deployed"]["commit"], second.as_str());
    assert_eq!(state["last_deploy"]["status"], "succeeded");
}

#[tokio::test]
async fn deletes_renames_exec_bits_and_symlinks_land_as_in_the_commit() {
    let origin = Origin::new();
    origin.write("lib/deep/old.py", "x = 1\n");
    origin.write("bin/run", "#!/bin/sh\necho run\n");
    let app = spawn_app(&origin).await;
    app.deploy(&origin.commit("with lib")).await;

    origin.remove("lib/deep/old.py");
    origin.git(&["mv", "static/style.css", "static/main.css"]);
    origin.set_exec("bin/run", true);
    origin.symlink("current.css", "static/main.css");
    origin.commit("reshape");
    // GitHub may truncate commits[]; the payload here lists none at all (SECURITY.md 17).
    app.deploy(&origin.head()).await;
    let volume = app.volume_snapshot();
    assert_eq!(volume, origin.snapshot(&origin.head()));
    assert!(
        !app.volume.join("lib").exists(),
        "directories left empty are removed"
    );
    assert!(matches!(
        volume.get("bin/run"),
        Some(Entry::File { exec: true, .. })
    ));
    assert!(matches!(volume.get("current.css"), Some(Entry::Symlink(_))));
}

#[tokio::test]
async fn volume_never_gets_git_metadata_and_planted_git_config_is_never_run() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    app.deploy(&origin.head()).await;
    assert!(!app.volume.join(".git").exists());
    // The container can write its volume: it plants git config that would run a command.
    let marker = app.dir.path().join("pwned");
    std::fs::create_dir_all(app.volume.join(".git/hooks")).unwrap();
    std::fs::write(
        app.volume.join(".git/config"),
        format!(
            "[core]\n\tfsmonitor = touch {}\n\thooksPath = .git/hooks\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::write(
        app.volume.join(".git/hooks/post-checkout"),
        format!("#!/bin/sh\ntouch {}\n", marker.display()),
    )
    .unwrap();
    origin.write("app.py", "VERSION = 3\n");
    app.deploy(&origin.commit("v3")).await;
    assert!(
        !marker.exists(),
        "something ran the volume's git config or hooks"
    );
    assert!(
        app.dir.path().join("state/repos/web.git/HEAD").exists(),
        "the cache lives in the state dir"
    );
}

#[tokio::test]
async fn a_committed_symlink_cannot_be_used_to_write_outside_the_volume() {
    let origin = Origin::new();
    let outside = tempfile::tempdir().unwrap();
    origin.symlink("evil", outside.path().to_str().unwrap());
    let app = spawn_app(&origin).await;
    app.deploy(&origin.commit("symlink out")).await;
    assert_eq!(
        std::fs::read_link(app.volume.join("evil")).unwrap(),
        outside.path()
    );

    // The next commit replaces the symlink with a directory holding a file.
    std::fs::remove_file(origin.work.join("evil")).unwrap();
    origin.write("evil/x.txt", "payload\n");
    app.deploy(&origin.commit("dir now")).await;
    assert_eq!(app.volume_snapshot(), origin.snapshot(&origin.head()));
    assert!(
        std::fs::read_dir(outside.path()).unwrap().next().is_none(),
        "something was written outside"
    );
}

#[tokio::test]
async fn a_directory_the_container_swapped_for_a_symlink_fails_the_deploy_and_nothing_lands_outside(
) {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    app.deploy(&origin.head()).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::remove_dir_all(app.volume.join("static")).unwrap();
    std::os::unix::fs::symlink(outside.path(), app.volume.join("static")).unwrap();

    origin.write("static/style.css", "body { color: red }\n");
    let deploy = app.deploy_to_end(&origin.commit("restyle")).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert!(
        deploy["error"].as_str().unwrap().contains("symlink"),
        "{deploy:#}"
    );
    assert!(
        std::fs::read_dir(outside.path()).unwrap().next().is_none(),
        "something was written outside"
    );
}

#[tokio::test]
async fn a_tree_entry_named_dot_dot_fails_the_deploy_and_writes_nothing_outside() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    app.deploy(&origin.head()).await;
    // Craft a commit whose tree has an entry `..` (git itself never makes one; a hostile
    // origin can). The objects go straight into the bare origin.
    let bare = origin.bare.to_str().unwrap();
    let hash = |kind: &str, data: &[u8]| -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("git")
            .args([
                "--git-dir",
                bare,
                "hash-object",
                "-w",
                "--literally",
                "-t",
                kind,
                "--stdin",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    let blob = hash("blob", b"escaped\n");
    let entry = |mode: &str, name: &str, id: &str| {
        let mut e = format!("{mode} {name}\0").into_bytes();
        e.extend(hex::decode(id).unwrap());
        e
    };
    let inner = hash("tree", &entry("100644", "escape.txt", &blob));
    let root = hash("tree", &entry("40000", "..", &inner));
    let commit = git(
        &origin.bare,
        &["commit-tree", &root, "-p", &origin.head(), "-m", "escape"],
    );
    git(&origin.bare, &["update-ref", "refs/heads/main", &commit]);

    let deploy = app.deploy_to_end(&commit).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert!(
        deploy["error"].as_str().unwrap().contains(".."),
        "{deploy:#}"
    );
    assert!(!app.volume.parent().unwrap().join("escape.txt").exists());
    assert_eq!(
        app.volume_snapshot(),
        origin.snapshot(&origin.head()),
        "the volume still holds the old commit"
    );
}

#[tokio::test]
async fn a_reload_file_that_is_a_symlink_is_refused_and_the_previous_commit_restored() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let good = origin.head();
    app.deploy(&good).await;
    let target = app.dir.path().join("precious.txt");
    std::fs::write(&target, "keep\n").unwrap();
    let before = mtime(&target);
    tokio::time::sleep(Duration::from_millis(20)).await;
    origin.write("app.py", "VERSION = 4\n");
    origin.symlink("uwsgi.ini", target.to_str().unwrap());
    let deploy = app
        .deploy_to_end(&origin.commit("symlinked reload file"))
        .await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(
        stages(&deploy),
        ["fetch", "plan", "sync", "reload", "restore"]
    );
    assert_eq!(mtime(&target), before, "the symlink's target was touched");
    assert_eq!(
        app.volume_snapshot(),
        origin.snapshot(&good),
        "the previous commit is back"
    );
    assert_eq!(
        app.get("/api/apps/web").await["deployed"]["commit"],
        good.as_str()
    );
}

#[tokio::test]
async fn first_deploy_into_a_non_empty_volume_is_refused_unless_adopted() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    std::fs::create_dir_all(&app.volume).unwrap();
    std::fs::write(app.volume.join("hand-made.txt"), "mine\n").unwrap();
    let deploy = app.deploy_to_end(&origin.head()).await;
    assert_eq!(deploy["status"], "failed");
    assert!(
        deploy["error"].as_str().unwrap().contains("adopt"),
        "{deploy:#}"
    );
    assert_eq!(
        std::fs::read_dir(&app.volume).unwrap().count(),
        1,
        "nothing was written"
    );
    app.stop().await;

    let app = spawn_app_with(&origin, "", "adopt = true").await;
    std::fs::create_dir_all(&app.volume).unwrap();
    std::fs::write(app.volume.join("hand-made.txt"), "mine\n").unwrap();
    app.deploy(&origin.head()).await;
    let mut expected = origin.snapshot(&origin.head());
    expected.insert(
        "hand-made.txt".into(),
        Entry::File {
            content: b"mine\n".to_vec(),
            exec: false,
        },
    );
    assert_eq!(app.volume_snapshot(), expected);
}

#[tokio::test]
async fn annotated_tag_push_deploys_and_records_the_peeled_commit() {
    let origin = Origin::new();
    let app = spawn_app_with(&origin, "", "tags = \"v*\"").await;
    origin.write("app.py", "VERSION = 5\n");
    let commit = origin.commit("release");
    let tag = origin.annotated_tag("v1.0.0");
    assert_ne!(tag, commit);
    let response = app.push_ref("refs/tags/v1.0.0", &tag, false).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().await.unwrap()["deploy_id"]
        .as_i64()
        .unwrap();
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
    assert_eq!(deploy["to_commit"], commit.as_str());
    assert_eq!(deploy["requested_sha"], tag.as_str());
    assert_eq!(app.volume_snapshot(), origin.snapshot(&commit));
}

#[tokio::test]
async fn forced_push_deploys_the_rewritten_tip() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let base = origin.head();
    origin.write("app.py", "VERSION = 6\n");
    app.deploy(&origin.commit("will be rewritten")).await;
    origin.git(&["reset", "-q", "--hard", &base]);
    origin.write("other.py", "rewritten = True\n");
    let rewritten = origin.commit("rewritten history");
    let response = app.push_ref("refs/heads/main", &rewritten, true).await;
    let id = response.json::<serde_json::Value>().await.unwrap()["deploy_id"]
        .as_i64()
        .unwrap();
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
    assert_eq!(app.volume_snapshot(), origin.snapshot(&rewritten));
}

#[tokio::test]
async fn pushing_the_deployed_commit_again_does_nothing() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    app.deploy(&origin.head()).await;
    let touched = mtime(&app.volume.join("uwsgi.ini"));
    let deploy = app.deploy_to_end(&origin.head()).await;
    assert_eq!(deploy["status"], "ignored", "{deploy:#}");
    assert!(deploy["reason"]
        .as_str()
        .unwrap()
        .contains("already deployed"));
    assert_eq!(mtime(&app.volume.join("uwsgi.ini")), touched);
}

#[tokio::test]
async fn stale_git_lock_files_left_by_a_kill_are_cleared_at_startup() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    app.deploy(&origin.head()).await;
    // What a SIGKILL during a fetch leaves in the cache.
    let cache = app.dir.path().join("state/repos/web.git");
    std::fs::write(cache.join("refs/heads/main.lock"), "").unwrap();
    std::fs::write(cache.join("packed-refs.lock"), "").unwrap();
    let app = app.restart().await;
    origin.write("app.py", "VERSION = 9\n");
    app.deploy(&origin.commit("after the crash")).await;
    assert_eq!(app.volume_snapshot(), origin.snapshot(&origin.head()));
}

#[tokio::test]
async fn a_hostile_gitmodules_and_a_nested_bare_repository_are_only_data() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let marker = app.dir.path().join("pwned");
    // A submodule whose URL is an option, and a gitlink entry for it (SECURITY.md 22).
    origin.write(
        ".gitmodules",
        &format!(
            "[submodule \"x\"]\n\tpath = sub\n\turl = --upload-pack=touch {}\n",
            marker.display()
        ),
    );
    origin.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{},sub", origin.head()),
    ]);
    // A bare repository committed as files, with a hook (SECURITY.md 23).
    origin.write("vendor/nested.git/HEAD", "ref: refs/heads/main\n");
    origin.write("vendor/nested.git/config", "[core]\n\tbare = true\n");
    origin.write(
        "vendor/nested.git/hooks/post-update",
        &format!("#!/bin/sh\ntouch {}\n", marker.display()),
    );
    origin.set_exec("vendor/nested.git/hooks/post-update", true);
    let commit = origin.commit("hostile");
    app.deploy(&commit).await;
    assert!(!marker.exists(), "something ran");
    assert!(
        !app.volume.join("sub").exists(),
        "a submodule was materialised"
    );
    let volume = app.volume_snapshot();
    assert!(
        volume.contains_key(".gitmodules")
            && volume.contains_key("vendor/nested.git/hooks/post-update")
    );
}

#[tokio::test]
async fn an_origin_over_the_fetch_size_cap_fails_the_deploy_and_the_volume_keeps_serving() {
    let origin = Origin::new();
    let app = spawn_app_with(&origin, "", "max_fetch_size = \"64KiB\"").await;
    let good = origin.head();
    app.deploy(&good).await;
    let noise: String = (0..40_000u32)
        .map(|i| format!("{:08x}", i.wrapping_mul(2654435761)))
        .collect();
    origin.write("big.bin", &noise);
    let deploy = app.deploy_to_end(&origin.commit("huge")).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert!(
        deploy["error"].as_str().unwrap().contains("size cap"),
        "{deploy:#}"
    );
    assert_eq!(app.volume_snapshot(), origin.snapshot(&good));
}

#[tokio::test]
async fn a_late_delivery_of_a_commit_force_pushed_away_deploys_the_origins_tip_not_the_payload() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let base = origin.head();
    app.deploy(&base).await;
    // X is pushed, then force-pushed away before its delivery arrives.
    origin.write(
        "removed-by-the-force-push.txt",
        "secret that was pulled back\n",
    );
    let x = origin.commit("X, soon gone");
    origin.git(&["reset", "-q", "--hard", &base]);
    origin.write("app.py", "VERSION = 7\n");
    let y = origin.commit("Y, the rewritten history");

    // X's (non-forced) delivery arrives late.
    let id = app.push_queued(&x, false).await;
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["to_commit"], y.as_str(), "{deploy:#}");
    assert_eq!(deploy["requested_sha"], x.as_str(), "{deploy:#}");
    let fetch = step(&deploy, "fetch")["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(fetch.contains(&y) && fetch.contains(&x), "{deploy:#}");
    assert!(!app.volume.join("removed-by-the-force-push.txt").exists());
    assert_eq!(app.volume_snapshot(), origin.snapshot(&y));
}

#[tokio::test]
async fn a_forced_push_replayed_under_a_new_delivery_id_rolls_nothing_back() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let (old, new) = app.deployed_twice(&origin).await;

    // A captured forced push of the old commit, signed, replayed with a fresh delivery id.
    let id = app.push_queued(&old, true).await;
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "ignored", "{deploy:#}");
    assert_eq!(app.volume_snapshot(), origin.snapshot(&new));
}

#[tokio::test]
async fn a_push_that_only_moves_a_submodule_says_so_and_does_not_reload() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    app.deploy(&origin.head()).await;
    let touched = mtime(&app.volume.join("uwsgi.ini"));
    let revision = std::fs::read_to_string(app.volume.join("REVISION")).ok();

    // A gitlink (a submodule's commit), as `git submodule update --remote && commit` leaves.
    let pinned = "1111111111111111111111111111111111111111";
    let cacheinfo = format!("160000,{pinned},vendor/lib");
    origin.git(&["update-index", "--add", "--cacheinfo", &cacheinfo]);
    git(&origin.work, &["commit", "-q", "-m", "bump vendor/lib"]);
    git(
        &origin.work,
        &["push", "-q", "origin", "HEAD:refs/heads/main"],
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let deploy = app.deploy(&origin.head()).await;

    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
    let plan = step(&deploy, "plan")["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        plan.contains("nothing in the deployed tree changes")
            && plan.contains("1 submodule (vendor/lib) not deployed"),
        "{plan}"
    );
    let reload = step(&deploy, "reload")["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reload.starts_with("skipped"), "{reload}");
    assert_eq!(
        mtime(&app.volume.join("uwsgi.ini")),
        touched,
        "reloaded for nothing"
    );
    assert!(!app.volume.join("vendor/lib").exists());
    if revision.is_some() {
        let now = std::fs::read_to_string(app.volume.join("REVISION")).unwrap();
        assert!(
            now.contains(&origin.head()),
            "REVISION still names the commit: {now}"
        );
    }
}

#[tokio::test]
async fn git_lfs_pointers_are_named_in_the_plan() {
    let origin = Origin::new();
    origin.write(
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    origin.write(
        "model.bin",
        "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n",
    );
    let app = spawn_app(&origin).await;
    let deploy = app.deploy(&origin.commit("with an LFS file")).await;
    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
    let plan = step(&deploy, "plan")["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        plan.contains("1 Git LFS file (model.bin) deployed as pointer text"),
        "{plan}"
    );
}

#[tokio::test]
async fn a_commit_whose_paths_share_one_blob_cannot_write_past_max_tree_size() {
    let origin = Origin::new();
    let app = spawn_app_with(&origin, "", "max_tree_size = \"1MiB\"\n").await;
    let first = origin.head();
    app.deploy(&first).await;
    // 300 paths, one 64 KiB blob: a 64 KiB fetch that would write 19 MiB.
    let blob: String = (0..65536)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for i in 0..300 {
        origin.write(&format!("copies/{i:03}.txt"), &blob);
    }
    let bomb = origin.commit("300 copies of one blob");
    let deploy = app.deploy_to_end(&bomb).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    let error = deploy["error"].as_str().unwrap_or_default();
    assert!(error.contains("over max_tree_size (1.0 MiB)"), "{deploy:#}");
    assert!(
        !app.volume.join("copies").exists(),
        "nothing may be written"
    );
    assert_eq!(app.volume_snapshot(), origin.snapshot(&first));
}

/// The host's git config is not dockhand's: a `~/.gitconfig` that git itself cannot parse
/// (or one with an `insteadOf`, a `core.*` setting) must not change or stop what a daemon
/// deploys. Run as the real binary, with `HOME` pointing at that config.
#[tokio::test]
async fn a_broken_gitconfig_in_home_does_not_stop_a_deploy() {
    let origin = Origin::new();
    let (dir, config) = crate::support::server::config_on_a_free_port(&origin);
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".config/git")).unwrap();
    for file in [home.join(".gitconfig"), home.join(".config/git/config")] {
        std::fs::write(file, "[core\n\tthis is = not [ a config\n").unwrap();
    }
    let home = home.to_str().unwrap();
    let server = crate::support::server::Server::spawn_with_env(
        &config,
        &dir.path().join("dockhand.log"),
        &[
            ("HOME", home),
            ("XDG_CONFIG_HOME", &format!("{home}/.config")),
        ],
    );
    assert!(server.up_within(Duration::from_secs(30)).await);
    let deploy = server
        .wait_terminal(server.push(&origin.head()).await)
        .await;
    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
    assert_eq!(
        snapshot(&dir.path().join("volume")),
        origin.snapshot(&origin.head())
    );
}
