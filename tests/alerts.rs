//! Alerts delivered to real receivers on loopback: a real rsyslogd
//! (Debian's rsyslog, started here with its own configuration and ended
//! by PID) receiving RFC 5424 over UDP and CEF over TCP; a webhook
//! receiver that fails twice before accepting; the JSON-lines file; and
//! receivers that never answer or refuse, which must cost drops, never a
//! blocked `submit`. No root needed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::ScratchDir;
use microseg_control::alerts::{Alert, AlertConfig, AlertError, AlertHub, AlertKind, SinkStats};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

fn alert(n: u16) -> Alert {
    Alert {
        time_ms: 1_709_210_096_000 + u64::from(n),
        kind: AlertKind::Denied,
        severity: 4,
        rule: Some(format!("shop/deny \"db\" [{n}]")),
        src: Some("shop/web".into()),
        dst: Some("shop/db".into()),
        src_addr: Some(format!("10.0.0.{n}")),
        dst_addr: Some("10.0.1.9".into()),
        proto: Some("tcp".into()),
        dport: Some(5000 + n),
        message: format!("denied shop/web -> shop/db tcp/{} a=b", 5000 + n),
        suppressed: 0,
    }
}

fn config(yaml: &str) -> AlertConfig {
    serde_yaml::from_str(yaml).expect("alerts config")
}

/// Polls `done` every 20 ms until it holds or `timeout` passes.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sink<'a>(stats: &'a [SinkStats], prefix: &str) -> &'a SinkStats {
    stats
        .iter()
        .find(|s| s.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no sink {prefix} in {stats:?}"))
}

fn free_tcp_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port")
}

fn free_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// rsyslogd running in the foreground; killed by its PID on drop.
struct Rsyslogd {
    child: Child,
    stderr: PathBuf,
}

impl Rsyslogd {
    /// Starts it with imudp on `udp` and imtcp on `tcp`, writing every
    /// message twice: raw to `raw.log`, and as rsyslog parsed it
    /// (`PRI|HOSTNAME|APP|PROCID|MSGID|SD|MSG`) to `parsed.log`.
    fn start(scratch: &ScratchDir, udp: SocketAddr, tcp: SocketAddr) -> Self {
        let dir = scratch.0.display();
        let conf = scratch.file("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imudp")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
template(name="parsed" type="string" string="%pri%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%msg%\n")
input(type="imudp" address="127.0.0.1" port="{}")
input(type="imtcp" address="127.0.0.1" port="{}")
action(type="omfile" file="{dir}/raw.log" template="raw")
action(type="omfile" file="{dir}/parsed.log" template="parsed")
"#,
                udp.port(),
                tcp.port()
            ),
        )
        .expect("write rsyslog.conf");
        let stderr = scratch.file("rsyslogd.stderr");
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(scratch.file("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start rsyslogd");
        Self { child, stderr }
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "rsyslogd exited ({status}): {}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL to this child's PID
        let _ = self.child.wait();
    }
}

/// Waits until rsyslogd receives on both ports: a TCP connection is
/// accepted, and a UDP probe, resent until then, reaches its log.
fn wait_for_rsyslogd(daemon: &mut Rsyslogd, udp: SocketAddr, tcp: SocketAddr, raw: &Path) {
    let probe = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
    let ready = wait_until(Duration::from_secs(20), || {
        daemon.assert_running();
        let _ = probe.send_to(b"<134>1 - - probe - - - ready", udp);
        TcpStream::connect(tcp).is_ok() && lines(raw).iter().any(|l| l.ends_with("ready"))
    });
    assert!(
        ready,
        "rsyslogd never came up: {}",
        std::fs::read_to_string(&daemon.stderr).unwrap_or_default()
    );
}

#[test]
fn a_real_rsyslogd_receives_rfc5424_over_udp_and_cef_over_tcp() {
    if !Path::new(RSYSLOGD).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "rsyslogd is missing: scripts/deps.sh installs it"
        );
        eprintln!("skipping: {RSYSLOGD} is missing (scripts/deps.sh installs rsyslog)");
        return;
    }
    let scratch = ScratchDir::new("alerts-rsyslog");
    let (udp, tcp) = (free_udp_port(), free_tcp_port());
    let mut daemon = Rsyslogd::start(&scratch, udp, tcp);
    let (raw, parsed) = (scratch.file("raw.log"), scratch.file("parsed.log"));
    wait_for_rsyslogd(&mut daemon, udp, tcp, &raw);

    let hub = AlertHub::start(&config(&format!(
        "rate_limit: {{per_minute: 6000, burst: 100}}\n\
         sinks:\n\
         \x20 - syslog: {{address: \"{udp}\", transport: udp, format: rfc5424}}\n\
         \x20 - syslog: {{address: \"{tcp}\", transport: tcp, format: cef}}\n"
    )))
    .expect("hub starts");
    let sent: Vec<Alert> = (1..=3).map(alert).collect();
    for alert in &sent {
        hub.submit(alert.clone());
    }
    let ours = |line: &String| line.contains("|microseg|");
    let arrived = wait_until(Duration::from_secs(20), || {
        lines(&parsed).iter().filter(|l| ours(l)).count() >= 6
    });
    let parsed_lines: Vec<String> = lines(&parsed).into_iter().filter(ours).collect();
    let raw_lines = lines(&raw);
    assert!(arrived, "parsed: {parsed_lines:#?}\nraw: {raw_lines:#?}");
    assert_eq!(parsed_lines.len(), 6, "{parsed_lines:#?}");

    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let procid = std::process::id().to_string();
    for alert in &sent {
        let n = alert.dport.unwrap_or_default() - 5000;
        // RFC 5424 over UDP, as rsyslog parsed it.
        let sd = format!(
            "[microseg@32473 kind=\"denied\" rule=\"shop/deny \\\"db\\\" [{n}\\]\" src=\"shop/web\" \
             dst=\"shop/db\" src_addr=\"10.0.0.{n}\" dst_addr=\"10.0.1.9\" proto=\"tcp\" dport=\"{}\"]",
            5000 + n
        );
        let expected = format!(
            "132|{}|microseg|{procid}|denied|{sd}|{}",
            hostname.trim(),
            alert.message
        );
        assert!(
            parsed_lines.contains(&expected),
            "missing {expected}\nin {parsed_lines:#?}"
        );
        // The raw datagram carries the alert's own time, to the millisecond.
        let stamp = format!("<132>1 2024-02-29T12:34:56.00{n}Z ");
        assert!(
            raw_lines
                .iter()
                .any(|l| l.starts_with(&stamp) && l.contains(&sd)),
            "no raw line starting {stamp}: {raw_lines:#?}"
        );
        // CEF over TCP: octet framing intact, one message per alert.
        let cef_prefix = format!(
            "132|{}|microseg|{procid}|denied|-|CEF:0|microseg|microseg|",
            hostname.trim()
        );
        let cef = parsed_lines
            .iter()
            .find(|l| l.starts_with(&cef_prefix) && l.contains(&format!(" dpt={} ", 5000 + n)))
            .unwrap_or_else(|| panic!("no CEF line for alert {n}: {parsed_lines:#?}"));
        for field in [
            "|denied|Flow denied|5|".to_string(),
            format!("rt={}", alert.time_ms),
            format!("src=10.0.0.{n} dst=10.0.1.9 proto=tcp"),
            format!("cs1=shop/deny \"db\" [{n}] cs1Label=rule"),
            format!("msg={} a\\=b", alert.message.trim_end_matches(" a=b")),
        ] {
            assert!(cef.contains(&field), "{field} not in {cef}");
        }
    }

    hub.shutdown(Instant::now() + Duration::from_secs(5));
    let stats = hub.stats().sinks;
    for name in ["syslog udp", "syslog tcp"] {
        let sink = sink(&stats, name);
        assert_eq!(
            (sink.sent, sink.failed, sink.dropped),
            (3, 0, 0),
            "{sink:?}"
        );
    }
    eprintln!("rsyslogd received:\n{}", raw_lines.join("\n"));
    drop(daemon);
}

/// One HTTP request as the receiver saw it.
struct Received {
    head: String,
    body: String,
    at: Instant,
}

/// Reads one request: head up to the blank line, then Content-Length bytes.
fn read_request(stream: &mut TcpStream) -> Option<(String, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })?
        .parse()
        .ok()?;
    while data.len() < head_end + length {
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..read]);
    }
    let body = String::from_utf8_lossy(&data[head_end..head_end + length]).to_string();
    Some((head, body))
}

/// A webhook receiver answering `statuses` in turn (then 200), for `run_for`.
fn webhook_receiver(
    statuses: Vec<u16>,
    run_for: Duration,
) -> (SocketAddr, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    listener.set_nonblocking(true).expect("nonblocking");
    let (requests, received) = mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + run_for;
        let mut answers = statuses.into_iter();
        while Instant::now() < deadline {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let Some((head, body)) = read_request(&mut stream) else {
                continue;
            };
            let status = answers.next().unwrap_or(200);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = requests.send(Received {
                head,
                body,
                at: Instant::now(),
            });
        }
    });
    (address, received)
}

#[test]
fn a_webhook_is_retried_with_backoff_until_it_accepts() {
    let (receiver, requests) = webhook_receiver(vec![500, 500], Duration::from_secs(20));
    let hub = AlertHub::start(&config(&format!(
        "sinks: [{{webhook: {{url: \"http://{receiver}/hook\", retries: 5, timeout_ms: 2000, backoff_ms: 50}}}}]"
    )))
    .expect("hub starts");
    let sent = alert(7);
    hub.submit(sent.clone());
    assert!(
        wait_until(Duration::from_secs(10), || hub.stats().sinks[0].sent == 1),
        "{:?}",
        hub.stats()
    );
    hub.shutdown(Instant::now() + Duration::from_secs(2));
    let stats = hub.stats().sinks;
    let webhook = sink(&stats, "webhook http://");
    assert_eq!(
        (
            webhook.sent,
            webhook.retries,
            webhook.failed,
            webhook.dropped
        ),
        (1, 2, 0, 0),
        "{webhook:?}"
    );
    assert_eq!(
        webhook.last_error.as_deref(),
        Some("the receiver answered HTTP 500")
    );

    let got: Vec<Received> = requests.try_iter().collect();
    assert_eq!(got.len(), 3, "two refused, one accepted, none after");
    for request in &got {
        assert!(
            request.head.starts_with("POST /hook HTTP/1.1\r\n"),
            "{}",
            request.head
        );
        assert!(
            request
                .head
                .contains("\r\nContent-Type: application/json\r\n"),
            "{}",
            request.head
        );
        let body: Alert = serde_json::from_str(&request.body).expect("the body is an alert");
        assert_eq!(body, sent);
    }
    // Backoff: 50 ms before the first retry, 100 ms before the second.
    let gaps = [got[1].at - got[0].at, got[2].at - got[1].at];
    assert!(gaps[0] >= Duration::from_millis(50), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(100), "{gaps:?}");
    eprintln!("webhook: 3 requests, gaps {gaps:?}, stats {webhook:?}");
}

#[test]
fn the_file_sink_appends_json_lines_and_suppressed_alerts_are_counted() {
    let scratch = ScratchDir::new("alerts-file");
    let path = scratch.file("alerts.jsonl");
    let hub = AlertHub::start(&config(&format!(
        "rate_limit: {{per_minute: 1, burst: 2}}\nsinks: [{{file: {{path: {}}}}}]",
        path.display()
    )))
    .expect("hub starts");
    // Two keys; the second is sent 5 times, and its burst is 2.
    hub.submit(alert(1));
    for _ in 0..5 {
        hub.submit(alert(2));
    }
    assert!(
        wait_until(Duration::from_secs(10), || lines(&path).len() >= 3),
        "{:?}",
        lines(&path)
    );
    hub.shutdown(Instant::now() + Duration::from_secs(2));
    let written: Vec<Alert> = lines(&path)
        .iter()
        .map(|line| serde_json::from_str(line).expect("each line is an alert"))
        .collect();
    assert_eq!(written, [alert(1), alert(2), alert(2)]);
    let stats = hub.stats();
    assert_eq!(stats.suppressed, 3, "{stats:?}");
    assert_eq!(stats.sinks[0].sent, 3, "{stats:?}");
    eprintln!("file: {} lines; stats {stats:?}", written.len());
}

#[test]
fn a_file_sink_in_a_missing_directory_does_not_start() {
    let scratch = ScratchDir::new("alerts-missing-dir");
    let path = scratch.file("nope/alerts.jsonl");
    let error = AlertHub::start(&config(&format!(
        "sinks: [{{file: {{path: {}}}}}]",
        path.display()
    )))
    .expect_err("a missing directory is refused");
    assert!(matches!(error, AlertError::Invalid { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("alerts.sinks[0].file.path: directory") && text.contains("does not exist"),
        "{text}"
    );
}

#[test]
fn dead_receivers_never_block_submit_and_drops_are_counted() {
    // A listener that never accepts (connections hang in its backlog, no
    // answer ever comes), and a port nobody listens on.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_address = silent.local_addr().expect("address");
    let refusing = free_tcp_port();
    let hub = AlertHub::start(&config(&format!(
        "rate_limit: {{per_minute: 1000000, burst: 100000}}\nqueue: 100\nsinks:\n\
         \x20 - webhook: {{url: \"http://{silent_address}/hook\", retries: 5, timeout_ms: 2000, backoff_ms: 200}}\n\
         \x20 - syslog: {{address: \"{refusing}\", transport: tcp, retries: 5, backoff_ms: 200}}\n"
    )))
    .expect("hub starts");

    let total = 10_000u64;
    let started = Instant::now();
    for n in 0..total {
        hub.submit(alert((n % 200) as u16));
    }
    let submitting = started.elapsed();
    assert!(
        submitting < Duration::from_secs(2),
        "10,000 submits took {submitting:?}"
    );

    let stats = hub.stats().sinks;
    for sink in &stats {
        // At most `queue` alerts waiting plus one being tried.
        assert!(sink.dropped >= total - 101, "{sink:?}");
        assert_eq!(sink.sent, 0, "{sink:?}");
        assert!(sink.queued <= 100, "{sink:?}");
        // Every alert is counted once, but the one a thread may be trying.
        let accounted = sink.dropped + sink.queued as u64 + sink.failed + sink.sent;
        assert!((total - 1..=total).contains(&accounted), "{sink:?}");
    }

    // Shutdown keeps its deadline even with a send hanging.
    let stopping = Instant::now();
    hub.shutdown(Instant::now() + Duration::from_millis(300));
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    let after = hub.stats().sinks;
    let syslog = sink(&after, "syslog tcp");
    assert!(syslog.retries >= 1, "{syslog:?}");
    assert!(
        syslog
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("connect"),
        "{syslog:?}"
    );
    eprintln!("10,000 submits in {submitting:?}; shutdown in {took:?}; {after:?}");
    drop(silent);
}
