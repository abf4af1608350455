//! `Services`: what the HTTP handlers, the deploy workers, the pollers and startup recovery
//! share — the configuration, the store, the deploy queue, the apps' proxies, the container
//! engine and each app's git cache lock. One value, built once at startup, cheap to clone (an
//! `Arc`); it is the axum state and what every worker holds. Nothing else is shared.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use crate::config::Config;
use anyhow::Context as _;

use crate::proxy::Proxies;
use crate::queue::Deployer;
use crate::runtime::Docker;
use crate::store::Store;

/// Everything shared, behind one `Arc`. Read its fields through `Deref` (`services.store`).
#[derive(Clone)]
pub struct Services(Arc<Inner>);

/// The shared parts; see [`Services`].
pub struct Inner {
    pub config: Arc<Config>,
    pub store: Store,
    /// Sends persisted deploys to the per-app workers.
    pub deployer: Deployer,
    /// The apps' reverse proxies: a full deploy switches its app's upstream.
    pub proxies: Proxies,
    /// Connected on first use and kept: connecting costs a version and a ping round trip, and
    /// the client opens a connection per request anyway. A failed connect is tried again later.
    docker: tokio::sync::OnceCell<Docker>,
    /// One per app: held while its bare cache fetches, so a worker's fetch and an API call's
    /// (resolving a ref, a dry run) never race for the same ref lock files.
    caches: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Deref for Services {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Services {
    pub fn new(config: Arc<Config>, store: Store, proxies: Proxies, deployer: Deployer) -> Self {
        let caches = config
            .apps
            .iter()
            .map(|a| (a.name.clone(), Arc::default()))
            .collect();
        Services(Arc::new(Inner {
            config,
            store,
            deployer,
            proxies,
            docker: tokio::sync::OnceCell::new(),
            caches,
        }))
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
