//! The write mode chosen from [`FileSystem::reserves_allocation`] (issue 10, item 7).

use std::any::Any;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::{FileHandle, FileSystem, OpenMode, OsFs};
use crate::sim::SimFs;
use crate::{Error, FlushPolicy, Log, LogConfig, Record};

fn sim_config(fs: Arc<dyn FileSystem>) -> LogConfig {
    LogConfig {
        fs,
        background: false,
        flush: FlushPolicy::Manual,
        segment_bytes: 4 << 10,
        ..LogConfig::default()
    }
}

/// On a file system that does not reserve allocated space the log writes through
/// the file: records round-trip across rolls, a crash and a reopen.
#[test]
fn a_file_system_without_reserved_allocation_is_written_through_the_file() {
    let fs = SimFs::new(7);
    fs.set_reserves_allocation(false);
    let log = Log::open("/log", sim_config(Arc::new(fs.clone()))).unwrap();
    assert!(log.inner.segment_cache.writes_through_file());
    for i in 0..200u32 {
        log.append(Record::new(i.to_le_bytes().repeat(30))).unwrap();
    }
    assert!(log.segments().len() > 5);
    for (i, r) in log.reader(0).unwrap().enumerate() {
        assert_eq!(
            r.unwrap().value.unwrap(),
            (i as u32).to_le_bytes().repeat(30)
        );
    }
    log.flush().unwrap();
    fs.crash();
    drop(log);
    let log = Log::open("/log", sim_config(Arc::new(fs.clone()))).unwrap();
    assert_eq!(log.end_offset(), 200);
    assert_eq!(
        log.read(199).unwrap().unwrap().value.unwrap(),
        199u32.to_le_bytes().repeat(30)
    );
    log.close().unwrap();
}

#[test]
fn a_reserving_file_system_is_written_through_the_mapping() {
    let fs = SimFs::new(7);
    let log = Log::open("/log", sim_config(Arc::new(fs))).unwrap();
    let forced =
        std::env::var_os(crate::recovery::FORCE_WRITE_THROUGH_FILE).is_some_and(|v| v != "0");
    assert_eq!(log.inner.segment_cache.writes_through_file(), forced);
}

/// A file system that cannot be identified (statfs fails) fails the open, naming
/// the directory, before anything is written.
#[test]
fn an_unidentified_file_system_fails_the_open() {
    #[derive(Debug)]
    struct Unidentified(SimFs);
    impl FileSystem for Unidentified {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.0.create_dir_all(path)
        }
        fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
            self.0.open(path, mode)
        }
        fn exists(&self, path: &Path) -> bool {
            self.0.exists(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.0.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.0.remove_file(path)
        }
        fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
            self.0.remove_dir_all(path)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            self.0.list(dir)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.0.sync_dir(dir)
        }
        fn reserves_allocation(&self, _dir: &Path) -> io::Result<bool> {
            Err(io::Error::new(io::ErrorKind::Unsupported, "no statfs"))
        }
        fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn Any + Send + Sync>>> {
            self.0.try_lock(path)
        }
    }
    let fs = SimFs::new(1);
    let err = Log::open("/log", sim_config(Arc::new(Unidentified(fs.clone())))).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("statfs"), "{err}");
    assert!(!fs.exists(Path::new("/log/00000000000000000000.log")));
}

/// The real file system: ext4/XFS/tmpfs reserve, btrfs/ZFS/NFS/overlay and
/// anything unknown do not.
#[test]
fn os_fs_identifies_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    // Whatever the test machine's file system, the question has an answer here.
    OsFs.reserves_allocation(dir.path()).unwrap();
    assert!(OsFs.reserves_allocation(Path::new("/no/such/dir")).is_err());
}

/// A mapping written through the file: writes land in the file and are seen
/// through the mapping; a write past the mapping is refused; the prefault hint is a
/// no-op (no stores into the map).
#[test]
fn os_mapping_written_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = OsFs
        .open(&dir.path().join("seg"), OpenMode::Create)
        .unwrap();
    f.allocate(4096).unwrap();
    let map = f.map_writing_through_file(1 << 20).unwrap();
    map.write(10, b"hello").unwrap();
    map.write_with(100, 3, &mut |b| b.copy_from_slice(b"abc"))
        .unwrap();
    // Past the allocated size (a store there would be SIGBUS): the file grows.
    map.write(8192, b"far").unwrap();
    assert_eq!(f.size().unwrap(), 8195);
    let mut buf = [0u8; 5];
    f.read_exact_at(&mut buf, 10).unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(map.bytes(100, 103), b"abc");
    assert_eq!(map.bytes(8192, 8195), b"far");
    assert!(map.write((1 << 20) - 1, b"xx").is_err());
    map.try_prefault(0, 4096).unwrap();
}

/// `madvise`'s result is checked: populating pages past the end of the file fails
/// (`EFAULT`; `EINVAL` on kernels before 5.14) and says so, instead of being
/// ignored; inside the file it succeeds.
#[test]
fn a_failed_prefault_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let f = OsFs
        .open(&dir.path().join("seg"), OpenMode::Create)
        .unwrap();
    f.allocate(8192).unwrap();
    let map = f.map(1 << 20).unwrap();
    assert!(map.try_prefault(0, 1 << 20).is_err());
    // Once EINVAL was seen the hint is off for good (Ok from then on); otherwise
    // the valid range populates.
    map.try_prefault(0, 8192).unwrap();
}
