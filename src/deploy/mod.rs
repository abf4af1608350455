//! Deploys: the per-app queue, the pure decisions, the fast path, crash recovery, and the
//! polls that deploy a push whose webhook never arrived.
//!
//! One worker task per app runs that app's deploys one at a time; everything a deploy does is
//! recorded as steps in the store. git and filesystem work runs on the blocking pool.

mod batch;
mod check;
mod container;
mod decide;
mod fast;
mod full;
mod hold;
mod pipeline;
pub mod plan;
pub mod poll;
mod queue;
mod recover;
mod reload;
mod rollback;
mod run;
pub(crate) mod steps;
pub mod target;
pub mod triage;

use anyhow::Context as _;

pub use poll::Pollers;
pub use queue::{pick_latest, Candidate, Deployer, QueueError, Workers};
pub use recover::recover;

/// Run blocking work (git2, filesystem) on the blocking pool, inside the caller's tracing span.
pub(crate) async fn blocking<T, F>(f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .context("blocking task failed")?
}
