//! Network-namespace testbeds for `microseg demo` and the root tests: a
//! namespace per workload, joined to the switch by a veth pair whose host
//! end becomes a switch port. Everything is removed on drop, also after a
//! failure. Addresses are 10.203.x.y inside the namespaces only; host ends
//! have no address and IPv6 disabled, so no traffic reaches the host's
//! stack or leaves the machine.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// A testbed command that failed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("`{command}` could not start: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("interface {0} has no index")]
    NoIfindex(String),
    #[error("interface name {0} is longer than 15 characters")]
    NameTooLong(String),
}

/// Runs a command; its stdout, or an error naming it.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, TestbedError> {
    let command = format!("{cmd} {}", args.join(" "));
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|source| TestbedError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(TestbedError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command inside a network namespace; its stdout.
pub fn run_in(namespace: &str, args: &[&str]) -> Result<String, TestbedError> {
    let mut full = vec!["netns", "exec", namespace];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Starts a long-running command inside a namespace (a server, a shell
/// pipeline) in a process group of its own; the whole group is ended when
/// the returned guard drops, so no grandchild outlives it.
pub fn spawn_in(namespace: &str, args: &[&str]) -> Result<ChildGuard, TestbedError> {
    Command::new("ip")
        .args(["netns", "exec", namespace])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(ChildGuard)
        .map_err(|source| TestbedError::Spawn {
            command: args.join(" "),
            source,
        })
}

/// Pings `addr` `count` times (200 ms apart, 1 s wait) from a namespace,
/// with `extra` ping options; true if every echo came back.
pub fn ping_from(namespace: &str, addr: &str, count: u32, extra: &[&str]) -> bool {
    let count = count.to_string();
    let mut args = vec!["ping", "-q", "-c", &count, "-i", "0.2", "-W", "1"];
    args.extend_from_slice(extra);
    args.push(addr);
    run_in(namespace, &args).is_ok()
}

/// Opens a TCP connection to `addr:port` from a namespace; true if it was
/// accepted within 2 s.
pub fn tcp_connect_from(namespace: &str, addr: &str, port: u16) -> bool {
    run_in(namespace, &["nc", "-z", "-w", "2", addr, &port.to_string()]).is_ok()
}

/// Is this process root? (Testbeds need it.)
pub fn is_root() -> bool {
    run("id", &["-u"]).is_ok_and(|uid| uid.trim() == "0")
}

/// One workload: a namespace with one end of a veth pair; the other end
/// (`host_if`) stays in the caller's namespace as a switch port.
#[derive(Debug)]
pub struct Testbed {
    pub namespace: String,
    pub host_if: String,
    pub peer_if: String,
    pub peer_addr: String,
    /// An address in the subnet nobody has (see `with_ghost`).
    pub ghost_addr: String,
}

impl Testbed {
    /// A workload at 10.203.<subnet>.<host>; `tag` keeps names apart.
    pub fn host(tag: &str, subnet: u8, host: u8) -> Result<Self, TestbedError> {
        let id = std::process::id() % 100_000;
        let bed = Self {
            namespace: format!("msx-{tag}-{id}"),
            host_if: format!("msx{id}{tag}h"),
            peer_if: format!("msx{id}{tag}p"),
            peer_addr: format!("10.203.{subnet}.{host}"),
            ghost_addr: format!("10.203.{subnet}.{}", if host == 2 { 3 } else { 2 }),
        };
        if bed.host_if.len() > 15 {
            return Err(TestbedError::NameTooLong(bed.host_if.clone()));
        }
        // From here on, Drop removes whatever was created.
        run("ip", &["netns", "add", &bed.namespace])?;
        run(
            "ip",
            &[
                "link",
                "add",
                &bed.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &bed.peer_if,
            ],
        )?;
        let no_ipv6 = format!("net.ipv6.conf.{}.disable_ipv6=1", bed.host_if);
        run("sysctl", &["-qw", &no_ipv6])?;
        run(
            "ip",
            &["link", "set", &bed.peer_if, "netns", &bed.namespace],
        )?;
        run("ip", &["link", "set", &bed.host_if, "up"])?;
        bed.ns(&["ip", "link", "set", "lo", "up"])?;
        let cidr = format!("{}/24", bed.peer_addr);
        bed.ns(&["ip", "addr", "add", &cidr, "dev", &bed.peer_if])?;
        bed.ns(&["ip", "link", "set", &bed.peer_if, "up"])?;
        // veth leaves TCP/UDP checksums for the receiver to finish
        // (CHECKSUM_PARTIAL); AF_XDP copy mode hands userspace the frame
        // as is, so forwarded segments would arrive with bad checksums and
        // be dropped by the receiving stack. Workloads compute them fully.
        bed.ns(&["ethtool", "-K", &bed.peer_if, "tx", "off"])?;
        Ok(bed)
    }

    /// A workload at .1 with a static neighbour entry for a ghost address
    /// (.2), so pings to it leave as IPv4 frames without ARP.
    pub fn with_ghost(tag: &str, subnet: u8) -> Result<Self, TestbedError> {
        let bed = Self::host(tag, subnet, 1)?;
        let (ghost, dev) = (bed.ghost_addr.clone(), bed.peer_if.clone());
        bed.ns(&[
            "ip",
            "neigh",
            "add",
            &ghost,
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            &dev,
            "nud",
            "permanent",
        ])?;
        Ok(bed)
    }

    /// Adds fd00:203:<subnet>::<host>/64 to the workload (no duplicate
    /// address detection, so it is usable at once); returns it.
    pub fn add_ipv6(&self, subnet: u8, host: u8) -> Result<String, TestbedError> {
        let addr = format!("fd00:203:{subnet}::{host}");
        let cidr = format!("{addr}/64");
        self.ns(&[
            "ip",
            "-6",
            "addr",
            "add",
            &cidr,
            "dev",
            &self.peer_if,
            "nodad",
        ])?;
        Ok(addr)
    }

    /// Runs a command inside the namespace.
    pub fn ns(&self, args: &[&str]) -> Result<String, TestbedError> {
        run_in(&self.namespace, args)
    }

    /// Starts a long-running command inside the namespace (see
    /// `spawn_in`).
    pub fn spawn(&self, args: &[&str]) -> Result<ChildGuard, TestbedError> {
        spawn_in(&self.namespace, args)
    }

    /// Pings `addr` `count` times from the namespace; true if all replied.
    pub fn ping(&self, addr: &str, count: u32) -> bool {
        ping_from(&self.namespace, addr, count, &[])
    }

    /// Pings the ghost address (no replies come; the result is ignored).
    pub fn ping_ghost(&self, count: u32) {
        let _ = self.ping(&self.ghost_addr.clone(), count);
    }

    /// Opens a TCP connection to `addr:port` from the namespace; true if
    /// it was accepted within 2 s.
    pub fn tcp_connect(&self, addr: &str, port: u16) -> bool {
        tcp_connect_from(&self.namespace, addr, port)
    }

    /// The host end's interface index.
    pub fn host_ifindex(&self) -> Result<i32, TestbedError> {
        std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", self.host_if))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| TestbedError::NoIfindex(self.host_if.clone()))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .output();
    }
}

/// A child process, and the process group it leads, ended when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Children spawned by `Testbed::spawn` lead their own group (pgid =
        // pid): end the group, which holds only what that child started.
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).output();
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A microseg switch joining testbed workloads: an AF_XDP port on each
/// workload's host end, the pipeline judging with `policy`, and a
/// forwarder polled on the calling thread (its ports are not `Send`).
#[derive(Debug)]
pub struct TestbedSwitch {
    pub pipeline: std::sync::Arc<microseg_dataplane::pipeline::Pipeline>,
    pub forwarder: microseg_dataplane::forward::Forwarder,
    /// The switch's clock starts here (`now` for the pipeline).
    start: std::time::Instant,
}

/// UMEM frames per port: plenty for testbed traffic.
const PORT_FRAMES: u32 = 512;

impl TestbedSwitch {
    /// Ports on `beds` (in order: port id = index), a conntrack table of
    /// `max_connections`, and `policy`, which callers may republish.
    pub fn new(
        policy: std::sync::Arc<microseg_dataplane::pipeline::PolicyCell>,
        beds: &[&Testbed],
        max_connections: usize,
    ) -> Result<Self, microseg_dataplane::xsk::XskError> {
        use microseg_dataplane::conntrack::{ConntrackConfig, ConntrackTable};
        use microseg_dataplane::switch::{MacTable, SwitchConfig};
        use std::sync::Arc;

        let pipeline = Arc::new(microseg_dataplane::pipeline::Pipeline::new(
            policy,
            Arc::new(ConntrackTable::new(ConntrackConfig {
                max_entries: max_connections,
                ..ConntrackConfig::default()
            })),
            Arc::new(MacTable::new(SwitchConfig::default())),
            4096,
        ));
        let names: Vec<&str> = beds.iter().map(|bed| bed.host_if.as_str()).collect();
        let ports = microseg_dataplane::xsk::PortGroup::open(&names, PORT_FRAMES)?;
        Ok(Self {
            forwarder: microseg_dataplane::forward::Forwarder::new(ports, Arc::clone(&pipeline)),
            pipeline,
            start: std::time::Instant::now(),
        })
    }

    /// Time since the switch started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }

    /// Forwards until `until` has passed since the switch started.
    pub fn forward_until(
        &mut self,
        until: std::time::Duration,
    ) -> Result<(), microseg_dataplane::xsk::XskError> {
        while self.start.elapsed() < until {
            self.forwarder
                .poll_once(1, self.start.elapsed().as_nanos() as u64)?;
        }
        Ok(())
    }

    /// Forwards while `traffic` runs, at most `limit` from now; true if it
    /// finished within the limit.
    pub fn forward_while<T>(
        &mut self,
        traffic: &std::thread::JoinHandle<T>,
        limit: std::time::Duration,
    ) -> Result<bool, microseg_dataplane::xsk::XskError> {
        let deadline = self.start.elapsed() + limit;
        while !traffic.is_finished() {
            if self.start.elapsed() >= deadline {
                return Ok(false);
            }
            self.forwarder
                .poll_once(1, self.start.elapsed().as_nanos() as u64)?;
        }
        Ok(true)
    }
}
