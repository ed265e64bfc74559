//! [`Log::open_read_only`]: a view of a log directory that another process may have
//! open and be appending to, rolling, retaining and compacting, while this one reads.
//!
//! The view takes no lock and never writes, truncates, renames or creates a file: no
//! recovery, no index rebuild on disk (indexes that fail their checks are rebuilt in
//! memory). It is refreshed by re-listing the directory:
//!
//! - sealed segments are opened read-only (their files are never changed in place:
//!   retention and the cleaner rename them away and unlink them, which leaves an open
//!   file readable), and reused as long as the name still holds the same file (inode);
//! - the last segment is the writer's active one, with zeroed space allocated past its
//!   data: it is read with `pread` from where the view stopped up to the last whole,
//!   CRC-valid batch that continues the offsets, and mapped only up to there (the
//!   writer cuts that file at its data when it rolls, never below, so the mapping
//!   never reaches past the file's end);
//! - a file that vanished between the listing and its opening, a name whose file
//!   changed meanwhile, or a cleaner swap half done (`*.swap` present, the originals
//!   partly renamed away) is an unsettled directory: it is listed again after a short
//!   pause; the view never shows offsets missing that a settled directory holds.
//!
//! The log-start-offset checkpoint is read after the listing: retention writes it
//! before it renames segments away, so a listing that no longer has a segment is
//! followed by a start offset past it.
//!
//! Missing or damaged files: a damaged log-start-offset checkpoint is
//! [`Error::Corrupt`], as for a writer; a damaged recovery point only means the durable
//! offset shown is the end offset; damaged bytes in a sealed segment are corrupt
//! ranges, reported by reads and `verify` as for a writer; in the last segment the view
//! stops before them (they may be a batch still being written).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::batch;
use crate::checkpoint::{self, RecoveryPointFile};
use crate::fs::{FileHandle, FileSystem, OpenMode};
use crate::index::{self, Indexes};
use crate::log::{Log, LogInner};
use crate::recovery::SWAP_SUFFIX;
use crate::segment::{self, Segment, SegmentCache, SegmentMeta, LOG_SUFFIX};
use crate::{Error, Offset, Result};

/// A reader's iterator at the end of the log looks at the files at most this often.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(2);
/// How often a tailing reader polls the files for growth.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Listings of an unsettled directory before the view takes it as it is.
const SETTLE_ATTEMPTS: u32 = 400;
const SETTLE_PAUSE: Duration = Duration::from_millis(5);

mod open;
/// Bytes of the active segment read per `pread` while catching up.
const TAIL_READ_BYTES: u64 = 8 << 20;

/// The refreshable state of a read-only log.
#[derive(Debug)]
pub(crate) struct ReadOnlyView {
    fs: Arc<dyn FileSystem>,
    state: Mutex<ViewState>,
}

#[derive(Debug, Default)]
struct ViewState {
    /// `(base, inode)` of each segment in the current snapshot.
    files: Vec<(Offset, u64)>,
    tail: Option<Tail>,
    refreshed_at: Option<Instant>,
}

/// What the view knows of the last (active) segment.
#[derive(Debug)]
struct Tail {
    base: Offset,
    inode: u64,
    file: Arc<dyn FileHandle>,
    /// Bytes of whole, valid batches from the start of the file.
    valid_end: u64,
    indexes: Indexes,
    meta: SegmentMeta,
    since_index: u64,
    segment: Arc<Segment>,
}

/// Why a refresh must list the directory again.
enum Unsettled {
    /// The directory changed under the listing: list again.
    Retry,
    Failed(Error),
}

impl From<Error> for Unsettled {
    fn from(e: Error) -> Unsettled {
        Unsettled::Failed(e)
    }
}

impl Log {
    /// True for a log opened with [`Log::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only.is_some()
    }
}

impl LogInner {
    /// [`Error::ReadOnly`] for a read-only view.
    pub(crate) fn refuse_read_only(&self) -> Result<()> {
        match self.read_only {
            Some(_) => Err(Error::ReadOnly),
            None => Ok(()),
        }
    }

    /// Brings a read-only view up to date with the directory; nothing for a
    /// writable log.
    pub(crate) fn refresh_view(&self) -> Result<()> {
        match &self.read_only {
            Some(view) => view.refresh(self, true),
            None => Ok(()),
        }
    }

    /// [`LogInner::refresh_view`] at most every 2 ms: for a reader's iterator asking
    /// again and again at the end of the log.
    pub(crate) fn refresh_view_soon(&self) -> Result<()> {
        match &self.read_only {
            Some(view) => view.refresh(self, false),
            None => Ok(()),
        }
    }

    /// [`LogInner::refresh_view`] for calls that return no `Result`: a failure is kept
    /// in [`crate::LogStats::last_background_error`].
    pub(crate) fn refresh_view_or_record(&self) {
        if let Err(e) = self.refresh_view() {
            self.record_background_error("read-only refresh", &e);
        }
    }
}

impl ReadOnlyView {
    /// Polls the files every [`POLL_INTERVAL`] until `ready()` or the deadline; true
    /// when ready.
    pub(crate) fn poll_until(
        &self,
        inner: &LogInner,
        deadline: Instant,
        ready: impl Fn() -> bool,
    ) -> Result<bool> {
        loop {
            self.refresh(inner, true)?;
            if ready() {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    fn refresh(&self, inner: &LogInner, force: bool) -> Result<()> {
        let mut st = self.state.lock();
        if !force
            && st
                .refreshed_at
                .is_some_and(|t| t.elapsed() < MIN_REFRESH_INTERVAL)
        {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            // The last attempt takes the directory as it is (a swap a crashed writer
            // left stays until the writer opens again): gaps then read as gaps.
            let settled_only = attempt + 1 < SETTLE_ATTEMPTS;
            match self.try_refresh(inner, &mut st, settled_only) {
                Ok(()) => break,
                Err(Unsettled::Retry) if attempt + 1 < SETTLE_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(SETTLE_PAUSE);
                }
                Err(Unsettled::Retry) => {
                    return Err(Error::io(
                        "list log directory",
                        &inner.dir,
                        std::io::Error::other("segment files keep changing under the reader"),
                    ))
                }
                Err(Unsettled::Failed(e)) => return Err(e),
            }
        }
        st.refreshed_at = Some(Instant::now());
        Ok(())
    }

    fn try_refresh(
        &self,
        inner: &LogInner,
        st: &mut ViewState,
        settled_only: bool,
    ) -> std::result::Result<(), Unsettled> {
        let dir = &inner.dir;
        let names = self
            .fs
            .list(dir)
            .map_err(|e| Error::io("list log directory", dir, e))?;
        if settled_only && names.iter().any(|n| n.ends_with(SWAP_SUFFIX)) {
            return Err(Unsettled::Retry);
        }
        let mut bases: Vec<Offset> = names
            .iter()
            .filter_map(|n| segment::parse_file_name(n, LOG_SUFFIX))
            .collect();
        bases.sort_unstable();
        // After the listing: see the module documentation.
        let start =
            checkpoint::read_offset_file(&*self.fs, &dir.join(checkpoint::LOG_START_OFFSET))?
                .unwrap_or(0);
        let files = bases
            .iter()
            .map(|&b| Ok((b, inode(&segment::file_path(dir, b, LOG_SUFFIX))?)))
            .collect::<std::result::Result<Vec<_>, Unsettled>>()?;

        let old = inner.snapshot();
        let mut segments = Vec::with_capacity(files.len().max(1));
        for (i, &(base, ino)) in files.iter().enumerate() {
            let next_base = files.get(i + 1).map(|f| f.0);
            let seg = match next_base {
                Some(next) => self.sealed(inner, st, &old, base, ino, next)?,
                None => self.tail(inner, st, base, ino)?,
            };
            segments.push(seg);
        }
        if files.last().map(|f| f.0) != st.tail.as_ref().map(|t| t.base) {
            st.tail = None;
        }
        if segments.is_empty() {
            segments.push(Arc::new(empty_segment(&self.fs, dir, start)));
        }
        for s in old.iter() {
            if !segments.iter().any(|n| Arc::ptr_eq(n, s)) {
                s.retired.store(true, AtomicOrdering::Release);
            }
        }
        let end = segments
            .last()
            .map_or(start, |s| s.next_offset())
            .max(start);
        let durable = RecoveryPointFile::read(&*self.fs, dir).map_or(end, |rp| rp.offset.min(end));
        st.files = files;
        *inner.segments.write() = Arc::new(segments);
        inner.start_offset.store(start, AtomicOrdering::Release);
        inner.end_offset.store(end, AtomicOrdering::SeqCst);
        inner.durable_offset.store(durable, AtomicOrdering::Release);
        Ok(())
    }

    /// The sealed segment `base` (its file now `ino`), reused from the last snapshot
    /// when it is still the same file.
    fn sealed(
        &self,
        inner: &LogInner,
        st: &ViewState,
        old: &[Arc<Segment>],
        base: Offset,
        ino: u64,
        next_base: Offset,
    ) -> std::result::Result<Arc<Segment>, Unsettled> {
        let was_tail = st.tail.as_ref().is_some_and(|t| t.base == base);
        if !was_tail && st.files.contains(&(base, ino)) {
            if let Some(s) = old.iter().find(|s| s.base_offset == base) {
                s.set_next_offset(next_base);
                return Ok(Arc::clone(s));
            }
        }
        let (file, len) = self.open_same(&inner.dir, base, ino)?;
        let seg = Segment::new(
            &self.fs,
            &inner.segment_cache,
            &inner.dir,
            base,
            Some(file),
            len,
            next_base,
        );
        seg.set_index_interval(inner.config.index_interval_bytes);
        seg.load_without_writing()?;
        Ok(Arc::new(seg))
    }

    /// The last segment, read up to its last whole, valid batch.
    fn tail(
        &self,
        inner: &LogInner,
        st: &mut ViewState,
        base: Offset,
        ino: u64,
    ) -> std::result::Result<Arc<Segment>, Unsettled> {
        let same = st
            .tail
            .as_ref()
            .is_some_and(|t| t.base == base && t.inode == ino);
        if !same {
            let (file, _) = self.open_same(&inner.dir, base, ino)?;
            let segment = Arc::new(empty_segment(&self.fs, &inner.dir, base));
            st.tail = Some(Tail {
                base,
                inode: ino,
                file,
                valid_end: 0,
                indexes: Indexes::default(),
                meta: SegmentMeta::EMPTY,
                since_index: u64::MAX,
                segment,
            });
        }
        let tail = st.tail.as_mut().expect("set above");
        let interval = u64::from(inner.config.index_interval_bytes);
        if tail.catch_up(interval)? || !same {
            let next = tail.meta.last_offset.map_or(base, |o| o + 1);
            let seg = Segment::new(
                &self.fs,
                &inner.segment_cache,
                &inner.dir,
                base,
                Some(Arc::clone(&tail.file)),
                tail.valid_end,
                next,
            );
            seg.set_index_interval(inner.config.index_interval_bytes);
            seg.set_loaded(tail.indexes.clone(), tail.meta);
            tail.segment = Arc::new(seg);
        }
        Ok(Arc::clone(&tail.segment))
    }

    /// Opens `<base>.log` read-only and checks it is still the file `ino` listed.
    fn open_same(
        &self,
        dir: &Path,
        base: Offset,
        ino: u64,
    ) -> std::result::Result<(Arc<dyn FileHandle>, u64), Unsettled> {
        let path = segment::file_path(dir, base, LOG_SUFFIX);
        let file = match self.fs.open(&path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unsettled::Retry),
            Err(e) => return Err(Error::io("open segment", &path, e).into()),
        };
        // Renamed over between the listing and the open: list again.
        if inode(&path)? != ino {
            return Err(Unsettled::Retry);
        }
        let len = file
            .size()
            .map_err(|e| Error::io("stat segment", &path, e))?;
        Ok((file, len))
    }
}

impl Tail {
    /// Reads the batches appended since the last look; true when there were any.
    fn catch_up(&mut self, interval: u64) -> Result<bool> {
        let path = PathBuf::from(format!("{:020}{LOG_SUFFIX}", self.base));
        let size = self
            .file
            .size()
            .map_err(|e| Error::io("stat segment", &path, e))?;
        let before = self.valid_end;
        while self.valid_end < size {
            let want = (size - self.valid_end).min(TAIL_READ_BYTES.max(interval));
            let mut buf = vec![0u8; usize::try_from(want).unwrap_or(usize::MAX)];
            let n = read_some(&*self.file, &mut buf, self.valid_end)
                .map_err(|e| Error::io("read segment", &path, e))?;
            buf.truncate(n);
            let used = self.take_batches(&buf, interval);
            if used == 0 {
                // A batch larger than the buffer: read it whole, once.
                let Some(len) = batch::peek_offsets(&buf).ok().map(|(l, _, _)| l as u64) else {
                    break;
                };
                if len <= want || self.valid_end + len > size {
                    break;
                }
                let mut whole = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
                let n = read_some(&*self.file, &mut whole, self.valid_end)
                    .map_err(|e| Error::io("read segment", &path, e))?;
                whole.truncate(n);
                if self.take_batches(&whole, interval) == 0 {
                    break;
                }
            }
        }
        Ok(self.valid_end > before)
    }

    /// Takes the whole, valid batches at the front of `bytes` (which start at
    /// `valid_end`); returns how many bytes they span.
    fn take_batches(&mut self, bytes: &[u8], interval: u64) -> usize {
        let mut pos = 0;
        while pos < bytes.len() {
            let Ok(b) = batch::decode(&bytes[pos..]) else {
                break;
            };
            let expected = self.meta.last_offset.map_or(self.base, |o| o + 1);
            let rel = index::relative(self.base, b.base_offset);
            if b.validate_records().is_err()
                || b.base_offset < expected
                || rel.is_none()
                || index::relative(self.base, b.last_offset()).is_none()
            {
                break;
            }
            let Ok(position) = u32::try_from(self.valid_end + pos as u64) else {
                break;
            };
            if self.since_index >= interval {
                self.indexes
                    .push(rel.expect("checked"), position, self.meta.max_timestamp);
                self.since_index = 0;
            }
            self.since_index = self.since_index.saturating_add(b.len() as u64);
            self.meta.add_batch(&b);
            pos += b.len();
        }
        self.valid_end += pos as u64;
        pos
    }
}

/// An empty segment whose indexes are loaded, so it never opens a file.
fn empty_segment(fs: &Arc<dyn FileSystem>, dir: &Path, base: Offset) -> Segment {
    // It never opens a file, so it needs no share of the view's open-file budget.
    let seg = Segment::new(fs, &SegmentCache::new(1), dir, base, None, 0, base);
    seg.set_loaded(Indexes::default(), SegmentMeta::EMPTY);
    seg
}

/// The inode of `path`; a vanished file means the directory changed: list again.
fn inode(path: &Path) -> std::result::Result<u64, Unsettled> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Unsettled::Retry),
        Err(e) => Err(Error::io("stat segment", path, e).into()),
    }
}

/// Reads up to `buf.len()` bytes at `pos`, fewer at the end of the file.
fn read_some(file: &dyn FileHandle, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], pos + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// The recovery-point handle of a read-only log: it refuses every write (the view
/// refuses writes before they get this far).
#[derive(Debug)]
struct Unwritable;

impl FileHandle for Unwritable {
    fn read_at(&self, _buf: &mut [u8], _pos: u64) -> std::io::Result<usize> {
        Ok(0)
    }
    fn write_all_at(&self, _buf: &[u8], _pos: u64) -> std::io::Result<()> {
        Err(read_only_io())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Err(read_only_io())
    }
    fn size(&self) -> std::io::Result<u64> {
        Ok(0)
    }
    fn set_len(&self, _len: u64) -> std::io::Result<()> {
        Err(read_only_io())
    }
    fn allocate(&self, _len: u64) -> std::io::Result<()> {
        Err(read_only_io())
    }
    fn map(&self, _len: usize) -> std::io::Result<Arc<dyn crate::fs::Mapping>> {
        Err(read_only_io())
    }
}

fn read_only_io() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, "read-only log")
}
