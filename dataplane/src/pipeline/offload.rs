//! What the pipeline tells the XDP fast path (`crate::offload` carries it
//! out): install a direction of an admitted connection, or forget a
//! connection that is closing. Requests go on a bounded queue; a full
//! queue drops the request and counts it, and the worker never waits. A
//! dropped install costs nothing but speed: the flow stays in userspace
//! and is offered again with its next frame.
//!
//! Which frames are offered (`offer_for`): known-unicast frames of a
//! connection admitted by the generation in force, untagged, whole (not a
//! fragment), UDP, or TCP in ESTABLISHED without SYN, FIN or RST. The XDP
//! program sends every TCP control segment to userspace, so conntrack
//! still sees opens and closes; it does not check TCP windows on the
//! frames it forwards, as Linux's flowtable offload does not.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::conntrack::ConnState;
use crate::packet::{proto, tcp_flags, FlowKey, FragmentKind, ParsedFrame};

/// A direction of a connection the fast path may forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffloadOffer {
    /// The frames' key as they arrive on `ingress`.
    pub flow: FlowKey,
    pub ingress: u16,
    pub egress: u16,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The generation that admitted the connection (the one in force).
    pub generation: u32,
}

/// A request to the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadRequest {
    Install(OffloadOffer),
    /// The connection of `flow` (either direction) is closing or was cut:
    /// its frames must reach userspace again.
    Revoke {
        flow: FlowKey,
    },
}

/// The bounded queue from the workers to the fast path.
#[derive(Debug)]
pub struct OffloadQueue {
    requests: ArrayQueue<OffloadRequest>,
    dropped: AtomicU64,
}

impl OffloadQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            requests: ArrayQueue::new(capacity.max(1)),
            dropped: AtomicU64::new(0),
        }
    }

    pub(crate) fn push(&self, request: OffloadRequest) {
        if self.requests.push(request).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn pop(&self) -> Option<OffloadRequest> {
        self.requests.pop()
    }

    /// Requests lost to a full queue.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The install offer for a frame forwarded out of `egress` on a
/// connection in `state` admitted by `generation`, if the fast path may
/// take its direction.
pub(crate) fn offer_for(
    parsed: &ParsedFrame,
    key: &FlowKey,
    state: ConnState,
    generation: u32,
    egress: u16,
) -> Option<OffloadOffer> {
    let untagged = parsed.vlan.outer == 0 && parsed.vlan.inner == 0;
    let offloadable = match key.proto {
        proto::UDP => true,
        proto::TCP => {
            state == ConnState::TcpEstablished
                && key.tcp_flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) == 0
        }
        _ => false,
    };
    (untagged && offloadable && key.fragment.kind == FragmentKind::Whole).then_some(OffloadOffer {
        flow: *key,
        ingress: parsed.ingress_port,
        egress,
        src_mac: parsed.src_mac,
        dst_mac: parsed.dst_mac,
        generation,
    })
}

/// Does this frame end the fast path of its connection? A FIN or RST
/// (the connection closes), seen by userspace because the XDP program
/// never forwards one.
pub(crate) fn ends_offload(key: &FlowKey) -> bool {
    key.proto == proto::TCP && key.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) != 0
}
