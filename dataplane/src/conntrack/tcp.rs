//! The TCP state machine and the light sequence-window check, as pure
//! functions of (state, who sent, flags, sequence fields).
//!
//! States and transitions follow Linux nf_conntrack: a connection opens only
//! with a SYN; SYN-ACK (or the peer's SYN: simultaneous open) moves it to
//! SYN_RECV; the originator's ACK to ESTABLISHED; the first FIN to FIN_WAIT,
//! the peer's ACK of it to CLOSE_WAIT, the peer's FIN to LAST_ACK, the last
//! ACK to TIME_WAIT; RST to CLOSE. A SYN from the originator on a TIME_WAIT
//! or CLOSE connection reopens it (port reuse).
//!
//! The window check is RFC 5961-like: a segment's sequence number must lie
//! within the receiver's largest advertised window of what its sender has
//! sent so far. That catches blind RST and data injection at the cost of
//! two compares per packet.

use super::entry::{ConnEntry, ConnState, TcpDirection};
use super::InvalidReason;
use crate::packet::{tcp_flags, TcpSegment};

/// The flag combination of a segment, reduced to what drives the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEvent {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
}

/// Reduces flags to an event; impossible combinations are invalid.
pub fn event_of(flags: u8) -> Result<TcpEvent, InvalidReason> {
    use tcp_flags::{ACK, FIN, RST, SYN};
    match (
        flags & SYN != 0,
        flags & FIN != 0,
        flags & RST != 0,
        flags & ACK != 0,
    ) {
        (true, true, _, _) | (true, _, true, _) => Err(InvalidReason::BadTcpFlags),
        (_, _, true, _) => Ok(TcpEvent::Rst),
        (true, _, _, true) => Ok(TcpEvent::SynAck),
        (true, _, _, false) => Ok(TcpEvent::Syn),
        // FIN without ACK is not sent by real stacks (it is a scan).
        (_, true, _, true) => Ok(TcpEvent::Fin),
        (_, _, _, true) => Ok(TcpEvent::Ack),
        _ => Err(InvalidReason::BadTcpFlags),
    }
}

/// What a segment does to an existing connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Move to this state (possibly the same).
    To(ConnState),
    /// A new SYN on a finished connection: the old entry ends, the packet
    /// opens a new connection.
    Reopen,
}

/// The next state for `event` sent by `sender` (`from_originator` if that
/// is the endpoint that opened the connection).
pub fn transition(
    entry: &ConnEntry,
    sender: u8,
    event: TcpEvent,
) -> Result<Transition, InvalidReason> {
    use ConnState::*;
    use TcpEvent::*;
    let from_originator = sender == entry.originator;
    let from_closer = sender == entry.closer;
    let to = |s| Ok(Transition::To(s));
    match (entry.state, event) {
        (_, Rst) => to(TcpClose),
        (TcpTimeWait | TcpClose, Syn) if from_originator => Ok(Transition::Reopen),
        (TcpSynSent, Syn) if from_originator => to(TcpSynSent), // retransmitted SYN
        (TcpSynSent, SynAck | Syn) if !from_originator => to(TcpSynRecv), // Syn: simultaneous open
        (TcpSynRecv, Syn | SynAck) => to(TcpSynRecv), // retransmissions, simultaneous open
        (TcpSynRecv, Ack) => to(TcpEstablished),
        (TcpSynRecv | TcpEstablished, Fin) => to(TcpFinWait),
        (TcpEstablished, Ack) => to(TcpEstablished),
        // A late retransmitted SYN-ACK after the handshake is harmless.
        (TcpEstablished, SynAck) if !from_originator => to(TcpEstablished),
        (TcpEstablished, Syn) => Err(InvalidReason::SynOnEstablished),
        (TcpFinWait, Ack) if !from_closer => to(TcpCloseWait),
        (TcpFinWait | TcpCloseWait, Fin) if !from_closer => to(TcpLastAck),
        (TcpFinWait, Ack | Fin) => to(TcpFinWait),
        (TcpCloseWait, Ack | Fin) => to(TcpCloseWait),
        (TcpLastAck, Ack) if from_closer => to(TcpTimeWait),
        (TcpLastAck, Ack | Fin) => to(TcpLastAck),
        (TcpTimeWait, Ack | Fin) => to(TcpTimeWait),
        _ => Err(InvalidReason::TcpOutOfState),
    }
}

/// Sequence space a segment occupies: payload, plus one for SYN and FIN.
fn segment_len(segment: &TcpSegment, flags: u8) -> u32 {
    u32::from(segment.payload_len)
        + u32::from(flags & tcp_flags::SYN != 0)
        + u32::from(flags & tcp_flags::FIN != 0)
}

/// Is the segment inside the window? Only checked once both sides have
/// spoken (before that there is no window to check against); SYNs are not
/// checked (a retransmitted SYN legitimately repeats its sequence number).
pub fn in_window(entry: &ConnEntry, sender: u8, segment: &TcpSegment, flags: u8) -> bool {
    let (s, r) = (
        &entry.tcp[usize::from(sender & 1)],
        &entry.tcp[usize::from(!sender & 1)],
    );
    if !s.seen || !r.seen || flags & tcp_flags::SYN != 0 {
        return true;
    }
    let window = r.max_window.max(1) as i64;
    // Signed distance in sequence space, wrapping at 2^32.
    let ahead = segment.seq.wrapping_sub(s.max_end) as i32 as i64;
    let end_ahead = ahead + i64::from(segment_len(segment, flags));
    // Not beyond what the receiver can accept, not entirely before what it
    // may still need (retransmissions reach back one window).
    ahead <= window && end_ahead >= -window
}

/// Records a segment from `sender` in the window tracking.
pub fn track_segment(entry: &mut ConnEntry, sender: u8, segment: &TcpSegment, flags: u8) {
    let both_scaled = entry.tcp.iter().all(|d| d.seen && d.scale > 0);
    let dir: &mut TcpDirection = &mut entry.tcp[usize::from(sender & 1)];
    if flags & tcp_flags::SYN != 0 {
        dir.scale = segment.window_scale.unwrap_or(0).min(14);
    }
    let end = segment.seq.wrapping_add(segment_len(segment, flags));
    if !dir.seen || (end.wrapping_sub(dir.max_end) as i32) > 0 {
        dir.max_end = end;
    }
    // Windows in SYNs are never scaled; later ones are when both sides
    // offered scaling.
    let shift = if flags & tcp_flags::SYN == 0 && both_scaled {
        dir.scale
    } else {
        0
    };
    dir.max_window = dir.max_window.max(u32::from(segment.window) << shift);
    dir.seen = true;
}
