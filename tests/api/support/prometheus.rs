//! A real Prometheus (Debian's 2.42, installed by `scripts/test-env`) on a loopback port,
//! scraping one target every second, queried through its HTTP API; and `promtool`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::helpers::{free_port, json_of};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// `path`, or a panic saying how to get it: these tests never skip.
pub fn require(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.is_file(),
        "{path} is missing: run scripts/test-env (as root), which installs Debian's prometheus \
         package (prometheus and promtool)"
    );
    p
}

/// A Prometheus process, killed when dropped.
pub struct Prometheus {
    child: Child,
    pub url: String,
    dir: TempDir,
    client: reqwest::Client,
}

impl Prometheus {
    /// Start Prometheus scraping `target` (`host:port`, loopback) every second, sending
    /// `token` as a bearer token when given; returns once its API answers.
    pub async fn scraping(target: &str, token: Option<&str>) -> Prometheus {
        let binary = require(PROMETHEUS);
        let dir = tempfile::tempdir().unwrap();
        let authorization = token.map_or(String::new(), |t| {
            format!("    authorization:\n      type: Bearer\n      credentials: \"{t}\"\n")
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: dockhand\n{authorization}\
             \x20   static_configs:\n      - targets: [\"{target}\"]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            client: reqwest::Client::new(),
        };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self
                .client
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not get ready in 30 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/query?query=…`: the whole JSON answer.
    pub async fn query(&self, promql: &str) -> Value {
        let request = self.client.get(format!("{}/api/v1/query", self.url));
        json_of(request.query(&[("query", promql)])).await
    }

    /// Poll `promql` until the first sample's value satisfies `good`, at most `within`; the
    /// answer that did. Fails naming the query and its last answer.
    pub async fn wait_for(
        &self,
        promql: &str,
        within: Duration,
        good: impl Fn(f64) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let answer = self.query(promql).await;
            if first_value(&answer).is_some_and(&good) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never answered {promql:?} as wanted within {within:?}; last answer: \
                 {answer}\nprometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of an instant query's first sample (`data.result[0].value[1]`).
pub fn first_value(answer: &Value) -> Option<f64> {
    answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
}

/// `promtool check rules FILE`: its exit status and output.
pub fn check_rules(file: &Path) -> (bool, String) {
    let out = Command::new(require(PROMTOOL))
        .args(["check", "rules"])
        .arg(file)
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
