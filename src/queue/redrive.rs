//! Redrive: dead letters back into the main log as new records, each exactly once,
//! even across crashes, all of them ([`super::Queue::redrive`]) or those a filter
//! accepts ([`super::Queue::redrive_where`]).
//!
//! The file `redrive` (replaced durably) holds the intent:
//! `"LQR2" | cursor u64 | log_end u64 | ranges u64 | pending u64`, then `ranges`
//! pairs `start u64 | end u64`, then `pending` offsets `u64`, then a CRC32 of all
//! before (little-endian). Every dead letter below `cursor` was moved (or deleted from
//! the dead-letter log). The ranges (sorted, disjoint, above the cursor) are dead
//! letters at or above it that were moved too: a filter may skip letters, which stay
//! where they are and keep the cursor from passing them, while the letters it
//! accepted after them are moved. The cursor advances over ranges that reach it, so
//! the file holds one range per stretch of moved letters above the lowest letter
//! still waiting.
//!
//! Before a chunk of letters is appended (as one batch, so all or none of it
//! survives a crash), the intent is made durable naming the chunk's offsets as
//! `pending` and the main log's end at that time as `log_end`; after the append is
//! flushed the chunk joins the ranges and `pending` is emptied. An intent found
//! pending is resolved by looking for the chunk's first letter's copy (its
//! `redrive.from` header, key and value) in the main log from `log_end`: found, the
//! whole chunk was moved; not found, none of it was. Each letter is therefore moved
//! at most once, and exactly once once a redrive accepting it completes.
//!
//! Format 1 (28 bytes, `cursor | pending_end | log_end | crc`, no magic; written
//! before filters existed) is read as the pending chunk `[cursor, pending_end)`. The
//! file is created with the queue; missing, unreadable or damaged it is
//! `Error::Corrupt` (see [`load`]).

use std::ops::Range;
use std::path::Path;

use super::dead_letter::is_dlq_header;
use crate::checkpoint;
use crate::fs::FileSystem;
use crate::{Error, Log, Offset, Record, Result, StoredRecord};

/// Header naming the dead-letter offset a redriven record came from.
pub const REDRIVE_FROM: &str = "redrive.from";

const FILE: &str = "redrive";
const MAGIC: &[u8; 4] = b"LQR2";
/// Dead letters appended per batch.
const CHUNK: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Intent {
    /// Every dead letter below it was moved.
    cursor: Offset,
    /// Dead letters at or above the cursor moved too: sorted, disjoint, not empty,
    /// starting above the cursor.
    done: Vec<Range<Offset>>,
    /// Dead letters whose copies are being appended to the log whose end was
    /// `log_end`, in offset order.
    pending: Vec<Offset>,
    log_end: Offset,
}

impl Intent {
    fn is_done(&self, o: Offset) -> bool {
        o < self.cursor || {
            let i = self.done.partition_point(|r| r.end <= o);
            self.done.get(i).is_some_and(|r| r.contains(&o))
        }
    }

    /// Counts `offsets` as moved.
    fn mark_done(&mut self, offsets: &[Offset]) {
        let mut all: Vec<Range<Offset>> = std::mem::take(&mut self.done);
        all.extend(offsets.iter().map(|&o| o..o + 1));
        all.sort_by_key(|r| r.start);
        for r in all {
            match self.done.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => self.done.push(r),
            }
        }
        self.normalize();
    }

    /// Every letter below `start` is gone from the dead-letter log: counts as moved.
    fn skip_below(&mut self, start: Offset) {
        self.cursor = self.cursor.max(start);
        self.normalize();
    }

    /// Moves the cursor over the ranges that reach it and drops what lies below.
    fn normalize(&mut self) {
        let cursor = &mut self.cursor;
        self.done.retain_mut(|r| {
            if r.start <= *cursor {
                *cursor = (*cursor).max(r.end);
                false
            } else {
                true
            }
        });
    }
}

fn encode(i: &Intent) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + 16 * i.done.len() + 8 * i.pending.len());
    out.extend_from_slice(MAGIC);
    for v in [
        i.cursor,
        i.log_end,
        i.done.len() as u64,
        i.pending.len() as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for r in &i.done {
        out.extend_from_slice(&r.start.to_le_bytes());
        out.extend_from_slice(&r.end.to_le_bytes());
    }
    for o in &i.pending {
        out.extend_from_slice(&o.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(b: &[u8]) -> Option<Intent> {
    let (body, crc) = b.split_at(b.len().checked_sub(4)?);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let at = |i: usize| {
        body.get(i..i + 8)
            .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
    };
    if !body.starts_with(MAGIC) {
        // Format 1.
        if body.len() != 24 {
            return None;
        }
        let (cursor, pending_end, log_end) = (at(0)?, at(8)?, at(16)?);
        if pending_end < cursor || pending_end - cursor > 1 << 20 {
            return None;
        }
        return Some(Intent {
            cursor,
            done: Vec::new(),
            pending: (cursor..pending_end).collect(),
            log_end,
        });
    }
    let (cursor, log_end) = (at(4)?, at(12)?);
    let ranges = usize::try_from(at(20)?).ok()?;
    let pending = usize::try_from(at(28)?).ok()?;
    let want = ranges
        .checked_mul(16)?
        .checked_add(pending.checked_mul(8)?)?;
    if body.len() != 36usize.checked_add(want)? {
        return None;
    }
    let mut i = Intent {
        cursor,
        log_end,
        ..Intent::default()
    };
    let mut p = 36;
    let mut last = cursor;
    for _ in 0..ranges {
        let r = at(p)?..at(p + 8)?;
        // Sorted, disjoint, not empty, above the cursor: as `normalize` leaves them.
        if r.start <= last || r.end <= r.start {
            return None;
        }
        last = r.end;
        i.done.push(r);
        p += 16;
    }
    for _ in 0..pending {
        i.pending.push(at(p)?);
        p += 8;
    }
    if i.pending.windows(2).any(|w| w[0] >= w[1]) {
        return None;
    }
    Some(i)
}

fn save(fs: &dyn FileSystem, dir: &Path, i: &Intent) -> Result<()> {
    checkpoint::durable_replace(fs, dir, FILE, &encode(i))
}

/// True when `r` is the redriven copy of dead letter `from`, whose content is `dl`.
fn is_copy(r: &StoredRecord, from: Offset, dl: &StoredRecord) -> bool {
    r.header(REDRIVE_FROM) == Some(from.to_string().as_bytes())
        && r.key == dl.key
        && r.value == dl.value
}

/// The intent file, checked against the dead-letter log: missing, unreadable,
/// damaged, or naming dead letters past the log's end is `Error::Corrupt` naming the
/// file (issue 9, defect 5). Never a restart from the first dead letter: that would
/// copy every dead letter again. The file is created with the queue (see
/// [`create_if_new`]), so a missing one was lost. Repair:
/// [`super::Queue::reset_redrive_cursor`].
fn load(fs: &dyn FileSystem, dir: &Path, dlq: &Log) -> Result<Intent> {
    let path = dir.join(FILE);
    let corrupt = |why: String| Error::corrupt(&path, 0, None, why);
    if !fs.exists(&path) {
        return Err(corrupt(
            "redrive intent missing (it is created with the queue); set the cursor \
             with Queue::reset_redrive_cursor"
                .into(),
        ));
    }
    let Some(bytes) = checkpoint::read_small(fs, &path) else {
        return Err(corrupt("redrive intent unreadable".into()));
    };
    let Some(i) = decode(&bytes) else {
        return Err(corrupt("redrive intent damaged (length or CRC)".into()));
    };
    let end = dlq.end_offset();
    let highest = [
        i.done.last().map(|r| r.end),
        i.pending.last().map(|&o| o + 1),
    ]
    .into_iter()
    .flatten()
    .fold(i.cursor, Offset::max);
    if highest > end {
        return Err(corrupt(format!(
            "redrive intent names dead letters up to {highest} but the dead-letter log ends \
             at {end}"
        )));
    }
    Ok(i)
}

/// Creates the intent file (cursor 0) for a queue whose dead-letter log never held
/// a letter; called by `Queue::open` before anything can be dead-lettered. Once a
/// letter exists, the file must exist: [`load`] reports a missing one.
pub(crate) fn create_if_new(fs: &dyn FileSystem, dir: &Path, dlq: &Log) -> Result<()> {
    if dlq.end_offset() == 0 && !fs.exists(&dir.join(FILE)) {
        save(fs, dir, &Intent::default())?;
    }
    Ok(())
}

/// Sets the cursor (nothing pending, no letters above it moved): the repair for a
/// damaged or missing intent. `cursor` may not pass the dead-letter log's end.
pub(crate) fn reset(fs: &dyn FileSystem, dir: &Path, dlq: &Log, cursor: Offset) -> Result<()> {
    let end = dlq.end_offset();
    if cursor > end {
        return Err(Error::InvalidConfig(format!(
            "redrive cursor {cursor} is past the dead-letter log's end {end}"
        )));
    }
    save(
        fs,
        dir,
        &Intent {
            cursor,
            ..Intent::default()
        },
    )
}

/// Settles a pending chunk: moved (its first letter's copy is in the log from
/// `log_end`) or not. True when the intent changed.
fn resolve(log: &Log, dlq: &Log, i: &mut Intent) -> Result<bool> {
    let Some(&first) = i.pending.first() else {
        return Ok(false);
    };
    let pending = std::mem::take(&mut i.pending);
    if first < dlq.start_offset() {
        // Deleted from the dead-letter log: nothing left to move either way.
        return Ok(true);
    }
    let Some(letter) = dlq.read(first)? else {
        return Ok(true);
    };
    for r in log.reader(i.log_end.max(log.start_offset()))? {
        if is_copy(&r?, first, &letter) {
            i.mark_done(&pending);
            break;
        }
    }
    Ok(true)
}

/// The main-log copy of a dead letter: one `redrive.from` header, naming this dead
/// letter. A record dead-lettered again after a redrive carries the `redrive.from`
/// of its previous cycle; it is replaced, not added to, so `header("redrive.from")`
/// and the resolver see the current cycle (issue 9, defect 4).
fn copy_of(dl: StoredRecord) -> Record {
    let from = dl.offset;
    Record {
        key: dl.key,
        value: dl.value,
        headers: dl
            .headers
            .into_iter()
            .filter(|h| !is_dlq_header(&h.key) && h.key != REDRIVE_FROM)
            .collect(),
        timestamp: None,
    }
    .with_header(REDRIVE_FROM, from.to_string())
}

/// Moves up to `max` dead letters of `dlq` (in `dir`) that `accept` accepts into
/// `log`, oldest first; returns how many. The caller serialises calls.
pub(crate) fn redrive(
    log: &Log,
    dlq: &Log,
    dir: &Path,
    max: usize,
    accept: &dyn Fn(&StoredRecord) -> bool,
) -> Result<usize> {
    let fs = &*log.config().fs;
    // Dead letters read below must stay: the intent will name them durably.
    dlq.flush()?;
    let mut intent = load(fs, dir, dlq)?;
    let mut changed = resolve(log, dlq, &mut intent)?;
    // Dead letters deleted from the dead-letter log are not redriven.
    if intent.cursor < dlq.start_offset() {
        intent.skip_below(dlq.start_offset());
        changed = true;
    }
    if changed {
        // Resolved once, for good: the copy found now could be deleted from the log
        // by retention before the next call looks for it.
        save(fs, dir, &intent)?;
    }
    let end = dlq.end_offset();
    let mut reader = dlq.reader(intent.cursor)?;
    let mut moved = 0usize;
    while moved < max {
        let want = CHUNK.min(max - moved);
        let mut chunk: Vec<StoredRecord> = Vec::with_capacity(want);
        while chunk.len() < want && reader.position() < end {
            let Some(r) = reader.next() else { break };
            let r = r?;
            if !intent.is_done(r.offset) && accept(&r) {
                chunk.push(r);
            }
        }
        if chunk.is_empty() {
            break;
        }
        moved += move_chunk(fs, dir, log, &mut intent, chunk)?;
    }
    Ok(moved)
}

/// Appends the copies of `chunk` as one batch under a durable intent, then records
/// them as moved; a batch too large for the log goes one letter at a time.
fn move_chunk(
    fs: &dyn FileSystem,
    dir: &Path,
    log: &Log,
    intent: &mut Intent,
    chunk: Vec<StoredRecord>,
) -> Result<usize> {
    let n = chunk.len();
    intent.pending = chunk.iter().map(|r| r.offset).collect();
    intent.log_end = log.end_offset();
    save(fs, dir, intent)?;
    let records: Vec<Record> = chunk.iter().cloned().map(copy_of).collect();
    match log.append_batch(records) {
        Ok(_) => {}
        Err(Error::RecordTooLarge { .. }) if n > 1 => {
            // Nothing was appended: the intent is re-saved for each letter alone.
            intent.pending.clear();
            let mut moved = 0;
            for letter in chunk {
                moved += move_chunk(fs, dir, log, intent, vec![letter])?;
            }
            return Ok(moved);
        }
        Err(e) => return Err(e),
    }
    // The copies are durable before the intent says they were moved.
    log.flush()?;
    let pending = std::mem::take(&mut intent.pending);
    intent.mark_done(&pending);
    intent.log_end = 0;
    save(fs, dir, intent)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_round_trips_and_rejects_garbage() {
        let i = Intent {
            cursor: 3,
            done: vec![5..7, 9..10],
            pending: vec![11, 14],
            log_end: 77,
        };
        assert_eq!(decode(&encode(&i)), Some(i.clone()));
        let b = encode(&i);
        for k in 0..b.len() {
            let mut c = b.clone();
            c[k] ^= 1;
            assert_eq!(decode(&c), None, "flip at {k}");
        }
        assert_eq!(decode(b"short"), None);
        assert_eq!(decode(&[]), None);
    }

    #[test]
    fn format_1_reads_as_a_pending_range() {
        let mut b = Vec::new();
        for v in [3u64, 6, 40] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let i = decode(&b).unwrap();
        assert_eq!((i.cursor, i.pending, i.log_end), (3, vec![3, 4, 5], 40));
    }

    #[test]
    fn moved_letters_merge_into_the_cursor() {
        let mut i = Intent::default();
        i.mark_done(&[2, 3, 5]);
        assert_eq!((i.cursor, i.done.clone()), (0, vec![2..4, 5..6]));
        assert!(i.is_done(3) && !i.is_done(4) && !i.is_done(1));
        i.mark_done(&[0, 1]);
        assert_eq!(
            (i.cursor, i.done.clone()),
            (4, vec![Range { start: 5, end: 6 }])
        );
        i.mark_done(&[4]);
        assert_eq!((i.cursor, i.done.clone()), (6, vec![]));
        i.mark_done(&[9]);
        i.skip_below(10);
        assert_eq!((i.cursor, i.done.clone()), (10, vec![]));
    }
}
