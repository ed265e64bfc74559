//! What maintenance leaves behind when a crash interrupts it: `.deleted`, `.cleaned`,
//! `.tmp` and orphan index files are removed, and `.swap` files of the cleaner are
//! completed (or removed, when damaged while the originals are whole).

use std::path::Path;

use super::{list, CLEANED_SUFFIX, DELETED_SUFFIX, SWAP_SUFFIX};
use crate::batch;
use crate::checkpoint;
use crate::fs::FileSystem;
use crate::segment::{self, LOG_SUFFIX};
use crate::{Error, Offset, Result};

/// Deletes `.deleted`, `.cleaned`, `.tmp` and orphan index files; completes `.swap`.
/// Returns the names in the directory afterwards. The directory is listed once more
/// only when something changed: at open a log of 10,000 segments holds 30,000
/// names, and each listing (or a `stat` per name) is a measurable part of the open.
pub(super) fn clean_leftovers(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<String>> {
    let names = list(fs, dir)?;
    let mut changed = false;
    let remove = |name: &str| -> Result<()> {
        let p = dir.join(name);
        crate::trace::event_info!(file = %p.display(), "recovery removed a leftover file");
        fs.remove_file(&p)
            .map_err(|e| Error::io("remove leftover", &p, e))
    };
    // A `.swap` was fsynced before it was renamed to `.swap`: it is complete, and
    // replaces the segments whose offsets it covers. The cleaner names it
    // `<base>-<end>.log.swap` (it replaces every segment based in `base..end`, even
    // ones whose records were all removed); a plain `<base>.log.swap` covers what its
    // batches cover.
    for name in &names {
        let Some(stem) = name.strip_suffix(SWAP_SUFFIX) else {
            continue;
        };
        let range = segment::parse_file_name(stem, LOG_SUFFIX)
            .map(|base| (base, None))
            .or_else(|| parse_ranged_swap(stem).map(|(b, e)| (b, Some(e))));
        let Some((base, end)) = range else {
            remove(name)?;
            changed = true;
            continue;
        };
        complete_swap(fs, dir, name, base, end)?;
        changed = true;
    }
    // After the swaps: a retired original (`.deleted`) tells a swap whether the
    // originals it replaces are still whole.
    for name in &names {
        if name.ends_with(DELETED_SUFFIX)
            || name.ends_with(CLEANED_SUFFIX)
            || name.ends_with(checkpoint::TMP_SUFFIX)
        {
            remove(name)?;
            changed = true;
        }
    }
    let names = if changed { list(fs, dir)? } else { names };
    let logs: std::collections::HashSet<Offset> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n, LOG_SUFFIX))
        .collect();
    let mut orphans = false;
    for name in &names {
        let base = segment::parse_file_name(name, segment::INDEX_SUFFIX)
            .or_else(|| segment::parse_file_name(name, segment::TIMEINDEX_SUFFIX));
        if base.is_some_and(|base| !logs.contains(&base)) {
            remove(name)?;
            orphans = true;
        }
    }
    if changed || orphans {
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
    }
    if orphans {
        return list(fs, dir);
    }
    Ok(names)
}

/// `<20-digit base>-<20-digit end>.log`: the range a cleaner swap file replaces.
fn parse_ranged_swap(stem: &str) -> Option<(Offset, Offset)> {
    let (base, rest) = stem.split_once('-')?;
    let base = segment::parse_file_name(&format!("{base}{LOG_SUFFIX}"), LOG_SUFFIX)?;
    let end = segment::parse_file_name(rest, LOG_SUFFIX)?;
    (end > base).then_some((base, end))
}

fn complete_swap(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    base: Offset,
    end: Option<Offset>,
) -> Result<()> {
    let swap_path = dir.join(name);
    let bytes = checkpoint::read_small_unbounded(fs, &swap_path)
        .ok_or_else(|| Error::corrupt(&swap_path, 0, None, "unreadable swap file"))?;
    // The last offset the swap file replaces, and whether every byte of it decodes.
    let mut last = base;
    let mut pos = 0;
    while let Ok(b) = batch::decode(&bytes[pos..]) {
        if b.validate_records().is_err() {
            break;
        }
        last = b.last_offset();
        pos += b.len();
    }
    let whole = pos == bytes.len();
    if let Some(end) = end {
        last = end - 1;
    }
    if !whole && originals_untouched(fs, dir, base, last)? {
        // Damaged since it was fsynced, while the originals are all still in place:
        // keep them (the next cleaning pass does the work again).
        crate::trace::event_warn!(file = %swap_path.display(), "recovery removed a damaged swap file; the originals are whole");
        return fs
            .remove_file(&swap_path)
            .map_err(|e| Error::io("remove damaged swap file", &swap_path, e));
    }
    for other in list(fs, dir)? {
        if let Some(o) = segment::parse_file_name(&other, LOG_SUFFIX) {
            if o > base && o <= last {
                remove_segment_files(fs, dir, o)?;
            }
        }
    }
    for suffix in [segment::INDEX_SUFFIX, segment::TIMEINDEX_SUFFIX] {
        let p = segment::file_path(dir, base, suffix);
        if fs.exists(&p) {
            fs.remove_file(&p)
                .map_err(|e| Error::io("remove index", &p, e))?;
        }
    }
    crate::trace::event_info!(file = %swap_path.display(), "recovery completed a cleaner swap");
    checkpoint::rename_durably(
        fs,
        dir,
        &swap_path,
        &segment::file_path(dir, base, LOG_SUFFIX),
    )
}

/// True when `<base>.log` exists and no segment in `base..=last` has been retired
/// (renamed `.deleted`): a swap of that range has not started replacing them.
fn originals_untouched(
    fs: &dyn FileSystem,
    dir: &Path,
    base: Offset,
    last: Offset,
) -> Result<bool> {
    if !fs.exists(&segment::file_path(dir, base, LOG_SUFFIX)) {
        return Ok(false);
    }
    let retired = format!("{LOG_SUFFIX}{DELETED_SUFFIX}");
    Ok(!list(fs, dir)?
        .iter()
        .any(|n| segment::parse_file_name(n, &retired).is_some_and(|o| (base..=last).contains(&o))))
}

pub(crate) fn remove_segment_files(fs: &dyn FileSystem, dir: &Path, base: Offset) -> Result<()> {
    for suffix in [LOG_SUFFIX, segment::INDEX_SUFFIX, segment::TIMEINDEX_SUFFIX] {
        let p = segment::file_path(dir, base, suffix);
        if fs.exists(&p) {
            fs.remove_file(&p)
                .map_err(|e| Error::io("remove segment", &p, e))?;
        }
    }
    Ok(())
}
