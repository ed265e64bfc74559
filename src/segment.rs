//! One segment: a `.log` file of batches with its `.index` and `.timeindex`, named by
//! the base offset. The active segment is written through a memory map; sealed ones
//! are opened and mapped read-only on first use, through the log's bounded cache of
//! open segments (see `cache.rs`). Readers read only below the published end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::batch::{self, Batch};
use crate::fs::{FileHandle, FileSystem, Mapping, OpenMode};
use crate::index::{self, Indexes};
use crate::{Error, Offset, Result};

mod cache;
mod lookup;
mod spare;
mod write;

use cache::Handles;
pub(crate) use cache::SegmentCache;

pub(crate) use lookup::BatchRef;
pub(crate) use spare::Spare;
pub(crate) use write::{Decision, Publish, TurnWaiters};

pub(crate) const LOG_SUFFIX: &str = ".log";
pub(crate) const INDEX_SUFFIX: &str = ".index";
pub(crate) const TIMEINDEX_SUFFIX: &str = ".timeindex";

/// `dir/<20-digit base><suffix>`.
/// Removes the index files of the segment based at `base_offset` in `dir`, if any
/// (not synced: the caller syncs the directory when it must be durable).
pub(crate) fn remove_index_files(
    fs: &dyn FileSystem,
    dir: &Path,
    base_offset: Offset,
) -> Result<()> {
    for suffix in [INDEX_SUFFIX, TIMEINDEX_SUFFIX] {
        let p = file_path(dir, base_offset, suffix);
        if fs.exists(&p) {
            fs.remove_file(&p)
                .map_err(|e| Error::io("remove index file", &p, e))?;
        }
    }
    Ok(())
}

pub(crate) fn file_path(dir: &Path, base: Offset, suffix: &str) -> PathBuf {
    dir.join(format!("{base:020}{suffix}"))
}

/// The base offset of a file named `<20 digits><suffix>`.
pub(crate) fn parse_file_name(name: &str, suffix: &str) -> Option<Offset> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A stretch of a segment whose bytes do not decode, found inside durable data.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRange {
    /// Base offset of the segment holding the bad bytes.
    pub segment: Offset,
    /// First bad byte position in the `.log` file.
    pub start_position: u64,
    /// Position of the next good batch (or the end of the segment).
    pub end_position: u64,
    /// The first offset readable after the bad bytes, if any batch follows them.
    pub next_offset: Option<Offset>,
    /// What check failed.
    pub reason: String,
}

/// Facts about a segment that need a look at its files to know.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentMeta {
    /// Largest record timestamp (`i64::MIN` when empty).
    pub max_timestamp: i64,
    /// Largest append time of a batch (`i64::MIN` when empty).
    pub max_append_time: i64,
    /// Append time of the first batch (`i64::MIN` when empty).
    pub first_append_time: i64,
    /// Last offset of the last batch, if any.
    pub last_offset: Option<Offset>,
}

impl SegmentMeta {
    pub const EMPTY: SegmentMeta = SegmentMeta {
        max_timestamp: i64::MIN,
        max_append_time: i64::MIN,
        first_append_time: i64::MIN,
        last_offset: None,
    };

    pub fn add_batch(&mut self, b: &Batch<'_>) {
        let (max_timestamp, append_time) = (b.max_timestamp, b.append_time);
        self.last_offset = Some(b.last_offset());
        if self.first_append_time == i64::MIN {
            self.first_append_time = append_time;
        }
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        self.max_append_time = self.max_append_time.max(append_time);
    }
}

#[derive(Debug)]
struct Loaded {
    indexes: Indexes,
    meta: SegmentMeta,
}

/// One segment of the log. Shared by `Arc` between the writer, readers and maintenance.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: Offset,
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    /// The open file and mapping: opened on first use for sealed segments (a log may
    /// have thousands), released by the cache past its limit.
    handles: Arc<Handles>,
    cache: Arc<SegmentCache>,
    /// Sealed by a roll in this process (its post-roll fsync unpins it).
    sealed: AtomicBool,
    /// Bytes readers may read: every batch below is complete.
    published: AtomicU64,
    /// Bytes whose publication is complete, log end offset included: the position
    /// of the next batch to publish (appenders publish in position order, each
    /// waiting for its turn; see `writer/reserve.rs`). Equal to `published` except
    /// while a batch is being published.
    settled: AtomicU64,
    /// Offset after the last record (the next segment's base once sealed).
    next_offset: AtomicU64,
    loaded: RwLock<Option<Loaded>>,
    /// The segment's metadata once loaded, in atomics so the single writer updates it
    /// without a lock: largest record timestamp, largest and first append times
    /// (`i64::MIN`: none), last offset (`u64::MAX`: none).
    max_timestamp: AtomicI64,
    max_append_time: AtomicI64,
    first_append_time: AtomicI64,
    last_offset: AtomicU64,
    corrupt: Mutex<Vec<CorruptRange>>,
    /// Retired by retention or compaction: its files are renamed away.
    pub retired: AtomicBool,
    /// Bytes between index entries when (re)building indexes.
    index_interval: AtomicU64,
    mapped_writable: AtomicBool,
    /// Active segments: true once sealed (cut to its data), so that the preparer
    /// never grows the file again; held across the preparer's `allocate`.
    no_growth: Mutex<bool>,
    /// Bytes of the file the preparer has allocated ahead of the writer.
    allocated_ahead: AtomicU64,
    /// The largest allocation ahead asked of the preparer.
    asked_ahead: AtomicU64,
}

impl Segment {
    /// Creates a new, empty active segment with `capacity` bytes of address space,
    /// `initial_alloc` of them allocated on disk.
    pub fn create(
        fs: &Arc<dyn FileSystem>,
        cache: &Arc<SegmentCache>,
        dir: &Path,
        base_offset: Offset,
        capacity: u64,
        initial_alloc: u64,
    ) -> Result<Segment> {
        let path = file_path(dir, base_offset, LOG_SUFFIX);
        let file = fs
            .open(&path, OpenMode::Create)
            .map_err(|e| Error::io("create segment", &path, e))?;
        file.set_len(0)
            .and_then(|()| file.allocate(initial_alloc))
            .map_err(|e| Error::io("allocate segment", &path, e))?;
        // Stale index files of an earlier segment with this base would mislead a reopen.
        remove_index_files(&**fs, dir, base_offset)?;
        let seg = Segment::new(fs, cache, dir, base_offset, Some(file), 0, base_offset);
        seg.map_writable(capacity)?;
        *seg.loaded.write() = Some(Loaded {
            indexes: Indexes::default(),
            meta: SegmentMeta::EMPTY,
        });
        Ok(seg)
    }

    /// A segment with `len` valid bytes and records below `next_offset`. The file
    /// (when not given), indexes and metadata load lazily.
    /// A `file` given is the writable file of a segment about to become active:
    /// pinned, never released by the cache.
    pub fn new(
        fs: &Arc<dyn FileSystem>,
        cache: &Arc<SegmentCache>,
        dir: &Path,
        base_offset: Offset,
        file: Option<Arc<dyn FileHandle>>,
        len: u64,
        next_offset: Offset,
    ) -> Segment {
        let handles = Arc::new(Handles::default());
        if let Some(f) = file {
            handles.pin();
            handles.set_file(f);
        }
        Segment {
            base_offset,
            dir: dir.to_path_buf(),
            fs: Arc::clone(fs),
            handles,
            cache: Arc::clone(cache),
            sealed: AtomicBool::new(false),
            published: AtomicU64::new(len),
            settled: AtomicU64::new(len),
            next_offset: AtomicU64::new(next_offset),
            loaded: RwLock::new(None),
            max_timestamp: AtomicI64::new(i64::MIN),
            max_append_time: AtomicI64::new(i64::MIN),
            first_append_time: AtomicI64::new(i64::MIN),
            last_offset: AtomicU64::new(u64::MAX),
            corrupt: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
            index_interval: AtomicU64::new(4096),
            mapped_writable: AtomicBool::new(false),
            no_growth: Mutex::new(false),
            allocated_ahead: AtomicU64::new(0),
            asked_ahead: AtomicU64::new(0),
        }
    }

    pub fn set_index_interval(&self, bytes: u32) {
        self.index_interval
            .store(u64::from(bytes), Ordering::Relaxed);
    }

    pub fn index_interval(&self) -> u64 {
        self.index_interval.load(Ordering::Relaxed)
    }

    /// True when the `.log` file has been opened (it may be released since).
    pub fn was_opened(&self) -> bool {
        self.handles.was_opened()
    }

    /// True when the `.log` file is open or mapped now.
    #[cfg(test)]
    pub fn holds_handles(&self) -> bool {
        self.handles.holds_any()
    }

    /// Keeps the file open and mapped for as long as the segment lives, opening them
    /// now if needed: before its files are renamed away (retention, compaction), so
    /// readers holding the segment keep reading it.
    pub fn keep_open(&self) -> Result<()> {
        self.handles.pin();
        self.mapping().map(drop)
    }

    pub fn is_mapped_writable(&self) -> bool {
        self.mapped_writable.load(Ordering::Acquire)
    }

    /// The loaded indexes and metadata, if loaded.
    pub fn loaded_clone(&self) -> Option<(Indexes, SegmentMeta)> {
        self.loaded
            .read()
            .as_ref()
            .map(|l| (l.indexes.clone(), self.meta_now()))
    }

    /// `(relative offset, position)` of every offset-index entry (loads them).
    pub fn index_entries_list(&self) -> Result<Vec<(u32, u32)>> {
        let guard = self.load()?;
        Ok(guard
            .as_ref()
            .expect("load() fills the slot")
            .indexes
            .offsets
            .iter()
            .map(|e| (e.rel_offset, e.position))
            .collect())
    }

    /// `(timestamp, relative offset)` of every time-index entry (loads them).
    pub fn time_entries_list(&self) -> Result<Vec<(i64, u32)>> {
        let guard = self.load()?;
        Ok(guard
            .as_ref()
            .expect("load() fills the slot")
            .indexes
            .times
            .iter()
            .map(|e| (e.timestamp, e.rel_offset))
            .collect())
    }

    /// Opens the segment's file for writing and maps `capacity` bytes of it; only for
    /// the active segment, before any read.
    pub fn map_writable(&self, capacity: u64) -> Result<()> {
        let len = usize::try_from(capacity).map_err(|_| {
            Error::InvalidConfig("segment capacity exceeds the address space".into())
        })?;
        self.handles.pin();
        if self.handles.file().is_none() {
            let path = self.path();
            let f = self
                .fs
                .open(&path, OpenMode::Write)
                .map_err(|e| Error::io("open segment", &path, e))?;
            self.handles.set_file(f);
        }
        let file = self.file()?;
        let map = if self.cache.writes_through_file() {
            file.map_writing_through_file(len)
        } else {
            file.map(len)
        }
        .map_err(|e| Error::io("map segment", self.path(), e))?;
        if self.handles.map().is_some() {
            return Err(Error::InvalidConfig("segment mapped twice".into()));
        }
        self.handles.set_map(map);
        self.mapped_writable.store(true, Ordering::Release);
        Ok(())
    }

    /// Installs indexes and metadata found by a scan (recovery).
    pub fn set_loaded(&self, indexes: Indexes, meta: SegmentMeta) {
        self.store_meta(&meta);
        *self.loaded.write() = Some(Loaded { indexes, meta });
    }

    fn store_meta(&self, meta: &SegmentMeta) {
        self.max_timestamp
            .store(meta.max_timestamp, Ordering::Release);
        self.max_append_time
            .store(meta.max_append_time, Ordering::Release);
        self.first_append_time
            .store(meta.first_append_time, Ordering::Release);
        self.last_offset
            .store(meta.last_offset.unwrap_or(u64::MAX), Ordering::Release);
    }

    pub fn path(&self) -> PathBuf {
        file_path(&self.dir, self.base_offset, LOG_SUFFIX)
    }

    /// The `.log` file, opened read-only on first use when not open (or released).
    pub fn file(&self) -> Result<Arc<dyn FileHandle>> {
        if let Some(f) = self.handles.file() {
            return Ok(f);
        }
        let path = self.path();
        let f = self
            .fs
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let (f, admit) = self.handles.set_file(f);
        if admit {
            self.cache.admit(&self.handles);
        }
        Ok(f)
    }

    /// Cuts the file (and what readers see) to `len` bytes: recovery only.
    pub fn truncate_to(&self, len: u64) -> Result<()> {
        // A sealed segment's own handle is read-only: cut through a writable one.
        let path = self.path();
        self.fs
            .open(&path, OpenMode::Write)
            .and_then(|f| f.set_len(len))
            .map_err(|e| Error::io("truncate segment", &path, e))?;
        self.published.store(len, Ordering::Release);
        self.settled.store(len, Ordering::Release);
        Ok(())
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> Offset {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn set_next_offset(&self, next: Offset) {
        self.next_offset.store(next, Ordering::Release);
    }

    /// The writable mapping of the active segment, if this is one.
    pub fn writable_mapping(&self) -> Option<Arc<dyn Mapping>> {
        if self.is_mapped_writable() {
            self.handles.map()
        } else {
            None
        }
    }

    /// The mapping, created read-only at the published size on first use (or after
    /// the cache released it).
    pub fn mapping(&self) -> Result<Arc<dyn Mapping>> {
        if let Some(m) = self.handles.map() {
            return Ok(m);
        }
        let len = usize::try_from(self.published())
            .map_err(|_| Error::corrupt(self.path(), 0, None, "segment larger than memory"))?;
        let map = self
            .file()?
            .map(len)
            .map_err(|e| Error::io("map segment", self.path(), e))?;
        // Another reader may have won the race; either mapping is fine.
        let (map, admit) = self.handles.set_map(map);
        if admit {
            self.cache.admit(&self.handles);
        }
        Ok(map)
    }

    /// Number of offset-index entries (loaded segments only; 0 otherwise).
    pub fn index_entries(&self) -> usize {
        self.loaded
            .read()
            .as_ref()
            .map_or(0, |l| l.indexes.offsets.len())
    }

    /// The offset after the segment's last batch (its base when it has none): below
    /// [`Segment::next_offset`] only when offsets are missing at its end.
    pub fn content_end(&self) -> Result<Offset> {
        Ok(self.meta()?.last_offset.map_or(self.base_offset, |o| o + 1))
    }

    /// True when offsets are missing between the segment's last batch and its end
    /// (or its batches cannot be read to tell).
    pub fn has_gap_after(&self) -> bool {
        self.content_end()
            .map_or(true, |end| end < self.next_offset())
    }

    /// Largest record timestamp (loads the segment's metadata if needed).
    pub fn meta(&self) -> Result<SegmentMeta> {
        drop(self.load()?);
        Ok(self.meta_now())
    }

    /// The metadata as the atomics hold it (all empty before the segment is loaded).
    fn meta_now(&self) -> SegmentMeta {
        let last = self.last_offset.load(Ordering::Acquire);
        SegmentMeta {
            max_timestamp: self.max_timestamp.load(Ordering::Acquire),
            max_append_time: self.max_append_time.load(Ordering::Acquire),
            first_append_time: self.first_append_time.load(Ordering::Acquire),
            last_offset: (last != u64::MAX).then_some(last),
        }
    }

    fn load(&self) -> Result<RwLockReadGuard<'_, Option<Loaded>>> {
        {
            let guard = self.loaded.read();
            if guard.is_some() {
                return Ok(guard);
            }
        }
        let loaded = self.load_from_files().map_or_else(|| self.rebuild(), Ok)?;
        let mut w = self.loaded.write();
        if w.is_none() {
            self.store_meta(&loaded.meta);
            *w = Some(loaded);
        }
        Ok(parking_lot::RwLockWriteGuard::downgrade(w))
    }

    /// Loads indexes and metadata without writing a byte: from the index files when
    /// they pass every check, else by a scan kept in memory (a read-only view must
    /// not rebuild index files on disk).
    pub fn load_without_writing(&self) -> Result<()> {
        if self.loaded.read().is_some() {
            return Ok(());
        }
        let loaded = match self.load_from_files() {
            Some(l) => l,
            None => {
                let (indexes, meta) = self.scan_all()?;
                Loaded { indexes, meta }
            }
        };
        let mut w = self.loaded.write();
        if w.is_none() {
            self.store_meta(&loaded.meta);
            *w = Some(loaded);
        }
        Ok(())
    }

    /// Indexes from the `.index`/`.timeindex` files, if they pass every check; the tail
    /// after the last entry is scanned for the metadata.
    fn load_from_files(&self) -> Option<Loaded> {
        let read = |suffix| -> Option<Vec<u8>> {
            let path = file_path(&self.dir, self.base_offset, suffix);
            let f = self.fs.open(&path, OpenMode::Read).ok()?;
            let len = usize::try_from(f.size().ok()?).ok()?;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, 0).ok()?;
            Some(buf)
        };
        let offsets = read(INDEX_SUFFIX)?;
        let times = read(TIMEINDEX_SUFFIX)?;
        let published = self.published();
        let (indexes, max_append_time) = Indexes::decode(&offsets, &times, published)?;
        let map = self.mapping().ok()?;
        let bytes = map.bytes(0, usize::try_from(published).ok()?);
        // Cross-check: every entry points at a batch starting with that offset.
        for e in &indexes.offsets {
            let (_, base, _) = batch::peek_offsets(&bytes[e.position as usize..]).ok()?;
            if Some(base) != self.base_offset.checked_add(u64::from(e.rel_offset)) {
                return None;
            }
        }
        let mut meta = SegmentMeta::EMPTY;
        if let Some(last) = indexes.times.last() {
            meta.max_timestamp = last.timestamp;
        }
        // Every batch's, from the trailer: the tail read below holds only the last
        // ones, and the clock may have gone back within the segment.
        meta.max_append_time = max_append_time;
        // Read the first batch for its append time and the tail for the maxima.
        if let Ok(first) = batch::decode(bytes) {
            meta.first_append_time = first.append_time;
        }
        // The last time entry only bounds the records before its batch, and later
        // offset entries add no time entry while the maximum does not grow: the
        // maximum timestamp needs every batch from that time entry's batch on.
        let tail_start = indexes
            .times
            .last()
            .map_or(0, |t| indexes.floor_position(t.rel_offset) as usize);
        let mut pos = tail_start;
        while pos < bytes.len() {
            let b = batch::decode(&bytes[pos..]).ok()?;
            meta.add_batch(&b);
            pos += b.len();
        }
        Some(Loaded { indexes, meta })
    }

    /// Rebuilds indexes and metadata by scanning the whole segment, and writes the
    /// index files back (best effort: they are a cache).
    fn rebuild(&self) -> Result<Loaded> {
        let (indexes, meta) = self.scan_all()?;
        let _ = self.write_index_files(&indexes, meta.max_append_time);
        Ok(Loaded { indexes, meta })
    }

    /// Indexes and metadata from a full scan; corrupt stretches are recorded and skipped.
    fn scan_all(&self) -> Result<(Indexes, SegmentMeta)> {
        let map = self.mapping()?;
        let published = usize::try_from(self.published()).expect("mapped, so it fits usize");
        let bytes = map.bytes(0, published);
        let mut indexes = Indexes::default();
        let mut meta = SegmentMeta::EMPTY;
        let interval = usize::try_from(self.index_interval()).unwrap_or(usize::MAX);
        let mut since_index = usize::MAX;
        let mut pos = 0;
        let mut last_offset = None;
        while pos < bytes.len() {
            match batch::decode(&bytes[pos..]).and_then(|b| b.validate_records().map(|()| b)) {
                Ok(b) => {
                    if since_index >= interval {
                        if let (Some(rel), Ok(p)) = (
                            index::relative(self.base_offset, b.base_offset),
                            u32::try_from(pos),
                        ) {
                            indexes.push(rel, p, meta.max_timestamp);
                            since_index = 0;
                        }
                    }
                    meta.add_batch(&b);
                    since_index = since_index.saturating_add(b.len());
                    last_offset = Some(b.last_offset());
                    pos += b.len();
                }
                Err(e) => match self.skip_corrupt(bytes, pos, last_offset, &e) {
                    Some(next) => pos = next,
                    None => break,
                },
            }
        }
        Ok((indexes, meta))
    }

    /// Writes the index files of `indexes`, for a segment whose batches' largest
    /// append time is `max_append_time` (not synced; validated on load, so a torn one
    /// is rebuilt).
    pub fn write_index_files(&self, indexes: &Indexes, max_append_time: i64) -> Result<()> {
        // The indexes describe every batch published so far (every caller: a seal,
        // a rebuild, a recovered or cleaned segment, none growing meanwhile).
        let trailer = index::Trailer {
            log_len: self.published(),
            max_append_time,
        };
        for (suffix, bytes) in [
            (INDEX_SUFFIX, indexes.encode_offsets(trailer)),
            (TIMEINDEX_SUFFIX, indexes.encode_times(trailer)),
        ] {
            let path = file_path(&self.dir, self.base_offset, suffix);
            let f = self
                .fs
                .open(&path, OpenMode::Create)
                .map_err(|e| Error::io("open index", &path, e))?;
            f.set_len(0)
                .and_then(|()| f.write_all_at(&bytes, 0))
                .map_err(|e| Error::io("write index", &path, e))?;
        }
        Ok(())
    }
}
