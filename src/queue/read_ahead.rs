//! Records past the delivery cursor, decoded ahead of need.
//!
//! Two locks: the log reader is behind `QueueInner::reader` ([`Refill`]), the decoded
//! records behind `QueueInner::unread` ([`ReadAhead`]). A receive refills the buffer
//! *before* it takes the core lock, holding only the reader's lock while it decodes
//! (into a buffer of its own, appended under the `unread` lock afterwards), so other
//! consumers keep receiving from the records already decoded and acking while it
//! decodes: decoding (a batch CRC, per-record decode and allocation: a fifth of a
//! single consumer's time at batch 1) is no longer serial with every other
//! receive.
//!
//! Lock order: `reader`, then `unread`, then `core`. Under `unread` or `core` the
//! reader is only `try_lock`ed; a jump of the cursor decided there (retention passed
//! the floor, a purge) cannot wait for it, so it empties the buffer, records the
//! offset the reader must resume at ([`ReadAhead::seek`]) and bumps
//! [`ReadAhead::epoch`]: a refill decoded before the jump is dropped, and the next
//! holder of the reader seeks first.
//!
//! Nothing here is on disk or changes what a receive leases: records still leave the
//! buffer in offset order under the core lock, and the state (`core.state.next()`)
//! says what was delivered; the buffer is a cache of the log.

use std::collections::VecDeque;

use parking_lot::MutexGuard;

use super::lanes::Lane;
use super::QueueInner;
use crate::reader::LogReader;
use crate::{Error, Offset, Result, StoredRecord};

/// Records decoded per refill.
pub(super) const READ_AHEAD: usize = 256;

/// A receive that finds fewer records decoded than this refills the buffer if no
/// other consumer is doing so (without waiting), so the buffer rarely runs dry
/// while another consumer decodes.
const LOW_WATER: usize = READ_AHEAD / 2;

/// Offsets skipped one at a time, in a row, before the read-ahead skips the rest of
/// a segment the reader cannot read on in.
const STUCK_STEPS: u32 = 64;

/// Chunks of other lanes' records only (a compacted log) one refill reads through
/// before it lets the receive try again (see [`QueueInner::next_unread`]): a bound on
/// the work done under the locks.
const OTHERS_CHUNKS: usize = 16;

/// One item past the delivery cursor.
#[derive(Debug)]
pub(super) enum Unread {
    Record(StoredRecord),
    /// Offsets from the cursor up to this one could not be read.
    Corrupt(Offset),
}

/// The log reader of the read-ahead (`QueueInner::reader`).
#[derive(Debug)]
pub(super) struct Refill {
    pub reader: LogReader,
    /// Offsets skipped one by one in a row because the reader could not move past
    /// damage (see [`QueueInner::decode_ahead`]).
    pub stuck: u32,
    /// Reused buffer a refill decodes into outside the `unread` lock.
    pub decoded: VecDeque<Unread>,
}

/// The records decoded past the delivery cursor (`QueueInner::unread`).
#[derive(Debug)]
pub(super) struct ReadAhead {
    pub ahead: VecDeque<Unread>,
    /// The offset the reader resumes at: just past the last item of `ahead` (or the
    /// pending [`ReadAhead::seek`]).
    pub resume: Offset,
    /// Where the reader must seek to before it reads again: set by a jump decided
    /// where the reader's lock cannot be waited for.
    pub seek: Option<Offset>,
    /// Bumped by every jump: a refill decoded from before it is dropped.
    pub epoch: u64,
    /// Set by a receive that found the buffer empty while another consumer held the
    /// reader (refilling), or whose refill read only other lanes' records short of
    /// the log's end: the receive tries again instead of returning nothing.
    pub dry: bool,
}

impl ReadAhead {
    pub fn new(reader_at: Offset) -> ReadAhead {
        ReadAhead {
            ahead: VecDeque::with_capacity(READ_AHEAD * 2),
            resume: reader_at,
            seek: None,
            epoch: 0,
            dry: false,
        }
    }

    /// The records from `to` on are what the reader must deliver next: drops what was
    /// decoded and sends the reader there before its next read.
    pub fn restart_at(&mut self, to: Offset) {
        self.ahead.clear();
        self.seek = Some(to);
        self.resume = to;
        self.epoch += 1;
    }
}

impl Refill {
    pub fn new(reader: LogReader) -> Refill {
        Refill {
            reader,
            stuck: 0,
            decoded: VecDeque::with_capacity(READ_AHEAD),
        }
    }

    /// Moves the reader to a pending seek of `unread`. A failure leaves the seek
    /// pending (met again, and returned, by the receive that needs the reader).
    fn catch_up(&mut self, unread: &mut ReadAhead) -> Result<()> {
        if let Some(to) = unread.seek {
            self.reader.seek(to)?;
            self.stuck = 0;
            unread.seek = None;
        }
        Ok(())
    }
}

impl QueueInner {
    /// Before a receive takes the core lock: makes sure the buffer holds the
    /// records the receive wants (up to [`READ_AHEAD`]), decoding them with only the
    /// reader's lock held; below [`LOW_WATER`] records, refills if no other consumer
    /// is. Returns the `unread` lock for the receive to go on with. Failures are
    /// ignored here: they are met again, and handled, under the core lock.
    pub(super) fn fill_ahead(&self, want: usize) -> MutexGuard<'_, ReadAhead> {
        let need = want.min(READ_AHEAD);
        let mut unread = self.unread.lock();
        let have = unread.ahead.len();
        if have >= need.max(LOW_WATER) || unread.resume >= self.log.end_offset() {
            return unread;
        }
        let mut refill = if have >= need {
            // Enough for this call: refill only if nobody else is.
            match self.reader.try_lock() {
                Some(refill) => refill,
                None => return unread,
            }
        } else {
            drop(unread);
            let refill = self.reader.lock();
            unread = self.unread.lock();
            if unread.ahead.len() >= need {
                return unread;
            }
            refill
        };
        if refill.catch_up(&mut unread).is_err() {
            return unread;
        }
        let epoch = unread.epoch;
        drop(unread);
        let refill = &mut *refill;
        let mut decoded = std::mem::take(&mut refill.decoded);
        let _ = self.decode_ahead(refill, &mut decoded);
        let mut unread = self.unread.lock();
        if unread.epoch == epoch {
            unread.ahead.append(&mut decoded);
            unread.resume = refill.reader.position();
        } else {
            // A jump came in between: these records are behind the new cursor (the
            // reader seeks on its next refill).
            decoded.clear();
        }
        refill.decoded = decoded;
        unread
    }

    /// The next record past the delivery cursor, from the buffer; refilled here,
    /// under the core lock, only when a receive drains it and no other consumer is
    /// refilling it (then `None`, with [`ReadAhead::dry`] set, as when a refill
    /// moved on through other lanes' records only and the log goes on).
    pub(super) fn next_unread(&self, unread: &mut ReadAhead) -> Result<Option<Unread>> {
        if unread.ahead.is_empty() {
            match self.reader.try_lock() {
                Some(mut refill) => {
                    refill.catch_up(unread)?;
                    let from = refill.reader.position();
                    let r = self.decode_ahead(&mut refill, &mut unread.ahead);
                    unread.resume = refill.reader.position();
                    r?;
                    if unread.ahead.is_empty()
                        && from < unread.resume
                        && unread.resume < self.log.end_offset()
                    {
                        // The reader moved on through other lanes' records only (a
                        // compacted log): not the end, so the receive tries again,
                        // outside the locks (each try moves the reader on).
                        unread.dry = true;
                    }
                }
                None => {
                    unread.dry = true;
                    return Ok(None);
                }
            }
        }
        Ok(unread.ahead.pop_front())
    }

    /// Decodes [`READ_AHEAD`] records from the reader into `into`, and the rest of
    /// the batch the last of them is in (resuming a reader mid-batch costs a CRC
    /// check and a scan of the batch, so it is done neither per record nor per
    /// chunk). A stretch that cannot be read becomes an [`Unread::Corrupt`]. A lane
    /// reads on through chunks holding only other lanes' records (its own blocks
    /// compacted away), up to [`OTHERS_CHUNKS`] of them.
    fn decode_ahead(&self, refill: &mut Refill, into: &mut VecDeque<Unread>) -> Result<()> {
        let had = into.len();
        for _ in 0..OTHERS_CHUNKS {
            let at = refill.reader.position();
            self.decode_chunk(refill, into)?;
            let moved = refill.reader.position() > at;
            if into.len() > had || !moved || self.lane.is_only() {
                break;
            }
        }
        Ok(())
    }

    /// One chunk of [`QueueInner::decode_ahead`].
    fn decode_chunk(&self, refill: &mut Refill, into: &mut VecDeque<Unread>) -> Result<()> {
        let Refill { reader, stuck, .. } = refill;
        let lane = self.lane;
        // A lane reads only its own blocks: the reader jumps over the others' (a
        // seek is only a new position; it may lie past the log's end).
        to_owned_block(reader, lane)?;
        let before = LogReader::position(reader);
        if before >= self.log.end_offset() {
            return Ok(());
        }
        // Whole batches: a chunk ending mid-batch would check the batch's CRC and
        // decode its first records again on the next refill. Except at the end of a
        // lane's block: there the lane's next refill starts at its next block, so it
        // stops exactly there and leaves the rest of the batch (another lane's
        // records) undecoded.
        let block_end = if lane.is_only() {
            Offset::MAX
        } else {
            before.saturating_add(lane.block - before % lane.block)
        };
        let push = |v: crate::RecordView<'_>| {
            debug_assert!(lane.owns(v.offset));
            into.push_back(Unread::Record(v.to_owned_record()))
        };
        let r = reader.read_views_whole_batches(READ_AHEAD, block_end, push);
        match r {
            Ok(_) => {
                *stuck = 0;
                to_owned_block(reader, lane)?;
            }
            Err(Error::Corrupt { .. }) => {
                let from = match into.back() {
                    Some(Unread::Record(r)) => r.offset + 1,
                    _ => before,
                };
                let mut to = LogReader::position(reader);
                if to <= from {
                    // Not moved past: skip the one record; after STUCK_STEPS in a row,
                    // the rest of the segment (a stretch the reader cannot cross could
                    // span up to 2^64 offsets: bounded progress, every skipped offset
                    // counted in `corrupt_skipped`, never silently done).
                    *stuck += 1;
                    to = if *stuck <= STUCK_STEPS {
                        from + 1
                    } else {
                        *stuck = 0;
                        self.log
                            .segments()
                            .iter()
                            .map(|s| s.base_offset)
                            .find(|&b| b > from)
                            .unwrap_or_else(|| self.log.end_offset())
                            .max(from + 1)
                    };
                    reader.seek(to)?;
                }
                into.push_back(Unread::Corrupt(to));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Moves `reader` to the first offset at or past its position that `lane` owns.
fn to_owned_block(reader: &mut LogReader, lane: Lane) -> Result<()> {
    let at = LogReader::position(reader);
    let owned = lane.next_owned(at);
    if owned != at {
        reader.seek(owned)?;
    }
    Ok(())
}
