//! The bounded set of sealed segments whose `.log` file is open or mapped
//! (`LogConfig::max_open_segments`): a sealed segment opens and maps its file on first
//! use and joins the set; past the limit the set releases the handles of a segment not
//! used since the last sweep (the CLOCK second-chance policy: one atomic store per
//! use, no lock on the read path). A reader that still holds a released mapping keeps
//! reading it (it is reference-counted; a read-only mapping holds no descriptor).
//!
//! Never released (pinned): the active segment (written through its map), a sealed
//! segment until its post-roll fsync (re-opening a file to fsync it could miss a
//! write-back error reported on the old descriptor), and a retired segment (its files
//! are renamed away, so it could not be opened again).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use crate::fs::{FileHandle, Mapping};

/// A segment's open file and mapping, shared with the cache.
#[derive(Debug, Default)]
pub(crate) struct Handles {
    slots: RwLock<Slots>,
    /// Used since the last sweep passed it.
    referenced: AtomicBool,
    pinned: AtomicBool,
    /// Ever opened (recovery fsyncs the segments it opened, released or not).
    opened: AtomicBool,
}

#[derive(Debug, Default)]
struct Slots {
    file: Option<Arc<dyn FileHandle>>,
    map: Option<Arc<dyn Mapping>>,
    /// In the cache's ring.
    admitted: bool,
}

impl Handles {
    pub fn file(&self) -> Option<Arc<dyn FileHandle>> {
        let f = self.slots.read().file.clone();
        if f.is_some() {
            self.referenced.store(true, Ordering::Relaxed);
        }
        f
    }

    pub fn map(&self) -> Option<Arc<dyn Mapping>> {
        let m = self.slots.read().map.clone();
        if m.is_some() {
            self.referenced.store(true, Ordering::Relaxed);
        }
        m
    }

    /// Runs `f` on the mapping without cloning it (the append path).
    pub fn with_map<R>(&self, f: impl FnOnce(Option<&Arc<dyn Mapping>>) -> R) -> R {
        f(self.slots.read().map.as_ref())
    }

    /// Installs `file` unless one is there; returns the one in place and whether the
    /// caller must admit the segment to the cache (it held nothing before).
    pub fn set_file(&self, file: Arc<dyn FileHandle>) -> (Arc<dyn FileHandle>, bool) {
        let mut s = self.slots.write();
        self.opened.store(true, Ordering::Release);
        self.referenced.store(true, Ordering::Relaxed);
        let f = Arc::clone(s.file.get_or_insert(file));
        (f, self.take_admission(&mut s))
    }

    /// As [`Handles::set_file`] for the mapping.
    pub fn set_map(&self, map: Arc<dyn Mapping>) -> (Arc<dyn Mapping>, bool) {
        let mut s = self.slots.write();
        self.opened.store(true, Ordering::Release);
        self.referenced.store(true, Ordering::Relaxed);
        let m = Arc::clone(s.map.get_or_insert(map));
        (m, self.take_admission(&mut s))
    }

    /// True when the segment must join the cache's ring now: it holds something, is
    /// not in the ring and is not pinned (pinned ones join when unpinned).
    fn take_admission(&self, s: &mut Slots) -> bool {
        let admit = !s.admitted && !self.is_pinned() && (s.file.is_some() || s.map.is_some());
        if admit {
            s.admitted = true;
        }
        admit
    }

    pub fn pin(&self) {
        self.pinned.store(true, Ordering::Release);
    }

    /// Unpins; true when the segment must join the cache's ring now.
    pub fn unpin(&self) -> bool {
        if !self.pinned.swap(false, Ordering::AcqRel) {
            return false;
        }
        self.take_admission(&mut self.slots.write())
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Acquire)
    }

    /// True when the file is open or mapped now.
    #[cfg(test)]
    pub fn holds_any(&self) -> bool {
        let s = self.slots.read();
        s.file.is_some() || s.map.is_some()
    }

    pub fn was_opened(&self) -> bool {
        self.opened.load(Ordering::Acquire)
    }

    /// Drops the file and mapping unless pinned; true when released.
    fn release(&self) -> bool {
        let mut s = self.slots.write();
        if self.is_pinned() {
            return false;
        }
        s.file = None;
        s.map = None;
        s.admitted = false;
        true
    }
}

/// The set of sealed segments holding an open file or a mapping, bounded.
#[derive(Debug)]
pub(crate) struct SegmentCache {
    limit: usize,
    /// The log's write mode, shared by its segments like the cache: the active
    /// segment is written through the file (`pwrite`) rather than into its mapping
    /// (see [`crate::fs::FileSystem::reserves_allocation`]).
    write_through_file: AtomicBool,
    ring: Mutex<VecDeque<Weak<Handles>>>,
    released: AtomicU64,
}

impl SegmentCache {
    /// Sets the log's write mode (at open, before any segment is mapped for writing).
    pub fn set_write_through_file(&self, yes: bool) {
        self.write_through_file.store(yes, Ordering::Relaxed);
    }

    /// True when active segments are written through the file, not their mapping.
    pub fn writes_through_file(&self) -> bool {
        self.write_through_file.load(Ordering::Relaxed)
    }

    pub fn new(limit: usize) -> Arc<SegmentCache> {
        Arc::new(SegmentCache {
            limit: limit.max(1),
            write_through_file: AtomicBool::new(false),
            ring: Mutex::new(VecDeque::new()),
            released: AtomicU64::new(0),
        })
    }

    /// Adds a segment that just opened or mapped its file; releases others past the
    /// limit. The caller holds none of the segment's locks.
    pub fn admit(&self, handles: &Arc<Handles>) {
        let mut ring = self.ring.lock();
        ring.push_back(Arc::downgrade(handles));
        // Each entry is passed over at most twice (once to clear its reference bit).
        let mut budget = ring.len() * 2 + 1;
        while ring.len() > self.limit && budget > 0 {
            budget -= 1;
            let Some(weak) = ring.pop_front() else {
                break;
            };
            let Some(h) = weak.upgrade() else {
                continue;
            };
            if h.is_pinned() {
                // Active or retired: not this cache's to release; it comes back when
                // a sealed segment is unpinned after its fsync.
                h.slots.write().admitted = false;
                continue;
            }
            if h.referenced.swap(false, Ordering::Relaxed) {
                ring.push_back(weak);
                continue;
            }
            if h.release() {
                self.released.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Segments in the ring (open or mapped, not pinned when they joined).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ring.lock().len()
    }

    /// Segments released so far.
    #[cfg(test)]
    pub fn released(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FileSystem, OpenMode};
    use crate::sim::SimFs;
    use std::path::Path;

    fn opened(fs: &SimFs, cache: &SegmentCache, i: usize) -> Arc<Handles> {
        let path = format!("/f{i}");
        fs.write_file(&path, b"x").unwrap();
        let h = Arc::new(Handles::default());
        let f = fs.open(Path::new(&path), OpenMode::Read).unwrap();
        let (_, admit) = h.set_file(f);
        assert!(admit);
        cache.admit(&h);
        h
    }

    #[test]
    fn the_cache_holds_at_most_its_limit_and_spares_pinned_and_recent_ones() {
        let fs = SimFs::new(0);
        let cache = SegmentCache::new(3);
        let pinned = Arc::new(Handles::default());
        pinned.pin();
        fs.write_file("/p", b"").unwrap();
        let (_, admit) = pinned.set_file(fs.open(Path::new("/p"), OpenMode::Read).unwrap());
        assert!(!admit, "pinned segments join when unpinned");
        let hs: Vec<_> = (0..10).map(|i| opened(&fs, &cache, i)).collect();
        assert!(cache.len() <= 3, "{}", cache.len());
        assert_eq!(hs.iter().filter(|h| h.holds_any()).count(), cache.len());
        assert!(pinned.holds_any(), "pinned handles are never released");
        assert!(pinned.unpin(), "unpinned: it joins");
        cache.admit(&pinned);
        assert!(cache.len() <= 3);
        assert!(hs[9].holds_any(), "the newest stays");
        assert!(cache.released() >= 7);
        // A released segment opens again and rejoins.
        let f = fs.open(Path::new("/f0"), OpenMode::Read).unwrap();
        let (_, admit) = hs[0].set_file(f);
        assert!(admit);
        cache.admit(&hs[0]);
        assert!(hs[0].holds_any() && hs[0].was_opened());
        assert!(cache.len() <= 3);
    }
}
