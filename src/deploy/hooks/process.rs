//! Running one hook executable as a process: a cleared environment, stdin from `/dev/null`,
//! its own process group — SIGKILLed when the hook exits, runs out of time or its future is
//! dropped — and the tail of its stdout and stderr, interleaved as written.
//!
//! It knows nothing of deploys, the store or steps: the caller turns a [`Ran`] into a step.

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Output kept per hook: its last 60 KiB (a step row keeps 64 KiB; the rest is the status).
pub const OUTPUT_LIMIT: usize = 60 * 1024;
/// How long output is still read after the hook exited and its group was killed (a process
/// that left the group with `setsid` may hold the pipes open for ever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How a hook's process ended.
#[derive(Debug)]
pub enum Outcome {
    /// It ended by itself (or by a signal) with this status.
    Exited(ExitStatus),
    /// Still running at the limit: its process group was killed.
    TimedOut(Duration),
}

/// A finished hook: how it ended and the tail of its output.
#[derive(Debug)]
pub struct Ran {
    /// How it ended.
    pub outcome: Outcome,
    /// stdout and stderr interleaved in arrival order, at most [`OUTPUT_LIMIT`] bytes (the
    /// newest), with a line saying how much was cut before them.
    pub output: String,
}

/// Run one executable: argv is only `program`, the environment exactly `env`, stdin
/// `/dev/null`, cwd `cwd`, in a new process group. When it exits, or at `timeout`, the whole
/// group gets SIGKILL. `Err` only when it could not be started.
pub async fn run(
    program: &Path,
    cwd: &Path,
    env: &[(String, OsString)],
    timeout: Duration,
) -> anyhow::Result<Ran> {
    let mut child = tokio::process::Command::new(program)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    // The child leads its own group: the group id is its pid.
    let group = KillGroup(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw)
            .filter(|pid| *pid != rustix::process::Pid::INIT),
    );
    let tail = Arc::new(Mutex::new(Tail::new(OUTPUT_LIMIT)));
    let mut readers = tokio::task::JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(pump(out, tail.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(pump(err, tail.clone()));
    }
    let outcome = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => {
            let status = status?;
            // Anything it left running in its group goes too (and stops holding the pipes).
            group.kill();
            Outcome::Exited(status)
        }
        Err(_) => {
            // Killed while the leader is unreaped, so the group id cannot have been reused.
            group.kill();
            child.wait().await?;
            Outcome::TimedOut(timeout)
        }
    };
    drop(group);
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        readers.abort_all();
    }
    let output = tail.lock().map(|mut t| t.text()).unwrap_or_default();
    Ok(Ran { outcome, output })
}

/// Copy a pipe into the shared tail until EOF or a read error.
async fn pump(mut pipe: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        if let (Ok(mut t), Some(chunk)) = (tail.lock(), buf.get(..n)) {
            t.push(chunk);
        }
    }
}

/// SIGKILL to a process group, on `kill` or when dropped (a deploy future dropped mid-hook
/// leaves nothing running).
struct KillGroup(Option<rustix::process::Pid>);

impl KillGroup {
    fn kill(&self) {
        if let Some(pid) = self.0 {
            // ESRCH: the group is already gone.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `limit` bytes written, and how many came before them.
#[derive(Debug)]
struct Tail {
    buf: Vec<u8>,
    cut: usize,
    limit: usize,
}

impl Tail {
    fn new(limit: usize) -> Tail {
        Tail {
            buf: Vec::new(),
            cut: 0,
            limit,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trim in batches so a chatty hook costs O(bytes), not O(bytes × limit).
        if self.buf.len() > 2 * self.limit {
            self.trim();
        }
    }

    fn trim(&mut self) {
        let excess = self.buf.len().saturating_sub(self.limit);
        self.buf.drain(..excess);
        self.cut += excess;
    }

    /// The kept bytes as text (invalid UTF-8 replaced), starting on a character boundary.
    fn text(&mut self) -> String {
        self.trim();
        let mut start = 0;
        if self.cut > 0 {
            // Skip the rest of a character whose first bytes were cut.
            while start < 3 && self.buf.get(start).is_some_and(|b| b & 0xC0 == 0x80) {
                start += 1;
            }
        }
        let text = String::from_utf8_lossy(self.buf.get(start..).unwrap_or_default());
        if self.cut + start == 0 {
            text.into_owned()
        } else {
            format!(
                "… ({} earlier bytes of output cut; the last {} KiB are kept)\n{text}",
                self.cut + start,
                self.limit / 1024
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_under_the_limit_is_kept_whole() {
        let mut t = Tail::new(16);
        t.push(b"hello ");
        t.push(b"world");
        assert_eq!(t.text(), "hello world");
    }

    #[test]
    fn output_over_the_limit_keeps_the_newest_bytes_and_says_so() {
        let mut t = Tail::new(1024);
        for i in 0..1000 {
            t.push(format!("line {i:04}\n").as_bytes());
        }
        let text = t.text();
        assert!(
            text.starts_with("… (8976 earlier bytes of output cut"),
            "{text}"
        );
        assert!(text.ends_with("line 0999\n"));
        let kept = text.split_once('\n').unwrap().1;
        assert_eq!(kept.len(), 1024);
    }

    #[test]
    fn a_cut_through_a_character_starts_at_the_next_one() {
        let mut t = Tail::new(4);
        t.push("aé€".as_bytes()); // 1 + 2 + 3 bytes: the cut lands inside 'é'
        let text = t.text();
        assert!(text.ends_with("\n€"), "{text}");
        assert!(text.contains("(3 earlier bytes"), "{text}");
    }
}
