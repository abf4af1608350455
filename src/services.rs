//! `Services`: what the HTTP handlers, the deploy workers, the pollers and startup recovery
//! share — the configuration, the store, the deploy queue, the apps' proxies, the container
//! engine, the GitHub client and each app's git cache, opened once and locked for each use. One value, built
//! once at startup, cheap to clone (an `Arc`); it is the axum state and what every worker
//! holds. Nothing else is shared.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use crate::config::Config;
use anyhow::Context as _;

use crate::config::AppConfig;
use crate::git::{Cache, Credentials};
use crate::github_api::{self as rest, Repo};
use crate::metrics::Metrics;
use crate::proxy::Proxies;
use crate::queue::Deployer;
use crate::runtime::{Docker, Engine};
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
    /// The Prometheus registry: made before the proxies (each holds its app's handle), served
    /// at `/metrics`, fed by the webhook receivers, the pollers and the store's events.
    pub metrics: Metrics,
    /// `[github]`'s client, if configured: one token cache for the GitHub receivers and the
    /// fetches of `fetch_token` apps.
    pub(crate) github: Option<Arc<rest::Client>>,
    /// Connected on first use and kept: connecting costs a version and a ping round trip, and
    /// the client opens a connection per request anyway. A failed connect is tried again later.
    engine: tokio::sync::OnceCell<Arc<dyn Engine>>,
    /// One per app: its bare cache, opened on first use and kept open (opening it reads its
    /// config, refs and pack indexes: five opens per deploy before), behind a lock held for each
    /// use, so a worker's fetch and an API call's (resolving a ref, a dry run) never race for
    /// the same ref lock files, and nothing reads while a compaction swaps the packs.
    caches: HashMap<String, Arc<tokio::sync::Mutex<Option<Cache>>>>,
}

impl Deref for Services {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Services {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        proxies: Proxies,
        deployer: Deployer,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let caches = config
            .apps
            .iter()
            .map(|a| (a.name.clone(), Arc::default()))
            .collect();
        let github = match &config.github {
            Some(g) => Some(Arc::new(rest::Client::new(g)?)),
            None => None,
        };
        Ok(Services(Arc::new(Inner {
            config,
            store,
            deployer,
            proxies,
            metrics,
            github,
            engine: tokio::sync::OnceCell::new(),
            caches,
        })))
    }

    /// `app` as its next fetch needs it: with `[apps.github] fetch_token`, `[github]`'s token for
    /// its repository, asked for now (an App's installation token is bought again 5 minutes
    /// before it expires, so a fetch never starts with one about to lapse).
    pub(crate) async fn fetching(&self, app: &AppConfig) -> anyhow::Result<AppConfig> {
        let mut app = app.clone();
        let Some(github) = app.github.as_ref().filter(|g| g.fetch_token) else {
            return Ok(app);
        };
        let client = self
            .github
            .as_ref()
            .context("fetch_token without a [github] client")?;
        let repo = Repo {
            owner: github.owner.clone(),
            name: github.repo.clone(),
        };
        let token = client.token(&repo).await.map_err(|f| {
            anyhow::anyhow!(
                "no token from GitHub to fetch {}/{} with (fetch_token): {}",
                repo.owner,
                repo.name,
                f.message()
            )
        })?;
        app.access.credentials = Credentials::GithubToken(token);
        Ok(app)
    }

    /// Run `f` on the blocking pool with exclusive use of `app`'s cache (opened, and created,
    /// if need be). The lock moves into the blocking task: a caller that is cancelled (an API
    /// request past `request_timeout`) stops waiting, but the cache stays locked until `f`
    /// itself has finished.
    pub(crate) async fn with_cache<T, F>(&self, app: &str, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Cache) -> anyhow::Result<T> + Send + 'static,
    {
        let path = self.config.cache_path(app);
        let Some(slot) = self.caches.get(app) else {
            // Not an app of this config (a test's own cache): opened for this call only.
            return blocking(move || f(&Cache::open_or_init(&path)?)).await;
        };
        let mut slot = slot.clone().lock_owned().await;
        blocking(move || {
            let cache = slot.take().map_or_else(|| Cache::open_or_init(&path), Ok)?;
            let result = f(&cache);
            *slot = Some(cache);
            result
        })
        .await
    }

    /// [`Cache::compact`] `app`'s cache, if it exists, under its lock; after a compaction (or a
    /// failed one) the open repository is dropped, so that the next use opens the new pack set.
    pub(crate) async fn compact_cache(&self, app: &str) -> anyhow::Result<Option<usize>> {
        let path = self.config.cache_path(app);
        let slot = self.caches.get(app).context("no such app")?;
        let mut slot = slot.clone().lock_owned().await;
        blocking(move || {
            let cache = match slot.take() {
                Some(cache) => cache,
                None if path.join("HEAD").exists() => Cache::open_or_init(&path)?,
                None => return Ok(None),
            };
            let compacted = cache.compact();
            if let Ok(None) = compacted {
                *slot = Some(cache); // nothing was due: the packs are the ones it has open
            }
            compacted
        })
        .await
    }

    /// The container engine, connected on first use (an app without a container never needs
    /// one).
    pub(crate) async fn engine(&self) -> anyhow::Result<Arc<dyn Engine>> {
        let connect = || async {
            Ok::<_, anyhow::Error>(Arc::new(Docker::connect().await?) as Arc<dyn Engine>)
        };
        self.engine.get_or_try_init(connect).await.cloned()
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
