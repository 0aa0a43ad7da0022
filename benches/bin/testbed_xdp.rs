//! The testbed benchmark's traffic ends (benches/testbed/run.sh):
//!
//! - `gen`: a generator, in one of two ways (`--method`; `auto`, the
//!   default, takes live frames where the kernel allows them, else the
//!   loop, and says which):
//!   - *live frames*: it runs the XDP program `tb_gen` with `BPF_PROG_RUN`
//!     and `BPF_F_TEST_XDP_LIVE_FRAMES`: the kernel runs the program on
//!     frames made from a template and transmits those it returns `XDP_TX`
//!     for out of the interface named as ingress (a veth, so they arrive
//!     at its peer), at several Mpps from one core.
//!   - *a loop*, for kernels that refuse live frames (`EPERM`, seen on
//!     a locked-down kernel): a veth pair of its own in the generator's
//!     namespace, `tb_bounce` on one end and `tb_loop` on the other,
//!     seeded with `--seeds` UDP datagrams from an ordinary socket. The
//!     seeded frames circle between the two ends in XDP; on each round
//!     `tb_loop` broadcasts the frame (a devmap) back into the loop and
//!     out of IFNAME. The pair is removed when the generator ends.
//!
//!   Either way the program rewrites every frame's headers from its
//!   configuration map and gives it the UDP ports of the next of
//!   `--flows` flows (round robin).
//! - `sink`: attaches `tb_sink` to an interface (counts per CPU; drops
//!   IPv4/UDP frames, passes the rest to the stack so that ARP and ping
//!   are answered) and prints the counts every `--interval-ms` as
//!   `SECONDS UDP_FRAMES OTHER_FRAMES`, SECONDS counted from its start.
//!   The program is attached through a bpf_link, so it goes with the
//!   process however that ends.
//! - `load`: a steady background load for the latency measurement: UDP
//!   datagrams from an ordinary socket at a fixed rate (the XDP generator
//!   cannot be paced: each `BPF_PROG_RUN` call costs ~25 ms).

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder, ProgramInput};

const GEN_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gen.bpf.o"));
const SINK_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sink.bpf.o"));

/// `BPF_F_TEST_XDP_LIVE_FRAMES` (linux/bpf.h).
const LIVE_FRAMES: u32 = 1 << 1;
/// Ethernet + IPv4 + UDP header bytes (`TB_HDR_LEN`).
const HDR_LEN: usize = 42;
/// `sizeof(struct tb_gen_config)` (testbed.h).
const CONFIG_LEN: usize = 52;

#[derive(Parser, Debug)]
#[command(about = "XDP traffic generator and sink for the testbed benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send UDP frames out of IFNAME (they arrive at its veth peer).
    Gen(GenArgs),
    /// Count every frame arriving at IFNAME; drop IPv4/UDP, pass the rest.
    Sink(SinkArgs),
    /// Send UDP datagrams to --dst at a steady --pps.
    Load(LoadArgs),
}

#[derive(clap::Args, Debug)]
struct GenArgs {
    #[arg(long)]
    ifname: String,
    #[arg(long)]
    src_mac: String,
    #[arg(long)]
    dst_mac: String,
    #[arg(long)]
    src_ip: Ipv4Addr,
    #[arg(long)]
    dst_ip: Ipv4Addr,
    /// Distinct 5-tuples, sent round robin.
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Flow i has source port sport_base + i % sport_span and destination
    /// port dport_base + i / sport_span.
    #[arg(long, default_value_t = 10000)]
    sport_base: u16,
    #[arg(long, default_value_t = 50000)]
    sport_span: u16,
    #[arg(long, default_value_t = 5000)]
    dport_base: u16,
    /// Frame length without FCS (60 = a 64-byte Ethernet frame).
    #[arg(long, default_value_t = 60)]
    len: usize,
    /// Stop after this long.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Frames per BPF_PROG_RUN call (each call has a fixed cost of tens
    /// of milliseconds, so make it large).
    #[arg(long, default_value_t = 1 << 20)]
    repeat: u32,
    /// How frames are made: live frames, the XDP loop, or live frames
    /// where the kernel allows them and the loop otherwise.
    #[arg(long, value_enum, default_value_t = GenMethod::Auto)]
    method: GenMethod,
    /// Loop only: frames seeded into the loop (at most a veth ring's 256
    /// stay in it).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    seeds: u32,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum GenMethod {
    Auto,
    Live,
    Loop,
}

#[derive(clap::Args, Debug)]
struct SinkArgs {
    #[arg(long)]
    ifname: String,
    #[arg(long, default_value_t = 200)]
    interval_ms: u64,
    /// Stop after this long (0: run until killed).
    #[arg(long, default_value_t = 0.0)]
    seconds: f64,
}

#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// Destination address and port.
    #[arg(long)]
    dst: std::net::SocketAddrV4,
    /// Datagrams per second.
    #[arg(long)]
    pps: u32,
    /// Stop after this long.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Payload bytes (18 = a 60-byte frame).
    #[arg(long, default_value_t = 18)]
    payload: usize,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Gen(args) => generate(&args),
        Command::Sink(args) => sink(&args),
        Command::Load(args) => load_udp(&args),
    }
}

/// Paced sender: every millisecond it sends what the rate owes by then, so
/// the load is steady at millisecond scale (bursts of pps/1000 datagrams).
fn load_udp(args: &LoadArgs) -> Result<()> {
    if args.pps == 0 || args.seconds.is_nan() || args.seconds <= 0.0 || args.payload > 1472 {
        bail!("--pps and --seconds must be positive and --payload at most 1472");
    }
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("UDP socket")?;
    socket
        .connect(args.dst)
        .with_context(|| format!("connecting to {}", args.dst))?;
    let payload = vec![0u8; args.payload];
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let (mut sent, mut failed) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let owed = (now - start).as_secs_f64() * f64::from(args.pps);
        while ((sent + failed) as f64) < owed {
            // A full socket buffer or a missing neighbour entry
            // (ENOBUFS, EAGAIN): counted, not retried, the pace goes on.
            match socket.send(&payload) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "load: {sent} datagrams in {elapsed:.3} s ({:.0} pps), {failed} send errors",
        sent as f64 / elapsed
    );
    Ok(())
}

fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|part| u8::from_str_radix(part, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("`{text}` is not a MAC address"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("`{text}` is not a MAC address"))
}

/// Ethernet, IPv4 (checksum filled in) and UDP headers of a `len`-byte
/// frame; the UDP checksum is 0 (none, allowed for IPv4).
fn headers(args: &GenArgs) -> Result<[u8; HDR_LEN]> {
    if !(HDR_LEN..=1514).contains(&args.len) {
        bail!("--len must be {HDR_LEN}..1514");
    }
    let mut h = [0u8; HDR_LEN];
    h[0..6].copy_from_slice(&parse_mac(&args.dst_mac)?);
    h[6..12].copy_from_slice(&parse_mac(&args.src_mac)?);
    h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut h[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((args.len - 14) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&args.src_ip.octets());
    ip[16..20].copy_from_slice(&args.dst_ip.octets());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let folded = (folded & 0xffff) + (folded >> 16);
    ip[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
    let udp = &mut h[34..42];
    udp[0..2].copy_from_slice(&args.sport_base.to_be_bytes());
    udp[2..4].copy_from_slice(&args.dport_base.to_be_bytes());
    udp[4..6].copy_from_slice(&((args.len - 34) as u16).to_be_bytes());
    Ok(h)
}

fn load(object: &[u8], what: &str) -> Result<Object> {
    ObjectBuilder::default()
        .open_memory(object)
        .and_then(|open| open.load())
        .with_context(|| format!("loading the {what} XDP program (root? kernel BTF?)"))
}

fn generate(args: &GenArgs) -> Result<()> {
    if args.flows == 0 || args.sport_span == 0 {
        bail!("--flows and --sport-span must be at least 1");
    }
    let dports = args.flows.div_ceil(u32::from(args.sport_span));
    if u32::from(args.dport_base) + dports > 65536
        || u32::from(args.sport_base) + u32::from(args.sport_span) > 65536
    {
        bail!("the flows' ports run past 65535");
    }
    if args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--seconds must be positive");
    }
    let ifindex = microseg_dataplane::xsk::ifindex(&args.ifname)?;
    let hdr = headers(args)?;
    let object = load(GEN_OBJ, "generator")?;
    let mut config = [0u8; CONFIG_LEN];
    config[..HDR_LEN].copy_from_slice(&hdr);
    config[42..44].copy_from_slice(&args.sport_span.to_ne_bytes());
    config[44..48].copy_from_slice(&args.flows.to_ne_bytes());
    config[48..50].copy_from_slice(&args.sport_base.to_ne_bytes());
    config[50..52].copy_from_slice(&args.dport_base.to_ne_bytes());
    map(&object, "gen_config")?
        .update(&0u32.to_ne_bytes(), &config, MapFlags::ANY)
        .context("writing gen_config")?;

    let start = Instant::now();
    let how = match args.method {
        GenMethod::Live => live_frames(&object, args, ifindex, &hdr).map_err(|error| {
            if refused(&error) {
                error.context("this kernel refuses live frames: --method loop works without them")
            } else {
                error
            }
        })?,
        GenMethod::Loop => xdp_loop(&object, args, ifindex)?,
        GenMethod::Auto => match live_frames(&object, args, ifindex, &hdr) {
            Err(error) if refused(&error) => {
                eprintln!(
                    "gen: this kernel refuses BPF_PROG_RUN with live frames (EPERM); \
                     using the XDP loop instead"
                );
                xdp_loop(&object, args, ifindex)?
            }
            other => other?,
        },
    };
    let elapsed = start.elapsed().as_secs_f64();
    let sent = percpu_sum(&map(&object, "gen_seq")?, 0)?;
    println!(
        "gen: {sent} frames in {elapsed:.3} s ({:.3} Mpps offered), {how}",
        sent as f64 / elapsed / 1e6,
    );
    Ok(())
}

/// Whether `error` is the kernel's refusal of live frames (as opposed to a
/// failure of a run it accepted).
fn refused(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<libbpf_rs::Error>()
        .is_some_and(|e| e.kind() == libbpf_rs::ErrorKind::PermissionDenied)
}

/// The map called `name` of `object`.
fn map<'o>(object: &'o Object, name: &str) -> Result<libbpf_rs::Map<'o>> {
    object
        .maps()
        .find(|m| m.name() == name)
        .with_context(|| format!("map {name}"))
}

/// The program called `name` of `object`.
fn program<'o>(object: &'o Object, name: &str) -> Result<libbpf_rs::ProgramMut<'o>> {
    object
        .progs_mut()
        .find(|p| p.name() == name)
        .with_context(|| format!("program {name}"))
}

/// Entry `key` of a per-CPU array of u64, summed over the CPUs.
fn percpu_sum(map: &libbpf_rs::Map<'_>, key: u32) -> Result<u64> {
    Ok(map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)?
        .unwrap_or_default()
        .iter()
        .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or_default()))
        .sum())
}

/// Runs `tb_gen` on live frames until `--seconds` have passed; how it ran.
/// The kernel's refusal is an error that `refused` recognizes.
fn live_frames(object: &Object, args: &GenArgs, ifindex: i32, hdr: &[u8]) -> Result<String> {
    let prog = program(object, "tb_gen")?;
    let mut frame = vec![0u8; args.len];
    frame[..HDR_LEN].copy_from_slice(hdr);
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
    // rx_queue_index, egress_ifindex.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(args.len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&(ifindex as u32).to_ne_bytes());

    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut calls = 0u64;
    while Instant::now() < deadline {
        let input = ProgramInput {
            context_in: Some(&mut ctx),
            data_in: Some(&frame),
            flags: LIVE_FRAMES,
            repeat: args.repeat,
            ..Default::default()
        };
        prog.test_run(input)
            .context("BPF_PROG_RUN with live frames (kernel >= 5.18)")?;
        calls += 1;
    }
    Ok(format!("live frames, {calls} runs of {}", args.repeat))
}

/// Addresses of the loop pair's seeding end and its peer, inside the
/// generator's namespace only (not the testbed's 10.203/16).
const LOOP_SEED_NET: &str = "10.250.250.1/30";
const LOOP_SEED_PEER: Ipv4Addr = Ipv4Addr::new(10, 250, 250, 2);

/// A veth pair made for the loop; removed again when dropped.
#[derive(Debug)]
struct LoopPair {
    bounce: String,
    turn: String,
}

impl LoopPair {
    /// `PREFIXlb` (bounce) and `PREFIXlt` (turn), up, with no IPv6.
    fn create(prefix: &str) -> Result<Self> {
        let pair = Self {
            bounce: format!("{prefix}lb"),
            turn: format!("{prefix}lt"),
        };
        if pair.turn.len() > 15 {
            bail!("--ifname {prefix} is too long to name the loop's veth pair after it");
        }
        ip(&[
            "link",
            "add",
            &pair.bounce,
            "type",
            "veth",
            "peer",
            "name",
            &pair.turn,
        ])?;
        // From here on, Drop removes the pair whatever fails.
        for end in [&pair.bounce, &pair.turn] {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6"), "1")
                .with_context(|| format!("turning IPv6 off on {end}"))?;
            ip(&["link", "set", end, "up"])?;
        }
        Ok(pair)
    }

    fn mac(end: &str) -> Result<String> {
        let path = format!("/sys/class/net/{end}/address");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .to_owned())
    }
}

impl Drop for LoopPair {
    fn drop(&mut self) {
        if let Err(error) = ip(&["link", "del", &self.bounce]) {
            eprintln!("gen: removing the loop's veth pair: {error:#}");
        }
    }
}

/// Runs `ip ARGS` (the testbeds' command runner: an error names the
/// command and what `ip` said).
fn ip(args: &[&str]) -> Result<()> {
    microseg_control::testbed::run("ip", args)?;
    Ok(())
}

/// Runs the XDP loop until `--seconds` have passed; how it ran.
fn xdp_loop(object: &Object, args: &GenArgs, ifindex: i32) -> Result<String> {
    let pair = LoopPair::create(&args.ifname)?;
    let turn_index = microseg_dataplane::xsk::ifindex(&pair.turn)?;
    let bounce_index = microseg_dataplane::xsk::ifindex(&pair.bounce)?;
    let ports = map(object, "gen_ports")?;
    for (slot, target) in [(0u32, turn_index), (1, ifindex)] {
        ports
            .update(&slot.to_ne_bytes(), &target.to_ne_bytes(), MapFlags::ANY)
            .context("writing gen_ports")?;
    }
    let _turn = program(object, "tb_loop")?
        .attach_xdp(turn_index)
        .with_context(|| format!("attaching tb_loop to {}", pair.turn))?;
    let _bounce = program(object, "tb_bounce")?
        .attach_xdp(bounce_index)
        .with_context(|| format!("attaching tb_bounce to {}", pair.bounce))?;
    // Seeds: datagrams from the bounce end's stack to a permanent
    // neighbour entry naming the turn end, so no ARP is sent; tb_loop
    // rewrites them whole. Their length is the frames' length.
    ip(&["addr", "add", LOOP_SEED_NET, "dev", &pair.bounce])?;
    let peer = LOOP_SEED_PEER.to_string();
    let turn_mac = LoopPair::mac(&pair.turn)?;
    ip(&[
        "neigh",
        "add",
        &peer,
        "lladdr",
        &turn_mac,
        "dev",
        &pair.bounce,
        "nud",
        "permanent",
    ])?;
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("UDP socket")?;
    socket
        .connect((LOOP_SEED_PEER, 9))
        .context("connecting the seeding socket")?;
    let payload = vec![0u8; args.len.saturating_sub(HDR_LEN)];
    let seed = |count: u32| {
        for _ in 0..count {
            // A full queue (ENOBUFS) only means fewer seeds.
            let _ = socket.send(&payload);
        }
    };
    let seq = map(object, "gen_seq")?;
    seed(args.seeds);
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let (mut last, mut reseeded) = (0u64, 0u32);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100).min(deadline - Instant::now()));
        // A loop that lost every frame (all dropped on full rings) is
        // seeded again rather than left silent.
        let now = percpu_sum(&seq, 0)?;
        if now == last {
            seed(args.seeds);
            reseeded += 1;
        }
        last = now;
    }
    map(object, "gen_stop")?
        .update(&0u32.to_ne_bytes(), &1u32.to_ne_bytes(), MapFlags::ANY)
        .context("stopping the loop")?;
    // Frames in flight drain within a NAPI round or two.
    std::thread::sleep(Duration::from_millis(50));
    Ok(format!(
        "XDP loop, {} seeds, seeded again {reseeded} times",
        args.seeds
    ))
}

fn sink(args: &SinkArgs) -> Result<()> {
    let ifindex = microseg_dataplane::xsk::ifindex(&args.ifname)?;
    let object = load(SINK_OBJ, "sink")?;
    let _link = program(&object, "tb_sink")?
        .attach_xdp(ifindex)
        .with_context(|| format!("attaching the sink to {}", args.ifname))?;
    let counts = map(&object, "sink_count")?;
    let read = |key: u32| percpu_sum(&counts, key);
    let start = Instant::now();
    let stop = (args.seconds > 0.0).then(|| start + Duration::from_secs_f64(args.seconds));
    let mut out = std::io::stdout().lock();
    loop {
        let (udp, other) = (read(0)?, read(1)?);
        let now = start.elapsed().as_secs_f64();
        writeln!(out, "{now:.6} {udp} {other}")?;
        out.flush()?;
        if stop.is_some_and(|s| Instant::now() >= s) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms));
    }
}
