//! SSH for libgit2 through OpenSSH's `ssh` (as the git CLI does), so host keys follow OpenSSH's
//! own `known_hosts` rules and a push's fetch rides a control master's open connection.
//!
//! Options dockhand always sets: `BatchMode` (never a prompt), `StrictHostKeyChecking=yes`
//! (never trust a new host key on first use), the app's `known_hosts` alone when it pins one,
//! `IdentitiesOnly` with the app's deploy key, and a control master per app and key
//! (`ControlPersist` 60 s) whose socket lives in a 0700 directory inside the app's cache.

use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream};
use sha2::{Digest, Sha256};

use super::Reach;
use crate::git::Credentials;

/// How much of ssh's stderr is kept to explain a failure.
const STDERR_CAP: usize = 64 * 1024;
/// The longest control socket path that works: `sun_path` holds 107 bytes, and ssh binds a
/// temporary name 17 bytes longer before renaming it into place.
const SOCKET_PATH_MAX: usize = 90;

pub(super) struct Ssh {
    reach: Reach,
}

impl Ssh {
    pub fn new(reach: Reach) -> Ssh {
        Ssh { reach }
    }

    /// The `ssh` command that runs `git-upload-pack` at `target` with dockhand's options (see
    /// the module doc), its connection attempt bounded by `left`, the time the fetch has left.
    fn command(&self, target: &Target, left: Duration) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("ConnectTimeout={}", left.as_secs().max(1)));
        if let Some(file) = &self.reach.access.known_hosts {
            command
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", ssh_path(file)))
                .args(["-o", "GlobalKnownHostsFile=/dev/null"]);
        }
        if let Credentials::SshKey(key) = &self.reach.access.credentials {
            command
                .arg("-i")
                .arg(key)
                .args(["-o", "IdentitiesOnly=yes"]);
        }
        match control_socket(&self.reach, target) {
            Some(socket) => {
                command
                    .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=60"])
                    .arg("-o")
                    .arg(format!("ControlPath={}", ssh_path(&socket)));
            }
            None => {
                command.args(["-o", "ControlMaster=no", "-o", "ControlPath=none"]);
            }
        }
        if let Some(port) = target.port.filter(|p| *p != 22) {
            // Look the host key up as `[host]:port` only: without an alias OpenSSH falls back
            // to a port-less entry, which is for port 22 (and maybe another server).
            command
                .arg("-o")
                .arg(format!("HostKeyAlias=[{}]:{port}", target.host))
                .arg("-p")
                .arg(port.to_string());
        }
        if let Some(user) = &target.user {
            command.arg("-l").arg(user);
        }
        command
            .arg("--")
            .arg(&target.host)
            .arg(remote_command(&target.path))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

/// Where to connect and what to run there.
#[derive(Debug, PartialEq)]
struct Target {
    user: Option<String>,
    host: String,
    port: Option<u16>,
    path: String,
}

/// `ssh://[user@]host[:port]/path` (also `ssh+git://`, `git+ssh://`) or scp-like
/// `[user@]host:path`.
fn parse(url: &str) -> Result<Target, String> {
    let bad = || format!("cannot read {url:?} as an SSH repo URL");
    for scheme in ["ssh://", "ssh+git://", "git+ssh://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let parsed = reqwest::Url::parse(&format!("ssh://{rest}")).map_err(|_| bad())?;
            let host = parsed.host_str().ok_or_else(bad)?;
            let host = host.trim_matches(['[', ']']).to_string();
            let user = (!parsed.username().is_empty()).then(|| {
                percent_encoding::percent_decode_str(parsed.username())
                    .decode_utf8_lossy()
                    .into_owned()
            });
            let path = percent_encoding::percent_decode_str(parsed.path())
                .decode_utf8_lossy()
                .into_owned();
            // `ssh://host/~user/repo` names a path relative to a home directory, as in git.
            let path = match path.strip_prefix("/~") {
                Some(home) => format!("~{home}"),
                None => path,
            };
            return check(Target {
                user,
                host,
                port: parsed.port(),
                path,
            })
            .ok_or_else(bad);
        }
    }
    let (authority, path) = url.split_once(':').ok_or_else(bad)?;
    let (user, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h.to_string()),
        None => (None, authority.to_string()),
    };
    check(Target {
        user,
        host,
        port: None,
        path: path.to_string(),
    })
    .ok_or_else(bad)
}

/// Refuse what ssh would read as an option or what cannot be a host.
fn check(t: Target) -> Option<Target> {
    let option_like = |s: &str| s.starts_with('-');
    let ok = !t.host.is_empty()
        && !option_like(&t.host)
        && !t.host.contains(['/', ' ', '\0'])
        && t.user
            .as_deref()
            .is_none_or(|u| !u.is_empty() && !option_like(u))
        && !t.path.is_empty()
        && !t.path.contains('\0');
    ok.then_some(t)
}

/// The remote command, quoted for the remote shell as git quotes it.
fn remote_command(path: &str) -> String {
    format!("git-upload-pack '{}'", path.replace('\'', r"'\''"))
}

impl SmartSubtransport for Ssh {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        if action != Service::UploadPackLs {
            return Err(git2::Error::from_str("dockhand only fetches"));
        }
        let target = parse(url).map_err(|e| self.reach.fail_git(e))?;
        let left = self
            .reach
            .remaining()
            .map_err(|e| self.reach.fail_git(e.to_string()))?;
        let mut child = self.command(&target, left).spawn().map_err(|e| {
            self.reach.fail_git(if e.kind() == io::ErrorKind::NotFound {
                "an ssh:// origin needs OpenSSH's client (`ssh`) on this host: install openssh-client"
                    .to_string()
            } else {
                format!("starting ssh: {e}")
            })
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let errors = child
            .stderr
            .take()
            .map(|pipe| keep_stderr(pipe, stderr.clone()));
        let (stop, watchdog) = watchdog(self.reach.clone(), child.id());
        Ok(Box::new(Stream {
            reach: self.reach.clone(),
            target,
            stdin,
            stdout,
            child,
            stderr,
            errors,
            stop: Some(stop),
            watchdog: Some(watchdog),
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// Read ssh's stderr to its end on a thread of its own, keeping the first [`STDERR_CAP`] bytes
/// in `kept` to explain a failure.
fn keep_stderr(mut pipe: ChildStderr, kept: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
            let room = STDERR_CAP.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
    })
}

/// The deadline: kill ssh (`pid`) when the fetch's time is up, recording the timeout, unless
/// the returned sender is dropped first.
fn watchdog(reach: Reach, pid: u32) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let left = reach
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(left) {
            reach
                .timed_out
                .store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    });
    (stop, watchdog)
}

/// A path as an `ssh -o` value: `%` would start a token, and a space would end the value.
fn ssh_path(path: &Path) -> String {
    let s = path.to_string_lossy().replace('%', "%%");
    if s.contains([' ', '"']) {
        format!("\"{}\"", s.replace('"', ""))
    } else {
        s
    }
}

/// The control master's socket for this app, key and destination: in the app's cache when the
/// path fits a Unix socket address, else in a private directory under the temp dir; `None`
/// when neither works (then every fetch makes its own connection).
fn control_socket(reach: &Reach, target: &Target) -> Option<PathBuf> {
    let mut id = Sha256::new();
    id.update(reach.control_dir.as_os_str().as_encoded_bytes());
    id.update([0]);
    if let Credentials::SshKey(key) = &reach.access.credentials {
        id.update(key.as_os_str().as_encoded_bytes());
        // A replaced key must not ride the old key's connection.
        id.update(std::fs::read(key).unwrap_or_default());
    }
    id.update([0]);
    if let Some(k) = &reach.access.known_hosts {
        id.update(k.as_os_str().as_encoded_bytes());
    }
    id.update([0]);
    id.update(target.user.as_deref().unwrap_or("").as_bytes());
    id.update([0]);
    id.update(target.host.as_bytes());
    id.update(target.port.unwrap_or(22).to_be_bytes());
    let name = hex::encode(&id.finalize()[..8]);
    let fits = |dir: &Path| dir.join(&name).as_os_str().len() <= SOCKET_PATH_MAX;
    let dir = if fits(&reach.control_dir) {
        make_private_dir(&reach.control_dir).ok()?;
        reach.control_dir.clone()
    } else {
        let uid = rustix::process::getuid().as_raw();
        let dir = std::env::temp_dir().join(format!("dockhand-ssh-{uid}"));
        if !fits(&dir) {
            return None;
        }
        make_private_dir(&dir).ok()?;
        dir
    };
    Some(dir.join(name))
}

/// A directory only this user can enter: created 0700, or an existing one that is a real
/// directory (not a symlink) owned by this user with no access for others.
fn make_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let mine = meta.uid() == rustix::process::getuid().as_raw();
    if !meta.is_dir() || !mine || meta.mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "{} is not a private directory of this user",
            dir.display()
        )));
    }
    Ok(())
}

struct Stream {
    reach: Reach,
    target: Target,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    errors: Option<JoinHandle<()>>,
    stop: Option<mpsc::Sender<()>>,
    watchdog: Option<JoinHandle<()>>,
}

impl Stream {
    /// ssh's output ended: fine when it exited successfully, else say why, from what it
    /// printed.
    fn ended(&mut self) -> Option<io::Error> {
        if self.reach.timed_out() {
            return Some(self.reach.timeout_error());
        }
        if self.child.wait().is_ok_and(|status| status.success()) {
            return None;
        }
        if let Some(t) = self.errors.take() {
            let _ = t.join();
        }
        let stderr = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&stderr).to_string();
        let message = explain(&text, &self.target, &self.reach);
        Some(self.reach.fail(io::ErrorKind::Other, message))
    }
}

fn explain(stderr: &str, t: &Target, reach: &Reach) -> String {
    let at = match t.port {
        Some(p) => format!("{}:{p}", t.host),
        None => t.host.clone(),
    };
    let known = match &reach.access.known_hosts {
        Some(f) => format!("known_hosts {}", f.display()),
        None => {
            "~/.ssh/known_hosts or /etc/ssh/ssh_known_hosts (set known_hosts to pin it)".to_string()
        }
    };
    if stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return format!(
            "the SSH host key of {at} has CHANGED from the one in {known}: this may be a \
             man-in-the-middle attack; fetch refused. If the server's key really changed, \
             replace its entry"
        );
    }
    if stderr.contains("Host key verification failed") {
        return format!(
            "the SSH host key of {at} is unknown: it is not in {known}. Check the server's \
             fingerprint, then add it (ssh-keyscan{} {} >> FILE)",
            t.port.map(|p| format!(" -p {p}")).unwrap_or_default(),
            t.host
        );
    }
    if stderr.contains("Permission denied") {
        return match &reach.access.credentials {
            Credentials::SshKey(k) => format!(
                "{at} refused the SSH key {}: is it a deploy key of this repository?",
                k.display()
            ),
            _ => format!("{at} refused the SSH login: set ssh_key to the app's deploy key"),
        };
    }
    let last: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match last.last() {
        Some(line) => format!("ssh to {at} failed: {line}"),
        None => format!("ssh to {at} ended before the git protocol did"),
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(out) = self.stdout.as_mut() else {
            return Ok(0);
        };
        match out.read(buf) {
            Ok(0) if !buf.is_empty() => match self.ended() {
                Some(e) => Err(e),
                None => Ok(0),
            },
            Ok(n) => Ok(n),
            Err(_) if self.reach.timed_out() => Err(self.reach.timeout_error()),
            Err(e) => Err(e),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(io::Error::other("ssh's input is closed"));
        };
        match stdin.write(data) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(self.ended().unwrap_or(e)),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Stop the watchdog first, so it never signals a pid this drop has reaped.
        drop(self.stop.take());
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        drop(self.stdin.take());
        drop(self.stdout.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(t) = self.errors.take() {
            let _ = t.join();
        }
    }
}

/// Refuse a deploy key ssh could only load with a passphrase (nobody is there to type it), or
/// that is no private key at all: `check` and startup say so, not the first deploy.
pub(crate) fn check_key(key: &Path) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-y", "-P", "", "-f"])
        .arg(key)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "ssh_key needs OpenSSH's client tools (ssh, ssh-keygen) on this host: install openssh-client"
                )
            } else {
                anyhow::anyhow!("running ssh-keygen to read ssh_key: {e}")
            }
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("passphrase") {
        anyhow::bail!(
            "ssh_key {} is protected by a passphrase, which dockhand cannot type: use a deploy key \
             without one (ssh-keygen -p -N '' -f KEY), readable only by dockhand",
            key.display()
        );
    }
    anyhow::bail!(
        "ssh_key {}: ssh cannot load it as a private key ({})",
        key.display(),
        stderr.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> Target {
        Target {
            user: user.map(str::to_string),
            host: host.to_string(),
            port,
            path: path.to_string(),
        }
    }

    #[test]
    fn urls_of_every_ssh_form_parse() {
        assert_eq!(
            parse("ssh://git@127.0.0.1:2222/srv/app.git").unwrap(),
            t(Some("git"), "127.0.0.1", Some(2222), "/srv/app.git")
        );
        assert_eq!(
            parse("git@github.com:org/app.git").unwrap(),
            t(Some("git"), "github.com", None, "org/app.git")
        );
        assert_eq!(
            parse("ssh://host/~alice/app.git").unwrap(),
            t(None, "host", None, "~alice/app.git")
        );
        assert_eq!(
            parse("ssh://[::1]:2222/a").unwrap(),
            t(None, "::1", Some(2222), "/a")
        );
    }

    #[test]
    fn option_like_hosts_and_users_are_refused() {
        assert!(parse("ssh://-oProxyCommand=x/a").is_err());
        assert!(parse("-oProxyCommand=x:a").is_err());
        assert!(parse("ssh://-l@host/a").is_err());
        assert!(parse("host:").is_err());
    }

    #[test]
    fn the_remote_path_is_quoted_for_the_remote_shell() {
        assert_eq!(
            remote_command("/srv/it's; rm -rf ~"),
            r"git-upload-pack '/srv/it'\''s; rm -rf ~'"
        );
    }
}
