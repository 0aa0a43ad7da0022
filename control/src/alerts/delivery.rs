//! The one delivery loop every sink runs on its own thread: take the next
//! alert from the sink's queue, try to deliver it, retry with exponential
//! backoff, count the outcome. Sinks only say how to send one alert
//! (`AlertSink`); queueing, retries, counting and shutdown live here once.
//! Nothing in it panics on a receiver's behaviour: every failure becomes
//! a counter and `last_error`.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::config::BACKOFF_CAP;
use super::queue::AlertQueue;
use super::stats::SinkCounters;
use super::Alert;

/// Sends one alert to one receiver.
pub(crate) trait AlertSink: Send {
    fn deliver(&mut self, alert: &Alert) -> Result<(), DeliveryError>;
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
    #[error("the receiver answered HTTP {0}")]
    HttpStatus(u16),
    #[error("the receiver's answer is not HTTP: {0:?}")]
    NotHttp(String),
    #[error("cannot encode the alert: {0}")]
    Encode(String),
}

impl DeliveryError {
    pub(crate) fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| DeliveryError::Io { action, source }
    }

    /// Another attempt could succeed (the alert itself is not the problem).
    fn is_transient(&self) -> bool {
        !matches!(self, DeliveryError::Encode(_))
    }
}

/// How often and how patiently a failed alert is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// The delay before the first retry; each next one doubles.
    pub first_backoff: Duration,
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0 is the first retry):
    /// `first_backoff × 2^retry`, at most `BACKOFF_CAP`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.first_backoff
            .checked_mul(factor)
            .unwrap_or(BACKOFF_CAP)
            .min(BACKOFF_CAP)
    }
}

/// Everything one delivery thread works with.
pub(crate) struct DeliveryWorker {
    pub sink: Box<dyn AlertSink>,
    pub retry: RetryPolicy,
    pub queue: Arc<AlertQueue>,
    pub counters: Arc<SinkCounters>,
}

impl DeliveryWorker {
    /// Starts the thread, named after the sink.
    pub(crate) fn spawn(self, sink_name: &str) -> std::io::Result<JoinHandle<()>> {
        // Thread names are cut at 15 bytes by the kernel; keep it short.
        let thread_name: String = format!("alerts {sink_name}").chars().take(15).collect();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || self.run())
    }

    fn run(mut self) {
        while let Some(alert) = self.queue.next() {
            self.deliver_with_retries(&alert);
        }
        let left = self.queue.discard_all();
        self.counters.count_dropped(left as u64);
    }

    fn deliver_with_retries(&mut self, alert: &Alert) {
        let mut retry = 0;
        loop {
            let error = match self.sink.deliver(alert) {
                Ok(()) => {
                    self.counters.count_sent();
                    return;
                }
                Err(error) => error,
            };
            let worth_another_try = error.is_transient() && retry < self.retry.retries;
            self.counters.record_error(error.to_string());
            if !worth_another_try || !self.queue.pause(self.retry.backoff(retry)) {
                self.counters.count_failed();
                return;
            }
            self.counters.count_retry();
            retry += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertKind;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Fails its first `failures` attempts, then records what it got.
    struct FlakySink {
        failures: u32,
        delivered: Arc<Mutex<Vec<u64>>>,
    }

    impl AlertSink for FlakySink {
        fn deliver(&mut self, alert: &Alert) -> Result<(), DeliveryError> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(DeliveryError::HttpStatus(503));
            }
            self.delivered
                .lock()
                .expect("not poisoned")
                .push(alert.time_ms);
            Ok(())
        }
    }

    fn alert(n: u64) -> Alert {
        Alert {
            time_ms: n,
            ..Alert::now(AlertKind::Cut, 4, String::new())
        }
    }

    fn run(failures: u32, retries: u32, alerts: u64) -> (Vec<u64>, Arc<SinkCounters>) {
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(AlertQueue::new(16));
        let counters = Arc::new(SinkCounters::default());
        for n in 0..alerts {
            assert!(queue.push(alert(n)));
        }
        queue.close(Instant::now() + Duration::from_secs(30));
        DeliveryWorker {
            sink: Box::new(FlakySink {
                failures,
                delivered: Arc::clone(&delivered),
            }),
            retry: RetryPolicy {
                retries,
                first_backoff: Duration::from_millis(1),
            },
            queue,
            counters: Arc::clone(&counters),
        }
        .run();
        let delivered = delivered.lock().expect("not poisoned").clone();
        (delivered, counters)
    }

    #[test]
    fn failures_are_retried_until_delivered() {
        let (delivered, counters) = run(2, 3, 2);
        assert_eq!(delivered, [0, 1]);
        let stats = counters.snapshot("test", 0);
        assert_eq!((stats.sent, stats.failed, stats.retries), (2, 0, 2));
        assert_eq!(
            stats.last_error.as_deref(),
            Some("the receiver answered HTTP 503")
        );
    }

    #[test]
    fn an_alert_is_given_up_after_its_retries_and_the_next_goes() {
        let (delivered, counters) = run(3, 2, 2);
        assert_eq!(delivered, [1]);
        let stats = counters.snapshot("test", 0);
        assert_eq!((stats.sent, stats.failed, stats.retries), (1, 1, 2));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            retries: 100,
            first_backoff: Duration::from_millis(200),
        };
        assert_eq!(policy.backoff(0), Duration::from_millis(200));
        assert_eq!(policy.backoff(1), Duration::from_millis(400));
        assert_eq!(policy.backoff(3), Duration::from_millis(1600));
        assert_eq!(policy.backoff(8), BACKOFF_CAP);
        assert_eq!(policy.backoff(99), BACKOFF_CAP);
    }
}
