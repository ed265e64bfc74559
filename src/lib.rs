//! logqueue: an embeddable, persistent queue storage engine.
#![warn(missing_docs)]

mod clock;
mod error;
pub mod fs;
mod record;
pub mod sim;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use record::{Header, Record, StoredRecord};

/// Position of a record in a log.
pub type Offset = u64;
