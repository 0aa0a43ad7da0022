//! The bounded queue between `AlertHub::submit` and one sink's delivery
//! thread. Pushing never waits: a full queue refuses the alert (the
//! caller counts it dropped), so a slow or dead receiver can cost at most
//! `capacity` alerts of memory and never stalls the code raising alerts.
//! It also carries the shutdown deadline, so a delivery thread sleeping
//! between retries wakes when the hub closes.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Alert;

#[derive(Debug)]
pub(crate) struct AlertQueue {
    capacity: usize,
    state: Mutex<QueueState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    alerts: VecDeque<Alert>,
    /// Set by `close`: deliver what is queued until then, then stop.
    closing_deadline: Option<Instant>,
}

impl QueueState {
    fn past_deadline(&self) -> bool {
        self.closing_deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

impl AlertQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(QueueState::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the alert; false (alert discarded) when full or closed.
    pub(crate) fn push(&self, alert: Alert) -> bool {
        let mut state = self.lock();
        if state.closing_deadline.is_some() || state.alerts.len() >= self.capacity {
            return false;
        }
        state.alerts.push_back(alert);
        drop(state);
        self.changed.notify_one();
        true
    }

    /// The next alert, waiting for one; None once the queue is closed and
    /// empty, or closed and past its deadline.
    pub(crate) fn next(&self) -> Option<Alert> {
        let mut state = self.lock();
        loop {
            if state.past_deadline() {
                return None;
            }
            if let Some(alert) = state.alerts.pop_front() {
                return Some(alert);
            }
            if state.closing_deadline.is_some() {
                return None;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Sleeps `delay` (between retries); false, early, if the queue is
    /// closed and its deadline comes first.
    pub(crate) fn pause(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        let mut state = self.lock();
        loop {
            if state.past_deadline() {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            let wake = match state.closing_deadline {
                Some(deadline) => until.min(deadline),
                None => until,
            };
            state = self
                .changed
                .wait_timeout(state, wake.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Refuses new alerts; the delivery thread empties the queue until
    /// `deadline`.
    pub(crate) fn close(&self, deadline: Instant) {
        let mut state = self.lock();
        state.closing_deadline = Some(state.closing_deadline.map_or(deadline, |d| d.min(deadline)));
        drop(state);
        self.changed.notify_all();
    }

    /// Empties the queue; how many alerts it held.
    pub(crate) fn discard_all(&self) -> usize {
        let mut state = self.lock();
        let count = state.alerts.len();
        state.alerts.clear();
        count
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().alerts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertKind;
    use std::sync::Arc;

    fn alert(n: u64) -> Alert {
        Alert {
            time_ms: n,
            ..Alert::now(AlertKind::Anomaly, 5, format!("alert {n}"))
        }
    }

    #[test]
    fn a_full_queue_refuses_without_waiting() {
        let queue = AlertQueue::new(2);
        assert!(queue.push(alert(1)));
        assert!(queue.push(alert(2)));
        assert!(!queue.push(alert(3)));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.next().map(|a| a.time_ms), Some(1));
    }

    #[test]
    fn a_closed_queue_hands_out_what_it_holds_then_ends() {
        let queue = AlertQueue::new(4);
        assert!(queue.push(alert(1)));
        queue.close(Instant::now() + Duration::from_secs(60));
        assert!(!queue.push(alert(2)), "closed queues refuse alerts");
        assert_eq!(queue.next().map(|a| a.time_ms), Some(1));
        assert_eq!(queue.next(), None);
    }

    #[test]
    fn past_the_deadline_nothing_more_is_handed_out() {
        let queue = AlertQueue::new(4);
        assert!(queue.push(alert(1)));
        queue.close(Instant::now());
        assert_eq!(queue.next(), None);
        assert_eq!(queue.discard_all(), 1);
    }

    #[test]
    fn closing_wakes_a_waiting_reader_and_a_pause() {
        let queue = Arc::new(AlertQueue::new(4));
        let reader = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.next())
        };
        let sleeper = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.pause(Duration::from_secs(600)))
        };
        std::thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        queue.close(Instant::now());
        assert_eq!(reader.join().expect("reader"), None);
        assert!(!sleeper.join().expect("sleeper"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_pause_lasts_its_delay_while_open() {
        let queue = AlertQueue::new(1);
        let started = Instant::now();
        assert!(queue.pause(Duration::from_millis(30)));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
