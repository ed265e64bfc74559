//! A queue's retention floor is a log cursor named `queue.<name>` (see cursor.rs):
//! everything below it is done, and with [`super::QueueConfig::protect_unacked`] it
//! protects the rest from time and size retention, whether the queue is open or not.
//! The log knows nothing of queues; this module maps a queue onto its cursor.
//!
//! The cursor is never ahead of the durable queue state: at open it is created at, or
//! moved down to, the queue's floor before anything else (under retention's `pass`
//! lock, so a pass either sees it or deleted before the floor was chosen), and it is
//! moved up only after the snapshot or a flush made the state durable up to the new
//! floor. A crash after a commit leaves the cursor at most at the durable floor (a
//! commit is written to the OS after that state was fsynced), so a queue that crashed
//! protects from an older, lower floor: more is kept, never less.
//!
//! Earlier versions kept the floor in `queues/<name>/floor` (`"LQF1" | floor u64 |
//! protect u8 | crc32`, replaced durably). [`migrate_floors`] runs at every
//! [`Log::open`] (wired in `lib.rs`), before retention can run:
//! - a readable `floor` file becomes the cursor (created durably unless it exists),
//!   then the file is removed and the directory fsynced (a crash in between leaves
//!   both, and the next open only removes the file); kept when the queue has no
//!   snapshot, where it is what makes the queue's open report the lost state;
//! - a damaged or unreadable `floor` file, and a queue with a snapshot but neither a
//!   `floor` file nor a cursor (its floor is unknown: the cursor is created before the
//!   snapshot, so no crash leaves this), hold back everything and are listed in
//!   [`crate::LogStats::damaged_floor_files`] until the queue is opened (open creates
//!   the cursor from the queue's state and removes the file);
//! - a `queue.<name>` cursor whose queue directory is gone is deleted: a crash inside
//!   `Queue::delete`, which removes the directory before the cursor. (The `queue.`
//!   prefix of cursor names belongs to queues.)
//!
//! A queue whose creation failed or crashed before its snapshot keeps its cursor (at
//! the floor it would have started from) until it is opened or deleted: over-
//! protection, visible in [`Log::cursors`].
//!
//! Floor 0 rather than the snapshot's floor for an unknown floor: the snapshot does not
//! say whether the queue protects its records at all. An unreadable `queues/` directory
//! holds back everything too.

use std::path::Path;

use super::lanes;
use crate::checkpoint;
use crate::fs::{FileSystem, OpenMode};
use crate::{Cursor, Error, Log, Offset, Result};

/// Name of the floor file of earlier versions, in the queue's directory.
pub(crate) const FLOOR_FILE: &str = "floor";
const MAGIC: &[u8; 4] = b"LQF1";
/// Prefix of the cursor names queues use.
const CURSOR_PREFIX: &str = "queue.";

/// The name of the cursor holding the floor of queue `queue`.
pub(crate) fn cursor_name(queue: &str) -> String {
    format!("{CURSOR_PREFIX}{queue}")
}

/// The name of the cursor holding the floor of `lane` of queue `queue`: the queue's
/// own for lane 0 (see `lanes.rs`).
pub(super) fn lane_cursor_name(queue: &str, lane: super::lanes::Lane) -> String {
    match lane.index {
        0 => cursor_name(queue),
        i => super::lanes::cursor_name(queue, i),
    }
}

#[cfg(test)]
fn encode(floor: Offset, protect: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&floor.to_le_bytes());
    out.push(u8::from(protect));
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<(Offset, bool)> {
    if bytes.len() != 17 || !bytes.starts_with(MAGIC) {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[13..17].try_into().ok()?);
    if crc32fast::hash(&bytes[..13]) != crc {
        return None;
    }
    let floor = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
    Some((floor, bytes[12] == 1))
}

/// The cursor `cname` of a queue's lane (see [`lane_cursor_name`]), at or below `floor` (a damaged cursor is replaced
/// durably, at the log's start or `floor` when lower). The caller holds the log's
/// retention `pass` lock and raises the cursor with [`commit`] once the state is
/// durable. Removes a `floor` file of an earlier version and ends the holds placed for
/// this queue.
pub(super) fn attach(
    log: &Log,
    cname: &str,
    dir: &Path,
    floor: Offset,
    protect: bool,
) -> Result<Cursor> {
    let cname = cname.to_string();
    let cursor = match log.cursor_under_pass(&cname, protect, Some(floor)) {
        Err(Error::Corrupt { .. }) => {
            log.reset_cursor_under_pass(&cname, floor.min(log.start_offset()), protect)?
        }
        r => r?,
    };
    let fs = &*log.config().fs;
    let legacy = dir.join(FLOOR_FILE);
    if fs.exists(&legacy) {
        remove_durably(fs, dir, &legacy)?;
    }
    log.release_unknown_floor(&legacy);
    log.release_unknown_floor(&crate::cursor::cursor_path(log.dir(), &cname));
    Ok(cursor)
}

/// The floor a queue's lane last made durable, for `Queue::repair`: the `floor` file of
/// an earlier version when it is still there and checks out, else the lane's cursor
/// `cname`;
/// `None` when neither can be read. With whether it protects its unacked records.
pub(super) fn durable_floor(log: &Log, dir: &Path, cname: &str) -> Option<(Offset, bool)> {
    let fs = &*log.config().fs;
    if let Some(bytes) = checkpoint::read_small(fs, &dir.join(FLOOR_FILE)) {
        if let Some(found) = decode(&bytes) {
            return Some(found);
        }
    }
    let info = log.cursor_info(cname)?;
    Some((info.position, info.protect))
}

/// Moves the queue's cursor to `floor`; the caller made the state durable up to it.
pub(super) fn commit(cursor: &Cursor, floor: Offset) -> Result<()> {
    if cursor.position() != floor {
        cursor.commit(floor)?;
    }
    Ok(())
}

/// For `Queue::delete`, after the queue's directory is durably gone: deletes its
/// cursor (the queue no longer holds back retention) and ends its holds. A crash
/// between the two is finished by the next [`Log::open`] (see the module docs).
pub(crate) fn forget(log: &Log, name: &str) -> Result<()> {
    let cname = cursor_name(name);
    log.delete_cursor(&cname)?;
    let dir = log.dir().join("queues").join(name);
    log.release_unknown_floor(&dir.join(FLOOR_FILE));
    log.release_unknown_floor(&crate::cursor::cursor_path(log.dir(), &cname));
    // The cursors of its other lanes (see `lanes.rs`).
    for lane_cursor in log.cursor_names() {
        if lanes::parse_cursor_name(&lane_cursor).is_some_and(|(q, _)| q == name) {
            log.delete_cursor(&lane_cursor)?;
        }
    }
    for index in 1..lanes::MAX_LANES {
        let path = crate::cursor::cursor_path(log.dir(), &lanes::cursor_name(name, index));
        log.release_unknown_floor(&path);
    }
    Ok(())
}

fn remove_durably(fs: &dyn FileSystem, dir: &Path, path: &Path) -> Result<()> {
    fs.remove_file(path)
        .map_err(|e| Error::io("remove floor file", path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// The open hook: queue floors of earlier versions become cursors, unknown floors hold
/// back retention, orphan queue cursors go (see the module docs).
pub(crate) fn migrate_floors(log: &Log) -> Result<()> {
    let fs = &*log.config().fs;
    let queues = log.dir().join("queues");
    let names = match fs.list(&queues) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(_) => {
            log.hold_unknown_floor(queues);
            return Ok(());
        }
    };
    for cname in log.cursor_names() {
        let queue = match cname.strip_prefix(CURSOR_PREFIX) {
            Some(q) => Some(q),
            None => lanes::parse_cursor_name(&cname).map(|(q, _)| q),
        };
        if let Some(q) = queue {
            if !names.iter().any(|n| n == q) {
                log.delete_cursor(&cname)?;
            }
        }
    }
    for name in names {
        if !crate::cursor::valid_name(&cursor_name(name.as_str())) {
            continue;
        }
        migrate_one(log, &queues.join(&name), &name)?;
    }
    Ok(())
}

fn migrate_one(log: &Log, dir: &Path, name: &str) -> Result<()> {
    let fs = &*log.config().fs;
    let cname = cursor_name(name);
    let legacy = dir.join(FLOOR_FILE);
    match read_file(fs, &legacy) {
        Ok(Some(bytes)) => match decode(&bytes) {
            Some((floor, protect)) => {
                if !log.cursor_exists(&cname) {
                    let _pass = log.inner.retention.pass.lock();
                    log.reset_cursor_under_pass(&cname, floor, protect)?;
                }
                // Without a snapshot the `floor` file is what tells the queue's open
                // that state was lost (`Corrupt`, not a new queue): it stays.
                if fs.exists(&dir.join(super::journal::SNAPSHOT)) {
                    remove_durably(fs, dir, &legacy)?;
                }
            }
            None => log.hold_unknown_floor(legacy),
        },
        Ok(None) => {
            let snapshot = dir.join(super::journal::SNAPSHOT);
            if fs.exists(&snapshot) && !log.cursor_exists(&cname) {
                log.hold_unknown_floor(crate::cursor::cursor_path(log.dir(), &cname));
            }
            hold_lanes_without_cursor(log, dir, name);
        }
        // A stray file in `queues/`, not a queue.
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {}
        Err(_) => log.hold_unknown_floor(legacy),
    }
    Ok(())
}

/// A lane `i > 0` with a snapshot but no cursor has an unknown floor, as a queue
/// has (lanes came after the `floor` file: there is nothing to migrate).
fn hold_lanes_without_cursor(log: &Log, dir: &Path, name: &str) {
    let fs = &*log.config().fs;
    let Ok(entries) = fs.list(dir) else {
        return;
    };
    let indexes = entries
        .iter()
        .filter_map(|e| e.strip_prefix("lane-")?.parse::<u32>().ok());
    for index in indexes.filter(|i| (1..lanes::MAX_LANES).contains(i)) {
        let lane = dir.join(format!("lane-{index}"));
        let cname = lanes::cursor_name(name, index);
        if fs.exists(&lane.join(super::journal::SNAPSHOT)) && !log.cursor_exists(&cname) {
            log.hold_unknown_floor(crate::cursor::cursor_path(log.dir(), &cname));
        }
    }
}

/// The bytes of a small file; `None` when it does not exist.
fn read_file(fs: &dyn FileSystem, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let f = match fs.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A floor file is 17 bytes: anything much larger is damage, not read whole.
    let len = f.size()?.min(64) as usize;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_deletes_the_queue_cursor_and_its_holds() {
        use crate::sim::SimFs;
        use crate::{FlushPolicy, LogConfig, Queue, QueueConfig};
        let fs = SimFs::new(0);
        let config = LogConfig {
            fs: std::sync::Arc::new(fs.clone()),
            background: false,
            flush: FlushPolicy::Manual,
            ..LogConfig::default()
        };
        let log = Log::open("/log", config).unwrap();
        drop(Queue::open(&log, "q", QueueConfig::default()).unwrap());
        assert_eq!(log.cursors().unwrap()[0].name, "queue.q");
        log.hold_unknown_floor(Path::new("/log/queues/q").join(FLOOR_FILE));
        fs.remove_dir_all(Path::new("/log/queues/q")).unwrap();
        forget(&log, "q").unwrap();
        assert!(log.cursors().unwrap().is_empty());
        assert!(log.stats().damaged_floor_files.is_empty());
        forget(&log, "q").unwrap();
    }

    #[test]
    fn floor_file_round_trips() {
        let b = encode(1234, true);
        assert_eq!(decode(&b), Some((1234, true)));
        assert_eq!(decode(&encode(7, false)), Some((7, false)));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 4;
            assert_eq!(decode(&c), None, "flip at {i}");
        }
    }
}
