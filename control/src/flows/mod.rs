//! Flow records: what talked to what, and what the policy said about it.
//!
//! The dataplane reports connection starts and ends (conntrack events) and
//! policy verdicts on new flows (denied, would-deny, cut) on bounded
//! lock-free queues. The collector (`collector`) drains them off the packet
//! path, names the endpoints (workloads and labels from the policy
//! document) and the deciding rule, and keeps the records in a bounded
//! store (`store`) that the API queries and streams. Every event lost on
//! the way (a full dataplane queue, a store that evicted, a live stream
//! that fell behind) is counted.

mod collector;
mod record;
mod resolve;
mod store;

pub use collector::{Clock, Collector, CollectorConfig, FlowObserver, Names, RulesInForce};
pub use record::{proto_name, Endpoint, FlowRecord, RecordKind, Verdict};
pub use resolve::{Resolver, WorkloadInfo};
pub use store::{
    parse_since, EndpointFilter, FlowFilter, FlowStore, FlowStoreStats, QueryError, MAX_LIMIT,
};

#[cfg(test)]
mod tests;
