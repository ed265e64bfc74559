use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use super::{FaultKind, FaultMode, SimFs};
use crate::fs::{FileHandle, FileSystem, Mapping, OpenMode};

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// A disk with a durable directory `/d`.
fn disk(seed: u64) -> SimFs {
    let fs = SimFs::new(seed);
    fs.create_dir_all(p("/d")).unwrap();
    fs.sync_dir(p("/")).unwrap();
    fs
}

/// A durably created, empty file `/d/f`.
fn durable_file(fs: &SimFs) -> Arc<dyn FileHandle> {
    let f = fs.open(p("/d/f"), OpenMode::Create).unwrap();
    fs.sync_dir(p("/d")).unwrap();
    f
}

fn read_all(f: &dyn FileHandle) -> Vec<u8> {
    let mut buf = vec![0; f.size().unwrap() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn write_read_roundtrip() {
    let fs = disk(0);
    let f = fs.open(p("/d/f"), OpenMode::Create).unwrap();
    f.write_all_at(b"hello", 0).unwrap();
    f.write_all_at(b"world", 10).unwrap();
    assert_eq!(f.size().unwrap(), 15);
    assert_eq!(read_all(&*f), b"hello\0\0\0\0\0world");
    let mut buf = [0; 8];
    assert_eq!(f.read_at(&mut buf, 12).unwrap(), 3);
    assert_eq!(&buf[..3], b"rld");
    assert_eq!(f.read_at(&mut buf, 15).unwrap(), 0);
    let g = fs.open(p("/d/f"), OpenMode::Read).unwrap();
    assert_eq!(read_all(&*g), read_all(&*f));
    assert_eq!(
        g.write_all_at(b"x", 0).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    f.set_len(3).unwrap();
    assert_eq!(read_all(&*g), b"hel");
    f.allocate(6).unwrap();
    f.allocate(2).unwrap(); // never shrinks
    assert_eq!(read_all(&*g), b"hel\0\0\0");
    assert!(fs.exists(p("/d/f")) && fs.exists(p("/d")) && fs.exists(p("/")));
    assert!(!fs.exists(p("/d/g")));
}

#[test]
fn directory_tree() {
    let fs = SimFs::new(0);
    fs.create_dir_all(p("/a/b/c")).unwrap();
    fs.open(p("/a/x"), OpenMode::Create).unwrap();
    let mut names = fs.list(p("/a")).unwrap();
    names.sort();
    assert_eq!(names, ["b", "x"]);
    assert_eq!(fs.list(p("/")).unwrap(), ["a"]);
    let err = |r: std::io::Result<Arc<dyn FileHandle>>| r.unwrap_err().kind();
    assert_eq!(
        err(fs.open(p("/nope/f"), OpenMode::Create)),
        ErrorKind::NotFound
    );
    assert_eq!(err(fs.open(p("/a/y"), OpenMode::Read)), ErrorKind::NotFound);
    assert_eq!(
        err(fs.open(p("/a/y"), OpenMode::Write)),
        ErrorKind::NotFound
    );
    assert_eq!(
        err(fs.open(p("/a/b"), OpenMode::Read)),
        ErrorKind::IsADirectory
    );
    assert!(fs.list(p("/zz")).is_err() && fs.list(p("/a/x")).is_err());
    assert!(fs.create_dir_all(p("/a/x/y")).is_err());
    fs.remove_file(p("/a/x")).unwrap();
    assert!(fs.remove_file(p("/a/x")).is_err() && fs.remove_file(p("/a/b")).is_err());
    fs.remove_dir_all(p("/a")).unwrap();
    assert!(!fs.exists(p("/a/b/c")) && fs.list(p("/")).unwrap().is_empty());
    assert!(fs.remove_dir_all(p("/")).is_err());
}

#[test]
fn synced_data_survives_crash() {
    let fs = disk(1);
    let f = durable_file(&fs);
    f.write_all_at(b"durable bytes", 0).unwrap();
    f.sync_data().unwrap();
    fs.crash();
    assert_eq!(fs.read_file("/d/f").unwrap(), b"durable bytes");
    let f = fs.open(p("/d/f"), OpenMode::Write).unwrap();
    assert_eq!(read_all(&*f), b"durable bytes");
}

#[test]
fn unsynced_writes_are_kept_dropped_or_torn() {
    let base = *b"AAAAAAAAAAAAAAAA";
    let (w1, w2): (&[u8], &[u8]) = (b"bbbb", b"cccccccc");
    // Every outcome allowed: each write replayed in order as a prefix (0..=len).
    let mut allowed = BTreeSet::new();
    for k1 in 0..=w1.len() {
        for k2 in 0..=w2.len() {
            let mut v = base.to_vec();
            v[4..4 + k1].copy_from_slice(&w1[..k1]);
            v.extend_from_slice(&w2[..k2]);
            allowed.insert(v);
        }
    }
    let (mut kept, mut dropped, mut torn) = (0, 0, 0);
    for seed in 0..300 {
        let fs = disk(seed);
        let f = durable_file(&fs);
        f.write_all_at(&base, 0).unwrap();
        f.sync_data().unwrap();
        f.write_all_at(w1, 4).unwrap();
        f.write_all_at(w2, 16).unwrap();
        fs.crash();
        let after = fs.read_file("/d/f").unwrap();
        assert!(allowed.contains(&after), "seed {seed}: {after:?}");
        match after.len() - 16 {
            0 => dropped += 1,
            8 => kept += 1,
            _ => torn += 1,
        }
    }
    assert!(
        kept > 0 && dropped > 0 && torn > 0,
        "{kept} {dropped} {torn}"
    );
}

#[test]
fn unsynced_size_changes_may_revert() {
    let mut lens = BTreeSet::new();
    for seed in 0..50 {
        let fs = disk(seed);
        let f = durable_file(&fs);
        f.write_all_at(b"0123456789", 0).unwrap();
        f.sync_data().unwrap();
        f.set_len(4).unwrap();
        fs.crash();
        let after = fs.read_file("/d/f").unwrap();
        assert!(b"0123456789".starts_with(&after));
        lens.insert(after.len());
    }
    assert_eq!(lens, BTreeSet::from([4, 10]));
}

#[test]
fn created_file_without_sync_dir_vanishes() {
    let fs = disk(2);
    let f = fs.open(p("/d/f"), OpenMode::Create).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    f.sync_data().unwrap();
    fs.create_dir_all(p("/d/sub")).unwrap();
    fs.crash();
    assert!(!fs.exists(p("/d/f")) && !fs.exists(p("/d/sub")));
    assert!(fs.exists(p("/d")));
    assert!(fs.list(p("/d")).unwrap().is_empty());
}

#[test]
fn removal_without_sync_dir_is_undone() {
    let fs = SimFs::new(0);
    fs.write_file("/d/f", b"keep me").unwrap();
    fs.write_file("/e/g", b"me too").unwrap();
    fs.remove_file(p("/d/f")).unwrap();
    fs.remove_dir_all(p("/e")).unwrap();
    fs.crash();
    assert_eq!(fs.read_file("/d/f").unwrap(), b"keep me");
    assert_eq!(fs.read_file("/e/g").unwrap(), b"me too");
    fs.remove_file(p("/d/f")).unwrap();
    fs.sync_dir(p("/d")).unwrap();
    fs.crash();
    assert!(!fs.exists(p("/d/f")));
}

#[test]
fn rename_reverts_without_sync_dir_and_persists_with_it() {
    for sync in [false, true] {
        let fs = SimFs::new(5);
        fs.write_file("/d/a", b"old").unwrap();
        fs.write_file("/d/tmp", b"new").unwrap();
        fs.rename(p("/d/tmp"), p("/d/a")).unwrap();
        assert_eq!(fs.read_file("/d/a").unwrap(), b"new");
        assert!(!fs.exists(p("/d/tmp")));
        if sync {
            fs.sync_dir(p("/d")).unwrap();
        }
        fs.crash();
        if sync {
            assert_eq!(fs.read_file("/d/a").unwrap(), b"new");
            assert!(!fs.exists(p("/d/tmp")));
        } else {
            assert_eq!(fs.read_file("/d/a").unwrap(), b"old");
            assert_eq!(fs.read_file("/d/tmp").unwrap(), b"new");
        }
    }
}

#[test]
fn rename_directories() {
    let fs = SimFs::new(0);
    fs.write_file("/d/x/f", b"f").unwrap();
    fs.rename(p("/d/x"), p("/d/y")).unwrap();
    assert_eq!(fs.read_file("/d/y/f").unwrap(), b"f");
    assert!(fs.rename(p("/d/y"), p("/d/y/z")).is_err());
    fs.write_file("/d/file", b"").unwrap();
    assert!(fs.rename(p("/d/file"), p("/d/y")).is_err());
    assert!(fs.rename(p("/d/missing"), p("/d/z")).is_err());
}

#[test]
fn kill_keeps_everything() {
    let fs = disk(3);
    let f = fs.open(p("/d/f"), OpenMode::Create).unwrap();
    f.write_all_at(b"unsynced", 0).unwrap();
    fs.write_file("/d/a", b"a").unwrap();
    fs.rename(p("/d/a"), p("/d/b")).unwrap();
    fs.kill();
    assert_eq!(fs.read_file("/d/f").unwrap(), b"unsynced");
    assert_eq!(fs.read_file("/d/b").unwrap(), b"a");
    assert!(!fs.exists(p("/d/a")));
    assert!(f.read_at(&mut [0; 4], 0).is_err());
    // What the killed process left un-synced can still be lost by a later power loss.
    fs.crash();
    assert!(!fs.exists(p("/d/f")));
}

#[test]
fn handles_and_mappings_fail_after_crash() {
    let fs = disk(4);
    let f = durable_file(&fs);
    f.allocate(16).unwrap();
    let m = f.map(16).unwrap();
    fs.crash();
    let dead = |e: std::io::Error| e.to_string().contains("simulated crash");
    assert!(dead(f.read_at(&mut [0; 1], 0).unwrap_err()));
    assert!(dead(f.write_all_at(b"x", 0).unwrap_err()));
    assert!(dead(f.sync_data().unwrap_err()));
    assert!(dead(f.size().unwrap_err()));
    assert!(dead(f.set_len(0).unwrap_err()));
    assert!(dead(f.allocate(100).unwrap_err()));
    assert!(dead(f.map(1).unwrap_err()));
    assert!(dead(m.write(0, b"x").unwrap_err()));
    let g = fs.open(p("/d/f"), OpenMode::Write).unwrap();
    g.write_all_at(b"fine", 0).unwrap();
}

#[test]
fn locks() {
    let fs = disk(0);
    let guard = fs.try_lock(p("/d/LOCK")).unwrap().expect("free");
    assert!(fs.exists(p("/d/LOCK")));
    assert!(fs.try_lock(p("/d/LOCK")).unwrap().is_none());
    assert!(fs.try_lock(p("/d/OTHER")).unwrap().is_some());
    drop(guard);
    let old = fs
        .try_lock(p("/d/LOCK"))
        .unwrap()
        .expect("released by drop");
    fs.crash();
    fs.create_dir_all(p("/d")).unwrap();
    let new = fs
        .try_lock(p("/d/LOCK"))
        .unwrap()
        .expect("released by crash");
    drop(old); // must not release `new`
    assert!(fs.try_lock(p("/d/LOCK")).unwrap().is_none());
    fs.kill();
    assert!(fs.try_lock(p("/d/LOCK")).unwrap().is_some());
    drop(new);
    assert!(fs.try_lock(p("/missing/LOCK")).is_err());
}

#[test]
fn mapping_writes() {
    let fs = disk(6);
    let f = durable_file(&fs);
    f.write_all_at(b"head", 0).unwrap();
    f.allocate(64).unwrap();
    f.sync_data().unwrap();
    let m = f.map(128).unwrap();
    assert_eq!(m.len(), 128);
    assert_eq!(m.bytes(0, 6), b"head\0\0");
    m.write(4, b"mapped").unwrap();
    assert_eq!(m.bytes(0, 10), b"headmapped");
    let mut buf = [0; 10];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"headmapped");
    assert_eq!(
        m.write(127, b"xy").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(m.write(usize::MAX, b"x").is_err());
    let other = fs.open(p("/d/f"), OpenMode::Write).unwrap();
    other.sync_data().unwrap(); // any handle of the file syncs mapped writes
    fs.crash();
    assert_eq!(&fs.read_file("/d/f").unwrap()[..10], b"headmapped");
    assert_eq!(fs.file_len("/d/f"), Some(64));

    let r = fs.open(p("/d/f"), OpenMode::Read).unwrap();
    assert!(r.map(65).is_err());
    let rm = r.map(64).unwrap();
    assert_eq!(rm.bytes(0, 4), b"head");
    assert_eq!(
        rm.write(0, b"x").unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert!(r.map(0).unwrap().is_empty());
}

/// A store past the end of a mapped file is SIGBUS on a real OS: the simulation
/// aborts the same way (a panic), never a returned error an engine could swallow.
#[test]
#[should_panic(expected = "SIGBUS: mapped write past end of file")]
fn mapped_write_past_end_of_file_aborts() {
    let fs = disk(6);
    let f = durable_file(&fs);
    f.allocate(64).unwrap();
    let m = f.map(128).unwrap();
    m.write(0, b"inside").unwrap();
    f.set_len(6).unwrap(); // as a seal cuts the file to its data
    let _ = m.write(6, b"past the end");
}

#[test]
fn unsynced_mapping_writes_are_kept_dropped_or_torn() {
    let mut outcomes = BTreeSet::new();
    for seed in 0..100 {
        let fs = disk(seed);
        let f = durable_file(&fs);
        f.allocate(8).unwrap();
        f.sync_data().unwrap();
        let m = f.map(1 << 30).unwrap(); // big, lazily zeroed
        m.write(0, b"abcd").unwrap();
        fs.crash();
        let after = fs.read_file("/d/f").unwrap();
        assert_eq!(after.len(), 8);
        let k = after.iter().take_while(|&&b| b != 0).count();
        assert!(after[..k] == b"abcd"[..k] && after[k..].iter().all(|&b| b == 0));
        outcomes.insert(k);
    }
    assert!(outcomes.contains(&0) && outcomes.contains(&4) && outcomes.len() > 2);
}

#[test]
fn fault_injection_once_and_sticky() {
    let fs = disk(0);
    let f = durable_file(&fs);
    fs.fail_after(2, FaultKind::Eio, FaultMode::Once);
    f.write_all_at(b"ok", 0).unwrap();
    let e = f.write_all_at(b"XX", 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(5));
    assert_eq!(read_all(&*f), b"ok"); // the failed write had no effect
    f.sync_data().unwrap();

    fs.fail_after(1, FaultKind::NoSpace, FaultMode::Sticky);
    assert_eq!(f.allocate(10).unwrap_err().raw_os_error(), Some(28));
    assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(28));
    assert!(fs.sync_dir(p("/d")).is_err() && fs.rename(p("/d/f"), p("/d/g")).is_err());
    assert!(fs.open(p("/d/h"), OpenMode::Create).is_err());
    assert!(fs.open(p("/d/f"), OpenMode::Read).is_ok()); // not counted
    assert_eq!(f.size().unwrap(), 2);
    fs.clear_faults();
    f.allocate(10).unwrap();
    assert_eq!(f.size().unwrap(), 10);
}

#[test]
fn op_count_counts_mutations_only() {
    let fs = SimFs::new(0);
    assert_eq!(fs.op_count(), 0);
    fs.create_dir_all(p("/d")).unwrap(); // 1
    let f = fs.open(p("/d/f"), OpenMode::Create).unwrap(); // 2
    let _ = fs.open(p("/d/f"), OpenMode::Write).unwrap();
    f.write_all_at(b"x", 0).unwrap(); // 3
    f.read_at(&mut [0], 0).unwrap();
    f.size().unwrap();
    fs.list(p("/d")).unwrap();
    fs.exists(p("/d"));
    f.sync_data().unwrap(); // 4
    fs.sync_dir(p("/d")).unwrap(); // 5
    assert_eq!(fs.op_count(), 5);
    fs.write_file("/x", b"y").unwrap();
    assert_eq!(fs.op_count(), 5);
}

/// A small workload that syncs everything: after any crash, `/d/f` is absent or a
/// prefix-consistent version, and after it completes all data is durable.
fn workload(fs: &SimFs) -> std::io::Result<()> {
    fs.create_dir_all(p("/d"))?;
    fs.sync_dir(p("/"))?;
    let f = fs.open(p("/d/f"), OpenMode::Create)?;
    fs.sync_dir(p("/d"))?;
    for i in 0..4u8 {
        f.write_all_at(&[b'a' + i; 4], u64::from(i) * 4)?;
        f.sync_data()?;
    }
    Ok(())
}

#[test]
fn crash_at_every_op() {
    let total = {
        let fs = SimFs::new(0);
        workload(&fs).unwrap();
        fs.op_count()
    };
    assert_eq!(total, 12);
    for n in 1..=total {
        let fs = SimFs::new(n);
        fs.crash_at_op(n);
        let err = workload(&fs).unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{err}");
        assert_eq!(fs.op_count(), n);
        // Ops 1-4 set up; then write i is op 5 + 2i and its sync op 6 + 2i.
        let synced = (0..4).filter(|i| 6 + 2 * i < n).count();
        match fs.read_file("/d/f") {
            Some(data) => {
                assert!(b"aaaabbbbccccdddd".starts_with(&data), "op {n}: {data:?}");
                assert!(data.len() >= 4 * synced, "op {n}: lost synced data");
            }
            None => assert!(n <= 4, "op {n}: durable file lost"),
        }
        // A new run after the crash works normally.
        workload(&fs).unwrap();
        assert_eq!(fs.read_file("/d/f").unwrap(), b"aaaabbbbccccdddd");
    }
}

fn crashed_bytes(seed: u64) -> Vec<u8> {
    let fs = disk(seed);
    let f = durable_file(&fs);
    for i in 0..20u8 {
        f.write_all_at(&[i; 7], u64::from(i) * 5).unwrap();
    }
    fs.crash();
    fs.read_file("/d/f").unwrap()
}

#[test]
fn deterministic_per_seed() {
    for seed in 0..10 {
        assert_eq!(crashed_bytes(seed), crashed_bytes(seed));
    }
    let distinct: BTreeSet<_> = (0..10).map(crashed_bytes).collect();
    assert!(distinct.len() > 1);
}

#[test]
fn helpers() {
    let fs = SimFs::new(0);
    fs.write_file("/a/b/c", b"xyz").unwrap();
    assert_eq!(fs.file_len("/a/b/c"), Some(3));
    assert_eq!(fs.file_len("/a/b"), None);
    assert_eq!(fs.read_file("/a/nope"), None);
    fs.corrupt_byte("/a/b/c", 0, 0xff).unwrap();
    assert_eq!(fs.read_file("/a/b/c").unwrap(), [!b'x', b'y', b'z']);
    assert!(fs.corrupt_byte("/a/b/c", 3, 1).is_err());
    assert!(fs.write_file("/a/b", b"").is_err());
    fs.write_file("/a/b/c", b"new").unwrap();
    fs.crash();
    assert_eq!(fs.read_file("/a/b/c").unwrap(), b"new");
    assert!(format!("{fs:?}").contains("SimFs"));
}

#[test]
fn unlinked_files_are_freed() {
    let fs = disk(0);
    let before = fs.state.lock().node_count();
    // Collection is amortised (it runs when the tree doubles), so memory stays
    // bounded however many files come and go.
    for _ in 0..1_000 {
        let f = fs.open(p("/d/t"), OpenMode::Create).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        fs.remove_file(p("/d/t")).unwrap();
        assert_eq!(read_all(&*f), b"x"); // still readable while open
        drop(f);
        let n = fs.state.lock().node_count();
        assert!(n <= 2 * before + 70, "{n} nodes, {before} before");
    }
}

#[test]
fn send_sync_clone() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
    check::<SimFs>();
    fn check_dyn(_: &Arc<dyn Mapping>) {}
    let fs = SimFs::new(0);
    let f = fs.open(p("/m"), OpenMode::Create).unwrap();
    check_dyn(&f.map(0).unwrap());
    let clone = fs.clone();
    clone.write_file("/shared", b"1").unwrap();
    assert!(fs.exists(p("/shared")));
}
