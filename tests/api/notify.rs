//! Notifications: real dockhand, real git repositories and SQLite file, and receivers on
//! loopback that record every request byte for byte and answer what the test says (Slack and
//! Discord themselves cannot be reached from here: their receivers check the documented body).

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::support::helpers::*;

const HOOK_SECRET: &str = "notify-secret-0123456789";
const PUBLIC: &str = "https://deploy.example.test";

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Got {
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Log {
    got: Vec<Got>,
    /// Answers to give, in order; 200 once they run out.
    answers: VecDeque<u16>,
}

/// An HTTP receiver on 127.0.0.1.
struct Receiver {
    url: String,
    log: Arc<Mutex<Log>>,
}

impl Receiver {
    async fn start() -> Receiver {
        async fn take(
            State(log): State<Arc<Mutex<Log>>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, &'static str) {
            let mut log = log.lock().unwrap();
            log.got.push(Got { headers, body });
            let answer = log.answers.pop_front().unwrap_or(200);
            (StatusCode::from_u16(answer).unwrap(), "answer")
        }
        let log = Arc::new(Mutex::new(Log::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(take))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, log }
    }

    fn answer(&self, statuses: &[u16]) {
        self.log.lock().unwrap().answers.extend(statuses);
    }

    fn got(&self) -> Vec<Got> {
        self.log.lock().unwrap().got.clone()
    }

    /// Wait (up to 20 s) until it got `n` requests.
    async fn wait_for(&self, n: usize) -> Vec<Got> {
        for _ in 0..400 {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the receiver got {} requests of {n}: {:#?}",
            self.got().len(),
            self.got()
        );
    }
}

/// The `[[notify]]` table for a receiver.
fn receiver(name: &str, kind: &str, url: &str, extra: &str) -> String {
    format!("\n[[notify]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\n{extra}\n")
}

fn signed(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn spawn(origin: &Origin, server_extra: &str, app_extra: &str, notify: &str) -> TestApp {
    let server = format!("public_url = \"{PUBLIC}/\"\n{server_extra}");
    let notify = notify.to_string();
    spawn_app_edited(origin, &server, app_extra, move |t| format!("{t}{notify}")).await
}

#[tokio::test]
async fn a_deploy_is_told_to_a_signed_webhook_and_to_slack_with_its_commit_path_and_link() {
    let (hook, slack) = (Receiver::start().await, Receiver::start().await);
    let origin = Origin::new();
    std::env::set_var("DOCKHAND_TEST_NOTIFY_SECRET", HOOK_SECRET);
    let notify = receiver(
        "ci",
        "webhook",
        &hook.url,
        "secret_env = \"DOCKHAND_TEST_NOTIFY_SECRET\"\non = [\"started\", \"succeeded\"]",
    ) + &receiver("chat", "slack", &slack.url, "");
    let app = spawn(&origin, "", "", &notify).await;
    origin.write("app.py", "VERSION = 2\n");
    let commit = origin.commit("Fix login <!channel>");
    let deploy = app.deploy(&commit).await;
    let id = deploy["id"].as_i64().unwrap();

    let got = hook.wait_for(2).await;
    let events: Vec<&str> = got.iter().map(|g| g.header("x-dockhand-event")).collect();
    assert_eq!(events, ["started", "succeeded"], "in order, nothing else");
    for g in &got {
        assert_eq!(
            g.header("x-dockhand-signature-256"),
            signed(HOOK_SECRET, &g.body),
            "signed over the raw body like GitHub's X-Hub-Signature-256"
        );
        assert_eq!(g.header("content-type"), "application/json");
    }
    assert_ne!(
        got[0].header("x-dockhand-delivery"),
        got[1].header("x-dockhand-delivery")
    );
    let done = got[1].json();
    assert_eq!(done["app"], "web");
    assert_eq!(done["deploy_id"], id);
    assert_eq!(done["commit"]["id"], commit.as_str());
    assert_eq!(done["commit"]["short"], &commit[..7]);
    assert_eq!(done["commit"]["subject"], "Fix login <!channel>");
    assert_eq!(done["path"], "fast");
    assert_eq!(done["reason"], deploy["reason"]);
    assert_eq!(done["actor"], "octocat");
    assert_eq!(done["duration_ms"], deploy["duration_ms"]);
    assert_eq!(done["url"], format!("{PUBLIC}/ui/deploys/{id}"));
    assert_eq!(got[0].json()["event"], "started");

    let chat = slack.wait_for(1).await;
    let text = chat[0].json()["text"].as_str().unwrap().to_string();
    assert!(
        text.starts_with(&format!(
            "web: deployed {} \u{201c}Fix login &lt;!channel&gt;\u{201d} on the fast path in ",
            &commit[..7]
        )),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            ", by octocat. <{PUBLIC}/ui/deploys/{id}|deploy {id}>"
        )),
        "{text}"
    );
    assert!(chat[0].header("x-dockhand-signature-256").is_empty());
    // Slack was not told of the start (not in its default events) nor told twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(slack.got().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_and_reverted_deploy_is_told_as_reverted_with_its_error() {
    let discord = Receiver::start().await;
    let origin = Origin::new();
    let hooks = tempfile::tempdir().unwrap();
    let app = spawn(
        &origin,
        &format!("hooks_dir = \"{}\"", hooks.path().display()),
        "revert_on_hook_failure = true",
        &receiver("chat", "discord", &discord.url, ""),
    )
    .await;
    app.deploy(&origin.head()).await;
    let hook = hooks.path().join("web/post-deploy");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\necho 'smoke test failed'\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("@everyone second");
    let failed = app.deploy_to_end(&second).await;
    assert_eq!(failed["reverted"], true, "{failed:#}");

    let got = discord.wait_for(2).await;
    let last = got[1].json();
    let content = last["content"].as_str().unwrap();
    assert!(
        content.starts_with(&format!(
            "web: deploy of {} \u{201c}\\@everyone second\u{201d} failed in ",
            &second[..7]
        )),
        "{content}"
    );
    assert!(
        content.contains("was put back to the previous commit"),
        "{content}"
    );
    assert_eq!(last["allowed_mentions"]["parse"], serde_json::json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_answers_500_is_sent_the_same_message_again_until_it_takes_it() {
    let hook = Receiver::start().await;
    hook.answer(&[500, 503]);
    let origin = Origin::new();
    let app = spawn(&origin, "", "", &receiver("ci", "webhook", &hook.url, "")).await;
    app.deploy(&origin.head()).await;

    let got = hook.wait_for(3).await;
    assert!(
        got.iter().all(|g| g.body == got[0].body
            && g.header("x-dockhand-delivery") == got[0].header("x-dockhand-delivery")),
        "every attempt is the same message"
    );
    assert_eq!(got[0].json()["event"], "succeeded");
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "dockhand_notifications_total{receiver=\"ci\",outcome=\"retry\"} 2",
        "dockhand_notifications_total{receiver=\"ci\",outcome=\"delivered\"} 1",
        "dockhand_notifications_pending{receiver=\"ci\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(hook.got().len(), 3, "nothing sent after it was taken");
    app.stop().await;
}

#[tokio::test]
async fn a_message_not_taken_before_a_restart_is_sent_after_it_once() {
    let hook = Receiver::start().await;
    // Down through the deploy and the restart.
    hook.answer(&[503; 3]);
    let origin = Origin::new();
    let app = spawn(&origin, "", "", &receiver("ci", "webhook", &hook.url, "")).await;
    app.deploy(&origin.head()).await;
    hook.wait_for(1).await;
    let app = app.restart().await;

    let got = hook.wait_for(4).await;
    let taken = &got[3];
    assert_eq!(taken.json()["event"], "succeeded");
    assert!(got
        .iter()
        .all(|g| g.header("x-dockhand-delivery") == taken.header("x-dockhand-delivery")));
    // A later deploy is one new message, and the first is not sent again.
    origin.write("app.py", "VERSION = 3\n");
    let next = origin.commit("third");
    app.deploy(&next).await;
    let got = hook.wait_for(5).await;
    assert_eq!(got[4].json()["commit"]["id"], next.as_str());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(hook.got().len(), 5, "{:#?}", hook.got());
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_refuses_a_message_is_not_asked_again_and_the_next_one_goes() {
    let hook = Receiver::start().await;
    hook.answer(&[404]);
    let origin = Origin::new();
    let app = spawn(&origin, "", "", &receiver("ci", "webhook", &hook.url, "")).await;
    app.deploy(&origin.head()).await;
    hook.wait_for(1).await;
    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("second");
    app.deploy(&second).await;
    let got = hook.wait_for(2).await;
    assert_eq!(got[1].json()["commit"]["id"], second.as_str());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        hook.got().len(),
        2,
        "the refused message is given up, not retried"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_shows_on_the_dashboard_with_its_error() {
    let hook = Receiver::start().await;
    hook.answer(&[500; 40]);
    let origin = Origin::new();
    let app = spawn(&origin, "", "", &receiver("ci", "webhook", &hook.url, "")).await;
    let deploy = app.deploy(&origin.head()).await;
    hook.wait_for(2).await;
    // No [[tokens]]: the pages are open read-only, like the read API.
    let mut overview = String::new();
    for _ in 0..100 {
        overview = get_page(&app.url("/ui")).await.1;
        if overview.contains("notifications failing") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(overview.contains("1 notifications failing"), "{overview}");
    let (status, page) = get_page(&app.url("/ui/apps/web")).await;
    assert_eq!(status, 200);
    let section = &page[page
        .find("id=\"notifications\"")
        .expect("a notifications section")..];
    let row = &section[section
        .find("<tr data-failing=\"true\">")
        .expect("a failing row")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("<td>ci</td>"), "{row}");
    assert!(
        row.contains(&format!("href=\"/ui/deploys/{}\"", deploy["id"])),
        "{row}"
    );
    assert!(
        row.contains("500"),
        "the receiver's answer is the error shown: {row}"
    );
    app.stop().await;
}
