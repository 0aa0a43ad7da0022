//! The in-run ceiling of the testbed benchmark (benches/testbed/run.sh): a
//! two-port AF_XDP forwarder with microseg's own port type (`XskPort`:
//! shared design, UMEM copy from the receiving port's frame into a free
//! frame of the other port) and no parsing, classification, conntrack or
//! MAC learning: every frame received on one port is sent out of the
//! other.
//!
//! `--shared-umem` uses the switch's port type instead (`PortGroup`: one
//! UMEM for both sockets; in copy mode each forwarded frame is copied into
//! a frame of the group's transmit pool, written and sent on this core,
//! and the received frame goes back to the fill rings). The shared mode
//! reads each frame's destination MAC, as a switch does. Before the pool,
//! the group sent the received frame itself, and the kernel's copy into
//! the transmitted skb took the cache miss on the frame (written by the
//! receive copy on the other core), one at a time
//! (docs/performance-notes.md, "Copying into a transmit pool").
//!
//! Modes: `busy` spins; `adaptive` (microseg's default) spins while frames
//! come and sleeps in poll() after 200 µs of silence. It stops after
//! `--seconds`, or soon after `--stop-file` appears, detaching its XDP
//! programs (they are also removed with the veths).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use microseg_dataplane::xsk::{wait_readable, BusyPoll, Disposition, PortGroup, XskPort, BATCH};

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
    /// One UMEM for both ports, the switch's port type (`PortGroup`).
    #[arg(long)]
    shared_umem: bool,
    /// Socket busy polling with this budget (0: off; UMEM per port only):
    /// SO_PREFER_BUSY_POLL, and a non-blocking receive call on a port
    /// whose rx ring is empty, which runs the device's NAPI.
    #[arg(long, default_value_t = 0)]
    busy_poll_budget: u16,
    /// SO_BUSY_POLL, in microseconds, with --busy-poll-budget.
    #[arg(long, default_value_t = 20)]
    busy_poll_usecs: u32,
}

const SPIN: Duration = Duration::from_micros(200);
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// The two ports, in one of the two designs.
enum Ports {
    /// The ports, and whether busy polling is on.
    Copy(Vec<XskPort>, bool),
    Shared(Box<PortGroup>),
}

impl Ports {
    fn open(cli: &Cli) -> Result<Self> {
        if cli.shared_umem {
            let names: Vec<&str> = cli.ports.iter().map(String::as_str).collect();
            let group = PortGroup::open(&names, cli.frames)
                .with_context(|| format!("opening {}", names.join(" and ")))?;
            return Ok(Self::Shared(Box::new(group)));
        }
        let ports = cli
            .ports
            .iter()
            .map(|name| XskPort::open(name, cli.frames).with_context(|| format!("opening {name}")))
            .collect::<Result<Vec<_>>>()?;
        let busy_poll = cli.busy_poll_budget > 0;
        if busy_poll {
            for port in &ports {
                port.set_busy_poll(BusyPoll {
                    usecs: cli.busy_poll_usecs,
                    budget: cli.busy_poll_budget,
                })?;
            }
        }
        Ok(Self::Copy(ports, busy_poll))
    }

    /// Moves what has arrived to the other port; frames moved per port.
    fn step(&mut self, forwarded: &mut [u64; 2]) -> Result<usize> {
        let mut moved = 0;
        match self {
            Self::Copy(ports, busy_poll) => {
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
                    } else if *busy_poll {
                        rx.kick_rx();
                    }
                }
            }
            Self::Shared(group) => {
                let received = group.receive();
                let mut dispositions = [Disposition::Drop; BATCH];
                for start in (0..received).step_by(BATCH) {
                    let end = (start + BATCH).min(received);
                    for (index, disposition) in (start..end).zip(dispositions.iter_mut()) {
                        // Read the destination MAC, as any switch does:
                        // it also brings the frame into this core's cache
                        // before the kernel copies it out (see the header).
                        let ingress = group.frame(index).map_or(0, |(port, frame)| {
                            std::hint::black_box(frame.first().copied());
                            port
                        });
                        forwarded[usize::from(ingress)] += 1;
                        *disposition = Disposition::To(1 - ingress);
                    }
                    group.dispose(&dispositions[..end - start]);
                }
                group.end_round()?;
                moved = received;
            }
        }
        Ok(moved)
    }

    fn wait(&self) -> Result<()> {
        match self {
            Self::Copy(ports, _) => wait_readable(ports, 100)?,
            Self::Shared(group) => group.wait_readable(100)?,
        };
        Ok(())
    }

    fn report(&self) -> String {
        match self {
            Self::Copy(ports, _) => {
                format!("{:?}", ports.iter().map(XskPort::stats).collect::<Vec<_>>())
            }
            Self::Shared(group) => format!(
                "{:?}",
                (0..2).filter_map(|i| group.stats(i)).collect::<Vec<_>>()
            ),
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.ports.len() != 2 || cli.ports[0] == cli.ports[1] {
        bail!("--ports takes two different interfaces");
    }
    if cli.shared_umem && cli.busy_poll_budget > 0 {
        bail!("--busy-poll-budget is for the UMEM-per-port design, not --shared-umem");
    }
    let mut ports = Ports::open(&cli)?;
    eprintln!(
        "bare-forward: {} <-> {}, {:?}, {} frames per port, {}, busy poll budget {} ({} us)",
        cli.ports[0],
        cli.ports[1],
        cli.mode,
        cli.frames,
        if cli.shared_umem {
            "shared UMEM"
        } else {
            "UMEM per port, copy"
        },
        cli.busy_poll_budget,
        cli.busy_poll_usecs
    );
    let start = Instant::now();
    let deadline = (cli.seconds > 0.0).then(|| start + Duration::from_secs_f64(cli.seconds));
    let mut next_check = start;
    let mut idle_since: Option<Instant> = None;
    let mut forwarded = [0u64; 2];
    loop {
        let moved = ports.step(&mut forwarded)?;
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
                ports.wait()?;
                idle_since = None;
            }
        }
    }
    eprintln!(
        "bare-forward: forwarded {} + {} frames in {:.1} s; port stats {}",
        forwarded[0],
        forwarded[1],
        start.elapsed().as_secs_f64(),
        ports.report()
    );
    Ok(())
}
