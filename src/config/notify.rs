//! `[[notify]]`: where deploy events are sent — a Slack or Discord incoming webhook, or a
//! generic JSON webhook signed like GitHub's — for which apps and which events.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};
use reqwest::Url;

use super::raw::RawNotify;
use super::resolve;
use super::validate::check_entry_name;
use crate::redact::Secret;

/// What a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyKind {
    /// `{"text": …}` in Slack's mrkdwn.
    Slack,
    /// `{"content": …}` with mentions off.
    Discord,
    /// The whole event as JSON, signed with `X-Dockhand-Signature-256` when a secret is set.
    Webhook,
}

/// The events a receiver may be sent.
pub const NOTIFY_EVENTS: [&str; 6] = [
    "started",
    "succeeded",
    "failed",
    "reverted",
    "rolled_back",
    "locked",
];

/// Sent when `on` is not given: every end, not the start.
const DEFAULT_EVENTS: [&str; 5] = ["succeeded", "failed", "reverted", "rolled_back", "locked"];

/// One `[[notify]]` receiver. `Debug` never shows its URL (Slack's and Discord's are
/// credentials) or its secret.
#[derive(Clone)]
pub struct Notifier {
    pub name: String,
    pub kind: NotifyKind,
    pub url: Url,
    /// The HMAC-SHA256 key of `X-Dockhand-Signature-256` (webhook only).
    pub secret: Option<Secret>,
    pub on: Vec<&'static str>,
    /// `None`: every app.
    pub apps: Option<Vec<String>>,
}

impl Notifier {
    /// Whether `event` of `app` goes to this receiver.
    pub fn wants(&self, app: &str, event: &str) -> bool {
        self.on.contains(&event)
            && self
                .apps
                .as_ref()
                .is_none_or(|a| a.iter().any(|x| x == app))
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &"<redacted>")
            .field("on", &self.on)
            .field("apps", &self.apps)
            .finish_non_exhaustive()
    }
}

/// Validate every `[[notify]]` entry.
pub(super) fn notifiers(
    raw: Vec<RawNotify>,
    app_names: &HashSet<String>,
    base: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<Notifier>> {
    let mut out: Vec<Notifier> = Vec::with_capacity(raw.len());
    for (i, n) in raw.into_iter().enumerate() {
        let label = format!("notify[{i}] ({})", n.name);
        check_entry_name(&label, &n.name, out.iter().map(|o| o.name.as_str()))?;
        let notifier = notifier(&label, n, app_names, base, warnings)?;
        out.push(notifier);
    }
    Ok(out)
}

fn notifier(
    label: &str,
    n: RawNotify,
    app_names: &HashSet<String>,
    base: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Notifier> {
    let kind = match n.kind.as_str() {
        "slack" => NotifyKind::Slack,
        "discord" => NotifyKind::Discord,
        "webhook" => NotifyKind::Webhook,
        other => bail!("{label}.kind: {other:?} is not one of \"slack\", \"discord\", \"webhook\""),
    };
    let (url, inline) = resolve::read_secret(&n.url, &n.url_env, &n.url_file, base, "url")
        .with_context(|| label.to_string())?;
    let url = String::from_utf8(url.into_bytes())
        .ok()
        .and_then(|u| Url::parse(u.trim()).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .with_context(|| format!("{label}.url: not an http:// or https:// URL with a host"))?;
    if inline && kind != NotifyKind::Webhook {
        warnings.push(format!(
            "{label}.url: a Slack or Discord webhook URL is a credential; keep it out of the config with url_env or url_file"
        ));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        warnings.push(format!(
            "{label}.url: plain http to another host; anyone on the path reads the messages (use https)"
        ));
    }
    let secret = match (&n.secret_env, &n.secret_file) {
        (None, None) => None,
        _ if kind != NotifyKind::Webhook => bail!(
            "{label}: secret_env/secret_file sign kind = \"webhook\" only; Slack and Discord check no signature"
        ),
        _ => Some(
            resolve::read_secret(&None, &n.secret_env, &n.secret_file, base, "secret")
                .with_context(|| label.to_string())?
                .0,
        ),
    };
    if kind == NotifyKind::Webhook && secret.is_none() {
        warnings.push(format!(
            "{label}: no secret_env/secret_file; receivers cannot tell dockhand's messages from anyone's"
        ));
    }
    Ok(Notifier {
        name: n.name,
        kind,
        url,
        secret,
        on: events(label, n.on)?,
        apps: apps(label, n.apps, app_names)?,
    })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn events(label: &str, on: Option<Vec<String>>) -> anyhow::Result<Vec<&'static str>> {
    let Some(on) = on else {
        return Ok(DEFAULT_EVENTS.to_vec());
    };
    if on.is_empty() {
        bail!("{label}.on: empty; name events from {NOTIFY_EVENTS:?}, or leave `on` out for every end");
    }
    on.iter()
        .map(|e| {
            NOTIFY_EVENTS
                .iter()
                .find(|known| *known == e)
                .copied()
                .with_context(|| {
                    format!("{label}.on: unknown event {e:?}; events are {NOTIFY_EVENTS:?}")
                })
        })
        .collect()
}

fn apps(
    label: &str,
    apps: Option<Vec<String>>,
    app_names: &HashSet<String>,
) -> anyhow::Result<Option<Vec<String>>> {
    let Some(apps) = apps else {
        return Ok(None);
    };
    if apps.is_empty() {
        bail!("{label}.apps: empty; name apps, or leave `apps` out for every app");
    }
    if let Some(unknown) = apps.iter().find(|a| !app_names.contains(*a)) {
        bail!("{label}.apps: unknown app {unknown:?}");
    }
    Ok(Some(apps))
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{parse, APP};

    fn with(notify: &str) -> anyhow::Result<Vec<String>> {
        std::env::set_var(
            "DOCKHAND_TEST_SLACK_URL",
            "https://hooks.slack.test/services/T/B/x",
        );
        parse(&format!("{APP}\n{notify}")).map(|(_, warnings)| warnings)
    }

    fn error(notify: &str) -> String {
        format!("{:#}", with(notify).unwrap_err())
    }

    #[test]
    fn a_receiver_is_refused_naming_its_bad_field() {
        assert!(
            error("[[notify]]\nname = \"x\"\nkind = \"teams\"\nurl = \"https://a.test/\"")
                .contains("notify[0] (x).kind: \"teams\" is not one of")
        );
        assert!(
            error("[[notify]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"ftp://a.test/\"")
                .contains("notify[0] (x).url: not an http:// or https:// URL")
        );
        assert!(error(
            "[[notify]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"https://a.test/\"\non = [\"deployed\"]"
        )
        .contains("unknown event \"deployed\""));
        assert!(error(
            "[[notify]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"https://a.test/\"\napps = [\"nope\"]"
        )
        .contains("notify[0] (x).apps: unknown app \"nope\""));
        assert!(error(
            "[[notify]]\nname = \"x\"\nkind = \"slack\"\nurl_env = \"DOCKHAND_TEST_SLACK_URL\"\nsecret_env = \"HOME\""
        )
        .contains("sign kind = \"webhook\" only"));
        assert!(error("[[notify]]\nname = \"x\"\nkind = \"slack\"")
            .contains("url: missing; set url_env or url_file"));
    }

    #[test]
    fn an_inline_slack_url_and_an_unsigned_webhook_are_warned_about() {
        let warnings = with(
            "[[notify]]\nname = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.test/x\"",
        )
        .unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("is a credential")),
            "{warnings:?}"
        );
        let warnings =
            with("[[notify]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"http://ci.example.test/\"")
                .unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("no secret_env")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("plain http")),
            "{warnings:?}"
        );
        let warnings = with(
            "[[notify]]\nname = \"s\"\nkind = \"slack\"\nurl_env = \"DOCKHAND_TEST_SLACK_URL\"",
        )
        .unwrap();
        assert!(
            warnings.iter().all(|w| !w.contains("notify")),
            "{warnings:?}"
        );
    }
}
