//! The real engine for tests: connecting to it (a failed test says how to start it), names
//! unique to a run, and a guard that removes a test's containers on drop, pass or panic.

use std::sync::atomic::{AtomicU64, Ordering};

use dockhand::runtime::{Docker, Engine as _};

/// The label every container a test starts itself carries (`dockhand.test=<unique value>`).
pub(crate) const LABEL: &str = "dockhand.test";

/// Every container (running or not) dockhand made for app `name`.
pub(crate) async fn app_containers(name: &str) -> Vec<dockhand::runtime::ContainerInfo> {
    docker()
        .await
        .list_by_label("dockhand.app", name)
        .await
        .unwrap()
}

/// The engine, or a failed test that says how to get one.
pub(crate) async fn docker() -> Docker {
    match Docker::connect().await {
        Ok(docker) => docker,
        Err(e) => panic!(
            "dockerd not reachable at {}: run scripts/test-env ({e:#})",
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
        ),
    }
}

/// A value unique to this test run and call: container names and the cleanup label.
pub(crate) fn unique(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "dockhand-test-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes every container labelled `key=value` when dropped, pass or panic. Drop cannot
/// await, so it connects afresh on its own thread and runtime.
pub(crate) struct Cleanup {
    key: &'static str,
    pub(crate) value: String,
}

impl Cleanup {
    /// Containers a test labels `dockhand.test=<value>` itself.
    pub(crate) fn test(value: String) -> Cleanup {
        Cleanup { key: LABEL, value }
    }

    /// The containers dockhand starts for app `name`.
    pub(crate) fn app(name: &str) -> Cleanup {
        Cleanup {
            key: "dockhand.app",
            value: name.to_string(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (key, value) = (self.key, self.value.clone());
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            rt.block_on(async {
                let docker = Docker::connect().await.ok()?;
                for c in docker.list_by_label(key, &value).await.ok()? {
                    let _ = docker.remove(&c.id).await;
                }
                Some(())
            })
        })
        .join();
        if !matches!(cleaned, Ok(Some(()))) {
            eprintln!(
                "cleanup of containers labelled {}={} failed",
                self.key, self.value
            );
        }
    }
}
