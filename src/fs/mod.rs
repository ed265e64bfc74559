//! The I/O layer: every file-system access of the engine goes through [`FileSystem`].
//!
//! Two implementations: [`OsFs`] (the real file system, with memory maps and
//! `fallocate`) and [`crate::sim::SimFs`] (in memory, deterministic, able to crash
//! and to fail chosen operations).

mod os;
#[cfg(test)]
mod write_mode_tests;

use std::any::Any;
use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub(crate) use os::EmptyMapping;
pub use os::OsFs;

/// How [`FileSystem::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, read only.
    Read,
    /// Existing file, read and write.
    Write,
    /// Read and write, created empty if missing (existing content is kept).
    Create,
}

/// A narrow file-system interface: what a segmented log needs and nothing more.
///
/// Paths are absolute or relative to the process's working directory, as given.
pub trait FileSystem: Send + Sync + Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>>;
    /// Size of the file at `path`, without keeping it open.
    fn file_size(&self, path: &Path) -> io::Result<u64> {
        self.open(path, OpenMode::Read)?.size()
    }
    /// True when a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Renames `from` to `to`, replacing `to`. Durable only after [`FileSystem::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable only after [`FileSystem::sync_dir`].
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a directory and everything below it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of a directory (files and directories), unsorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// True when [`FileHandle::allocate`] on files in `dir` reserves real blocks, so
    /// that stores through a writable mapping of allocated space cannot fail for
    /// lack of space (`SIGBUS` on a real map). False on copy-on-write and network
    /// file systems (btrfs, ZFS, bcachefs, NFS, ...): the engine then writes with
    /// [`FileHandle::map_writing_through_file`]. An error when the file system cannot
    /// be identified, or the platform is not supported: the log refuses to open.
    /// True by default.
    fn reserves_allocation(&self, _dir: &Path) -> io::Result<bool> {
        Ok(true)
    }
    /// Takes an exclusive advisory lock on `path` (created if missing).
    /// `Ok(None)` when another holder (this process or another) has it.
    /// The lock is released when the returned guard drops.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>>;
}

/// An open file.
pub trait FileHandle: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `pos`; returns how many were read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Makes the file's data (and the size, where it changed) durable: `fdatasync`.
    /// On a file with a write mapping this includes the bytes written through it.
    fn sync_data(&self) -> io::Result<()>;
    /// The current size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Extends the file to at least `len` bytes with really allocated, zeroed blocks,
    /// so later writes through a mapping cannot fail for lack of space.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Maps the first `len` bytes for reading. `len` may exceed the current size only
    /// for a [`OpenMode::Write`]/[`OpenMode::Create`] handle, in which case the mapping
    /// is writable through [`Mapping::write`] and only bytes below the file's size may
    /// be touched.
    fn map(&self, len: usize) -> io::Result<Arc<dyn Mapping>>;
    /// Like [`FileHandle::map`] for a writable handle, but the mapping's writes go
    /// through the file (`pwrite(2)`: into the page cache, so they survive the
    /// process being killed) instead of being stores into the mapping: for file
    /// systems where [`FileSystem::reserves_allocation`] is false, on which a store
    /// into allocated space can still find the disk full and raise `SIGBUS`. Reads
    /// through the mapping see those writes. By default the same as `map` (an
    /// implementation whose mapping writes already reach the file that way).
    fn map_writing_through_file(&self, len: usize) -> io::Result<Arc<dyn Mapping>> {
        self.map(len)
    }

    /// Reads exactly `buf.len()` bytes at `pos`.
    fn read_exact_at(&self, buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], pos)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past end of file",
                ));
            }
            done += n;
            pos += n as u64;
        }
        Ok(())
    }
}

/// A memory-mapped region of a file, at a fixed address for the mapping's lifetime.
///
/// Readers get slices of bytes that the single writer has published; the writer only
/// writes bytes no reader is looking at (append-only), so the two never overlap.
pub trait Mapping: Send + Sync + Debug {
    /// Start of the mapped bytes.
    fn as_ptr(&self) -> *const u8;
    /// Length of the mapping in bytes.
    fn len(&self) -> usize;
    /// True for a zero-length mapping.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `data` into the mapping (and so into the file) at `pos`.
    ///
    /// The caller guarantees that no reader reads `[pos, pos + data.len())` while this
    /// runs.
    ///
    /// Bytes past the mapping's length are refused with an error. On a real memory
    /// map a store past the end of the file is `SIGBUS`, which kills the process, so
    /// [`OsFs`] refuses such a write with an error too: it bounds the mapping's writes
    /// by the file's size as set through the handle the mapping was made from
    /// (`set_len`, `allocate`, writes), asking the OS again before refusing. (Shrinking
    /// a mapped file through another handle or process is outside this guard; the
    /// engine never does.) [`crate::sim::SimFs`] instead does what an unguarded map
    /// does, and aborts: a panic starting `SIGBUS: mapped write past end of file`,
    /// so tests that hit this class of bug cannot miss it.
    fn write(&self, pos: usize, data: &[u8]) -> io::Result<()>;

    /// Lets `fill` write all of `[pos, pos + len)` in place: the engine encodes a
    /// batch straight into the file this way, one copy of each byte instead of two.
    /// The same rules as [`Mapping::write`] apply (bounds, no reader of the range);
    /// `fill` must set every byte of the slice it gets, whose old content is
    /// unspecified. The default fills a buffer and copies it with `write`.
    fn write_with(
        &self,
        pos: usize,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> io::Result<()> {
        let mut buf = vec![0u8; len];
        fill(&mut buf);
        self.write(pos, &buf)
    }

    /// Whether a write of `len` bytes had better come as parts
    /// ([`Mapping::write_parts`]): true where such a write goes through the file with
    /// a system call anyway, so that the large values of a batch can be handed to it
    /// where they are instead of being copied into a buffer first. False by default.
    fn wants_parts(&self, _len: usize) -> bool {
        false
    }

    /// Writes `parts` one after another from `pos`, under the rules of
    /// [`Mapping::write`]. The default writes each part with `write`.
    fn write_parts(&self, pos: usize, parts: &[&[u8]]) -> io::Result<()> {
        write_each(self, pos, parts)
    }

    /// Hints that `[pos, pos + len)` (below the file's size) is about to be written, so
    /// its pages can be mapped in one go instead of one fault at a time. A no-op by
    /// default; failures are ignored (it is only a hint): see
    /// [`Mapping::try_prefault`] for the checked form.
    fn prefault(&self, _pos: usize, _len: usize) {}

    /// [`Mapping::prefault`], reporting its failure (the pages are then faulted in by
    /// the writes themselves, one at a time). By default calls `prefault`.
    fn try_prefault(&self, pos: usize, len: usize) -> io::Result<()> {
        self.prefault(pos, len);
        Ok(())
    }
}

/// Writes of at least this many bytes go through the file (`pwrite`, as parts: see
/// [`Mapping::wants_parts`]) even into an `OsFs` mapping that takes stores; `SimFs`
/// takes parts from the same size on, so that crash tests walk that path. Measured
/// (bench-compare, 64 KiB and 100 x 1 KiB batches): a store into the map costs a
/// zeroed page (the prefault, or a fault when the writer outruns it) plus the copy,
/// `pwrite` the copy alone, and above a few KiB the copy outweighs the system call;
/// below, stores are twice as fast. Coherent either way: one page cache behind the
/// map and the file (`MAP_SHARED`), and `pwrite` never raises `SIGBUS`.
pub(crate) const LARGE_WRITE_BYTES: usize = 16 << 10;

/// Writes `parts` one after another from `pos` with [`Mapping::write`], one call
/// each: [`Mapping::write_parts`] where nothing better is at hand.
pub(crate) fn write_each<M: Mapping + ?Sized>(
    map: &M,
    pos: usize,
    parts: &[&[u8]],
) -> io::Result<()> {
    let mut at = pos;
    for part in parts {
        map.write(at, part)?;
        at += part.len();
    }
    Ok(())
}

impl dyn Mapping {
    /// The bytes `[start, end)` of the mapping.
    ///
    /// The caller guarantees `end <= len()` and that no writer writes those bytes while
    /// the returned slice lives (they were published before and are never rewritten).
    pub(crate) fn bytes(&self, start: usize, end: usize) -> &[u8] {
        assert!(
            start <= end && end <= self.len(),
            "mapping range out of bounds"
        );
        // SAFETY: the range is inside the mapping, which stays at a fixed address for
        // the lifetime of `self`; the engine only writes bytes past the published end,
        // and callers only read below it.
        unsafe { std::slice::from_raw_parts(self.as_ptr().add(start), end - start) }
    }
}
