//! Prometheus metrics: RPCs by method and status, RPC latency, open
//! connections, TLS handshakes by outcome, rate limit refusals, certificate expiry, reloads, admin
//! API requests and build info. One process-wide registry; `/metrics` renders it in the
//! Prometheus (OpenMetrics) text format.

mod follow;
mod http;
mod rpc;

pub(crate) use follow::serve_following;
pub(crate) use http::serve;
pub(crate) use rpc::record_rpc;

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

/// Labels of an RPC counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcLabels {
    /// The gRPC path, e.g. `/api.DiceService/RollDie`.
    pub method: String,
    /// The gRPC status code name, e.g. `Ok`.
    pub code: String,
}

/// Labels naming a gRPC method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MethodLabels {
    /// The gRPC path.
    pub method: String,
}

/// Labels naming a listener.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabels {
    /// The listener's name.
    pub listener: String,
}

/// Labels of a TLS handshake counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HandshakeLabels {
    /// The listener's name.
    pub listener: String,
    /// `ok`, `timeout`, `no_cert`, `unknown_ca`, `revoked`, `expired`, `denied` or `error`.
    pub outcome: &'static str,
}

/// Every `outcome` of a TLS handshake, as the `dice_tls_handshakes_total` series name them.
pub const HANDSHAKE_OUTCOMES: [&str; 8] = [
    "ok",
    "timeout",
    "no_cert",
    "unknown_ca",
    "revoked",
    "expired",
    "denied",
    "error",
];

/// Labels of a certificate gauge.
/// Labels of the rate limit metrics: by listener, never by client identity.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RateLimitLabels {
    pub listener: String,
    /// `rpc` or `handshake`.
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CertLabels {
    /// The certificate file.
    pub cert: String,
}

/// Labels of a reload counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    /// `ok` or `rejected`.
    pub outcome: &'static str,
}

/// Labels of the closed-connections counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ClosedLabels {
    /// The listener's name.
    pub listener: String,
    /// `revoked`, `untrusted_ca`, `expired`, `not_allowed` or `invalid`.
    pub reason: &'static str,
}

/// Every `reason` of `dice_connections_closed_total`.
pub const CLOSE_REASONS: [&str; 5] = [
    "revoked",
    "untrusted_ca",
    "expired",
    "not_allowed",
    "invalid",
];

/// Labels of an admin API counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AdminLabels {
    /// `prepare`, `install`, `set_trust` or `rollback`.
    pub action: &'static str,
    /// `ok`, `denied`, `refused` or `failed`.
    pub outcome: &'static str,
}

/// Every `action` of the admin API, as `dice_admin_requests_total` names them.
pub const ADMIN_ACTIONS: [&str; 4] = ["prepare", "install", "set_trust", "rollback"];
/// Every `outcome` of an admin RPC, as `dice_admin_requests_total` names them.
pub const ADMIN_OUTCOMES: [&str; 4] = ["ok", "denied", "refused", "failed"];

/// Every metric the agent exports.
pub(crate) struct Metrics {
    registry: Registry,
    /// `dice_rpcs_total{method,code}`.
    pub rpcs: Family<RpcLabels, Counter>,
    /// `dice_rpc_duration_seconds{method}`.
    pub rpc_duration: Family<MethodLabels, Histogram>,
    /// `dice_open_connections{listener}`.
    pub open_connections: Family<ListenerLabels, Gauge>,
    /// `dice_tls_handshakes_total{listener,outcome}`.
    pub handshakes: Family<HandshakeLabels, Counter>,
    /// `dice_certificate_not_after_seconds{cert}`.
    pub cert_not_after: Family<CertLabels, Gauge>,
    /// `dice_certificate_reloads_total{outcome}`.
    pub reloads: Family<OutcomeLabels, Counter>,
    /// `dice_admin_requests_total{action,outcome}`.
    pub admin_requests: Family<AdminLabels, Counter>,
    /// `dice_rate_limited_total{listener,kind}`.
    pub rate_limited: Family<RateLimitLabels, Counter>,
    /// `dice_rate_limit_tracked_keys{listener,kind}`.
    pub rate_limit_tracked: Family<RateLimitLabels, Gauge>,
    /// `dice_config_reloads_total{outcome}`.
    pub config_reloads: Family<OutcomeLabels, Counter>,
    /// `dice_connections_closed_total{listener,reason}`: open connections
    /// told to go away because their client no longer passes the checks.
    pub connections_closed: Family<ClosedLabels, Counter>,
    /// `dice_acme_renewals_total{outcome}`: certificates obtained from the
    /// ACME server (`ok`) and attempts that failed (`failed`).
    pub acme_renewals: Family<OutcomeLabels, Counter>,
    /// `dice_acme_next_renewal_timestamp_seconds`: when the next ACME attempt is due.
    pub acme_next_renewal: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 16,
    ))
}

/// Registers `metric` as `name` with `help`, and returns it for [`Metrics`] to keep.
/// `dice_rate_limited_total` and `dice_rate_limit_tracked_keys`.
fn rate_limit_families(
    registry: &mut Registry,
) -> (
    Family<RateLimitLabels, Counter>,
    Family<RateLimitLabels, Gauge>,
) {
    let limited = registered(
        registry,
        "rate_limited",
        "RPCs and connections refused by a rate limit, by listener and kind (rpc, handshake)",
        Family::default(),
    );
    let tracked = registered(
        registry,
        "rate_limit_tracked_keys",
        "Client identities or addresses a rate limiter tracks, by listener and kind",
        Family::default(),
    );
    (limited, tracked)
}

fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("dice");
        let rpcs = registered(
            &mut registry,
            "rpcs",
            "RPCs served, by method and gRPC status code",
            Family::default(),
        );
        let rpc_duration = registered(
            &mut registry,
            "rpc_duration_seconds",
            "RPC latency, by method",
            Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        );
        let open_connections = registered(
            &mut registry,
            "open_connections",
            "Open connections, by listener",
            Family::default(),
        );
        let handshakes = registered(
            &mut registry,
            "tls_handshakes",
            "TLS handshakes, by listener and outcome",
            Family::default(),
        );
        let cert_not_after = registered(
            &mut registry,
            "certificate_not_after_seconds",
            "End of validity of the served certificate, Unix seconds",
            Family::default(),
        );
        let reloads = registered(
            &mut registry,
            "certificate_reloads",
            "Certificate reloads, by outcome",
            Family::default(),
        );
        let admin_requests = registered(
            &mut registry,
            "admin_requests",
            "Admin API requests, by action and outcome",
            Family::default(),
        );
        let (rate_limited, rate_limit_tracked) = rate_limit_families(&mut registry);
        let config_reloads = registered(
            &mut registry,
            "config_reloads",
            "Config file reloads, by outcome",
            Family::default(),
        );
        let connections_closed = registered(
            &mut registry,
            "connections_closed",
            "Open connections closed because a reload no longer admits their client, by listener and reason",
            Family::default(),
        );
        let acme_renewals = registered(
            &mut registry,
            "acme_renewals",
            "Certificates obtained from the ACME server ([acme]), by outcome (ok, failed)",
            Family::default(),
        );
        let acme_next_renewal = registered(
            &mut registry,
            "acme_next_renewal_timestamp_seconds",
            "When the next ACME certificate request is due ([acme]), Unix seconds",
            Gauge::default(),
        );
        registry.register(
            "build",
            "The agent's version and git commit",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", dice_proto::GIT_COMMIT),
            ]),
        );
        // Series known in advance start at 0, so they exist before the first event.
        for outcome in ["ok", "rejected"] {
            drop(reloads.get_or_create(&OutcomeLabels { outcome }));
            drop(config_reloads.get_or_create(&OutcomeLabels { outcome }));
        }
        for action in ADMIN_ACTIONS {
            for outcome in ADMIN_OUTCOMES {
                drop(admin_requests.get_or_create(&AdminLabels { action, outcome }));
            }
        }
        Self {
            registry,
            rpcs,
            rpc_duration,
            open_connections,
            handshakes,
            cert_not_after,
            reloads,
            admin_requests,
            rate_limited,
            rate_limit_tracked,
            config_reloads,
            connections_closed,
            acme_renewals,
            acme_next_renewal,
        }
    }

    /// Starts the series of a bound listener at 0: its open connections and,
    /// for an mTLS listener, its handshakes by every outcome.
    pub(crate) fn listener_bound(&self, listener: &str, tls: bool) {
        // Creating a series is enough; the guard get_or_create returns is not needed.
        drop(self.open_connections.get_or_create(&ListenerLabels {
            listener: listener.to_owned(),
        }));
        if tls {
            for reason in CLOSE_REASONS {
                drop(self.connections_closed.get_or_create(&ClosedLabels {
                    listener: listener.to_owned(),
                    reason,
                }));
            }
            for outcome in HANDSHAKE_OUTCOMES {
                drop(self.handshakes.get_or_create(&HandshakeLabels {
                    listener: listener.to_owned(),
                    outcome,
                }));
            }
        }
    }

    /// Renders every metric in the text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub(crate) fn metrics() -> &'static Metrics {
    &METRICS
}
