//! Acks combined by the holder of the core lock.
//!
//! An [`ack`](super::Queue::ack) that finds the core lock taken does not queue up
//! on it: it leaves its receipt (and its frame, encoded before) in
//! `QueueInner::waiting_acks` and waits for its own flag. Whoever holds the core
//! lock settles every waiting ack before it unlocks (`QueueInner::unlock`), with
//! the state's cache lines already on its core, instead of handing the lock and
//! those lines to each acker in turn. An acker that sees the lock free before its
//! flag is set takes the lock and settles the waiting acks itself (its own among
//! them), so no ack depends on another call coming by.
//!
//! Each ack is settled exactly as an uncontended one: checked against the current
//! lease, its own journal frame written into the mapping, then applied, all under
//! the core lock (`QueueInner::settle_locked`). The flag is set only after that, so
//! an `ack` still returns only once its frame is written to the OS (kept across a
//! kill -9), and a stale receipt is still `StaleReceipt`. Nothing on disk changes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::journal::{self, Kind};
use super::{Core, QueueInner, Receipt};
use crate::Result;

/// An ack waiting for the holder of the core lock.
#[derive(Debug)]
pub(super) struct WaitingAck {
    receipt: Receipt,
    frame: [u8; journal::FRAME_HEADER + journal::EVENT_LEN],
    done: AtomicBool,
    result: Mutex<Option<Result<()>>>,
}

/// The acks waiting for the holder of the core lock.
#[derive(Debug, Default)]
pub(super) struct WaitingAcks {
    /// How many are in `list` (read without its lock by every unlock).
    count: AtomicUsize,
    list: Mutex<Vec<Arc<WaitingAck>>>,
}

/// Spins on the flag before yielding the CPU between looks.
const SPINS: u32 = 64;

impl QueueInner {
    /// [`Queue::ack`](super::Queue::ack): settles `receipt` under the core lock if it
    /// is free, else leaves it to the lock's holder (see the module notes).
    pub(super) fn ack_combined(
        &self,
        receipt: &Receipt,
        frame: [u8; journal::FRAME_HEADER + journal::EVENT_LEN],
    ) -> Result<()> {
        if let Some(core) = self.core.try_lock() {
            return self.ack_holding(core, receipt, &frame);
        }
        let me = Arc::new(WaitingAck {
            receipt: *receipt,
            frame,
            done: AtomicBool::new(false),
            result: Mutex::new(None),
        });
        {
            let mut list = self.waiting_acks.list.lock();
            list.push(Arc::clone(&me));
            self.waiting_acks.count.store(list.len(), Ordering::Release);
        }
        let mut looks = 0u32;
        loop {
            if me.done.load(Ordering::Acquire) {
                // Set before the flag: always there.
                if let Some(r) = me.result.lock().take() {
                    return r;
                }
            }
            if let Some(core) = self.core.try_lock() {
                // The holder left before it saw this ack: settle the waiting ones
                // (this one among them) here.
                self.unlock(core, None);
                continue;
            }
            looks += 1;
            if looks < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// An ack with the core lock held from the start.
    fn ack_holding(
        &self,
        mut core: parking_lot::MutexGuard<'_, Core>,
        receipt: &Receipt,
        frame: &[u8; journal::FRAME_HEADER + journal::EVENT_LEN],
    ) -> Result<()> {
        let ack = |_: &dyn Fn() -> i64, _: &mut Core| Ok((Kind::Ack, 0));
        let (_, was_at_cap) = self.settle_locked(&mut core, receipt, Some(frame), ack)?;
        self.unlock(core, None);
        if was_at_cap {
            self.wake_released(1);
        }
        Ok(())
    }

    /// Under the core lock: settles every waiting ack and sets its flag; returns
    /// how many leases that ended while the queue was at `max_in_flight` (the caller
    /// wakes receivers once unlocked).
    pub(super) fn settle_waiting_acks(&self, core: &mut Core) -> u64 {
        if self.waiting_acks.count.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let waiting = {
            let mut list = self.waiting_acks.list.lock();
            self.waiting_acks.count.store(0, Ordering::Release);
            std::mem::take(&mut *list)
        };
        let mut released = 0;
        for w in waiting {
            let ack = |_: &dyn Fn() -> i64, _: &mut Core| Ok((Kind::Ack, 0));
            let r = self.settle_locked(core, &w.receipt, Some(&w.frame), ack);
            if matches!(r, Ok((_, true))) {
                released += 1;
            }
            *w.result.lock() = Some(r.map(|_| ()));
            w.done.store(true, Ordering::Release);
        }
        released
    }
}
