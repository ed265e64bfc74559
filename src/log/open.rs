//! [`Log::open`]: creating the directory durably, locking it, recovering it, and
//! assembling the open log around what recovery found.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::assemble::InnerParts;
use super::{Log, LogInner};
use crate::config::LogConfig;
use crate::cursor::Cursors;
use crate::flush::Durability;
use crate::fs::FileSystem;
use crate::recovery::{self, Recovered};
use crate::segment::Segment;
use crate::writer::Writer;
use crate::{Error, Result};

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering from whatever a crash
    /// left behind. A directory already open is [`Error::Locked`].
    ///
    /// ```
    /// use logqueue::{Error, FlushPolicy, Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = LogConfig { segment_bytes: 64 << 20, flush: FlushPolicy::Manual, ..LogConfig::default() };
    /// let log = Log::open(dir.path(), config.clone()).unwrap();
    /// assert!(matches!(Log::open(dir.path(), config), Err(Error::Locked { .. })));
    /// ```
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = Arc::clone(&config.fs);
        create_dir_durably(&*fs, &dir)?;
        let lock = lock_dir(&*fs, &dir)?;
        let recovered = recovery::recover(&dir, &config)?;
        let cursors = Cursors::load(&*fs, &dir)?;
        let active = Arc::clone(
            recovered
                .segments
                .last()
                .expect("recovery leaves a segment"),
        );
        let writer = writer_at_end_of(active)?;
        let inner = Arc::new(assemble_inner(
            dir, config, recovered, cursors, lock, writer,
        ));
        let log = Log::user(inner);
        if let Some(dedup) = &log.inner.dedup {
            dedup.rebuild(&log)?;
        }
        // Upgrades by the layers above (the log knows none of them), before retention
        // can run: e.g. queue floors of earlier versions become cursors.
        for hook in crate::LOG_OPEN_HOOKS {
            hook(&log)?;
        }
        log.start_background()?;
        Ok(log)
    }
}

/// Creates `dir` and any missing ancestors, then fsyncs the parent of each directory
/// it created.
fn create_dir_durably(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    // A new directory's entry lives in its parent, and is durable only once the
    // parent is fsynced: without that, a power loss can take the whole log.
    let mut created = Vec::new();
    let mut missing = Some(dir);
    while let Some(d) = missing.filter(|d| !d.as_os_str().is_empty() && !fs.exists(d)) {
        created.push(d);
        missing = d.parent();
    }
    fs.create_dir_all(dir)
        .map_err(|e| Error::io("create log directory", dir, e))?;
    for d in created {
        let parent = d
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs.sync_dir(parent)
            .map_err(|e| Error::io("sync directory", parent, e))?;
    }
    Ok(())
}

/// Takes the directory's `LOCK`: [`Error::Locked`] when another open log holds it.
fn lock_dir(fs: &dyn FileSystem, dir: &Path) -> Result<Box<dyn Any + Send + Sync>> {
    let lock_path = dir.join("LOCK");
    fs.try_lock(&lock_path)
        .map_err(|e| Error::io("lock", &lock_path, e))?
        .ok_or(Error::Locked { path: lock_path })
}

/// The writer positioned at the end of the recovered active segment.
fn writer_at_end_of(active: Arc<Segment>) -> Result<Writer> {
    let next_offset = active.next_offset();
    let position = active.published();
    let allocated = active
        .file()?
        .size()
        .map_err(|e| Error::io("stat segment", active.path(), e))?;
    let meta = active.meta()?;
    let active_index_entries = active.index_entries() as u64;
    let active_map = crate::writer::active_mapping(&active)?;
    Ok(Writer {
        active,
        active_map,
        position,
        allocated,
        next_offset,
        bytes_since_index: u64::MAX,
        max_timestamp: meta.max_timestamp,
        first_append_time: meta.first_append_time,
        unsynced: Vec::new(),
        dir_dirty: false,
        records_since_flush: 0,
        index_entries: active_index_entries,
        shut_down: false,
        gate: false,
        spare: None,
        spare_busy: false,
        spares_made: 0,
    })
}

/// The shared state of a freshly opened log, before its background threads start.
fn assemble_inner(
    dir: PathBuf,
    config: LogConfig,
    recovered: Recovered,
    cursors: Cursors,
    lock: Box<dyn Any + Send + Sync>,
    writer: Writer,
) -> LogInner {
    let end_offset = writer.next_offset;
    let last_sync_ms = config.clock.now_ms();
    let dedup = config.dedup.as_ref().map(crate::dedup::DedupWindow::new);
    LogInner::assemble(InnerParts {
        dir,
        segment_cache: Arc::clone(&recovered.cache),
        segments: recovered.segments,
        writer,
        durability: Durability::new(recovered.recovery_point_file),
        end_offset,
        start_offset: recovered.start_offset,
        lock: Some(lock),
        crash_history: recovered.crash_history,
        cursors,
        last_sync_ms,
        read_only: None,
        dedup,
        config,
    })
}
