//! Shared test setup: a real origin repository, a dockhand on port 0 with its own state dir
//! and SQLite file, and signed webhook deliveries.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dockhand::config::Config;
use dockhand::startup::App;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &str = "It's a Secret to Everybody";
pub const REPOSITORY: &str = "acme/web";

/// `sha256=<hex>` for `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A unique `X-GitHub-Delivery` value.
pub fn delivery_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A GitHub push payload (only the fields GitHub always sends that dockhand reads).
pub fn push_payload(git_ref: &str, after: &str, forced: bool) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": git_ref,
        "before": "0".repeat(40),
        "after": after,
        "created": false,
        "deleted": false,
        "forced": forced,
        "repository": { "full_name": REPOSITORY, "clone_url": "https://github.com/acme/web.git" },
        "pusher": { "name": "octocat" },
        "head_commit": { "message": "test" },
        "commits": []
    }))
    .unwrap()
}

/// A bare origin and a work clone to make commits in, both real git repositories.
pub struct Origin {
    _dir: TempDir,
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl Origin {
    /// An origin whose `main` has one commit with an app and its `uwsgi.ini`.
    pub fn new() -> Origin {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("origin.git");
        let work = dir.path().join("work");
        git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(
            dir.path(),
            &["init", "-q", "-b", "main", work.to_str().unwrap()],
        );
        git(&work, &["config", "user.email", "dev@example.com"]);
        git(&work, &["config", "user.name", "Dev"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let origin = Origin {
            _dir: dir,
            bare,
            work,
        };
        origin.write("uwsgi.ini", "[uwsgi]\nmodule = app\n");
        origin.write("app.py", "VERSION = 1\n");
        origin.write("static/style.css", "body {}\n");
        origin.commit("initial");
        origin
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.work.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        std::fs::write(path, content).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        git(&self.work, &["rm", "-q", "-r", rel]);
    }

    pub fn symlink(&self, rel: &str, target: &str) {
        let path = self.work.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(target, path).unwrap();
    }

    pub fn set_exec(&self, rel: &str, exec: bool) {
        let path = self.work.join(rel);
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Commit everything and push `main`; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(
            &self.work,
            &["push", "-q", "-f", "origin", "HEAD:refs/heads/main"],
        );
        self.head()
    }

    pub fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Make and push an annotated tag on HEAD; returns the tag object's id.
    pub fn annotated_tag(&self, name: &str) -> String {
        git(&self.work, &["tag", "-a", "-m", "release", name]);
        git(
            &self.work,
            &["push", "-q", "origin", &format!("refs/tags/{name}")],
        );
        git(&self.work, &["rev-parse", &format!("refs/tags/{name}")])
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.work, args)
    }

    /// The files of `commit` as dockhand should have written them.
    pub fn snapshot(&self, commit: &str) -> BTreeMap<String, Entry> {
        let out = tempfile::tempdir().unwrap();
        let archive = Command::new("git")
            .arg("-C")
            .arg(&self.work)
            .args(["archive", "--format=tar", commit])
            .output()
            .unwrap();
        assert!(archive.status.success());
        let mut tar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(out.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        tar.stdin
            .take()
            .unwrap()
            .write_all(&archive.stdout)
            .unwrap();
        assert!(tar.wait().unwrap().success());
        snapshot(out.path())
    }
}

/// Run git in `dir`; panics with its stderr on failure; returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One path of a directory tree, as a user would compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File { content: Vec<u8>, exec: bool },
    Symlink(PathBuf),
}

/// Every file and symlink under `root` (directories implied), keyed by relative path.
pub fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, Entry::Symlink(std::fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                walk(root, &path, out);
            } else {
                let exec = meta.permissions().mode() & 0o111 != 0;
                out.insert(
                    rel,
                    Entry::File {
                        content: std::fs::read(&path).unwrap(),
                        exec,
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    // dockhand's own file in a deployed tree (tests/api/revision.rs checks it): the rest is
    // the commit's.
    out.remove("REVISION");
    out
}

/// A running dockhand with one app, `web`, deploying `origin` into its own volume.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    pub dir: TempDir,
    pub volume: PathBuf,
    /// The API token `get` (and so `wait_deploy`, `deploy`) sends, once tokens are configured.
    pub bearer: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// `poll = "0s"` for an app the test drives by webhooks and API calls, unless its extra lines
/// set `poll` themselves: a poll at startup would deploy the origin's tip on its own.
pub const NO_POLL: &str = "poll = \"0s\"\n";

/// The config text of the test app; `app_extra` lines are appended to the `[[apps]]` table.
/// The app does not poll unless `app_extra` sets `poll`.
pub fn config_text(dir: &Path, origin: &Origin, server_extra: &str, app_extra: &str) -> String {
    let no_poll = match app_extra.contains("poll =") {
        true => "",
        false => NO_POLL,
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{state}\"\n{server_extra}\n\
         [[apps]]\nname = \"web\"\nrepo = \"{repo}\"\nrepository = \"{REPOSITORY}\"\nbranch = \"main\"\n\
         secret_file = \"{secret}\"\nvolume = \"{volume}\"\ntouch = \"uwsgi.ini\"\n{no_poll}{app_extra}\n",
        state = dir.join("state").display(),
        repo = origin.bare.display(),
        secret = dir.join("secret").display(),
        volume = dir.join("volume").display(),
    )
}

/// Start dockhand in-process for `origin` with extra config lines.
pub async fn spawn_app_with(origin: &Origin, server_extra: &str, app_extra: &str) -> TestApp {
    spawn_app_edited(origin, server_extra, app_extra, |t| t).await
}

/// Start dockhand in-process with the config text passed through `edit` first.
pub async fn spawn_app_edited(
    origin: &Origin,
    server_extra: &str,
    app_extra: &str,
    edit: impl FnOnce(String) -> String,
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).unwrap();
    let text = edit(config_text(dir.path(), origin, server_extra, app_extra));
    let config_path = dir.path().join("dockhand.toml");
    std::fs::write(&config_path, &text).unwrap();
    start(dir, config_path).await
}

/// Start dockhand in-process for `origin`.
pub async fn spawn_app(origin: &Origin) -> TestApp {
    spawn_app_with(origin, "", "").await
}

async fn start(dir: TempDir, config_path: PathBuf) -> TestApp {
    let (config, _) = Config::load(&config_path).unwrap();
    let volume = config.apps[0].volume.clone();
    let app = App::build(config).await.unwrap();
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        client: crate::support::helpers::client(),
        dir,
        volume,
        bearer: None,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST a JSON delivery to `path` with the given event, body and signature.
    pub async fn deliver(
        &self,
        path: &str,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: &str,
    ) -> reqwest::Response {
        self.deliver_as(path, event, delivery, body, signature, "application/json")
            .await
    }

    /// POST `body` as a new delivery of `event`, correctly signed.
    pub async fn send_signed(&self, path: &str, event: &str, body: Vec<u8>) -> reqwest::Response {
        let signature = sign(SECRET, &body);
        self.deliver(path, event, &delivery_id(), body, &signature)
            .await
    }

    /// POST a delivery with an explicit content type.
    pub async fn deliver_as(
        &self,
        path: &str,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: &str,
        content_type: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-GitHub-Hook-ID", "42")
            .header("X-Hub-Signature-256", signature)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A correctly signed push of `after` to `git_ref`, as a new delivery.
    pub async fn push_ref(&self, git_ref: &str, after: &str, forced: bool) -> reqwest::Response {
        let body = push_payload(git_ref, after, forced);
        let signature = sign(SECRET, &body);
        self.deliver("/hooks/github", "push", &delivery_id(), body, &signature)
            .await
    }

    /// A push of `after` to main (`forced` as the payload says), which must be queued; the
    /// deploy's id.
    pub async fn push_queued(&self, after: &str, forced: bool) -> i64 {
        let response = self.push_ref("refs/heads/main", after, forced).await;
        assert_eq!(response.status(), 202);
        response.json::<serde_json::Value>().await.unwrap()["deploy_id"]
            .as_i64()
            .unwrap()
    }

    /// Deploy the origin's head, then a second commit (`VERSION = 2`); both commits.
    pub async fn deployed_twice(&self, origin: &Origin) -> (String, String) {
        let old = origin.head();
        self.deploy(&old).await;
        origin.write("app.py", "VERSION = 2\n");
        let new = origin.commit("v2");
        self.deploy(&new).await;
        (old, new)
    }

    /// Push `after` to main and return the queued deploy's id.
    pub async fn push(&self, after: &str) -> i64 {
        let response = self.push_ref("refs/heads/main", after, false).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        body["deploy_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no deploy id in {body}"))
    }

    /// `http://…` of app `web`'s proxy, as the API shows it.
    pub async fn proxy_url(&self) -> String {
        let listen = self.get("/api/apps/web").await["proxy"]["listen"]
            .as_str()
            .unwrap()
            .to_string();
        format!("http://{listen}")
    }

    pub async fn get(&self, path: &str) -> Value {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Wait (up to 60 s) until the deploy has a terminal status; returns it with its steps.
    pub async fn wait_deploy(&self, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let deploy = self.get(&format!("/api/deploys/{id}")).await;
            let status = deploy["status"].as_str().unwrap().to_string();
            if status != "queued" && status != "running" {
                return deploy;
            }
            assert!(
                Instant::now() < deadline,
                "deploy {id} still {status}: {deploy}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Push `after`, wait, and assert the deploy succeeded; returns it.
    pub async fn deploy(&self, after: &str) -> Value {
        let deploy = self.deploy_to_end(after).await;
        assert_eq!(deploy["status"], "succeeded", "{deploy:#}");
        deploy
    }

    /// Push `after` and wait until its deploy is over, whatever its status; returns it.
    pub async fn deploy_to_end(&self, after: &str) -> Value {
        let id = self.push(after).await;
        self.wait_deploy(id).await
    }

    /// Every deploy of app `web`, newest first.
    pub async fn deploys(&self) -> Vec<Value> {
        self.get("/api/apps/web/deploys?limit=1000").await["deploys"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn volume_snapshot(&self) -> BTreeMap<String, Entry> {
        snapshot(&self.volume)
    }

    /// Stop the server and start a new one on the same config, state and volume.
    /// The new server keeps this one's bearer token.
    pub async fn restart(mut self) -> TestApp {
        self.halt().await;
        let config_path = self.dir.path().join("dockhand.toml");
        let mut app = start(self.dir, config_path).await;
        app.bearer = self.bearer;
        app
    }

    /// Stop the server and wait for it.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

/// Send `request` and read its answer as JSON, whatever its status.
pub async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// `GET url`: its status and body text.
pub async fn get_page(url: &str) -> (u16, String) {
    let response = client().get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The first step of a deploy with this stage name.
pub fn step<'a>(deploy: &'a Value, stage: &str) -> &'a Value {
    deploy["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage)
        .unwrap_or_else(|| panic!("no {stage} step in {deploy:#}"))
}

/// The stage names of a deploy's steps, in order.
pub fn stages(deploy: &Value) -> Vec<String> {
    deploy["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect()
}

/// An HTTP client whose idle connections expire before dockhand's 10 s header-read timeout
/// closes them, so a POST never races a server-side close on a reused connection.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A dockhand reached only over HTTP on a loopback port: a separate process or a container.
pub struct Remote {
    pub base: String,
    pub client: reqwest::Client,
}

impl Remote {
    pub fn on_port(port: u16) -> Remote {
        Remote {
            base: format!("http://127.0.0.1:{port}"),
            client: client(),
        }
    }

    /// Whether `/healthz` answers within `deadline`.
    pub async fn up_within(&self, deadline: Duration) -> bool {
        let deadline = Instant::now() + deadline;
        while self
            .client
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .is_err()
        {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// A signed push of `after` to main; returns the queued deploy's id.
    pub async fn push(&self, after: &str) -> i64 {
        let body = push_payload("refs/heads/main", after, false);
        let response = self
            .client
            .post(format!("{}/hooks/github", self.base))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", delivery_id())
            .header("X-Hub-Signature-256", sign(SECRET, &body))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        response.json::<Value>().await.unwrap()["deploy_id"]
            .as_i64()
            .unwrap()
    }

    pub async fn deploy(&self, id: i64) -> Value {
        json_of(self.client.get(format!("{}/api/deploys/{id}", self.base))).await
    }

    /// Wait (120 s) until the deploy has a terminal status.
    pub async fn wait_terminal(&self, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let d = self.deploy(id).await;
            if d["status"] != "queued" && d["status"] != "running" {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "deploy {id} never finished: {d:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
