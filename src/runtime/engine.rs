//! The engine boundary: everything the full path, swaps, reloads and crash recovery ask of
//! whatever runs the app's containers. [`super::Docker`] (one engine, containers on this host)
//! is the one implementation today; an engine for more than one host implements the same calls
//! and the deploy code does not change.
//!
//! An instance is named by the id [`Engine::create`] returned; images by their reference.
//! Every call either does what it says or fails with an error that says what to do — none
//! retries forever, none decides anything about a deploy.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::{ContainerInfo, ContainerSpec, Credentials, HealthCheck, HealthReport, Pulled};

/// A container engine, shared by every deploy (`Arc<dyn Engine>` in `Services`).
#[async_trait]
pub trait Engine: Send + Sync + fmt::Debug {
    /// Fetch `image` from its registry (with `auth` when given); what was pulled and its digest.
    async fn pull(&self, image: &str, auth: Option<&Credentials>) -> anyhow::Result<Pulled>;

    /// The registry digest of a local image; `None` when it is not here or has none.
    async fn image_digest(&self, image: &str) -> anyhow::Result<Option<String>>;

    /// Whether `image` is present locally (no pull needed).
    async fn has_image(&self, image: &str) -> anyhow::Result<bool>;

    /// Remove a local image; `false` when an instance still uses it or it is gone already.
    async fn remove_image(&self, image: &str) -> anyhow::Result<bool>;

    /// Create (not start) an instance from `spec`; its id.
    async fn create(&self, spec: &ContainerSpec) -> anyhow::Result<String>;

    /// Start a created or stopped instance.
    async fn start(&self, id: &str) -> anyhow::Result<()>;

    /// Stop an instance: its stop signal, then a kill after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> anyhow::Result<()>;

    /// Freeze an instance's processes (kept, not stopped: resumable at once).
    async fn pause(&self, id: &str) -> anyhow::Result<()>;

    /// Resume a paused instance.
    async fn unpause(&self, id: &str) -> anyhow::Result<()>;

    /// Send `signal` (`HUP`, `USR1`, …) to an instance's main process.
    async fn kill(&self, id: &str, signal: &str) -> anyhow::Result<()>;

    /// Stop (with `grace`) and start an instance again.
    async fn restart(&self, id: &str, grace: Duration) -> anyhow::Result<()>;

    /// Run `cmd` inside a running instance; its exit code and the tail of its output.
    async fn exec(&self, id: &str, cmd: &[String]) -> anyhow::Result<(i64, String)>;

    /// Remove an instance, running or not; one already gone is not an error.
    async fn remove(&self, id: &str) -> anyhow::Result<()>;

    /// What the engine knows of an instance; `None` when it does not exist.
    async fn inspect(&self, id: &str) -> anyhow::Result<Option<ContainerInfo>>;

    /// Every instance (running or not) carrying the label `key=value`.
    async fn list_by_label(&self, key: &str, value: &str) -> anyhow::Result<Vec<ContainerInfo>>;

    /// The last `lines` lines an instance logged, for a failed deploy's error.
    async fn logs_tail(&self, id: &str, lines: usize) -> anyhow::Result<String>;

    /// Probe `check` until the instance answers healthy, fails, stops or the deadline passes.
    async fn wait_healthy(&self, id: &str, check: &HealthCheck) -> anyhow::Result<HealthReport>;

    /// Wait for the image's own health check (Docker's `HEALTHCHECK`) to say healthy.
    async fn wait_docker_health(
        &self,
        id: &str,
        deadline: Duration,
    ) -> anyhow::Result<HealthReport>;
}
