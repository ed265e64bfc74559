//! [`super::Queue::repair`]: the explicit, operator-run repair of a queue whose state
//! files `Queue::open` refused as `Error::Corrupt` (a damaged or missing snapshot, a
//! journal damaged below its synced length or missing, a dead-letter log behind the
//! state). Never run implicitly: opening a damaged queue stays an error until someone
//! decides to repair it.
//!
//! The rule it follows: **redeliver rather than lose.** Whatever the damage hid is
//! treated as not done, so after a repair a record may be delivered again (at least
//! once) but no record that was not acked or dead-lettered is ever skipped.
//!
//! - The snapshot, if it still checks out, is kept, and its journal is replayed as far
//!   as its frames check out (the synced length is not trusted: replay stops at the
//!   first damaged frame; the events after it are lost, so acks there are redelivered
//!   and attempt counts there fall back).
//! - Without a usable snapshot, the floor comes from the queue's cursor (or the
//!   `floor` file of an earlier version: never ahead of the durable state, so
//!   everything below it was done) or, when that is damaged too,
//!   from the log's start offset; every offset above it that the newest journal does
//!   not show as done is deliverable again.
//! - Every dead letter of this queue is reconciled again (its record counts as
//!   dead-lettered, once), so the dead-letter log and the state agree.
//! - Copies of the files it replaces go to `queues/<name>/damaged-<clock ms>/` first
//!   (for forensics; delete them by hand), then a new snapshot and journal generation
//!   is written with the durable replace, so a crash during a repair leaves either the
//!   old files (run it again) or the repaired state.
//!
//! What it does not fix: a damaged dead-letter log (it is a `Log`: its damage is
//! reported by its own `verify`) and the `redrive` intent (see
//! [`super::Queue::reset_redrive_cursor`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::journal::{self, Event, Format, Journal, Kind, FRAME_HEADER, SNAPSHOT};
use super::lanes::{self, Lane};
use super::state::AckState;
use super::synced::{self, Synced};
use super::{dead_letter, floors, redrive, replay, Queue, DEAD_LETTER_DIR};
use crate::fs::{FileSystem, OpenMode};
use crate::{Error, Log, Offset, Result};

/// Journal capacity of the generation a repair writes (the next `Queue::open` starts a
/// new generation with the configured capacity).
const REPAIR_JOURNAL_BYTES: usize = 1 << 20;
/// Bytes copied per read when saving a damaged file.
const COPY_CHUNK: usize = 1 << 20;

/// What [`super::Queue::repair`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// The snapshot checked out and its state was kept (else the state was rebuilt
    /// from the `floor` file or the log's start, see [`RepairReport::floor_from`]).
    pub snapshot_kept: bool,
    /// Where the floor of a rebuilt state came from: `"snapshot"`, `"durable floor"`
    /// (the queue's cursor, or the `floor` file of an earlier version: never ahead of
    /// the durable state) or `"log start"` (that was missing or damaged too).
    pub floor_from: &'static str,
    /// The ack floor of the repaired state: every offset below it is done.
    pub floor: Offset,
    /// Journal events replayed.
    pub journal_events: u64,
    /// The journal and byte where replay stopped at a frame that did not check out
    /// (`None`: it was read to its end). Events past it are lost: their records are
    /// delivered again.
    pub journal_damage: Option<(PathBuf, u64)>,
    /// Records marked dead-lettered because the dead-letter log holds their letter.
    pub dead_letters_reconciled: u64,
    /// Records of the repaired state that are not done (delivered by the next
    /// receives).
    pub not_done: u64,
    /// Where copies of the replaced files were saved.
    pub saved_to: PathBuf,
}

impl Queue {
    /// Repairs the state of queue `name` of `log` after [`Queue::open`] refused it as
    /// [`Error::Corrupt`] (a damaged or missing snapshot, a journal damaged below its
    /// synced length, a dead-letter log that disagrees with the state). The queue must
    /// not be open ([`Error::Locked`] otherwise). Never done implicitly.
    ///
    /// The rule is *redeliver rather than lose*: what the damage hid counts as not
    /// done, so records may be delivered again, but none that was not acked or
    /// dead-lettered is skipped. It keeps the snapshot if it checks out and replays
    /// its journal up to the first damaged frame; otherwise it starts from the
    /// `floor` file (or the log's start when that is damaged too) and the newest
    /// journal. Every dead letter is reconciled again. Copies of the replaced files
    /// are saved in `queues/<name>/damaged-<clock ms>/`; the new state is written
    /// with a durable replace, so a crash during a repair leaves either the old files
    /// (repair again) or the repaired ones. The report says what was kept and lost.
    ///
    /// ```
    /// use logqueue::{Log, LogConfig, Queue, QueueConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// q.send(Record::new("a")).unwrap();
    /// q.flush().unwrap();
    /// drop(q);
    /// std::fs::remove_file(dir.path().join("queues/jobs/snapshot")).unwrap();
    /// assert!(Queue::open(&log, "jobs", QueueConfig::default()).is_err()); // Corrupt
    /// let report = Queue::repair(&log, "jobs").unwrap();
    /// assert!(!report.snapshot_kept);
    /// let q = Queue::open(&log, "jobs", QueueConfig::default()).unwrap();
    /// assert_eq!(q.receive(10, std::time::Duration::ZERO).unwrap().len(), 1);
    /// ```
    pub fn repair(log: &Log, name: &str) -> Result<RepairReport> {
        repair(log, name)
    }
}

/// Repairs queue `name` of `log` (see the module docs). The queue must not be open.
pub(crate) fn repair(log: &Log, name: &str) -> Result<RepairReport> {
    if !super::valid_name(name) {
        return Err(Error::InvalidConfig(format!("bad queue name {name:?}")));
    }
    log.inner.check_open()?;
    let fs = Arc::clone(&log.config().fs);
    let dir = log.dir().join("queues").join(name);
    if !fs.exists(&dir) {
        return Err(Error::InvalidConfig(format!(
            "no queue {name:?} in {}",
            log.dir().display()
        )));
    }
    let _lock = super::lock_queue(&*fs, &dir)?;
    // A damaged lane count is not repaired: which lanes there were is unknown.
    let layout = lanes::layout_of(log, &dir, name)?;
    // No retention: a repair applies none (the next open applies the configured one).
    let dlq = dead_letter::open(log, &dir.join(DEAD_LETTER_DIR), None)?;
    // Lane 0 last, as at creation: every other lane has state once it has.
    let mut report: Option<RepairReport> = None;
    for index in (0..layout.0).rev() {
        let lane = repair_lane(log, (name, &dir), Lane::new(index, layout), &dlq)?;
        report = Some(match report {
            None => lane,
            Some(r) => merge_reports(lane, r),
        });
    }
    report.ok_or_else(|| Error::InvalidConfig(format!("queue {name:?} has no lanes")))
}

/// What repairing lanes `a` (lane 0 when there is one) and `b` found and did.
fn merge_reports(a: RepairReport, b: RepairReport) -> RepairReport {
    RepairReport {
        snapshot_kept: a.snapshot_kept && b.snapshot_kept,
        floor_from: if a.snapshot_kept {
            b.floor_from
        } else {
            a.floor_from
        },
        floor: a.floor.min(b.floor),
        journal_events: a.journal_events + b.journal_events,
        journal_damage: a.journal_damage.or(b.journal_damage),
        dead_letters_reconciled: a.dead_letters_reconciled + b.dead_letters_reconciled,
        not_done: a.not_done + b.not_done,
        saved_to: a.saved_to,
    }
}

/// Repairs one lane of queue `name` in `queue_dir` (see the module docs).
fn repair_lane(
    log: &Log,
    (name, queue_dir): (&str, &Path),
    lane: Lane,
    dlq: &Log,
) -> Result<RepairReport> {
    let fs = Arc::clone(&log.config().fs);
    let dir = lane.dir(queue_dir);
    if lane.index > 0 {
        // A lane whose directory is gone is rebuilt from its cursor (or the log's
        // start): redelivered rather than lost.
        super::open::create_dirs(&*fs, &dir)?;
    }
    let cname = floors::lane_cursor_name(name, lane);
    let end = log.end_offset();
    let mut salvage = salvage_state(&*fs, &dir, log, (&cname, lane))?;
    let state = &mut salvage.state;
    state.dead_letter_end = Some(0);
    state.recover_leases();
    // Offsets a crash recovery of the log may have handed out again since the state
    // was written are dropped; when the history cannot tell, everything is.
    let usable = match replay::usable_end(log, state) {
        Ok(usable) => usable,
        Err(Error::Corrupt { .. }) => log.start_offset(),
        Err(e) => return Err(e),
    };
    state.clamp(log.start_offset(), usable.min(end));
    state.log_epoch = Some(log.inner.crash_history.epoch());
    let reconciled = dead_letter::reconcile(log, dlq, name, state)?.len() as u64;
    // Every outcome counts again too (its record settled): the next open reads the
    // whole outcomes log, when there is one; none there, the feed restarts empty.
    state.outcome_end = fs.exists(&dir.join(super::OUTCOMES_DIR)).then_some(0);
    let saved_to = dir.join(format!("damaged-{}", log.config().clock.now_ms()));
    save_copies(&*fs, &dir, &saved_to)?;
    // The new snapshot is fsynced: the logs must be durable up to what it names.
    log.flush()?;
    dlq.flush()?;
    let protect = floors::durable_floor(log, &dir, &cname).is_none_or(|(_, protect)| protect);
    // The queue's cursor moves down to the repaired floor before the new state is
    // written, and up to it only after (as `Queue::open` does).
    let cursor = {
        let _retention = log.inner.retention.pass.lock();
        floors::attach(log, &cname, &dir, state.floor, protect)?
    };
    Journal::create(
        Arc::clone(&fs),
        &dir,
        salvage.generation + 1,
        REPAIR_JOURNAL_BYTES,
        state,
    )?;
    floors::commit(&cursor, state.lane_floor(end))?;
    if lane.index == 0 {
        redrive::create_if_new(&*fs, &dir, dlq)?;
    }
    let not_done = (state.leased() + state.waiting()) as u64;
    Ok(RepairReport {
        snapshot_kept: salvage.snapshot_kept,
        floor_from: salvage.floor_from,
        floor: state.lane_floor(end),
        journal_events: salvage.events,
        journal_damage: salvage.damage,
        dead_letters_reconciled: reconciled,
        not_done,
        saved_to,
    })
}

/// The state salvaged from the files.
struct Salvage {
    generation: u64,
    state: AckState,
    snapshot_kept: bool,
    floor_from: &'static str,
    events: u64,
    damage: Option<(PathBuf, u64)>,
}

/// The state of the lane in `dir` whose floor cursor is `cname`, salvaged.
fn salvage_state(
    fs: &dyn FileSystem,
    dir: &Path,
    log: &Log,
    (cname, lane): (&str, Lane),
) -> Result<Salvage> {
    let end = log.end_offset();
    let snapshot = read_optional(fs, &dir.join(SNAPSHOT))?
        .and_then(|bytes| journal::decode_snapshot(&bytes, 0..end));
    if let Some((format, generation, mut state)) = snapshot {
        state.lane = lane;
        let path = dir.join(journal::journal_name(generation));
        let (events, damage) = replay_tolerant(fs, &path, Some(format), generation, |e| {
            if e.offset < end {
                let mut e = e;
                if e.kind == Kind::CorruptRange {
                    e.deadline = e.deadline.clamp(0, end as i64);
                }
                journal::apply(&mut state, e);
            }
        })?;
        return Ok(Salvage {
            generation,
            state,
            snapshot_kept: true,
            floor_from: "snapshot",
            events,
            damage,
        });
    }
    let (floor, floor_from) = match floors::durable_floor(log, dir, cname) {
        Some((floor, _)) => (floor.min(end), "durable floor"),
        None => (log.start_offset().min(end), "log start"),
    };
    let mut state = AckState::new(floor);
    state.lane = lane;
    // When the files were written is unknown: whatever any crash recovery of the log
    // may have handed out again is dropped (see `usable_end`).
    state.log_epoch = Some(0);
    let generation = newest_journal(fs, dir)?;
    let (mut events, mut damage) = (0, None);
    if let Some(generation) = generation {
        let path = dir.join(journal::journal_name(generation));
        // Offsets the journal does not mention are not known to be done: they are
        // opened as never delivered before an event past them is applied.
        (events, damage) = replay_tolerant(fs, &path, None, generation, |e| {
            if e.offset >= floor && e.offset < end && e.kind != Kind::CorruptRange {
                if e.offset >= state.next() {
                    dead_letter::open_gap(log, &mut state, e.offset);
                }
                journal::apply(&mut state, e);
            }
        })?;
    }
    Ok(Salvage {
        generation: generation.unwrap_or(0),
        state,
        snapshot_kept: false,
        floor_from,
        events,
        damage,
    })
}

/// A file's bytes; `None` when it does not exist. An I/O error is an error: a repair
/// must not guess around a file it could not read.
fn read_optional(fs: &dyn FileSystem, path: &Path) -> Result<Option<Vec<u8>>> {
    replay::read_whole(fs, path, "read queue snapshot")
}

/// The highest generation among the `journal-*` files of `dir`.
fn newest_journal(fs: &dyn FileSystem, dir: &Path) -> Result<Option<u64>> {
    let names = fs
        .list(dir)
        .map_err(|e| Error::io("list queue directory", dir, e))?;
    Ok(names
        .iter()
        .filter_map(|n| n.strip_prefix("journal-")?.parse::<u64>().ok())
        .max())
}

/// Hands every event of the journal at `path` to `apply`, in order, up to the first
/// frame that does not check out. `format` is the one the snapshot names, or `None`
/// (guessed: a valid synced-length slot or a first frame at the format-2 position
/// means format 2, a valid first frame at byte 0 format 1). Returns the number of
/// events and where it stopped at damage (`None`: a clean end). A missing journal
/// holds no events.
fn replay_tolerant(
    fs: &dyn FileSystem,
    path: &Path,
    format: Option<Format>,
    generation: u64,
    mut apply: impl FnMut(Event),
) -> Result<(u64, Option<(PathBuf, u64)>)> {
    const OP: &str = "read queue journal";
    let file = match fs.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, None)),
        Err(e) => return Err(Error::io(OP, path, e)),
    };
    let len = file.size().map_err(|e| Error::io(OP, path, e))?;
    let read = |pos: u64, n: u64| -> Result<Option<Vec<u8>>> {
        let Some(end) = pos.checked_add(n).filter(|&end| end <= len) else {
            return Ok(None);
        };
        let mut buf = vec![
            0u8;
            usize::try_from(end - pos).map_err(|_| {
                Error::corrupt(path, pos, None, format!("frame of {n} bytes: too large"))
            })?
        ];
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| Error::io(OP, path, e))?;
        Ok(Some(buf))
    };
    let frame_at = |pos: u64| -> Result<Option<Vec<Event>>> {
        let Some(header) = read(pos, FRAME_HEADER as u64)? else {
            return Ok(None);
        };
        let Some(frame_len) = journal::frame_len(&header) else {
            return Ok(None);
        };
        let Some(frame) = read(pos, frame_len)? else {
            return Ok(None);
        };
        let mut events = Vec::new();
        Ok(journal::decode_frame(&frame, &mut events)
            .ok()
            .map(|()| events))
    };
    let format = match format {
        Some(f) => f,
        None => {
            let header = read(0, synced::FRAMES_START as u64)?.unwrap_or_default();
            let has_slot = matches!(
                synced::read_synced(&header, generation),
                Synced::Upto(n) if n > synced::FRAMES_START as u64
            );
            if !has_slot && frame_at(0)?.is_some() {
                Format::V1
            } else {
                Format::V2
            }
        }
    };
    let mut pos = format.frames_start() as u64;
    let mut count = 0u64;
    loop {
        match frame_at(pos)? {
            Some(events) => {
                let frame_len = FRAME_HEADER as u64 + (events.len() * journal::EVENT_LEN) as u64;
                count += events.len() as u64;
                events.into_iter().for_each(&mut apply);
                pos += frame_len;
            }
            None => {
                let header = read(pos, FRAME_HEADER as u64)?;
                let clean_end = header.is_none_or(|h| h.iter().all(|&b| b == 0));
                let damage = (!clean_end).then(|| (path.to_path_buf(), pos));
                return Ok((count, damage));
            }
        }
    }
}

/// Copies every file of `dir` that a repair replaces (snapshot, journals, floor) into
/// `to`, fsynced, so the evidence outlives the repair.
fn save_copies(fs: &dyn FileSystem, dir: &Path, to: &Path) -> Result<()> {
    fs.create_dir_all(to)
        .map_err(|e| Error::io("create directory", to, e))?;
    let mut names = fs
        .list(dir)
        .map_err(|e| Error::io("list queue directory", dir, e))?;
    names.sort();
    for name in names {
        let keep = name == SNAPSHOT || name == floors::FLOOR_FILE || name.starts_with("journal-");
        if keep {
            copy_file(fs, &dir.join(&name), &to.join(&name))?;
        }
    }
    fs.sync_dir(to)
        .map_err(|e| Error::io("sync directory", to, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}

fn copy_file(fs: &dyn FileSystem, from: &Path, to: &Path) -> Result<()> {
    let src = fs
        .open(from, OpenMode::Read)
        .map_err(|e| Error::io("open for copy", from, e))?;
    let len = src.size().map_err(|e| Error::io("size", from, e))?;
    let dst = fs
        .open(to, OpenMode::Create)
        .map_err(|e| Error::io("create copy", to, e))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut pos = 0u64;
    while pos < len {
        let n = usize::try_from((len - pos).min(COPY_CHUNK as u64)).unwrap_or(COPY_CHUNK);
        src.read_exact_at(&mut buf[..n], pos)
            .map_err(|e| Error::io("read for copy", from, e))?;
        dst.write_all_at(&buf[..n], pos)
            .map_err(|e| Error::io("write copy", to, e))?;
        pos += n as u64;
    }
    dst.sync_data().map_err(|e| Error::io("sync copy", to, e))
}
