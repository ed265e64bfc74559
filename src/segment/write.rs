//! The write side of a segment: appending a batch into the active segment's mapping,
//! allocating ahead of the writer (the preparer), sealing and fsyncing.

use std::sync::atomic::Ordering;

use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Segment;
use crate::batch;
use crate::fs::Mapping;
use crate::index;
use crate::{Error, Offset, Result};

/// Whether a batch written into the active segment is published: asked once it is
/// written, under the append lock (see `Log::append_refs_if`).
pub(crate) trait Decision {
    /// False for a plain append (always published: nothing withheld, nothing asked).
    const ASKS: bool;
    /// Memory only: it runs under the append lock.
    fn publish(&mut self) -> bool;
}

/// A plain append: always published.
pub(crate) struct Publish;

impl Decision for Publish {
    const ASKS: bool = false;
    fn publish(&mut self) -> bool {
        true
    }
}

impl<F: FnMut() -> bool> Decision for F {
    const ASKS: bool = true;
    fn publish(&mut self) -> bool {
        self()
    }
}

/// Spins of an appender waiting for its turn before it sleeps (about 30 µs on
/// the test machine; the usual wait is well under one). Measured with two
/// appending threads of 100 B records on the 2-core machine: 200 spins or none
/// gave 3.7 M/s (medians of 9), 3,000 gave 4.1 M/s: sleeping sooner costs a wake-up
/// and often the core, to another process.
const TURN_SPINS: u32 = 3_000;

/// How long a sleeping appender waits before looking at `stop` again (it is woken
/// by the publication before it, normally).
const TURN_SLEEP: Duration = Duration::from_millis(1);

/// Where appenders waiting for their turn to publish sleep (see
/// [`Segment::wait_settled`]): one per log, not per segment, so that waking them
/// touches nothing of the segment after its turn passed (it may be gone by then).
#[derive(Debug, Default)]
pub(crate) struct TurnWaiters {
    sleepers: std::sync::atomic::AtomicU32,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Segment {
    /// Lets `fill` write a batch of `len` bytes at `position` straight into the
    /// mapping, without publishing it: the space `[position, position + len)` was
    /// reserved under the append lock, past the published end, so no reader and no
    /// other appender touches it meanwhile (several appenders may be writing their
    /// own reservations at once). With `withhold`, the batch's CRC field holds the
    /// CRC's complement (see [`batch::withhold_crc`]) and the CRC is returned, to be
    /// put back with [`Segment::restore_crc`] once the batch is to be published.
    pub fn write_reserved(
        &self,
        map: &dyn Mapping,
        position: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
        withhold: bool,
    ) -> Result<Option<[u8; 4]>> {
        let pos = usize::try_from(position).expect("positions fit in usize (capacity checked)");
        let mut fill = Some(fill);
        let mut filled = Ok(());
        let mut crc = None;
        map.write_with(pos, len, &mut |buf| {
            if let Some(fill) = fill.take() {
                filled = fill(buf);
                if withhold && filled.is_ok() {
                    crc = Some(batch::withhold_crc(buf));
                }
            }
        })
        .map_err(|e| Error::io("write segment", self.path(), e))?;
        filled?;
        Ok(crc)
    }

    /// [`Segment::write_reserved`] of a batch encoded as parts (its large values
    /// borrowed, see [`batch::Scattered`]), for a mapping that
    /// [`Mapping::wants_parts`]: one vectored write, each byte copied once.
    pub fn write_reserved_parts(
        &self,
        map: &dyn Mapping,
        position: u64,
        batch: &batch::Scattered<'_>,
    ) -> Result<()> {
        let pos = usize::try_from(position).expect("positions fit in usize (capacity checked)");
        let parts: Vec<&[u8]> = batch.parts().collect();
        map.write_parts(pos, &parts)
            .map_err(|e| Error::io("write segment", self.path(), e))
    }

    /// Puts back the CRC withheld by [`Segment::write_reserved`] for the batch at
    /// `position`: it decodes from now on.
    pub fn restore_crc(&self, map: &dyn Mapping, position: u64, crc: [u8; 4]) -> Result<()> {
        let pos = usize::try_from(position).expect("positions fit in usize (capacity checked)");
        map.write(pos + batch::CRC_FIELD.start, &crc)
            .map_err(|e| Error::io("write segment", self.path(), e))
    }

    /// The end of the batches whose publication is complete (see
    /// [`Segment::pass_turn`]): the position of the batch whose turn it is to be
    /// published.
    pub fn settled(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    /// Waits until every batch below `position` is published completely
    /// ([`Segment::settled`] has reached it). Bounded: `stop` is asked between
    /// waits, and a failed or abandoned reservation poisons the log (which `stop`
    /// reports), so a waiter never waits for a batch that will never come.
    pub fn wait_settled(
        &self,
        position: u64,
        turn: &TurnWaiters,
        stop: impl Fn() -> Result<()>,
    ) -> Result<()> {
        // Spin a little: the batch before is usually being encoded on the other
        // core and is published within a microsecond or two.
        for _ in 0..TURN_SPINS {
            if self.settled() >= position {
                return Ok(());
            }
            std::hint::spin_loop();
        }
        // Then sleep until woken by the publication (its publisher may be waiting
        // for a core: spinning on would take it away), looking at `stop` now and
        // then.
        loop {
            stop()?;
            let mut parked = turn.lock.lock();
            turn.sleepers.fetch_add(1, Ordering::SeqCst);
            // Looked at again after counting in (SeqCst, as in `pass_turn`): a
            // publication either sees this sleeper or is seen here.
            let reached = self.settled.load(Ordering::SeqCst) >= position;
            if !reached {
                turn.wake.wait_for(&mut parked, TURN_SLEEP);
            }
            turn.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(parked);
            if reached || self.settled() >= position {
                return Ok(());
            }
        }
    }

    /// Publishes the batch of `len` bytes written at `position`, which must be the
    /// published end (its turn: [`Segment::wait_settled`] of `position` returned):
    /// readers see it from now on. Then indexes it if asked. The turn passes to the
    /// next batch only with [`Segment::pass_turn`], so these stores are made by one
    /// publisher at a time, in position order.
    pub fn publish(
        &self,
        position: u64,
        len: usize,
        batch_meta: (Offset, Offset, i64, i64),
        index_entry_ts: Option<i64>,
    ) {
        let (first_offset, next_offset, max_ts, append_time) = batch_meta;
        debug_assert_eq!(position, self.published());
        debug_assert_eq!(position, self.settled());
        let pos = usize::try_from(position).expect("positions fit in usize (capacity checked)");
        debug_assert!(self.handles.with_map(|map| map.is_some_and(|map| {
            batch::decode(map.bytes(pos, pos + len)).is_ok_and(|b| b.base_offset == first_offset)
        })));
        let end = position + len as u64;
        // Publish before indexing, so an index entry never points past the published end.
        self.published.store(end, Ordering::Release);
        self.next_offset.store(next_offset, Ordering::Release);
        // One publisher at a time (the turn): plain loads and stores, no
        // read-modify-write.
        if max_ts > self.max_timestamp.load(Ordering::Relaxed) {
            self.max_timestamp.store(max_ts, Ordering::Release);
        }
        if append_time > self.max_append_time.load(Ordering::Relaxed) {
            self.max_append_time.store(append_time, Ordering::Release);
        }
        if self.first_append_time.load(Ordering::Relaxed) == i64::MIN {
            self.first_append_time.store(append_time, Ordering::Release);
        }
        self.last_offset.store(next_offset - 1, Ordering::Release);
        if let Some(ts) = index_entry_ts {
            let rel = index::relative(self.base_offset, first_offset)
                .expect("the writer rolls before relative offsets overflow u32");
            let pos32 = u32::try_from(position).expect("segment capacity fits u32");
            let mut loaded = self.loaded.write();
            loaded
                .as_mut()
                .expect("the active segment's indexes are always loaded")
                .indexes
                .push(rel, pos32, ts);
        }
    }

    /// Ends the publication of the batch that ends at `end`: the next batch's turn.
    /// Wakes the appenders asleep in [`Segment::wait_settled`], if any (one load
    /// when there are none).
    pub fn pass_turn(&self, end: u64, turn: &TurnWaiters) {
        // The last touch of the segment: once its turn has passed, a roll may replace
        // it and retention drop it.
        self.settled.store(end, Ordering::SeqCst);
        if turn.sleepers.load(Ordering::SeqCst) > 0 {
            let _parked = turn.lock.lock();
            turn.wake.notify_all();
        }
    }

    /// [`Segment::pass_turn`] when no appender can be asleep waiting for the turn
    /// (the caller holds the append lock and waited for every batch before it): one
    /// release store, no full fence, no look at the sleepers.
    pub fn pass_turn_unwatched(&self, end: u64) {
        self.settled.store(end, Ordering::Release);
    }

    /// Seals the active segment: file cut to its data, index files written. It stays
    /// pinned (open) until its fsync ([`Segment::sync`]).
    pub fn seal(&self) -> Result<()> {
        let mut no_growth = self.no_growth.lock();
        *no_growth = true;
        self.sealed.store(true, Ordering::Release);
        self.file()?
            .set_len(self.published())
            .map_err(|e| Error::io("truncate segment", self.path(), e))?;
        let loaded = self.loaded.read();
        if let Some(l) = loaded.as_ref() {
            // The atomic, not `l.meta`: appends keep the atomics up to date.
            let max_append_time = self.max_append_time.load(Ordering::Acquire);
            self.write_index_files(&l.indexes, max_append_time)?;
        }
        // Read through `mapping()` from now on: once released, it comes back read-only.
        self.mapped_writable.store(false, Ordering::Release);
        Ok(())
    }

    /// The preparer: grows the (active) segment's file to `len` bytes of allocated
    /// space, unless it has been sealed meanwhile. The writer learns of the space
    /// through [`Segment::allocated_ahead`].
    pub fn allocate_ahead(&self, len: u64) -> Result<()> {
        let no_growth = self.no_growth.lock();
        if *no_growth {
            return Ok(());
        }
        self.file()?
            .allocate(len)
            .map_err(|e| Error::io("allocate segment", self.path(), e))?;
        self.allocated_ahead.fetch_max(len, Ordering::AcqRel);
        Ok(())
    }

    /// Writer only: notes that the space up to `len` is being asked for ahead; false
    /// when it was asked for already.
    pub fn ask_ahead(&self, len: u64) -> bool {
        self.asked_ahead.fetch_max(len, Ordering::AcqRel) < len
    }

    /// Bytes the preparer has allocated (0 when it has not).
    pub fn allocated_ahead(&self) -> u64 {
        self.allocated_ahead.load(Ordering::Acquire)
    }

    /// fsyncs the `.log` file. The first fsync after a roll sealed the segment hands
    /// it to the cache of open segments (until then it is pinned: its data must be
    /// fsynced through the descriptor it was written through).
    pub fn sync(&self) -> Result<()> {
        let _slow = crate::trace::SlowFsync::watch(|| self.path());
        self.file()?
            .sync_data()
            .map_err(|e| Error::io("sync segment", self.path(), e))?;
        if self.sealed.swap(false, Ordering::AcqRel) && self.handles.unpin() {
            self.cache.admit(&self.handles);
        }
        Ok(())
    }
}
