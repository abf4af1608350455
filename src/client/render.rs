//! The CLI's text: tables for `history` and `status`, `plan` and `logs` as readable text, and
//! the live view of a followed deploy (spinners on a terminal, plain lines when piped).
//!
//! Everything reads the API's JSON as `Value`s and treats every field as possibly missing:
//! an older or newer server must not make the client panic.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use comfy_table::{presets, Table};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The field as text, `-` when missing or null.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A commit id as `git log --oneline` shows it.
fn short_sha(v: &Value) -> String {
    v.as_str()
        .map_or_else(|| "-".to_string(), |s| s.chars().take(7).collect())
}

/// `refs/heads/main` → `main`, `refs/tags/v1` → `v1`.
fn short_ref(v: &Value) -> String {
    v.as_str().map_or_else(
        || "-".to_string(),
        |r| {
            r.strip_prefix("refs/heads/")
                .or_else(|| r.strip_prefix("refs/tags/"))
                .unwrap_or(r)
                .to_string()
        },
    )
}

fn parse_time(v: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v.as_str()?, &Rfc3339).ok()
}

/// `2024-05-01 12:00:01` (UTC, as the server records it).
fn when(v: &Value) -> String {
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
fn clock(v: &Value) -> String {
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

fn duration_of(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".to_string(), duration)
}

/// Milliseconds from `start` to `end` (RFC 3339 strings), if both parse.
fn between(start: &Value, end: &Value) -> Option<i64> {
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
fn deploy_status(d: &Value) -> String {
    let status = text(&d["status"]);
    if d["reverted"].as_bool() == Some(true) {
        format!("{status} (reverted)")
    } else {
        status
    }
}

/// `by alice since 2024-05-01 12:00:01: migrating db`
fn lock_text(l: &Value) -> String {
    format!(
        "by {} since {}: {}",
        text(&l["locked_by"]),
        when(&l["locked_at"]),
        text(&l["reason"])
    )
}

/// `history`: one row per deploy, newest first.
pub fn history(v: &Value) -> String {
    let deploys = v["deploys"].as_array().map_or(&[][..], Vec::as_slice);
    if deploys.is_empty() {
        return format!("no deploys of {} yet", text(&v["app"]));
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
    for d in deploys {
        let sha = if d["to_commit"].is_string() {
            &d["to_commit"]
        } else {
            &d["requested_sha"]
        };
        t.add_row(vec![
            text(&d["id"]),
            when(&d["created_at"]),
            text(&d["trigger"]),
            text(&d["actor"]),
            short_ref(&d["ref"]),
            short_sha(sha),
            text(&d["path"]),
            deploy_status(d),
            duration_of(&d["duration_ms"]),
        ]);
    }
    lines_of(&t)
}

/// `status`: one row per app.
pub fn status(v: &Value) -> String {
    let apps = v["apps"].as_array().map_or(&[][..], Vec::as_slice);
    if apps.is_empty() {
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
    for app in apps {
        let last = &app["last_deploy"];
        let last = if last.is_object() {
            format!("#{} {}", text(&last["id"]), deploy_status(last))
        } else {
            "-".to_string()
        };
        let locked = &app["locked"];
        let locked = if locked.is_object() {
            lock_text(locked)
        } else {
            "no".to_string()
        };
        let proxy = &app["proxy"];
        let proxy = if !proxy.is_object() {
            "-".to_string()
        } else if proxy["maintenance"].as_bool() == Some(true) {
            format!("{} maintenance", text(&proxy["listen"]))
        } else {
            format!("{} → {}", text(&proxy["listen"]), text(&proxy["upstream"]))
        };
        t.add_row(vec![
            text(&app["name"]),
            short_sha(&app["deployed"]["commit"]),
            when(&app["deployed"]["since"]),
            last,
            locked,
            proxy,
        ]);
    }
    lines_of(&t)
}

/// `plan`: what a deploy would do now.
pub fn plan(v: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: would deploy {} ({})",
        text(&v["app"]),
        short_sha(&v["commit"]),
        text(&v["resolved"])
    );
    let _ = writeln!(out, "deployed now: {}", short_sha(&v["deployed"]));
    let _ = writeln!(out, "path: {} ({})", text(&v["path"]), text(&v["reason"]));
    let changes = v["changes"].as_array().map_or(&[][..], Vec::as_slice);
    let _ = writeln!(out, "changed files: {}", text(&v["changed"]));
    for c in changes {
        let _ = writeln!(out, "  {:<6} {}", text(&c["op"]), text(&c["path"]));
    }
    if v["changes_truncated"].as_bool() == Some(true) {
        let _ = writeln!(out, "  … (more; see --json for the first 200)");
    }
    for h in v["hooks"].as_array().map_or(&[][..], Vec::as_slice) {
        let problem = h["problem"]
            .as_str()
            .map(|p| format!(" (problem: {p})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "hook: {} {}{problem}",
            text(&h["stage"]),
            text(&h["path"])
        );
    }
    if v["locked"].is_object() {
        let _ = writeln!(
            out,
            "locked {} (deploy needs --force)",
            lock_text(&v["locked"])
        );
    }
    out
}

/// `deploy` / `rollback` without `--follow`: the id and where to look.
pub fn queued(v: &Value, url: &str) -> String {
    format!(
        "deploy {} {} ({}, {}): {url}",
        text(&v["deploy_id"]),
        text(&v["status"]),
        text(&v["app"]),
        text(&v["resolved"])
    )
}

/// `logs`: the deploy, then each step with its output.
pub fn logs(d: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "deploy {} of {}: {} by {}, {} → {}, path {}, {}{}",
        text(&d["id"]),
        text(&d["app"]),
        text(&d["trigger"]),
        text(&d["actor"]),
        short_ref(&d["ref"]),
        short_sha(if d["to_commit"].is_string() {
            &d["to_commit"]
        } else {
            &d["requested_sha"]
        }),
        text(&d["path"]),
        deploy_status(d),
        d["duration_ms"]
            .as_i64()
            .map(|ms| format!(" in {}", duration(ms)))
            .unwrap_or_default()
    );
    for s in d["steps"].as_array().map_or(&[][..], Vec::as_slice) {
        let ended = s["finished_at"].is_string();
        let _ = write!(
            out,
            "{}",
            step_head(&s["stage"], &s["detail"], &s["started_at"])
        );
        if ended {
            let _ = writeln!(out, " {}", step_result(&s["ok"], s["duration_ms"].as_i64()));
        } else {
            let _ = writeln!(out, " (running)");
        }
        out.push_str(&indented(&s["output"]));
    }
    for (key, label) in [("reason", "reason"), ("error", "error")] {
        if let Some(v) = d[key].as_str().filter(|s| !s.is_empty()) {
            let _ = writeln!(out, "{label}: {v}");
        }
    }
    out
}

/// `[12:00:01] sync detail …`
fn step_head(stage: &Value, detail: &Value, at: &Value) -> String {
    let detail = detail
        .as_str()
        .filter(|d| !d.is_empty())
        .map(|d| format!(" {d}"))
        .unwrap_or_default();
    format!("[{}] {}{detail} …", clock(at), text(stage))
}

/// `ok (3 ms)` / `FAILED (2.0 s)`.
fn step_result(ok: &Value, ms: Option<i64>) -> String {
    let word = match ok.as_bool() {
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
fn indented(output: &Value) -> String {
    let mut out = String::new();
    for line in output.as_str().unwrap_or_default().lines() {
        let _ = writeln!(out, "    {line}");
    }
    out
}

/// The terminal line of a followed deploy.
fn terminal_line(id: u64, data: &Value) -> String {
    let status = text(&data["status"]);
    match data["error"].as_str().filter(|e| !e.is_empty()) {
        Some(error) => format!("deploy {id} {status}: {error}"),
        None => match data["reason"].as_str().filter(|r| !r.is_empty()) {
            Some(reason) => format!("deploy {id} {status} ({reason})"),
            None => format!("deploy {id} {status}"),
        },
    }
}

/// `lock`
pub fn locked(v: &Value) -> String {
    format!("{} locked {}", text(&v["app"]), lock_text(&v["locked"]))
}

/// `unlock`
pub fn unlocked(v: &Value) -> String {
    let l = &v["unlocked"];
    if l.is_object() {
        format!("{} unlocked (was locked {})", text(&v["app"]), lock_text(l))
    } else {
        format!("{} was not locked", text(&v["app"]))
    }
}

/// `maintenance on|off`
pub fn maintenance(v: &Value) -> String {
    let state = if v["maintenance"].as_bool() == Some(true) {
        "on: its proxy answers 503 with the maintenance page"
    } else {
        "off: its proxy forwards requests again"
    };
    format!("{} maintenance {state}", text(&v["app"]))
}

/// How a followed deploy is shown. `event` gets each SSE event (`step` or `status`) and its
/// data; it answers the status once the terminal one arrived.
pub trait Follower {
    fn event(&mut self, event: &str, data: &Value) -> anyhow::Result<Option<String>>;
    /// Clear spinners, flush.
    fn finish(&mut self);
}

/// The terminal status in a `status` event, if it is one.
fn terminal(event: &str, data: &Value) -> Option<String> {
    let status = data["status"].as_str()?;
    (event == "status" && crate::store::is_terminal(status)).then(|| status.to_string())
}

/// `--json --follow`: one `{"event", "data"}` object per line, data as the API sent it.
pub struct JsonLines;

impl Follower for JsonLines {
    fn event(&mut self, event: &str, data: &Value) -> anyhow::Result<Option<String>> {
        let line = serde_json::json!({ "event": event, "data": data });
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
        Ok(terminal(event, data))
    }

    fn finish(&mut self) {}
}

/// When a step started and what it is, for its end line.
struct Started {
    stage: Value,
    detail: Value,
    at: Value,
}

/// Plain lines for logs and pipes: `[12:00:01] sync … ok (3 ms)`, output indented. The head
/// is written (and flushed) when the step starts, so a slow step shows what it is doing.
pub struct Plain<W: Write> {
    id: u64,
    out: W,
    started: HashMap<i64, Started>,
    /// The step whose head line is written without its result yet.
    open: Option<i64>,
    /// A status heard while `open` was set, written once that line is closed.
    held: Option<String>,
    /// The last status line written, so a replayed status is not written twice.
    said: Option<String>,
}

impl<W: Write> Plain<W> {
    pub fn new(id: u64, out: W) -> Plain<W> {
        Plain {
            id,
            out,
            started: HashMap::new(),
            open: None,
            held: None,
            said: None,
        }
    }

    fn close_open_line(&mut self) -> std::io::Result<()> {
        if self.open.take().is_some() {
            writeln!(self.out)?;
        }
        self.write_held()
    }

    /// Write `deploy N STATUS` unless it is the status written last.
    fn write_held(&mut self) -> std::io::Result<()> {
        if let Some(status) = self.held.take() {
            if self.said.as_ref() != Some(&status) {
                writeln!(self.out, "deploy {} {status}", self.id)?;
                self.said = Some(status);
            }
        }
        Ok(())
    }
}

impl<W: Write> Follower for Plain<W> {
    fn event(&mut self, event: &str, data: &Value) -> anyhow::Result<Option<String>> {
        let step = data["step"].as_i64().unwrap_or_default();
        match (event, data["state"].as_str()) {
            ("step", Some("started")) => {
                self.close_open_line()?;
                write!(
                    self.out,
                    "{}",
                    step_head(&data["stage"], &data["detail"], &data["at"])
                )?;
                self.open = Some(step);
                self.started.insert(
                    step,
                    Started {
                        stage: data["stage"].clone(),
                        detail: data["detail"].clone(),
                        at: data["at"].clone(),
                    },
                );
            }
            ("step", Some("ended")) => {
                let started = self.started.remove(&step);
                let ms = started.as_ref().and_then(|s| between(&s.at, &data["at"]));
                let result = step_result(&data["ok"], ms);
                if self.open == Some(step) {
                    self.open = None;
                    writeln!(self.out, " {result}")?;
                    self.write_held()?;
                } else {
                    self.close_open_line()?;
                    let head = match started {
                        Some(s) => step_head(&s.stage, &s.detail, &s.at),
                        None => step_head(&data["stage"], &Value::Null, &data["at"]),
                    };
                    writeln!(self.out, "{head} {result}")?;
                }
                write!(self.out, "{}", indented(&data["output"]))?;
            }
            ("status", _) if terminal(event, data).is_some() => {
                self.held = None;
                self.close_open_line()?;
                writeln!(self.out, "{}", terminal_line(self.id, data))?;
            }
            // Joining a running deploy replays its running step and then the status: keep
            // that step's line whole and say the status after it.
            ("status", _) => {
                self.held = Some(text(&data["status"]));
                if self.open.is_none() {
                    self.write_held()?;
                }
            }
            _ => {}
        }
        self.out.flush()?;
        Ok(terminal(event, data))
    }

    fn finish(&mut self) {
        let _ = self.close_open_line();
        let _ = self.out.flush();
    }
}

/// On a terminal: a spinner per running step, replaced by its result line when it ends.
pub struct Spinners {
    id: u64,
    multi: MultiProgress,
    running: HashMap<i64, (ProgressBar, Started)>,
}

impl Spinners {
    pub fn new(id: u64) -> Spinners {
        Spinners {
            id,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            running: HashMap::new(),
        }
    }

    fn line(&self, line: &str) {
        // Printed above the spinners; falls back to stdout if the terminal went away.
        if self.multi.println(line).is_err() {
            println!("{line}");
        }
    }
}

impl Follower for Spinners {
    fn event(&mut self, event: &str, data: &Value) -> anyhow::Result<Option<String>> {
        let step = data["step"].as_i64().unwrap_or_default();
        match (event, data["state"].as_str()) {
            ("step", Some("started")) => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                let style = ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                bar.set_style(style);
                let head = step_head(&data["stage"], &data["detail"], &data["at"]);
                bar.set_message(head.trim_end_matches(" …").to_string());
                bar.enable_steady_tick(Duration::from_millis(100));
                let started = Started {
                    stage: data["stage"].clone(),
                    detail: data["detail"].clone(),
                    at: data["at"].clone(),
                };
                self.running.insert(step, (bar, started));
            }
            ("step", Some("ended")) => {
                let (head, ms) = match self.running.remove(&step) {
                    Some((bar, s)) => {
                        bar.finish_and_clear();
                        self.multi.remove(&bar);
                        (
                            step_head(&s.stage, &s.detail, &s.at),
                            between(&s.at, &data["at"]),
                        )
                    }
                    None => (step_head(&data["stage"], &Value::Null, &data["at"]), None),
                };
                let mark = if data["ok"].as_bool() == Some(false) {
                    "✘"
                } else {
                    "✔"
                };
                self.line(&format!("{mark} {head} {}", step_result(&data["ok"], ms)));
                let output = indented(&data["output"]);
                if !output.is_empty() {
                    self.line(output.trim_end());
                }
            }
            ("status", _) => {
                if terminal(event, data).is_some() {
                    self.line(&terminal_line(self.id, data));
                } else {
                    self.line(&format!("deploy {} {}", self.id, text(&data["status"])));
                }
            }
            _ => {}
        }
        Ok(terminal(event, data))
    }

    fn finish(&mut self) {
        for (_, (bar, _)) in self.running.drain() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(duration(3), "3 ms");
        assert_eq!(duration(2_140), "2.1 s");
        assert_eq!(duration(245_000), "4m 05s");
    }

    #[test]
    fn plain_follow_writes_one_line_per_step_with_its_output_indented() {
        let mut out = Vec::new();
        let mut plain = Plain::new(7, &mut out);
        let started = json!({ "step": 1, "stage": "sync", "state": "started", "detail": "2 files",
                              "at": "2024-05-01T12:00:01Z" });
        let ended = json!({ "step": 1, "stage": "sync", "state": "ended", "ok": true,
                            "output": "write a\nwrite b", "at": "2024-05-01T12:00:01.003Z" });
        assert_eq!(plain.event("step", &started).unwrap(), None);
        assert_eq!(plain.event("step", &ended).unwrap(), None);
        let done = json!({ "status": "failed", "reason": null, "error": "reload: boom" });
        assert_eq!(
            plain.event("status", &done).unwrap().as_deref(),
            Some("failed")
        );
        plain.finish();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[12:00:01] sync 2 files … ok (3 ms)\n    write a\n    write b\n\
             deploy 7 failed: reload: boom\n"
        );
    }

    #[test]
    fn a_status_heard_while_a_step_runs_does_not_split_that_steps_line() {
        // `--follow` joining a running deploy: the replay sends the running step, then the
        // current status, then the live end of that step.
        let mut out = Vec::new();
        let mut plain = Plain::new(7, &mut out);
        let started = json!({ "step": 1, "stage": "fetch", "state": "started", "detail": null,
                              "at": "2024-05-01T12:00:01Z" });
        let running = json!({ "status": "running", "reason": null, "error": null });
        let ended = json!({ "step": 1, "stage": "fetch", "state": "ended", "ok": true,
                            "output": "", "at": "2024-05-01T12:00:01.020Z" });
        plain.event("step", &started).unwrap();
        plain.event("status", &running).unwrap();
        plain.event("step", &ended).unwrap();
        plain.event("status", &running).unwrap();
        let done = json!({ "status": "succeeded", "reason": null, "error": null });
        plain.event("status", &done).unwrap();
        plain.finish();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[12:00:01] fetch … ok (20 ms)\ndeploy 7 running\ndeploy 7 succeeded\n"
        );
    }

    #[test]
    fn history_shows_short_shas_and_refs_and_tolerates_missing_fields() {
        let v = json!({ "app": "web", "deploys": [
            { "id": 3, "created_at": "2024-05-01T12:00:01Z", "trigger": "manual", "actor": "admin",
              "ref": "refs/heads/main", "to_commit": "0123456789abcdef", "path": "fast",
              "status": "failed", "reverted": true, "duration_ms": 1500 },
            { "id": 2 }
        ]});
        let t = history(&v);
        assert!(t.contains("2024-05-01 12:00:01"), "{t}");
        assert!(t.contains("0123456 "), "{t}");
        assert!(t.contains(" main "), "{t}");
        assert!(t.contains("failed (reverted)"), "{t}");
        assert!(t.contains("1.5 s"), "{t}");
    }
}
