//! Root-only testbeds: a network namespace and a veth pair that a test
//! creates for itself and that are removed on drop, also when the test
//! fails. Addresses are 10.203.x.0/24 inside the namespace only; the host
//! end has no address and IPv6 disabled, so nothing reaches the host's
//! stack or leaves the machine.

use std::process::Command;

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when the test may use root testbeds. Without root it skips,
/// except under CI (CI=true), where root tests must run: it fails.
pub fn root_or_skip(test: &str) -> bool {
    let uid = run("id", &["-u"]);
    if uid.trim() == "0" {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root, and CI must run it"
    );
    eprintln!("skipping {test}: needs root");
    false
}

/// A namespace with one end of a veth pair; the other end stays here.
pub struct Testbed {
    pub namespace: String,
    /// The end in this (the test's) namespace.
    pub host_if: String,
    /// The end inside the namespace, with `peer_addr`.
    pub peer_if: String,
    pub peer_addr: String,
    /// An address in the namespace's subnet that nobody has, with a static
    /// neighbour entry, so pings to it leave as IPv4 frames without ARP.
    pub ghost_addr: String,
}

impl Testbed {
    /// A host at 10.203.<subnet>.1 with a ghost neighbour at .2; `tag`
    /// keeps names apart.
    pub fn new(tag: &str, subnet: u8) -> Self {
        let bed = Self::host(tag, subnet, 1);
        bed.ns(&[
            "ip",
            "neigh",
            "add",
            &bed.ghost_addr,
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            &bed.peer_if,
            "nud",
            "permanent",
        ]);
        bed
    }

    /// A host at 10.203.<subnet>.<host>, to be joined to others by a
    /// switch (no ghost neighbour).
    pub fn host(tag: &str, subnet: u8, host: u8) -> Self {
        let id = std::process::id() % 100_000;
        let bed = Self {
            namespace: format!("msx-{tag}-{id}"),
            host_if: format!("msx{id}{tag}h"),
            peer_if: format!("msx{id}{tag}p"),
            peer_addr: format!("10.203.{subnet}.{host}"),
            ghost_addr: format!("10.203.{subnet}.{}", if host == 2 { 3 } else { 2 }),
        };
        assert!(
            bed.host_if.len() <= 15,
            "interface name too long: {}",
            bed.host_if
        );
        // From here on, Drop cleans up whatever was created.
        run("ip", &["netns", "add", &bed.namespace]);
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
        );
        run(
            "sysctl",
            &[
                "-qw",
                &format!("net.ipv6.conf.{}.disable_ipv6=1", bed.host_if),
            ],
        );
        run(
            "ip",
            &["link", "set", &bed.peer_if, "netns", &bed.namespace],
        );
        run("ip", &["link", "set", &bed.host_if, "up"]);
        bed.ns(&["ip", "link", "set", "lo", "up"]);
        bed.ns(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", bed.peer_addr),
            "dev",
            &bed.peer_if,
        ]);
        bed.ns(&["ip", "link", "set", &bed.peer_if, "up"]);
        bed
    }

    /// Pings `addr` from the namespace `count` times; true if all replied.
    pub fn ping(&self, addr: &str, count: u32) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.namespace, "ping", "-q", "-c"])
            .arg(count.to_string())
            .args(["-i", "0.2", "-W", "1", addr])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Runs a command inside the namespace.
    pub fn ns(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.namespace];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Sends `count` pings from the namespace to the ghost address (no
    /// replies come: the result is ignored).
    pub fn ping_ghost(&self, count: u32) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.namespace, "ping", "-q", "-c"])
            .arg(count.to_string())
            .args(["-i", "0.05", "-W", "1", &self.ghost_addr])
            .output();
    }

    /// The host end's interface index.
    pub fn host_ifindex(&self) -> i32 {
        std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", self.host_if))
            .expect("host interface exists")
            .trim()
            .parse()
            .expect("an interface index")
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
