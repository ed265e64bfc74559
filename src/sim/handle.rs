//! Open files, mappings and lock guards of [`super::SimFs`].

use std::alloc::{self, Layout};
use std::fmt;
use std::io::{self, ErrorKind};
use std::ptr::NonNull;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::state::{dead_handle, error, State};
use crate::fs::{FileHandle, Mapping, LARGE_WRITE_BYTES};

/// One open of a file; shared by the [`SimFile`] and every mapping made from it.
pub(super) struct HandleInner {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) node: u64,
    pub(super) gen: u64,
    pub(super) writable: bool,
}

impl HandleInner {
    /// Locks the disk, failing when this handle predates a crash or kill.
    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.state.lock();
        if state.gen == self.gen {
            Ok(state)
        } else {
            Err(dead_handle())
        }
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(error(ErrorKind::PermissionDenied, "file opened read-only"))
        }
    }
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        if state.gen != self.gen {
            return; // The crash already forgot this handle.
        }
        if let Ok(file) = state.file_mut(self.node) {
            file.open = file.open.saturating_sub(1);
            if file.open == 0 {
                state.maybe_gc();
            }
        }
    }
}

/// A [`FileHandle`] of the simulated file system.
pub(super) struct SimFile(pub(super) Arc<HandleInner>);

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("node", &self.0.node)
            .field("gen", &self.0.gen)
            .field("writable", &self.0.writable)
            .finish()
    }
}

impl FileHandle for SimFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let mut state = self.0.live()?;
        Ok(state.file_mut(self.0.node)?.current.read(buf, pos))
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let mut state = self.0.live()?;
        self.0.check_writable()?;
        state.begin_op()?;
        state.file_mut(self.0.node)?.write(pos, buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.0.live()?;
        state.begin_op()?;
        state.file_mut(self.0.node)?.sync()
    }

    fn size(&self) -> io::Result<u64> {
        let mut state = self.0.live()?;
        Ok(state.file_mut(self.0.node)?.current.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.0.live()?;
        self.0.check_writable()?;
        state.begin_op()?;
        state.file_mut(self.0.node)?.set_len(len);
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut state = self.0.live()?;
        self.0.check_writable()?;
        state.begin_op()?;
        let file = state.file_mut(self.0.node)?;
        if len > file.current.len() {
            file.set_len(len);
        }
        Ok(())
    }

    fn map(&self, len: usize) -> io::Result<Arc<dyn Mapping>> {
        let mut state = self.0.live()?;
        let content = &state.file_mut(self.0.node)?.current;
        if !self.0.writable && len as u64 > content.len() {
            return Err(error(
                ErrorKind::InvalidInput,
                "read-only mapping past the end of the file",
            ));
        }
        let ptr = if len == 0 {
            NonNull::dangling()
        } else {
            let layout = Layout::array::<u8>(len)
                .map_err(|_| error(ErrorKind::InvalidInput, "mapping too large"))?;
            // SAFETY: `layout` has a non-zero size. Zeroed allocation, so a big mapping
            // only costs the pages actually touched.
            let raw = unsafe { alloc::alloc_zeroed(layout) };
            NonNull::new(raw)
                .ok_or_else(|| error(ErrorKind::OutOfMemory, "cannot allocate mapping"))?
        };
        let bytes = content.materialised();
        let copy = bytes.len().min(len);
        // SAFETY: `ptr` points to `len >= copy` fresh bytes, disjoint from `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), copy) };
        drop(state);
        Ok(Arc::new(SimMapping {
            handle: Arc::clone(&self.0),
            ptr,
            len,
        }))
    }
}

/// A [`Mapping`]: a private buffer at a fixed address, filled from the file at map
/// time. Writes through it also go to the file (as un-synced writes); later writes to
/// the file through a handle are not reflected in it (the engine never rewrites a
/// mapped region that way).
pub(super) struct SimMapping {
    handle: Arc<HandleInner>,
    /// `len` bytes from `alloc_zeroed` (dangling when `len == 0`), freed on drop.
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is owned by the mapping and only reached through `as_ptr` and
// `write`. Per the `Mapping` contract, readers only read bytes already published and
// the single writer only writes bytes no reader looks at, so accesses never race;
// `write` itself runs under the disk mutex.
unsafe impl Send for SimMapping {}
// SAFETY: see `Send` above.
unsafe impl Sync for SimMapping {}

impl fmt::Debug for SimMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimMapping")
            .field("node", &self.handle.node)
            .field("len", &self.len)
            .field("writable", &self.handle.writable)
            .finish()
    }
}

impl Mapping for SimMapping {
    /// As `OsFs` does for large writes, so that crash tests walk the parts path.
    fn wants_parts(&self, len: usize) -> bool {
        len >= LARGE_WRITE_BYTES
    }

    /// One write, one crash point: what `OsFs` does with them, a single `pwritev`,
    /// either happens or not when the process dies.
    fn write_parts(&self, pos: usize, parts: &[&[u8]]) -> io::Result<()> {
        self.write(pos, &parts.concat())
    }

    fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn write(&self, pos: usize, data: &[u8]) -> io::Result<()> {
        let mut state = self.handle.live()?;
        if !self.handle.writable {
            return Err(error(ErrorKind::PermissionDenied, "read-only mapping"));
        }
        let end = pos
            .checked_add(data.len())
            .filter(|&end| end <= self.len)
            .ok_or_else(|| error(ErrorKind::InvalidInput, "write past mapping"))?;
        let size = state.file_mut(self.handle.node)?.current.len();
        if end as u64 > size {
            // What the OS does to a store past the end of a mapped file. Released
            // first, so the disk stays usable to whoever catches the panic.
            drop(state);
            panic!(
                "SIGBUS: mapped write past end of file (node {}: bytes {pos}..{end}, file size {size})",
                self.handle.node
            );
        }
        state.begin_op()?;
        state.file_mut(self.handle.node)?.write(pos as u64, data)?;
        // SAFETY: `[pos, end)` lies inside the buffer (checked above); the caller
        // guarantees no reader looks at these bytes while they are written.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(pos), data.len());
        }
        Ok(())
    }
}

impl Drop for SimMapping {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        if let Ok(layout) = Layout::array::<u8>(self.len) {
            // SAFETY: allocated in `map` with this very layout, freed only here.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// Guard of [`super::SimFs`]'s `try_lock`: releases the lock on drop, unless a crash
/// already released it (then `token` no longer matches).
pub(super) struct SimLock {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) key: Vec<String>,
    pub(super) token: u64,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLock")
            .field("path", &self.key.join("/"))
            .finish()
    }
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        if state.locks.get(&self.key) == Some(&self.token) {
            state.locks.remove(&self.key);
        }
    }
}

/// Marks a node as opened once more (for garbage collection).
pub(super) fn opened(state: &mut State, node: u64) {
    if let Ok(file) = state.file_mut(node) {
        file.open += 1;
    }
}
