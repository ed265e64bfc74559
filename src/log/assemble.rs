//! The one place a [`LogInner`] is put together, for a writable log ([`Log::open`])
//! and a read-only view ([`Log::open_read_only`]) alike: what differs between the two
//! comes in [`InnerParts`], everything else starts the same here, so a new field of
//! the log's state is initialized once.
//!
//! [`Log::open`]: crate::Log::open
//! [`Log::open_read_only`]: crate::Log::open_read_only

use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use super::{Counters, LogInner};
use crate::background::{AppendSignal, Shutdown};
use crate::cleaner::CleanerState;
use crate::config::LogConfig;
use crate::crash_history::CrashHistory;
use crate::cursor::Cursors;
use crate::dedup::DedupWindow;
use crate::flush::{Durability, FlushState};
use crate::read_only::ReadOnlyView;
use crate::retention::RetentionState;
use crate::segment::{Segment, SegmentCache};
use crate::writer::Writer;
use crate::Offset;

/// What a writable log and a read-only view start from differently.
pub(crate) struct InnerParts {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub segment_cache: Arc<SegmentCache>,
    /// Oldest first; the last is the active one.
    pub segments: Vec<Arc<Segment>>,
    pub writer: Writer,
    pub durability: Durability,
    /// The log's end (also what is durable at open) and start.
    pub end_offset: Offset,
    pub start_offset: Offset,
    /// The directory lock, held while the log is open (none for a view).
    pub lock: Option<Box<dyn Any + Send + Sync>>,
    pub crash_history: CrashHistory,
    pub cursors: Cursors,
    /// When the last sync happened, as far as interval flushing is concerned.
    pub last_sync_ms: i64,
    pub read_only: Option<ReadOnlyView>,
    pub dedup: Option<DedupWindow>,
}

impl LogInner {
    /// The shared state of a log opened from `parts`, before any background thread.
    pub(crate) fn assemble(p: InnerParts) -> LogInner {
        LogInner {
            dir: p.dir,
            segment_cache: p.segment_cache,
            segments: RwLock::new(Arc::new(p.segments)),
            writer: Mutex::new(p.writer),
            writer_gate: Condvar::new(),
            durability: Mutex::new(p.durability),
            maintenance: Mutex::new(()),
            end_offset: AtomicU64::new(p.end_offset),
            durable_offset: AtomicU64::new(p.end_offset),
            start_offset: AtomicU64::new(p.start_offset),
            flush_state: Mutex::new(FlushState::new(p.end_offset)),
            flush_done: Condvar::new(),
            flush_arrived: Condvar::new(),
            appended: AppendSignal::default(),
            turn: crate::segment::TurnWaiters::default(),
            closed: AtomicBool::new(false),
            poisoned: Mutex::new(None),
            is_poisoned: AtomicBool::new(false),
            lock: Mutex::new(p.lock),
            background: Mutex::new(Vec::new()),
            shutdown: Arc::new(Shutdown::default()),
            crash_history: p.crash_history,
            roll_syncer: AtomicBool::new(false),
            last_sync_ms: AtomicI64::new(p.last_sync_ms),
            background_error: Mutex::new(None),
            counters: Counters::default(),
            retention: RetentionState::default(),
            cursors: p.cursors,
            cleaner: CleanerState::default(),
            dependents: crate::dependents::Dependents::default(),
            read_only: p.read_only,
            dedup: p.dedup,
            config: p.config,
        }
    }
}
