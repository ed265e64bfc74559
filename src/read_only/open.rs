//! [`Log::open_read_only`]: assembling a read-only view around a placeholder segment,
//! then listing the directory once.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{empty_segment, ReadOnlyView, Unwritable, ViewState};
use crate::checkpoint::{self, RecoveryPointFile};
use crate::config::LogConfig;
use crate::flush::Durability;
use crate::fs::{FileSystem, OsFs};
use crate::log::{InnerParts, Log, LogInner};
use crate::segment::{Segment, SegmentCache};
use crate::writer::Writer;
use crate::{Error, Result};

impl Log {
    /// Opens the log in `dir` for reading only, beside a writer in another process
    /// (or none): no lock is taken and no file is created, changed or removed. Reads
    /// see every record up to the last whole, CRC-valid batch on disk, follow rolls,
    /// retention and compaction, and [`crate::LogReader::next_blocking`] sees new
    /// appends by polling the files (every 10 ms). Every write is
    /// [`Error::ReadOnly`].
    ///
    /// The view looks at the directory again on `reader`, `stats`, `segments`,
    /// `verify`, `offset_for_timestamp`, a `read` at or past the end it knows, a
    /// reader's iterator reaching that end (at most every 2 ms) and while
    /// `next_blocking` waits; between those it answers from what it saw last (records
    /// retention deleted since then may still be read).
    ///
    /// ```
    /// use logqueue::{Error, Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let writer = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// writer.append(Record::new("a")).unwrap();
    /// let view = Log::open_read_only(dir.path()).unwrap();
    /// assert_eq!(view.read(0).unwrap().unwrap().value.as_deref(), Some(&b"a"[..]));
    /// writer.append(Record::new("b")).unwrap();
    /// assert_eq!(view.read(1).unwrap().unwrap().value.as_deref(), Some(&b"b"[..]));
    /// assert!(matches!(view.append(Record::new("c")), Err(Error::ReadOnly)));
    /// ```
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        check_is_dir(&dir)?;
        let config = LogConfig {
            background: false,
            ..LogConfig::default()
        };
        let fs: Arc<dyn FileSystem> = Arc::new(OsFs);
        let view = ReadOnlyView {
            fs: Arc::clone(&fs),
            state: Mutex::new(ViewState::default()),
        };
        let placeholder = Arc::new(empty_segment(&fs, &dir, 0));
        let rp_path = dir.join(checkpoint::RECOVERY_POINT);
        let writer = parked_writer(Arc::clone(&placeholder));
        let cursors = crate::cursor::Cursors::load_read_only(&*fs, &dir)?;
        let crash_history = crate::crash_history::CrashHistory::load(&*fs, &dir)?;
        let inner = Arc::new(LogInner::assemble(InnerParts {
            dir,
            segment_cache: SegmentCache::new(config.max_open_segments),
            segments: vec![placeholder],
            writer,
            durability: Durability::new(RecoveryPointFile::unwritten(
                Arc::new(Unwritable),
                rp_path,
            )),
            // The view finds the log's offsets when it first looks (`refresh_view`).
            end_offset: 0,
            start_offset: 0,
            lock: None,
            crash_history,
            cursors,
            last_sync_ms: 0,
            read_only: Some(view),
            // Nothing is appended through a read-only view: no window to keep.
            dedup: None,
            config,
        }));
        inner.refresh_view()?;
        Ok(Log::user(inner))
    }
}

/// [`Error::Io`] unless `dir` exists and is a directory: the view never creates it.
fn check_is_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io("open log directory", dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            "open log directory",
            dir,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    Ok(())
}

/// The view's writer: shut down (nothing is ever appended through it), at the
/// placeholder segment.
fn parked_writer(placeholder: Arc<Segment>) -> Writer {
    Writer {
        active: placeholder,
        // A view never appends (`check_writable` refuses first); its parked writer's
        // mapping refuses writes anyway.
        active_map: Arc::new(crate::fs::EmptyMapping),
        position: 0,
        allocated: 0,
        next_offset: 0,
        bytes_since_index: u64::MAX,
        max_timestamp: i64::MIN,
        first_append_time: i64::MIN,
        unsynced: Vec::new(),
        dir_dirty: false,
        records_since_flush: 0,
        index_entries: 0,
        shut_down: true,
        gate: false,
        spare: None,
        spare_busy: false,
        spares_made: 0,
    }
}
