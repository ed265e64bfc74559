//! [`SimFs`]: a deterministic, in-memory [`FileSystem`] that can crash and fail.
//!
//! # Durability model
//!
//! Every file has a *current* content (what reads see) and a *durable* content (what
//! survives a power loss). Changes since the last [`FileHandle::sync_data`] of the
//! file (any handle of it) are kept as an ordered list of pending writes and size
//! changes on top of the durable content; `sync_data` makes them all durable.
//!
//! Every directory likewise has a current and a durable set of entries (name ->
//! file or directory). Creating, renaming and removing files and directories
//! (including [`FileSystem::create_dir_all`]) changes only the current entries of the
//! parent directory; [`FileSystem::sync_dir`] of that parent makes them durable. The
//! root directory always exists. (A rename across directories made durable in only one
//! of them leaves the file under both names after a crash, like a hard link.)
//!
//! [`SimFs::crash`] simulates a power loss: directories revert to their durable
//! entries (a file whose entry was never synced vanishes; an unsynced rename is
//! undone), and for each surviving file every pending change is, by the seeded
//! random generator, kept, dropped or (for a write) torn to a prefix. [`SimFs::kill`]
//! simulates the death of the process only: nothing is lost. Both invalidate every
//! handle and mapping opened before (their operations fail) and release every lock.
//!
//! Mutating or syncing operations are counted ([`SimFs::op_count`]): writes (also
//! through a mapping), `sync_data`, `set_len`, `allocate`, opens with
//! [`OpenMode::Create`] (and `try_lock`, which creates its file), `create_dir_all`,
//! `rename`, `remove_file`, `remove_dir_all` and `sync_dir`. A chosen operation can
//! be made to fail ([`SimFs::fail_after`]) or to crash the disk instead of running
//! ([`SimFs::crash_at_op`]). A failing operation has no effect.
//!
//! A mapping behaves like a raw memory map: a write through it past the end of the
//! file (which the OS answers with `SIGBUS`) panics with a message starting
//! `SIGBUS: mapped write past end of file`, rather than returning an error, so a
//! crash suite cannot take an engine bug of that class for an injected I/O error.
//!
//! Paths are plain: `.` and `..` are resolved lexically, `/a` and `a` are the same
//! file, there are no links.
//!
//! ```
//! use std::path::Path;
//! use logqueue::fs::{FileSystem, OpenMode};
//! use logqueue::sim::SimFs;
//!
//! let fs = SimFs::new(7);
//! fs.create_dir_all(Path::new("/q")).unwrap();
//! fs.sync_dir(Path::new("/")).unwrap();
//! let f = fs.open(Path::new("/q/a"), OpenMode::Create).unwrap();
//! fs.sync_dir(Path::new("/q")).unwrap();
//! f.write_all_at(b"durable", 0).unwrap();
//! f.sync_data().unwrap();
//! f.write_all_at(b" maybe", 7).unwrap(); // never synced
//! fs.crash();
//! let after = fs.read_file("/q/a").unwrap();
//! assert!(after.starts_with(b"durable") && b"durable maybe".starts_with(&after));
//! assert!(f.size().is_err()); // handles from before the crash are dead
//! ```

mod handle;
mod state;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{FileHandle, FileSystem, OpenMode};
use handle::{opened, HandleInner, SimFile, SimLock};
use state::{components, State};

/// What an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// An I/O error: `io::Error::from_raw_os_error(5)` (EIO).
    Eio,
    /// A full disk: `io::Error::from_raw_os_error(28)` (ENOSPC).
    NoSpace,
}

/// How long an injected fault lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// Only the chosen operation fails.
    Once,
    /// The chosen operation and every later one fail, until [`SimFs::clear_faults`].
    Sticky,
}

/// A simulated disk in memory; clones share the same disk.
///
/// See the [module documentation](self) for the durability model.
///
/// ```
/// use std::path::Path;
/// use logqueue::fs::{FileSystem, OpenMode};
/// use logqueue::sim::SimFs;
///
/// let fs = SimFs::new(1);
/// let f = fs.open(Path::new("/new"), OpenMode::Create).unwrap();
/// f.write_all_at(b"x", 0).unwrap();
/// f.sync_data().unwrap(); // the data is durable, the directory entry is not
/// fs.crash();
/// assert!(!fs.exists(Path::new("/new")));
/// ```
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    /// What [`FileSystem::reserves_allocation`] answers (true unless set).
    not_reserving: Arc<std::sync::atomic::AtomicBool>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("SimFs")
            .field("generation", &state.gen)
            .field("ops", &state.ops)
            .field("nodes", &state.node_count())
            .finish()
    }
}

impl SimFs {
    /// An empty disk (just the root directory); `seed` drives every crash outcome.
    ///
    /// ```
    /// let fs = logqueue::sim::SimFs::new(42);
    /// assert_eq!(fs.op_count(), 0);
    /// ```
    pub fn new(seed: u64) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(State::new(seed))),
            not_reserving: Arc::default(),
        }
    }

    /// Makes [`FileSystem::reserves_allocation`] answer `reserves` from now on (for
    /// this file system and its clones): false plays a copy-on-write file system,
    /// on which the engine writes through the file instead of into the mapping.
    pub fn set_reserves_allocation(&self, reserves: bool) {
        self.not_reserving
            .store(!reserves, std::sync::atomic::Ordering::Relaxed);
    }

    /// Power loss: un-synced directory entries revert, each un-synced write of a file
    /// is kept, dropped or torn, each un-synced size change kept or dropped (chosen by
    /// the seeded generator). All handles, mappings and locks from before are dead.
    ///
    /// ```
    /// use std::path::Path;
    /// use logqueue::fs::{FileSystem, OpenMode};
    /// let fs = logqueue::sim::SimFs::new(3);
    /// fs.write_file("/a", b"old").unwrap(); // durable
    /// let f = fs.open(Path::new("/a"), OpenMode::Write).unwrap();
    /// f.write_all_at(b"new", 0).unwrap();
    /// fs.crash();
    /// let a = fs.read_file("/a").unwrap();
    /// assert!(a == b"old" || a == b"new" || a == b"nld" || a == b"ned");
    /// ```
    pub fn crash(&self) {
        self.state.lock().crash(true);
    }

    /// Process death (`kill -9`) with the machine surviving: nothing is lost, but all
    /// handles, mappings and locks from before are dead.
    ///
    /// ```
    /// use std::path::Path;
    /// use logqueue::fs::{FileSystem, OpenMode};
    /// let fs = logqueue::sim::SimFs::new(3);
    /// let f = fs.open(Path::new("/a"), OpenMode::Create).unwrap();
    /// f.write_all_at(b"kept", 0).unwrap();
    /// fs.kill();
    /// assert_eq!(fs.read_file("/a").unwrap(), b"kept");
    /// assert!(f.write_all_at(b"x", 0).is_err());
    /// ```
    pub fn kill(&self) {
        self.state.lock().crash(false);
    }

    /// Makes the `n`-th counted operation from now fail with `kind` (`n == 1`: the
    /// next one; 0 counts as 1). With [`FaultMode::Sticky`] every later operation
    /// fails too. Replaces any earlier `fail_after`.
    ///
    /// ```
    /// use std::path::Path;
    /// use logqueue::fs::{FileSystem, OpenMode};
    /// use logqueue::sim::{FaultKind, FaultMode, SimFs};
    /// let fs = SimFs::new(0);
    /// let f = fs.open(Path::new("/a"), OpenMode::Create).unwrap();
    /// fs.fail_after(1, FaultKind::NoSpace, FaultMode::Once);
    /// assert_eq!(f.write_all_at(b"x", 0).unwrap_err().raw_os_error(), Some(28));
    /// f.write_all_at(b"x", 0).unwrap();
    /// ```
    pub fn fail_after(&self, n: u64, kind: FaultKind, mode: FaultMode) {
        self.state.lock().set_fault(n, kind, mode);
    }

    /// Crashes the disk (as [`SimFs::crash`]) when the operation counter reaches `n`,
    /// instead of running that operation, which returns an error. Counts from the
    /// creation of the disk, like [`SimFs::op_count`]; fires at most once.
    ///
    /// ```
    /// use std::path::Path;
    /// use logqueue::fs::{FileSystem, OpenMode};
    /// let fs = logqueue::sim::SimFs::new(0);
    /// fs.crash_at_op(2);
    /// let f = fs.open(Path::new("/a"), OpenMode::Create).unwrap(); // op 1
    /// assert!(f.write_all_at(b"x", 0).is_err()); // op 2: crash
    /// assert!(!fs.exists(Path::new("/a")));
    /// ```
    pub fn crash_at_op(&self, n: u64) {
        self.state.lock().set_crash_at(n);
    }

    /// Cancels every armed or sticky fault and any pending [`SimFs::crash_at_op`].
    pub fn clear_faults(&self) {
        self.state.lock().clear_faults();
    }

    /// Number of counted (mutating or syncing) operations so far, failed ones
    /// included; see the [module documentation](self) for the list.
    pub fn op_count(&self) -> u64 {
        self.state.lock().ops
    }

    /// Current size of the file at `path`; `None` when there is no such file.
    ///
    /// ```
    /// let fs = logqueue::sim::SimFs::new(0);
    /// fs.write_file("/d/a", b"abc").unwrap();
    /// assert_eq!(fs.file_len("/d/a"), Some(3));
    /// assert_eq!(fs.file_len("/d"), None);
    /// ```
    pub fn file_len(&self, path: impl AsRef<Path>) -> Option<u64> {
        let path = components(path.as_ref()).ok()?;
        let mut state = self.state.lock();
        Some(state.file_at(&path).ok()?.current.len())
    }

    /// Current content of the file at `path` (zeros included up to its size); `None`
    /// when there is no such file or it is too large to hold in memory.
    pub fn read_file(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let path = components(path.as_ref()).ok()?;
        let mut state = self.state.lock();
        let content = &state.file_at(&path).ok()?.current;
        let len = usize::try_from(content.len()).ok()?;
        let mut out = Vec::new();
        out.try_reserve_exact(len).ok()?;
        out.resize(len, 0);
        content.read(&mut out, 0);
        Some(out)
    }

    /// Creates or replaces the file at `path` with `bytes`, durably (content, entry and
    /// missing parent directories), bypassing op counting and faults. For tests that
    /// plant files.
    pub fn write_file(&self, path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
        let path = components(path.as_ref())?;
        self.state.lock().write_durable(&path, bytes)
    }

    /// XORs the byte at `pos` of the file at `path` with `xor_mask`, in both the
    /// current and the durable content, as disk corruption would. Existing mappings
    /// do not see it. Fails when `pos` is past both ends.
    ///
    /// ```
    /// let fs = logqueue::sim::SimFs::new(0);
    /// fs.write_file("/a", b"abc").unwrap();
    /// fs.corrupt_byte("/a", 1, 0x20).unwrap();
    /// fs.crash();
    /// assert_eq!(fs.read_file("/a").unwrap(), b"aBc");
    /// ```
    pub fn corrupt_byte(&self, path: impl AsRef<Path>, pos: u64, xor_mask: u8) -> io::Result<()> {
        let path = components(path.as_ref())?;
        let mut state = self.state.lock();
        if state.file_at(&path)?.corrupt(pos, xor_mask)? {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "corruption past the end of the file",
            ))
        }
    }
}

impl FileSystem for SimFs {
    fn reserves_allocation(&self, _dir: &Path) -> io::Result<bool> {
        Ok(!self
            .not_reserving
            .load(std::sync::atomic::Ordering::Relaxed))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = components(path)?;
        let mut state = self.state.lock();
        state.begin_op()?;
        state.create_dir_all(&path, false).map(drop)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let path = components(path)?;
        let mut state = self.state.lock();
        let create = mode == OpenMode::Create;
        if create {
            state.begin_op()?;
        }
        let node = state.open(&path, create)?;
        opened(&mut state, node);
        let gen = state.gen;
        drop(state);
        Ok(Arc::new(SimFile(Arc::new(HandleInner {
            state: Arc::clone(&self.state),
            node,
            gen,
            writable: mode != OpenMode::Read,
        }))))
    }

    fn exists(&self, path: &Path) -> bool {
        components(path).is_ok_and(|path| self.state.lock().lookup(&path).is_ok())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (components(from)?, components(to)?);
        let mut state = self.state.lock();
        state.begin_op()?;
        state.rename(&from, &to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = components(path)?;
        let mut state = self.state.lock();
        state.begin_op()?;
        state.remove(&path, false)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = components(path)?;
        let mut state = self.state.lock();
        state.begin_op()?;
        state.remove(&path, true)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let dir = components(dir)?;
        self.state.lock().list(&dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = components(dir)?;
        let mut state = self.state.lock();
        state.begin_op()?;
        state.sync_dir(&dir)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let key = components(path)?;
        let mut state = self.state.lock();
        state.begin_op()?;
        state.open(&key, true)?;
        if state.locks.contains_key(&key) {
            return Ok(None);
        }
        let token = state.token();
        state.locks.insert(key.clone(), token);
        Ok(Some(Box::new(SimLock {
            state: Arc::clone(&self.state),
            key,
            token,
        })))
    }
}
