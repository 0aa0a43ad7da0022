//! `AlertHub`: where the appliance hands alerts over. `submit` rate-limits
//! the alert and puts a copy in every sink's bounded queue; it never
//! blocks on a receiver and never fails (what cannot be queued is counted
//! as dropped). One delivery thread per sink does the I/O. Shutdown
//! delivers what is queued until a deadline, then stops.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::AlertConfig;
use super::delivery::DeliveryWorker;
use super::queue::AlertQueue;
use super::rate_limit::{RateLimiter, DEFAULT_MAX_KEYS};
use super::rfc5424::SyslogOrigin;
use super::sinks;
use super::stats::{AlertStats, SinkCounters};
use super::Alert;

/// How long dropping a hub that was not shut down waits for queued alerts.
const DROP_GRACE: Duration = Duration::from_secs(2);

/// Why alert delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The configuration has problems: (field path, message).
    #[error("alerts configuration: {}", describe(problems))]
    Invalid { problems: Vec<(String, String)> },
    /// A sink could not be opened (a socket, the file).
    #[error("{sink}: {source}")]
    Open {
        sink: String,
        source: std::io::Error,
    },
    /// The delivery thread of a sink could not be started.
    #[error("{sink}: cannot start its delivery thread: {source}")]
    Spawn {
        sink: String,
        source: std::io::Error,
    },
}

fn describe(problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(field, message)| format!("{field}: {message}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Rate limiting and delivery of alerts to the configured sinks.
#[derive(Debug)]
pub struct AlertHub {
    limiter: Mutex<RateLimiter>,
    /// The rate limiter's clock: milliseconds since the hub started.
    started: Instant,
    sinks: Vec<RunningSink>,
}

#[derive(Debug)]
struct RunningSink {
    name: String,
    queue: Arc<AlertQueue>,
    counters: Arc<SinkCounters>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl AlertHub {
    /// Checks the configuration, opens every sink and starts their
    /// delivery threads. Receivers need not be up: a receiver that is down
    /// is a delivery failure, counted later.
    pub fn start(config: &AlertConfig) -> Result<AlertHub, AlertError> {
        let problems = config.check();
        if !problems.is_empty() {
            return Err(AlertError::Invalid { problems });
        }
        let origin = SyslogOrigin::this_process();
        let opened = config
            .sinks
            .iter()
            .map(|sink| sinks::open(sink, &origin))
            .collect::<Result<Vec<_>, _>>()?;
        let mut hub = AlertHub {
            limiter: Mutex::new(RateLimiter::new(config.rate_limit, DEFAULT_MAX_KEYS)),
            started: Instant::now(),
            sinks: Vec::with_capacity(opened.len()),
        };
        for sink in opened {
            // On error, dropping `hub` stops the threads already started.
            hub.sinks.push(run(sink, config.queue)?);
        }
        Ok(hub)
    }

    /// Hands an alert over: rate limit, then a copy into every sink's
    /// queue. Never waits for a receiver; an alert a full queue cannot
    /// take is counted as dropped for that sink.
    pub fn submit(&self, alert: Alert) {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let admitted = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit_alert(alert, now_ms);
        let Some(alert) = admitted else { return };
        for sink in &self.sinks {
            if !sink.queue.push(alert.clone()) {
                sink.counters.count_dropped(1);
            }
        }
    }

    /// Counters of every sink, and the alerts the rate limit held back.
    pub fn stats(&self) -> AlertStats {
        let suppressed = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total_suppressed();
        AlertStats {
            suppressed,
            sinks: self
                .sinks
                .iter()
                .map(|sink| sink.counters.snapshot(&sink.name, sink.queue.len()))
                .collect(),
        }
    }

    /// Stops accepting alerts, delivers what is queued until `deadline`
    /// (what is left then is counted as dropped) and ends the delivery
    /// threads. A thread still inside a send at the deadline is left to
    /// end on its own when that send times out.
    pub fn shutdown(&self, deadline: Instant) {
        for sink in &self.sinks {
            sink.queue.close(deadline);
        }
        for sink in &self.sinks {
            let worker = sink
                .worker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(worker) = worker {
                join_until(worker, deadline);
            }
        }
    }
}

impl Drop for AlertHub {
    fn drop(&mut self) {
        self.shutdown(Instant::now() + DROP_GRACE);
    }
}

/// Starts the sink's delivery thread.
fn run(sink: sinks::OpenedSink, queue_capacity: usize) -> Result<RunningSink, AlertError> {
    let queue = Arc::new(AlertQueue::new(queue_capacity));
    let counters = Arc::new(SinkCounters::default());
    let worker = DeliveryWorker {
        sink: sink.sink,
        retry: sink.retry,
        queue: Arc::clone(&queue),
        counters: Arc::clone(&counters),
    }
    .spawn(&sink.name)
    .map_err(|source| AlertError::Spawn {
        sink: sink.name.clone(),
        source,
    })?;
    Ok(RunningSink {
        name: sink.name,
        queue,
        counters,
        worker: Mutex::new(Some(worker)),
    })
}

/// Joins the thread if it ends by `deadline` (plus a moment for it to see
/// the deadline); otherwise leaves it detached.
fn join_until(worker: JoinHandle<()>, deadline: Instant) {
    let give_up = deadline + Duration::from_millis(100);
    while !worker.is_finished() && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
    if worker.is_finished() {
        // A panic in a delivery thread is a bug; it has nothing to return.
        let _ = worker.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_configuration_does_not_start() {
        let config: AlertConfig =
            serde_yaml::from_str("queue: 0\nsinks: [{syslog: {address: 'nowhere'}}]")
                .expect("parses");
        match AlertHub::start(&config) {
            Err(AlertError::Invalid { problems }) => {
                let text = AlertError::Invalid { problems }.to_string();
                assert!(text.contains("alerts.queue: must be at least 1"), "{text}");
                assert!(text.contains("alerts.sinks[0].syslog.address"), "{text}");
            }
            other => panic!("started: {other:?}"),
        }
    }

    #[test]
    fn a_hub_without_sinks_takes_alerts_and_counts_suppressed_ones() {
        let hub = AlertHub::start(&AlertConfig::default()).expect("starts");
        let alert = Alert {
            time_ms: 0,
            rule: Some("r".into()),
            src_addr: Some("10.0.0.1".into()),
            ..Alert::now(crate::alerts::AlertKind::Denied, 4, "denied".into())
        };
        for _ in 0..15 {
            hub.submit(alert.clone());
        }
        let stats = hub.stats();
        assert_eq!(stats.suppressed, 5, "burst 10 of 15");
        assert!(stats.sinks.is_empty());
    }
}
