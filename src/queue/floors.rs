//! Retention floors of every queue under `<log dir>/queues/`, open or not.
//!
//! Each queue keeps a `floor` file (`"LQF1" | floor u64 | protect u8 | crc32`, replaced
//! durably) written when the queue opens, when it writes a snapshot and when
//! [`super::Queue::flush`] finds the floor moved. It is never ahead of the durable
//! queue state, so a queue that crashed protects from an older, lower floor: more is
//! kept, never less. One provider per log ([`crate::Log`]'s retention asks it on each
//! pass) lists `queues/`, takes the in-memory floor of the queues open in this process
//! and reads the `floor` file of the others.
//!
//! Fail safe: a `floor` file that is damaged or unreadable, or missing from a queue
//! directory that has a snapshot (the queue exists), protects everything (floor 0: the
//! log's start) and is listed in [`crate::LogStats::damaged_floor_files`] until the
//! queue is opened again (open rewrites the file from the queue's state). Floor 0
//! rather than the snapshot's floor: the snapshot does not say whether the queue
//! protects its records at all, and reading it (megabytes with many records in
//! flight) on every retention pass would cost more than keeping segments until the
//! operator sees the report. A directory with neither (a queue whose creation crashed
//! before its snapshot) has nothing to protect. An unreadable `queues/` directory
//! protects everything too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::checkpoint;
use crate::fs::{FileSystem, OpenMode};
use crate::{Offset, Result};

pub(crate) const FLOOR_FILE: &str = "floor";
const MAGIC: &[u8; 4] = b"LQF1";
const PROVIDER: &str = "queue-floors";

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

/// The floor and protect flag the `floor` file in `dir` holds, if it checks out.
pub(crate) fn read(fs: &dyn FileSystem, dir: &Path) -> Option<(Offset, bool)> {
    decode(&checkpoint::read_small(fs, &dir.join(FLOOR_FILE))?)
}

/// Durably records the queue's floor and whether it protects its unacked records.
pub(crate) fn write(fs: &dyn FileSystem, dir: &Path, floor: Offset, protect: bool) -> Result<()> {
    checkpoint::durable_replace(fs, dir, FLOOR_FILE, &encode(floor, protect))
}

/// The floors of a log's queues, shared by its open queues and its retention.
pub(crate) struct QueueFloors {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    /// Queues opened in this process, by name: in-memory floor and `protect_unacked`.
    open: Mutex<HashMap<String, (Weak<AtomicU64>, bool)>>,
    /// Where the last pass reports the files that made it protect everything (the
    /// log's retention state shows them in its stats).
    damaged: Arc<Mutex<Vec<PathBuf>>>,
}

impl std::fmt::Debug for QueueFloors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueFloors")
            .field("dir", &self.dir)
            .finish()
    }
}

impl QueueFloors {
    /// The provider of `log`, registered with its retention on first use.
    pub fn of(log: &crate::Log) -> Arc<QueueFloors> {
        let make = || QueueFloors {
            fs: Arc::clone(&log.config().fs),
            dir: log.dir().join("queues"),
            open: Mutex::new(HashMap::new()),
            damaged: Arc::clone(&log.inner.retention.damaged_floors),
        };
        log.retention_provider(PROVIDER, make, QueueFloors::lowest)
    }

    /// Tells retention to use `floor` (while it is alive) for the queue `name`.
    pub fn register(&self, name: &str, floor: &Arc<AtomicU64>, protect: bool) {
        let mut open = self.open.lock();
        open.retain(|_, (w, _)| w.strong_count() > 0);
        open.insert(name.to_string(), (Arc::downgrade(floor), protect));
    }

    /// The lowest floor of the queues that protect their unacked records; 0 for a
    /// queue whose floor cannot be known (see the module docs), reported.
    fn lowest(&self) -> Option<Offset> {
        let mut damaged = Vec::new();
        let names = match self.fs.list(&self.dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(_) => {
                damaged.push(self.dir.clone());
                Vec::new()
            }
        };
        let mut lowest = (!damaged.is_empty()).then_some(0);
        let open = self.open.lock();
        let mut names = names;
        names.sort();
        for name in names {
            if let Some((w, protect)) = open.get(&name) {
                if let Some(floor) = w.upgrade() {
                    if *protect {
                        let f = floor.load(Ordering::Acquire);
                        lowest = Some(lowest.map_or(f, |l| l.min(f)));
                    }
                    continue;
                }
            }
            let floor = match self.read_floor(&self.dir.join(&name)) {
                Read::Floor(floor, protect) => protect.then_some(floor),
                Read::NoQueue => None,
                Read::Unknown(path) => {
                    damaged.push(path);
                    Some(0)
                }
            };
            if let Some(f) = floor {
                lowest = Some(lowest.map_or(f, |l| l.min(f)));
            }
        }
        *self.damaged.lock() = damaged;
        lowest
    }

    /// What the `floor` file of the queue directory `dir` says.
    fn read_floor(&self, dir: &Path) -> Read {
        let path = dir.join(FLOOR_FILE);
        match read_file(&*self.fs, &path) {
            Ok(Some(bytes)) => match decode(&bytes) {
                Some((floor, protect)) => Read::Floor(floor, protect),
                None => Read::Unknown(path),
            },
            Ok(None) if self.fs.exists(&dir.join(super::journal::SNAPSHOT)) => Read::Unknown(path),
            Ok(None) => Read::NoQueue,
            // A stray file in `queues/`, not a queue.
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Read::NoQueue,
            Err(_) => Read::Unknown(path),
        }
    }
}

/// A queue's floor as its `floor` file tells it.
enum Read {
    Floor(Offset, bool),
    /// Not a queue, or one whose creation never finished: nothing to protect.
    NoQueue,
    /// Damaged, unreadable, or missing while the queue exists: protect everything.
    Unknown(PathBuf),
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
    use crate::sim::SimFs;

    fn floors(fs: &SimFs) -> QueueFloors {
        QueueFloors {
            fs: Arc::new(fs.clone()),
            dir: PathBuf::from("/log/queues"),
            open: Mutex::new(HashMap::new()),
            damaged: Arc::default(),
        }
    }

    #[test]
    fn unknown_floors_protect_everything_and_are_reported() {
        let fs = SimFs::new(0);
        let f = floors(&fs);
        assert_eq!(f.lowest(), None, "no queues/ directory: nothing to protect");
        fs.write_file("/log/queues/a/floor", &encode(40, true))
            .unwrap();
        fs.write_file("/log/queues/b/floor", &encode(10, false))
            .unwrap();
        // A stray file, and a queue whose creation never wrote its snapshot.
        fs.write_file("/log/queues/stray", b"x").unwrap();
        fs.write_file("/log/queues/c/queue.lock", b"").unwrap();
        assert_eq!(f.lowest(), Some(40));
        assert!(f.damaged.lock().is_empty());
        // A queue with a snapshot and no floor file.
        fs.write_file("/log/queues/d/snapshot", b"s").unwrap();
        assert_eq!(f.lowest(), Some(0));
        assert_eq!(
            *f.damaged.lock(),
            vec![PathBuf::from("/log/queues/d/floor")]
        );
        fs.write_file("/log/queues/d/floor", &encode(50, true))
            .unwrap();
        assert_eq!(f.lowest(), Some(40));
        assert!(
            f.damaged.lock().is_empty(),
            "the report follows the last pass"
        );
        // Damaged: even a queue that did not protect now protects everything.
        fs.corrupt_byte("/log/queues/b/floor", 5, 1).unwrap();
        assert_eq!(f.lowest(), Some(0));
        assert_eq!(
            *f.damaged.lock(),
            vec![PathBuf::from("/log/queues/b/floor")]
        );
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
