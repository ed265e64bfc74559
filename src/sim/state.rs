//! The simulated disk: a tree of nodes, each with a current and a durable state.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, ErrorKind};
use std::path::{Component, Path};

use super::{FaultKind, FaultMode};

mod paths;

/// Node id of the root directory, which always exists and is always durable.
pub(super) const ROOT: u64 = 0;

/// Path components after resolving `.` and `..`; the root is the empty list.
pub(super) fn components(path: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => match name.to_str() {
                Some(name) => out.push(name.to_string()),
                None => return Err(error(ErrorKind::InvalidInput, "non-UTF-8 path")),
            },
        }
    }
    Ok(out)
}

pub(super) fn error(kind: ErrorKind, message: &str) -> io::Error {
    io::Error::new(kind, message.to_string())
}

/// The error every operation of a handle or mapping from before a crash returns.
pub(super) fn dead_handle() -> io::Error {
    io::Error::other("simulated crash: handle from before the crash")
}

/// splitmix64: tiny, deterministic, good enough to pick crash outcomes.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// File bytes: `bytes` holds the materialised prefix, the rest up to `len` is zeros
/// (so allocating a large file costs nothing until it is written).
#[derive(Clone, Debug, Default)]
pub(super) struct Content {
    bytes: Vec<u8>,
    len: u64,
}

impl Content {
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn materialised(&self) -> &[u8] {
        &self.bytes
    }

    pub(super) fn from_bytes(bytes: &[u8]) -> Self {
        Content {
            bytes: bytes.to_vec(),
            len: bytes.len() as u64,
        }
    }

    pub(super) fn read(&self, buf: &mut [u8], pos: u64) -> usize {
        if pos >= self.len {
            return 0;
        }
        let n = usize::try_from(self.len - pos).map_or(buf.len(), |left| left.min(buf.len()));
        let buf = &mut buf[..n];
        buf.fill(0);
        if let Ok(start) = usize::try_from(pos) {
            if start < self.bytes.len() {
                let have = (self.bytes.len() - start).min(n);
                buf[..have].copy_from_slice(&self.bytes[start..start + have]);
            }
        }
        n
    }

    /// Materialises `[0, end)` (zeros past the old materialised end).
    fn materialise(&mut self, end: u64) -> io::Result<usize> {
        let end = usize::try_from(end)
            .map_err(|_| error(ErrorKind::FileTooLarge, "simulated file too large"))?;
        if end > self.bytes.len() {
            self.bytes
                .try_reserve(end - self.bytes.len())
                .map_err(|_| error(ErrorKind::OutOfMemory, "simulated file too large"))?;
            self.bytes.resize(end, 0);
        }
        Ok(end)
    }

    pub(super) fn write(&mut self, pos: u64, data: &[u8]) -> io::Result<()> {
        let end = pos
            .checked_add(data.len() as u64)
            .ok_or_else(|| error(ErrorKind::FileTooLarge, "simulated file too large"))?;
        let end_usize = self.materialise(end)?;
        // `pos <= end` and `end` fits in usize (checked by `materialise`).
        let start = end_usize - data.len();
        self.bytes[start..end_usize].copy_from_slice(data);
        self.len = self.len.max(end);
        Ok(())
    }

    pub(super) fn set_len(&mut self, len: u64) {
        if let Ok(keep) = usize::try_from(len) {
            self.bytes.truncate(keep);
        }
        self.len = len;
    }

    /// XORs one byte; false when `pos` is past the end.
    pub(super) fn xor(&mut self, pos: u64, mask: u8) -> io::Result<bool> {
        if pos >= self.len {
            return Ok(false);
        }
        let end = self.materialise(pos + 1)?;
        self.bytes[end - 1] ^= mask;
        Ok(true)
    }
}

/// A size or data change made since the file's last `sync_data`.
#[derive(Debug)]
enum Pending {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

impl Pending {
    fn apply(&self, content: &mut Content) -> io::Result<()> {
        match self {
            Pending::Write { pos, data } => content.write(*pos, data),
            Pending::SetLen(len) => {
                content.set_len(*len);
                Ok(())
            }
        }
    }
}

/// A regular file: `durable` plus `pending` replayed in order equals `current`.
#[derive(Debug, Default)]
pub(super) struct FileNode {
    pub(super) current: Content,
    durable: Content,
    pending: Vec<Pending>,
    /// Live handles (of the current generation): keeps an unlinked file alive.
    pub(super) open: usize,
}

impl FileNode {
    pub(super) fn write(&mut self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.current.write(pos, data)?;
        self.pending.push(Pending::Write {
            pos,
            data: data.to_vec(),
        });
        Ok(())
    }

    pub(super) fn set_len(&mut self, len: u64) {
        self.current.set_len(len);
        self.pending.push(Pending::SetLen(len));
    }

    /// Makes the current content durable.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        let mut ops = std::mem::take(&mut self.pending).into_iter();
        while let Some(op) = ops.next() {
            if let Err(e) = op.apply(&mut self.durable) {
                // Keep the invariant: durable + pending == current.
                self.pending = std::iter::once(op).chain(ops).collect();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Replaces both states (a direct, durable write).
    pub(super) fn replace(&mut self, content: Content) {
        self.pending.clear();
        self.durable = content.clone();
        self.current = content;
    }

    pub(super) fn corrupt(&mut self, pos: u64, mask: u8) -> io::Result<bool> {
        let hit_current = self.current.xor(pos, mask)?;
        let hit_durable = self.durable.xor(pos, mask)?;
        Ok(hit_current || hit_durable)
    }

    /// Power loss: each pending change is kept, dropped or (writes) torn.
    fn lose_unsynced(&mut self, rng: &mut Rng) {
        for op in std::mem::take(&mut self.pending) {
            let op = match op {
                Pending::Write { pos, mut data } => match rng.below(3) {
                    0 => Some(Pending::Write { pos, data }),
                    1 => None,
                    _ => {
                        data.truncate(rng.below(data.len() as u64) as usize);
                        Some(Pending::Write { pos, data })
                    }
                },
                Pending::SetLen(len) => (rng.below(2) == 0).then_some(Pending::SetLen(len)),
            };
            if let Some(op) = op {
                // A change that cannot be applied is simply lost.
                let _ = op.apply(&mut self.durable);
            }
        }
        self.current = self.durable.clone();
        self.open = 0;
    }
}

/// A directory: entry name -> node id, as seen now and as it would survive a crash.
#[derive(Debug, Default)]
pub(super) struct DirNode {
    pub(super) current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    /// Names whose current entry may differ from the durable one: `sync_dir` copies
    /// just these (a log directory of 30,000 files syncs after every roll).
    unsynced: BTreeSet<String>,
}

impl DirNode {
    fn insert_current(&mut self, name: &str, id: u64) {
        self.current.insert(name.to_string(), id);
        self.unsynced.insert(name.to_string());
    }

    fn remove_current(&mut self, name: &str) {
        self.current.remove(name);
        self.unsynced.insert(name.to_string());
    }

    /// Makes the current entries durable.
    fn sync(&mut self) {
        for name in std::mem::take(&mut self.unsynced) {
            match self.current.get(&name) {
                Some(&id) => self.durable.insert(name, id),
                None => self.durable.remove(&name),
            };
        }
    }

    /// Power loss: back to the durable entries.
    fn revert(&mut self) {
        self.current = self.durable.clone();
        self.unsynced.clear();
    }
}

#[derive(Debug)]
pub(super) enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug)]
struct Fault {
    at: u64,
    kind: FaultKind,
    mode: FaultMode,
    fired: bool,
}

/// Everything behind the [`super::SimFs`] mutex.
#[derive(Debug)]
pub(super) struct State {
    rng: Rng,
    /// Bumped by every crash or kill; handles of older generations are dead.
    pub(super) gen: u64,
    pub(super) ops: u64,
    fault: Option<Fault>,
    crash_at: Option<u64>,
    next_id: u64,
    next_token: u64,
    /// BTreeMap, not HashMap: crash outcomes depend on the iteration order.
    nodes: BTreeMap<u64, Node>,
    pub(super) locks: BTreeMap<Vec<String>, u64>,
    /// Node count after the last collection: collecting again waits until it doubles,
    /// so a closed handle costs amortised O(1), not a walk of the whole tree.
    nodes_after_gc: usize,
}

impl State {
    pub(super) fn new(seed: u64) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        State {
            rng: Rng(seed),
            gen: 0,
            ops: 0,
            fault: None,
            crash_at: None,
            next_id: ROOT + 1,
            next_token: 0,
            nodes_after_gc: 0,
            nodes,
            locks: BTreeMap::new(),
        }
    }

    pub(super) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub(super) fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    pub(super) fn set_fault(&mut self, n: u64, kind: FaultKind, mode: FaultMode) {
        self.fault = Some(Fault {
            at: self.ops.saturating_add(n.max(1)),
            kind,
            mode,
            fired: false,
        });
    }

    pub(super) fn set_crash_at(&mut self, n: u64) {
        self.crash_at = Some(n);
    }

    pub(super) fn clear_faults(&mut self) {
        self.fault = None;
        self.crash_at = None;
    }

    /// Counts one mutating or syncing operation, which may crash or fail instead.
    pub(super) fn begin_op(&mut self) -> io::Result<()> {
        self.ops += 1;
        if self.crash_at == Some(self.ops) {
            self.crash_at = None;
            self.crash(true);
            return Err(io::Error::other(format!(
                "simulated crash at operation {}",
                self.ops
            )));
        }
        if let Some(fault) = &mut self.fault {
            if fault.fired || fault.at == self.ops {
                let kind = fault.kind;
                match fault.mode {
                    FaultMode::Once => self.fault = None,
                    FaultMode::Sticky => fault.fired = true,
                }
                return Err(match kind {
                    FaultKind::Eio => io::Error::from_raw_os_error(5),
                    FaultKind::NoSpace => io::Error::from_raw_os_error(28),
                });
            }
        }
        Ok(())
    }

    /// Power loss (`lose == true`) or process death (`false`).
    pub(super) fn crash(&mut self, lose: bool) {
        self.gen += 1;
        self.locks.clear();
        if !lose {
            for node in self.nodes.values_mut() {
                if let Node::File(file) = node {
                    file.open = 0;
                }
            }
            self.gc();
            return;
        }
        let survivors = self.reachable(false);
        self.nodes.retain(|id, _| survivors.contains(id));
        let rng = &mut self.rng;
        for node in self.nodes.values_mut() {
            match node {
                Node::Dir(dir) => dir.revert(),
                Node::File(file) => file.lose_unsynced(rng),
            }
        }
    }

    /// Nodes reachable from the root through durable (and, with `current`, current) entries.
    fn reachable(&self, current: bool) -> BTreeSet<u64> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(Node::Dir(dir)) = self.nodes.get(&id) {
                stack.extend(dir.durable.values());
                if current {
                    stack.extend(dir.current.values());
                }
            }
        }
        seen
    }

    /// Frees nodes no directory entry (current or durable) and no handle refers to.
    pub(super) fn gc(&mut self) {
        let live = self.reachable(true);
        self.nodes.retain(|id, node| {
            live.contains(id) || matches!(node, Node::File(file) if file.open > 0)
        });
        self.nodes_after_gc = self.nodes.len();
    }

    /// [`State::gc`] when the tree has doubled since the last one.
    pub(super) fn maybe_gc(&mut self) {
        if self.nodes.len() > 2 * self.nodes_after_gc + 64 {
            self.gc();
        }
    }

    pub(super) fn file_mut(&mut self, id: u64) -> io::Result<&mut FileNode> {
        match self.nodes.get_mut(&id) {
            Some(Node::File(file)) => Ok(file),
            _ => Err(io::Error::other("simulated file vanished")),
        }
    }

    fn dir(&self, id: u64) -> io::Result<&DirNode> {
        match self.nodes.get(&id) {
            Some(Node::Dir(dir)) => Ok(dir),
            Some(Node::File(_)) => Err(error(ErrorKind::NotADirectory, "not a directory")),
            None => Err(error(ErrorKind::NotFound, "no such directory")),
        }
    }

    fn dir_mut(&mut self, id: u64) -> io::Result<&mut DirNode> {
        match self.nodes.get_mut(&id) {
            Some(Node::Dir(dir)) => Ok(dir),
            Some(Node::File(_)) => Err(error(ErrorKind::NotADirectory, "not a directory")),
            None => Err(error(ErrorKind::NotFound, "no such directory")),
        }
    }

    fn is_dir(&self, id: u64) -> bool {
        matches!(self.nodes.get(&id), Some(Node::Dir(_)))
    }

    fn add(&mut self, node: Node) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.nodes.insert(id, node);
        id
    }
}
