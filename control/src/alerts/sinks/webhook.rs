//! Alerts POSTed as JSON to an HTTP endpoint (a SOAR, a chat bridge, a
//! SIEM's HTTP collector), one request per alert, over a plain
//! `TcpStream` with a timeout on every step. A 2xx answer is delivery;
//! anything else is a failure that `delivery` retries. Plain `http://`
//! only for now.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::alerts::delivery::{AlertSink, DeliveryError};
use crate::alerts::format::json_line;
use crate::alerts::Alert;

/// The most of an answer read looking for its status line.
const MAX_ANSWER_HEAD: usize = 16 * 1024;

/// `http://HOST[:PORT][/PATH]`, checked so that it cannot break the
/// request it is written into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    /// As written: a name, an IPv4 address or a bracketed IPv6 address.
    host: String,
    port: u16,
    /// Starts with `/`; may hold a query.
    path: String,
}

impl HttpUrl {
    /// The URL, or why it is not one we can POST to.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("https://") {
            return Err(format!("`{text}`: https is not supported yet; use http://"));
        }
        let Some(rest) = text.strip_prefix("http://") else {
            return Err(format!("`{text}` is not an http://host:port/path URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, "/"),
        };
        if path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
        {
            return Err(format!(
                "`{text}`: the path may not hold spaces, control characters or a #fragment"
            ));
        }
        let (host, port) = split_host_port(authority).map_err(|why| format!("`{text}`: {why}"))?;
        Ok(Self {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `host:port`, for the Host header and for resolving.
    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

fn split_host_port(authority: &str) -> Result<(&str, u16), &'static str> {
    if authority.contains('@') {
        return Err("user names and passwords in the URL are not supported");
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed
                .split_once(']')
                .ok_or("an IPv6 address needs its closing ]")?;
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("not an IPv6 address between [ ]");
            }
            let host = &authority[..address.len() + 2];
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or("junk after ]")?)),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    if !host_ok {
        return Err("no valid host name or address");
    }
    let port = match port {
        None => 80,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err("the port is not 1 to 65535"),
        },
    };
    Ok((host, port))
}

pub(crate) struct Webhook {
    url: HttpUrl,
    timeout: Duration,
}

impl Webhook {
    pub(crate) fn new(url: HttpUrl, timeout: Duration) -> Self {
        Self { url, timeout }
    }

    fn request(&self, body: &str) -> String {
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: microseg/{}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.url.path,
            self.url.authority(),
            env!("CARGO_PKG_VERSION"),
            body.len()
        )
    }

    fn connect(&self) -> Result<TcpStream, DeliveryError> {
        let addresses: Vec<SocketAddr> = self
            .url
            .authority()
            .to_socket_addrs()
            .map_err(DeliveryError::io("resolve"))?
            .collect();
        let mut last_error =
            std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address");
        for address in addresses {
            match TcpStream::connect_timeout(&address, self.timeout) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(self.timeout))
                        .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
                        .map_err(DeliveryError::io("set timeouts"))?;
                    return Ok(stream);
                }
                Err(error) => last_error = error,
            }
        }
        Err(DeliveryError::Io {
            action: "connect",
            source: last_error,
        })
    }
}

impl AlertSink for Webhook {
    fn deliver(&mut self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = json_line(alert).map_err(|e| DeliveryError::Encode(e.to_string()))?;
        let mut stream = self.connect()?;
        stream
            .write_all(self.request(body.trim_end()).as_bytes())
            .map_err(DeliveryError::io("send request"))?;
        let status = read_status(&mut stream)?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(DeliveryError::HttpStatus(status))
        }
    }
}

/// Reads the answer's head up to its status line's end and returns the
/// status code.
fn read_status(stream: &mut impl Read) -> Result<u16, DeliveryError> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_ANSWER_HEAD {
        let read = stream
            .read(&mut chunk)
            .map_err(DeliveryError::io("read answer"))?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    parse_status_line(&head)
}

/// `HTTP/1.x NNN …` → NNN.
fn parse_status_line(head: &[u8]) -> Result<u16, DeliveryError> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|code| {
        (code.len() == 3)
            .then(|| code.parse::<u16>().ok())
            .flatten()
    });
    match status {
        Some(status) if version.starts_with("HTTP/1.") => Ok(status),
        _ => Err(DeliveryError::NotHttp(line.chars().take(80).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_and_without_port_and_path() {
        let url = HttpUrl::parse("http://127.0.0.1:8080/hook?x=1").expect("valid");
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 8080, "/hook?x=1")
        );
        let url = HttpUrl::parse("http://siem.example").expect("valid");
        assert_eq!(url.to_string(), "http://siem.example:80/");
        let url = HttpUrl::parse("http://[::1]:9000/a/b").expect("valid");
        assert_eq!(url.authority(), "[::1]:9000");
    }

    #[test]
    fn urls_that_could_not_be_posted_to_are_refused() {
        for (url, why) in [
            ("https://siem.example/hook", "https is not supported yet"),
            ("ftp://siem.example/", "not an http://"),
            ("siem.example:80/hook", "not an http://"),
            ("http://:80/hook", "no valid host"),
            ("http://a b/hook", "no valid host"),
            ("http://host:0/", "port"),
            ("http://host:99999/", "port"),
            ("http://host:x/", "port"),
            ("http://user:pw@host/", "user names"),
            ("http://[::1/", "closing ]"),
            ("http://[nope]:1/", "IPv6"),
            ("http://host/a b", "spaces"),
            ("http://host/a\r\nX-Injected: 1", "control characters"),
        ] {
            let error = HttpUrl::parse(url).expect_err(url);
            assert!(error.contains(why), "{url}: {error}");
        }
    }

    #[test]
    fn the_request_is_a_json_post() {
        let hook = Webhook::new(
            HttpUrl::parse("http://127.0.0.1:8080/hook").expect("valid"),
            Duration::from_secs(1),
        );
        let request = hook.request("{\"a\":1}");
        assert!(request.starts_with("POST /hook HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(request.contains("\r\nContent-Type: application/json\r\n"));
        assert!(request.ends_with("Content-Length: 7\r\nConnection: close\r\n\r\n{\"a\":1}"));
    }

    #[test]
    fn status_lines_are_read_and_junk_refused() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 204 No Content\r\n").ok(),
            Some(204)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 500 Oops\r\n\r\n").ok(),
            Some(500)
        );
        assert!(parse_status_line(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_status_line(b"").is_err());
        assert!(parse_status_line(b"HTTP/1.1 20000 x\r\n").is_err());
        let mut answer: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(read_status(&mut answer).ok(), Some(200));
    }
}
