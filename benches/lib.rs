//! Shared helpers for microseg's benchmarks: locating and loading the
//! ClassBench rule sets, traces generated from them, and a median timer.

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
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_nanos() as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
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
    use microseg_dataplane::packet::{proto, AddrFamily, FlowKey};

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
}
