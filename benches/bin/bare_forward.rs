//! The in-run ceiling of the testbed benchmark (benches/testbed/run.sh): a
//! two-port AF_XDP forwarder with microseg's own port type (`XskPort`:
//! shared design, UMEM copy from the receiving port's frame into a free
//! frame of the other port) and no parsing, classification, conntrack or
//! MAC learning: every frame received on one port is sent out of the
//! other.
//!
//! Modes: `busy` spins; `adaptive` (microseg's default) spins while frames
//! come and sleeps in poll() after 200 µs of silence. It stops after
//! `--seconds`, or soon after `--stop-file` appears, detaching its XDP
//! programs (they are also removed with the veths).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use microseg_dataplane::xsk::{wait_readable, XskPort};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Busy,
    Adaptive,
}

#[derive(Parser, Debug)]
#[command(about = "Bare AF_XDP two-port forwarder (no classification)")]
struct Cli {
    /// The two ports.
    #[arg(long, num_args = 2, required = true)]
    ports: Vec<String>,
    /// UMEM frames per port.
    #[arg(long, default_value_t = 4096)]
    frames: u32,
    #[arg(long, value_enum, default_value_t = Mode::Adaptive)]
    mode: Mode,
    /// Stop after this long (0: until the stop file appears or killed).
    #[arg(long, default_value_t = 0.0)]
    seconds: f64,
    /// Stop when this file exists.
    #[arg(long)]
    stop_file: Option<PathBuf>,
}

const SPIN: Duration = Duration::from_micros(200);
const CHECK_EVERY: Duration = Duration::from_millis(50);

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.ports.len() != 2 || cli.ports[0] == cli.ports[1] {
        bail!("--ports takes two different interfaces");
    }
    let mut ports = cli
        .ports
        .iter()
        .map(|name| XskPort::open(name, cli.frames).with_context(|| format!("opening {name}")))
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "bare-forward: {} <-> {}, {:?}, {} frames per port",
        cli.ports[0], cli.ports[1], cli.mode, cli.frames
    );
    let start = Instant::now();
    let deadline = (cli.seconds > 0.0).then(|| start + Duration::from_secs_f64(cli.seconds));
    let mut next_check = start;
    let mut idle_since: Option<Instant> = None;
    let mut forwarded = [0u64; 2];
    loop {
        let mut moved = 0;
        for (from, count) in forwarded.iter_mut().enumerate() {
            let (left, right) = ports.split_at_mut(1);
            let (rx, tx) = if from == 0 {
                (&mut left[0], &mut right[0])
            } else {
                (&mut right[0], &mut left[0])
            };
            tx.reclaim();
            let received = rx.receive_batch(|frame| {
                tx.stage(frame);
            });
            if received > 0 {
                tx.flush()?;
                *count += received as u64;
                moved += received;
            }
        }
        let now = Instant::now();
        if now >= next_check {
            next_check = now + CHECK_EVERY;
            if deadline.is_some_and(|d| now >= d)
                || cli.stop_file.as_ref().is_some_and(|f| f.exists())
            {
                break;
            }
        }
        if moved > 0 {
            idle_since = None;
        } else if cli.mode == Mode::Adaptive {
            let since = *idle_since.get_or_insert(now);
            if now.duration_since(since) >= SPIN {
                wait_readable(&ports, 100)?;
                idle_since = None;
            }
        }
    }
    let stats: Vec<_> = ports.iter().map(XskPort::stats).collect();
    eprintln!(
        "bare-forward: forwarded {} + {} frames in {:.1} s; port stats {:?}",
        forwarded[0],
        forwarded[1],
        start.elapsed().as_secs_f64(),
        stats
    );
    Ok(())
}
