//! How dockhand reaches an origin: its own smart subtransports, registered with libgit2 for
//! `http(s)://`, `ssh://` (and scp-like `user@host:path`) and `git://`.
//!
//! libgit2 keeps the git protocol (negotiation, packs, the indexer); these carry its bytes:
//! - HTTP(S) ([`http`]) on reqwest: `TCP_NODELAY` (libgit2's own client sends each POST as two
//!   writes without it, and Nagle + the server's delayed ACK held every request ~43 ms),
//!   pooled keep-alive connections across fetches, rustls with the system roots plus the app's
//!   `ca_file`, the token file read per fetch, and errors that say what to fix.
//! - SSH ([`ssh`]) through OpenSSH's `ssh`, as the git CLI does: OpenSSH's own `known_hosts`
//!   semantics (the app's pinned file, strict checking, "host key CHANGED" told apart from an
//!   unknown host) and a control master per app, so a push's fetch reuses an open connection
//!   instead of a key exchange.
//! - git:// ([`daemon`]) on a `TCP_NODELAY` socket.
//!
//! libgit2 calls a transport on the thread that runs the fetch, so what one fetch needs (its
//! credentials, deadline, where the control sockets live) travels in a thread-local [`Reach`]
//! set by [`with_reach`] around it.

mod daemon;
mod http;
mod ssh;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Access;

pub(crate) use ssh::check_key as check_ssh_key;

/// What one fetch needs to reach its origin.
#[derive(Clone)]
pub(super) struct Reach {
    pub access: Access,
    /// The whole fetch ends here (`fetch_timeout`).
    pub deadline: Instant,
    pub timeout: Duration,
    /// Where this app's SSH control sockets live (inside its cache).
    pub control_dir: PathBuf,
    /// Set by a transport that gave up at the deadline.
    pub timed_out: Arc<AtomicBool>,
    /// A transport's own account of why it failed: clearer than what libgit2 makes of it.
    pub failure: Arc<Mutex<Option<String>>>,
}

impl Reach {
    pub fn new(access: Access, timeout: Duration, control_dir: PathBuf) -> Reach {
        Reach {
            access,
            deadline: Instant::now() + timeout,
            timeout,
            control_dir,
            timed_out: Arc::default(),
            failure: Arc::default(),
        }
    }

    /// Time left before the deadline, or a timeout error (recorded) when none is.
    fn remaining(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timeout_error());
        }
        Ok(left)
    }

    fn timeout_error(&self) -> std::io::Error {
        self.timed_out.store(true, Ordering::SeqCst);
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("fetch_timeout ({}s) ran out", self.timeout.as_secs_f64()),
        )
    }

    /// Record `message` as the reason the fetch failed and return it as an I/O error (what a
    /// subtransport stream gives libgit2).
    fn fail(&self, kind: std::io::ErrorKind, message: String) -> std::io::Error {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
        std::io::Error::new(kind, message)
    }

    /// The same, as the `git2::Error` a subtransport's `action` returns.
    fn fail_git(&self, message: String) -> git2::Error {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
        git2::Error::new(
            git2::ErrorCode::GenericError,
            git2::ErrorClass::Net,
            message,
        )
    }

    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

thread_local! {
    static REACH: RefCell<Option<Reach>> = const { RefCell::new(None) };
}

/// Run `f` (a libgit2 call that may open a transport) with `reach` visible to the transports.
pub(super) fn with_reach<T>(reach: &Reach, f: impl FnOnce() -> T) -> T {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            REACH.with(|r| r.borrow_mut().take());
        }
    }
    register();
    REACH.with(|r| *r.borrow_mut() = Some(reach.clone()));
    let _clear = Clear;
    f()
}

/// The fetch's reach; a transport opened outside [`with_reach`] is refused.
fn current() -> Result<Reach, git2::Error> {
    REACH
        .with(|r| r.borrow().clone())
        .ok_or_else(|| git2::Error::from_str("dockhand's transports run only inside Cache::fetch"))
}

/// Register the transports with libgit2, once per process, before the first fetch.
pub(super) fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let schemes: [(&str, Kind); 6] = [
            ("http", Kind::Http),
            ("https", Kind::Http),
            ("ssh", Kind::Ssh),
            ("ssh+git", Kind::Ssh),
            ("git+ssh", Kind::Ssh),
            ("git", Kind::Daemon),
        ];
        for (scheme, kind) in schemes {
            // SAFETY: git_transport_register must not race another registration or a
            // transport's creation; this runs once (under `Once`), before any fetch of
            // this process has opened a transport.
            let registered = unsafe {
                git2::transport::register(scheme, move |remote| {
                    let reach = current()?;
                    match kind {
                        Kind::Http => {
                            git2::transport::Transport::smart(remote, true, http::Http::new(reach)?)
                        }
                        Kind::Ssh => {
                            git2::transport::Transport::smart(remote, false, ssh::Ssh::new(reach))
                        }
                        Kind::Daemon => git2::transport::Transport::smart(
                            remote,
                            false,
                            daemon::Daemon::new(reach),
                        ),
                    }
                })
            };
            if let Err(e) = registered {
                // Only possible if the scheme was registered before: libgit2's own transport
                // would then run, and the tests of each transport say so.
                tracing::error!("registering the {scheme}:// transport: {e}");
            }
        }
    });
}

#[derive(Clone, Copy)]
enum Kind {
    Http,
    Ssh,
    Daemon,
}

#[cfg(test)]
pub(crate) mod tests;
