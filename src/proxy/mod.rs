//! The built-in reverse proxy: one listener per app with `[apps.proxy]`, forwarding every
//! request to the app's live upstream (its container's loopback port, or a fixed address).
//!
//! A full deploy switches the upstream atomically once the new container is healthy: requests
//! that started on the old one keep it leased until their response (or upgraded connection)
//! ends, and [`Proxy::drain`] waits for those leases before the old container is stopped. Each
//! upstream has its own connection pool, so a retired container's idle connections go with it.

mod forward;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::config::{Config, ProxyConfig};
use crate::metrics::{Metrics, ProxyMetrics, UpstreamKind};

/// Upstreams that do not accept a connection within this are answered 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle keep-alive connections to an upstream are closed after this.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where requests go: an address, and the container behind it (if dockhand runs one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub container: Option<String>,
}

/// A live upstream: its address, its own keep-alive pool, and the requests leasing it.
pub(crate) struct Upstream {
    target: Target,
    /// `target.addr` as a URI authority, made once: every forwarded request's URI uses it.
    authority: hyper::http::uri::Authority,
    since: OffsetDateTime,
    client: Client<HttpConnector, forward::UpstreamBody>,
    active: AtomicUsize,
    idle: Notify,
    /// Answers given for it (its own, or the proxy's 502/504 when it failed), and how many
    /// of them were 5xx: what a deploy's watch window reads.
    answered: AtomicU64,
    server_errors: AtomicU64,
    /// A pool member that refused a connection is skipped until then (passive ejection).
    ejected_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// How long a pool member that refused a connection is skipped (about the pool's refresh).
const EJECT_FOR: Duration = Duration::from_secs(1);
/// How often a request waiting for a pool member looks again.
const POOL_WAIT_STEP: Duration = Duration::from_millis(50);

impl Upstream {
    /// Skip this upstream (a member of a pool) for [`EJECT_FOR`].
    pub(crate) fn eject(&self) {
        let until = tokio::time::Instant::now() + EJECT_FOR;
        *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    fn ejected(&self, now: tokio::time::Instant) -> bool {
        self.ejected_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| until > now)
    }

    /// Count one answer to a request sent to this upstream.
    pub(crate) fn count(&self, status: hyper::StatusCode) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn new(target: Target) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            // A pooled connection found closed before the request was written: another one.
            .retry_canceled_requests(true)
            .build(connector);
        let authority = target
            .addr
            .to_string()
            .parse()
            .expect("a socket address is a valid URI authority");
        Upstream {
            target,
            authority,
            since: OffsetDateTime::now_utc(),
            client,
            active: AtomicUsize::new(0),
            idle: Notify::new(),
            answered: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            ejected_until: std::sync::Mutex::new(None),
        }
    }

    /// Who answers through this upstream, as the metrics label it.
    fn kind(&self) -> UpstreamKind {
        match self.target.container {
            Some(_) => UpstreamKind::Container,
            None => UpstreamKind::Fixed,
        }
    }
}

/// A request's hold on an upstream, released when its response body (or tunnel) is dropped;
/// it is one of the app's in-flight requests as long.
pub(crate) struct Lease {
    upstream: Arc<Upstream>,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

impl Lease {
    fn upstream(&self) -> &Upstream {
        &self.upstream
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.in_flight.dec();
        if self.upstream.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.upstream.idle.notify_waiters();
        }
    }
}

/// The upstream a deploy switched away from; [`Proxy::drain`] waits for its open requests.
pub struct Retired(Arc<Upstream>);

impl Retired {
    /// Where it pointed (to switch back after a failed stop-first deploy).
    pub fn target(&self) -> &Target {
        &self.0.target
    }
}

/// Answers the proxy gave for requests to one upstream ([`Proxy::answers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answers {
    pub upstream: SocketAddr,
    pub answered: u64,
    /// Of them 5xx: the app's own, or the proxy's 502/504 when it did not answer.
    pub server_errors: u64,
}

/// How draining an old upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Requests still open when the drain timeout ran out (0: all finished).
    pub abandoned: usize,
    pub waited: Duration,
}

/// What `GET /api/apps/{app}` shows about an app's proxy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProxyStatus {
    pub listen: SocketAddr,
    /// `host:port` requests go to; `None` while nothing is live (answered 503).
    pub upstream: Option<String>,
    pub container: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    pub in_flight: usize,
    pub maintenance: bool,
    /// Requests waiting now in a reload's hold.
    pub held: usize,
}

/// One app's proxy: the listener's settings and the live upstream.
pub struct Proxy {
    app: String,
    listen: SocketAddr,
    config: ProxyConfig,
    /// The maintenance answer's body and content type, made once from the config.
    maintenance_page: (bytes::Bytes, hyper::header::HeaderValue),
    live: RwLock<Option<Arc<Upstream>>>,
    /// Several upstreams at once (a Swarm service's tasks), taken in turn; when not empty it
    /// is what requests go to.
    pool: RwLock<Vec<Arc<Upstream>>>,
    turn: AtomicUsize,
    /// A pool was ever set: with none to take, requests wait instead of falling back.
    pooled: AtomicBool,
    maintenance: AtomicBool,
    /// `true` while a reload holds new requests ([`Proxy::hold`]).
    hold: watch::Sender<bool>,
    /// Requests waiting in a hold now, and ever (the hold step reports the difference).
    held_now: AtomicUsize,
    held_total: AtomicU64,
    /// Turns for released requests ([`Proxy::released_turn`]).
    released: tokio::sync::Semaphore,
    /// The app's requests, latency, in-flight and held gauges, connect errors.
    metrics: ProxyMetrics,
}

/// Held requests that may wait for the upstream's answer at once after a hold ends.
const RELEASED_IN_FLIGHT: usize = 16;

/// How a request got past a hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// No hold was on.
    Open,
    /// It waited in a hold: it goes on in its turn.
    Held,
    /// The hold was full (`hold_max`): answered 503.
    Full,
}

/// A request waiting in a hold (counted in `held_now` and the held gauge) until dropped, also
/// when its client goes away mid-wait and the request's future is dropped.
struct Waiting<'a>(&'a Proxy);

impl<'a> Waiting<'a> {
    /// Counts a request whose slot in `held_now` is already taken.
    fn new(proxy: &'a Proxy) -> Waiting<'a> {
        proxy.metrics.held().inc();
        Waiting(proxy)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.metrics.held().dec();
        self.0.held_now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A hold on an app's new requests, released when dropped (or by [`HoldGuard::release`]).
pub struct HoldGuard<'a> {
    proxy: &'a Proxy,
    started: tokio::time::Instant,
    held_before: u64,
}

/// What a hold did, for the deploy's step output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldReport {
    /// Requests that waited during the hold.
    pub held: u64,
    pub lasted: Duration,
}

impl HoldGuard<'_> {
    /// Let the held requests go on to the upstream.
    pub fn release(self) -> HoldReport {
        HoldReport {
            held: self.proxy.held_total.load(Ordering::Acquire) - self.held_before,
            lasted: self.started.elapsed(),
        }
    }
}

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        self.proxy.hold.send_replace(false);
    }
}

impl Proxy {
    fn new(app: &str, listen: SocketAddr, config: ProxyConfig, metrics: ProxyMetrics) -> Proxy {
        let live = config.upstream.map(|addr| {
            Arc::new(Upstream::new(Target {
                addr,
                container: None,
            }))
        });
        Proxy {
            app: app.to_string(),
            listen,
            maintenance: AtomicBool::new(config.maintenance),
            maintenance_page: forward::maintenance_page(&config.maintenance_body),
            config,
            live: RwLock::new(live),
            pool: RwLock::new(Vec::new()),
            turn: AtomicUsize::new(0),
            pooled: AtomicBool::new(false),
            hold: watch::Sender::new(false),
            held_now: AtomicUsize::new(0),
            held_total: AtomicU64::new(0),
            released: tokio::sync::Semaphore::new(RELEASED_IN_FLIGHT),
            metrics,
        }
    }

    /// Hold new requests (each at most `hold_timeout`, at most `hold_max` at once) until the
    /// guard is released: a reload in progress costs them latency instead of errors. `None`
    /// when the app's `hold_timeout` is zero (holding off).
    pub fn hold(&self) -> Option<HoldGuard<'_>> {
        if self.config.hold_timeout.is_zero() {
            return None;
        }
        self.hold.send_replace(true);
        Some(HoldGuard {
            proxy: self,
            started: tokio::time::Instant::now(),
            held_before: self.held_total.load(Ordering::Acquire),
        })
    }

    /// Wait while a hold is on (bounded by `hold_timeout`).
    async fn wait_while_held(&self) -> Pass {
        if !*self.hold.borrow() {
            return Pass::Open;
        }
        if self.held_now.fetch_add(1, Ordering::AcqRel) >= self.config.hold_max {
            self.held_now.fetch_sub(1, Ordering::AcqRel);
            return Pass::Full;
        }
        self.held_total.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting::new(self);
        let mut released = self.hold.subscribe();
        // Past the timeout the request goes on anyway: the app may well answer it.
        let _ = tokio::time::timeout(self.config.hold_timeout, released.wait_for(|on| !*on)).await;
        Pass::Held
    }

    /// A turn to send a request that was held: at most [`RELEASED_IN_FLIGHT`] of them wait for
    /// an answer at once, first held first, so a released hold queues here and not in the app
    /// server's listen backlog (uWSGI's is 100; a connection past it waits for TCP to retry
    /// its handshake, seconds later).
    async fn released_turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.released
            .acquire()
            .await
            .expect("the release semaphore is never closed")
    }

    /// A proxy not yet serving, for tests and tools that drive it directly: bind `config.listen`.
    pub async fn bind(app: &str, config: ProxyConfig) -> anyhow::Result<(Arc<Proxy>, TcpListener)> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("app {app}: binding proxy.listen {}", config.listen))?;
        let metrics = ProxyMetrics::unregistered(app);
        let proxy = Arc::new(Proxy::new(app, listener.local_addr()?, config, metrics));
        Ok((proxy, listener))
    }

    /// Serve `listener` until `shutdown`, then let open requests finish (bounded by `grace`).
    pub async fn serve(
        self: Arc<Proxy>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) {
        let make = |peer: SocketAddr| {
            let proxy = self.clone();
            // Per connection, not per request: the client's address as `X-Forwarded-For`.
            let forwarded_for = forward::forwarded_for(peer);
            hyper::service::service_fn(move |req| {
                forward::handle(proxy.clone(), forwarded_for.clone(), req)
            })
        };
        if !crate::listener::serve(listener, make, shutdown, grace).await {
            tracing::warn!(app = self.app, "proxied requests still open at shutdown");
        }
    }

    /// The app this proxy serves.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Send new requests to `to` (`None`: answer 503 until something is live). Returns the
    /// upstream switched away from, for [`Proxy::drain`]. Switching to the current target
    /// keeps it (and its pool).
    pub fn switch(&self, to: Option<Target>) -> Option<Retired> {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        if live.as_ref().map(|u| &u.target) == to.as_ref() {
            return None;
        }
        let next = to.map(|t| Arc::new(Upstream::new(t)));
        std::mem::replace(&mut *live, next).map(Retired)
    }

    /// Wait until every request that leased `old` has finished, at most the app's
    /// `drain_timeout`.
    pub async fn drain(&self, old: &Retired) -> Drained {
        self.drain_upstream(&old.0).await
    }

    async fn drain_upstream(&self, old: &Upstream) -> Drained {
        let started = tokio::time::Instant::now();
        let deadline = started + self.config.drain_timeout;
        loop {
            let notified = old.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let open = old.active.load(Ordering::Acquire);
            if open == 0 || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Drained {
                    abandoned: old.active.load(Ordering::Acquire),
                    waited: started.elapsed(),
                };
            }
        }
    }

    /// Send requests to these addresses in turn (a Swarm service's running tasks); a member
    /// kept keeps its connections. Empty: the single live upstream again.
    pub fn set_pool(&self, addrs: &[SocketAddr]) {
        self.pooled.store(true, Ordering::Release);
        let mut pool = self.pool.write().unwrap_or_else(|e| e.into_inner());
        if pool.iter().map(|u| u.target.addr).eq(addrs.iter().copied()) {
            return;
        }
        let next = addrs
            .iter()
            .map(|addr| match pool.iter().find(|u| u.target.addr == *addr) {
                Some(kept) => kept.clone(),
                None => Arc::new(Upstream::new(Target {
                    addr: *addr,
                    container: None,
                })),
            })
            .collect();
        *pool = next;
    }

    /// The next pool member not ejected, in turn. `Err(())` when the proxy has a pool but no
    /// member to take now (empty, or all ejected: a lone task being replaced); `Ok(None)`
    /// when it has no pool.
    fn pool_member(&self) -> Result<Option<Arc<Upstream>>, ()> {
        let pool = self.pool.read().unwrap_or_else(|e| e.into_inner());
        let n = pool.len();
        if n == 0 {
            return match self.pooled.load(Ordering::Acquire) {
                true => Err(()),
                false => Ok(None),
            };
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        (0..n)
            .map(|i| &pool[(start + i) % n])
            .find(|u| !u.ejected(now))
            .map(|member| Some(member.clone()))
            .ok_or(())
    }

    /// [`Proxy::lease`], but a pooled proxy with no member to take waits for one (a lone
    /// task being replaced), at most `hold_timeout`: latency instead of a 503.
    pub(crate) async fn lease_waiting(&self) -> Option<Lease> {
        let deadline = tokio::time::Instant::now() + self.config.hold_timeout;
        loop {
            match self.pool_member() {
                Ok(Some(member)) => return Some(self.leased(member)),
                Ok(None) => return self.lease(),
                Err(()) if tokio::time::Instant::now() >= deadline => return None,
                Err(()) => tokio::time::sleep(POOL_WAIT_STEP).await,
            }
        }
    }

    /// Lease the live upstream (or the next pool member) for one request; `None` when nothing
    /// is live.
    fn lease(&self) -> Option<Lease> {
        let upstream = match self.pool_member() {
            Ok(Some(member)) => member,
            Err(()) => return None,
            Ok(None) => {
                // Taken under the read lock, so a switch (write lock) sees every lease of the
                // old upstream in its count: a drain can never miss a request that picked it.
                let live = self.live.read().unwrap_or_else(|e| e.into_inner());
                let upstream = live.as_ref()?.clone();
                return Some(self.leased(upstream));
            }
        };
        Some(self.leased(upstream))
    }

    fn leased(&self, upstream: Arc<Upstream>) -> Lease {
        upstream.active.fetch_add(1, Ordering::AcqRel);
        let in_flight = self.metrics.in_flight().clone();
        in_flight.inc();
        Lease {
            upstream,
            in_flight,
        }
    }

    /// What the live upstream has answered since it went live: `None` while nothing is live.
    pub fn answers(&self) -> Option<Answers> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.as_ref().map(|u| Answers {
            upstream: u.target.addr,
            answered: u.answered.load(Ordering::Relaxed),
            server_errors: u.server_errors.load(Ordering::Relaxed),
        })
    }

    /// Turn maintenance mode on or off (every request answered 503 with the configured body).
    pub fn set_maintenance(&self, on: bool) {
        self.maintenance.store(on, Ordering::Release);
    }

    pub fn status(&self) -> ProxyStatus {
        let pool = self.pool.read().unwrap_or_else(|e| e.into_inner());
        if !pool.is_empty() {
            let addrs: Vec<String> = pool.iter().map(|u| u.target.addr.to_string()).collect();
            return ProxyStatus {
                listen: self.listen,
                upstream: Some(addrs.join(", ")),
                container: None,
                since: pool.iter().map(|u| u.since).min(),
                in_flight: pool.iter().map(|u| u.active.load(Ordering::Acquire)).sum(),
                maintenance: self.maintenance.load(Ordering::Acquire),
                held: self.held_now.load(Ordering::Acquire),
            };
        }
        drop(pool);
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        ProxyStatus {
            listen: self.listen,
            upstream: live.as_ref().map(|u| u.target.addr.to_string()),
            container: live.as_ref().and_then(|u| u.target.container.clone()),
            since: live.as_ref().map(|u| u.since),
            in_flight: live
                .as_ref()
                .map_or(0, |u| u.active.load(Ordering::Acquire)),
            maintenance: self.maintenance.load(Ordering::Acquire),
            held: self.held_now.load(Ordering::Acquire),
        }
    }
}

/// Every app's proxy, by app name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Proxies(Arc<HashMap<String, Arc<Proxy>>>);

impl Proxies {
    /// Bind every configured proxy listener, or take it from `inherited` (a handover); a
    /// taken address fails startup, naming the app. Each proxy counts into `metrics`.
    pub async fn bind(
        config: &Config,
        inherited: &mut crate::handover::Inherited,
        metrics: &Metrics,
    ) -> anyhow::Result<(Proxies, Vec<(Arc<Proxy>, TcpListener)>)> {
        let mut map = HashMap::new();
        let mut listeners = Vec::new();
        for app in &config.apps {
            if let Some(p) = &app.proxy {
                let listener = inherited
                    .listener(&crate::handover::proxy_name(&app.name), p.listen)
                    .await
                    .with_context(|| format!("app {}: proxy.listen {}", app.name, p.listen))?;
                let proxy = Arc::new(Proxy::new(
                    &app.name,
                    listener.local_addr()?,
                    p.clone(),
                    metrics.proxy(&app.name),
                ));
                map.insert(app.name.clone(), proxy.clone());
                listeners.push((proxy, listener));
            }
        }
        Ok((Proxies(Arc::new(map)), listeners))
    }

    pub fn get(&self, app: &str) -> Option<&Arc<Proxy>> {
        self.0.get(app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> Arc<Proxy> {
        let config = ProxyConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: None,
            timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            maintenance: false,
            maintenance_body: String::new(),
            hold_timeout: Duration::from_secs(60),
            hold_max: 10,
        };
        let listen = config.listen;
        Arc::new(Proxy::new(
            "web",
            listen,
            config,
            ProxyMetrics::unregistered("web"),
        ))
    }

    #[tokio::test]
    async fn a_held_request_whose_client_goes_away_is_no_longer_counted_as_held() {
        let proxy = proxy();
        let guard = proxy.hold().expect("holding is on");
        let waiting = {
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.wait_while_held().await })
        };
        while proxy.status().held == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(proxy.metrics.held().get(), 1);

        // The client went away: hyper drops the request's future mid-wait.
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(proxy.status().held, 0);
        assert_eq!(proxy.metrics.held().get(), 0);
        assert_eq!(guard.release().held, 1);
    }
}
