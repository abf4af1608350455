//! dockhand as a real process on a loopback port (for crashes, signals and restarts), killed
//! when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::helpers::*;

/// A state dir holding the secret and a config for `origin` on a free loopback port, as
/// [`Server::start`] takes it: `(dir, dir/dockhand.toml)`.
pub(crate) fn config_on_a_free_port(origin: &Origin) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let text = config_text(dir.path(), origin, "", "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()));
    let config = dir.path().join("dockhand.toml");
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

/// A dockhand process on a loopback port.
pub(crate) struct Server {
    pub(crate) child: Child,
    remote: Remote,
}

impl std::ops::Deref for Server {
    type Target = Remote;
    fn deref(&self) -> &Remote {
        &self.remote
    }
}

impl Server {
    pub(crate) async fn start(config: &Path, log: &Path) -> Server {
        let server = Server::spawn(config, log);
        let up = server.up_within(Duration::from_secs(30)).await;
        assert!(
            up,
            "dockhand did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        server
    }

    /// Start dockhand and return at once: startup recovery runs before it answers.
    pub(crate) fn spawn(config: &Path, log: &Path) -> Server {
        Server::spawn_with_env(config, log, &[])
    }

    /// [`Server::spawn`] with extra environment variables.
    pub(crate) fn spawn_with_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Server {
        let text = std::fs::read_to_string(config).unwrap();
        let port = text
            .split("127.0.0.1:")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_dockhand"))
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        Server {
            child,
            remote: Remote::on_port(port.parse().unwrap()),
        }
    }
}

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
