//! Syslog senders: UDP, one datagram per alert (no delivery guarantee,
//! as with any syslog over UDP), and TCP, one long-lived connection with
//! RFC 6587 octet-counted frames, reconnected when it breaks. Both write
//! the same lines (`SyslogEncoder`).

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::alerts::config::SyslogFormat;
use crate::alerts::delivery::{AlertSink, DeliveryError};
use crate::alerts::rfc5424::{octet_counted, syslog_line, SyslogOrigin};
use crate::alerts::Alert;

/// Connecting to and writing to a TCP receiver, each.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Alerts as syslog lines.
pub(crate) struct SyslogEncoder {
    origin: SyslogOrigin,
    format: SyslogFormat,
}

impl SyslogEncoder {
    pub(crate) fn new(origin: SyslogOrigin, format: SyslogFormat) -> Self {
        Self { origin, format }
    }

    fn line(&self, alert: &Alert) -> String {
        syslog_line(alert, &self.origin, self.format)
    }
}

pub(crate) struct SyslogUdp {
    socket: UdpSocket,
    receiver: SocketAddr,
    encoder: SyslogEncoder,
}

impl SyslogUdp {
    /// Binds an ephemeral local port of the receiver's address family.
    pub(crate) fn open(receiver: SocketAddr, encoder: SyslogEncoder) -> std::io::Result<Self> {
        let local: SocketAddr = if receiver.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        Ok(Self {
            socket: UdpSocket::bind(local)?,
            receiver,
            encoder,
        })
    }
}

impl AlertSink for SyslogUdp {
    fn deliver(&mut self, alert: &Alert) -> Result<(), DeliveryError> {
        let line = self.encoder.line(alert);
        self.socket
            .send_to(line.as_bytes(), self.receiver)
            .map_err(DeliveryError::io("send datagram"))?;
        Ok(())
    }
}

pub(crate) struct SyslogTcp {
    receiver: SocketAddr,
    connection: Option<TcpStream>,
    encoder: SyslogEncoder,
}

impl SyslogTcp {
    /// Connects on the first alert, not before: a receiver that is down at
    /// start is a delivery failure, not a start failure.
    pub(crate) fn new(receiver: SocketAddr, encoder: SyslogEncoder) -> Self {
        Self {
            receiver,
            connection: None,
            encoder,
        }
    }

    /// The open connection, or a new one if there is none or the
    /// receiver closed it.
    fn connection(&mut self) -> Result<&mut TcpStream, DeliveryError> {
        if self.connection.as_ref().is_some_and(closed_by_peer) {
            self.connection = None;
        }
        let stream = match self.connection.take() {
            Some(stream) => stream,
            None => connect(self.receiver)?,
        };
        Ok(self.connection.insert(stream))
    }
}

fn connect(receiver: SocketAddr) -> Result<TcpStream, DeliveryError> {
    let stream =
        TcpStream::connect_timeout(&receiver, TCP_TIMEOUT).map_err(DeliveryError::io("connect"))?;
    stream
        .set_write_timeout(Some(TCP_TIMEOUT))
        .map_err(DeliveryError::io("set write timeout"))?;
    stream
        .set_nodelay(true)
        .map_err(DeliveryError::io("set nodelay"))?;
    Ok(stream)
}

/// Whether the receiver has closed the connection (or it broke): it
/// never sends, so a readable end-of-stream or an error means gone. Seen
/// before writing, this saves the alert a write into a dead connection
/// that would only fail on the next one.
fn closed_by_peer(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_err() || closed
}

impl AlertSink for SyslogTcp {
    fn deliver(&mut self, alert: &Alert) -> Result<(), DeliveryError> {
        let frame = octet_counted(&self.encoder.line(alert));
        let result = self
            .connection()?
            .write_all(frame.as_bytes())
            .map_err(DeliveryError::io("send"));
        if result.is_err() {
            self.connection = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertKind;
    use std::io::Read;
    use std::net::TcpListener;

    fn alert() -> Alert {
        Alert {
            time_ms: 0,
            ..Alert::now(AlertKind::Anomaly, 5, "new pair".into())
        }
    }

    /// Accepts one connection (failing after 5 s) and reads what it got.
    fn read_frame(listener: &TcpListener) -> String {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("no connection: {error}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buffer = [0u8; 4096];
        let read = stream.read(&mut buffer).expect("read");
        String::from_utf8_lossy(&buffer[..read]).to_string()
    }

    #[test]
    fn tcp_frames_are_octet_counted_and_a_closed_connection_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let receiver = listener.local_addr().expect("address");
        let encoder = SyslogEncoder::new(SyslogOrigin::new("fw1", 9), SyslogFormat::Rfc5424);
        let mut sink = SyslogTcp::new(receiver, encoder);

        sink.deliver(&alert()).expect("sent");
        // The first connection is accepted, read, and closed by the receiver.
        let frame = read_frame(&listener);
        let (length, line) = frame.split_once(' ').expect("LEN SP MSG");
        assert_eq!(length.parse::<usize>().ok(), Some(line.len()), "{frame}");
        assert!(line.ends_with("] new pair"), "{line}");

        // The next alert sees the close and goes over a new connection.
        std::thread::sleep(Duration::from_millis(50));
        sink.deliver(&alert()).expect("sent again");
        assert!(read_frame(&listener).ends_with("] new pair"));
    }

    #[test]
    fn a_refused_connection_is_a_delivery_error() {
        let receiver = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let encoder = SyslogEncoder::new(SyslogOrigin::new("fw1", 9), SyslogFormat::Cef);
        let mut sink = SyslogTcp::new(receiver, encoder);
        let error = sink.deliver(&alert()).expect_err("nobody listens");
        assert!(error.to_string().starts_with("connect: "), "{error}");
    }
}
