//! Prometheus metrics (`/metrics`): what an operator watches.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label set with one label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Phase {
    /// The handover phase.
    pub phase: String,
}

/// Relay direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    /// `to_user` or `to_agent`.
    pub direction: String,
}

/// A reason or kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// What.
    pub kind: String,
}

/// Every metric of the bridge.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Live handovers by phase.
    pub handovers: Family<Phase, Gauge>,
    /// Handovers started here.
    pub started: Counter,
    /// Starts refused because this instance drove its `api.max_live_handovers`.
    pub starts_refused_at_capacity: Counter,
    /// The most handovers this instance drives at once.
    pub max_live: Gauge,
    /// Connections carrying event streams (read at each scrape).
    pub stream_connections: Gauge,
    /// Seconds from an agent entry's arrival to its Notify, and from a user message's intake
    /// to Salesforce's acceptance.
    pub relay_seconds: Family<Direction, Histogram>,
    /// Stream reconnects by reason.
    pub stream_reconnects: Family<Kind, Counter>,
    /// Entries a backfill found that the stream had not delivered.
    pub backfilled_entries: Counter,
    /// Entries suppressed as duplicates.
    pub duplicates_suppressed: Counter,
    /// Failed Notify and Inject deliveries.
    pub bot_delivery_failures: Family<Kind, Counter>,
    /// Token renewals and continuations.
    pub token_renewals: Counter,
    /// Handovers ended because the token and its grace period ran out.
    pub grace_terminations: Counter,
    /// Commands executed and waiting for their results.
    pub outbox_depth: Gauge,
    /// Every observation of the sessions, by kind.
    pub observations: Family<Kind, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("handover");
        let handovers = Family::<Phase, Gauge>::default();
        registry.register(
            "handovers",
            "Live handovers driven here, by phase",
            handovers.clone(),
        );
        let started = Counter::default();
        registry.register(
            "started",
            "Handovers started through this instance",
            started.clone(),
        );
        let starts_refused_at_capacity = Counter::default();
        registry.register(
            "starts_refused_at_capacity",
            "Starts refused because this instance drove its limit of live handovers",
            starts_refused_at_capacity.clone(),
        );
        let max_live = Gauge::default();
        registry.register(
            "max_live",
            "The most handovers this instance drives at once",
            max_live.clone(),
        );
        let stream_connections = Gauge::default();
        registry.register(
            "stream_connections",
            "Connections carrying event streams (over HTTP/2, up to salesforce.streams_per_connection each)",
            stream_connections.clone(),
        );
        let relay_seconds = Family::<Direction, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        registry.register(
            "relay_seconds",
            "Relay latency by direction",
            relay_seconds.clone(),
        );
        let stream_reconnects = Family::<Kind, Counter>::default();
        registry.register(
            "stream_reconnects",
            "Event stream reconnects by reason",
            stream_reconnects.clone(),
        );
        let backfilled_entries = Counter::default();
        registry.register(
            "backfilled_entries",
            "Entries recovered by backfills",
            backfilled_entries.clone(),
        );
        let duplicates_suppressed = Counter::default();
        registry.register(
            "duplicates_suppressed",
            "Duplicate entries suppressed",
            duplicates_suppressed.clone(),
        );
        let bot_delivery_failures = Family::<Kind, Counter>::default();
        registry.register(
            "bot_delivery_failures",
            "Failed Notify/Inject deliveries",
            bot_delivery_failures.clone(),
        );
        let token_renewals = Counter::default();
        registry.register(
            "token_renewals",
            "Access tokens renewed or continued",
            token_renewals.clone(),
        );
        let grace_terminations = Counter::default();
        registry.register(
            "grace_terminations",
            "Handovers ended by token expiry and grace",
            grace_terminations.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_depth",
            "Commands executed and awaiting results",
            outbox_depth.clone(),
        );
        let observations = Family::<Kind, Counter>::default();
        registry.register(
            "observations",
            "Session observations by kind",
            observations.clone(),
        );
        Self {
            registry: Arc::new(registry),
            handovers,
            started,
            starts_refused_at_capacity,
            max_live,
            stream_connections,
            relay_seconds,
            stream_reconnects,
            backfilled_entries,
            duplicates_suppressed,
            bot_delivery_failures,
            token_renewals,
            grace_terminations,
            outbox_depth,
            observations,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.push_str("# the metrics could not be encoded\n");
        }
        out
    }

    /// A label set.
    pub fn kind(kind: &str) -> Kind {
        Kind {
            kind: kind.to_owned(),
        }
    }
}
