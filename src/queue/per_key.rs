//! `Ordering::PerKey`: at most one record per key in flight, each key in offset order.
//!
//! For every key with records not yet done, the offsets of those records in order
//! (hashed key → queue). The front is the key's head: the only one that may be
//! delivered (leased, waiting after a nack or timeout, or delayed). The others are
//! blocked: waiting slots with attempt 0 and deadline `i64::MAX`, never due. When the
//! head is done (acked, dead-lettered, gone), the next offset is unblocked (waiting,
//! deliverable at once, or at its `delay.until`). Keyless records are unordered.
//!
//! Nothing of this is journaled beyond the slot states: on open the table is rebuilt
//! from the keys of the records between the floor and the cursor, so order holds
//! across reopen and crash. Reading past a blocked record costs one slot and one
//! table entry, whatever the key's backlog.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use super::journal::{Event, Kind};
use super::state::{AckState, Slot, SlotState};
use crate::{Log, Offset, Result, StoredRecord};

/// Deadline of a blocked slot.
pub(crate) const BLOCKED: i64 = i64::MAX;

#[derive(Debug, Default)]
pub(crate) struct PerKey {
    /// Per key: `(offset, due)` of the records not done, `due` being when the
    /// record may be delivered once it is the head (its `delay.until`, or at once).
    queues: HashMap<u64, VecDeque<(Offset, i64)>>,
    key_of: HashMap<Offset, u64>,
}

fn hash_key(key: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// When an unblocked record becomes deliverable: its `delay.until`, or at once.
fn due_of(record: Option<&StoredRecord>) -> i64 {
    record
        .and_then(super::deliver::delay_until)
        .unwrap_or(i64::MIN)
}

impl PerKey {
    /// Registers a record just read past the cursor; true when it must be blocked
    /// (an earlier record of its key is not done).
    pub fn admit(&mut self, record: &StoredRecord) -> bool {
        self.admit_at(record.offset, Some(record))
    }

    fn admit_at(&mut self, offset: Offset, record: Option<&StoredRecord>) -> bool {
        let Some(key) = record.and_then(|r| r.key.as_deref()) else {
            return false;
        };
        let h = hash_key(key);
        let q = self.queues.entry(h).or_default();
        q.push_back((offset, due_of(record)));
        self.key_of.insert(offset, h);
        q.len() > 1
    }

    /// `offset` is done: returns the event unblocking the next record of its key.
    pub fn done(&mut self, offset: Offset) -> Option<Event> {
        let h = self.key_of.remove(&offset)?;
        let q = self.queues.get_mut(&h)?;
        let was_head = q.front().is_some_and(|&(o, _)| o == offset);
        if was_head {
            q.pop_front();
        } else {
            // Not the head (gone while blocked): rare, a linear search is fine.
            q.retain(|&(o, _)| o != offset);
        }
        let Some(&(next, due)) = q.front() else {
            self.queues.remove(&h);
            return None;
        };
        if !was_head {
            return None;
        }
        Some(Event {
            kind: Kind::Delay,
            offset: next,
            attempt: 0,
            deadline: due,
        })
    }

    /// Rebuilds the table from the records not done in `state` (after open), blocking
    /// and unblocking slots to match.
    pub fn rebuild(log: &Log, state: &mut AckState) -> Result<PerKey> {
        let mut table = PerKey::default();
        let pending: Vec<(Offset, Slot)> = state.pending().collect();
        for (offset, slot) in pending {
            let record = match log.read(offset) {
                Ok(r) => r,
                Err(crate::Error::Corrupt { .. }) | Err(crate::Error::OffsetOutOfRange { .. }) => {
                    None
                }
                Err(e) => return Err(e),
            };
            let blocked = table.admit_at(offset, record.as_ref());
            let is_blocked = slot.state == SlotState::Waiting && slot.deadline == BLOCKED;
            if blocked && !is_blocked {
                state.set(offset, SlotState::Waiting, slot.attempt, BLOCKED);
            } else if !blocked && is_blocked {
                state.set(
                    offset,
                    SlotState::Waiting,
                    slot.attempt,
                    due_of(record.as_ref()),
                );
            }
        }
        Ok(table)
    }
}
