//! Root-test helpers for `microseg run`: a testbed built by
//! `scripts/testbed.sh` (torn down on drop, also on failure) and the
//! appliance as a child process, driven by signals and read through its
//! status API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub use microseg_control::testbed::ChildGuard;
use microseg_control::testbed::{ping_from, spawn_in, tcp_connect_from};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The four workloads of `scripts/testbed.sh`, in host-number order.
pub const WORKLOADS: [&str; 4] = ["web", "app", "db", "out"];

/// A testbed from `scripts/testbed.sh up`.
pub struct ScriptTestbed {
    pub prefix: String,
    pub subnet: u8,
    /// Where the script wrote config.yaml and rules.yaml.
    pub dir: PathBuf,
    pub api: SocketAddr,
    /// Queues per veth (a config with N workers needs N).
    pub queues: u32,
}

/// A free loopback port for the API.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

impl ScriptTestbed {
    /// `tag` (a letter or two) keeps this test's names apart from others'.
    pub fn up(tag: &str, subnet: u8, queues: u32) -> Self {
        let prefix = format!("t{}{tag}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("microseg-testbed-{prefix}"));
        let api = free_port();
        let bed = Self {
            prefix,
            subnet,
            dir,
            api,
            queues,
        };
        let out = bed.script("up");
        assert!(
            out.status.success(),
            "testbed.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bed
    }

    fn script(&self, action: &str) -> Output {
        Command::new("bash")
            .arg(repo_root().join("scripts/testbed.sh"))
            .args([action, &self.prefix])
            .env("SUBNET", self.subnet.to_string())
            .env("QUEUES", self.queues.to_string())
            .env("API", self.api.to_string())
            .env("DIR", &self.dir)
            .output()
            .expect("run scripts/testbed.sh")
    }

    pub fn namespace(&self, workload: &str) -> String {
        format!("{}-{workload}", self.prefix)
    }

    pub fn port(&self, workload: &str) -> String {
        format!("{}{workload}h", self.prefix)
    }

    fn host_number(workload: &str) -> usize {
        WORKLOADS
            .iter()
            .position(|w| *w == workload)
            .expect("a testbed workload")
            + 1
    }

    pub fn addr(&self, workload: &str) -> String {
        format!("10.203.{}.{}", self.subnet, Self::host_number(workload))
    }

    pub fn addr6(&self, workload: &str) -> String {
        format!("fd00:203:{}::{}", self.subnet, Self::host_number(workload))
    }

    /// Runs a command inside a workload's namespace.
    pub fn exec(&self, workload: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.namespace(workload)])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Starts a long-running command in a workload's namespace, in a
    /// process group of its own, ended when the guard drops.
    pub fn spawn(&self, workload: &str, args: &[&str]) -> ChildGuard {
        spawn_in(&self.namespace(workload), args).expect("spawn in namespace")
    }

    /// A TCP server accepting (and discarding) connections on `port`.
    pub fn spawn_server(&self, workload: &str, port: u16) -> ChildGuard {
        self.spawn(workload, &["nc", "-lk", &port.to_string()])
    }

    /// A shell command line in a workload's namespace.
    pub fn spawn_shell(&self, workload: &str, script: &str) -> ChildGuard {
        self.spawn(workload, &["sh", "-c", script])
    }

    /// Opens a TCP connection; true if accepted within 2 s.
    pub fn tcp_connect(&self, from: &str, addr: &str, port: u16) -> bool {
        tcp_connect_from(&self.namespace(from), addr, port)
    }

    /// Pings from one workload to an address; true if every echo came back.
    pub fn ping(&self, from: &str, to: &str, count: u32, extra: &[&str]) -> bool {
        ping_from(&self.namespace(from), to, count, extra)
    }

    /// A workload's MAC address (its eth0).
    pub fn mac(&self, workload: &str) -> String {
        let out = self.exec(workload, &["cat", "/sys/class/net/eth0/address"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The API token `testbed.sh` generated.
    pub fn token(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("tokens")).expect("tokens file");
        text.split_whitespace()
            .nth(2)
            .expect("ROLE NAME TOKEN")
            .to_string()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    pub fn rules(&self) -> PathBuf {
        self.dir.join("rules.yaml")
    }

    /// Replaces a line of the generated config.
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.config()).expect("config");
        assert!(text.contains(from), "config has no {from:?}");
        std::fs::write(self.config(), text.replace(from, to)).expect("write config");
    }
}

impl Drop for ScriptTestbed {
    fn drop(&mut self) {
        let _ = self.script("down");
        // The script removes what it wrote; the tests' own files (logs,
        // policies, alert files, state) go with the folder.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `microseg run` as a child process; SIGTERM and wait on drop.
pub struct RunningAppliance {
    child: Option<Child>,
    api: SocketAddr,
    token: String,
    log: PathBuf,
}

impl RunningAppliance {
    /// Starts it on the testbed's config and waits until the API answers.
    pub fn start(bed: &ScriptTestbed) -> Self {
        let log = bed.dir.join("microseg.log");
        let child = Command::new(env!("CARGO_BIN_EXE_microseg"))
            .args(["run", "-c"])
            .arg(bed.config())
            // Its own choice of malloc tunables, whatever the caller's.
            .env_remove("GLIBC_TUNABLES")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start microseg run");
        let mut running = Self {
            child: Some(child),
            api: bed.api,
            token: bed.token(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(running.api, "/healthz", None).is_none() {
            if let Some(status) = running
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("microseg run exited ({status}): {}", running.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "API never answered: {}",
                running.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        running
    }

    /// The process's id (the same after its start again with huge pages).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /v1/status`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let body = http_get(self.api, "/v1/status", Some(&self.token)).expect("status answers");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// A port's drop count for a cause name (`parse:truncated_udp`).
    pub fn port_drops(&self, port: &str, cause: &str) -> u64 {
        let status = self.status();
        status["ports"]
            .as_array()
            .and_then(|ports| ports.iter().find(|p| p["name"] == port))
            .and_then(|p| p["drops"][cause].as_u64())
            .unwrap_or(0)
    }

    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let pid = child.id().to_string();
            let ok = Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{signal} {pid}");
        }
    }

    /// SIGTERM; waits for the exit and returns its status and the log.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(20));
        (status, self.log_text())
    }

    /// SIGKILL: a crash, as far as the appliance can tell.
    pub fn crash(mut self) -> String {
        self.signal("KILL");
        self.wait(Duration::from_secs(10));
        self.log_text()
    }

    /// `PUT` with curl (a real client): the HTTP status and body.
    pub fn curl_put(
        &self,
        path: &str,
        content_type: &str,
        body: &std::path::Path,
    ) -> (u16, String) {
        self.curl("PUT", path, Some((content_type, body)))
    }

    /// Any request with curl and the admin token: the HTTP status and
    /// body.
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &std::path::Path)>,
    ) -> (u16, String) {
        let mut command = Command::new("curl");
        command
            .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.token));
        if let Some((content_type, file)) = body {
            command
                .arg("-H")
                .arg(format!("Content-Type: {content_type}"))
                .arg("--data-binary")
                .arg(format!("@{}", file.display()));
        }
        let out = command
            .arg(format!("http://{}{path}", self.api))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// `GET` with the token; the parsed JSON body.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let body = http_get(self.api, path, Some(&self.token)).expect("answers");
        serde_json::from_str(&body).expect("JSON")
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                return child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RunningAppliance {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("TERM");
            self.wait(Duration::from_secs(10));
        }
    }
}

/// Waits up to `limit` for a spawned command to end by itself.
pub fn wait_exit(guard: &mut ChildGuard, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = guard.0.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A minimal HTTP/1.1 GET on loopback; the body, or None if nothing
/// answers with 200.
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}
