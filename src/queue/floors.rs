//! Retention floors of every queue under `<log dir>/queues/`, open or not.
//!
//! Each queue keeps a `floor` file (`"LQF1" | floor u64 | protect u8 | crc32`, replaced
//! durably) written when the queue opens, when it writes a snapshot and when
//! [`super::Queue::flush`] finds the floor moved. It is never ahead of the durable
//! queue state, so a queue that crashed protects from an older, lower floor: more is
//! kept, never less. One provider per log ([`crate::Log`]'s retention asks it on each
//! pass) lists `queues/`, takes the in-memory floor of the queues open in this process
//! and reads the `floor` file of the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::checkpoint;
use crate::fs::FileSystem;
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
        };
        log.retention_provider(PROVIDER, make, QueueFloors::lowest)
    }

    /// Tells retention to use `floor` (while it is alive) for the queue `name`.
    pub fn register(&self, name: &str, floor: &Arc<AtomicU64>, protect: bool) {
        let mut open = self.open.lock();
        open.retain(|_, (w, _)| w.strong_count() > 0);
        open.insert(name.to_string(), (Arc::downgrade(floor), protect));
    }

    /// The lowest floor of the queues that protect their unacked records.
    fn lowest(&self) -> Option<Offset> {
        let names = self.fs.list(&self.dir).ok()?;
        let open = self.open.lock();
        names
            .iter()
            .filter_map(|name| {
                if let Some((w, protect)) = open.get(name) {
                    if let Some(floor) = w.upgrade() {
                        return protect.then(|| floor.load(Ordering::Acquire));
                    }
                }
                let path = self.dir.join(name).join(FLOOR_FILE);
                let (floor, protect) = decode(&checkpoint::read_small(&*self.fs, &path)?)?;
                protect.then_some(floor)
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
