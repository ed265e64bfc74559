//! The path operations of the simulated file system: lookups, creation, renames,
//! removal, listing and directory syncs.

use std::io::{self, ErrorKind};

use super::{error, Content, DirNode, FileNode, Node, State, ROOT};

impl State {
    /// The node at `path` in the current tree.
    pub(in crate::sim) fn lookup(&self, path: &[String]) -> io::Result<u64> {
        let mut id = ROOT;
        for name in path {
            id = *self
                .dir(id)?
                .current
                .get(name)
                .ok_or_else(|| error(ErrorKind::NotFound, "no such file or directory"))?;
        }
        Ok(id)
    }

    /// The directory holding `path`'s last component, and that component.
    fn parent<'p>(&self, path: &'p [String]) -> io::Result<(u64, &'p str)> {
        let (name, dir) = path
            .split_last()
            .ok_or_else(|| error(ErrorKind::InvalidInput, "path has no file name"))?;
        let id = self.lookup(dir)?;
        self.dir(id)?;
        Ok((id, name))
    }

    /// mkdir -p; with `durable`, every entry on the way is made durable at once.
    pub(in crate::sim) fn create_dir_all(
        &mut self,
        path: &[String],
        durable: bool,
    ) -> io::Result<u64> {
        let mut id = ROOT;
        for name in path {
            let child = match self.dir(id)?.current.get(name) {
                Some(&child) if self.is_dir(child) => child,
                Some(_) => return Err(error(ErrorKind::AlreadyExists, "a file is in the way")),
                None => {
                    let child = self.add(Node::Dir(DirNode::default()));
                    self.dir_mut(id)?.insert_current(name, child);
                    child
                }
            };
            if durable {
                self.dir_mut(id)?.durable.insert(name.clone(), child);
            }
            id = child;
        }
        Ok(id)
    }

    /// Opens (and with `create`, creates) a regular file; returns its id.
    pub(in crate::sim) fn open(&mut self, path: &[String], create: bool) -> io::Result<u64> {
        let (dir, name) = self.parent(path)?;
        match self.dir(dir)?.current.get(name) {
            Some(&id) if self.is_dir(id) => Err(error(ErrorKind::IsADirectory, "is a directory")),
            Some(&id) => Ok(id),
            None if create => {
                let id = self.add(Node::File(FileNode::default()));
                self.dir_mut(dir)?.insert_current(name, id);
                Ok(id)
            }
            None => Err(error(ErrorKind::NotFound, "no such file")),
        }
    }

    pub(in crate::sim) fn rename(&mut self, from: &[String], to: &[String]) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(from)?;
        let id = *self
            .dir(from_dir)?
            .current
            .get(from_name)
            .ok_or_else(|| error(ErrorKind::NotFound, "no such file or directory"))?;
        let (to_dir, to_name) = self.parent(to)?;
        let moving_dir = self.is_dir(id);
        if let Some(&existing) = self.dir(to_dir)?.current.get(to_name) {
            if existing == id {
                return Ok(());
            }
            match (moving_dir, self.dir(existing)) {
                (false, Ok(_)) => return Err(error(ErrorKind::IsADirectory, "is a directory")),
                (true, Err(_)) => return Err(error(ErrorKind::NotADirectory, "not a directory")),
                (true, Ok(target)) if !target.current.is_empty() => {
                    return Err(error(ErrorKind::DirectoryNotEmpty, "directory not empty"))
                }
                _ => {}
            }
        }
        if moving_dir && to.starts_with(from) {
            return Err(error(
                ErrorKind::InvalidInput,
                "cannot move a directory into itself",
            ));
        }
        self.dir_mut(from_dir)?.remove_current(from_name);
        self.dir_mut(to_dir)?.insert_current(to_name, id);
        self.maybe_gc();
        Ok(())
    }

    /// Unlinks the entry at `path`, which must be a directory when `dir` is set and a
    /// file otherwise.
    pub(in crate::sim) fn remove(&mut self, path: &[String], dir: bool) -> io::Result<()> {
        let (parent, name) = self.parent(path)?;
        let id = *self
            .dir(parent)?
            .current
            .get(name)
            .ok_or_else(|| error(ErrorKind::NotFound, "no such file or directory"))?;
        match (dir, self.is_dir(id)) {
            (false, true) => return Err(error(ErrorKind::IsADirectory, "is a directory")),
            (true, false) => return Err(error(ErrorKind::NotADirectory, "not a directory")),
            _ => {}
        }
        self.dir_mut(parent)?.remove_current(name);
        self.maybe_gc();
        Ok(())
    }

    pub(in crate::sim) fn list(&self, path: &[String]) -> io::Result<Vec<String>> {
        let id = self.lookup(path)?;
        Ok(self.dir(id)?.current.keys().cloned().collect())
    }

    pub(in crate::sim) fn sync_dir(&mut self, path: &[String]) -> io::Result<()> {
        let id = self.lookup(path)?;
        self.dir_mut(id)?.sync();
        self.maybe_gc();
        Ok(())
    }

    /// The file at `path` in the current tree.
    pub(in crate::sim) fn file_at(&mut self, path: &[String]) -> io::Result<&mut FileNode> {
        let id = self.lookup(path)?;
        match self.nodes.get_mut(&id) {
            Some(Node::File(file)) => Ok(file),
            _ => Err(error(ErrorKind::IsADirectory, "is a directory")),
        }
    }

    /// Creates or replaces the file at `path` with `bytes`, durably, parents included.
    pub(in crate::sim) fn write_durable(
        &mut self,
        path: &[String],
        bytes: &[u8],
    ) -> io::Result<()> {
        let (name, dir_path) = path
            .split_last()
            .ok_or_else(|| error(ErrorKind::InvalidInput, "path has no file name"))?;
        let dir = self.create_dir_all(dir_path, true)?;
        let id = match self.dir(dir)?.current.get(name) {
            Some(&id) if self.is_dir(id) => {
                return Err(error(ErrorKind::IsADirectory, "is a directory"))
            }
            Some(&id) => id,
            None => self.add(Node::File(FileNode::default())),
        };
        let entries = self.dir_mut(dir)?;
        entries.current.insert(name.clone(), id);
        entries.durable.insert(name.clone(), id);
        self.file_mut(id)?.replace(Content::from_bytes(bytes));
        self.maybe_gc();
        Ok(())
    }
}
