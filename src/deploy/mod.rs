//! Deploys: the per-app queue, the pure decisions, the fast path, crash recovery, and the
//! polls that deploy a push whose webhook never arrived.
//!
//! One worker task per app runs that app's deploys one at a time; everything a deploy does is
//! recorded as steps in the store. git and filesystem work runs on the blocking pool.

mod fast;
mod full;
mod hold;
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

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Config;
use crate::proxy::Proxies;
use crate::runtime::Docker;
use crate::store::Store;

pub use poll::Pollers;
pub use queue::{pick_latest, Candidate, Deployer, QueueError, Workers};
pub use recover::recover;

/// What every deploy needs: the configuration, the store, and the container engine.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub store: Store,
    /// The apps' reverse proxies: a full deploy switches its app's upstream.
    pub proxies: Proxies,
    /// Connected on first use and kept: connecting costs a version and a ping round trip, and
    /// the client opens a connection per request anyway. A failed connect is tried again later.
    docker: Arc<tokio::sync::OnceCell<Docker>>,
    /// One per app: held while its bare cache fetches, so a worker's fetch and an API call's
    /// (resolving a ref, a dry run) never race for the same ref lock files.
    caches: Arc<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    pub fn new(config: Arc<Config>, store: Store, proxies: Proxies) -> Context {
        let caches = config
            .apps
            .iter()
            .map(|a| (a.name.clone(), Arc::default()))
            .collect();
        Context {
            config,
            store,
            proxies,
            docker: Arc::default(),
            caches: Arc::new(caches),
        }
    }

    /// Run `f` on the blocking pool with exclusive use of `app`'s cache. The lock moves into
    /// the blocking task: a caller that is cancelled (an API request past `request_timeout`)
    /// stops waiting, but the cache stays locked until `f` itself has finished.
    pub(crate) async fn with_cache<T, F>(&self, app: &str, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> anyhow::Result<T> + Send + 'static,
    {
        let lock = match self.caches.get(app) {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        blocking(move || {
            let _lock = lock;
            f()
        })
        .await
    }

    /// The container engine.
    pub(crate) async fn docker(&self) -> anyhow::Result<Docker> {
        self.docker.get_or_try_init(Docker::connect).await.cloned()
    }
}

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
