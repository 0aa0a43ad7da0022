//! What the table keeps per connection, its states and their timeouts.

/// Connection state. TCP follows Linux nf_conntrack's states; UDP, ICMP and
/// other protocols have NEW (unreplied) and ESTABLISHED (replied)
/// pseudo-states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum ConnState {
    TcpSynSent,
    TcpSynRecv,
    TcpEstablished,
    TcpFinWait,
    TcpCloseWait,
    TcpLastAck,
    TcpTimeWait,
    TcpClose,
    /// UDP, ICMP or other: seen one way only.
    #[default]
    New,
    /// UDP, ICMP or other: the other end answered (Linux's ESTABLISHED
    /// for these protocols).
    Established,
}

impl ConnState {
    /// Not yet answered: the entries early drop may reclaim under pressure.
    pub fn is_embryonic(self) -> bool {
        matches!(
            self,
            ConnState::TcpSynSent | ConnState::TcpSynRecv | ConnState::New
        )
    }

    /// Stable name for listings and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ConnState::TcpSynSent => "SYN_SENT",
            ConnState::TcpSynRecv => "SYN_RECV",
            ConnState::TcpEstablished => "ESTABLISHED",
            ConnState::TcpFinWait => "FIN_WAIT",
            ConnState::TcpCloseWait => "CLOSE_WAIT",
            ConnState::TcpLastAck => "LAST_ACK",
            ConnState::TcpTimeWait => "TIME_WAIT",
            ConnState::TcpClose => "CLOSE",
            ConnState::New => "NEW",
            ConnState::Established => "REPLIED",
        }
    }
}

/// Per-state timeouts in nanoseconds. Defaults are Linux nf_conntrack's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: u64,
    pub tcp_syn_recv: u64,
    pub tcp_established: u64,
    pub tcp_fin_wait: u64,
    pub tcp_close_wait: u64,
    pub tcp_last_ack: u64,
    pub tcp_time_wait: u64,
    pub tcp_close: u64,
    pub udp_unreplied: u64,
    pub udp_replied: u64,
    pub icmp: u64,
    pub other_unreplied: u64,
    pub other_replied: u64,
}

const SECOND: u64 = 1_000_000_000;

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp_syn_sent: 120 * SECOND,
            tcp_syn_recv: 60 * SECOND,
            tcp_established: 432_000 * SECOND,
            tcp_fin_wait: 120 * SECOND,
            tcp_close_wait: 60 * SECOND,
            tcp_last_ack: 30 * SECOND,
            tcp_time_wait: 120 * SECOND,
            tcp_close: 10 * SECOND,
            udp_unreplied: 30 * SECOND,
            udp_replied: 120 * SECOND,
            icmp: 30 * SECOND,
            other_unreplied: 600 * SECOND,
            other_replied: 600 * SECOND,
        }
    }
}

/// What a timeout applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProtoClass {
    Tcp,
    Udp,
    Icmp,
    Other,
}

impl Timeouts {
    pub(crate) fn for_state(&self, class: ProtoClass, state: ConnState) -> u64 {
        match (class, state) {
            (_, ConnState::TcpSynSent) => self.tcp_syn_sent,
            (_, ConnState::TcpSynRecv) => self.tcp_syn_recv,
            (_, ConnState::TcpEstablished) => self.tcp_established,
            (_, ConnState::TcpFinWait) => self.tcp_fin_wait,
            (_, ConnState::TcpCloseWait) => self.tcp_close_wait,
            (_, ConnState::TcpLastAck) => self.tcp_last_ack,
            (_, ConnState::TcpTimeWait) => self.tcp_time_wait,
            (_, ConnState::TcpClose) => self.tcp_close,
            (ProtoClass::Udp, ConnState::New) => self.udp_unreplied,
            (ProtoClass::Udp, ConnState::Established) => self.udp_replied,
            (ProtoClass::Icmp, _) => self.icmp,
            (_, ConnState::New) => self.other_unreplied,
            (_, ConnState::Established) => self.other_replied,
        }
    }
}

/// TCP tracking of one direction, for the light sequence-window check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpDirection {
    /// Highest sequence number sent plus one (SYN and FIN count one).
    pub max_end: u32,
    /// Largest window this side advertised, scaled.
    pub max_window: u32,
    /// Window scale this side announced in its SYN (0 if none).
    pub scale: u8,
    /// This side has sent at least one segment.
    pub seen: bool,
}

/// One tracked connection. Directions are indexed by endpoint (`ConnKey`
/// order); `originator` says which endpoint opened it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEntry {
    pub state: ConnState,
    pub originator: u8,
    /// TCP: which endpoint sent the first FIN.
    pub closer: u8,
    /// TCP flags seen from each endpoint.
    pub flags_seen: [u8; 2],
    /// Policy generation and rule that admitted the connection (re-checked
    /// when the policy changes; shown by explain).
    pub generation: u32,
    pub rule_id: u32,
    pub packets: [u32; 2],
    pub bytes: [u64; 2],
    /// Nanoseconds on the caller's monotonic clock.
    pub first_seen: u64,
    pub last_seen: u64,
    pub tcp: [TcpDirection; 2],
    /// Workload identities of the endpoints when known (0: unknown).
    pub workloads: [u32; 2],
}

impl ConnEntry {
    /// Has the connection been answered?
    pub fn replied(&self) -> bool {
        self.packets[usize::from(1 - (self.originator & 1))] > 0
    }
}
