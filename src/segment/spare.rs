//! The spare: the next segment's file, created, allocated and mapped ahead of the
//! roll that needs it, under a temporary name, so that the roll itself only renames
//! it (RocketMQ's allocate service is the model). A spare is never written before
//! its rename: a crash leaves at most an empty, allocated `spare-<n>.log.tmp`,
//! removed at the next open like every `.tmp` file.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{file_path, Indexes, Loaded, Segment, SegmentCache, SegmentMeta};
use super::{INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX};
use crate::checkpoint::TMP_SUFFIX;
use crate::fs::{FileHandle, FileSystem, Mapping, OpenMode};
use crate::{Error, Offset, Result};

/// A file prepared for the next segment.
#[derive(Debug)]
pub(crate) struct Spare {
    pub path: PathBuf,
    file: Arc<dyn FileHandle>,
    map: Arc<dyn Mapping>,
    /// Bytes allocated (and prefaulted, where writes go through the map).
    pub allocated: u64,
}

impl Spare {
    /// Creates `spare-<n>.log.tmp` in `dir` with `initial_alloc` bytes allocated and
    /// `capacity` bytes mapped for writing (in the log's write mode), its pages
    /// prefaulted. A failed prefault is returned beside the spare (a hint only).
    pub fn prepare(
        fs: &dyn FileSystem,
        cache: &SegmentCache,
        dir: &Path,
        n: u64,
        capacity: u64,
        initial_alloc: u64,
    ) -> Result<(Spare, Option<Error>)> {
        let path = dir.join(format!("spare-{n}{LOG_SUFFIX}{TMP_SUFFIX}"));
        let file = fs
            .open(&path, OpenMode::Create)
            .map_err(|e| Error::io("create spare segment", &path, e))?;
        file.set_len(0)
            .and_then(|()| file.allocate(initial_alloc))
            .map_err(|e| Error::io("allocate spare segment", &path, e))?;
        let len = usize::try_from(capacity).map_err(|_| {
            Error::InvalidConfig("segment capacity exceeds the address space".into())
        })?;
        let map = if cache.writes_through_file() {
            file.map_writing_through_file(len)
        } else {
            file.map(len)
        }
        .map_err(|e| Error::io("map spare segment", &path, e))?;
        let allocated = file
            .size()
            .map_err(|e| Error::io("stat spare segment", &path, e))?;
        let prefault = usize::try_from(allocated).unwrap_or(usize::MAX);
        let hint = map
            .try_prefault(0, prefault)
            .err()
            .map(|e| Error::io("prefault spare segment", &path, e));
        let spare = Spare {
            path,
            file,
            map,
            allocated,
        };
        Ok((spare, hint))
    }
}

impl Segment {
    /// The active segment at `base` made from `spare`: renamed to its segment name
    /// (stale index files of an earlier segment with this base removed, as
    /// [`Segment::create`] does), its handles kept.
    pub fn from_spare(
        fs: &Arc<dyn FileSystem>,
        cache: &Arc<SegmentCache>,
        dir: &Path,
        base_offset: Offset,
        spare: Spare,
    ) -> Result<Segment> {
        let path = file_path(dir, base_offset, LOG_SUFFIX);
        fs.rename(&spare.path, &path)
            .map_err(|e| Error::io("rename spare segment", &path, e))?;
        for suffix in [INDEX_SUFFIX, TIMEINDEX_SUFFIX] {
            let p = file_path(dir, base_offset, suffix);
            if fs.exists(&p) {
                fs.remove_file(&p)
                    .map_err(|e| Error::io("remove stale index", &p, e))?;
            }
        }
        let seg = Segment::new(
            fs,
            cache,
            dir,
            base_offset,
            Some(spare.file),
            0,
            base_offset,
        );
        seg.handles.set_map(spare.map);
        seg.mapped_writable.store(true, Ordering::Release);
        *seg.loaded.write() = Some(Loaded {
            indexes: Indexes::default(),
            meta: SegmentMeta::EMPTY,
        });
        Ok(seg)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::fs::FileSystem;
    use crate::sim::SimFs;
    use crate::{FlushPolicy, Log, LogConfig, Record};

    fn config(fs: &SimFs) -> LogConfig {
        LogConfig {
            fs: Arc::new(fs.clone()),
            background: false,
            flush: FlushPolicy::Manual,
            segment_bytes: 4 << 10,
            ..LogConfig::default()
        }
    }

    fn spares(fs: &SimFs) -> Vec<String> {
        let mut names: Vec<String> = fs
            .list(Path::new("/log"))
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with("spare-"))
            .collect();
        names.sort();
        names
    }

    /// The roll after the first uses the spare the first one left: the spare is
    /// renamed, a new one prepared; close removes it; a crash leaves it for the
    /// next open to remove, with the records intact.
    #[test]
    fn rolls_rename_the_spare_prepared_ahead() {
        let fs = SimFs::new(3);
        let log = Log::open("/log", config(&fs)).unwrap();
        let mut rolls_seen = 0;
        let mut i = 0u32;
        while rolls_seen < 3 {
            log.append(Record::new(i.to_le_bytes().repeat(50))).unwrap();
            i += 1;
            rolls_seen = log.stats().rolls;
        }
        // Rolls 2 and 3 used spares 1 and 2; spare 3 waits for the next roll.
        assert_eq!(spares(&fs), vec!["spare-3.log.tmp".to_string()]);
        assert_eq!(log.inner.lock_writer().spares_made, 3);
        log.close().unwrap();
        assert!(spares(&fs).is_empty());

        let log = Log::open("/log", config(&fs)).unwrap();
        while log.stats().rolls < 2 {
            log.append(Record::new(i.to_le_bytes().repeat(50))).unwrap();
            i += 1;
        }
        log.flush().unwrap();
        assert_eq!(spares(&fs).len(), 1);
        fs.crash();
        drop(log);
        let log = Log::open("/log", config(&fs)).unwrap();
        assert!(spares(&fs).is_empty());
        assert_eq!(log.end_offset(), u64::from(i));
        for (o, r) in log.reader(0).unwrap().enumerate() {
            assert_eq!(
                r.unwrap().value.unwrap(),
                (o as u32).to_le_bytes().repeat(50)
            );
        }
        log.close().unwrap();
    }
}
