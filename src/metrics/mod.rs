//! Prometheus metrics: one registry (`Metrics`), made once at startup and held by `Services`,
//! rendered as OpenMetrics text for `GET /metrics`.
//!
//! Every label is bounded: app names come from the config, the other labels from closed sets
//! (a deploy's trigger, path, status and stage; a delivery's outcome; a status class). No
//! commit, path, ref or free text is ever a label.
//!
//! - deploys and their stages are heard on the store's `DeployEvent` broadcast
//!   ([`Metrics::follow`]), so nothing in the deploy pipeline counts anything;
//! - the proxy counts through a [`ProxyMetrics`] handle each app's proxy holds;
//! - deliveries and polls are counted where their outcome is decided (one call each);
//! - the queue depth is read from the store at each scrape ([`Metrics::refresh`]).
//!
//! Imports only config and store types (`tests/api/layering.rs`).

mod follow;
mod proxy;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::config::Config;
use crate::store::Store;

pub use proxy::{ProxyMetrics, UpstreamKind};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the deploy and stage duration buckets, in seconds: a touch reload to a slow
/// image pull.
const DEPLOY_BUCKETS: [f64; 13] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// An app, the only label of most metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppLabel {
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    app: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeployLabels {
    app: String,
    trigger: &'static str,
    path: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    app: String,
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    app: String,
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    app: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    receiver: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabel {
    receiver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The notification outbox's metrics.
struct Notifications {
    sent: Family<NotifyLabels, Counter>,
    pending: Family<ReceiverLabel, Gauge>,
}

impl Notifications {
    fn register(r: &mut Registry) -> Notifications {
        Notifications {
            sent: add(
                r,
                "dockhand_notifications",
                "Attempts to send a notification, by receiver and outcome (delivered, retry, gave_up)",
                None,
                Family::default(),
            ),
            pending: add(
                r,
                "dockhand_notifications_pending",
                "Notifications in the outbox not yet delivered nor given up",
                None,
                Family::default(),
            ),
        }
    }
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
/// A gauge holding seconds (a timestamp).
type Seconds = Gauge<f64, AtomicU64>;

fn deploy_histogram() -> Histogram {
    Histogram::new(DEPLOY_BUCKETS)
}

/// `metric`, registered as `name` (with `unit`'s suffix); the registry keeps a clone that
/// shares its values.
pub(crate) fn add<M: Metric + Clone>(
    r: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => r.register_with_unit(name, help, unit, metric.clone()),
        None => r.register(name, help, metric.clone()),
    }
    metric
}

/// Every metric dockhand exports; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    /// The configured apps: the queue depth is set for each at every scrape (0 included).
    apps: Vec<String>,
    deliveries: Family<DeliveryLabels, Counter>,
    deploys: Family<DeployLabels, Counter>,
    deploy_duration: Histograms<PathLabels>,
    stage_duration: Histograms<StageLabels>,
    reverts: Family<AppLabel, Counter>,
    queue_depth: Family<AppLabel, Gauge>,
    last_success: Family<AppLabel, Seconds>,
    poll_results: Family<PollLabels, Counter>,
    notify: Notifications,
    proxy: proxy::Families,
}

impl Metrics {
    /// The registry for `config`'s apps, every metric registered.
    pub fn new(config: &Config) -> Metrics {
        let mut r = Registry::default();
        let secs = Some(Unit::Seconds);
        let inner = Inner {
            deliveries: add(
                &mut r,
                "dockhand_deliveries",
                "Webhook deliveries per app, by what became of them",
                None,
                Family::default(),
            ),
            deploys: add(
                &mut r,
                "dockhand_deploys",
                "Deploys that ended, by trigger, path (none: never planned) and final status",
                None,
                Family::default(),
            ),
            deploy_duration: add(
                &mut r,
                "dockhand_deploy_duration",
                "Time from a deploy's start to its end",
                secs.clone(),
                Family::new_with_constructor(deploy_histogram),
            ),
            stage_duration: add(
                &mut r,
                "dockhand_deploy_stage_duration",
                "Time each deploy stage (step) took",
                secs.clone(),
                Family::new_with_constructor(deploy_histogram),
            ),
            reverts: add(
                &mut r,
                "dockhand_deploy_reverts",
                "Deploys that failed after changing the app and were put back to the previous commit",
                None,
                Family::default(),
            ),
            queue_depth: add(
                &mut r,
                "dockhand_queue_depth",
                "Deploys waiting in the app's queue",
                None,
                Family::default(),
            ),
            last_success: add(
                &mut r,
                "dockhand_last_successful_deploy_timestamp",
                "When the app's newest succeeded deploy ended (unix time)",
                secs,
                Family::default(),
            ),
            poll_results: add(
                &mut r,
                "dockhand_poll_results",
                "Polls of the app's origin, by result",
                None,
                Family::default(),
            ),
            notify: Notifications::register(&mut r),
            proxy: proxy::Families::register(&mut r),
            apps: config.apps.iter().map(|a| a.name.clone()).collect(),
            registry: Registry::default(),
        };
        r.register(
            "dockhand_build",
            "The running dockhand's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        // Each app's gauges and its revert count exist from the start, at 0: a counter's first
        // increment is then an increase Prometheus sees.
        for app in &inner.apps {
            let label = AppLabel { app: app.clone() };
            drop(inner.reverts.get_or_create(&label));
            drop(inner.queue_depth.get_or_create(&label));
        }
        Metrics(Arc::new(Inner {
            registry: r,
            ..inner
        }))
    }

    /// The handle `app`'s proxy counts its requests through.
    pub fn proxy(&self, app: &str) -> ProxyMetrics {
        self.0.proxy.for_app(app)
    }

    /// Count one webhook delivery for `app`: `outcome` is one of a closed set of words
    /// (`deploy`, `locked`, `ignored`, `ping`, `duplicate`, `refused`).
    pub fn delivery(&self, app: &str, outcome: &'static str) {
        self.0
            .deliveries
            .get_or_create(&DeliveryLabels {
                app: app.to_string(),
                outcome,
            })
            .inc();
    }

    /// Count one poll of `app`'s origin (`result` from a closed set of words).
    pub fn poll(&self, app: &str, result: &'static str) {
        self.0
            .poll_results
            .get_or_create(&PollLabels {
                app: app.to_string(),
                result,
            })
            .inc();
    }

    /// Count one attempt to send a notification to `receiver` (`outcome`: `delivered`,
    /// `retry` or `gave_up`) and set what it still has to send.
    pub fn notification(&self, receiver: &str, outcome: &'static str, pending: i64) {
        self.0
            .notify
            .sent
            .get_or_create(&NotifyLabels {
                receiver: receiver.to_string(),
                outcome,
            })
            .inc();
        self.notifications_pending(receiver, pending);
    }

    /// Set how many notifications `receiver` still has to send.
    pub fn notifications_pending(&self, receiver: &str, pending: i64) {
        self.0
            .notify
            .pending
            .get_or_create(&ReceiverLabel {
                receiver: receiver.to_string(),
            })
            .set(pending);
    }

    /// Set the gauges that come from the history: each app's queue depth (every scrape) and,
    /// at startup, its last success.
    pub async fn refresh(&self, store: &Store) -> anyhow::Result<()> {
        let queued = store.queued_by_app().await?;
        for app in &self.0.apps {
            let depth = queued.iter().find(|(a, _)| a == app).map_or(0, |(_, n)| *n);
            self.0
                .queue_depth
                .get_or_create(&AppLabel { app: app.clone() })
                .set(depth);
        }
        Ok(())
    }

    /// Start each app's last-success gauge where the history left it (a restart does not
    /// reset it to 0).
    pub async fn load(&self, store: &Store) -> anyhow::Result<()> {
        for (app, finished_ms) in store.last_success_by_app().await? {
            if self.0.apps.contains(&app) {
                self.succeeded_at(&app, finished_ms);
            }
        }
        Ok(())
    }

    fn succeeded_at(&self, app: &str, finished_ms: i64) {
        // Unix milliseconds fit an f64 exactly for the next quarter of a million years.
        #[allow(clippy::cast_precision_loss)]
        let seconds = finished_ms as f64 / 1000.0;
        self.0
            .last_success
            .get_or_create(&AppLabel {
                app: app.to_string(),
            })
            .set(seconds);
    }

    /// Every metric as OpenMetrics text (ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[server]\nstate_dir = \"{state}\"\n[[apps]]\nname = \"web\"\n\
             repo = \"https://github.com/o/r.git\"\nsecret = \"s3cret\"\nvolume = \"{volume}\"\n",
            state = dir.path().join("state").display(),
            volume = dir.path().join("web").display(),
        );
        Config::parse(&text, dir.path()).unwrap().0
    }

    #[test]
    fn the_text_is_openmetrics_with_every_family_and_the_build_info() {
        let metrics = Metrics::new(&config());
        metrics.delivery("web", "deploy");
        metrics.poll("web", "settled");
        metrics
            .proxy("web")
            .answered(204, UpstreamKind::Fixed, std::time::Duration::ZERO);
        let text = metrics.render();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in [
            "dockhand_deliveries_total{app=\"web\",outcome=\"deploy\"} 1",
            "dockhand_poll_results_total{app=\"web\",result=\"settled\"} 1",
            "dockhand_proxy_requests_total{app=\"web\",code_class=\"2xx\",upstream=\"fixed\"} 1",
            "dockhand_proxy_request_duration_seconds_count{app=\"web\"} 1",
            &format!(
                "dockhand_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "dockhand_deploy_reverts_total{app=\"web\"} 0",
            "dockhand_queue_depth{app=\"web\"} 0",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }
}
