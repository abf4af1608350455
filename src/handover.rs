//! Restarting without refusing a connection: `SIGHUP` (or `dockhand reload`) starts the next
//! dockhand — the same binary path, so an installed upgrade takes effect — and hands it the
//! listening sockets of the API and of every proxy. Connections that arrive meanwhile wait in
//! the kernel's backlog of the very same sockets, and the next process accepts them.
//!
//! The sockets travel by systemd's socket-activation protocol (`LISTEN_FDS`, `LISTEN_FDNAMES`,
//! fds from 3), so a systemd `.socket` unit can hand them over too. The sequence:
//!
//! 1. the old process validates the new config (an invalid one is refused: it keeps serving);
//! 2. it starts the next one with the sockets and `DOCKHAND_HANDOVER_FROM=<its pid>`;
//! 3. the next one parses its config, takes the sockets (binds the addresses it did not get),
//!    and sends the old one `SIGUSR1`: ready;
//! 4. the old one stops accepting, lets open requests and its running deploy finish, exits;
//! 5. the next one gets the state directory's lock, recovers, and accepts.
//!
//! If the next one exits or is not ready within [`READY_TIMEOUT`], the old one kills it and
//! goes on serving.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::net::TcpListener;

/// The API listener's name in `LISTEN_FDNAMES`.
pub const API: &str = "api";
/// The `server.metrics_listen` listener's name in `LISTEN_FDNAMES`.
pub const METRICS: &str = "metrics";
/// How long the next process may take to be ready (config parsed, sockets taken).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The variable that tells the next process whom to signal ready and whose lock to wait for.
const FROM: &str = "DOCKHAND_HANDOVER_FROM";
/// The first inherited fd (systemd's `SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// The name of app `app`'s proxy listener in `LISTEN_FDNAMES`.
pub fn proxy_name(app: &str) -> String {
    format!("proxy/{app}")
}

/// The path this binary was started from, taken at startup: after an upgrade replaced the
/// file, `/proc/self/exe` names the deleted old one, the path the new one.
pub fn remember_exe() {
    let _ = EXE.get_or_init(|| std::env::current_exe().ok());
}

static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Listening sockets inherited from the previous process (or systemd), by name.
#[derive(Default)]
pub struct Inherited {
    by_name: HashMap<String, std::net::TcpListener>,
    /// The previous dockhand's pid, when this start is a handover.
    from: Option<rustix::process::Pid>,
}

impl Inherited {
    /// What `LISTEN_FDS`/`LISTEN_FDNAMES` and `DOCKHAND_HANDOVER_FROM` hand this process.
    pub fn from_env() -> anyhow::Result<Inherited> {
        let mut fds = listenfd::ListenFd::from_env();
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .unwrap_or_default()
            .split(':')
            .map(str::to_string)
            .collect();
        let mut by_name = HashMap::new();
        for i in 0..fds.len() {
            let name = names
                .get(i)
                .filter(|n| !n.is_empty())
                .cloned()
                .unwrap_or_else(|| format!("fd{}", FIRST_FD as usize + i));
            if let Some(listener) = fds
                .take_tcp_listener(i)
                .with_context(|| format!("inherited socket {name} is not a TCP listener"))?
            {
                by_name.insert(name, listener);
            }
        }
        let from = match std::env::var(FROM) {
            Ok(pid) => Some(
                pid.parse::<i32>()
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                    .with_context(|| format!("{FROM}={pid:?} is not a pid"))?,
            ),
            Err(_) => None,
        };
        Ok(Inherited { by_name, from })
    }

    /// Whether this start takes over from a running dockhand.
    pub fn is_handover(&self) -> bool {
        self.from.is_some()
    }

    /// The socket named `name` as a tokio listener when it listens on `addr` (a port-0 `addr`
    /// takes any port on its IP); else `addr` freshly bound.
    pub async fn listener(&mut self, name: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
        if let Some(std) = self.by_name.remove(name) {
            let got = std.local_addr()?;
            if got == addr || (addr.port() == 0 && got.ip() == addr.ip()) {
                std.set_nonblocking(true)?;
                return Ok(TcpListener::from_std(std)?);
            }
            tracing::info!(%got, wanted = %addr, name, "the inherited socket listens elsewhere; binding anew");
        }
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {name} on {addr}"))
    }

    /// Tell the previous dockhand this one is ready to take over (it then drains and exits).
    pub fn ready(&self) -> anyhow::Result<()> {
        if let Some(from) = self.from {
            rustix::process::kill_process(from, rustix::process::Signal::USR1)
                .with_context(|| format!("signalling the previous dockhand (pid {from:?})"))?;
        }
        Ok(())
    }
}

/// Start the next dockhand with these sockets (name, a dup of the listener); returns it once it
/// said it is ready, or an error (it is killed then). `ready` resolves on its `SIGUSR1`.
pub async fn start_next(
    sockets: &[(String, OwnedFd)],
    ready: impl std::future::Future<Output = ()>,
) -> anyhow::Result<u32> {
    use command_fds::{CommandFdExt, FdMapping};

    let exe = EXE
        .get()
        .cloned()
        .flatten()
        .context("the path of the dockhand binary is unknown")?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut mappings = Vec::with_capacity(sockets.len());
    for (i, (name, fd)) in sockets.iter().enumerate() {
        mappings.push(FdMapping {
            parent_fd: fd
                .try_clone()
                .with_context(|| format!("duplicating socket {name}"))?,
            child_fd: FIRST_FD + i32::try_from(i)?,
        });
    }
    let names: Vec<&str> = sockets.iter().map(|(n, _)| n.as_str()).collect();
    let mut command = tokio::process::Command::new(&exe);
    command
        .args(&args)
        .env("LISTEN_FDS", sockets.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        // No pid check (listenfd's extension): the pid is not known before the spawn.
        .env_remove("LISTEN_PID")
        .env(FROM, std::process::id().to_string())
        .stdin(std::process::Stdio::null());
    command
        .as_std_mut()
        .fd_mappings(mappings)
        .map_err(|e| anyhow::anyhow!("passing the sockets: {e}"))?;
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id().unwrap_or_default();
    tokio::select! {
        () = ready => Ok(pid),
        exited = child.wait() => {
            let status = exited.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            bail!("the new dockhand (pid {pid}) exited before it was ready: {status}")
        }
        () = tokio::time::sleep(READY_TIMEOUT) => {
            let _ = child.kill().await;
            bail!("the new dockhand (pid {pid}) was not ready within {READY_TIMEOUT:?}; killed it")
        }
    }
}

/// How long `dockhand reload` waits for the next process to hold the state lock.
const RELOAD_WAIT: Duration = Duration::from_secs(150);

/// `dockhand reload`: send the dockhand running on `config`'s state directory `SIGHUP` and
/// wait until another process holds its lock (the handover is done). Returns (old, new) pid.
pub async fn reload_running(config: &crate::config::Config) -> anyhow::Result<(i32, i32)> {
    let lock_path = config.server.state_dir.join("dockhand.lock");
    let read_pid = || -> anyhow::Result<i32> {
        let text = std::fs::read_to_string(&lock_path)
            .with_context(|| format!("reading {}", lock_path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{} holds no pid", lock_path.display()))
    };
    let probe = std::fs::File::open(&lock_path).with_context(|| {
        format!(
            "no dockhand has run with state dir {}",
            config.server.state_dir.display()
        )
    })?;
    if probe.try_lock_shared().is_ok() {
        bail!(
            "no dockhand is running with state dir {}",
            config.server.state_dir.display()
        );
    }
    let old = read_pid()?;
    let pid = rustix::process::Pid::from_raw(old).context("the lock file holds a bad pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .with_context(|| format!("sending SIGHUP to dockhand (pid {old})"))?;
    let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(new) = read_pid() {
            if new != old {
                return Ok((old, new));
            }
        }
        let alive = rustix::process::test_kill_process(pid).is_ok();
        if !alive {
            bail!("dockhand (pid {old}) stopped and no new process took over; see its log");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "dockhand (pid {old}) still serves after {RELOAD_WAIT:?}: it refused the reload or the new process is not ready; see its log"
            );
        }
    }
}
