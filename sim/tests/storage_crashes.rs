//! The runtime's storage on the simulated disk, without the core: random appends, syncs,
//! truncations (into sealed segments too), snapshots (held and installed over the log), term
//! changes, failed fsyncs (the node stops there) and crashes with torn writes; and, while the
//! node is down, segment indexes (`.idx`) removed, cut short, flipped or swapped. After every
//! crash:
//! - recovery never refuses (no injected damage to the log: a crash alone, or a damaged index,
//!   must never look like one);
//! - it finds what the disk's durable view (the simulator's checker input) says it would: the
//!   same log read back with `read_entries` (whole and in random ranges with byte limits), the
//!   last segment's entries as a suffix of it, and its term runs, no-ops, entry bytes and last
//!   entry;
//! - it keeps every entry the storage called durable before the crash, unless a snapshot
//!   replaced it (checked in lives that ended without a failed fsync).
//!
//! And after every operation the durable view, kept up to date incrementally, equals one built
//! from scratch.

use rand::RngExt;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use replog_core::{Bytes, Entry, HardState, LogIndex, Membership, Payload, Snapshot, SnapshotMeta, Term};
use replog_runtime::storage::{Identity, OnCorruption, Recovery, Storage, StorageError, StorageOptions};
use sim::disk::{SimDisk, SimFs, DATA_DIR};
use std::path::Path;

fn entry(index: LogIndex, term: Term, tag: u64) -> Entry {
    let data = format!("{}/{}/{tag}", index.0, term.0);
    Entry { index, term, payload: Payload::Command(Bytes::from(data.as_str())) }
}

/// Every fifth tag is a leader's no-op.
fn noop_or_entry(index: LogIndex, term: Term, tag: u64) -> Entry {
    if tag % 5 == 0 {
        Entry { index, term, payload: Payload::Noop }
    } else {
        entry(index, term, tag)
    }
}

/// Checks what recovery handed on against `log`, the whole log after the snapshot as the
/// durable view holds it (and read back from the files).
fn check_recovery(recovery: &Recovery, log: &[Entry], context: &str) {
    let suffix = &log[log.len() - recovery.entries.len()..];
    assert_eq!(recovery.entries, suffix, "{context}: the entries handed on end the log");
    let mut runs: Vec<(LogIndex, Term)> = Vec::new();
    for entry in log {
        if runs.last().is_none_or(|&(_, term)| term != entry.term) {
            runs.push((entry.index, entry.term));
        }
    }
    assert_eq!(recovery.term_runs, runs, "{context}: term runs");
    let noops: Vec<LogIndex> = log.iter().filter(|e| e.payload == Payload::Noop).map(|e| e.index).collect();
    assert_eq!(recovery.noops, noops, "{context}: no-ops");
    assert_eq!(recovery.entry_bytes, log.iter().map(Entry::size_bytes).sum::<u64>(), "{context}: bytes");
    let snapshot = recovery.snapshot.as_ref().map(|s| (s.meta.term, s.meta.index));
    let last = log.last().map(|e| (e.term, e.index)).or(snapshot).unwrap_or((Term::ZERO, LogIndex::ZERO));
    assert_eq!((recovery.last_term, recovery.last_index), last, "{context}: last entry");
}

/// Random ranged reads with byte limits: each is the longest run of `log` from its start that
/// fits the limit (the first entry always comes).
fn check_reads(storage: &mut Storage<SimFs>, log: &[Entry], rng: &mut ChaCha8Rng, context: &str) {
    if log.is_empty() {
        return;
    }
    let first = log[0].index;
    for _ in 0..8 {
        let from = rng.random_range(0..log.len());
        let to = rng.random_range(from..log.len() + 2);
        let bytes_max = [0, 100, 1000, u64::MAX][rng.random_range(0..4usize)];
        let read = storage.read_entries(log[from].index, first.plus(to as u64), bytes_max).unwrap();
        let mut expected = Vec::new();
        let mut bytes = 0;
        for entry in &log[from..log.len().min(to + 1)] {
            bytes += entry.size_bytes();
            if !expected.is_empty() && bytes > bytes_max {
                break;
            }
            expected.push(entry.clone());
        }
        assert_eq!(read, expected, "{context}: read {from}..={to} within {bytes_max} bytes");
    }
}

/// Opens the storage after a crash; `None` if an fsync failed during start-up (the disk then
/// crashes again).
fn open(
    disk: &SimDisk,
    segment_bytes_max: u64,
    rng: &mut ChaCha8Rng,
) -> (Storage<SimFs>, replog_runtime::storage::Recovery) {
    loop {
        let identity = Identity { name: "n1".into(), address: "sim:1".into() };
        let options = StorageOptions { segment_bytes_max };
        let fs = SimFs::new(disk);
        match Storage::open_with_options(fs, Path::new(DATA_DIR), identity, OnCorruption::Refuse, options) {
            Ok(opened) => return opened,
            Err(_) if disk.has_failed_sync() => {
                disk.crash(rng);
            }
            Err(error) => panic!("recovery after a crash refused: {error}"),
        }
    }
}

fn save_term(storage: &mut Storage<SimFs>, term: Term) -> Result<(), StorageError> {
    storage.save_hard_state(HardState { term, voted_for: None, commit: LogIndex::ZERO })
}

#[test]
fn recovery_after_any_crash_matches_the_durable_view_and_keeps_what_was_durable() {
    for seed in 0..1000 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let disk = SimDisk::new(ChaCha8Rng::seed_from_u64(seed + 1_000_000), 0.03, 0.5);
        let segment_bytes_max = [100, 300, 1000][rng.random_range(0..3usize)];
        let mut term = Term(1);
        let mut tag = 0;
        // What the storage called durable before the crash: (snapshot, entries through durable).
        let mut promised: Option<(Option<SnapshotMeta>, Vec<Entry>)> = None;
        for _life in 0..8 {
            let (mut storage, recovery) = open(&disk, segment_bytes_max, &mut rng);
            let view = disk.durable_log();
            let context = format!("seed {seed}");
            assert_eq!(recovery.snapshot.as_ref().map(|s| s.meta), view.snapshot(), "{context}");
            let log = view.entries().cloned().collect::<Vec<_>>();
            drop(view);
            let (first, last) = (storage.first_index(), storage.last_index());
            assert_eq!(storage.read_entries(first, last, u64::MAX).unwrap(), log, "{context}");
            check_recovery(&recovery, &log, &context);
            check_reads(&mut storage, &log, &mut rng, &context);
            if let Some((snapshot, durable)) = promised.take() {
                let recovered_snapshot = recovery.snapshot.as_ref().map(|s| s.meta);
                let index = |meta: Option<SnapshotMeta>| meta.map(|s| s.index);
                assert!(index(recovered_snapshot) >= index(snapshot), "{context}: the snapshot went back");
                let covered = recovered_snapshot.map_or(LogIndex::ZERO, |s| s.index);
                for entry in durable.iter().filter(|e| e.index > covered) {
                    let at = (entry.index.0 - covered.0 - 1) as usize;
                    assert_eq!(log.get(at), Some(entry), "{context}: a durable entry was lost");
                }
            }
            term = term.max(recovery.hard_state.term).next();
            let mut ended = save_term(&mut storage, term);
            for _ in 0..rng.random_range(1..60) {
                if ended.is_err() {
                    break; // a failed fsync stops the node
                }
                ended = match rng.random_range(0..20) {
                    0..=9 => {
                        let count = rng.random_range(1..=3);
                        let next = storage.last_index().next();
                        let batch: Vec<Entry> = (0..count)
                            .map(|i| {
                                tag += 1;
                                noop_or_entry(next.plus(i), term, tag)
                            })
                            .collect();
                        storage.append(&batch)
                    }
                    10..=12 => storage.request_sync(rng.random_bool(0.5)),
                    13 => {
                        if let Some(upto) = disk.requested() {
                            disk.complete_syncs(upto);
                        }
                        storage.durable().map(drop)
                    }
                    14 | 15 => {
                        let (first, last) = (storage.first_index(), storage.last_index());
                        if first <= last {
                            storage.truncate(LogIndex(rng.random_range(first.0..=last.0)))
                        } else {
                            Ok(())
                        }
                    }
                    16 | 17 => {
                        // A snapshot of the log's own entry (compaction).
                        let (first, last) = (storage.first_index(), storage.last_index());
                        if first <= last {
                            let index = LogIndex(rng.random_range(first.0..=last.0));
                            storage.read_entries(index, index, 0).and_then(|read| {
                                let meta = SnapshotMeta { index, term: read[0].term };
                                let data = Bytes::from(format!("through {}", index.0).as_str());
                                storage.save_snapshot(&Snapshot {
                                    meta,
                                    membership: Membership::default(),
                                    data,
                                })
                            })
                        } else {
                            Ok(())
                        }
                    }
                    18 => {
                        // A leader's snapshot the log does not hold: a later term, at an entry
                        // of the log or past its end.
                        term = term.next();
                        let (first, last) = (storage.first_index(), storage.last_index());
                        let index = LogIndex(rng.random_range(first.0..=last.0 + 3));
                        let meta = SnapshotMeta { index, term };
                        save_term(&mut storage, term).and_then(|()| {
                            storage.save_snapshot(&Snapshot {
                                meta,
                                membership: Membership::default(),
                                data: Bytes::from("installed"),
                            })
                        })
                    }
                    _ => {
                        term = term.next();
                        save_term(&mut storage, term)
                    }
                };
                disk.check_durable_view();
            }
            if let (Ok(()), Ok(durable)) = (&ended, storage.durable()) {
                let durable = durable.last;
                let snapshot = storage.snapshot().copied();
                let from = storage.first_index();
                let kept = if durable >= from {
                    storage.read_entries(from, durable, u64::MAX).unwrap()
                } else {
                    Vec::new()
                };
                promised = Some((snapshot, kept));
            } else {
                assert!(disk.has_failed_sync(), "seed {seed}: {ended:?}");
            }
            drop(storage);
            disk.crash(&mut rng);
            if rng.random_bool(0.3) {
                disk.damage_indexes(&mut rng);
            }
        }
    }
}
