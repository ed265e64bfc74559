//! Durable named cursors: a consumer's position in the log, kept by the log itself in
//! `<log dir>/cursors/<name>.cursor`, and (when protecting) a retention floor.
//!
//! File format (64 bytes, see `docs/format.md`): two 32-byte slots, each
//! `"LQC1" | sequence u64 | position u64 | flags u8 (bit 0: protect) | 7 zero bytes |
//! crc32 u32` (CRC over the 28 bytes before it), little-endian. The valid slot with the
//! higher sequence is the cursor. A commit overwrites in place the slot that is not the
//! last fsynced one (no rename, no fsync: one `pwrite`), so a torn commit spoils only
//! that slot and the fsynced one still holds an older position. [`Log::flush`] (and
//! close) fsyncs every cursor committed since; only then does the next commit switch
//! slots. A cursor is created by a durable replace (temporary file, fsync, rename, fsync
//! of the directory) with both slots valid.
//!
//! Fail closed: a cursor file of the wrong size or with no valid slot is
//! [`Error::Corrupt`] from [`Log::cursor`] and [`Log::cursors`] (never a silent fresh
//! cursor); retention reads it the safe way (protect everything) and lists it in
//! [`crate::LogStats::damaged_floor_files`] until [`Log::delete_cursor`] removes it.
//! A leftover `<name>.cursor.tmp` is a creation that never finished (its rename did not
//! happen, so the cursor never existed): open removes it. Other files are ignored.
//!
//! In memory every cursor on disk is known from open on (its file read once), so
//! retention never reads cursor files; one file handle is kept per cursor committed
//! in this process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::checkpoint;
use crate::fs::FileSystem;
use crate::log::LogInner;
use crate::{Error, Log, Offset, Result};

mod file;

use file::SlotFile;

/// Directory of the cursor files inside the log directory.
pub(crate) const CURSOR_DIR: &str = "cursors";
const SUFFIX: &str = ".cursor";
/// How a cursor is opened.
///
/// ```
/// use logqueue::CursorConfig;
/// assert!(CursorConfig::default().protect);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CursorConfig {
    /// Time and size retention keep every record at or above the cursor's position
    /// (true). [`Log::delete_records_before`] still deletes below what it is given.
    pub protect: bool,
}

impl Default for CursorConfig {
    fn default() -> Self {
        CursorConfig { protect: true }
    }
}

/// A cursor as [`Log::cursors`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CursorInfo {
    /// The cursor's name.
    pub name: String,
    /// Everything below this offset is consumed.
    pub position: Offset,
    /// Whether the cursor holds back retention.
    pub protect: bool,
}

/// A durable named position in a [`Log`]: everything below [`Cursor::position`] is
/// consumed. Cheap to clone; `Send + Sync`. Handles of one name share one state.
///
/// ```
/// use logqueue::{CursorConfig, Log, LogConfig, Record};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// log.append_batch(vec![Record::new("a"), Record::new("b")]).unwrap();
/// let cursor = log.cursor("reader", CursorConfig::default()).unwrap();
/// assert_eq!(cursor.position(), 0);
/// for record in log.reader(cursor.position()).unwrap() {
///     cursor.commit(record.unwrap().offset + 1).unwrap();
/// }
/// log.close().unwrap();
/// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
/// assert_eq!(log.cursor("reader", CursorConfig::default()).unwrap().position(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct Cursor {
    state: Arc<CursorState>,
    log: Arc<LogInner>,
}

#[derive(Debug)]
struct CursorState {
    name: String,
    path: PathBuf,
    position: AtomicU64,
    protect: AtomicBool,
    deleted: AtomicBool,
    file: Mutex<SlotFile>,
}

/// One cursor file as read at open.
#[derive(Debug)]
enum Entry {
    Good(Arc<CursorState>),
    /// Unreadable: protects everything, reported; `cursor()`/`cursors()` fail.
    Damaged {
        path: PathBuf,
        reason: String,
    },
}

/// Every cursor of a log, plus holds the open hooks placed for floors they could not
/// know (see [`Log::hold_unknown_floor`]).
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    dir: PathBuf,
    entries: Mutex<BTreeMap<String, Entry>>,
    unknown: Mutex<Vec<PathBuf>>,
}

/// Cursor names: ASCII letters, digits, `.`, `_`, `-`; 1 to 200 bytes; not `.`/`..`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn file_name(name: &str) -> String {
    format!("{name}{SUFFIX}")
}

/// The file of the cursor `name` of the log in `log_dir`.
pub(crate) fn cursor_path(log_dir: &Path, name: &str) -> PathBuf {
    log_dir.join(CURSOR_DIR).join(file_name(name))
}

impl Cursors {
    /// Reads every cursor file of the log in `log_dir`. Damaged files are kept as
    /// damaged entries (open works; see the module docs); an unreadable directory is
    /// an I/O error.
    pub(crate) fn load(fs: &dyn FileSystem, log_dir: &Path) -> Result<Cursors> {
        Cursors::load_with(fs, log_dir, true)
    }

    /// [`Cursors::load`] for a read-only view: a leftover temporary file is passed
    /// over, not removed.
    pub(crate) fn load_read_only(fs: &dyn FileSystem, log_dir: &Path) -> Result<Cursors> {
        Cursors::load_with(fs, log_dir, false)
    }

    fn load_with(fs: &dyn FileSystem, log_dir: &Path, writable: bool) -> Result<Cursors> {
        let dir = log_dir.join(CURSOR_DIR);
        let mut entries = BTreeMap::new();
        let names = match fs.list(&dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("list cursors", &dir, e)),
        };
        for file in names {
            let path = dir.join(&file);
            if file.ends_with(&format!("{SUFFIX}{}", checkpoint::TMP_SUFFIX)) {
                // A creation that never renamed: the cursor never existed.
                if writable {
                    fs.remove_file(&path)
                        .map_err(|e| Error::io("remove cursor leftover", &path, e))?;
                }
                continue;
            }
            let Some(name) = file.strip_suffix(SUFFIX).filter(|n| valid_name(n)) else {
                continue;
            };
            let entry = match file::read_cursor_file(fs, &path) {
                // Deleted by the owner between the listing and the read (a read-only
                // view only: a writer holds the lock, nobody else removes cursors).
                Err(e) if !writable && e.kind() == std::io::ErrorKind::NotFound => continue,
                Ok(bytes) => match file::decode_file(&bytes) {
                    Ok((slot, sequence, position, protect)) => Entry::Good(Arc::new(CursorState {
                        name: name.to_string(),
                        path: path.clone(),
                        position: AtomicU64::new(position),
                        protect: AtomicBool::new(protect),
                        deleted: AtomicBool::new(false),
                        file: Mutex::new(SlotFile {
                            handle: None,
                            sequence,
                            synced_slot: slot,
                            synced_known: false,
                            dirty: false,
                        }),
                    })),
                    Err(reason) => Entry::Damaged { path, reason },
                },
                Err(e) => Entry::Damaged {
                    path,
                    reason: format!("unreadable: {e}"),
                },
            };
            entries.insert(name.to_string(), entry);
        }
        Ok(Cursors {
            dir,
            entries: Mutex::new(entries),
            unknown: Mutex::new(Vec::new()),
        })
    }

    /// For a read-only view: reads every cursor file again, since the owner commits
    /// in place. A commit being written while it is read spoils only the slot it
    /// writes (see the module docs), so the other slot answers.
    pub(crate) fn reload_read_only(&self, fs: &dyn FileSystem, log_dir: &Path) -> Result<()> {
        let fresh = Cursors::load_with(fs, log_dir, false)?;
        *self.entries.lock() = fresh.entries.into_inner();
        Ok(())
    }

    /// The lowest position of the protecting cursors, and the files that made it
    /// protect everything (damaged cursors, unknown floors: floor 0).
    pub(crate) fn floor(&self) -> (Option<Offset>, Vec<PathBuf>) {
        let mut damaged = self.damaged();
        let entries = self.entries.lock();
        let mut lowest = (!damaged.is_empty()).then_some(0);
        for entry in entries.values() {
            if let Entry::Good(s) = entry {
                if s.protect.load(Ordering::Acquire) {
                    let p = s.position.load(Ordering::Acquire);
                    lowest = Some(lowest.map_or(p, |l: Offset| l.min(p)));
                }
            }
        }
        damaged.sort();
        (lowest, damaged)
    }

    /// Damaged cursor files and unknown floors, each of which protects everything.
    pub(crate) fn damaged(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.unknown.lock().clone();
        for entry in self.entries.lock().values() {
            if let Entry::Damaged { path, .. } = entry {
                out.push(path.clone());
            }
        }
        out
    }

    /// fsyncs every cursor committed since its last fsync.
    pub(crate) fn sync(&self) -> Result<()> {
        let states: Vec<Arc<CursorState>> = self
            .entries
            .lock()
            .values()
            .filter_map(|e| match e {
                Entry::Good(s) => Some(Arc::clone(s)),
                Entry::Damaged { .. } => None,
            })
            .collect();
        for s in states {
            let mut f = s.file.lock();
            if f.dirty {
                f.sync(&s.path)?;
            }
        }
        Ok(())
    }
}

impl Log {
    /// Opens the cursor `name`, creating it at [`Log::start_offset`] (nothing
    /// consumed) when it does not exist; `config.protect` replaces the stored setting.
    /// Names are ASCII letters, digits, `.`, `_`, `-` (queues use `queue.<name>`). A
    /// damaged cursor file is [`Error::Corrupt`] naming it ([`Log::delete_cursor`]
    /// removes it).
    ///
    /// ```
    /// use logqueue::{CursorConfig, Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let c = log.cursor("mirror", CursorConfig { protect: false }).unwrap();
    /// assert_eq!(log.cursors().unwrap()[0].name, "mirror");
    /// # drop(c);
    /// ```
    pub fn cursor(&self, name: &str, config: CursorConfig) -> Result<Cursor> {
        self.inner.check_writable()?;
        // A new cursor (or a protect switched on) is a floor going down: in one
        // critical section with retention's check-and-delete (see retention.rs).
        let _pass = self.inner.retention.pass.lock();
        self.cursor_under_pass(name, config.protect, None)
    }

    /// [`Log::cursor`] for a caller that holds `retention.pass`: creates the cursor at
    /// `initial` (default: the start offset) or, with `initial` given, moves an
    /// existing one down to it when it is above. A damaged file is Corrupt.
    pub(crate) fn cursor_under_pass(
        &self,
        name: &str,
        protect: bool,
        initial: Option<Offset>,
    ) -> Result<Cursor> {
        if !valid_name(name) {
            return Err(Error::InvalidConfig(format!("bad cursor name {name:?}")));
        }
        let inner = &self.inner;
        let mut entries = inner.cursors.entries.lock();
        let state = match entries.get(name) {
            Some(Entry::Damaged { path, reason }) => {
                return Err(Error::corrupt(path, 0, None, reason.clone()))
            }
            Some(Entry::Good(s)) => Arc::clone(s),
            None => {
                let position = initial.unwrap_or_else(|| self.start_offset());
                let state = self.create_cursor_file(name, position, protect)?;
                entries.insert(name.to_string(), Entry::Good(Arc::clone(&state)));
                return Ok(Cursor {
                    state,
                    log: Arc::clone(inner),
                });
            }
        };
        drop(entries);
        let cursor = Cursor {
            state,
            log: Arc::clone(inner),
        };
        let position = cursor.position();
        let target = initial.map_or(position, |i| i.min(position));
        if target != position || protect != cursor.state.protect.load(Ordering::Acquire) {
            cursor.write(target, protect)?;
        }
        Ok(cursor)
    }

    /// Replaces whatever file the cursor `name` has (none, or a damaged one) with a
    /// new cursor at `position`, durably; the caller holds `retention.pass`.
    pub(crate) fn reset_cursor_under_pass(
        &self,
        name: &str,
        position: Offset,
        protect: bool,
    ) -> Result<Cursor> {
        let inner = &self.inner;
        let mut entries = inner.cursors.entries.lock();
        if let Some(Entry::Good(old)) = entries.get(name) {
            old.deleted.store(true, Ordering::Release);
        }
        let state = self.create_cursor_file(name, position, protect)?;
        entries.insert(name.to_string(), Entry::Good(Arc::clone(&state)));
        Ok(Cursor {
            state,
            log: Arc::clone(inner),
        })
    }

    /// Durably writes a new cursor file (both slots valid), creating `cursors/`.
    fn create_cursor_file(
        &self,
        name: &str,
        position: Offset,
        protect: bool,
    ) -> Result<Arc<CursorState>> {
        let inner = &self.inner;
        let fs = &*inner.config.fs;
        let dir = &inner.cursors.dir;
        if !fs.exists(dir) {
            fs.create_dir_all(dir)
                .map_err(|e| Error::io("create cursor directory", dir, e))?;
            fs.sync_dir(&inner.dir)
                .map_err(|e| Error::io("sync directory", &inner.dir, e))?;
        }
        checkpoint::durable_replace(
            fs,
            dir,
            &file_name(name),
            &file::new_file(position, protect),
        )?;
        Ok(Arc::new(CursorState {
            name: name.to_string(),
            path: dir.join(file_name(name)),
            position: AtomicU64::new(position),
            protect: AtomicBool::new(protect),
            deleted: AtomicBool::new(false),
            file: Mutex::new(SlotFile {
                handle: None,
                sequence: 2,
                synced_slot: 0,
                synced_known: true,
                dirty: false,
            }),
        }))
    }

    /// Every cursor, by name. Any damaged cursor file is [`Error::Corrupt`] naming it.
    /// On a [`Log::open_read_only`] view the cursor files are read again on each call,
    /// so it shows the positions the owning process has committed since.
    ///
    /// ```
    /// use logqueue::{CursorConfig, CursorInfo, Log, LogConfig, Record};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// log.append(Record::new("x")).unwrap();
    /// log.cursor("a", CursorConfig::default()).unwrap().commit(1).unwrap();
    /// let info = CursorInfo { name: "a".into(), position: 1, protect: true };
    /// assert_eq!(log.cursors().unwrap(), vec![info]);
    /// ```
    pub fn cursors(&self) -> Result<Vec<CursorInfo>> {
        self.inner.check_open()?;
        if self.is_read_only() {
            let inner = &self.inner;
            inner
                .cursors
                .reload_read_only(&*inner.config.fs, &inner.dir)?;
        }
        let entries = self.inner.cursors.entries.lock();
        entries
            .iter()
            .map(|(name, e)| match e {
                Entry::Good(s) => Ok(CursorInfo {
                    name: name.clone(),
                    position: s.position.load(Ordering::Acquire),
                    protect: s.protect.load(Ordering::Acquire),
                }),
                Entry::Damaged { path, reason } => {
                    Err(Error::corrupt(path, 0, None, reason.clone()))
                }
            })
            .collect()
    }

    /// Deletes the cursor `name` durably (a damaged one too); deleting a cursor that
    /// does not exist does nothing. Open handles of it fail from then on.
    ///
    /// ```
    /// use logqueue::{CursorConfig, Log, LogConfig};
    /// let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    /// let c = log.cursor("gone", CursorConfig::default()).unwrap();
    /// log.delete_cursor("gone").unwrap();
    /// assert!(log.cursors().unwrap().is_empty());
    /// assert!(c.commit(0).is_err());
    /// ```
    pub fn delete_cursor(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_writable()?;
        if !valid_name(name) {
            return Err(Error::InvalidConfig(format!("bad cursor name {name:?}")));
        }
        let mut entries = inner.cursors.entries.lock();
        let Some(entry) = entries.get(name) else {
            return Ok(());
        };
        if let Entry::Good(s) = entry {
            // Commits of other handles wait on this lock, then see `deleted`.
            let _file = s.file.lock();
            s.deleted.store(true, Ordering::Release);
        }
        let fs = &*inner.config.fs;
        let path = inner.cursors.dir.join(file_name(name));
        entries.remove(name);
        match fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove cursor", &path, e)),
        }
        fs.sync_dir(&inner.cursors.dir)
            .map_err(|e| Error::io("sync directory", &inner.cursors.dir, e))
    }

    /// Makes retention protect everything, reporting `path` in
    /// [`crate::LogStats::damaged_floor_files`], until [`Log::release_unknown_floor`]:
    /// for an open hook that finds a consumer whose floor it cannot know.
    pub(crate) fn hold_unknown_floor(&self, path: PathBuf) {
        let mut unknown = self.inner.cursors.unknown.lock();
        if !unknown.contains(&path) {
            unknown.push(path);
        }
    }

    /// Ends a [`Log::hold_unknown_floor`].
    pub(crate) fn release_unknown_floor(&self, path: &Path) {
        self.inner.cursors.unknown.lock().retain(|p| p != path);
    }

    /// The cursor `name` when it exists and is readable (open hooks only).
    /// The cursor `name` as it stands; `None` when it does not exist or is damaged.
    pub(crate) fn cursor_info(&self, name: &str) -> Option<CursorInfo> {
        match self.inner.cursors.entries.lock().get(name)? {
            Entry::Good(s) => Some(CursorInfo {
                name: name.to_string(),
                position: s.position.load(Ordering::Acquire),
                protect: s.protect.load(Ordering::Acquire),
            }),
            Entry::Damaged { .. } => None,
        }
    }

    pub(crate) fn cursor_exists(&self, name: &str) -> bool {
        self.inner.cursors.entries.lock().contains_key(name)
    }

    /// Names of every cursor, damaged ones included (open hooks only).
    pub(crate) fn cursor_names(&self) -> Vec<String> {
        self.inner.cursors.entries.lock().keys().cloned().collect()
    }
}

impl Cursor {
    /// Records that everything below `offset` is consumed. Survives a crash of the
    /// process (kill -9) when it returns, and power loss after the next
    /// [`Log::flush`] (called, or run by the background flusher under
    /// `FlushPolicy::Interval`) or close; the fsync an append does under
    /// `FlushPolicy::Always` or `EveryRecords` does not cover cursors. Costs one `pwrite`, no fsync. Moving a protecting
    /// cursor down is allowed (records already deleted stay deleted); past
    /// [`Log::end_offset`] is [`Error::OffsetOutOfRange`].
    pub fn commit(&self, offset: Offset) -> Result<()> {
        let end = self.log.end_offset.load(Ordering::SeqCst);
        if offset > end {
            return Err(Error::OffsetOutOfRange {
                offset,
                start: self.log.start_offset.load(Ordering::Acquire),
                end,
            });
        }
        let protect = self.state.protect.load(Ordering::Acquire);
        if protect && offset < self.position() {
            // A floor going down: not while a retention pass checks and deletes.
            let _pass = self.log.retention.pass.lock();
            self.write(offset, protect)
        } else {
            self.write(offset, protect)
        }
    }

    fn write(&self, offset: Offset, protect: bool) -> Result<()> {
        self.log.check_writable()?;
        let s = &self.state;
        let mut file = s.file.lock();
        if s.deleted.load(Ordering::Acquire) {
            return Err(Error::InvalidConfig(format!(
                "cursor {:?} was deleted",
                s.name
            )));
        }
        file.write(&*self.log.config.fs, &s.path, offset, protect)?;
        s.position.store(offset, Ordering::Release);
        s.protect.store(protect, Ordering::Release);
        Ok(())
    }

    /// Everything below this offset is consumed.
    pub fn position(&self) -> Offset {
        self.state.position.load(Ordering::Acquire)
    }

    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }
}
