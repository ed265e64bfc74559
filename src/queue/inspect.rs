//! [`Queue::inspect`]: a queue's counters read from its files, without its lock and
//! without writing, while the queue may be open (and changing) in another process.
//!
//! The snapshot and the journal it names are read as `Queue::open` reads them
//! ([`super::replay::load`]), kept in memory only. The owner may rotate the journal
//! between the two reads (a new snapshot, the old journal removed): that reads as a
//! missing or damaged file, so the read is tried again a few times before the error
//! is returned; an error that persists is the file's real state (fail closed, as for
//! `Queue::open`). Leases of the running owner show as in flight.

use std::time::Duration;

use super::lanes::{self, Lane};
use super::state::AckState;
use super::{dead_letter, replay, valid_name, Queue, QueueStats, DEAD_LETTER_DIR};
use crate::{Error, Log, Result};

/// Reads of a queue directory whose journal rotated under them, before giving up.
const ATTEMPTS: u32 = 20;
const PAUSE: Duration = Duration::from_millis(10);

impl Queue {
    /// The counters of queue `name` of `log`, read from its files without taking its
    /// lock and without changing a byte: works while the queue is open in this or
    /// another process, and on a [`Log::open_read_only`] view. Totals and in-flight
    /// leases are as of the queue's last journal write; `skipped_by_retention` counts
    /// what lies below the log's start now. A queue that does not exist is
    /// [`Error::InvalidConfig`]; damaged state files are [`Error::Corrupt`], as for
    /// [`Queue::open`]. The queue's dead-letter log is viewed with
    /// [`Log::open_read_only`], which tells a replaced segment file by its inode on
    /// the operating system's file system: a log on another
    /// [`LogConfig::fs`](crate::LogConfig::fs) cannot be inspected (`Error::Io`).
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig, Record};
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let queue = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// queue.send(Record::new("a")).unwrap();
    /// queue.send(Record::new("b")).unwrap();
    /// let d = queue.receive(1, Duration::ZERO).unwrap();
    /// queue.ack(&d[0].receipt).unwrap();
    /// queue.flush().unwrap();
    /// let stats = Queue::inspect(&log, "jobs").unwrap();
    /// assert_eq!((stats.ack_floor, stats.acked_total, stats.backlog), (1, 1, 1));
    /// ```
    pub fn inspect(log: &Log, name: &str) -> Result<QueueStats> {
        log.inner.check_open()?;
        if !valid_name(name) {
            return Err(Error::InvalidConfig(format!("bad queue name {name:?}")));
        }
        let dir = log.dir().join("queues").join(name);
        if !log.config().fs.exists(&dir) {
            return Err(Error::InvalidConfig(format!("no queue named {name:?}")));
        }
        let dlq = Log::open_read_only(dir.join(DEAD_LETTER_DIR))?;
        let layout = lanes::layout_of(log, &dir, name)?;
        let mut stats: Option<QueueStats> = None;
        for index in 0..layout.0 {
            let lane = inspect_lane(log, &dlq, (&dir, name), Lane::new(index, layout))?;
            stats = Some(stats.map_or(lane, |s| lanes::merge_stats(s, lane)));
        }
        Ok(stats.unwrap_or_default())
    }
}

impl Queue {
    /// The lane count and block queue `name` of `log` was created with
    /// ([`QueueConfig::lanes`](super::QueueConfig::lanes),
    /// [`QueueConfig::lane_block`](super::QueueConfig::lane_block)): what
    /// [`Queue::open`] must be given for it. A queue of one lane (or one not created
    /// yet) is `(1, 1024)`. A damaged lane file is [`Error::Corrupt`]. Reads only
    /// (works on a [`Log::open_read_only`] view, and while the queue is open).
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let config = QueueConfig { lanes: 4, lane_block: 64, ..QueueConfig::default() };
    /// Queue::open(&log, "jobs", config).unwrap().close().unwrap();
    /// assert_eq!(Queue::lane_layout(&log, "jobs").unwrap(), (4, 64));
    /// ```
    pub fn lane_layout(log: &Log, name: &str) -> Result<(u32, u64)> {
        log.inner.check_open()?;
        if !valid_name(name) {
            return Err(Error::InvalidConfig(format!("bad queue name {name:?}")));
        }
        let dir = log.dir().join("queues").join(name);
        lanes::layout_of(log, &dir, name)
    }
}

/// The stats of one lane of queue `name` in `dir`, from its files.
fn inspect_lane(
    log: &Log,
    dlq: &Log,
    (dir, name): (&std::path::Path, &str),
    lane: Lane,
) -> Result<QueueStats> {
    let queue_dir = dir;
    let dir = lane.dir(queue_dir);
    let fs = &*log.config().fs;
    // As for `Queue::open`: once lane 0 has state every lane has (see `lanes.rs`),
    // so a lane without it is lost, never a fresh one. Not a moment of the owner's
    // (a snapshot is only ever replaced): no retry.
    let snapshot = super::journal::SNAPSHOT;
    if lane.index > 0 && fs.exists(&queue_dir.join(snapshot)) && !fs.exists(&dir.join(snapshot)) {
        return Err(super::open::lane_lost(&dir, name, lane));
    }
    let mut attempt = 0;
    let (state, start, end) = loop {
        match read_state(log, dlq, &dir, (name, lane)) {
            Ok(read) => break read,
            Err(Error::Corrupt { .. } | Error::Io { .. }) if attempt + 1 < ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(PAUSE);
            }
            Err(e) => return Err(e),
        }
    };
    let floor = state.lane_floor(end).max(start);
    let oldest = if floor < end {
        log.read(floor)?.map(|r| r.timestamp)
    } else {
        None
    };
    let now = log.config().clock.now_ms();
    // `tombstones_skipped` and `expired_total` are counted in memory by the process
    // that has the queue open, since it opened it, and not persisted: a view from
    // the files cannot know them (documented on the fields).
    Ok(super::state::stats(&state, end, oldest, now, (0, 0)))
}

/// The queue's state as its files hold it now, with the log's start and end it was
/// read against. The dead-letter log is looked at after the state: the owner appends
/// a dead letter before it journals it, so a state read first never accounts for a
/// letter the view has not seen.
fn read_state(
    log: &Log,
    dlq: &Log,
    dir: &std::path::Path,
    (name, lane): (&str, Lane),
) -> Result<(AckState, u64, u64)> {
    let fs = &*log.config().fs;
    log.inner.refresh_view()?;
    let loaded = replay::load(
        fs,
        (dir, lane),
        0..log.end_offset(),
        (dlq, None),
        &mut Vec::new(),
    )?;
    dlq.inner.refresh_view()?;
    let (start, end) = (log.start_offset(), log.end_offset());
    let mut state = match loaded {
        Some((_, s)) => s,
        // Created but not yet holding state: nothing delivered or done.
        None => AckState::new(start),
    };
    state.lane = lane;
    state.clamp(start, end);
    dead_letter::reconcile(log, dlq, name, &mut state)?;
    Ok((state, start, end))
}
