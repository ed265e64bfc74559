//! Faulting in the pages of a segment's writable mapping ahead of the writes, on the
//! preparer thread when one runs.

use std::sync::Arc;

use crate::background::Prepare;
use crate::log::LogInner;
use crate::segment::Segment;
use crate::{Error, Result};

impl LogInner {
    /// Maps `[from, to)` of `segment` (allocated) for writing, in the background
    /// when the preparer runs.
    pub(crate) fn prefault(&self, segment: &Arc<Segment>, from: u64, to: u64) {
        let request = Prepare {
            segment: Arc::clone(segment),
            from,
            to,
            allocate: false,
        };
        if !self.shutdown.request_prepare(request) {
            if let Err(e) = prefault_now(segment, from, to) {
                self.record_background_error("prefault", &e);
            }
        }
    }
}

/// Maps `[from, to)` of a segment's writable mapping in one call. A failure is
/// returned for the log to report (see [`crate::fs::Mapping::try_prefault`]); the
/// writes then fault the pages in themselves. A segment sealed (cut short) since is
/// not a failure: nothing will be written there.
pub(crate) fn prefault_now(segment: &Segment, from: u64, to: u64) -> Result<()> {
    let Some(map) = segment.writable_mapping() else {
        return Ok(());
    };
    let start = usize::try_from(from).unwrap_or(usize::MAX);
    let len = usize::try_from(to.saturating_sub(from)).unwrap_or(0);
    match map.try_prefault(start, len) {
        Err(_) if segment.writable_mapping().is_none() || segment.published() >= to => Ok(()),
        Err(e) => Err(Error::io("prefault segment", segment.path(), e)),
        Ok(()) => Ok(()),
    }
}
