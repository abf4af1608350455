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
use crate::deploy::{self, Deployer, Pollers, Workers};
use crate::http::{metrics_router, router};
use crate::metrics::Metrics;
use crate::proxy::{Proxies, Proxy};
use crate::services::Services;
use crate::store::Store;

/// How long shutdown waits for open requests and a running deploy.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A bound, recovered, ready-to-serve dockhand.
pub struct App {
    listener: TcpListener,
    /// `server.metrics_listen`'s listener, when `/metrics` has one of its own.
    metrics_listener: Option<TcpListener>,
    /// Turns the store's deploy events into metrics; stopped at the end of `run`.
    metrics_task: tokio::task::JoinHandle<()>,
    /// The apps' proxy listeners, served from `run` on.
    proxies: Vec<(Arc<Proxy>, TcpListener)>,
    state: Services,
    workers: Workers,
    /// The listening sockets by handover name ([`crate::handover`]).
    handover: Vec<(String, std::os::fd::OwnedFd)>,
    /// Held for the life of the server: one dockhand per state directory; holds its pid.
    _lock: File,
}

/// How long a handover waits for the previous dockhand to drain and release the state lock.
const HANDOVER_LOCK_WAIT: Duration = Duration::from_secs(120);

/// Wait (bounded) until the previous dockhand released the state directory's lock.
async fn wait_for_lock(lock: &File, path: &std::path::Path) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + HANDOVER_LOCK_WAIT;
    while lock.try_lock().is_err() {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the previous dockhand still holds {} after {HANDOVER_LOCK_WAIT:?}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Record this process's pid in the lock file, for `dockhand reload`.
fn write_pid(lock: &mut File, path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::{Seek, Write};
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{}", std::process::id())
        .with_context(|| format!("writing the pid to {}", path.display()))
}

/// A close-on-exec duplicate of a listener's socket.
fn dup(listener: &TcpListener) -> anyhow::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    Ok(listener.as_fd().try_clone_to_owned()?)
}

impl App {
    /// Lock the state directory, bind the listener, open the database, start the deploy
    /// workers and recover from any crash. Nothing is accepted until [`App::run`].
    pub async fn build(config: Config) -> anyhow::Result<App> {
        Self::build_with(config, crate::handover::Inherited::default()).await
    }

    /// [`App::build`] with the listening sockets a previous process (or systemd) handed over.
    /// A handover binds first, tells the previous dockhand it is ready, then waits for the
    /// state directory's lock while that one drains; a plain start takes the lock first.
    pub async fn build_with(
        config: Config,
        mut inherited: crate::handover::Inherited,
    ) -> anyhow::Result<App> {
        let state_dir = &config.server.state_dir;
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating state dir {}", state_dir.display()))?;
        let lock_path = state_dir.join("dockhand.lock");
        let mut lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        if !inherited.is_handover() && lock.try_lock().is_err() {
            bail!(
                "another dockhand is already running with state dir {}",
                state_dir.display()
            );
        }
        // Bind before recovering: a webhook arriving meanwhile waits in the backlog (accepting
        // starts in `run`, after recovery) instead of being refused — GitHub does not retry.
        let listener = inherited
            .listener(crate::handover::API, config.server.listen)
            .await?;
        let metrics_listener = match config.server.metrics_listen {
            Some(addr) => Some(
                inherited
                    .listener(crate::handover::METRICS, addr)
                    .await
                    .context("server.metrics_listen")?,
            ),
            None => None,
        };
        let metrics = Metrics::new(&config);
        let (proxies, proxy_listeners) = Proxies::bind(&config, &mut inherited, &metrics).await?;
        if inherited.is_handover() {
            inherited.ready()?;
            wait_for_lock(&lock, &lock_path).await?;
        }
        write_pid(&mut lock, &lock_path)?;
        let mut handover = vec![(crate::handover::API.to_string(), dup(&listener)?)];
        if let Some(l) = &metrics_listener {
            handover.push((crate::handover::METRICS.to_string(), dup(l)?));
        }
        for (proxy, l) in &proxy_listeners {
            handover.push((crate::handover::proxy_name(proxy.app()), dup(l)?));
        }
        let store = Store::open(&config.database_path()).await?;
        // Not fatal: a deploy that reaches a broken hook fails at that stage (never skips it).
        for problem in crate::deploy::hooks::problems(&config) {
            error!("{problem}; deploys that reach it will fail");
        }
        let config = Arc::new(config);
        let (deployer, inboxes) = Deployer::channels(&config);
        // Before anything can deploy: recovery's and the workers' events are heard.
        if let Err(e) = metrics.load(&store).await {
            warn!(
                error = format!("{e:#}"),
                "metrics: reading the last successes failed"
            );
        }
        let metrics_task = metrics.follow(store.clone());
        let services = Services::new(config.clone(), store.clone(), proxies, deployer, metrics)
            .context("the GitHub client ([github])")?;
        let workers = Workers::spawn(&services, inboxes);
        deploy::recover(&services)
            .await
            .context("recovering from the previous run")?;
        tokio::spawn(prune_history(
            store.clone(),
            config.server.history_retention,
        ));
        Ok(App {
            listener,
            metrics_listener,
            metrics_task,
            proxies: proxy_listeners,
            state: services,
            workers,
            handover,
            _lock: lock,
        })
    }

    /// The listening sockets (dups, close-on-exec) to hand to the next process on a reload.
    pub fn handover_sockets(&self) -> anyhow::Result<Vec<(String, std::os::fd::OwnedFd)>> {
        self.handover
            .iter()
            .map(|(name, fd)| Ok((name.clone(), fd.try_clone()?)))
            .collect()
    }

    /// The address the server listens on (useful when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address `/metrics` has to itself (`server.metrics_listen`), if it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Poll the apps' origins and serve until `shutdown` resolves; then stop accepting and
    /// polling, let open requests and the running deploys finish (bounded), and return. The apps' proxies serve until the deploys are done
    /// (a deploy may still switch one), then drain too.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let App {
            listener,
            metrics_listener,
            metrics_task,
            proxies,
            state,
            workers,
            handover: _,
            _lock,
        } = self;
        let stop_proxies = CancellationToken::new();
        let mut proxy_tasks = JoinSet::new();
        for (proxy, listener) in proxies {
            info!(addr = %proxy.local_addr(), "proxy listening");
            let stop = stop_proxies.clone().cancelled_owned();
            proxy_tasks.spawn(proxy.serve(listener, stop, SHUTDOWN_GRACE));
        }
        let stop_metrics = CancellationToken::new();
        if let Some(listener) = metrics_listener {
            info!(addr = %listener.local_addr()?, "metrics listening");
            let service = TowerToHyperService::new(metrics_router(state.clone()));
            let stop = stop_metrics.clone().cancelled_owned();
            proxy_tasks.spawn(async move {
                crate::listener::serve(listener, |_| service.clone(), stop, SHUTDOWN_GRACE).await;
            });
        }
        info!(addr = %listener.local_addr()?, apps = state.config.apps.len(), "dockhand listening");
        // After recovery (in `build`): the first poll of each app runs now. Polling stops as
        // soon as shutdown begins, not after open requests drain.
        let stop_polling = CancellationToken::new();
        let pollers = Pollers::spawn(&state, stop_polling.clone());
        // Stopped (aborted) last: what they have not sent stays in the outbox for the next run.
        let notify_tasks = crate::notify::start(&state).context("starting the notifications")?;
        // Each Swarm app's proxy follows where the service's tasks run.
        let pool_tasks = deploy::swarm::follow_tasks(&state);
        let shutdown = async move {
            shutdown.await;
            stop_polling.cancel();
        };
        let service = TowerToHyperService::new(router(state));
        let finished =
            crate::listener::serve(listener, |_| service.clone(), shutdown, SHUTDOWN_GRACE).await;
        info!("shutting down: stopped accepting, open requests done");
        if !finished {
            warn!("open connections did not finish in time");
        }
        // Before the workers: nothing is queued once they stop taking deploys.
        pollers.shutdown().await;
        workers.shutdown(SHUTDOWN_GRACE).await;
        stop_proxies.cancel();
        // Last: a scrape still sees the shutdown's deploys end.
        stop_metrics.cancel();
        while proxy_tasks.join_next().await.is_some() {}
        metrics_task.abort();
        for task in notify_tasks.into_iter().chain(pool_tasks) {
            task.abort();
        }
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
