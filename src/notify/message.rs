//! What a receiver is sent: one line of text saying what happened (for Slack and Discord, with
//! what a commit message, a ref or an error could smuggle in escaped), or — for a generic
//! webhook — the whole event as JSON with that line in `text`.

use serde_json::json;

use crate::config::NotifyKind;
use crate::store::{Deploy, Trigger};

/// The most of an error a message carries (a step's output can be long).
const ERROR_CHARS: usize = 500;

/// The transition statuses [`event_of`] makes an event of; the others are read past without
/// reading their deploy.
pub(super) const TOLD: [&str; 5] = ["planned", "succeeded", "failed", "interrupted", "locked"];

/// The notification event a transition is, if any: `planned` is when a deploy starts changing
/// the app; a rollback's success is `rolled_back`; a failure that was put back, `reverted`.
pub(super) fn event_of(status: &str, deploy: &Deploy) -> Option<&'static str> {
    Some(match status {
        "planned" => "started",
        "succeeded" if deploy.trigger == Trigger::Rollback => "rolled_back",
        "succeeded" => "succeeded",
        "failed" if deploy.reverted => "reverted",
        "failed" | "interrupted" => "failed",
        "locked" => "locked",
        _ => return None,
    })
}

/// The body `kind` is sent for `event` of `deploy`; `link` is its dashboard page, when
/// `server.public_url` is set.
pub(super) fn render(
    kind: NotifyKind,
    event: &str,
    deploy: &Deploy,
    link: Option<&str>,
) -> Vec<u8> {
    let body = match kind {
        NotifyKind::Slack => {
            let mut text = line(event, deploy, slack_escape);
            if let Some(link) = link {
                text.push_str(&format!(" <{link}|deploy {}>", deploy.id));
            }
            json!({ "text": text })
        }
        NotifyKind::Discord => {
            let mut text = line(event, deploy, discord_escape);
            if let Some(link) = link {
                text.push_str(&format!(" <{link}>"));
            }
            // Nobody is pinged, whatever a commit message says (`@everyone`, `<@id>`).
            json!({ "content": truncate(&text, 1900), "allowed_mentions": { "parse": [] } })
        }
        NotifyKind::Webhook => webhook(event, deploy, link),
    };
    serde_json::to_vec(&body).expect("a JSON value always serializes")
}

fn webhook(event: &str, d: &Deploy, link: Option<&str>) -> serde_json::Value {
    let commit = d
        .to_commit
        .map(|c| c.to_string())
        .or(d.requested_sha.clone());
    json!({
        "event": event,
        "app": d.app,
        "deploy_id": d.id,
        "status": d.status.as_str(),
        "trigger": d.trigger.as_str(),
        "actor": d.actor,
        "ref": d.git_ref,
        "commit": {
            "id": commit,
            "short": commit.as_deref().map(short),
            "subject": d.subject,
        },
        "path": d.path.map(|p| p.as_str()),
        "reason": d.reason,
        "error": d.error.as_deref().map(|e| truncate(e, ERROR_CHARS)),
        "reverted": d.reverted,
        "rollback_of": d.rollback_of,
        "promoted_from": d.promoted_from,
        "duration_ms": duration_ms(d),
        "url": link,
        "text": line(event, d, |s| s.to_string()),
    })
}

/// `web: deployed abc1234 "Fix login" on the fast path in 1.2 s, by octocat.`
fn line(event: &str, d: &Deploy, esc: fn(&str) -> String) -> String {
    let commit = d
        .to_commit
        .map(|c| c.to_string())
        .or(d.requested_sha.clone())
        .map_or_else(|| "?".to_string(), |c| short(&c).to_string());
    let subject = d
        .subject
        .as_deref()
        .map(|s| format!(" \u{201c}{}\u{201d}", esc(s)))
        .unwrap_or_default();
    let app = esc(&d.app);
    let path = d.path.map_or("", |p| p.as_str());
    let took = duration_ms(d).map(|ms| format!(" in {:.1} s", ms as f64 / 1000.0));
    let took = took.unwrap_or_default();
    let reason = d.reason.as_deref().map(esc).unwrap_or_default();
    let error = d
        .error
        .as_deref()
        .map(|e| esc(&truncate(e, ERROR_CHARS)))
        .unwrap_or_default();
    let mut text = match event {
        "started" => format!("{app}: deploying {commit}{subject} on the {path} path: {reason}"),
        "succeeded" => format!("{app}: deployed {commit}{subject} on the {path} path{took}"),
        "rolled_back" => format!(
            "{app}: rolled back to {commit}{subject} (deploy {}){took}",
            d.rollback_of.map_or("?".to_string(), |id| id.to_string())
        ),
        "reverted" => format!(
            "{app}: deploy of {commit}{subject} failed{took} and was put back to the previous commit: {error}"
        ),
        "locked" => format!("{app}: a push of {commit} was not deployed: {reason}"),
        _ => format!("{app}: deploy of {commit}{subject} failed{took}: {error}"),
    };
    if let Some(actor) = &d.actor {
        text.push_str(&format!(", by {}", esc(actor)));
    }
    text.push('.');
    text
}

fn duration_ms(d: &Deploy) -> Option<i64> {
    Some(d.finished_at? - d.started_at?)
}

fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

fn truncate(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// Slack's mrkdwn: `&`, `<` and `>` are its control characters (`<!channel>`, `<url|text>`).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Discord's markdown, escaped with a backslash (mentions are off in `allowed_mentions`).
fn discord_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\*_~`|>[]()<#@:".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeployPath, DeployStatus};

    fn deploy(subject: &str) -> Deploy {
        Deploy {
            id: 12,
            app: "web".into(),
            delivery_id: None,
            trigger: Trigger::Push,
            actor: Some("octocat".into()),
            git_ref: Some("refs/heads/main".into()),
            requested_sha: None,
            forced: false,
            from_commit: None,
            to_commit: Some("abcdef1234567890abcdef1234567890abcdef12".parse().unwrap()),
            path: Some(DeployPath::Fast),
            reason: Some("only code changed".into()),
            status: DeployStatus::Succeeded,
            superseded_by: None,
            error: None,
            created_at: 0,
            started_at: Some(1_000),
            finished_at: Some(2_500),
            image: None,
            digest: None,
            reverted: false,
            requested_path: None,
            rollback_of: None,
            promoted_from: None,
            subject: Some(subject.into()),
        }
    }

    fn text(kind: NotifyKind, d: &Deploy) -> String {
        let body: serde_json::Value = serde_json::from_slice(&render(
            kind,
            "succeeded",
            d,
            Some("https://d.test/ui/deploys/12"),
        ))
        .unwrap();
        body[if kind == NotifyKind::Slack {
            "text"
        } else {
            "content"
        }]
        .as_str()
        .unwrap()
        .to_string()
    }

    #[test]
    fn a_message_names_app_commit_subject_path_duration_who_and_links_the_deploy() {
        let d = deploy("Fix login");
        assert_eq!(
            text(NotifyKind::Slack, &d),
            "web: deployed abcdef1 \u{201c}Fix login\u{201d} on the fast path in 1.5 s, by octocat. <https://d.test/ui/deploys/12|deploy 12>"
        );
        let body: serde_json::Value =
            serde_json::from_slice(&render(NotifyKind::Webhook, "succeeded", &d, None)).unwrap();
        assert_eq!(body["commit"]["short"], "abcdef1");
        assert_eq!(body["commit"]["subject"], "Fix login");
        assert_eq!(body["duration_ms"], 1500);
        assert_eq!(body["path"], "fast");
        assert_eq!(body["reason"], "only code changed");
    }

    #[test]
    fn a_hostile_commit_subject_pings_nobody_and_forges_no_link() {
        let d = deploy("<!channel> <https://evil.test|click> @everyone [x](https://evil.test)");
        let slack = text(NotifyKind::Slack, &d);
        assert!(
            slack.contains("&lt;!channel&gt; &lt;https://evil.test|click&gt;"),
            "{slack}"
        );
        assert!(!slack.contains("<!channel>"), "{slack}");
        let body: serde_json::Value =
            serde_json::from_slice(&render(NotifyKind::Discord, "succeeded", &d, None)).unwrap();
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
        let discord = body["content"].as_str().unwrap();
        assert!(
            discord.contains(r"\[x\]\(https\://evil.test\)"),
            "{discord}"
        );
        assert!(discord.contains(r"\@everyone"), "{discord}");
    }

    #[test]
    fn transitions_become_the_events_people_subscribe_to() {
        let mut d = deploy("x");
        assert_eq!(event_of("planned", &d), Some("started"));
        assert_eq!(event_of("succeeded", &d), Some("succeeded"));
        assert_eq!(event_of("running", &d), None);
        for status in ["queued", "running", "superseded", "stale", "ignored"] {
            assert!(!TOLD.contains(&status) && event_of(status, &d).is_none());
        }
        assert_eq!(event_of("interrupted", &d), Some("failed"));
        d.trigger = Trigger::Rollback;
        assert_eq!(event_of("succeeded", &d), Some("rolled_back"));
        d.reverted = true;
        assert_eq!(event_of("failed", &d), Some("reverted"));
    }
}
