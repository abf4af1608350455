//! Building and running the server: `App::build(config)` binds, `port()` reports,
//! `run(shutdown)` serves until the shutdown future resolves.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::deploy::{self, Deployer, Workers};
use crate::http::{router, AppState};
use crate::proxy::{Proxies, Proxy};
use crate::store::Store;

/// libgit2 gives up connecting to an origin after this.
const GIT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// libgit2 gives up on an origin that sends nothing for this long.
const GIT_IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for open requests and a running deploy.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A bound, recovered, ready-to-serve dockhand.
pub struct App {
    listener: TcpListener,
    /// The apps' proxy listeners, served from `run` on.
    proxies: Vec<(Arc<Proxy>, TcpListener)>,
    state: AppState,
    workers: Workers,
    /// Held for the life of the server: one dockhand per state directory.
    _lock: File,
}

impl App {
    /// Lock the state directory, bind the listener, open the database, start the deploy
    /// workers and recover from any crash. Nothing is accepted until [`App::run`].
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let state_dir = &config.server.state_dir;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating state dir {}", state_dir.display()))?;
        let lock_path = state_dir.join("dockhand.lock");
        let lock = File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "another dockhand is already running with state dir {}",
                state_dir.display()
            );
        }
        // Bind before recovering: a webhook arriving meanwhile waits in the backlog (accepting
        // starts in `run`, after recovery) instead of being refused — GitHub does not retry.
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let (proxies, proxy_listeners) = Proxies::bind(&config).await?;
        let store = Store::open(&config.database_path()).await?;
        // Not fatal: a deploy that reaches a broken hook fails at that stage (never skips it).
        for problem in crate::hooks::problems(&config) {
            error!("{problem}; deploys that reach it will fail");
        }
        crate::git::set_network_timeouts(GIT_CONNECT_TIMEOUT, GIT_IO_TIMEOUT)?;
        let config = Arc::new(config);
        let ctx = deploy::Context::new(config.clone(), store.clone(), proxies.clone());
        let (deployer, workers) = Deployer::spawn(ctx.clone());
        deploy::recover(&ctx, &deployer)
            .await
            .context("recovering from the previous run")?;
        tokio::spawn(prune_history(
            store.clone(),
            config.server.history_retention,
        ));
        let state = AppState {
            config,
            store,
            deployer,
            ctx,
            proxies,
        };
        Ok(App {
            listener,
            proxies: proxy_listeners,
            state,
            workers,
            _lock: lock,
        })
    }

    /// The address the server listens on (useful when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serve until `shutdown` resolves; then stop accepting, let open requests and the running
    /// deploys finish (bounded), and return. The apps' proxies serve until the deploys are done
    /// (a deploy may still switch one), then drain too.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let App {
            listener,
            proxies,
            state,
            workers,
            _lock,
        } = self;
        let stop_proxies = CancellationToken::new();
        let mut proxy_tasks = JoinSet::new();
        for (proxy, listener) in proxies {
            info!(addr = %proxy.local_addr(), "proxy listening");
            let stop = stop_proxies.clone().cancelled_owned();
            proxy_tasks.spawn(proxy.serve(listener, stop, SHUTDOWN_GRACE));
        }
        info!(addr = %listener.local_addr()?, apps = state.config.apps.len(), "dockhand listening");
        let service = TowerToHyperService::new(router(state));
        let finished =
            crate::listener::serve(listener, |_| service.clone(), shutdown, SHUTDOWN_GRACE).await;
        info!("shutting down: stopped accepting, open requests done");
        if !finished {
            warn!("open connections did not finish in time");
        }
        workers.shutdown(SHUTDOWN_GRACE).await;
        stop_proxies.cancel();
        while proxy_tasks.join_next().await.is_some() {}
        info!("dockhand stopped");
        Ok(())
    }
}

/// Prune old history once a minute after start, then hourly (SECURITY.md 40).
async fn prune_history(store: Store, retention: Duration) {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(3600),
    );
    loop {
        tick.tick().await;
        match store
            .prune(retention_ms, crate::config::KEEP_DEPLOYS_PER_APP)
            .await
        {
            Ok(p) if p.deliveries + p.deploys > 0 => {
                info!(
                    deliveries = p.deliveries,
                    deploys = p.deploys,
                    "pruned old history"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(error = format!("{e:#}"), "pruning history failed"),
        }
    }
}
