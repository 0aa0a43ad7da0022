//! `microseg policy validate|apply|get|diff|history|rollback`: the CLI
//! client of the REST API. Human-readable output by default, `--json` for
//! scripts; the token comes from `$MICROSEG_TOKEN` or a file.
//!
//! The HTTP/1.1 client is a few lines on `std::net::TcpStream` (one
//! request per connection, `Content-Length` or chunked replies): the API
//! listens on loopback by default, and the client pulls in no HTTP stack.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use serde_json::Value;

use crate::engine::summary_of;
use crate::policy::PolicyDocument;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--api {0}: use http://HOST:PORT or https://HOST:PORT")]
    BadUrl(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot reach the API at {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("a malformed reply from the API: {0}")]
    Reply(String),
    #[error("the API refused: HTTP {status}: {error}: {detail}{}", problem_lines(.problems))]
    Refused {
        status: u16,
        error: String,
        detail: String,
        /// Every problem, `path: message`.
        problems: Vec<String>,
    },
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("no token: set MICROSEG_TOKEN or pass --token-file")]
    NoToken,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Document { path: String, message: String },
}

fn problem_lines(problems: &[String]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

/// Reads a token: the last field of the first line that is not a comment
/// (a bare token, or a line of the server's tokens file).
pub fn read_token(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClientError::Read {
        path: path.display().to_string(),
        source,
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_string)
        .ok_or(ClientError::NoToken)
}

/// An API endpoint and the caller's token.
#[derive(Debug, Clone)]
pub struct Client {
    host: String,
    token: String,
    /// Set for `https://` endpoints.
    tls: Option<Arc<ClientConfig>>,
}

/// Where trusted CA certificates come from when `--cacert` is not given.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A TLS client configuration trusting the CA certificates in `ca_file`.
fn tls_config(ca_file: &Path) -> Result<Arc<ClientConfig>, ClientError> {
    let bytes = std::fs::read(ca_file).map_err(|source| ClientError::Read {
        path: ca_file.display().to_string(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut bytes.as_slice()) {
        let cert = cert.map_err(|e| ClientError::Tls(format!("{}: {e}", ca_file.display())))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(ClientError::Tls(format!(
            "{}: no CA certificate in it",
            ca_file.display()
        )));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A connection, plain or TLS.
trait Connection: Read + Write {}
impl<T: Read + Write> Connection for T {}

/// A reply: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Vec<u8>,
}

impl Client {
    /// The client `--api`, `--token-file` (else `$MICROSEG_TOKEN`) and
    /// `--cacert` ask for.
    pub fn for_options(options: &crate::cli::ApiOptions) -> Result<Self, ClientError> {
        let token = match &options.token_file {
            Some(path) => read_token(path)?,
            None => std::env::var("MICROSEG_TOKEN").map_err(|_| ClientError::NoToken)?,
        };
        Self::new(&options.api, token, options.cacert.as_deref())
    }

    /// `url` is `http://HOST:PORT` or `https://HOST:PORT`; for https the
    /// server's certificate must chain to a CA in `ca_file` (default: the
    /// system bundle).
    pub fn new(url: &str, token: String, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        let (secure, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(ClientError::BadUrl(url.to_string())),
        };
        let host = Some(rest.trim_end_matches('/'))
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| ClientError::BadUrl(url.to_string()))?;
        let tls = if secure {
            Some(tls_config(ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE)))?)
        } else {
            None
        };
        if token.is_empty() || token.contains(['\r', '\n', ' ']) {
            return Err(ClientError::NoToken);
        }
        Ok(Self {
            host: host.to_string(),
            token,
            tls,
        })
    }

    /// One request; replies other than 2xx become `Refused`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        extra_headers: &[(&str, String)],
    ) -> Result<Reply, ClientError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let connect = |source| ClientError::Connect {
            url: format!("{scheme}://{}", self.host),
            source,
        };
        let tcp = TcpStream::connect(&self.host).map_err(connect)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(connect)?;
        let mut stream: Box<dyn Connection> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = self
                    .host
                    .rsplit_once(':')
                    .map_or(self.host.as_str(), |(h, _)| h);
                let name = ServerName::try_from(name.trim_matches(['[', ']']).to_string())
                    .map_err(|e| ClientError::Tls(format!("{}: {e}", self.host)))?;
                let session = ClientConnection::new(Arc::clone(config), name)
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                Box::new(StreamOwned::new(session, tcp))
            }
        };
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
            self.host, self.token
        );
        let payload = match body {
            Some((content_type, bytes)) => {
                head.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                    bytes.len()
                ));
                bytes
            }
            None => {
                head.push_str("Content-Length: 0\r\n");
                &[]
            }
        };
        for (name, value) in extra_headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(payload))
            .map_err(connect)?;
        let reply = read_reply(BufReader::new(stream))?;
        if !(200..300).contains(&reply.status) {
            let json: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            return Err(ClientError::Refused {
                status: reply.status,
                error: text(&json["error"]),
                detail: text(&json["detail"]),
                problems: json["problems"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .map(|p| format!("{}: {}", text(&p["path"]), text(&p["message"])))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        Ok(reply)
    }

    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        extra_headers: &[(&str, String)],
    ) -> Result<(Value, Option<String>), ClientError> {
        let reply = self.request(method, path, body, extra_headers)?;
        let value =
            serde_json::from_slice(&reply.body).map_err(|e| ClientError::Reply(e.to_string()))?;
        Ok((value, reply.etag))
    }
}

/// `text` percent-encoded for a URL path segment or query value.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A query string from (name, value) pairs, values percent-encoded.
pub fn query_string(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn read_reply(mut reader: impl BufRead) -> Result<Reply, ClientError> {
    let bad = |what: &str| ClientError::Reply(what.to_string());
    let broken = |e: std::io::Error| ClientError::Reply(e.to_string());
    let mut line = String::new();
    reader.read_line(&mut line).map_err(broken)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let (mut length, mut chunked, mut etag) = (None, false, None);
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(broken)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "etag" => etag = Some(value.trim().trim_matches('"').to_string()),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(broken)?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).map_err(broken)?;
            line.clear();
            reader.read_line(&mut line).map_err(broken)?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body).map_err(broken)?;
    } else {
        reader.read_to_end(&mut body).map_err(broken)?;
    }
    Ok(Reply { status, etag, body })
}

/// A policy file's bytes and content type (by extension: .json is JSON,
/// anything else YAML), checked locally first so that a typo is reported
/// with the file's name.
pub fn read_policy_file(
    path: &Path,
) -> Result<(&'static str, Vec<u8>, PolicyDocument), ClientError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ClientError::Read {
        path: shown.clone(),
        source,
    })?;
    let json = path.extension().is_some_and(|e| e == "json");
    let parsed = if json {
        PolicyDocument::from_json(&bytes)
    } else {
        PolicyDocument::from_yaml(&String::from_utf8_lossy(&bytes))
    };
    let document = parsed.map_err(|e| ClientError::Document {
        path: shown,
        message: e.to_string(),
    })?;
    Ok((
        if json {
            "application/json"
        } else {
            "application/yaml"
        },
        bytes,
        document,
    ))
}

/// Writes a validation report (errors, then warnings).
fn write_problems(out: &mut impl Write, report: &Value) -> std::io::Result<()> {
    for (kind, key) in [("error", "errors"), ("warning", "warnings")] {
        for problem in report[key].as_array().into_iter().flatten() {
            writeln!(
                out,
                "{kind}: {}: {}",
                problem["path"].as_str().unwrap_or(""),
                problem["message"].as_str().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

/// `policy validate FILE`: true if valid.
pub fn validate(
    client: &Client,
    file: &Path,
    json: bool,
    out: &mut impl Write,
) -> Result<bool, ClientError> {
    let (kind, bytes, _) = read_policy_file(file)?;
    let (report, _) = client.json("POST", "/v1/policy/validate", Some((kind, &bytes)), &[])?;
    let valid = report["valid"].as_bool().unwrap_or(false);
    if json {
        writeln!(out, "{report}")?;
    } else {
        write_problems(out, &report)?;
        writeln!(
            out,
            "{}: {}",
            file.display(),
            if valid { "valid" } else { "INVALID" }
        )?;
    }
    Ok(valid)
}

/// Writes what an apply or rollback produced.
fn write_applied(out: &mut impl Write, applied: &Value, json: bool) -> Result<(), ClientError> {
    if json {
        return Ok(writeln!(out, "{applied}")?);
    }
    write_problems(out, applied)?;
    writeln!(
        out,
        "version {} in force: generation {}, {} classifier rules, swapped in {:.1} ms",
        applied["version"],
        applied["generation"],
        applied["classifier_rules"],
        applied["swap_seconds"].as_f64().unwrap_or(0.0) * 1000.0
    )?;
    Ok(())
}

/// `policy apply FILE [--if-match VERSION]`.
pub fn apply(
    client: &Client,
    file: &Path,
    if_match: Option<u64>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let (kind, bytes, _) = read_policy_file(file)?;
    let headers: Vec<(&str, String)> = if_match
        .map(|version| ("If-Match", format!("\"{version}\"")))
        .into_iter()
        .collect();
    let (applied, _) = client.json("PUT", "/v1/policy", Some((kind, &bytes)), &headers)?;
    write_applied(out, &applied, json)
}

/// `policy get`: the document in force (YAML, or JSON with `--json`).
pub fn get(client: &Client, json: bool, out: &mut impl Write) -> Result<(), ClientError> {
    let (document, etag) = client.json("GET", "/v1/policy", None, &[])?;
    if json {
        return Ok(writeln!(out, "{document}")?);
    }
    let yaml = serde_yaml::to_string(&document).map_err(|e| ClientError::Reply(e.to_string()))?;
    writeln!(out, "# version {}", etag.unwrap_or_default())?;
    write!(out, "{yaml}")?;
    Ok(())
}

/// `policy diff FILE`: what applying FILE would change. True if anything.
pub fn diff(client: &Client, file: &Path, out: &mut impl Write) -> Result<bool, ClientError> {
    let (_, _, proposed) = read_policy_file(file)?;
    let (current, etag) = client.json("GET", "/v1/policy", None, &[])?;
    let current: PolicyDocument =
        serde_json::from_value(current).map_err(|e| ClientError::Reply(e.to_string()))?;
    let render = |d: &PolicyDocument| serde_yaml::to_string(d).unwrap_or_default();
    let (before, after) = (render(&current), render(&proposed));
    writeln!(
        out,
        "version {} -> {}: {}",
        etag.unwrap_or_default(),
        file.display(),
        summary_of(&current, &proposed)
    )?;
    for line in line_diff(&before, &after) {
        writeln!(out, "{line}")?;
    }
    Ok(before != after)
}

/// `-`/`+` lines of a longest-common-subsequence diff (unchanged lines
/// are left out).
fn line_diff(before: &str, after: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    if a.len() * b.len() > 25_000_000 {
        return vec!["(too large for a line diff; see the summary above)".into()];
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", b[j]));
            j += 1;
        } else {
            out.push(format!("- {}", a[i]));
            i += 1;
        }
    }
    out
}

/// `policy history`.
pub fn history(client: &Client, json: bool, out: &mut impl Write) -> Result<(), ClientError> {
    let (versions, _) = client.json("GET", "/v1/policy/history", None, &[])?;
    if json {
        return Ok(writeln!(out, "{versions}")?);
    }
    writeln!(
        out,
        "{:>7}  {:>12}  {:<12}  summary",
        "version", "unix time", "author"
    )?;
    for v in versions.as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:>7}  {:>12}  {:<12}  {}",
            v["version"],
            v["created_at"],
            v["author"].as_str().unwrap_or(""),
            v["summary"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

/// `policy rollback VERSION`.
pub fn rollback(
    client: &Client,
    version: u64,
    json: bool,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let (applied, _) = client.json("POST", &format!("/v1/policy/rollback/{version}"), None, &[])?;
    write_applied(out, &applied, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_with_length_or_chunks_are_read() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"7\"\r\n\r\nhello";
        let reply = read_reply(&plain[..]).expect("reply");
        assert_eq!(
            (reply.status, reply.etag.as_deref(), &reply.body[..]),
            (200, Some("7"), &b"hello"[..])
        );
        let chunked = b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let reply = read_reply(&chunked[..]).expect("reply");
        assert_eq!((reply.status, &reply.body[..]), (409, &b"abcde"[..]));
        assert!(read_reply(&b"garbage"[..]).is_err());
    }

    #[test]
    fn line_diff_shows_changes_only() {
        let diff = line_diff("a\nb\nc\n", "a\nc\nd\n");
        assert_eq!(diff, ["- b", "+ d"]);
        assert!(line_diff("same\n", "same\n").is_empty());
    }

    #[test]
    fn urls_and_tokens() {
        assert!(Client::new("http://127.0.0.1:9870", "t".into(), None).is_ok());
        assert!(Client::new("http://127.0.0.1:9870/", "t".into(), None).is_ok());
        for bad in ["127.0.0.1:9870", "ftp://x:1", "http://", "http://h:1/v1"] {
            assert!(Client::new(bad, "t".into(), None).is_err(), "{bad}");
        }
        let dir = std::env::temp_dir().join(format!("microseg-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("t");
        std::fs::write(&file, "# tokens\nadmin alice abcdefabcdefabcdef\n").expect("write");
        assert_eq!(read_token(&file).expect("token"), "abcdefabcdefabcdef");
        std::fs::write(&file, "bare-token-value\n").expect("write");
        assert_eq!(read_token(&file).expect("token"), "bare-token-value");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
