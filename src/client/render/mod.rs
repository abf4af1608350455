//! The CLI's text: tables for `history` and `status`, `plan` and `logs` as readable text, and
//! the live view of a followed deploy (spinners on a terminal, plain lines when piped).
//!
//! Everything reads the `api` types the server sends; a field an older or newer server leaves
//! out reads as missing (`-`), never as a panic.
//!
//! Layout: this file holds the field formatting and every one-shot answer's text; `follow`
//! holds the `Follower`s that show a deploy's events as they arrive.

mod follow;

pub use follow::{Follower, JsonLines, Plain, Spinners};

use std::fmt::Write as _;

use comfy_table::{presets, Table};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::api::{
    AppList, DeployList, DeployView, LockAnswer, LockView, MaintenanceView, PlanView, QueuedView,
    StatusEvent, UnlockAnswer,
};

/// The field as text, `-` when missing or empty.
fn text(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty())
        .map_or_else(|| "-".to_string(), str::to_string)
}

/// A commit id as `git log --oneline` shows it.
fn short_sha(v: Option<&str>) -> String {
    v.map_or_else(|| "-".to_string(), |s| s.chars().take(7).collect())
}

/// `refs/heads/main` → `main`, `refs/tags/v1` → `v1`.
fn short_ref(v: Option<&str>) -> String {
    v.map_or_else(
        || "-".to_string(),
        |r| {
            r.strip_prefix("refs/heads/")
                .or_else(|| r.strip_prefix("refs/tags/"))
                .unwrap_or(r)
                .to_string()
        },
    )
}

fn parse_time(v: Option<&str>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v?, &Rfc3339).ok()
}

/// `2024-05-01 12:00:01` (UTC, as the server records it).
fn when(v: Option<&str>) -> String {
    let Some(t) = parse_time(v) else {
        return text(v);
    };
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `12:00:01` (UTC).
fn clock(v: Option<&str>) -> String {
    parse_time(v).map_or_else(
        || "--:--:--".to_string(),
        |t| format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
    )
}

/// `3 ms`, `2.1 s`, `4m 05s`.
fn duration(ms: i64) -> String {
    match ms {
        ..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

fn duration_of(v: Option<i64>) -> String {
    v.map_or_else(|| "-".to_string(), duration)
}

/// Milliseconds from `start` to `end` (RFC 3339 strings), if both parse.
fn between(start: Option<&str>, end: Option<&str>) -> Option<i64> {
    let d = parse_time(end)? - parse_time(start)?;
    i64::try_from(d.whole_milliseconds()).ok()
}

/// A table with no borders: aligned columns, like `docker ps`.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// The table's text without the padding after the last column.
fn lines_of(table: &Table) -> String {
    table
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `status`, with `(reverted)` when a failed deploy put the previous commit back.
fn deploy_status(d: &DeployView) -> String {
    let status = text(Some(&d.status));
    if d.reverted {
        format!("{status} (reverted)")
    } else {
        status
    }
}

/// `by alice since 2024-05-01 12:00:01: migrating db`
fn lock_text(l: &LockView) -> String {
    format!(
        "by {} since {}: {}",
        text(Some(&l.locked_by)),
        when(Some(&l.locked_at)),
        text(Some(&l.reason))
    )
}

/// `history`: one row per deploy, newest first.
pub fn history(v: &DeployList) -> String {
    if v.deploys.is_empty() {
        return format!("no deploys of {} yet", text(Some(&v.app)));
    }
    let mut t = table(&[
        "ID",
        "WHEN (UTC)",
        "TRIGGER",
        "WHO",
        "REF",
        "SHA",
        "PATH",
        "STATUS",
        "DURATION",
    ]);
    for d in &v.deploys {
        t.add_row(vec![
            d.id.to_string(),
            when(Some(&d.created_at)),
            text(Some(&d.trigger)),
            text(d.actor.as_deref()),
            short_ref(d.git_ref.as_deref()),
            short_sha(d.commit()),
            text(d.path.as_deref()),
            deploy_status(d),
            duration_of(d.duration_ms),
        ]);
    }
    lines_of(&t)
}

/// `status`: one row per app.
pub fn status(v: &AppList) -> String {
    if v.apps.is_empty() {
        return "no apps (or none this token may see)".to_string();
    }
    let mut t = table(&[
        "APP",
        "COMMIT",
        "SINCE (UTC)",
        "LAST DEPLOY",
        "LOCKED",
        "PROXY",
    ]);
    for app in &v.apps {
        let last = app.last_deploy.as_ref().map_or_else(
            || "-".to_string(),
            |last| format!("#{} {}", last.id, deploy_status(last)),
        );
        let locked = app
            .locked
            .as_ref()
            .map_or_else(|| "no".to_string(), lock_text);
        let proxy = match &app.proxy {
            None => "-".to_string(),
            Some(p) if p.maintenance => format!("{} maintenance", text(Some(&p.listen))),
            Some(p) => format!(
                "{} → {}",
                text(Some(&p.listen)),
                text(p.upstream.as_deref())
            ),
        };
        let deployed = app.deployed.as_ref();
        t.add_row(vec![
            text(Some(&app.name)),
            short_sha(deployed.map(|d| d.commit.as_str())),
            when(deployed.map(|d| d.since.as_str())),
            last,
            locked,
            proxy,
        ]);
    }
    lines_of(&t)
}

/// `plan`: what a deploy would do now.
pub fn plan(v: &PlanView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: would deploy {} ({})",
        text(Some(&v.app)),
        short_sha(Some(&v.commit)),
        text(Some(&v.resolved))
    );
    let _ = writeln!(out, "deployed now: {}", short_sha(v.deployed.as_deref()));
    let _ = writeln!(
        out,
        "path: {} ({})",
        text(Some(&v.path)),
        text(Some(&v.reason))
    );
    let _ = writeln!(out, "changed files: {}", v.changed);
    for c in &v.changes {
        let _ = writeln!(out, "  {:<6} {}", text(Some(&c.op)), text(Some(&c.path)));
    }
    if v.changes_truncated {
        let _ = writeln!(out, "  … (more; see --json for the first 200)");
    }
    if let Some(p) = &v.paths {
        let patterns = p.patterns.iter().map(|s| text(Some(s))).collect::<Vec<_>>();
        let verdict = match (p.matching, &v.deployed) {
            (_, None) => "nothing is deployed yet: a first deploy runs whatever changed",
            (0, Some(_)) => "a push would be ignored; a deploy by hand runs",
            _ => "a push deploys",
        };
        let _ = writeln!(
            out,
            "paths {}: {} changed files match ({verdict})",
            patterns.join(", "),
            p.matching
        );
    }
    for h in &v.hooks {
        let problem = h
            .problem
            .as_deref()
            .map(|p| format!(" (problem: {p})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "hook: {} {}{problem}",
            text(Some(&h.stage)),
            text(Some(&h.path))
        );
    }
    if let Some(lock) = &v.locked {
        let _ = writeln!(out, "locked {} (deploy needs --force)", lock_text(lock));
    }
    out
}

/// `deploy` / `rollback` without `--follow`: the id and where to look.
pub fn queued(v: &QueuedView, url: &str) -> String {
    format!(
        "deploy {} {} ({}, {}): {url}",
        v.deploy_id,
        text(Some(&v.deploy.status)),
        text(Some(&v.deploy.app)),
        text(Some(&v.resolved))
    )
}

/// `logs`: the deploy, then each step with its output.
pub fn logs(d: &DeployView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "deploy {} of {}: {} by {}, {} → {}, path {}, {}{}",
        d.id,
        text(Some(&d.app)),
        text(Some(&d.trigger)),
        text(d.actor.as_deref()),
        short_ref(d.git_ref.as_deref()),
        short_sha(d.commit()),
        text(d.path.as_deref()),
        deploy_status(d),
        d.duration_ms
            .map(|ms| format!(" in {}", duration(ms)))
            .unwrap_or_default()
    );
    for s in d.steps.iter().flatten() {
        let head = step_head(&s.stage, s.detail.as_deref(), Some(&s.started_at));
        let _ = write!(out, "{head}");
        if s.finished_at.is_some() {
            let _ = writeln!(out, " {}", step_result(s.ok, s.duration_ms));
        } else {
            let _ = writeln!(out, " (running)");
        }
        out.push_str(&indented(s.output.as_deref()));
    }
    for (said, label) in [(&d.reason, "reason"), (&d.error, "error")] {
        if let Some(v) = said.as_deref().filter(|s| !s.is_empty()) {
            let _ = writeln!(out, "{label}: {v}");
        }
    }
    out
}

/// `[12:00:01] sync detail …`
fn step_head(stage: &str, detail: Option<&str>, at: Option<&str>) -> String {
    let detail = detail
        .filter(|d| !d.is_empty())
        .map(|d| format!(" {d}"))
        .unwrap_or_default();
    format!("[{}] {}{detail} …", clock(at), text(Some(stage)))
}

/// `ok (3 ms)` / `FAILED (2.0 s)`.
fn step_result(ok: Option<bool>, ms: Option<i64>) -> String {
    let word = match ok {
        Some(true) => "ok",
        Some(false) => "FAILED",
        None => "done",
    };
    match ms {
        Some(ms) => format!("{word} ({})", duration(ms)),
        None => word.to_string(),
    }
}

/// A step's output, each line indented by four spaces (nothing for no output).
fn indented(output: Option<&str>) -> String {
    let mut out = String::new();
    for line in output.unwrap_or_default().lines() {
        let _ = writeln!(out, "    {line}");
    }
    out
}

/// The terminal line of a followed deploy.
fn terminal_line(id: u64, data: &StatusEvent) -> String {
    let status = text(Some(&data.status));
    match data.error.as_deref().filter(|e| !e.is_empty()) {
        Some(error) => format!("deploy {id} {status}: {error}"),
        None => match data.reason.as_deref().filter(|r| !r.is_empty()) {
            Some(reason) => format!("deploy {id} {status} ({reason})"),
            None => format!("deploy {id} {status}"),
        },
    }
}

/// `lock`
pub fn locked(v: &LockAnswer) -> String {
    format!("{} locked {}", text(Some(&v.app)), lock_text(&v.locked))
}

/// `unlock`
pub fn unlocked(v: &UnlockAnswer) -> String {
    match &v.unlocked {
        Some(l) => format!(
            "{} unlocked (was locked {})",
            text(Some(&v.app)),
            lock_text(l)
        ),
        None => format!("{} was not locked", text(Some(&v.app))),
    }
}

/// `maintenance on|off`
pub fn maintenance(v: &MaintenanceView) -> String {
    let state = if v.maintenance {
        "on: its proxy answers 503 with the maintenance page"
    } else {
        "off: its proxy forwards requests again"
    };
    format!("{} maintenance {state}", text(Some(&v.app)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::PathsView;

    #[test]
    fn a_plan_says_whether_a_push_would_deploy_an_app_with_paths() {
        let paths = |matching| PathsView {
            patterns: vec!["services/web/**".into()],
            matching,
        };
        let mut v = PlanView {
            deployed: Some("a".repeat(40)),
            paths: Some(paths(0)),
            ..PlanView::default()
        };
        assert!(plan(&v)
            .contains("paths services/web/**: 0 changed files match (a push would be ignored"));
        v.paths = Some(paths(2));
        assert!(plan(&v).contains(": 2 changed files match (a push deploys)"));
        v.deployed = None;
        assert!(plan(&v).contains("a first deploy runs whatever changed"));
        v.paths = None;
        assert!(!plan(&v).contains("paths "));
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(duration(3), "3 ms");
        assert_eq!(duration(2_140), "2.1 s");
        assert_eq!(duration(245_000), "4m 05s");
    }

    #[test]
    fn history_shows_short_shas_and_refs_and_tolerates_missing_fields() {
        let v = json!({ "app": "web", "deploys": [
            { "id": 3, "created_at": "2024-05-01T12:00:01Z", "trigger": "manual", "actor": "admin",
              "ref": "refs/heads/main", "to_commit": "0123456789abcdef", "path": "fast",
              "status": "failed", "reverted": true, "duration_ms": 1500 },
            { "id": 2 }
        ]});
        let t = history(&serde_json::from_value(v).unwrap());
        assert!(t.contains("2024-05-01 12:00:01"), "{t}");
        assert!(t.contains("0123456 "), "{t}");
        assert!(t.contains(" main "), "{t}");
        assert!(t.contains("failed (reverted)"), "{t}");
        assert!(t.contains("1.5 s"), "{t}");
    }
}
