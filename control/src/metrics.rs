//! `/metrics` in the Prometheus text format (the prometheus crate).
//!
//! The policy engine's own metrics live in a registry (generation, swap
//! duration histogram, classifier size). The dataplane's counters are read
//! at scrape time from the appliance's lock-free counters and written as
//! fresh metric families, so scraping never touches the packet path.
//! Names follow Prometheus conventions: `microseg_` prefix, `_total` for
//! counters, base units (seconds, frames).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::appliance::Appliance;
use crate::engine::SwapObserver;
use crate::visibility::Visibility;
use microseg_dataplane::conntrack::EndReason;

/// The control plane's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    generation: IntGauge,
    swap_seconds: Histogram,
    classifier_rules: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        // Metric definitions are constants: a failure here is a programming
        // mistake that every test would catch, never caused by input.
        let generation = IntGauge::new("microseg_policy_generation", "Policy generation in force.")
            .expect("constant metric definition");
        let swap_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "microseg_policy_swap_duration_seconds",
                "Time from an accepted policy change to the new policy in force.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("constant metric definition");
        let classifier_rules = IntGauge::new(
            "microseg_policy_classifier_rules",
            "Classifier rules compiled from the policy in force.",
        )
        .expect("constant metric definition");
        let registry = Registry::new();
        for collector in [
            Box::new(generation.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(swap_seconds.clone()),
            Box::new(classifier_rules.clone()),
        ] {
            registry.register(collector).expect("distinct metric names");
        }
        Self {
            registry,
            generation,
            swap_seconds,
            classifier_rules,
        }
    }

    /// Sets the generation in force (at start).
    pub fn set_generation(&self, generation: u32, classifier_rules: usize) {
        self.generation.set(i64::from(generation));
        self.classifier_rules.set(classifier_rules as i64);
    }

    /// The text exposition, with the appliance's counters if it runs;
    /// `rule_name` names a rule id as (policy, rule) for the hit counters.
    pub fn render(
        &self,
        appliance: Option<&Appliance>,
        visibility: Option<&Visibility>,
        rule_name: &dyn Fn(u32) -> (String, String),
    ) -> String {
        let mut families = self.registry.gather();
        if let Some(appliance) = appliance {
            families.extend(dataplane_families(appliance, visibility, rule_name));
        }
        if let Some(visibility) = visibility {
            families.extend(visibility_families(visibility));
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl SwapObserver for Metrics {
    fn swapped(&self, generation: u32, seconds: f64, classifier_rules: usize) {
        self.generation.set(i64::from(generation));
        self.swap_seconds.observe(seconds);
        self.classifier_rules.set(classifier_rules as i64);
    }
}

/// A counter family with labels, filled from (labels, value) pairs.
fn counter_family<'a>(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    values: impl IntoIterator<Item = (Vec<&'a str>, u64)>,
) {
    if let Ok(family) = IntCounterVec::new(Opts::new(name, help), labels) {
        for (label_values, value) in values {
            if let Ok(counter) = family.get_metric_with_label_values(&label_values) {
                counter.inc_by(value);
            }
        }
        let _ = registry.register(Box::new(family));
    }
}

fn dataplane_families(
    appliance: &Appliance,
    visibility: Option<&Visibility>,
    rule_name: &dyn Fn(u32) -> (String, String),
) -> Vec<prometheus::proto::MetricFamily> {
    let status = appliance.status();
    let registry = Registry::new();
    let ports = &status.ports;
    counter_family(
        &registry,
        "microseg_port_received_bytes_total",
        "Bytes received by the switch on a port.",
        &["port"],
        ports.iter().map(|p| (vec![p.name.as_str()], p.rx_bytes)),
    );
    counter_family(
        &registry,
        "microseg_port_transmitted_bytes_total",
        "Bytes transmitted out of a port.",
        &["port"],
        ports.iter().map(|p| (vec![p.name.as_str()], p.tx_bytes)),
    );
    let hits: Vec<((String, String), u64)> = appliance
        .rule_hits()
        .into_iter()
        .map(|(id, count)| (rule_name(id), count))
        .collect();
    counter_family(
        &registry,
        "microseg_rule_hits_total",
        "New flows (and re-checks after a policy change) each rule decided, since the policy in force was published.",
        &["policy", "rule"],
        hits.iter()
            .map(|((policy, rule), count)| (vec![policy.as_str(), rule.as_str()], *count)),
    );
    counter_family(
        &registry,
        "microseg_port_received_frames_total",
        "Frames received by the switch on a port.",
        &["port"],
        ports.iter().map(|p| (vec![p.name.as_str()], p.rx)),
    );
    counter_family(
        &registry,
        "microseg_port_transmitted_frames_total",
        "Frames transmitted out of a port.",
        &["port"],
        ports.iter().map(|p| (vec![p.name.as_str()], p.tx)),
    );
    counter_family(
        &registry,
        "microseg_port_transmit_failures_total",
        "Frames a port could not take (no free UMEM frame, tx ring full).",
        &["port"],
        ports.iter().map(|p| (vec![p.name.as_str()], p.tx_failed)),
    );
    counter_family(
        &registry,
        "microseg_dropped_frames_total",
        "Frames dropped, by ingress port and reason.",
        &["port", "reason"],
        ports.iter().flat_map(|p| {
            p.drops
                .iter()
                .map(move |(reason, n)| (vec![p.name.as_str(), reason.as_str()], *n))
        }),
    );
    counter_family(
        &registry,
        "microseg_xdp_frames_total",
        "Frames seen by the XDP program on a port, by outcome.",
        &["port", "outcome"],
        ports.iter().flat_map(|p| {
            [
                ("seen", p.xdp_rx),
                ("redirected", p.xdp_redirected),
                ("quarantine_drop", p.xdp_quarantine_drops),
                ("no_socket_drop", p.xdp_no_socket_drops),
                ("fast_forward", p.xdp_fast_forwarded),
                ("fast_stale", p.xdp_fast_stale),
            ]
            .map(|(outcome, n)| (vec![p.name.as_str(), outcome], n))
        }),
    );
    counter_family(
        &registry,
        "microseg_forwarded_frames_total",
        "Frames forwarded, to one port (unicast) or flooded.",
        &["kind"],
        [
            (vec!["unicast"], status.forwarded),
            (vec!["flooded"], status.flooded),
        ],
    );
    let conntrack = appliance.pipeline().conntrack().stats();
    counter_family(
        &registry,
        "microseg_conntrack_created_total",
        "Connections admitted into the table.",
        &[],
        [(vec![], conntrack.created)],
    );
    counter_family(
        &registry,
        "microseg_conntrack_ended_total",
        "Connections that left the table, by reason.",
        &["reason"],
        [
            ("expired", EndReason::Expired),
            ("closed", EndReason::Closed),
            ("reset", EndReason::Reset),
            ("removed", EndReason::Removed),
            ("early_drop", EndReason::EarlyDrop),
        ]
        .map(|(name, reason)| (vec![name], conntrack.ended(reason))),
    );
    counter_family(
        &registry,
        "microseg_conntrack_sweep_shards_total",
        "Conntrack shards visited by expiry sweeps: read entry by entry, or passed over because none of their entries could have expired yet.",
        &["outcome"],
        [
            (vec!["scanned"], conntrack.sweep_scanned),
            (vec!["skipped"], conntrack.sweep_skipped),
        ],
    );
    counter_family(
        &registry,
        "microseg_events_lost_total",
        "Events dropped because their queue was full, by queue.",
        &["queue"],
        [
            (vec!["verdict"], status.events_dropped),
            (vec!["flow"], conntrack.events_dropped),
        ]
        .into_iter()
        .chain(visibility.into_iter().flat_map(|v| {
            let lost = v.lost();
            [
                (vec!["flow_store"], lost.store_evicted),
                (vec!["flow_stream"], lost.stream),
            ]
        })),
    );
    let worker_ids: Vec<String> = status.workers.iter().map(|w| w.id.to_string()).collect();
    counter_family(
        &registry,
        "microseg_worker_rounds_total",
        "Poll rounds of a worker, by whether they found frames.",
        &["worker", "busy"],
        status.workers.iter().zip(&worker_ids).flat_map(|(w, id)| {
            [
                (vec![id.as_str(), "true"], w.busy_rounds),
                (
                    vec![id.as_str(), "false"],
                    w.rounds.saturating_sub(w.busy_rounds),
                ),
            ]
        }),
    );
    if let Ok(entries) = IntGauge::new("microseg_conntrack_entries", "Connections tracked now.") {
        entries.set(status.conntrack_entries as i64);
        let _ = registry.register(Box::new(entries));
    }
    registry.gather()
}

/// Flow records and alert delivery.
fn visibility_families(visibility: &Visibility) -> Vec<prometheus::proto::MetricFamily> {
    let registry = Registry::new();
    counter_family(
        &registry,
        "microseg_flow_records_total",
        "Flow records made from dataplane events.",
        &[],
        [(vec![], visibility.flows().stats().recorded)],
    );
    if let Some(alerts) = visibility.alerts() {
        let stats = alerts.stats();
        let names: Vec<&str> = stats.sinks.iter().map(|s| s.name.as_str()).collect();
        for (family, help, value) in [
            (
                "microseg_alerts_sent_total",
                "Alerts delivered, by sink.",
                (|s: &crate::alerts::SinkStats| s.sent) as fn(&crate::alerts::SinkStats) -> u64,
            ),
            (
                "microseg_alerts_failed_total",
                "Alerts a sink failed to deliver after its retries.",
                |s| s.failed,
            ),
            (
                "microseg_alerts_dropped_total",
                "Alerts dropped because a sink's queue was full.",
                |s| s.dropped,
            ),
            (
                "microseg_alerts_retries_total",
                "Delivery retries, by sink.",
                |s| s.retries,
            ),
        ] {
            counter_family(
                &registry,
                family,
                help,
                &["sink"],
                names
                    .iter()
                    .zip(&stats.sinks)
                    .map(|(name, sink)| (vec![*name], value(sink))),
            );
        }
        counter_family(
            &registry,
            "microseg_alerts_suppressed_total",
            "Alerts held back by the rate limit.",
            &[],
            [(vec![], stats.suppressed)],
        );
    }
    registry.gather()
}
