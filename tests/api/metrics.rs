//! `GET /metrics` of a real dockhand: its own listener and bearer token, OpenMetrics text, a
//! real Prometheus scraping it while a real deploy runs and requests go through the proxy, and
//! the shipped alerting rules (`promtool`) and Grafana dashboard held to the metrics it serves.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::helpers::*;
use crate::support::prometheus::{check_rules, first_value, Prometheus};

const TOKEN_VAR: &str = "DOCKHAND_TEST_METRICS_TOKEN_API";
const TOKEN: &str = "scrape-token-0123456789abcdef";

/// A loopback upstream that answers every request `200 ok`.
async fn ok_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// dockhand with `/metrics` on a listener of its own behind [`TOKEN`], and app `web` behind
/// its proxy (a fixed upstream).
struct Scraped {
    app: TestApp,
    origin: Origin,
    /// `127.0.0.1:port` of the metrics listener.
    metrics: String,
    /// `http://…` of the app's proxy.
    proxy: String,
}

async fn spawn_scraped() -> Scraped {
    std::env::set_var(TOKEN_VAR, TOKEN);
    let upstream = ok_upstream().await;
    let metrics = format!("127.0.0.1:{}", free_port());
    let origin = Origin::new();
    // The upstream also takes the deploys' notifications (it answers 200 to anything).
    let notify =
        format!("\n[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://{upstream}/\"\n");
    let app = spawn_app_edited(
        &origin,
        &format!("metrics_listen = \"{metrics}\"\nmetrics_token_env = \"{TOKEN_VAR}\""),
        &format!("[apps.proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n"),
        |text| text + &notify,
    )
    .await;
    let proxy = app.proxy_url().await;
    Scraped {
        app,
        origin,
        metrics,
        proxy,
    }
}

/// `GET url`, with `token` as the bearer token if any.
async fn get_with(url: &str, token: Option<&str>) -> reqwest::Response {
    let request = client().get(url);
    let request = match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    };
    request.send().await.unwrap()
}

impl Scraped {
    /// `GET /metrics` with the token: the text.
    async fn scrape(&self) -> String {
        let response = get_with(&format!("http://{}/metrics", self.metrics), Some(TOKEN)).await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// A deploy of the origin's head (succeeded) and `n` requests through the proxy (200).
    async fn deploy_and_proxy(&self, n: usize) {
        self.app.deploy(&self.origin.head()).await;
        for _ in 0..n {
            let (status, body) = get_page(&format!("{}/", self.proxy)).await;
            assert_eq!((status, body.as_str()), (200, "ok"));
        }
    }
}

#[tokio::test]
async fn the_metrics_listener_wants_the_bearer_token_and_serves_nothing_but_metrics() {
    let s = spawn_scraped().await;
    let url = format!("http://{}/metrics", s.metrics);

    for (token, says) in [
        (None, "GET /metrics needs Authorization: Bearer <token>"),
        (Some("not-it"), "invalid metrics token"),
    ] {
        let refused = get_with(&url, token).await;
        assert_eq!(refused.status(), 401, "token {token:?}");
        assert!(refused.headers().contains_key("www-authenticate"));
        let body: Value = refused.json().await.unwrap();
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "token {token:?}: {body}");
    }

    let good = get_with(&url, Some(TOKEN)).await;
    assert_eq!(good.status(), 200);
    assert_eq!(
        good.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );

    // Only /metrics there, and /metrics not on the API's listener any more.
    for path in ["/api/apps", "/healthz", "/hooks/github"] {
        let r = get_with(&format!("http://{}{path}", s.metrics), Some(TOKEN)).await;
        assert_eq!(r.status(), 404, "{path} on the metrics listener");
    }
    let on_api = get_with(&s.app.url("/metrics"), None).await;
    assert_eq!(on_api.status(), 404);
}

#[tokio::test]
async fn without_a_metrics_listener_or_token_metrics_are_open_on_the_api_listener() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let (status, text) = get_page(&app.url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("dockhand_queue_depth{app=\"web\"} 0"),
        "{text}"
    );
}

/// Every sample line of OpenMetrics text is `name{labels} value` (or `name value`), and the
/// text ends with `# EOF`; the names of its samples.
fn parse_openmetrics(text: &str) -> BTreeSet<String> {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{line:?}: the value {value:?} is not a number"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line:?}: not a metric name"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line:?}: labels not in braces"
            );
        }
        names.insert(name.to_string());
    }
    names
}

/// The `dockhand_*` names a PromQL text (or any text) mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("dockhand_") {
        let boundary = text[..i]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if boundary {
            names.insert(name);
        }
    }
    names
}

#[tokio::test]
async fn the_shipped_dashboard_and_alerts_name_only_metrics_dockhand_serves() {
    let s = spawn_scraped().await;
    s.deploy_and_proxy(3).await;
    // The deploy's notification is sent beside it: wait until it is counted.
    let mut served = parse_openmetrics(&s.scrape().await);
    for _ in 0..100 {
        if served.contains("dockhand_notifications_total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        served = parse_openmetrics(&s.scrape().await);
    }

    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap(),
    )
    .expect("docs/grafana-dashboard.json is JSON");
    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels");
    let mut exprs = String::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push_str(target["expr"].as_str().unwrap_or_default());
            exprs.push('\n');
        }
    }
    let alerts = std::fs::read_to_string(docs.join("prometheus-alerts.yml")).unwrap();
    for (file, text) in [
        ("grafana-dashboard.json", &exprs),
        ("prometheus-alerts.yml", &alerts),
    ] {
        let named = metric_names(text);
        assert!(named.len() >= 4, "{file} names too few metrics: {named:?}");
        let unknown: Vec<&String> = named.difference(&served).collect();
        assert!(
            unknown.is_empty(),
            "docs/{file} names metrics /metrics does not serve: {unknown:?}\nserved: {served:?}"
        );
    }
}

#[test]
fn promtool_accepts_the_shipped_alerting_rules() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/prometheus-alerts.yml");
    let (ok, output) = check_rules(&rules);
    assert!(ok, "promtool check rules {}:\n{output}", rules.display());
    assert!(output.contains("SUCCESS"), "{output}");
}

#[tokio::test]
async fn a_real_prometheus_scrapes_a_deploy_and_proxied_requests_with_the_token() {
    let s = spawn_scraped().await;
    let prometheus = Prometheus::scraping(&s.metrics, Some(TOKEN)).await;
    let within = Duration::from_secs(60);
    let up = prometheus
        .wait_for("up{job=\"dockhand\"}", within, |v| v == 1.0)
        .await;
    eprintln!("up: {up}");
    let latency_count = "dockhand_proxy_request_duration_seconds_count{app=\"web\"}";
    let before = prometheus.wait_for(latency_count, within, |_| true).await;
    let before = first_value(&before).unwrap();
    eprintln!("{latency_count} before: {before}");

    s.deploy_and_proxy(20).await;

    let deploys = "dockhand_deploys_total{app=\"web\",status=\"succeeded\"}";
    let answer = prometheus.wait_for(deploys, within, |v| v >= 1.0).await;
    eprintln!("{deploys}: {answer}");
    let answer = prometheus
        .wait_for(latency_count, within, |v| v >= before + 20.0)
        .await;
    eprintln!("{latency_count}: {answer}");
    let ok =
        "sum(dockhand_proxy_requests_total{app=\"web\",code_class=\"2xx\",upstream=\"fixed\"})";
    let answer = prometheus.wait_for(ok, within, |v| v >= 20.0).await;
    eprintln!("{ok}: {answer}");
}
