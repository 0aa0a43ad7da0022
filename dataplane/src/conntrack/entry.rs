//! What the table keeps per connection, its states and their timeouts.

use crate::packet::{tcp_flags, TcpSegment};

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
    /// Nanoseconds on the caller's monotonic clock. The table keeps
    /// `first_seen` to the millisecond (to the second once a connection is
    /// older than 24 days): see `ENTRY_WORDS`.
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

/// Words an entry takes in the table's slots: 72 bytes for the 88 of
/// `ConnEntry`, so that a slot with its key is 112 bytes. The savings:
/// state and window scales in 4 bits each, the endpoint bits in one
/// nibble, and `first_seen` as a 32-bit time code (`FirstSeen`).
pub(crate) const ENTRY_WORDS: usize = 9;

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_S: u64 = 1_000_000_000;
/// First-seen codes: the top bit says seconds (set) or milliseconds.
const CODE_IN_SECONDS: u32 = 1 << 31;
const CODE_VALUE: u64 = (1 << 31) - 1;

/// `first_seen` in 32 bits, relative to nothing: the low 31 bits of the
/// time in milliseconds while the connection is younger than 2^31 ms
/// (24.8 days), then the low 31 bits of the time in seconds (good for 68
/// years). Decoding takes the age modulo 2^31 units back from `last_seen`,
/// so the code never drifts as `last_seen` moves.
fn encode_first_seen(first_seen: u64, last_seen: u64) -> u32 {
    let first = first_seen.min(last_seen);
    if (last_seen - first) / NS_PER_MS <= CODE_VALUE {
        ((first / NS_PER_MS) & CODE_VALUE) as u32
    } else {
        CODE_IN_SECONDS | ((first / NS_PER_S) & CODE_VALUE) as u32
    }
}

fn decode_first_seen(code: u32, last_seen: u64) -> u64 {
    // Two branches with constant divisors: multiplications, not a divide.
    let back = |last: u64, value: u64| {
        let age = (last & CODE_VALUE).wrapping_sub(value) & CODE_VALUE;
        last - age.min(last)
    };
    if code & CODE_IN_SECONDS == 0 {
        back(last_seen / NS_PER_MS, u64::from(code)) * NS_PER_MS
    } else {
        back(last_seen / NS_PER_S, u64::from(code & !CODE_IN_SECONDS)) * NS_PER_S
    }
}

pub(crate) fn state_of_word(code: u64) -> ConnState {
    match code & 0xf {
        0 => ConnState::TcpSynSent,
        1 => ConnState::TcpSynRecv,
        2 => ConnState::TcpEstablished,
        3 => ConnState::TcpFinWait,
        4 => ConnState::TcpCloseWait,
        5 => ConnState::TcpLastAck,
        6 => ConnState::TcpTimeWait,
        7 => ConnState::TcpClose,
        9 => ConnState::Established,
        _ => ConnState::New,
    }
}

fn pair(low: u32, high: u32) -> u64 {
    u64::from(low) | u64::from(high) << 32
}

fn unpair(word: u64) -> [u32; 2] {
    [word as u32, (word >> 32) as u32]
}

/// Half `side` (0: low, 1: high) of a paired word. With `with_half`, a hit
/// changes one half in registers: going through `unpair`'s array put a
/// 4-byte store and an 8-byte load of the same stack slot in a row, and the
/// failed store-to-load forward stalled every UDP hit (the hottest
/// instruction of the hit path in a profile).
fn half(word: u64, side: usize) -> u32 {
    (word >> (32 * (side & 1))) as u32
}

/// `word` with half `side` replaced by `value`.
fn with_half(word: u64, side: usize, value: u32) -> u64 {
    let shift = 32 * (side & 1);
    (word & !(0xffff_ffff << shift)) | u64::from(value) << shift
}

impl ConnEntry {
    /// The entry as the table stores it. Window scales above 15 (TCP
    /// allows 14) do not fit and are clamped.
    #[inline]
    pub(crate) fn encode(&self) -> [u64; ENTRY_WORDS] {
        let [a, b] = self.tcp;
        let endpoint_bits = u64::from(self.originator & 1)
            | u64::from(self.closer & 1) << 1
            | u64::from(a.seen) << 2
            | u64::from(b.seen) << 3;
        [
            self.state as u64
                | u64::from(a.scale.min(15)) << 4
                | endpoint_bits << 8
                | u64::from(b.scale.min(15)) << 12
                | u64::from(self.flags_seen[0]) << 16
                | u64::from(self.flags_seen[1]) << 24
                | u64::from(self.generation) << 32,
            pair(
                self.rule_id,
                encode_first_seen(self.first_seen, self.last_seen),
            ),
            self.last_seen,
            pair(self.packets[0], self.packets[1]),
            self.bytes[0],
            self.bytes[1],
            pair(a.max_end, b.max_end),
            pair(a.max_window, b.max_window),
            pair(self.workloads[0], self.workloads[1]),
        ]
    }

    /// The entry `encode` stored.
    #[inline]
    pub(crate) fn decode(words: &[u64; ENTRY_WORDS]) -> Self {
        let head = words[0];
        let bit = |n: u32| (head >> (8 + n)) & 1 == 1;
        let [rule_id, first_code] = unpair(words[1]);
        let last_seen = words[2];
        let [end_a, end_b] = unpair(words[6]);
        let [window_a, window_b] = unpair(words[7]);
        ConnEntry {
            state: state_of_word(head),
            originator: u8::from(bit(0)),
            closer: u8::from(bit(1)),
            flags_seen: [(head >> 16) as u8, (head >> 24) as u8],
            generation: (head >> 32) as u32,
            rule_id,
            packets: unpair(words[3]),
            bytes: [words[4], words[5]],
            first_seen: decode_first_seen(first_code, last_seen),
            last_seen,
            tcp: [
                TcpDirection {
                    max_end: end_a,
                    max_window: window_a,
                    scale: ((head >> 4) & 0xf) as u8,
                    seen: bit(2),
                },
                TcpDirection {
                    max_end: end_b,
                    max_window: window_b,
                    scale: ((head >> 12) & 0xf) as u8,
                    seen: bit(3),
                },
            ],
            workloads: unpair(words[8]),
        }
    }
}

/// Entry words a hit of a protocol without a state machine reads and
/// writes: the state word, rule and first-seen code, last seen, the packet
/// pair and both byte counts. The slot table keeps them in one cache line
/// with an IPv4 key (`slots`).
pub(crate) const COUNTED_WORDS: usize = 6;

/// Where `ConnEntry::encode` puts the state (low 4 bits, with the flags
/// and the generation), the rule id (low half) and the last-seen time.
pub(crate) const STATE_WORD: usize = 0;
pub(crate) const RULE_WORD: usize = 1;
pub(crate) const LAST_SEEN_WORD: usize = 2;

/// The workloads word of an encoded entry.
pub(crate) const WORKLOADS_WORD: usize = 8;

/// A stored entry read and changed as its words, without decoding it
/// whole: the first `N` of them, all (`ENTRY_WORDS`, what the TCP hit
/// needs) or the `COUNTED_WORDS` of the hit path of protocols without a
/// state machine (UDP, ICMP, others), which only counts the packet, stamps
/// the time and marks the reply. It changes the words exactly as decoding,
/// applying the packet and encoding again would (tests hold the two paths
/// to each other), at about half the cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoredEntry<const N: usize = ENTRY_WORDS>(pub [u64; N]);

impl<const N: usize> StoredEntry<N> {
    /// The words, which must hold at least the counted ones.
    #[inline]
    pub fn new(words: [u64; N]) -> Self {
        const { assert!(N >= COUNTED_WORDS && N <= ENTRY_WORDS) };
        Self(words)
    }

    pub fn state(&self) -> ConnState {
        state_of_word(self.0[STATE_WORD])
    }

    pub fn originator(&self) -> u8 {
        ((self.0[0] >> 8) & 1) as u8
    }

    pub fn generation(&self) -> u32 {
        (self.0[0] >> 32) as u32
    }

    pub fn rule_id(&self) -> u32 {
        self.0[RULE_WORD] as u32
    }

    pub fn last_seen(&self) -> u64 {
        self.0[LAST_SEEN_WORD]
    }

    /// Counts a packet of `bytes` sent by endpoint `sender` at `now`. A
    /// packet from the end that did not open the connection marks it
    /// answered (ESTABLISHED). The sender's workload is `with_workload`'s.
    pub fn count_stateless(&mut self, sender: u8, bytes: u32, now: u64) {
        self.count(sender, bytes, now);
        if sender & 1 != self.originator() {
            self.0[0] = (self.0[0] & !0xf) | ConnState::Established as u64;
        }
    }

    /// Adds `packets` packets of `bytes` in all to endpoint `sender`'s
    /// side, without stamping the time: the packets of a batch that
    /// followed one just counted at the same `now` (`super::Followers`).
    pub fn count_more(&mut self, sender: u8, packets: u32, bytes: u64) {
        let side = usize::from(sender & 1);
        let words = &mut self.0;
        let sent = half(words[3], side).saturating_add(packets);
        words[3] = with_half(words[3], side, sent);
        words[4 + side] = words[4 + side].saturating_add(bytes);
    }

    /// What every accepted packet changes in the counted words: its side's
    /// packet and byte counts, and the time (and `first_seen`'s code with
    /// it).
    fn count(&mut self, sender: u8, bytes: u32, now: u64) {
        self.count_more(sender, 1, u64::from(bytes));
        let words = &mut self.0;
        let [rule_id, first_code] = unpair(words[1]);
        let first_seen = decode_first_seen(first_code, words[2]);
        words[1] = pair(rule_id, encode_first_seen(first_seen, now));
        words[2] = now;
    }
}

/// The workloads word `word` after a packet from endpoint `sender` whose
/// workload is `workload` (0: unknown, which changes nothing).
#[inline]
pub(crate) fn with_workload(word: u64, sender: u8, workload: u32) -> u64 {
    if workload == 0 {
        word
    } else {
        with_half(word, usize::from(sender & 1), workload)
    }
}

impl StoredEntry<ENTRY_WORDS> {
    /// The commonest TCP hit on the stored words: a plain ACK (with or
    /// without data, PSH, URG, ECE or CWR; no SYN, FIN or RST) on an
    /// ESTABLISHED connection whose two ends have both been seen, inside
    /// the window. Applies it exactly as decoding, `tcp_step`, `apply` and
    /// encoding would (a test holds the two paths to each other) and
    /// returns true; anything else returns false and changes nothing.
    pub fn established_ack(
        &mut self,
        sender: u8,
        segment: &TcpSegment,
        flags: u8,
        bytes: u32,
        workload: u32,
        now: u64,
    ) -> bool {
        use tcp_flags::{ACK, FIN, RST, SYN};
        let head = self.0[0];
        let both_seen = (head >> 10) & 0b11 == 0b11;
        if self.state() != ConnState::TcpEstablished
            || flags & (SYN | FIN | RST) != 0
            || flags & ACK == 0
            || !both_seen
        {
            return false;
        }
        let side = usize::from(sender & 1);
        let (ends, windows) = (self.0[6], self.0[7]);
        // The window check of `tcp::in_window`.
        let window = i64::from(half(windows, 1 - side).max(1));
        let sent = half(ends, side);
        let ahead = i64::from(segment.seq.wrapping_sub(sent) as i32);
        if ahead > window || ahead + i64::from(segment.payload_len) < -window {
            return false;
        }
        self.count(sender, bytes, now);
        self.0[WORKLOADS_WORD] = with_workload(self.0[WORKLOADS_WORD], sender, workload);
        // `tcp::track_segment` without SYN: the highest end sent, the
        // largest window offered (scaled once both ends offered scaling).
        let end = segment.seq.wrapping_add(u32::from(segment.payload_len));
        if end.wrapping_sub(sent) as i32 > 0 {
            self.0[6] = with_half(ends, side, end);
        }
        let scales = [(head >> 4) & 0xf, (head >> 12) & 0xf];
        let shift = if scales.iter().all(|&scale| scale > 0) {
            scales[side]
        } else {
            0
        };
        let offered = u32::from(segment.window) << shift;
        if offered > half(windows, side) {
            self.0[7] = with_half(windows, side, offered);
        }
        self.0[0] |= u64::from(flags) << (16 + 8 * side);
        true
    }
}
