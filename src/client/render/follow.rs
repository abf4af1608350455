//! The live view of a followed deploy: each SSE event (`step`, `status`) as it arrives —
//! plain lines when piped (a step's head written and flushed when it starts), indicatif
//! spinners on a terminal, or JSON lines. An event this client does not know is skipped, and
//! a status heard while a step's line is open waits until that line is closed.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{between, indented, step_head, step_result, terminal_line, text};
use crate::api::{StatusEvent, StepEvent};

/// One SSE event of a followed deploy, read as the API's types.
#[derive(Debug, Clone)]
pub enum Heard {
    /// A step started or ended.
    Step(StepEvent),
    /// The deploy's status changed.
    Status(StatusEvent),
    /// An event this client does not know, or data that does not parse: skipped.
    Other,
}

impl Heard {
    /// Read one SSE event by its name and data.
    pub fn parse(event: &str, data: &str) -> Heard {
        match event {
            "step" => serde_json::from_str(data).map_or(Heard::Other, Heard::Step),
            "status" => serde_json::from_str(data).map_or(Heard::Other, Heard::Status),
            _ => Heard::Other,
        }
    }

    /// The terminal status, if this is one.
    fn terminal(&self) -> Option<String> {
        match self {
            Heard::Status(s) if crate::api::is_terminal(&s.status) => Some(s.status.clone()),
            _ => None,
        }
    }
}

/// How a followed deploy is shown. `event` gets each SSE event (`step` or `status`) and its
/// data as sent; it answers the status once the terminal one arrived.
pub trait Follower {
    /// Show one event; `Some(status)` once the terminal status arrived.
    fn event(&mut self, event: &str, data: &str) -> anyhow::Result<Option<String>>;
    /// Clear spinners, flush.
    fn finish(&mut self);
}

/// `--json --follow`: one `{"event", "data"}` object per line, data as the API sent it.
pub struct JsonLines;

impl Follower for JsonLines {
    fn event(&mut self, event: &str, data: &str) -> anyhow::Result<Option<String>> {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(data) else {
            return Ok(None);
        };
        let line = serde_json::json!({ "event": event, "data": value });
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
        Ok(Heard::parse(event, data).terminal())
    }

    fn finish(&mut self) {}
}

/// When a step started and what it is, for its end line.
struct Started {
    stage: String,
    detail: Option<String>,
    at: Option<String>,
}

impl Started {
    fn of(e: &StepEvent) -> Started {
        Started {
            stage: e.stage.clone(),
            detail: e.detail.clone(),
            at: e.at.clone(),
        }
    }

    fn head(&self) -> String {
        step_head(&self.stage, self.detail.as_deref(), self.at.as_deref())
    }
}

/// The head of an ended step whose start was not heard.
fn head_without_start(e: &StepEvent) -> String {
    step_head(&e.stage, None, e.at.as_deref())
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
    /// Lines for deploy `id`, written to `out`.
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

    fn step_started(&mut self, e: &StepEvent) -> std::io::Result<()> {
        self.close_open_line()?;
        let started = Started::of(e);
        write!(self.out, "{}", started.head())?;
        self.open = Some(e.step);
        self.started.insert(e.step, started);
        Ok(())
    }

    fn step_ended(&mut self, e: &StepEvent) -> std::io::Result<()> {
        let started = self.started.remove(&e.step);
        let ms = started
            .as_ref()
            .and_then(|s| between(s.at.as_deref(), e.at.as_deref()));
        let result = step_result(e.ok, ms);
        if self.open == Some(e.step) {
            self.open = None;
            writeln!(self.out, " {result}")?;
            self.write_held()?;
        } else {
            self.close_open_line()?;
            let head = started.map_or_else(|| head_without_start(e), |s| s.head());
            writeln!(self.out, "{head} {result}")?;
        }
        write!(self.out, "{}", indented(e.output.as_deref()))
    }
}

impl<W: Write> Follower for Plain<W> {
    fn event(&mut self, event: &str, data: &str) -> anyhow::Result<Option<String>> {
        let heard = Heard::parse(event, data);
        match &heard {
            Heard::Step(e) if e.state == "started" => self.step_started(e)?,
            Heard::Step(e) if e.state == "ended" => self.step_ended(e)?,
            Heard::Status(s) if heard.terminal().is_some() => {
                self.held = None;
                self.close_open_line()?;
                writeln!(self.out, "{}", terminal_line(self.id, s))?;
            }
            // Joining a running deploy replays its running step and then the status: keep
            // that step's line whole and say the status after it.
            Heard::Status(s) => {
                self.held = Some(text(Some(&s.status)));
                if self.open.is_none() {
                    self.write_held()?;
                }
            }
            _ => {}
        }
        self.out.flush()?;
        Ok(heard.terminal())
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
    /// Spinners for deploy `id`, drawn on stdout.
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

    fn step_started(&mut self, e: &StepEvent) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        let style = ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        let started = Started::of(e);
        bar.set_message(started.head().trim_end_matches(" …").to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        self.running.insert(e.step, (bar, started));
    }

    fn step_ended(&mut self, e: &StepEvent) {
        let (head, ms) = match self.running.remove(&e.step) {
            Some((bar, s)) => {
                bar.finish_and_clear();
                self.multi.remove(&bar);
                (s.head(), between(s.at.as_deref(), e.at.as_deref()))
            }
            None => (head_without_start(e), None),
        };
        let mark = if e.ok == Some(false) { "✘" } else { "✔" };
        self.line(&format!("{mark} {head} {}", step_result(e.ok, ms)));
        let output = indented(e.output.as_deref());
        if !output.is_empty() {
            self.line(output.trim_end());
        }
    }
}

impl Follower for Spinners {
    fn event(&mut self, event: &str, data: &str) -> anyhow::Result<Option<String>> {
        let heard = Heard::parse(event, data);
        match &heard {
            Heard::Step(e) if e.state == "started" => self.step_started(e),
            Heard::Step(e) if e.state == "ended" => self.step_ended(e),
            Heard::Status(s) if heard.terminal().is_some() => {
                self.line(&terminal_line(self.id, s));
            }
            Heard::Status(s) => {
                self.line(&format!("deploy {} {}", self.id, text(Some(&s.status))));
            }
            _ => {}
        }
        Ok(heard.terminal())
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
    fn plain_follow_writes_one_line_per_step_with_its_output_indented() {
        let mut out = Vec::new();
        let mut plain = Plain::new(7, &mut out);
        let started = json!({ "step": 1, "stage": "sync", "state": "started", "detail": "2 files",
                              "at": "2024-05-01T12:00:01Z" });
        let ended = json!({ "step": 1, "stage": "sync", "state": "ended", "ok": true,
                            "output": "write a\nwrite b", "at": "2024-05-01T12:00:01.003Z" });
        assert_eq!(plain.event("step", &started.to_string()).unwrap(), None);
        assert_eq!(plain.event("step", &ended.to_string()).unwrap(), None);
        let done = json!({ "status": "failed", "reason": null, "error": "reload: boom" });
        assert_eq!(
            plain.event("status", &done.to_string()).unwrap().as_deref(),
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
        plain.event("step", &started.to_string()).unwrap();
        plain.event("status", &running.to_string()).unwrap();
        plain.event("step", &ended.to_string()).unwrap();
        plain.event("status", &running.to_string()).unwrap();
        let done = json!({ "status": "succeeded", "reason": null, "error": null });
        plain.event("status", &done.to_string()).unwrap();
        plain.finish();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[12:00:01] fetch … ok (20 ms)\ndeploy 7 running\ndeploy 7 succeeded\n"
        );
    }
}
