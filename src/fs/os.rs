//! [`OsFs`]: the real file system.

use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use super::{FileHandle, FileSystem, Mapping, OpenMode, LARGE_WRITE_BYTES};

/// The operating system's file system (Unix).
///
/// ```
/// use logqueue::fs::{FileSystem, OsFs, OpenMode};
/// let dir = tempfile::tempdir().unwrap();
/// let f = OsFs.open(&dir.path().join("a"), OpenMode::Create).unwrap();
/// f.write_all_at(b"hello", 0).unwrap();
/// assert_eq!(f.size().unwrap(), 5);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFs;

#[derive(Debug)]
struct OsFile {
    file: Arc<File>,
    writable: bool,
    /// The file's size as last set through this handle (`set_len`, `allocate`,
    /// writes past the end), read from the OS when a writable mapping is made:
    /// the bound of that mapping's writes.
    size: Arc<AtomicU64>,
}

#[derive(Debug)]
struct OsMapping {
    map: MmapRaw,
    /// The file and the size its handle knows, for a writable mapping.
    bound: Option<(Arc<File>, Arc<AtomicU64>)>,
    /// Writes go through the file (`pwrite`), never stores into the map: for file
    /// systems where allocated space is not reserved (see
    /// [`FileSystem::reserves_allocation`]). Reads through the map see them (one
    /// page cache, `MAP_SHARED`).
    through_file: bool,
    /// The last write was large enough to go through the file (see
    /// [`LARGE_WRITE_BYTES`]): prefaulting ahead (zeroing pages a `pwrite` then
    /// overwrites) would only cost, so it is skipped while writes stay large.
    writing_large: AtomicBool,
}

/// Large writes of at most this many bytes reuse a per-thread buffer; larger ones
/// allocate theirs, so an occasional huge batch does not pin its buffer forever.
const REUSED_BUFFER_MAX_BYTES: usize = 1 << 20;

thread_local! {
    /// The buffer a large write is encoded into before its `pwrite`.
    static LARGE_WRITE_BUFFER: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl FileSystem for OsFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let mut options = OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::Write => {
                options.write(true);
            }
            OpenMode::Create => {
                options.write(true).create(true);
            }
        }
        let file = options.open(path)?;
        Ok(Arc::new(OsFile {
            file: Arc::new(file),
            writable: mode != OpenMode::Read,
            size: Arc::new(AtomicU64::new(0)),
        }))
    }

    fn file_size(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    /// Linux: `statfs(2)`'s `f_type`. ext2/3/4, XFS and tmpfs reserve the blocks
    /// `fallocate` allocates; anything else (btrfs, ZFS, bcachefs, NFS, SMB, FUSE,
    /// overlay whatever lies below it, file systems not known here) is taken as not
    /// reserving, the safe answer: writes then go through the file.
    #[cfg(target_os = "linux")]
    fn reserves_allocation(&self, dir: &Path) -> io::Result<bool> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))?;
        // SAFETY: a zeroed statfs is a valid out-parameter; the path is NUL-terminated.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
        Ok(reserving_file_system(st.f_type as i64))
    }

    /// Only Linux is supported (see the README): elsewhere the log refuses to open
    /// with this error rather than fail at its first write.
    #[cfg(not(target_os = "linux"))]
    fn reserves_allocation(&self, _dir: &Path) -> io::Result<bool> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "logqueue's OsFs supports Linux only (fallocate, MAP_SHARED coherence, statfs)",
        ))
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl FileHandle for OsFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        FileExt::read_at(&*self.file, buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        FileExt::write_all_at(&*self.file, buf, pos)?;
        self.size
            .fetch_max(pos.saturating_add(buf.len() as u64), Ordering::AcqRel);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.size.store(len, Ordering::Release);
        Ok(())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let current = self.size()?;
        if len <= current {
            return Ok(());
        }
        let offset = libc::off_t::try_from(current)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
        let grow = libc::off_t::try_from(len - current)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
        // SAFETY: plain syscall on an fd we own; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(self.file.as_raw_fd(), offset, grow) };
        match rc {
            0 => {}
            // File systems without fallocate (some tmpfs/overlay setups): write zeros,
            // which allocates just the same, only slower.
            libc::EOPNOTSUPP | libc::EINVAL => write_zeros(&self.file, current, len)?,
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
        self.size.fetch_max(len, Ordering::AcqRel);
        Ok(())
    }

    fn map(&self, len: usize) -> io::Result<Arc<dyn Mapping>> {
        self.map_with(len, false)
    }

    fn map_writing_through_file(&self, len: usize) -> io::Result<Arc<dyn Mapping>> {
        self.map_with(len, self.writable)
    }
}

impl OsFile {
    fn map_with(&self, len: usize, through_file: bool) -> io::Result<Arc<dyn Mapping>> {
        if len == 0 {
            return Ok(Arc::new(EmptyMapping));
        }
        Ok(Arc::new(self.os_mapping(len, through_file)?))
    }

    /// A mapping of `len` (> 0) bytes: writable when the handle is.
    fn os_mapping(&self, len: usize, through_file: bool) -> io::Result<OsMapping> {
        let (map, bound) = if self.writable {
            self.size
                .store(self.file.metadata()?.len(), Ordering::Release);
            let map = MmapOptions::new().len(len).map_raw(&*self.file)?;
            (map, Some((Arc::clone(&self.file), Arc::clone(&self.size))))
        } else {
            let map = MmapOptions::new().len(len).map_raw_read_only(&*self.file)?;
            (map, None)
        };
        Ok(OsMapping {
            map,
            bound,
            through_file,
            writing_large: AtomicBool::new(false),
        })
    }
}

/// `statfs` magic numbers of the file systems whose `fallocate` reserves blocks.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn reserving_file_system(f_type: i64) -> bool {
    const EXT2_3_4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const TMPFS: i64 = 0x0102_1994;
    matches!(f_type, EXT2_3_4 | XFS | TMPFS)
}

fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut pos = from;
    while pos < to {
        let n = usize::try_from(to - pos).map_or(CHUNK, |left| left.min(CHUNK));
        FileExt::write_all_at(file, &zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// `madvise(MADV_POPULATE_WRITE)` (Linux 5.14): maps a range writable in one call.
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Set once `MADV_POPULATE_WRITE` answered `EINVAL` (kernels before 5.14): from
/// then on pages are faulted in by the writes themselves.
static POPULATE_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

impl Mapping for OsMapping {
    fn prefault(&self, pos: usize, len: usize) {
        let _ = self.try_prefault(pos, len);
    }

    /// `madvise(MADV_POPULATE_WRITE)`, checked. Nothing to do for a mapping written
    /// through the file (no stores into it). `EINVAL` (an older kernel) is reported
    /// once and the hint is not tried again; any other failure is reported each
    /// time. Either way the writes fault the pages in themselves: slower, and safe
    /// (the blocks were allocated before).
    fn try_prefault(&self, pos: usize, len: usize) -> io::Result<()> {
        let page = 4096;
        let start = pos / page * page;
        let end = pos.saturating_add(len).min(self.map.len());
        if self.bound.is_none()
            || self.through_file
            || self.writing_large.load(Ordering::Relaxed)
            || start >= end
            || POPULATE_UNSUPPORTED.load(Ordering::Relaxed)
        {
            return Ok(());
        }
        // SAFETY: the range lies inside our mapping; MADV_POPULATE_WRITE only faults
        // pages in (no data change).
        let rc = unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(start).cast(),
                end - start,
                MADV_POPULATE_WRITE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) {
            POPULATE_UNSUPPORTED.store(true, Ordering::Relaxed);
        }
        Err(err)
    }

    fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn write(&self, pos: usize, data: &[u8]) -> io::Result<()> {
        if let Some(file) = self.through_file() {
            return write_through(file, self.map.len(), pos, data);
        }
        self.check_writable(pos, data.len())?;
        // SAFETY: [pos, pos + len) is inside the mapping and below the file's size
        // (checked above; the engine never shrinks a mapped file through another
        // handle); the caller guarantees no reader looks at these bytes meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(pos),
                data.len(),
            );
        }
        Ok(())
    }

    /// Large writes (and all writes where stores into the map are not safe) go
    /// through the file: as parts, with one `pwritev`.
    fn wants_parts(&self, len: usize) -> bool {
        self.bound.is_some() && (self.through_file || len >= LARGE_WRITE_BYTES)
    }

    fn write_parts(&self, pos: usize, parts: &[&[u8]]) -> io::Result<()> {
        let len = parts.iter().map(|p| p.len()).sum();
        if let Some(file) = self.through_file() {
            return write_through_parts(file, self.map.len(), pos, len, parts);
        }
        self.check_writable(pos, len)?;
        self.note_write_size(len);
        match &self.bound {
            Some((file, _)) if len >= LARGE_WRITE_BYTES => {
                write_through_parts(file, self.map.len(), pos, len, parts)
            }
            // Small: stores into the map, as `write` does.
            _ => super::write_each(self, pos, parts),
        }
    }

    fn write_with(
        &self,
        pos: usize,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> io::Result<()> {
        if let Some(file) = self.through_file() {
            return write_through_buffered(file, self.map.len(), pos, len, fill);
        }
        self.check_writable(pos, len)?;
        self.note_write_size(len);
        let large = len >= LARGE_WRITE_BYTES;
        if let (true, Some((file, _))) = (large, &self.bound) {
            return write_through_buffered(file, self.map.len(), pos, len, fill);
        }
        // SAFETY: as in `write`: inside the mapping, below the file's size, and no
        // reader looks at these bytes while the slice lives (the caller's promise);
        // the slice does not outlive this call.
        let slice = unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(pos), len) };
        fill(slice);
        Ok(())
    }
}

impl OsMapping {
    /// Tells the preparer whether appends are large now (it then stops prefaulting:
    /// `pwrite` fills the pages itself).
    fn note_write_size(&self, len: usize) {
        let large = len >= LARGE_WRITE_BYTES;
        if self.writing_large.load(Ordering::Relaxed) != large {
            self.writing_large.store(large, Ordering::Relaxed);
        }
    }

    /// The file to `pwrite` to, for a mapping written through the file.
    fn through_file(&self) -> Option<&File> {
        match &self.bound {
            Some((file, _)) if self.through_file => Some(file),
            _ => None,
        }
    }
    /// Refuses a write of `len` bytes at `pos` that a store could not do safely:
    /// read-only, past the mapping, or past the file's size (SIGBUS).
    fn check_writable(&self, pos: usize, len: usize) -> io::Result<()> {
        let Some((file, size)) = &self.bound else {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "read-only mapping",
            ));
        };
        let end = pos
            .checked_add(len)
            .filter(|&end| end <= self.map.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past mapping"))?;
        if end as u64 > size.load(Ordering::Acquire) {
            // Past the size known to the handle: a store there would be SIGBUS unless
            // the file grew another way, so ask the OS before refusing.
            let actual = file.metadata()?.len();
            size.store(actual, Ordering::Release);
            if end as u64 > actual {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("mapped write past the end of the file ({end} > {actual} bytes)"),
                ));
            }
        }
        Ok(())
    }
}

/// `pwrite`s `data` at `pos` of a mapping of `map_len` bytes: bounded by the
/// mapping like a store (a write may extend the file: no `SIGBUS` either way).
fn write_through(file: &File, map_len: usize, pos: usize, data: &[u8]) -> io::Result<()> {
    pos.checked_add(data.len())
        .filter(|&end| end <= map_len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past mapping"))?;
    FileExt::write_all_at(file, data, pos as u64)
}

/// [`write_through`] of `parts` (`len` bytes in all) with `pwritev`: each byte is
/// copied once, by the kernel. Retried from where it stopped after a short write or
/// an interruption; at most `IOV_MAX` parts per call.
fn write_through_parts(
    file: &File,
    map_len: usize,
    pos: usize,
    len: usize,
    parts: &[&[u8]],
) -> io::Result<()> {
    pos.checked_add(len)
        .filter(|&end| end <= map_len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past mapping"))?;
    const IOV_MAX: usize = 1024;
    let (mut part, mut skip, mut at) = (0, 0, pos);
    // Bounded: every pass writes at least one byte or returns.
    while part < parts.len() {
        let iov: Vec<libc::iovec> = parts[part..]
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(i, p)| {
                let p = if i == 0 { &p[skip..] } else { p };
                libc::iovec {
                    iov_base: p.as_ptr() as *mut libc::c_void,
                    iov_len: p.len(),
                }
            })
            .collect();
        let offset = libc::off_t::try_from(at)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past off_t"))?;
        // SAFETY: every iovec points into a slice of `parts`, alive across the call;
        // pwritev only reads them.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                offset,
            )
        };
        if written < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if written == 0 && iov.iter().any(|v| v.iov_len > 0) {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        let mut left = written as usize;
        at += left;
        // Past the parts fully written, into the one cut short.
        while part < parts.len() && left >= parts[part].len() - skip {
            left -= parts[part].len() - skip;
            part += 1;
            skip = 0;
        }
        skip += left;
    }
    Ok(())
}

/// Encodes `len` bytes with `fill` into a buffer and `pwrite`s them at `pos` (see
/// [`write_through`]).
fn write_through_buffered(
    file: &File,
    map_len: usize,
    pos: usize,
    len: usize,
    fill: &mut dyn FnMut(&mut [u8]),
) -> io::Result<()> {
    if len > REUSED_BUFFER_MAX_BYTES {
        let mut buf = vec![0u8; len];
        fill(&mut buf);
        return write_through(file, map_len, pos, &buf);
    }
    LARGE_WRITE_BUFFER.with(|cell| {
        // A `fill` that appended again on this thread would find the buffer taken:
        // it then gets a buffer of its own rather than a panic.
        let Ok(mut buf) = cell.try_borrow_mut() else {
            let mut buf = vec![0u8; len];
            fill(&mut buf);
            return write_through(file, map_len, pos, &buf);
        };
        if buf.len() < len {
            buf.resize(len, 0);
        }
        // `fill` sets every byte of the slice it gets (the `write_with` contract).
        let slice = &mut buf[..len];
        fill(slice);
        write_through(file, map_len, pos, slice)
    })
}

/// Mapping of zero bytes (mmap refuses a zero length); it refuses every non-empty
/// write (also the parked writer's mapping of a read-only view).
#[derive(Debug)]
pub(crate) struct EmptyMapping;

impl Mapping for EmptyMapping {
    fn as_ptr(&self) -> *const u8 {
        std::ptr::NonNull::<u8>::dangling().as_ptr()
    }

    fn len(&self) -> usize {
        0
    }

    fn write(&self, _pos: usize, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past mapping",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserving_file_systems_are_known_by_their_magic() {
        assert!(reserving_file_system(0xEF53)); // ext4
        assert!(reserving_file_system(0x5846_5342)); // XFS
        assert!(reserving_file_system(0x0102_1994)); // tmpfs
        for not in [
            0x9123_683E_i64,
            0x2FC1_2FC1,
            0xCA45_1A4E,
            0x6969,
            0x794C_7630,
            0,
        ] {
            assert!(!reserving_file_system(not), "{not:#x}");
        }
    }

    /// A mapping may be longer than its file; a write past the file's end (SIGBUS on
    /// a real map) is refused with an error, also after the file was cut through the
    /// same handle, and allowed again once the file grows (even through another one).
    #[test]
    fn mapped_writes_past_the_end_of_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = OsFs.open(&path, OpenMode::Create).unwrap();
        f.allocate(8192).unwrap();
        let m = f.map(1 << 20).unwrap();
        m.write(0, b"inside").unwrap();
        let past = m.write(8190, b"past").unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::InvalidInput, "{past}");
        f.set_len(6).unwrap();
        assert!(m.write(6, b"x").is_err(), "cut through the handle");
        let other = OsFs.open(&path, OpenMode::Write).unwrap();
        other.allocate(4096).unwrap();
        m.write(6, b"grown elsewhere").unwrap();
        f.allocate(1 << 20).unwrap();
        m.write((1 << 20) - 4, b"last").unwrap();
        assert!(m.write(1 << 20, b"x").is_err(), "past the mapping");
        let mut buf = [0u8; 21];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"insidegrown elsewhere");
    }

    /// Large writes go through the file (`pwrite`), small ones are stores; both are
    /// seen through the map and the file, in any order; a large write past the file's
    /// end is refused like a store (never extends the file); the prefault is skipped
    /// while writes are large and resumes with the first small one.
    #[test]
    fn large_and_small_writes_interleave_through_one_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let f = OsFile {
            file: Arc::new(file),
            writable: true,
            size: Arc::new(AtomicU64::new(0)),
        };
        let total = 4 * LARGE_WRITE_BYTES + 3 * 100 + 2 * (REUSED_BUFFER_MAX_BYTES + 1);
        f.allocate(total as u64).unwrap();
        let m = f.os_mapping(total + 4096, false).unwrap();
        let mut expected = Vec::new();
        let sizes = [
            100,
            LARGE_WRITE_BYTES,
            100,
            2 * LARGE_WRITE_BYTES,
            REUSED_BUFFER_MAX_BYTES + 1,
            100,
            LARGE_WRITE_BYTES,
            REUSED_BUFFER_MAX_BYTES + 1,
        ];
        for (i, len) in sizes.into_iter().enumerate() {
            let byte = i as u8 + 1;
            let pos = expected.len();
            m.write_with(pos, len, &mut |buf| buf.fill(byte)).unwrap();
            expected.extend(std::iter::repeat_n(byte, len));
            // SAFETY: the mapping is `total + 4096` bytes long, `pos + len` within.
            let seen = unsafe { std::slice::from_raw_parts(m.as_ptr().add(pos), len) };
            assert!(
                seen.iter().all(|&b| b == byte),
                "write {i} seen through the map"
            );
            let large = len >= LARGE_WRITE_BYTES;
            assert_eq!(m.writing_large.load(Ordering::Relaxed), large, "write {i}");
        }
        assert_eq!(expected.len(), total);
        let mut file_bytes = vec![0u8; total];
        f.read_exact_at(&mut file_bytes, 0).unwrap();
        assert!(file_bytes == expected, "the file holds every write");
        let past = m
            .write_with(total, LARGE_WRITE_BYTES, &mut |buf| buf.fill(9))
            .unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::InvalidInput, "{past}");
        assert_eq!(
            f.size().unwrap(),
            total as u64,
            "a refused write does not extend"
        );
    }

    /// Parts go through the file in one `pwritev` per `IOV_MAX` of them, in order,
    /// empty ones included, and are seen through the map; small writes of parts are
    /// stores; parts past the file's end are refused (never extend it).
    #[test]
    fn parts_are_written_in_order_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = OsFs.open(&path, OpenMode::Create).unwrap();
        // 2,500 parts of 0 to 40 bytes (three `pwritev`s), then one of 20 KiB.
        let owned: Vec<Vec<u8>> = (0..2_500u32)
            .map(|i| vec![(i % 251) as u8; (i % 41) as usize])
            .chain(std::iter::once(vec![7u8; 20 << 10]))
            .collect();
        let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let expected: Vec<u8> = parts.concat();
        let total = expected.len();
        f.allocate(total as u64 + 100).unwrap();
        let m = f.map(total + 4096).unwrap();
        assert!(m.wants_parts(LARGE_WRITE_BYTES) && !m.wants_parts(100));
        m.write_parts(100, &[b"small", b" parts"]).unwrap();
        m.write_parts(0, &parts).unwrap();
        let mut file_bytes = vec![0u8; total];
        f.read_exact_at(&mut file_bytes, 0).unwrap();
        assert!(file_bytes == expected, "the file holds the parts in order");
        // SAFETY: the mapping is `total + 4096` bytes long.
        let seen = unsafe { std::slice::from_raw_parts(m.as_ptr(), total) };
        assert!(seen == expected.as_slice(), "seen through the map");
        let past = m
            .write_parts(total, &[&[1u8; LARGE_WRITE_BYTES][..]])
            .unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::InvalidInput, "{past}");
        assert_eq!(f.size().unwrap(), total as u64 + 100, "not extended");
    }
}
