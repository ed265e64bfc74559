//! [`OsFs`]: the real file system.

use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use super::{FileHandle, FileSystem, Mapping, OpenMode};

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
        if len == 0 {
            return Ok(Arc::new(EmptyMapping));
        }
        let (map, bound) = if self.writable {
            self.size
                .store(self.file.metadata()?.len(), Ordering::Release);
            let map = MmapOptions::new().len(len).map_raw(&*self.file)?;
            (map, Some((Arc::clone(&self.file), Arc::clone(&self.size))))
        } else {
            let map = MmapOptions::new().len(len).map_raw_read_only(&*self.file)?;
            (map, None)
        };
        Ok(Arc::new(OsMapping { map, bound }))
    }
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

impl Mapping for OsMapping {
    fn prefault(&self, pos: usize, len: usize) {
        let page = 4096;
        let start = pos / page * page;
        let end = pos.saturating_add(len).min(self.map.len());
        if self.bound.is_none() || start >= end {
            return;
        }
        // SAFETY: the range lies inside our mapping; MADV_POPULATE_WRITE only faults
        // pages in (no data change). Older kernels answer EINVAL, which is ignored.
        unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(start).cast(),
                end - start,
                MADV_POPULATE_WRITE,
            );
        }
    }

    fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn write(&self, pos: usize, data: &[u8]) -> io::Result<()> {
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

    fn write_with(
        &self,
        pos: usize,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> io::Result<()> {
        self.check_writable(pos, len)?;
        // SAFETY: as in `write`: inside the mapping, below the file's size, and no
        // reader looks at these bytes while the slice lives (the caller's promise);
        // the slice does not outlive this call.
        let slice = unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(pos), len) };
        fill(slice);
        Ok(())
    }
}

impl OsMapping {
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

/// Mapping of zero bytes (mmap refuses a zero length).
#[derive(Debug)]
struct EmptyMapping;

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
}
