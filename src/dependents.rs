//! Handles built on top of a log (a queue) that [`crate::Log::close`] must close
//! first. The log knows only this trait, never the layer above it: data flows
//! queue → log, and so do imports.

use std::sync::Weak;

use parking_lot::Mutex;

use crate::{Error, Result};

/// Something that lives on a log and closes before it.
pub(crate) trait Dependent: Send + Sync {
    /// Closes it (its state made durable, its lock released); `Error::Closed` when it
    /// was closed already.
    fn close_before_log(&self) -> Result<()>;
}

/// The dependents of one log, held weakly.
#[derive(Default)]
pub(crate) struct Dependents(Mutex<Vec<Weak<dyn Dependent>>>);

impl std::fmt::Debug for Dependents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dependents({})", self.0.lock().len())
    }
}

impl Dependents {
    pub fn add(&self, dependent: Weak<dyn Dependent>) {
        let mut all = self.0.lock();
        all.retain(|w| w.strong_count() > 0);
        all.push(dependent);
    }

    /// Closes every dependent still alive; the first failure is returned, every one
    /// is closed either way.
    pub fn close_all(&self) -> Result<()> {
        let all: Vec<_> = std::mem::take(&mut *self.0.lock());
        let mut first = Ok(());
        for d in all.iter().filter_map(Weak::upgrade) {
            match d.close_before_log() {
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => {
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
            }
        }
        first
    }
}
