//! Preparing the next segment's file ahead of the roll that needs it.

use super::ALLOC_CHUNK_BYTES;
use crate::log::LogInner;
use crate::segment::Spare;

impl LogInner {
    /// Prepares the next segment's file ahead of the roll that needs it, with no
    /// log lock held across the file operations (at most one at a time; nothing
    /// when a spare is ready). A failure is not fatal, the next roll creates the
    /// file itself; it is recorded as the last background error.
    pub(crate) fn prepare_spare(&self) {
        let n = {
            let mut w = self.lock_writer();
            if w.spare.is_some() || w.spare_busy || w.shut_down {
                return;
            }
            w.spare_busy = true;
            w.spares_made += 1;
            w.spares_made
        };
        let capacity = self.config.segment_capacity();
        let prepared = Spare::prepare(
            &*self.config.fs,
            &self.segment_cache,
            &self.dir,
            n,
            capacity,
            ALLOC_CHUNK_BYTES.min(capacity),
        );
        let (spare, hint) = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.lock_writer().spare_busy = false;
                self.record_background_error("prepare spare segment", &e);
                return;
            }
        };
        if let Some(e) = hint {
            self.record_background_error("prefault", &e);
        }
        let mut w = self.lock_writer();
        if w.shut_down {
            // `close` began meanwhile and waits for `spare_busy` to clear: the file
            // goes first, so nothing changes after `close` returns (a file left by a
            // failed removal is a `.tmp` removed at open).
            drop(w);
            let _ = self.config.fs.remove_file(&spare.path);
            self.lock_writer().spare_busy = false;
        } else {
            w.spare = Some(spare);
            w.spare_busy = false;
        }
    }
}
