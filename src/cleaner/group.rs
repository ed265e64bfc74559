//! Rewriting one group of segments into a cleaned file, and swapping it in.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::pass::{judge_batch, min_opt, CleanedOut};
use super::{Cleaned, GroupOutcome, Throttle, WRITE_CHUNK};
use crate::batch::{self, Batch, BatchMeta, RecordParts};
use crate::checkpoint;
use crate::fs::{FileHandle, FileSystem, OpenMode};
use crate::log::LogInner;
use crate::offset_map::OffsetMap;
use crate::recovery::{CLEANED_SUFFIX, DELETED_SUFFIX, SWAP_SUFFIX};
use crate::segment::{self, Segment, LOG_SUFFIX};
use crate::{Error, Offset, Result};

impl LogInner {
    /// Rewrites `group` into a `.cleaned` file; `None` when nothing would change (a
    /// single segment) or a segment does not decode (it is left as it is).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_group(
        &self,
        group: &[Arc<Segment>],
        map: &OffsetMap,
        map_end: Offset,
        now: i64,
        horizon: i64,
        outcome: &mut GroupOutcome,
        throttle: &mut Throttle<'_>,
    ) -> Result<Option<Cleaned>> {
        let fs = &*self.config.fs;
        let base = group[0].base_offset;
        let (path, file) = self.create_cleaned_file(base)?;
        let mut out = CleanedOut::new(base, u64::from(self.config.index_interval_bytes));
        let mut keep: Vec<bool> = Vec::new();
        let result = (|| -> Result<bool> {
            for seg in group {
                let m = seg.mapping()?;
                let len = usize::try_from(seg.published()).expect("mapped, so it fits usize");
                let bytes = m.bytes(0, len);
                outcome.bytes_before += len as u64;
                let mut pos = 0;
                while pos < len {
                    let Ok(b) = batch::decode(&bytes[pos..]) else {
                        return Ok(false);
                    };
                    pos += b.len();
                    throttle.add(b.len() as u64)?;
                    out.saw(&b);
                    if b.record_count == 0 {
                        // An end marker: written again at the end if still needed.
                        continue;
                    }
                    let Some(h) = judge_batch(&b, map, map_end, now, horizon, &mut keep, outcome)
                    else {
                        return Ok(false);
                    };
                    let kept = keep.iter().filter(|k| **k).count();
                    if kept == 0 {
                        outcome.changed = true;
                        continue;
                    }
                    let start = out.bytes.len();
                    write_kept(&mut out.bytes, &b, &keep, kept, h, &mut outcome.changed);
                    let horizon = out.wrote(start, &path)?;
                    outcome.tombstone_due = min_opt(outcome.tombstone_due, horizon);
                    if out.bytes.len() >= WRITE_CHUNK {
                        out.flush(&*file, &path)?;
                    }
                }
            }
            out.end_marker(&path)?;
            out.flush(&*file, &path)?;
            Ok(true)
        })();
        let readable = match result {
            Ok(r) => r,
            Err(e) => {
                remove_unfinished(fs, file, &path);
                return Err(e);
            }
        };
        if !readable || (!outcome.changed && group.len() == 1) {
            remove_unfinished(fs, file, &path);
            return Ok(None);
        }
        let written = out.written;
        if let Err(e) = throttle.add(written) {
            remove_unfinished(fs, file, &path);
            return Err(e);
        }
        file.sync_data()
            .map_err(|e| Error::io("sync cleaned segment", &path, e))?;
        Ok(Some(Cleaned {
            path,
            len: written,
            indexes: out.indexes,
            meta: out.meta,
        }))
    }

    /// Creates (or empties) the `.cleaned` file of the group starting at `base`.
    fn create_cleaned_file(&self, base: Offset) -> Result<(PathBuf, Arc<dyn FileHandle>)> {
        let fs = &*self.config.fs;
        let path = segment::file_path(&self.dir, base, &format!("{LOG_SUFFIX}{CLEANED_SUFFIX}"));
        let file = fs
            .open(&path, OpenMode::Create)
            .map_err(|e| Error::io("create cleaned segment", &path, e))?;
        file.set_len(0)
            .map_err(|e| Error::io("truncate cleaned segment", &path, e))?;
        Ok((path, file))
    }

    /// Replaces `group` by its cleaned file, on disk and in the segment list. False
    /// (and the cleaned file removed) when the group is no longer in the log.
    pub(super) fn swap_group(&self, group: &[Arc<Segment>], cleaned: Cleaned) -> Result<bool> {
        let fs = &*self.config.fs;
        let base = group[0].base_offset;
        let end = group[group.len() - 1].next_offset();
        // Not the append lock: the swap's renames and fsyncs run under this one.
        // Rolls go on meanwhile, but only append to the segment list.
        let _maintenance = self.maintenance.lock();
        let current = self.snapshot();
        let at = current.iter().position(|s| Arc::ptr_eq(s, &group[0]));
        let still_there = at.is_some_and(|i| {
            current.len() > i + group.len()
                && group
                    .iter()
                    .zip(&current[i..])
                    .all(|(g, c)| Arc::ptr_eq(g, c))
        });
        // The recovery point must durably name a segment after the group.
        let rp_past = self
            .durability
            .lock()
            .recovery_point
            .last()
            .is_some_and(|rp| rp.segment >= end);
        // Closing (close takes the maintenance lock after marking the log closed, so
        // it waits for a swap under way) or poisoned: leave the disk alone.
        let writable = self.check_writable();
        if !still_there || !rp_past || writable.is_err() {
            let _ = fs.remove_file(&cleaned.path);
            writable?;
            return Ok(false);
        }
        let at = at.expect("checked above");
        let result = self.rename_cleaned_into_place(group, &cleaned.path, base, end);
        let retired = match result {
            Ok(r) => r,
            Err(e) => {
                // Disk and memory may disagree now: reopen to recover.
                self.poison(&e);
                return Err(e);
            }
        };
        let seg = self.cleaned_segment(base, end, cleaned);
        // The version swap, from the list as it is now: rolls may have appended to
        // it since `current`, nothing else changed it (the maintenance lock).
        let mut list = self.segments.write();
        debug_assert!(Arc::ptr_eq(&list[at], &group[0]));
        let mut next: Vec<Arc<Segment>> = Vec::with_capacity(list.len() - group.len() + 1);
        next.extend(list[..at].iter().cloned());
        next.push(Arc::new(seg));
        next.extend(list[at + group.len()..].iter().cloned());
        *list = Arc::new(next);
        drop(list);
        self.lock_writer()
            .unsynced
            .retain(|s| !group.iter().any(|g| Arc::ptr_eq(g, s)));
        self.schedule_unlink(retired);
        Ok(true)
    }

    /// Renames the cleaned file to a `.swap` name, the group's files `.deleted`, then
    /// the `.swap` file to the group's first segment's name; returns the retired paths.
    fn rename_cleaned_into_place(
        &self,
        group: &[Arc<Segment>],
        cleaned_path: &Path,
        base: Offset,
        end: Offset,
    ) -> Result<Vec<PathBuf>> {
        let fs = &*self.config.fs;
        self.durability.lock().recovery_point.sync()?;
        // Readers holding the old segments keep reading them: map and index them
        // now, before their files are renamed away.
        for s in group {
            s.keep_open()?;
            s.meta()?;
        }
        let swap = self
            .dir
            .join(format!("{base:020}-{end:020}{LOG_SUFFIX}{SWAP_SUFFIX}"));
        checkpoint::rename_durably(fs, &self.dir, cleaned_path, &swap)?;
        let mut old = Vec::new();
        for s in group {
            for suffix in [LOG_SUFFIX, segment::INDEX_SUFFIX, segment::TIMEINDEX_SUFFIX] {
                let p = segment::file_path(&self.dir, s.base_offset, suffix);
                if fs.exists(&p) {
                    old.push(p);
                }
            }
        }
        let retired = checkpoint::retire_files(fs, &self.dir, &old, DELETED_SUFFIX)?;
        for s in group {
            s.retired.store(true, Ordering::Release);
        }
        checkpoint::rename_durably(
            fs,
            &self.dir,
            &swap,
            &segment::file_path(&self.dir, base, LOG_SUFFIX),
        )?;
        Ok(retired)
    }

    /// The segment that replaces the group, over the cleaned file now at its name.
    fn cleaned_segment(&self, base: Offset, end: Offset, cleaned: Cleaned) -> Segment {
        let seg = Segment::new(
            &self.config.fs,
            &self.segment_cache,
            &self.dir,
            base,
            None,
            cleaned.len,
            end,
        );
        seg.set_index_interval(self.config.index_interval_bytes);
        // A cache: validated on load, rebuilt if torn.
        let _ = seg.write_index_files(&cleaned.indexes, cleaned.meta.max_append_time);
        seg.set_loaded(cleaned.indexes, cleaned.meta);
        seg
    }
}

/// Appends to `out` the records of `b` that `keep` marks (`kept` of them), with delete
/// horizon `horizon`: the batch's bytes as they are when it keeps them all under its
/// own horizon, else a new batch of the kept records (and `changed` is set).
fn write_kept(
    out: &mut Vec<u8>,
    b: &Batch<'_>,
    keep: &[bool],
    kept: usize,
    horizon: Option<i64>,
    changed: &mut bool,
) {
    if kept == keep.len() && horizon == b.delete_horizon {
        out.extend_from_slice(b.bytes);
    } else {
        *changed = true;
        let parts = b
            .records()
            .zip(keep.iter())
            .filter(|(_, k)| **k)
            .filter_map(|(r, _)| r.ok())
            .map(|v| RecordParts::from_view(&v, b.base_offset))
            .collect::<Vec<_>>();
        batch::encode(
            out,
            BatchMeta {
                base_offset: b.base_offset,
                last_offset_delta: b.last_offset_delta,
                append_time: b.append_time,
                delete_horizon: horizon,
            },
            parts,
        );
    }
}

/// Closes and removes a cleaned file that will not be swapped in.
fn remove_unfinished(fs: &dyn FileSystem, file: Arc<dyn FileHandle>, path: &Path) {
    drop(file);
    let _ = fs.remove_file(path);
}
