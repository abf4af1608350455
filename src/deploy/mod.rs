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
pub mod hooks;
mod pipeline;
pub mod plan;
pub mod poll;
mod queue;
mod recover;
mod reload;
mod rollback;
mod run;
pub(crate) mod steps;
pub mod swarm;
pub mod target;
pub mod triage;

pub use crate::queue::{Deployer, QueueError};
pub use poll::Pollers;
pub use queue::{pick_latest, Candidate, Workers};
pub use recover::recover;

pub(crate) use crate::services::blocking;
