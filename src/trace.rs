//! Events for operators through [`tracing`](https://docs.rs/tracing), when the
//! `tracing` feature is on; without it every macro and helper here compiles to
//! nothing (the arguments are not even evaluated), so the engine's modules call them
//! unconditionally, one line per event.
//!
//! Target `logqueue`. Levels: `error` for lost or damaged data and poisoning, `warn`
//! for recovery cutting an unsynced tail and slow fsyncs, `info` for rolls,
//! maintenance passes and leftovers completed or removed.

/// An `info` event (nothing without the `tracing` feature).
#[cfg(feature = "tracing")]
macro_rules! event_info {
    ($($arg:tt)*) => { ::tracing::info!(target: "logqueue", $($arg)*) };
}
/// A `warn` event (nothing without the `tracing` feature).
#[cfg(feature = "tracing")]
macro_rules! event_warn {
    ($($arg:tt)*) => { ::tracing::warn!(target: "logqueue", $($arg)*) };
}
/// An `error` event (nothing without the `tracing` feature).
#[cfg(feature = "tracing")]
macro_rules! event_error {
    ($($arg:tt)*) => { ::tracing::error!(target: "logqueue", $($arg)*) };
}
#[cfg(not(feature = "tracing"))]
macro_rules! event_info {
    ($($arg:tt)*) => {};
}
#[cfg(not(feature = "tracing"))]
macro_rules! event_warn {
    ($($arg:tt)*) => {};
}
#[cfg(not(feature = "tracing"))]
macro_rules! event_error {
    ($($arg:tt)*) => {};
}

pub(crate) use {event_error, event_info, event_warn};

use crate::Result;

/// An fsync taking longer than this is reported.
#[cfg(feature = "tracing")]
const SLOW_FSYNC: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs a maintenance pass (retention, cleaner) and reports its duration and report
/// (bytes included) or its failure.
pub(crate) fn pass<T: std::fmt::Debug>(
    what: &'static str,
    run: impl FnOnce() -> Result<T>,
) -> Result<T> {
    #[cfg(feature = "tracing")]
    {
        let began = std::time::Instant::now();
        let result = run();
        let elapsed_ms = began.elapsed().as_millis() as u64;
        match &result {
            Ok(report) => event_info!(pass = what, elapsed_ms, ?report, "maintenance pass"),
            Err(e) => event_warn!(pass = what, elapsed_ms, error = %e, "maintenance pass failed"),
        }
        result
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = what;
        run()
    }
}

/// Reports the fsync it is alive for when that takes longer than 100 ms.
pub(crate) struct SlowFsync {
    #[cfg(feature = "tracing")]
    began: std::time::Instant,
    #[cfg(feature = "tracing")]
    file: std::path::PathBuf,
}

impl SlowFsync {
    pub(crate) fn watch(_file: impl FnOnce() -> std::path::PathBuf) -> SlowFsync {
        SlowFsync {
            #[cfg(feature = "tracing")]
            began: std::time::Instant::now(),
            #[cfg(feature = "tracing")]
            file: _file(),
        }
    }
}

#[cfg(feature = "tracing")]
impl Drop for SlowFsync {
    fn drop(&mut self) {
        let elapsed = self.began.elapsed();
        if elapsed >= SLOW_FSYNC {
            event_warn!(
                file = %self.file.display(),
                elapsed_ms = elapsed.as_millis() as u64,
                "slow fsync"
            );
        }
    }
}
