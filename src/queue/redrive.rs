//! Redrive: dead letters back into the main log as new records, each exactly once,
//! even across crashes.
//!
//! The file `redrive` (replaced durably) holds `cursor | pending_end | log_end | crc`:
//! every dead letter below `cursor` was moved. Before a chunk `[cursor, pending_end)`
//! is appended (as one batch, so all or none of it survives a crash), the intent is
//! made durable with the main log's end at that time; after the append is flushed the
//! cursor moves. An intent found pending is resolved by looking for the chunk's first
//! record (its `redrive.from` header, key and value) in the main log from `log_end`.
//! The file is created with the queue; missing, unreadable or damaged it is
//! `Error::Corrupt` (see [`load`]).

use std::path::Path;

use super::dead_letter::is_dlq_header;
use crate::checkpoint;
use crate::fs::FileSystem;
use crate::{Error, Log, Offset, Record, Result, StoredRecord};

/// Header naming the dead-letter offset a redriven record came from.
pub const REDRIVE_FROM: &str = "redrive.from";

const FILE: &str = "redrive";
/// Dead letters appended per batch.
const CHUNK: u64 = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Intent {
    cursor: Offset,
    pending_end: Offset,
    log_end: Offset,
}

fn encode(i: Intent) -> Vec<u8> {
    let mut out = Vec::with_capacity(28);
    for v in [i.cursor, i.pending_end, i.log_end] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(b: &[u8]) -> Option<Intent> {
    if b.len() != 28 || crc32fast::hash(&b[..24]).to_le_bytes() != b[24..28] {
        return None;
    }
    let at = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Some(Intent {
        cursor: at(0),
        pending_end: at(1),
        log_end: at(2),
    })
}

fn save(fs: &dyn FileSystem, dir: &Path, i: Intent) -> Result<()> {
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
    if i.pending_end < i.cursor || i.pending_end > end {
        return Err(corrupt(format!(
            "redrive intent names dead letters [{}, {}) but the dead-letter log ends at {end}",
            i.cursor, i.pending_end
        )));
    }
    Ok(i)
}

/// Creates the intent file (cursor 0) for a queue whose dead-letter log never held
/// a letter; called by `Queue::open` before anything can be dead-lettered. Once a
/// letter exists, the file must exist: [`load`] reports a missing one.
pub(crate) fn create_if_new(fs: &dyn FileSystem, dir: &Path, dlq: &Log) -> Result<()> {
    if dlq.end_offset() == 0 && !fs.exists(&dir.join(FILE)) {
        save(fs, dir, Intent::default())?;
    }
    Ok(())
}

/// Sets the cursor (nothing pending): the repair for a damaged or missing intent.
/// `cursor` may not pass the dead-letter log's end.
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
        Intent {
            cursor,
            pending_end: cursor,
            log_end: 0,
        },
    )
}

/// The cursor after resolving a pending intent.
fn resolve(log: &Log, dlq: &Log, i: Intent) -> Result<Offset> {
    if i.pending_end <= i.cursor || i.cursor < dlq.start_offset() {
        return Ok(i.cursor);
    }
    let Some(first) = dlq.read(i.cursor)? else {
        return Ok(i.cursor);
    };
    for r in log.reader(i.log_end)? {
        if is_copy(&r?, i.cursor, &first) {
            return Ok(i.pending_end);
        }
    }
    Ok(i.cursor)
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

/// Moves up to `max` dead letters of `dlq` (in `dir`) into `log`; returns how many.
/// The caller serialises calls.
pub(crate) fn redrive(log: &Log, dlq: &Log, dir: &Path, max: usize) -> Result<usize> {
    let fs = &*log.config().fs;
    // Dead letters read below must stay: the cursor will pass them durably.
    dlq.flush()?;
    let intent = load(fs, dir, dlq)?;
    // Dead letters deleted from the dead-letter log are not redriven.
    let mut cursor = resolve(log, dlq, intent)?.max(dlq.start_offset());
    let end = dlq.end_offset();
    let mut moved = 0usize;
    while moved < max && cursor < end {
        let want = CHUNK.min(end - cursor).min((max - moved) as u64) as usize;
        let mut chunk: Vec<StoredRecord> = Vec::with_capacity(want);
        for r in dlq.reader(cursor)?.take(want) {
            chunk.push(r?);
        }
        let Some(last) = chunk.last() else { break };
        let pending_end = last.offset + 1;
        let first = chunk[0].offset;
        let log_end = log.end_offset();
        intend(fs, dir, first, pending_end, log_end)?;
        let n = chunk.len();
        let records: Vec<Record> = chunk.into_iter().map(copy_of).collect();
        match log.append_batch(records) {
            Ok(_) => {}
            Err(Error::RecordTooLarge { .. }) if n > 1 => {
                // Retry one at a time: the intent is re-saved for the smaller chunk.
                let one: Vec<StoredRecord> = dlq.reader(first)?.take(1).collect::<Result<_>>()?;
                let pending_end = one[0].offset + 1;
                intend(fs, dir, first, pending_end, log_end)?;
                log.append_batch(one.into_iter().map(copy_of).collect())?;
                cursor = commit(fs, dir, log, pending_end)?;
                moved += 1;
                continue;
            }
            Err(e) => return Err(e),
        }
        cursor = commit(fs, dir, log, pending_end)?;
        moved += n;
    }
    Ok(moved)
}

/// Durably records that dead letters `first..pending_end` are about to be appended to
/// a log whose end is `log_end` (so a crash midway can tell whether they landed).
fn intend(
    fs: &dyn FileSystem,
    dir: &Path,
    first: Offset,
    pending_end: Offset,
    log_end: Offset,
) -> Result<()> {
    save(
        fs,
        dir,
        Intent {
            cursor: first,
            pending_end,
            log_end,
        },
    )
}

/// The appended records are made durable, then the intent moves past them (nothing
/// pending); returns the new cursor.
fn commit(fs: &dyn FileSystem, dir: &Path, log: &Log, done: Offset) -> Result<Offset> {
    log.flush()?;
    save(
        fs,
        dir,
        Intent {
            cursor: done,
            pending_end: done,
            log_end: 0,
        },
    )?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_round_trips_and_rejects_garbage() {
        let i = Intent {
            cursor: 3,
            pending_end: 9,
            log_end: 77,
        };
        assert_eq!(decode(&encode(i)), Some(i));
        let mut b = encode(i);
        b[5] ^= 1;
        assert_eq!(decode(&b), None);
        assert_eq!(decode(b"short"), None);
    }
}
