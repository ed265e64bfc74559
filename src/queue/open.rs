//! [`Queue::open`]: the steps from a directory on disk (or none) to an open queue.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;

use super::journal::Journal;
use super::lanes::{self, Lane};
use super::state::AckState;
use super::{
    dead_letter, floors, lifecycle, lock_queue, millis, outcomes, per_key, redrive, replay,
    valid_name, Core, Counts, Ordering, Padded, Queue, QueueConfig, QueueInner, ReadAhead, Refill,
    StartPosition, DEAD_LETTER_DIR, OUTCOMES_DIR,
};
use crate::{Error, Log, Result};

impl Queue {
    /// Opens (creating if needed) the queue `name` over `log`, with its state in
    /// `<log dir>/queues/<name>/`. Names are ASCII letters, digits, `.`, `_`, `-`.
    /// Records that were leased when the queue was last open are deliverable again at
    /// once, their attempt counts kept, one per [`Queue::receive`] (any of them may be
    /// what killed the process). Dead letters the state does not account for (the
    /// process died between the dead-letter append and the journal) are counted as
    /// done, so a record is never both dead-lettered and delivered again. A queue
    /// already open is [`Error::Locked`].
    pub fn open(log: &Log, name: &str, config: QueueConfig) -> Result<Queue> {
        check_can_open(log, name, &config)?;
        let fs = Arc::clone(&log.config().fs);
        let dir = log.dir().join("queues").join(name);
        lifecycle::finish_deletes_quietly(log);
        create_dirs(&*fs, &dir)?;
        // The queue's own lock, before any of its files is read or written. (Queues
        // of earlier versions used the dead-letter log's lock, taken just below too.)
        // It covers every lane.
        let lock = lock_queue(&*fs, &dir)?;
        let layout = lane_layout(log, (&dir, name), &config)?;
        let count = layout.0;
        let dlq = dead_letter::open(
            log,
            &dir.join(DEAD_LETTER_DIR),
            config.dead_letter_retention,
        )?;
        // Lane 0 last: once it has state, every other lane has (see `lanes.rs`).
        let lane_zero_made = fs.exists(&dir.join(super::journal::SNAPSHOT));
        let opening = |index| {
            let lane = Lane::new(index, layout);
            Opening {
                log,
                name,
                queue_dir: &dir,
                config: lane_config(&config, lane),
                lane,
            }
        };
        let mut others = Vec::new();
        for index in (1..count).rev() {
            let at = opening(index);
            others.push(open_lane(
                at,
                None,
                dlq.clone(),
                lane_zero_made,
                Vec::new(),
            )?);
        }
        others.reverse();
        let inner = open_lane(opening(0), Some(lock), dlq, lane_zero_made, others)?;
        let weak: std::sync::Weak<QueueInner> = Arc::downgrade(&inner);
        let dependent: std::sync::Weak<dyn crate::dependents::Dependent> = weak;
        log.inner.dependents.add(dependent);
        Ok(Queue { inner })
    }
}

/// What opening one lane needs to know.
struct Opening<'a> {
    log: &'a Log,
    name: &'a str,
    /// The queue's directory (lane 0's).
    queue_dir: &'a Path,
    /// The queue's config with this lane's share of `max_in_flight`.
    config: QueueConfig,
    lane: Lane,
}

/// The lane count and block of the queue in `dir`: the recorded ones, which must be
/// the configured ones; for a new queue of more than one lane, recorded now.
fn lane_layout(
    log: &Log,
    (dir, name): (&Path, &str),
    config: &QueueConfig,
) -> Result<lanes::Layout> {
    let fs = &*log.config().fs;
    let wanted = (config.lanes, config.lane_block);
    let mismatch = |(count, block): lanes::Layout| {
        Err(Error::InvalidConfig(format!(
            "queue {} has {count} lane(s) of blocks of {block} offsets, opened with \
             lanes = {} and lane_block = {} (fixed at creation)",
            dir.display(),
            config.lanes,
            config.lane_block
        )))
    };
    match lanes::recorded(log, dir, name)? {
        Some(had) if had == wanted || (had.0 == 1 && config.lanes == 1) => Ok(had),
        Some(had) => mismatch(had),
        None if config.lanes == 1 => Ok(lanes::Lane::ONLY.layout()),
        // A queue of one lane already (it has state).
        None if fs.exists(&dir.join(super::journal::SNAPSHOT)) => {
            mismatch(lanes::Lane::ONLY.layout())
        }
        None => {
            lanes::record(fs, dir, wanted)?;
            Ok(wanted)
        }
    }
}

/// `config` for `lane`: its share of `max_in_flight` (the first lanes take the
/// remainder, so the shares add up to the configured cap).
fn lane_config(config: &QueueConfig, lane: Lane) -> QueueConfig {
    let count = lane.count as usize;
    let share = config.max_in_flight / count
        + usize::from((lane.index as usize) < config.max_in_flight % count);
    QueueConfig {
        max_in_flight: share,
        ..config.clone()
    }
}

/// Opens one lane: lane 0 (with the queue's lock, outcome feed and redrive file) or
/// lane `i > 0` in `lane-<i>/`, which must have state once lane 0 has
/// (`lane_zero_made`).
fn open_lane(
    at: Opening<'_>,
    lock: Option<super::QueueLock>,
    dlq: Log,
    lane_zero_made: bool,
    others: Vec<Arc<QueueInner>>,
) -> Result<Arc<QueueInner>> {
    let Opening {
        log,
        name,
        queue_dir,
        config,
        lane,
    } = at;
    let fs = Arc::clone(&log.config().fs);
    let dir = lane.dir(queue_dir);
    if lane.index > 0 {
        create_dirs(&*fs, &dir)?;
    }
    let outcomes_dir = queue_dir.join(OUTCOMES_DIR);
    let outcomes = match lane.index {
        0 => outcomes::open_existing(log, &outcomes_dir, config.outcome_retention)?,
        _ => None,
    };
    // Loaded from offset 0, not the log's start: what was done below the start is
    // known, so `clamp` counts only the records skipped without being done.
    let mut acks = Vec::new();
    let side_logs = (&dlq, outcomes.as_ref());
    let loaded = replay::load(
        &*fs,
        (&dir, lane),
        0..log.end_offset(),
        side_logs,
        &mut acks,
    )?;
    if loaded.is_none() && lane.index > 0 && lane_zero_made {
        return Err(lane_lost(&dir, name, lane));
    }
    let generation = loaded.as_ref().map_or(0, |(g, _)| *g);
    let (mut state, floor_cursor) = starting_state(log, (name, lane), &dir, loaded, &config)?;
    state.set_backoff(config.backoff.iter().map(|d| millis(*d)).collect());
    // Before the per-key table is rebuilt: a reconciled record releases its key.
    let letters = dead_letter::reconcile(log, &dlq, name, &mut state)?;
    let feed = (config.outcomes, config.outcome_retention);
    let settled = (&acks[..], &letters[..]);
    let outcomes = match lane.index {
        0 => outcomes::at_open(log, &outcomes_dir, feed, outcomes, &mut state, settled)?,
        _ => None,
    };
    drop((acks, letters));
    let per_key = match config.ordering {
        Ordering::PerKey => Some(per_key::PerKey::rebuild(log, &mut state)?),
        Ordering::Unordered => None,
    };
    flush_before_snapshot(log, &dlq, outcomes.as_ref())?;
    let capacity = usize::try_from(config.journal_bytes)
        .map_err(|_| Error::InvalidConfig("journal_bytes too large".into()))?;
    let journal = Journal::create(Arc::clone(&fs), &dir, generation + 1, capacity, &state)?;
    floors::commit(&floor_cursor, state.lane_floor(log.end_offset()))?;
    let outcomes_cursor = outcomes::attach_accounted(outcomes.as_ref(), &state)?;
    if lane.index == 0 {
        // After the snapshot: a crash during creation must leave no file that counts
        // as queue state without a snapshot (see `replay.rs`, when a directory is new).
        redrive::create_if_new(&*fs, &dir, &dlq)?;
        enforce_side_log_retention(&config, &dlq, outcomes.as_ref())?;
    }
    let reader = log.reader(lane.next_owned(state.next()))?;
    Ok(Arc::new(QueueInner {
        lock: Mutex::new(lock),
        closed: std::sync::atomic::AtomicBool::new(false),
        log: log.clone(),
        name: name.to_string(),
        dlq,
        outcomes,
        unread: Padded(Mutex::new(ReadAhead::new(reader.position()))),
        reader: Padded(Mutex::new(Refill::new(reader))),
        core: Padded(Mutex::new(Core::new(
            (state, journal, per_key),
            dir,
            (floor_cursor, outcomes_cursor),
        ))),
        released: AtomicU64::new(0),
        redriving: Mutex::new(()),
        config,
        lane,
        others,
        receivers: std::sync::atomic::AtomicUsize::new(0),
        taker: Padded(lanes::Taker::default()),
    }))
}

impl Core {
    /// A lane's core as open leaves it: its state, journal and per-key table, its
    /// directory, and its floor and outcome cursors.
    fn new(
        (state, journal, per_key): (AckState, Journal, Option<per_key::PerKey>),
        dir: std::path::PathBuf,
        (floor_cursor, outcomes_cursor): (crate::Cursor, Option<crate::Cursor>),
    ) -> Core {
        Core {
            state,
            journal,
            per_key,
            reread: Vec::new(),
            events: Vec::with_capacity(256),
            dir,
            poisoned: None,
            floor_cursor,
            outcomes_cursor,
            sources: std::collections::HashMap::new(),
            oldest: None,
            counts: Counts::default(),
        }
    }
}

/// Lane `lane` of queue `name` in `dir` has no state while lane 0 has: the lanes are
/// created from the last to lane 0, so no crash leaves this.
pub(super) fn lane_lost(dir: &Path, name: &str, lane: Lane) -> Error {
    let index = lane.index;
    let reason = format!("lane {index} of queue {name:?} has no state while lane 0 has");
    Error::corrupt(dir, 0, None, reason)
}

/// The checks before a queue touches anything on disk: a valid config and name, over
/// a log that is open and writable.
fn check_can_open(log: &Log, name: &str, config: &QueueConfig) -> Result<()> {
    config.validate()?;
    if !valid_name(name) {
        return Err(Error::InvalidConfig(format!("bad queue name {name:?}")));
    }
    log.inner.check_open()?;
    log.inner.refuse_read_only()?;
    Ok(())
}

/// The state the queue opens with (the loaded snapshot with its leases recovered,
/// or a new state at the configured start), clamped to the log, and the queue's
/// floor cursor attached at its floor.
fn starting_state(
    log: &Log,
    (name, lane): (&str, Lane),
    dir: &Path,
    loaded: Option<(u64, AckState)>,
    config: &QueueConfig,
) -> Result<(AckState, crate::Cursor)> {
    // The start floor is chosen and shown to retention (the queue's cursor,
    // see floors.rs) in one critical section with retention's
    // check-and-delete (see retention.rs): a pass either sees this floor or
    // deleted before the start offset is read here.
    let _retention = log.inner.retention.pass.lock();
    let mut state = match loaded {
        Some((_, mut s)) => {
            s.recover_leases();
            s
        }
        None => AckState::new(match config.start {
            StartPosition::Earliest => log.start_offset(),
            StartPosition::Latest => log.end_offset(),
        }),
    };
    state.lane = lane;
    let end = replay::usable_end(log, &state)?;
    state.clamp(log.start_offset(), end);
    state.log_epoch = Some(log.inner.crash_history.epoch());
    let cname = floors::lane_cursor_name(name, lane);
    let cursor = floors::attach(log, &cname, dir, state.floor, config.protect_unacked)?;
    Ok((state, cursor))
}

/// Flushes the log and the queue's side logs before the open writes its snapshot.
fn flush_before_snapshot(log: &Log, dlq: &Log, outcomes: Option<&Log>) -> Result<()> {
    // The snapshot is fsynced: the log must be durable up to what it names, and
    // the dead-letter log up to the end it accounts for.
    log.flush()?;
    dlq.flush()?;
    if let Some(o) = outcomes {
        o.flush()?;
    }
    Ok(())
}

/// Applies the side logs' configured retention once the open's snapshot is written.
fn enforce_side_log_retention(
    config: &QueueConfig,
    dlq: &Log,
    outcomes: Option<&Log>,
) -> Result<()> {
    // The snapshot just written accounts for every dead letter.
    if config.dead_letter_retention.is_some() {
        dlq.enforce_retention()?;
    }
    if let Some(o) = outcomes.filter(|_| config.outcome_retention.is_some()) {
        o.enforce_retention()?;
    }
    Ok(())
}

/// Creates `dir` and fsyncs the parents of every directory it had to create.
pub(super) fn create_dirs(fs: &dyn crate::fs::FileSystem, dir: &Path) -> Result<()> {
    let mut created = Vec::new();
    let mut missing = Some(dir);
    while let Some(d) = missing.filter(|d| !d.as_os_str().is_empty() && !fs.exists(d)) {
        created.push(d);
        missing = d.parent();
    }
    fs.create_dir_all(dir)
        .map_err(|e| Error::io("create queue directory", dir, e))?;
    for d in created {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent)
                .map_err(|e| Error::io("sync directory", parent, e))?;
        }
    }
    Ok(())
}
