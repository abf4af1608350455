//! Notifications (`[[notify]]`): each receiver has a task that reads the statuses deploys
//! entered (`deploy_transitions`, written by triggers in the same transaction as each change),
//! renders a message for each event it wants into the SQLite outbox — moving its cursor in the
//! same transaction — and sends them in order, retrying with backoff.
//!
//! - Nothing is lost across a crash or restart: a transition not yet read is read after it, a
//!   message not yet delivered is sent after it. A message whose send was cut off is sent again
//!   (at least once), with the same body and `X-Dockhand-Delivery` id, so a receiver can
//!   drop a repeat.
//! - Never blocks or fails a deploy: the tasks only read the store and write their own rows.
//! - A receiver's 5xx, 408, 429 or a network error is retried (1 s, 2 s, 4 s … up to 10
//!   minutes apart, `Retry-After` respected) up to [`MAX_ATTEMPTS`]; any other answer gives
//!   the message up at once (a deleted Slack webhook answers 404 for ever). Both are logged and
//!   counted (`dockhand_notifications_total`).

mod github;
mod message;

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use sha2::Sha256;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{Notifier, NotifyKind};
use crate::metrics::Metrics;
use crate::store::{now_ms, Message, NewMessage, Store};

/// Attempts before a message is given up (about 27 minutes of retrying).
pub const MAX_ATTEMPTS: i64 = 12;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long one attempt may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Transitions read per pass.
const BATCH: u32 = 100;
/// Transitions older than this when a receiver reads them are not told (a receiver taken out
/// of the config and put back a month later is not sent the month).
const STALE: Duration = Duration::from_secs(24 * 3600);
/// How often a receiver looks for work when no deploy event wakes it.
const IDLE: Duration = Duration::from_secs(2);

/// What each receiver's task shares.
#[derive(Clone)]
struct Ctx {
    store: Store,
    metrics: Metrics,
    http: reqwest::Client,
    public_url: Option<Arc<str>>,
}

/// Where a receiver's messages go.
enum Receiver {
    /// A `[[notify]]` entry.
    Hook(Notifier),
    /// An app's `[apps.github]`.
    Github(github::Target),
}

impl Receiver {
    /// Its outbox rows' and cursor's name.
    fn name(&self) -> &str {
        match self {
            Receiver::Hook(n) => &n.name,
            Receiver::Github(t) => &t.name,
        }
    }

    /// Whether transitions into `status` may be a message (the others are read past without
    /// reading their deploy).
    fn reads(&self, status: &str) -> bool {
        match self {
            Receiver::Hook(_) => message::TOLD.contains(&status),
            Receiver::Github(_) => github::TOLD.contains(&status),
        }
    }

    /// The message a transition into `status` of `deploy` is for this receiver: its event
    /// and body.
    fn render(
        &self,
        status: &str,
        deploy: &crate::store::Deploy,
        link: Option<&str>,
    ) -> Option<(&'static str, Vec<u8>)> {
        match self {
            Receiver::Hook(n) => {
                let event = message::event_of(status, deploy)?;
                n.wants(&deploy.app, event)
                    .then(|| (event, message::render(n.kind, event, deploy, link)))
            }
            Receiver::Github(t) => github::render(t, status, deploy, link),
        }
    }
}

/// Start one task per receiver (`[[notify]]`, and each app's `[apps.github]`); they run until
/// aborted. Start them after startup recovery.
pub fn start(services: &crate::services::Services) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let (config, store, metrics) = (&services.config, &services.store, &services.metrics);
    let public_url = config.server.public_url.as_deref();
    let http = reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        // A signed body goes to the configured URL and nowhere else.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("dockhand/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let ctx = Ctx {
        store: store.clone(),
        metrics: metrics.clone(),
        http,
        public_url: public_url.map(Arc::from),
    };
    let mut receivers: Vec<Receiver> = config.notify.iter().cloned().map(Receiver::Hook).collect();
    if let Some(client) = &services.github {
        receivers.extend(config.apps.iter().filter_map(|app| {
            Some(Receiver::Github(github::Target {
                name: format!("github:{}", app.name),
                app: app.name.clone(),
                config: app.github.clone()?,
                client: client.clone(),
            }))
        }));
    }
    Ok(receivers
        .into_iter()
        .map(|r| tokio::spawn(run(ctx.clone(), Arc::new(r))))
        .collect())
}

/// One receiver's loop: read new transitions into the outbox, send what is due, wait.
async fn run(ctx: Ctx, receiver: Arc<Receiver>) {
    let mut events = ctx.store.subscribe();
    let mut cursor = None;
    loop {
        let wait = match pass(&ctx, &receiver, &mut cursor).await {
            Ok(wait) => wait,
            Err(e) => {
                warn!(receiver = %receiver.name(), error = format!("{e:#}"), "notifications: reading or writing the outbox failed");
                IDLE
            }
        };
        tokio::select! {
            _ = events.recv() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Fill the outbox from the transitions after `cursor`, then send every message that is due;
/// returns how long to wait before the next pass.
async fn pass(ctx: &Ctx, n: &Receiver, cursor: &mut Option<i64>) -> anyhow::Result<Duration> {
    let name = n.name();
    let mut at = match *cursor {
        Some(at) => at,
        None => ctx.store.notify_cursor(name).await?,
    };
    loop {
        let transitions = ctx.store.transitions_after(at, BATCH).await?;
        let Some(last) = transitions.last().map(|t| t.id) else {
            break;
        };
        let mut messages = Vec::new();
        let stale_before = now_ms() - i64::try_from(STALE.as_millis()).unwrap_or(i64::MAX);
        let stale = transitions.iter().filter(|t| t.at < stale_before).count();
        if stale > 0 {
            info!(receiver = %name, stale, "notifications: not telling transitions over a day old");
        }
        let told = transitions
            .iter()
            .filter(|t| t.at >= stale_before && n.reads(&t.status));
        for t in told {
            let Some(deploy) = ctx.store.deploy(t.deploy_id).await? else {
                continue;
            };
            let link = ctx
                .public_url
                .as_ref()
                .map(|u| format!("{u}/ui/deploys/{}", deploy.id));
            if let Some((event, body)) = n.render(&t.status, &deploy, link.as_deref()) {
                messages.push(NewMessage {
                    transition_id: t.id,
                    app: deploy.app.clone(),
                    deploy_id: deploy.id,
                    event,
                    body,
                });
            }
        }
        ctx.store.enqueue(name, last, &messages).await?;
        at = last;
    }
    *cursor = Some(at);
    while let Some(m) = ctx.store.next_message(name).await? {
        let wait = m.next_at - now_ms();
        if wait > 0 {
            return Ok(Duration::from_millis(wait.unsigned_abs()).min(IDLE));
        }
        send(ctx, n, &m).await?;
    }
    ctx.metrics
        .notifications_pending(name, ctx.store.pending_messages(name).await?);
    Ok(IDLE)
}

/// What one attempt came to.
enum Outcome {
    Delivered,
    /// Try again, no sooner than this (the receiver's `Retry-After`).
    Retry(String, Option<Duration>),
    GiveUp(String),
}

/// One attempt at `m`, recorded.
async fn send(ctx: &Ctx, n: &Receiver, m: &Message) -> anyhow::Result<()> {
    let attempts = m.attempts + 1;
    let store = &ctx.store;
    let outcome = match n {
        Receiver::Hook(hook) => attempt(ctx, hook, m).await,
        // Only GitHub's receiver reads `begun` (a webhook's repeat carries the same id).
        Receiver::Github(target) => {
            store.message_begun(m.id).await?;
            github::attempt(store, target, m).await
        }
    };
    let name = n.name();
    let counted = match outcome {
        Outcome::Delivered => {
            store.message_delivered(m.id, attempts).await?;
            info!(receiver = %name, deploy_id = m.deploy_id, event = %m.event, attempts, "notification delivered");
            "delivered"
        }
        Outcome::Retry(error, after) if attempts < MAX_ATTEMPTS => {
            let backoff = backoff(attempts).max(after.unwrap_or_default());
            warn!(receiver = %name, deploy_id = m.deploy_id, event = %m.event, attempts, error, retry_in = ?backoff, "notification not delivered; will retry");
            let next = now_ms() + i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX);
            store
                .message_failed(m.id, attempts, &error, Some(next))
                .await?;
            "retry"
        }
        Outcome::Retry(error, _) | Outcome::GiveUp(error) => {
            warn!(receiver = %name, deploy_id = m.deploy_id, event = %m.event, attempts, error, "notification given up");
            store.message_failed(m.id, attempts, &error, None).await?;
            "gave_up"
        }
    };
    let pending = store.pending_messages(name).await?;
    ctx.metrics.notification(name, counted, pending);
    Ok(())
}

/// POST `m`'s body to the receiver. The URL never appears in an error (Slack's and Discord's
/// are credentials).
async fn attempt(ctx: &Ctx, n: &Notifier, m: &Message) -> Outcome {
    let request = ctx
        .http
        .post(n.url.clone())
        .headers(headers(n, m))
        .body(m.body.clone());
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Outcome::Retry(format!("{:#}", e.without_url()), None),
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Delivered;
    }
    let after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .map(|s: u64| Duration::from_secs(s).min(MAX_BACKOFF));
    let body = response.text().await.unwrap_or_default();
    let said: String = body.chars().take(200).collect();
    let error = format!("the receiver answered {status}: {said}");
    if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
        Outcome::Retry(error, after)
    } else if status.is_redirection() {
        Outcome::GiveUp(format!(
            "{error} (a redirect is not followed: put the URL it names in the config)"
        ))
    } else {
        Outcome::GiveUp(error)
    }
}

/// `Content-Type`; for a generic webhook also the event, the message's id (the same on every
/// attempt) and, with a secret, `X-Dockhand-Signature-256: sha256=<HMAC of the body>`.
fn headers(n: &Notifier, m: &Message) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if n.kind != NotifyKind::Webhook {
        return headers;
    }
    let mut add = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    add("x-dockhand-event", m.event.clone());
    add("x-dockhand-delivery", m.id.to_string());
    if let Some(secret) = &n.secret {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose())
            .expect("HMAC takes a key of any length");
        mac.update(&m.body);
        add(
            "x-dockhand-signature-256",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        );
    }
    headers
}

/// The wait after failed attempt `attempts` (1-based): 1 s, 2 s, 4 s … at most [`MAX_BACKOFF`].
fn backoff(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(20);
    Duration::from_secs(1u64 << doublings).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_up_to_ten_minutes() {
        let waits: Vec<u64> = (1..=12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
    }
}
