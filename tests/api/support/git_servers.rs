//! The real git servers of scripts/git-servers (nginx + `git http-backend` with basic auth,
//! user `x-access-token`), serving an origin as `app.git`; stopped on drop.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

use crate::support::helpers::Origin;

pub struct GitServers {
    dir: TempDir,
    env: HashMap<String, String>,
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/git-servers")
}

impl GitServers {
    pub fn start(origin: &Origin) -> GitServers {
        let dir = TempDir::new().unwrap();
        std::fs::create_dir_all(dir.path().join("repos")).unwrap();
        std::os::unix::fs::symlink(&origin.bare, dir.path().join("repos/app.git")).unwrap();
        let out = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/git-servers start failed (run scripts/test-env): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        GitServers { dir, env }
    }

    /// `http://127.0.0.1:PORT/app.git`, behind basic auth.
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}/app.git", self.env["GIT_HTTP_PORT"])
    }

    /// The one password the HTTP server takes now.
    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.env["GIT_TOKEN_FILE"])
            .unwrap()
            .trim()
            .to_string()
    }

    /// A new password; the old one is refused from now on.
    pub fn rotate(&self) {
        let ok = Command::new(script())
            .arg("rotate")
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for GitServers {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}
