//! Headless Chromium (Debian's package) for tests of the web page: the DOM
//! after the page's scripts ran (`dump_dom`), a screenshot (`screenshot`),
//! and a DevTools session to click through the page (`Session`).
//!
//! Every run gets a profile directory of its own, removed afterwards, and
//! a deadline: a Chromium that hangs is killed (its process group, which
//! it leads: only processes this helper started) and the test fails.
//! Include it with `#[path = "common/browser.rs"] mod browser;`.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Debian's launcher (it `exec`s the browser, so its PID is the browser's).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one Chromium run may take (a cold start on two busy cores).
const DEADLINE: Duration = Duration::from_secs(90);

/// Virtual time the page gets before its DOM is taken: room for two
/// refreshes of the page's 2 s cycle. Virtual time stands still while
/// fetches are pending, so slow answers do not cut it short.
const VIRTUAL_TIME_MS: u32 = 5000;

/// True if Chromium is installed. Without it: fails under `CI=true`, else
/// prints why `test` is skipped and returns false.
pub fn chromium_or_skip(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{CHROMIUM} is missing: scripts/deps.sh installs it"
    );
    eprintln!("skipping {test}: {CHROMIUM} is missing (scripts/deps.sh installs it)");
    false
}

/// The page's DOM, serialized, after its scripts ran for a few (virtual)
/// seconds.
pub fn dump_dom(url: &str) -> String {
    let run = Run::start(&[
        &format!("--virtual-time-budget={VIRTUAL_TIME_MS}"),
        "--dump-dom",
        url,
    ]);
    let (stdout, _) = run.finish();
    assert!(
        stdout.contains("</html>"),
        "chromium dumped no document for {url}: {stdout}"
    );
    stdout
}

/// A PNG of the page (1280x900) after its scripts ran, written to `path`.
pub fn screenshot(url: &str, path: &Path) {
    let run = Run::start(&[
        &format!("--virtual-time-budget={VIRTUAL_TIME_MS}"),
        "--window-size=1280,900",
        "--hide-scrollbars",
        &format!("--screenshot={}", path.display()),
        url,
    ]);
    let (_, stderr) = run.finish();
    assert!(
        path.is_file(),
        "chromium wrote no screenshot to {}: {stderr}",
        path.display()
    );
}

/// One Chromium process: its scratch directory (profile, output) and
/// its deadline. Dropping it kills a Chromium still running and removes
/// the directory.
struct Run {
    child: Option<Child>,
    dir: PathBuf,
    started: Instant,
}

impl Run {
    fn start(args: &[&str]) -> Self {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "microseg-chromium-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("chromium scratch dir");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).expect("chromium TMPDIR");
        let stdout = std::fs::File::create(dir.join("stdout")).expect("stdout file");
        let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                // Tests run as root (no sandbox then) and in containers
                // without the namespaces the sandbox needs.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--metrics-recording-only",
                "--mute-audio",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(args)
            // Its singleton socket's folder (org.chromium.Chromium.*)
            // goes in TMPDIR and stays when it is killed: in the scratch
            // folder, it goes with it.
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // A group of its own: its renderers end with it on a timeout.
            .process_group(0)
            .spawn()
            .expect("start chromium");
        Self {
            child: Some(child),
            dir,
            started: Instant::now(),
        }
    }

    fn stderr(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("dbus")).collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits for Chromium to exit (successfully) before the deadline:
    /// its stdout and (the end of) its stderr.
    fn finish(mut self) -> (String, String) {
        let mut child = self.child.take().expect("running");
        loop {
            match child.try_wait().expect("wait for chromium") {
                Some(status) => {
                    let stdout =
                        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default();
                    let stderr = self.stderr();
                    assert!(status.success(), "chromium failed ({status}): {stderr}");
                    return (stdout, stderr);
                }
                None if self.started.elapsed() > DEADLINE => {
                    kill(&mut child);
                    panic!(
                        "chromium ran longer than {DEADLINE:?}; killed. {}",
                        self.stderr()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The DevTools port, from the file Chromium writes into its profile.
    fn devtools_port(&mut self) -> u16 {
        let file = self.dir.join("profile/DevToolsActivePort");
        loop {
            if let Some(port) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| text.lines().next()?.trim().parse().ok())
            {
                return port;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "chromium exited ({exited:?}): {}",
                self.stderr()
            );
            assert!(
                self.started.elapsed() < DEADLINE,
                "chromium opened no DevTools port: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Ends a Chromium still running: its process group (it leads it, and it
/// is not reaped yet, so the group is still its), then it.
fn kill(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = child.kill();
    }
    let _ = child.wait();
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            kill(child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Chromium showing one page, driven over the DevTools protocol (a
/// WebSocket to the page's target): evaluate script in the page, wait for
/// the page to show something. Ended on drop.
pub struct Session {
    socket: WebSocket,
    next_id: u64,
    // Last: the browser ends after the socket closes.
    _run: Run,
}

impl Session {
    /// Opens `url` in a new headless Chromium.
    pub fn open(url: &str) -> Self {
        let mut run = Run::start(&["--remote-debugging-port=0", url]);
        let port = run.devtools_port();
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        // The page's target (the browser opens it with the URL).
        let socket = loop {
            let page = http_get_json(devtools, "/json/list").and_then(|targets| {
                targets.as_array()?.iter().find_map(|t| {
                    (t["type"] == "page")
                        .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_string))?
                })
            });
            if let Some(address) = page {
                let path = address
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
                    .expect("a ws:// address");
                break WebSocket::connect(devtools, &path);
            }
            assert!(
                run.started.elapsed() < DEADLINE,
                "chromium shows no page: {}",
                run.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut session = Self {
            socket,
            next_id: 1,
            _run: run,
        };
        session.wait_for(
            "location.protocol !== 'about:' && document.readyState === 'complete'",
            DEADLINE,
        );
        session
    }

    /// Calls a DevTools method; its result (events in between are
    /// skipped), or panics with the protocol's error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.socket
            .send(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let message: Value =
                serde_json::from_str(&self.socket.receive()).expect("DevTools message is JSON");
            if message["id"] == id {
                assert!(
                    message.get("error").is_none(),
                    "{method}: {}",
                    message["error"]
                );
                return message["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise); its value
    /// as JSON. A script exception fails the test.
    pub fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .unwrap_or_else(|exception| panic!("{expression}: {exception}"))
    }

    /// As `eval`; a script exception is returned.
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        match result.get("exceptionDetails") {
            Some(exception) => Err(exception.clone()),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Evaluates `expression` until its value is truthy (a non-empty
    /// string, true, a number other than 0; an exception is not, as when
    /// an element is not there yet), or fails after `within` saying what
    /// it was last.
    pub fn wait_for(&mut self, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.try_eval(expression);
            let truthy = match &value {
                Err(_) | Ok(Value::Null) => false,
                Ok(Value::Bool(b)) => *b,
                Ok(Value::String(s)) => !s.is_empty(),
                Ok(Value::Number(n)) => n.as_f64() != Some(0.0),
                Ok(_) => true,
            };
            if truthy {
                return value.unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "never true within {within:?}: {expression} (last {value:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `GET path` on loopback, its body as JSON if the answer is 200 (read
/// by its length: DevTools keeps the connection open).
fn http_get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).ok()?;
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
    }
    if !status.starts_with("HTTP/1.1 200") {
        return None;
    }
    let mut body = vec![0u8; length?];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The client side of a WebSocket (RFC 6455), text messages only: enough
/// for the DevTools protocol on loopback.
struct WebSocket {
    stream: BufReader<TcpStream>,
}

impl WebSocket {
    fn connect(addr: SocketAddr, path: &str) -> Self {
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: bWljcm9zZWctdGVzdHMhIQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("WebSocket handshake");
        let mut stream = BufReader::new(stream);
        let mut status = String::new();
        stream.read_line(&mut status).expect("handshake answer");
        assert!(
            status.starts_with("HTTP/1.1 101"),
            "DevTools refused the WebSocket: {status}"
        );
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).expect("handshake headers");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Self { stream }
    }

    /// One text frame, masked (as a client must).
    fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x6d, 0x73, 0x65, 0x67];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream
            .get_mut()
            .write_all(&frame)
            .expect("send to DevTools");
    }

    /// The next text message (fragments joined; pings and pongs skipped).
    fn receive(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream
                .read_exact(&mut head)
                .expect("a DevTools message");
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let len = match head[1] & 0x7f {
                126 => {
                    let mut n = [0u8; 2];
                    self.stream.read_exact(&mut n).expect("length");
                    u64::from(u16::from_be_bytes(n))
                }
                127 => {
                    let mut n = [0u8; 8];
                    self.stream.read_exact(&mut n).expect("length");
                    u64::from_be_bytes(n)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0u8; usize::try_from(len).expect("frame size")];
            self.stream.read_exact(&mut payload).expect("payload");
            match opcode {
                0x8 => panic!("DevTools closed the WebSocket"),
                0x9 | 0xa => continue,
                _ => message.extend_from_slice(&payload),
            }
            if fin {
                return String::from_utf8(message).expect("UTF-8 text");
            }
        }
    }
}
