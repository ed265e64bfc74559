//! The write side of a segment: appending a batch into the active segment's mapping,
//! allocating ahead of the writer (the preparer), sealing and fsyncing.

use std::sync::atomic::Ordering;

use super::Segment;
use crate::batch;
use crate::index;
use crate::{Error, Offset, Result};

/// Whether a batch written into the active segment is published: asked once it is
/// written, under the append lock (see [`Segment::append_with`]).
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

impl Segment {
    /// Writer only: lets `fill` write a batch of `len` bytes at `position` (the
    /// published end) straight into the mapping, and publishes it (unless `fill`
    /// failed), then indexes it if the interval has passed.
    ///
    /// A [`Decision`] that asks: the batch is written with its CRC withheld (see
    /// [`batch::withhold_crc`]), `decide` is asked, and only a yes puts the CRC back
    /// and publishes: a no leaves bytes past the published end that never decode
    /// (recovery cuts them as a torn tail; the next append overwrites them). False
    /// when `decide` said no.
    pub fn append_with<D: Decision>(
        &self,
        position: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
        decide: &mut D,
        batch_meta: (Offset, Offset, i64, i64),
        index_entry_ts: Option<i64>,
    ) -> Result<bool> {
        let (first_offset, next_offset, max_ts, append_time) = batch_meta;
        debug_assert_eq!(position, self.published());
        let pos = usize::try_from(position).expect("positions fit in usize (capacity checked)");
        let mut fill = Some(fill);
        let mut filled = Ok(());
        let mut crc = None;
        let decided = self
            .handles
            .with_map(|map| {
                let map = map.expect("the active segment is mapped and pinned");
                map.write_with(pos, len, &mut |buf| {
                    if let Some(fill) = fill.take() {
                        filled = fill(buf);
                        if D::ASKS && filled.is_ok() {
                            crc = Some(batch::withhold_crc(buf));
                        }
                    }
                })?;
                let Some(crc) = crc else {
                    return Ok(true);
                };
                if !decide.publish() {
                    return Ok(false);
                }
                map.write(pos + batch::CRC_FIELD.start, &crc)?;
                Ok(true)
            })
            .map_err(|e| Error::io("write segment", self.path(), e))?;
        filled?;
        if !decided {
            return Ok(false);
        }
        debug_assert!(self.handles.with_map(|map| map.is_some_and(|map| {
            batch::decode(map.bytes(pos, pos + len)).is_ok_and(|b| b.base_offset == first_offset)
        })));
        let end = position + len as u64;
        // Publish before indexing, so an index entry never points past the published end.
        self.published.store(end, Ordering::Release);
        self.next_offset.store(next_offset, Ordering::Release);
        // Single writer: plain loads and stores, no read-modify-write.
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
        Ok(true)
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
            self.write_index_files(&l.indexes)?;
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
