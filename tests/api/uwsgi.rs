//! A real app server: uWSGI 2.0 + Flask (the image `scripts/test-env` builds with debootstrap),
//! its code on the host volume, behind dockhand's proxy under a steady load. What a user of the
//! app sees across code pushes: failed requests, and which version answers.

use std::time::Duration;

use serde_json::Value;

use crate::support::engine::{unique, Cleanup};
use crate::support::full::{own_repository, publish_for_commit};
use crate::support::helpers::*;
use crate::support::load::{Load, Sample};
use crate::support::uwsgi::*;

const UWSGI_CHAIN_INI: &str = include_str!("../fixtures/uwsgi-app/uwsgi-chain.ini");
/// Requests per second through the proxy while deploying.
const RATE: u32 = 100;

/// A uWSGI app behind the proxy on a fixed container port, with the fast path's check on
/// `/version` expecting the deployed commit; first deployed (full path), the proxy's URL.
async fn serving(origin: &Origin, check_extra: &str) -> (TestApp, Cleanup, String, Value) {
    serving_with(origin, "", "", check_extra).await
}

/// As [`serving`], with lines for the app, its `[apps.container]` and its `[apps.check]`
/// (`"#"` as `check_extra`: no check at all).
async fn serving_with(
    origin: &Origin,
    app_extra: &str,
    container_extra: &str,
    check_extra: &str,
) -> (TestApp, Cleanup, String, Value) {
    let port = free_port();
    let head = origin.commit("v0");
    let check = match check_extra {
        "#" => String::new(),
        extra => format!(
            "[apps.check]\nurl = \"http://127.0.0.1:{port}/version\"\n\
             expect_body_contains = \"{{sha}}\"\n{extra}"
        ),
    };
    let name = unique("uwsgi").replace("dockhand-test-", "");
    let config = format!(
        "{app_extra}[apps.container]\nimage = \"{}\"\nmount = \"/app\"\nport = {port}\n\
         health_path = \"/version\"\nexpect_body_contains = \"{{sha}}\"\n\
         health_interval = \"100ms\"\nhealth_timeout = \"2s\"\nhealth_deadline = \"30s\"\n\
         stop_grace = \"5s\"\n{container_extra}\
         [apps.proxy]\nlisten = \"127.0.0.1:0\"\n{check}",
        image()
    );
    let app = spawn_app_edited(origin, "", &config, |t| {
        t.replace("name = \"web\"", &format!("name = \"{name}\""))
    })
    .await;
    let cleanup = Cleanup::app(&name);
    let first = app.deploy(&head).await;
    assert_eq!(first["path"], "full", "{first:#}");
    let listen = app.get(&format!("/api/apps/{name}")).await["proxy"]["listen"]
        .as_str()
        .unwrap()
        .to_string();
    (app, cleanup, format!("http://{listen}/"), first)
}

/// Every request of the load that did not get a 200 with some version, with when it was sent.
fn failed(samples: &[Sample]) -> Vec<String> {
    let start = samples.first().map(|s| s.sent);
    samples
        .iter()
        .filter_map(|s| {
            let at = s.sent - start.unwrap();
            match &s.answer {
                Ok(body) if body.starts_with('v') => None,
                Ok(body) => Some(format!("at {at:?}: body {body:?}")),
                Err(e) => Some(format!("at {at:?}: {e}")),
            }
        })
        .collect()
}

/// Push `pushes` code changes (VERSION v1.. and a filler file) one after the other under load;
/// returns the load's samples and the deploys. `mixes`: old and new workers answer side by side
/// for a while after the deploy (a chain reload).
async fn push_under_load(
    app: &TestApp,
    origin: &Origin,
    url: &str,
    pushes: usize,
    mixes: bool,
) -> (Vec<Sample>, Vec<Value>) {
    let load = Load::start(url.to_string(), RATE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut deploys = Vec::new();
    for i in 1..=pushes {
        origin.write("VERSION", &format!("v{i}\n"));
        origin.write(
            &format!("static/f{i:03}.txt"),
            &format!("changed in v{i}\n"),
        );
        let head = origin.commit(&format!("v{i}"));
        let deploy = app.deploy_to_end(&head).await;
        let want = format!("v{i}\n");
        if mixes {
            // A chain reload replaces workers one at a time: the new version answers every
            // request only once the last old worker is gone.
            // Pushing again before the chain is over loses the touch: uWSGI takes it while
            // its chain still runs, and the workers not yet replaced keep the old code (README,
            // "Reloading"). Ten answers in a row can all come from one worker, so the chain
            // gets a few seconds more.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut in_a_row = 0;
            while in_a_row < 10 {
                in_a_row = if get_page(url).await.1 == want {
                    in_a_row + 1
                } else {
                    0
                };
                assert!(
                    std::time::Instant::now() < deadline,
                    "{want:?} never answers alone"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        } else {
            // What users get right after the deploy said it is done.
            let answer = get_page(url).await;
            assert_eq!(answer, (200, want), "{deploy:#}");
        }
        deploys.push(deploy);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (samples, _) = load.finish().await;
    (samples, deploys)
}

fn assert_none_failed(samples: &[Sample]) {
    let failed = failed(samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:#?}",
        failed.len(),
        samples.len()
    );
}

fn assert_all_fast_and_succeeded(deploys: &[Value]) {
    for d in deploys {
        assert_eq!(d["status"], "succeeded", "{d:#}");
        assert_eq!(d["path"], "fast", "{d:#}");
    }
}

#[tokio::test]
async fn ten_touch_reloads_of_uwsgi_behind_the_proxy_fail_no_request() {
    let origin = origin_with(UWSGI_INI);
    let (app, _cleanup, url, _) = serving(&origin, "").await;
    let (samples, deploys) = push_under_load(&app, &origin, &url, 10, false).await;
    assert_all_fast_and_succeeded(&deploys);
    // The reload really stalled the app server and the proxy held requests through it.
    let held: u64 = deploys
        .iter()
        .map(|d| {
            let out = step(d, "hold")["output"].as_str().unwrap().to_string();
            out.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert!(held > 0, "no request was ever held: {:#}", deploys[0]);
    assert_none_failed(&samples);
}

#[tokio::test]
async fn ten_chain_reloads_of_uwsgi_behind_the_proxy_fail_no_request() {
    let origin = origin_with(UWSGI_CHAIN_INI);
    let (app, _cleanup, url, _) = serving(&origin, "").await;
    let (samples, deploys) = push_under_load(&app, &origin, &url, 10, true).await;
    assert_all_fast_and_succeeded(&deploys);
    assert_none_failed(&samples);
}

#[tokio::test]
async fn a_broken_push_fails_its_check_fast_is_reverted_and_users_never_see_it() {
    let origin = origin_with(UWSGI_INI);
    // A long deadline: only the wrong-status limit can end the check early.
    let (app, _cleanup, url, _) = serving(&origin, "deadline = \"60s\"\n").await;
    let load = Load::start(url.clone(), RATE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    origin.write("app.py", &format!("{APP_PY}\ndef broken(:\n"));
    origin.write("VERSION", "v1\n");
    let broken = origin.commit("a syntax error");
    let deploy = app.deploy_to_end(&broken).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (samples, _) = load.finish().await;

    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(deploy["reverted"], true, "{deploy:#}");
    let check = step(&deploy, "check");
    let out = check["output"].as_str().unwrap();
    assert!(
        out.contains("wrong status"),
        "the check did not fail fast: {out}"
    );
    assert_eq!(step(&deploy, "verify")["ok"], true, "{deploy:#}");
    // The previous version answers, and no user request met the broken one or the reloads.
    assert_eq!(get_page(&url).await, (200, "v0\n".to_string()));
    let failed = failed(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:#?}\n{:#}",
        failed.len(),
        samples.len(),
        deploy["steps"]
    );
    assert!(samples.iter().all(|s| s.answer.as_deref() != Ok("v1\n")));
}

#[tokio::test]
async fn each_deployed_tree_and_container_knows_what_it_runs() {
    let origin = origin_with(UWSGI_INI);
    let (app, _cleanup, url, first) = serving(&origin, "").await;
    let first_sha = first["to_commit"].as_str().unwrap().to_string();
    let revision = std::fs::read_to_string(app.volume.join("REVISION")).unwrap();
    assert_eq!(
        revision,
        format!("{first_sha}\nref refs/heads/main\ndeploy {}\n", first["id"])
    );
    let version = get_page(&format!("{url}version")).await.1;
    assert!(
        version.contains(&format!("revision={first_sha} ")),
        "{version}"
    );
    // The container was started for the first deploy and says so in its environment.
    assert!(
        version.contains(&format!("commit={first_sha}")),
        "{version}"
    );

    origin.write("VERSION", "v1\n");
    let next = origin.commit("v1");
    let deploy = app.deploy(&next).await;
    let revision = std::fs::read_to_string(app.volume.join("REVISION")).unwrap();
    assert!(revision.starts_with(&format!("{next}\n")), "{revision}");
    assert!(
        revision.ends_with(&format!("deploy {}\n", deploy["id"])),
        "{revision}"
    );
    let version = get_page(&format!("{url}version")).await.1;
    assert!(version.contains(&format!("revision={next} ")), "{version}");
}

/// A chain-reloading uWSGI in the releases layout, `paths` saying where the master and the
/// workers' imports are.
fn releases_ini(paths: &str) -> String {
    format!(
        "[uwsgi]\nplugin = python3\nhttp-socket = 127.0.0.1:$(PORT)\n{paths}module = app:app\n\
         master = true\nprocesses = 2\ndie-on-term = true\nlazy-apps = true\n\
         touch-chain-reload = /app/current/uwsgi.ini\n"
    )
}

/// As the README used to suggest it: `chdir` into `current`. The master resolves it once, so
/// every worker it forks later runs from the release that was live when the container started,
/// whatever `current` says.
const CHDIR_CURRENT: &str = "chdir = /app/current\n";

/// As README now says: the master stays in the volume's root and workers import from the path
/// `/app/current`, resolved at each (re)load.
const PYTHONPATH_CURRENT: &str = "chdir = /app\npythonpath = /app/current\n";

/// The releases layout with `keep_releases = 2`, uWSGI started on `current/uwsgi.ini`.
async fn serving_releases(origin: &Origin, check: bool) -> (TestApp, Cleanup, String, Value) {
    serving_with(
        origin,
        "layout = \"releases\"\nkeep_releases = 2\n",
        "env = { UWSGI_INI = \"/app/current/uwsgi.ini\" }\n",
        if check { "" } else { "#" },
    )
    .await
}

#[tokio::test]
async fn a_uwsgi_master_chdir_into_current_keeps_serving_after_its_release_would_be_pruned() {
    let origin = origin_with(&releases_ini(CHDIR_CURRENT));
    // No check: with this config the new code never loads (the workers import from the
    // master's cwd), which is what README now warns about.
    let (app, _cleanup, url, first) = serving_releases(&origin, false).await;
    let started_on = first["to_commit"].as_str().unwrap().to_string();
    let load = Load::start(url.clone(), RATE);
    for i in 1..=6 {
        origin.write("VERSION", &format!("v{i}\n"));
        let head = origin.commit(&format!("v{i}"));
        let deploy = app.deploy(&head).await;
        assert_eq!(deploy["path"], "fast", "{deploy:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (samples, _) = load.finish().await;
    assert!(
        app.volume.join("releases").join(&started_on).is_dir(),
        "the release the container started on was pruned"
    );
    let kept = std::fs::read_dir(app.volume.join("releases"))
        .unwrap()
        .count();
    assert_eq!(kept, 3, "keep_releases = 2 plus the container's own");
    let failed = failed(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:#?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(20)]
    );
}

#[tokio::test]
async fn ten_chain_reloads_in_the_releases_layout_load_each_new_release_and_fail_no_request() {
    let origin = origin_with(&releases_ini(PYTHONPATH_CURRENT));
    let (app, _cleanup, url, _) = serving_releases(&origin, true).await;
    let (samples, deploys) = push_under_load(&app, &origin, &url, 10, true).await;
    assert_all_fast_and_succeeded(&deploys);
    assert_none_failed(&samples);
}

/// The version number of an answer (`v3\n` → 3).
fn version_of(sample: &Sample) -> Option<u32> {
    sample
        .answer
        .as_ref()
        .ok()?
        .trim()
        .strip_prefix('v')?
        .parse()
        .ok()
}

/// A swapping app (releases layout, `swap = true`, no `touch`) on `image`, first deployed
/// (full path) at `head`: the app, its name and the proxy's URL.
async fn swapping(origin: &Origin, image: &str, head: &str) -> (TestApp, Cleanup, String) {
    swapping_with(origin, image, head, "").await
}

/// As [`swapping`], with `container_extra` lines in `[apps.container]`.
async fn swapping_with(
    origin: &Origin,
    image: &str,
    head: &str,
    container_extra: &str,
) -> (TestApp, Cleanup, String) {
    let name = unique("swap").replace("dockhand-test-", "");
    let config = format!(
        "layout = \"releases\"\nswap = true\n\
         [apps.container]\nimage = \"{image}\"\nmount = \"/app\"\n\
         health_path = \"/version\"\nexpect_body_contains = \"{{sha}}\"\n\
         health_interval = \"100ms\"\nhealth_timeout = \"2s\"\nhealth_deadline = \"30s\"\nstop_grace = \"5s\"\n\
         {container_extra}[apps.proxy]\nlisten = \"127.0.0.1:0\"\n"
    );
    first_deployed(origin, &name, &config, false, head).await
}

/// The app `name` with `config` (`touch`: keep the template's `touch = "uwsgi.ini"`), first
/// deployed (full path) at `head`: the app, its cleanup and the proxy's URL.
async fn first_deployed(
    origin: &Origin,
    name: &str,
    config: &str,
    touch: bool,
    head: &str,
) -> (TestApp, Cleanup, String) {
    let app = spawn_app_edited(origin, "", config, |t| {
        let t = t.replace("name = \"web\"", &format!("name = \"{name}\""));
        match touch {
            true => t,
            false => t.replace("touch = \"uwsgi.ini\"\n", ""),
        }
    })
    .await;
    let cleanup = Cleanup::app(name);
    assert_eq!(app.deploy(head).await["path"], "full");
    let url = format!(
        "http://{}/",
        app.get(&format!("/api/apps/{name}")).await["proxy"]["listen"]
            .as_str()
            .unwrap()
    );
    (app, cleanup, url)
}

fn assert_no_failures_and_no_mix(samples: &[Sample]) {
    assert_none_failed(samples);
    // Each container serves its own release only: by the time they were sent, answers never
    // go back to an older version once a newer one answered.
    let versions: Vec<u32> = samples.iter().filter_map(version_of).collect();
    let back = versions.windows(2).filter(|w| w[1] < w[0]).count();
    assert_eq!(back, 0, "old and new versions mixed: {versions:?}");
}

#[tokio::test]
async fn ten_swaps_fail_no_request_and_never_mix_versions() {
    let origin = origin_with(UWSGI_INI);
    let head = origin.commit("v0");
    let (app, cleanup, url) = swapping(&origin, &image(), &head).await;
    let (samples, deploys) = push_under_load(&app, &origin, &url, 10, false).await;
    assert_all_fast_and_succeeded(&deploys);
    for d in &deploys {
        let stages = stages(d);
        for stage in ["start", "health", "switch", "drain", "retire"] {
            assert!(
                stages.iter().any(|s| s == stage),
                "no {stage} in {stages:?}"
            );
        }
        assert!(
            !stages.iter().any(|s| s == "pull"),
            "a swap pulled: {stages:?}"
        );
    }
    assert_no_failures_and_no_mix(&samples);
    // Only the live container is left.
    let containers = crate::support::engine::app_containers(&cleanup.value).await;
    assert_eq!(containers.len(), 1, "{containers:?}");
}

#[tokio::test]
async fn a_full_deploy_that_also_touches_uwsgi_ini_never_changes_the_old_containers_tree() {
    // Every commit has its own image tag: v0 on uwsgi:1, the next on uwsgi:2 (DEPS_VERSION=2).
    let origin = origin_with(UWSGI_INI);
    let head = origin.commit("v0");
    let repo = own_repository("uwsgi-full");
    let v2 = std::env::var("DOCKHAND_TEST_IMAGE_UWSGI2").expect("DOCKHAND_TEST_IMAGE_UWSGI2");
    publish_for_commit(&image(), &repo, &head);
    let (app, _cleanup, url) = swapping(&origin, &format!("{repo}:{{short_sha}}"), &head).await;

    let load = Load::start(url.clone(), RATE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    origin.write("VERSION", "v1\n");
    origin.write("requirements.txt", "flask\n");
    origin.write("uwsgi.ini", &format!("{UWSGI_INI}; and a new setting\n"));
    let next = origin.commit("v1: new dependencies");
    publish_for_commit(&v2, &repo, &next);
    let deploy = app.deploy(&next).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (samples, _) = load.finish().await;

    assert_eq!(deploy["path"], "full", "{deploy:#}");
    assert_no_failures_and_no_mix(&samples);
    let version = get_page(&format!("{url}version")).await.1;
    assert!(
        version.contains("version=v1 ") && version.contains("deps=2"),
        "{version}"
    );
}

#[tokio::test]
async fn the_watch_window_reverts_a_version_that_starts_failing_after_it_went_live() {
    let origin = origin_with(UWSGI_INI);
    let (app, _cleanup, url, first) = serving(&origin, "watch = \"20s\"\n").await;
    let name = first["app"].as_str().unwrap().to_string();
    origin.write("VERSION", "v1\n");
    origin.write("FAIL_AFTER", "4\n");
    let late = origin.commit("v1, which breaks 4 s after it starts");
    let id = app.push(&late).await;
    // While watched the new version is live (app_state names it) and the deploy is running.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let deploy = app.get(&format!("/api/deploys/{id}")).await;
        let watching = deploy["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "watch");
        if watching {
            assert_eq!(deploy["status"], "running", "{deploy:#}");
            let state = app.get(&format!("/api/apps/{name}")).await;
            assert_eq!(state["deployed"]["commit"], late.as_str(), "{state:#}");
            assert_eq!(get_page(&url).await, (200, "v1\n".to_string()));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{deploy:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(deploy["reverted"], true, "{deploy:#}");
    let watch = step(&deploy, "watch");
    assert_eq!(watch["ok"], false, "{deploy:#}");
    assert!(
        watch["output"]
            .as_str()
            .unwrap()
            .contains("after going live"),
        "{watch:#}"
    );
    assert_eq!(step(&deploy, "verify")["ok"], true, "{deploy:#}");
    assert_eq!(get_page(&url).await, (200, "v0\n".to_string()));
    let state = app.get(&format!("/api/apps/{name}")).await;
    assert_eq!(state["deployed"]["commit"], first["to_commit"], "{state:#}");
}

/// An app.py that only imports on the new image (DEPS_VERSION=2): new code that needs new
/// dependencies, as a dependency push brings.
fn app_py_needing_new_deps() -> String {
    APP_PY.replace(
        "app = Flask(__name__)",
        "if os.environ.get(\"DEPS_VERSION\") != \"2\":\n    \
         raise ImportError(\"this code needs the new image's dependencies\")\n\n\
         app = Flask(__name__)",
    )
}

/// An in-place app (the volume shared by every container, `touch = "uwsgi.ini"`) on the
/// image `{repo}:{short_sha}`, start-first behind the proxy, first deployed at `head`.
async fn in_place_full(origin: &Origin, repo: &str, head: &str) -> (TestApp, Cleanup, String) {
    in_place_full_with(origin, repo, head, "").await
}

/// As [`in_place_full`], with `container_extra` lines in `[apps.container]`.
async fn in_place_full_with(
    origin: &Origin,
    repo: &str,
    head: &str,
    container_extra: &str,
) -> (TestApp, Cleanup, String) {
    let name = unique("inplace").replace("dockhand-test-", "");
    let config = format!(
        "[apps.container]\nimage = \"{repo}:{{short_sha}}\"\nmount = \"/app\"\n\
         health_path = \"/version\"\nexpect_body_contains = \"{{sha}}\"\n\
         health_interval = \"100ms\"\nhealth_timeout = \"2s\"\nhealth_deadline = \"6s\"\n\
         stop_grace = \"5s\"\n{container_extra}[apps.proxy]\nlisten = \"127.0.0.1:0\"\n"
    );
    first_deployed(origin, &name, &config, true, head).await
}

/// Under load, push a commit with new code needing new dependencies that also changes
/// uwsgi.ini (the old container's touch-reload file), its image being `image`.
async fn dependency_push_under_load(
    app: &TestApp,
    origin: &Origin,
    repo: &str,
    image: &str,
    url: &str,
) -> (Vec<Sample>, Value) {
    let load = Load::start(url.to_string(), RATE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    origin.write("VERSION", "v1\n");
    origin.write("app.py", &app_py_needing_new_deps());
    origin.write("uwsgi.ini", &format!("{UWSGI_INI}; and a new setting\n"));
    let next = origin.commit("v1: needs the new dependencies");
    publish_for_commit(image, repo, &next);
    let deploy = app.deploy_to_end(&next).await;
    // uWSGI looks at its touch-reload file about once a second: an old container that saw
    // the new tree would reload into code its image cannot run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (samples, _) = load.finish().await;
    (samples, deploy)
}

#[tokio::test]
async fn a_full_deploy_of_an_in_place_app_never_runs_the_new_code_in_the_old_container() {
    let origin = origin_with(UWSGI_INI);
    let head = origin.commit("v0");
    let repo = own_repository("uwsgi-inplace");
    publish_for_commit(&image(), &repo, &head);
    let (app, _cleanup, url) = in_place_full(&origin, &repo, &head).await;
    let v2 = std::env::var("DOCKHAND_TEST_IMAGE_UWSGI2").expect("DOCKHAND_TEST_IMAGE_UWSGI2");

    let (samples, deploy) = dependency_push_under_load(&app, &origin, &repo, &v2, &url).await;

    assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
    assert_eq!(deploy["path"], "full", "{deploy:#}");
    assert_no_failures_and_no_mix(&samples);
    assert_eq!(step(&deploy, "pause-old")["ok"], true, "{deploy:#}");
    let version = get_page(&format!("{url}version")).await.1;
    assert!(
        version.contains("version=v1 ") && version.contains("deps=2"),
        "{version}"
    );
    // What it cost: the trial while the old container served, the hold users waited.
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    println!(
        "trial {} ms + {} ms, hold {} ms; slowest answer {slowest:?} of {}",
        step(&deploy, "trial")["duration_ms"],
        step(&deploy, "trial-health")["duration_ms"],
        step(&deploy, "hold")["duration_ms"],
        samples.len()
    );
}

#[tokio::test]
async fn a_full_deploy_of_an_in_place_app_that_fails_its_trial_never_touches_the_old_container() {
    let origin = origin_with(UWSGI_INI);
    let head = origin.commit("v0");
    let repo = own_repository("uwsgi-inplace-bad");
    publish_for_commit(&image(), &repo, &head);
    let (app, _cleanup, url) = in_place_full(&origin, &repo, &head).await;

    // The new commit's image is the old one: its new code cannot import, it never gets healthy.
    let (samples, deploy) = dependency_push_under_load(&app, &origin, &repo, &image(), &url).await;

    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_none_failed(&samples);
    let versions: Vec<u32> = samples.iter().filter_map(version_of).collect();
    assert!(versions.iter().all(|v| *v == 0), "{versions:?}");
    // The trial on a copy of the tree failed: the old container was never paused, its tree
    // never written.
    assert_eq!(step(&deploy, "trial-health")["ok"], false, "{deploy:#}");
    let stages = stages(&deploy);
    for never in ["pause-old", "sync", "start"] {
        assert!(!stages.iter().any(|s| s == never), "{stages:?}");
    }
    let version = get_page(&format!("{url}version")).await.1;
    assert!(
        version.contains("version=v0 ") && version.contains("deps=1"),
        "{version}"
    );
}

#[tokio::test]
async fn a_full_deploy_that_fails_after_its_trial_puts_the_tree_back_and_resumes_the_old_container()
{
    let origin = origin_with(UWSGI_INI);
    let head = origin.commit("v0");
    let repo = own_repository("uwsgi-inplace-resume");
    publish_for_commit(&image(), &repo, &head);
    let (app, _cleanup, url) = in_place_full(&origin, &repo, &head).await;
    let v2 = std::env::var("DOCKHAND_TEST_IMAGE_UWSGI2").expect("DOCKHAND_TEST_IMAGE_UWSGI2");
    // A file only the volume has (the trial's copy of the tree has just the commit's): the
    // new code refuses to start next to it, so the trial passes and the real start fails.
    std::fs::write(app.volume.join("POISON"), "left by an operator\n").unwrap();
    let poisoned = APP_PY.replace(
        "app = Flask(__name__)",
        "if os.path.exists(os.path.join(HERE, \"POISON\")):\n    \
         raise ImportError(\"POISON is here\")\n\napp = Flask(__name__)",
    );

    let load = Load::start(url.clone(), RATE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    origin.write("VERSION", "v1\n");
    origin.write("app.py", &poisoned);
    origin.write("uwsgi.ini", &format!("{UWSGI_INI}; and a new setting\n"));
    let next = origin.commit("v1: fails next to POISON");
    publish_for_commit(&v2, &repo, &next);
    let deploy = app.deploy_to_end(&next).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (samples, _) = load.finish().await;

    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_none_failed(&samples);
    let versions: Vec<u32> = samples.iter().filter_map(version_of).collect();
    assert!(versions.iter().all(|v| *v == 0), "{versions:?}");
    assert_eq!(
        stages_from(&deploy, "trial-health"),
        [
            "trial-health",
            "hold",
            "switch",
            "drain",
            "pause-old",
            "sync",
            "start",
            "health",
            "restore",
            "resume-old",
            "switch"
        ],
        "{deploy:#}"
    );
    let version = get_page(&format!("{url}version")).await.1;
    assert!(
        version.contains("version=v0 ") && version.contains("deps=1"),
        "{version}"
    );
}

/// Push `file` (FAIL_AFTER or FAIL_INDEX_AFTER: the new version breaks 3 s after it starts) to
/// a swapping app watched for 20 s, under load; the deploy, the samples, and the app's state.
async fn a_swap_that_breaks_while_watched(file: &str) -> (Value, Vec<Sample>, Value, String) {
    let origin = origin_with(UWSGI_INI);
    let head = origin.commit("v0");
    let (app, cleanup, url) = swapping_with(&origin, &image(), &head, "watch = \"20s\"\n").await;
    let before = app.get(&format!("/api/apps/{}", cleanup.value)).await;
    let load = Load::start(url.clone(), RATE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    origin.write("VERSION", "v1\n");
    origin.write(file, "3\n");
    let deploy = app
        .deploy_to_end(&origin.commit("v1, which breaks 3 s after it starts"))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (samples, _) = load.finish().await;
    let after = app.get(&format!("/api/apps/{}", cleanup.value)).await;
    assert_eq!(
        after["container"]["id"], before["container"]["id"],
        "app_state names the old container again: {after:#}"
    );
    assert_eq!(after["deployed"]["commit"], head.as_str(), "{after:#}");
    assert_eq!(get_page(&url).await, (200, "v0\n".to_string()));
    let containers = crate::support::engine::app_containers(&cleanup.value).await;
    assert_eq!(
        containers.len(),
        1,
        "only the old container is left: {containers:?}"
    );
    (deploy, samples, after, url)
}

/// The deploy's stages from the first `stage` on.
fn stages_from(deploy: &Value, stage: &str) -> Vec<String> {
    stages(deploy)
        .into_iter()
        .skip_while(|s| s != stage)
        .collect()
}

/// The deploy failed its watch (the step saying `why`) and switched back; prints how many
/// requests of the load failed meanwhile.
fn assert_switched_back(deploy: &Value, samples: &[Sample], why: &str) {
    let watch = step(deploy, "watch")["output"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(watch.contains(why), "{deploy:#}");
    let failed = failed(samples);
    println!(
        "{} of {} requests failed between the break and the switch back",
        failed.len(),
        samples.len()
    );
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert_eq!(deploy["reverted"], true, "{deploy:#}");
    assert_eq!(
        stages_from(deploy, "watch"),
        [
            "watch",
            "hold",
            "switch",
            "drain",
            "stop-new",
            "restore",
            "resume-old",
            "switch",
            "retire"
        ],
        "{deploy:#}"
    );
}

#[tokio::test]
async fn a_swap_whose_new_version_fails_its_probes_while_watched_switches_back_to_the_kept_container(
) {
    let (deploy, samples, _, _) = a_swap_that_breaks_while_watched("FAIL_AFTER").await;
    assert_switched_back(&deploy, &samples, "probes in a row");
}

#[tokio::test]
async fn the_watch_counts_the_proxys_5xx_and_switches_back_when_most_of_the_new_versions_answers_fail(
) {
    // Only `/` breaks: the health probe (`/version`) keeps passing; the users' requests do not.
    let (deploy, samples, _, _) = a_swap_that_breaks_while_watched("FAIL_INDEX_AFTER").await;
    assert_switched_back(&deploy, &samples, "requests with 5xx");
}

#[tokio::test]
async fn a_watched_full_deploy_of_an_in_place_app_that_breaks_puts_the_tree_back_before_the_old_container_resumes(
) {
    let origin = origin_with(UWSGI_INI);
    let head = origin.commit("v0");
    let repo = own_repository("uwsgi-inplace-watch");
    publish_for_commit(&image(), &repo, &head);
    let (app, cleanup, url) = in_place_full_with(&origin, &repo, &head, "watch = \"20s\"\n").await;
    let v2 = std::env::var("DOCKHAND_TEST_IMAGE_UWSGI2").expect("DOCKHAND_TEST_IMAGE_UWSGI2");

    let load = Load::start(url.clone(), RATE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    origin.write("VERSION", "v1\n");
    origin.write("app.py", &app_py_needing_new_deps());
    origin.write("FAIL_AFTER", "3\n");
    let next = origin.commit("v1: new dependencies, breaks 3 s after it starts");
    publish_for_commit(&v2, &repo, &next);
    let deploy = app.deploy_to_end(&next).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (samples, _) = load.finish().await;

    assert_switched_back(&deploy, &samples, "probes in a row");
    // The old container resumed on its own commit: had it seen the new tree it could not
    // import (the new code needs the new image), and every answer since would be a 500.
    assert_eq!(get_page(&url).await, (200, "v0\n".to_string()));
    let version = get_page(&format!("{url}version")).await.1;
    assert!(
        version.contains("version=v0 ") && version.contains("deps=1"),
        "{version}"
    );
    assert!(
        !app.volume.join("FAIL_AFTER").exists(),
        "the tree is back on v0"
    );
    let containers = crate::support::engine::app_containers(&cleanup.value).await;
    assert_eq!(containers.len(), 1, "{containers:?}");
    let late: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent > samples.last().unwrap().sent - Duration::from_secs(2))
        .collect();
    assert!(
        late.iter().all(|s| s.answer.as_deref() == Ok("v0\n")),
        "after the switch back only v0 answers"
    );
}
