//! The short spin lock of the packet path's sharded tables (conntrack's
//! slots, the MAC table's stations): a flag per shard, next to the data it
//! guards, where `std::sync::Mutex` would add a futex word and a locked
//! instruction on unlock too.
//!
//! Critical sections are a probe and a few words, or one shard's scan, so
//! a waiter spins briefly, then yields the core between tries: a holder
//! may be a preempted control-plane thread.

use std::sync::atomic::{AtomicBool, Ordering};

/// Spins on a busy flag before yielding the core.
const SPINS_BEFORE_YIELD: u32 = 64;

/// Takes the lock `flag` (true: held), waiting as long as it takes.
#[inline]
pub(crate) fn acquire(flag: &AtomicBool) {
    let mut spins = 0;
    while flag
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        while flag.load(Ordering::Relaxed) {
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Gives back the lock `flag` taken by `acquire`.
#[inline]
pub(crate) fn release(flag: &AtomicBool) {
    flag.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// Two threads adding through a non-atomic read-modify-write under the
    /// lock lose nothing: the lock excludes.
    #[test]
    fn the_lock_excludes() {
        let flag = AtomicBool::new(false);
        let total = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..100_000 {
                        acquire(&flag);
                        let value = total.load(Ordering::Relaxed);
                        std::hint::spin_loop();
                        total.store(value + 1, Ordering::Relaxed);
                        release(&flag);
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 200_000);
        assert!(!flag.load(Ordering::Relaxed), "released at the end");
    }
}
