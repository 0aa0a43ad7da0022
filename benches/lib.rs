//! Shared helpers for microseg's benchmarks: locating and loading the
//! ClassBench rule sets, traces generated from them, and median timers.

use std::path::PathBuf;
use std::time::Instant;

use microseg_dataplane::classifier::{classbench, Rule};
use microseg_dataplane::packet::FlowKey;

/// The nine ClassBench sets, in report order.
pub use microseg_dataplane::classifier::classbench::STANDARD_SETS as CLASSBENCH_SETS;

/// Where the ClassBench files are: `$MICROSEG_CLASSBENCH`, else
/// `../shared/classbench` beside the repository.
pub fn classbench_dir() -> PathBuf {
    std::env::var_os("MICROSEG_CLASSBENCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/classbench")
        })
}

/// Loads one ClassBench set's rules; panics with the path and the parse
/// error, since a benchmark without its input has nothing to say.
pub fn load_rules(set: &str) -> Vec<Rule<()>> {
    let path = classbench_dir().join(set);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read ClassBench set {}: {e}", path.display()));
    classbench::parse_filters(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A trace of `count` keys generated from `rules` with the benchmarks'
/// fixed seed.
pub fn trace(rules: &[Rule<()>], count: usize) -> Vec<FlowKey> {
    classbench::generate_trace(rules, count, 0xbe_4c4)
}

/// Median of `runs` timings of `f`, in nanoseconds.
pub fn median_ns(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs.max(1)).map(|_| time_ns(&mut f)).collect();
    median(&mut times)
}

fn time_ns(f: &mut impl FnMut()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_nanos() as f64
}

/// The median of `values` (sorts them); panics if there are none.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Seconds `sample_in_turn` and `interleaved_medians_ns` sample for by
/// default: longer than the bursts of other tenants' load seen on this
/// shared machine (1-2 s at about twice the time per operation;
/// docs/performance-notes.md, "Noise"), so that a burst costs each
/// measurement a few samples rather than its median.
pub const SAMPLING_SECONDS: f64 = 6.0;

/// How long `sample_in_turn` and `interleaved_medians_ns` sample:
/// `$BENCH_SAMPLING_SECONDS` (`make bench QUICK=1` sets 1), else
/// `SAMPLING_SECONDS`. Panics on a value that is not a non-negative number
/// of seconds.
pub fn sampling_seconds() -> f64 {
    match std::env::var("BENCH_SAMPLING_SECONDS") {
        Ok(text) => match text.parse::<f64>() {
            Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => seconds,
            _ => panic!("BENCH_SAMPLING_SECONDS={text}: expected seconds, such as 6 or 0.5"),
        },
        Err(_) => SAMPLING_SECONDS,
    }
}

/// Runs each of `measures` in turn, round after round, for at least
/// `min_rounds` rounds (at least one) and at least `seconds`. Each
/// measure's runs are so spread over the whole time: a burst of load from
/// outside slows a few runs of every measure, where back-to-back runs of
/// one measure could all fall inside it. For measures that time
/// themselves (only part of what they run); else `interleaved_medians_ns`.
pub fn sample_in_turn(min_rounds: usize, seconds: f64, measures: &mut [&mut dyn FnMut()]) {
    in_rounds(min_rounds, seconds, || {
        for measure in measures.iter_mut() {
            measure();
        }
    });
}

/// Medians, in nanoseconds, of timings of each of `measures`, run in
/// turn as `sample_in_turn` runs them.
pub fn interleaved_medians_ns(
    min_rounds: usize,
    seconds: f64,
    measures: &mut [&mut dyn FnMut()],
) -> Vec<f64> {
    let mut samples = vec![Vec::new(); measures.len()];
    in_rounds(min_rounds, seconds, || {
        for (measure, samples) in measures.iter_mut().zip(&mut samples) {
            samples.push(time_ns(measure));
        }
    });
    samples.iter_mut().map(|samples| median(samples)).collect()
}

fn in_rounds(min_rounds: usize, seconds: f64, mut round: impl FnMut()) {
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < min_rounds.max(1) || start.elapsed().as_secs_f64() < seconds {
        round();
        rounds += 1;
    }
}

/// The `--csv PATH` argument of a report binary that takes nothing else
/// (`program` names it in the usage message of a bad argument).
pub fn csv_path_arg(program: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    let mut csv_path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--csv" => csv_path = Some(args.next().expect("--csv needs a path")),
            other => panic!("unknown argument {other} (usage: {program} [--csv PATH])"),
        }
    }
    csv_path
}

/// Conntrack benchmark traffic: `count` distinct UDP connections, each
/// one packet from a client and one reply, spread over many sources.
pub mod conntrack_traffic {
    use microseg_dataplane::conntrack::TrackPacket;
    use microseg_dataplane::packet::{proto, AddrFamily, FlowKey, TcpSegment};

    /// The client's packet of connection `i`.
    pub fn request(i: u32) -> TrackPacket {
        TrackPacket {
            flow: FlowKey {
                family: AddrFamily::V4,
                src: u128::from(0x0a00_0000 | (i >> 8)),
                dst: 0x0a80_0001,
                proto: proto::UDP,
                src_port: 1024 + (i & 0xff) as u16,
                dst_port: 53,
                ..FlowKey::default()
            },
            bytes: 80,
            ..TrackPacket::default()
        }
    }

    /// The server's reply on connection `i`.
    pub fn reply(i: u32) -> TrackPacket {
        let mut packet = request(i);
        std::mem::swap(&mut packet.flow.src, &mut packet.flow.dst);
        std::mem::swap(&mut packet.flow.src_port, &mut packet.flow.dst_port);
        packet
    }

    /// Initial sequence numbers of the TCP connections' client and server.
    const CLIENT_ISN: u32 = 1_000;
    const SERVER_ISN: u32 = 90_000;

    /// A TCP segment of connection `i` (the addresses and ports of
    /// `request`, port 443), from the client or the server.
    fn tcp_segment(i: u32, from_client: bool, flags: u8, seq: u32, ack: u32) -> TrackPacket {
        let mut packet = if from_client { request(i) } else { reply(i) };
        packet.flow.proto = proto::TCP;
        packet.flow.tcp_flags = flags;
        if from_client {
            packet.flow.dst_port = 443;
        } else {
            packet.flow.src_port = 443;
        }
        packet.tcp = Some(TcpSegment {
            seq,
            ack,
            window: 65_535,
            window_scale: None,
            payload_len: 0,
        });
        packet.bytes = 60;
        packet
    }

    /// The three segments that establish TCP connection `i`.
    pub fn tcp_handshake(i: u32) -> [TrackPacket; 3] {
        use microseg_dataplane::packet::tcp_flags::{ACK, SYN};
        [
            tcp_segment(i, true, SYN, CLIENT_ISN, 0),
            tcp_segment(i, false, SYN | ACK, SERVER_ISN, CLIENT_ISN + 1),
            tcp_segment(i, true, ACK, CLIENT_ISN + 1, SERVER_ISN + 1),
        ]
    }

    /// An acknowledgement from the client on established connection `i`,
    /// valid any number of times.
    pub fn tcp_ack(i: u32) -> TrackPacket {
        tcp_handshake(i)[2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every measure is timed once per round, for at least `min_rounds`
    /// rounds, and its median is of its own samples.
    #[test]
    fn interleaved_measures_are_timed_in_turn() {
        let order = std::cell::RefCell::new(Vec::new());
        let medians = interleaved_medians_ns(
            3,
            0.0,
            &mut [
                &mut || {
                    order.borrow_mut().push('s');
                    std::thread::sleep(Duration::from_millis(2));
                },
                &mut || order.borrow_mut().push('q'),
            ],
        );
        assert_eq!(order.into_inner(), ['s', 'q', 's', 'q', 's', 'q']);
        assert!(
            medians[0] >= 2e6,
            "the sleeping measure's median {}",
            medians[0]
        );
    }

    /// Sampling goes on for the time asked even past `min_rounds`.
    #[test]
    fn interleaved_sampling_lasts_the_time_asked() {
        let start = Instant::now();
        let mut rounds = 0;
        interleaved_medians_ns(1, 0.05, &mut [&mut || rounds += 1]);
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(rounds > 1);
    }
}
