//! The policy in force: one snapshot shared by every worker, which loads
//! it once per batch without a lock (`arc_swap`), and replaced whole by
//! the control plane (RCU style). Parts of the dataplane that keep their
//! own copy of "which generation is in force" (the XDP fast path's
//! `policy` map) watch the cell and are told of each new generation by
//! the thread that stores it, before `store` returns.

use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use super::PolicySnapshot;

type Watcher = (WatchId, Box<dyn Fn(u32) + Send + Sync>);

/// Names a watcher, to `unwatch` it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchId(u64);

/// The swappable policy snapshot.
pub struct PolicyCell {
    current: ArcSwap<PolicySnapshot>,
    /// Called with each new generation; the mutex also serializes stores.
    watchers: Mutex<Vec<Watcher>>,
    next_watch: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for PolicyCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCell")
            .field("generation", &self.load().generation)
            .finish_non_exhaustive()
    }
}

impl PolicyCell {
    pub fn new(snapshot: Arc<PolicySnapshot>) -> Self {
        Self {
            current: ArcSwap::new(snapshot),
            watchers: Mutex::new(Vec::new()),
            next_watch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn from_pointee(snapshot: PolicySnapshot) -> Self {
        Self::new(Arc::new(snapshot))
    }

    /// The snapshot in force (the workers' per-batch load).
    #[inline]
    pub fn load(&self) -> Guard<Arc<PolicySnapshot>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    /// Puts `snapshot` in force, then tells every watcher its generation.
    pub fn store(&self, snapshot: Arc<PolicySnapshot>) {
        let watchers = self.lock_watchers();
        let generation = snapshot.generation;
        self.current.store(snapshot);
        for (_, watcher) in watchers.iter() {
            watcher(generation);
        }
    }

    /// Calls `watcher` with the generation in force now, and with every
    /// generation stored from now on, until `unwatch`.
    pub fn watch(&self, watcher: impl Fn(u32) + Send + Sync + 'static) -> WatchId {
        let mut watchers = self.lock_watchers();
        let id = WatchId(
            self.next_watch
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        watcher(self.load().generation);
        watchers.push((id, Box::new(watcher)));
        id
    }

    pub fn unwatch(&self, id: WatchId) {
        self.lock_watchers().retain(|(watch, _)| *watch != id);
    }

    fn lock_watchers(&self) -> std::sync::MutexGuard<'_, Vec<Watcher>> {
        self.watchers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::pipeline::{Action, L2Policy};

    fn snapshot(generation: u32) -> Arc<PolicySnapshot> {
        Arc::new(
            PolicySnapshot::build(generation, vec![], Action::Deny, L2Policy::default())
                .expect("builds"),
        )
    }

    #[test]
    fn watchers_hear_the_generation_in_force_and_each_new_one_until_unwatched() {
        let cell = PolicyCell::new(snapshot(1));
        let heard = Arc::new(AtomicU32::new(0));
        let ear = Arc::clone(&heard);
        let id = cell.watch(move |generation| ear.store(generation, Ordering::Relaxed));
        assert_eq!(heard.load(Ordering::Relaxed), 1);
        cell.store(snapshot(2));
        assert_eq!(heard.load(Ordering::Relaxed), 2);
        assert_eq!(cell.load().generation, 2);
        cell.unwatch(id);
        cell.store(snapshot(3));
        assert_eq!(heard.load(Ordering::Relaxed), 2);
    }
}
