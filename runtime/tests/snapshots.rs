//! Snapshots on real files: the log after a snapshot, a snapshot installed over a log that
//! disagrees, crashes between the snapshot and the removal of what it covers, damaged snapshot
//! files, and partial transfers that resume.

mod common;

use common::*;
use replog_core::{Bytes, LogIndex, Membership, NodeId, PartialSnapshot, Snapshot, SnapshotMeta, Term};
use replog_runtime::storage::{segment_name, StorageError};

fn snapshot(index: u64, term: u64) -> Snapshot {
    let data = format!("state through {index}");
    Snapshot {
        meta: SnapshotMeta { index: LogIndex(index), term: Term(term) },
        membership: Membership::voters_only([NodeId(1)]),
        data: Bytes::from(data.as_str()),
    }
}

fn names(firsts: &[u64]) -> Vec<String> {
    firsts.iter().map(|&first| segment_name(LogIndex(first))).collect()
}

/// Every segment file's bytes, to put back as if their removal never reached the disk.
fn keep_segments(scratch: &Scratch) -> Vec<(String, Vec<u8>)> {
    scratch
        .segments()
        .into_iter()
        .map(|name| (name.clone(), std::fs::read(scratch.path(&name)).unwrap()))
        .collect()
}

#[test]
fn the_log_starts_after_a_saved_snapshot() {
    let scratch = Scratch::new("snapshot");
    written(&scratch.0, 20, tiny());
    assert_eq!(scratch.segments(), names(&[1, 4, 7, 10, 13, 16, 19]));
    let (mut storage, _) = open(&scratch.0, tiny()).unwrap();
    storage.save_snapshot(&snapshot(11, 1)).unwrap();
    // Segments that end at or before 11 go; the one holding 11 stays.
    assert_eq!(scratch.segments(), names(&[10, 13, 16, 19]));
    assert_eq!(storage.snapshot(), Some(&snapshot(11, 1).meta));
    assert_eq!((storage.first_index(), storage.last_index()), (LogIndex(12), LogIndex(20)));
    assert!(matches!(
        storage.read_entries(LogIndex(11), LogIndex(20), u64::MAX),
        Err(StorageError::Compacted { first: LogIndex(12), .. })
    ));
    assert_eq!(storage.read_entries(LogIndex(12), LogIndex(20), u64::MAX).unwrap(), entries(12, 20, 1));
    storage.close().unwrap();

    let (mut storage, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!(recovery.snapshot, Some(snapshot(11, 1)));
    assert_eq!(recovery.entries, entries(19, 20, 1));
    assert_eq!(all_entries(&mut storage), entries(12, 20, 1));
    assert_eq!(recovery.entry_bytes, entries(12, 20, 1).iter().map(|e| e.size_bytes()).sum::<u64>());
    assert_eq!(recovery.term_runs, vec![(LogIndex(12), Term(1))]);
    assert!(recovery.hard_state.commit >= LogIndex(11), "a snapshot holds committed entries only");
    assert!(recovery.warnings.is_empty(), "{:?}", recovery.warnings);
    // A snapshot at the log's end covers the active segment too: the log starts over after it.
    storage.save_snapshot(&snapshot(20, 1)).unwrap();
    assert_eq!(scratch.segments(), names(&[21]));
    assert_eq!((storage.first_index(), storage.last_index()), (LogIndex(21), LogIndex(20)));
    assert_eq!(storage.durable().unwrap().last, LogIndex(20));
    storage.append(&entries(21, 22, 1)).unwrap();
    storage.close().unwrap();
    let (_, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!((recovery.snapshot, recovery.entries), (Some(snapshot(20, 1)), entries(21, 22, 1)));
}

#[test]
fn a_snapshot_whose_last_entry_the_log_lacks_replaces_the_whole_log() {
    let scratch = Scratch::new("install");
    written(&scratch.0, 10, tiny());
    let (mut storage, _) = open(&scratch.0, tiny()).unwrap();
    // Entry 8 is of term 1 here: a leader's snapshot through 8 of term 2 disagrees.
    storage.save_snapshot(&snapshot(8, 2)).unwrap();
    assert_eq!(scratch.segments(), names(&[9]));
    assert_eq!((storage.first_index(), storage.last_index()), (LogIndex(9), LogIndex(8)));
    assert_eq!(storage.durable().unwrap().last, LogIndex(8));
    storage.append(&[entry(9, 2)]).unwrap();
    storage.request_sync(true).unwrap();
    // One past the log's end: the log is replaced too.
    storage.save_snapshot(&snapshot(50, 3)).unwrap();
    assert_eq!(scratch.segments(), names(&[51]));
    assert_eq!(storage.last_index(), LogIndex(50));
    storage.close().unwrap();
    let (_, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!((recovery.snapshot, recovery.entries.len()), (Some(snapshot(50, 3)), 0));
    assert_eq!(recovery.hard_state.commit, LogIndex(50));
}

#[test]
fn a_crash_before_the_covered_segments_are_removed_recovers_the_same_log() {
    let scratch = Scratch::new("crash-compaction");
    written(&scratch.0, 20, tiny());
    let before = keep_segments(&scratch);
    let (mut storage, _) = open(&scratch.0, tiny()).unwrap();
    storage.save_snapshot(&snapshot(11, 1)).unwrap();
    storage.close().unwrap();
    // snapshot.json was renamed durably; the removals of the segments it covers were lost.
    for (name, bytes) in &before {
        std::fs::write(scratch.path(name), bytes).unwrap();
    }
    let (mut storage, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!((recovery.snapshot, recovery.entries), (Some(snapshot(11, 1)), entries(19, 20, 1)));
    assert_eq!(all_entries(&mut storage), entries(12, 20, 1));
    assert!(recovery.warnings.is_empty(), "{:?}", recovery.warnings);
    assert_eq!(scratch.segments(), names(&[10, 13, 16, 19]), "covered segments are removed at recovery");
}

#[test]
fn a_crash_right_after_installing_a_snapshot_drops_the_old_log() {
    let scratch = Scratch::new("crash-install");
    written(&scratch.0, 10, tiny());
    let before = keep_segments(&scratch);
    let (mut storage, _) = open(&scratch.0, tiny()).unwrap();
    storage.save_snapshot(&snapshot(8, 2)).unwrap();
    storage.close().unwrap();
    // The snapshot is durable; nothing after it (removals, the new segment) reached the disk.
    std::fs::remove_file(scratch.path(&segment_name(LogIndex(9)))).unwrap();
    for (name, bytes) in &before {
        std::fs::write(scratch.path(name), bytes).unwrap();
    }
    let (storage, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!((recovery.snapshot, recovery.entries.len()), (Some(snapshot(8, 2)), 0));
    assert_eq!(storage.last_index(), LogIndex(8));
    assert!(recovery.warnings.iter().any(|w| w.contains("dropped")), "{:?}", recovery.warnings);
    assert_eq!(scratch.segments(), names(&[9]));
}

#[test]
fn a_damaged_snapshot_file_is_an_error_and_a_leftover_temporary_is_ignored() {
    let scratch = Scratch::new("bad-snapshot");
    written(&scratch.0, 5, tiny());
    let (mut storage, _) = open(&scratch.0, tiny()).unwrap();
    storage.save_snapshot(&snapshot(4, 1)).unwrap();
    storage.close().unwrap();
    // A half-written replacement that was never renamed changes nothing.
    std::fs::write(scratch.path("snapshot.json.tmp"), b"{\"index\":9,\"ter").unwrap();
    let (_, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!(recovery.snapshot, Some(snapshot(4, 1)));
    assert!(!scratch.path("snapshot.json.tmp").exists());
    let path = scratch.path("snapshot.json");
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    flipped[12] ^= 0x01;
    for bad in [flipped, good[..good.len() - 3].to_vec()] {
        std::fs::write(&path, &bad).unwrap();
        let error = open(&scratch.0, tiny()).unwrap_err().to_string();
        assert!(error.contains("snapshot.json line 1"), "{error}");
    }
}

#[test]
fn partial_snapshots_resume_and_a_damaged_one_is_ignored() {
    let scratch = Scratch::new("partial");
    written(&scratch.0, 5, tiny());
    let whole = Snapshot {
        meta: SnapshotMeta { index: LogIndex(30), term: Term(2) },
        membership: Membership::voters_only([NodeId(1), NodeId(2)]),
        data: Bytes::from("hello world"),
    };
    let transfer = || (whole.meta, whole.membership.clone(), whole.data.len() as u64, whole.checksum());
    let (mut storage, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!(recovery.partial, None);
    storage.save_snapshot_chunk(transfer(), 0, b"hello").unwrap();
    storage.save_snapshot_chunk(transfer(), 5, b" wor").unwrap();
    storage.save_snapshot_chunk(transfer(), 3, b"XX").unwrap(); // not where the file ends: ignored
    storage.save_snapshot_chunk((whole.meta, whole.membership.clone(), 11, 1), 9, b"XX").unwrap(); // another transfer: ignored
    storage.save_snapshot_chunk(transfer(), 9, b"ld!").unwrap(); // past the total: ignored
    storage.close().unwrap();

    let (mut storage, recovery) = open(&scratch.0, tiny()).unwrap();
    let expected = PartialSnapshot {
        meta: whole.meta,
        membership: whole.membership.clone(),
        total: 11,
        checksum: whole.checksum(),
        data: b"hello wor".to_vec(),
    };
    assert_eq!(recovery.partial, Some(expected));
    storage.save_snapshot_chunk(transfer(), 9, b"ld").unwrap(); // resumes where it stopped
    storage.close().unwrap();
    let (mut storage, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!(recovery.partial.map(|partial| partial.data), Some(b"hello world".to_vec()));
    // Installing the snapshot removes the partial.
    storage.save_snapshot(&whole).unwrap();
    assert!(!scratch.path("snapshot.partial").exists());
    storage.close().unwrap();
    let (mut storage, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!((recovery.snapshot, recovery.partial), (Some(whole), None));

    // A torn header (the file is never synced): ignored with a warning, and removed.
    let next = SnapshotMeta { index: LogIndex(40), term: Term(3) };
    storage.save_snapshot_chunk((next, Membership::default(), 4, 9), 0, b"ab").unwrap();
    storage.close().unwrap();
    let path = scratch.path("snapshot.partial");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..10]).unwrap();
    let (_, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!(recovery.partial, None);
    assert!(recovery.warnings.iter().any(|w| w.contains("snapshot.partial")), "{:?}", recovery.warnings);
    assert!(!path.exists());
}
