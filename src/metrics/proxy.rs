//! The proxy's metrics: the families (one per metric, labelled by app), and the per-app
//! [`ProxyMetrics`] handle a `Proxy` holds, its label sets resolved once so that a request
//! costs a few atomic adds and one histogram observation.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{add, AppLabel, Histograms};

/// Upper bounds of the proxy latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The status classes a request is counted under.
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Who answered a request: a container dockhand runs, a fixed `upstream` address, or the
/// proxy itself with no upstream (maintenance, nothing live, a full hold). A bounded label:
/// container ports change with every deploy, so the address never is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    Container,
    Fixed,
    None,
}

impl UpstreamKind {
    const ALL: [UpstreamKind; 3] = [
        UpstreamKind::Container,
        UpstreamKind::Fixed,
        UpstreamKind::None,
    ];

    fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Container => "container",
            UpstreamKind::Fixed => "fixed",
            UpstreamKind::None => "none",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    app: String,
    code_class: &'static str,
    upstream: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The proxy's metric families, registered once.
#[derive(Clone)]
pub(super) struct Families {
    requests: Family<RequestLabels, Counter>,
    duration: Histograms<AppLabel>,
    in_flight: Family<AppLabel, Gauge>,
    connect_errors: Family<AppLabel, Counter>,
    held: Family<AppLabel, Gauge>,
}

impl Families {
    pub(super) fn register(r: &mut Registry) -> Families {
        Families {
            requests: add(
                r,
                "dockhand_proxy_requests",
                "Requests the app's proxy answered, by status class and who answered",
                None,
                Family::default(),
            ),
            duration: add(
                r,
                "dockhand_proxy_request_duration",
                "Time from a request's arrival at the proxy to its answer's head",
                Some(Unit::Seconds),
                Family::new_with_constructor(latency_histogram),
            ),
            in_flight: add(
                r,
                "dockhand_proxy_in_flight",
                "Requests leasing an upstream now (sent, or streaming their answer)",
                None,
                Family::default(),
            ),
            connect_errors: add(
                r,
                "dockhand_proxy_upstream_connect_errors",
                "Connections to the upstream that could not be made (each try of a request)",
                None,
                Family::default(),
            ),
            held: add(
                r,
                "dockhand_proxy_held_requests",
                "Requests waiting now in a reload's hold",
                None,
                Family::default(),
            ),
        }
    }

    pub(super) fn for_app(&self, app: &str) -> ProxyMetrics {
        let label = AppLabel {
            app: app.to_string(),
        };
        let requests = CODE_CLASSES.map(|code_class| {
            UpstreamKind::ALL.map(|upstream| {
                self.requests.get_or_create_owned(&RequestLabels {
                    app: app.to_string(),
                    code_class,
                    upstream: upstream.as_str(),
                })
            })
        });
        ProxyMetrics {
            requests: Box::new(requests),
            duration: self.duration.get_or_create_owned(&label),
            in_flight: self.in_flight.get_or_create_owned(&label),
            connect_errors: self.connect_errors.get_or_create_owned(&label),
            held: self.held.get_or_create_owned(&label),
        }
    }
}

/// One app's proxy metrics. Cheap to clone; a clone counts into the same series.
#[derive(Clone)]
pub struct ProxyMetrics {
    /// By status class (1xx..5xx), then by [`UpstreamKind`] (in `ALL`'s order).
    requests: Box<[[Counter; 3]; 5]>,
    duration: Histogram,
    in_flight: Gauge,
    connect_errors: Counter,
    held: Gauge,
}

impl ProxyMetrics {
    /// A handle registered nowhere: for a proxy built outside a dockhand (tests, tools).
    pub fn unregistered(app: &str) -> ProxyMetrics {
        Families::register(&mut Registry::default()).for_app(app)
    }

    /// Count one answer: its status, who gave it, and how long it took to its head.
    pub fn answered(&self, status: u16, upstream: UpstreamKind, took: Duration) {
        // A status outside 100..=599 cannot be sent; counted as 5xx should one ever be.
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let kind = UpstreamKind::ALL
            .iter()
            .position(|k| *k == upstream)
            .unwrap_or(2);
        self.requests[class][kind].inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// The in-flight gauge: a lease increments it and decrements it when dropped.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The held-requests gauge: up while a request waits in a hold.
    pub fn held(&self) -> &Gauge {
        &self.held
    }

    /// Count a connection to the upstream that could not be made.
    pub fn connect_error(&self) {
        self.connect_errors.inc();
    }
}
