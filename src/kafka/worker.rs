//! The background thread a [`super::Mirror`] or [`super::Import`] runs: waiting for it
//! to reach a point, and stopping it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Polls `done` every `poll` until it holds (`Ok(true)`), `timeout` passes
/// (`Ok(false)`), or the `what` thread is no longer `running` (an error).
pub(super) fn wait_until(
    what: &str,
    running: &AtomicBool,
    timeout: Duration,
    poll: Duration,
    done: impl Fn() -> bool,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Ok(true);
        }
        if !running.load(Ordering::Acquire) {
            return Err(Error::Broker(format!("the {what} thread has ended")));
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(poll);
    }
}

/// Asks the `what` thread to stop and waits for it; its result (once: later calls
/// find no thread and return `Ok`).
pub(super) fn stop_and_join(
    what: &str,
    stop: &AtomicBool,
    thread: &mut Option<JoinHandle<Result<()>>>,
) -> Result<()> {
    stop.store(true, Ordering::Release);
    match thread.take() {
        Some(thread) => thread
            .join()
            .map_err(|_| Error::Broker(format!("the {what} thread panicked")))?,
        None => Ok(()),
    }
}
