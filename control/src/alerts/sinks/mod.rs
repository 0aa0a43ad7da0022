//! The receivers alerts go to. Each sink knows only how to send one
//! alert (`AlertSink::deliver`); the queue, retries and counters they
//! share are in `delivery`. Opening a sink does everything that can fail
//! because of the configuration or the machine (binding a socket,
//! opening the file) so that `AlertHub::start` reports it, while a
//! receiver that is down is only a delivery failure, retried later.

mod file;
mod syslog;
pub(crate) mod webhook;

use std::time::Duration;

use super::config::{receiver_address, SinkConfig, SyslogTransport};
use super::delivery::{AlertSink, RetryPolicy};
use super::hub::AlertError;
use super::rfc5424::SyslogOrigin;

/// A sink ready for its delivery thread.
pub(crate) struct OpenedSink {
    pub name: String,
    pub sink: Box<dyn AlertSink>,
    pub retry: RetryPolicy,
}

/// Opens the configured sink.
pub(crate) fn open(config: &SinkConfig, origin: &SyslogOrigin) -> Result<OpenedSink, AlertError> {
    let name = config.name();
    let invalid = |message: String| AlertError::Invalid {
        problems: vec![(name.clone(), message)],
    };
    let (sink, retry): (Box<dyn AlertSink>, RetryPolicy) = match config {
        SinkConfig::Syslog(syslog) => {
            let receiver = receiver_address(&syslog.address).map_err(invalid)?;
            let encoder = syslog::SyslogEncoder::new(origin.clone(), syslog.format);
            let retry = retry_policy(syslog.retries, syslog.backoff_ms);
            let sink: Box<dyn AlertSink> = match syslog.transport {
                SyslogTransport::Udp => Box::new(
                    syslog::SyslogUdp::open(receiver, encoder).map_err(|source| {
                        AlertError::Open {
                            sink: name.clone(),
                            source,
                        }
                    })?,
                ),
                SyslogTransport::Tcp => Box::new(syslog::SyslogTcp::new(receiver, encoder)),
            };
            (sink, retry)
        }
        SinkConfig::File(file) => {
            let sink =
                file::JsonLinesFile::open(&file.path).map_err(|source| AlertError::Open {
                    sink: name.clone(),
                    source,
                })?;
            (Box::new(sink), retry_policy(0, 1))
        }
        SinkConfig::Webhook(webhook) => {
            let url = webhook::HttpUrl::parse(&webhook.url).map_err(invalid)?;
            let timeout = Duration::from_millis(webhook.timeout_ms.max(1));
            (
                Box::new(webhook::Webhook::new(url, timeout)),
                retry_policy(webhook.retries, webhook.backoff_ms),
            )
        }
    };
    Ok(OpenedSink { name, sink, retry })
}

fn retry_policy(retries: u32, backoff_ms: u64) -> RetryPolicy {
    RetryPolicy {
        retries,
        first_backoff: Duration::from_millis(backoff_ms.max(1)),
    }
}
