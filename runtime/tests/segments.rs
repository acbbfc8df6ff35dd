//! The log in segments on real files: rolls, reads across segments, truncation into a sealed
//! segment, and recovery's verdict on missing or damaged segments.

mod common;

use common::*;
use replog_core::{Entry, LogIndex, Term};
use replog_runtime::fs::RealFs;
use replog_runtime::storage::{index_name, segment_name, Storage, StorageError, StorageOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn names(firsts: &[u64]) -> Vec<String> {
    firsts.iter().map(|&first| segment_name(LogIndex(first))).collect()
}

fn index_names(firsts: &[u64]) -> Vec<String> {
    firsts.iter().map(|&first| index_name(LogIndex(first))).collect()
}

#[test]
fn the_log_rolls_across_segments_and_reopens() {
    let scratch = Scratch::new("roll");
    let (mut storage, recovery) = open(&scratch.0, tiny()).unwrap();
    assert!(recovery.entries.is_empty());
    storage.save_hard_state(replog_core::HardState { term: Term(1), ..Default::default() }).unwrap();
    // Three records pass 200 bytes: the fourth entry starts a new segment, within one batch too.
    storage.append(&entries(1, 5, 1)).unwrap();
    storage.request_sync(true).unwrap();
    assert_eq!(storage.durable().unwrap().last, LogIndex(5));
    for index in 6..=20 {
        storage.append(&[entry(index, 1)]).unwrap();
        storage.request_sync(false).unwrap();
    }
    assert_eq!(scratch.segments(), names(&[1, 4, 7, 10, 13, 16, 19]));
    assert_eq!(storage.durable().unwrap().last, LogIndex(20));

    // Reads cross segments; the byte limit stops past it, and the first entry always comes.
    assert_eq!(storage.read_entries(LogIndex(2), LogIndex(17), u64::MAX).unwrap(), entries(2, 17, 1));
    assert_eq!(storage.read_entries(LogIndex(5), LogIndex(99), u64::MAX).unwrap(), entries(5, 20, 1));
    assert_eq!(storage.read_entries(LogIndex(2), LogIndex(17), 1).unwrap(), entries(2, 2, 1));
    let each = entry(2, 1).size_bytes();
    assert_eq!(storage.read_entries(LogIndex(2), LogIndex(17), 3 * each).unwrap().len(), 3);
    // Buffered entries are read too.
    storage.append(&[entry(21, 1)]).unwrap();
    assert_eq!(storage.read_entries(LogIndex(21), LogIndex(21), 0).unwrap(), entries(21, 21, 1));
    storage.close().unwrap();

    // Every sealed segment has its index; recovery hands on the last segment's entries.
    assert_eq!(scratch.indexes(), index_names(&[1, 4, 7, 10, 13, 16]));
    let (mut storage, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!(recovery.entries, entries(19, 21, 1));
    assert_eq!(all_entries(&mut storage), entries(1, 21, 1));
    assert_eq!((recovery.last_index, recovery.last_term), (LogIndex(21), Term(1)));
    assert!(recovery.warnings.is_empty(), "{:?}", recovery.warnings);
    assert_eq!((storage.first_index(), storage.last_index()), (LogIndex(1), LogIndex(21)));
    // Appends continue in the last segment, which rolls when full.
    storage.append(&entries(22, 23, 1)).unwrap();
    storage.close().unwrap();
    assert_eq!(scratch.segments(), names(&[1, 4, 7, 10, 13, 16, 19, 22]));
    // Other options read the same folder.
    let (mut storage, recovery) = open(&scratch.0, StorageOptions::default()).unwrap();
    assert_eq!(recovery.entries, entries(22, 23, 1));
    assert_eq!(all_entries(&mut storage), entries(1, 23, 1));
}

#[test]
fn a_roll_syncs_the_old_segment_and_background_syncs_go_on_in_the_new_one() {
    let scratch = Scratch::new("roll-background");
    let poll = mio::Poll::new().unwrap();
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(7)).unwrap());
    let (mut storage, _) = Storage::open_with_options(
        RealFs::with_background_sync(waker),
        &scratch.0,
        identity(),
        Default::default(),
        tiny(),
    )
    .unwrap();
    let wait = |storage: &mut Storage<RealFs>, seq: u64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while storage.durable().unwrap().seq < seq {
            assert!(Instant::now() < deadline, "sync never completed");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    storage.append(&entries(1, 3, 1)).unwrap();
    storage.request_sync(false).unwrap(); // in flight on the first segment
                                          // The fourth entry rolls: the first segment is synced inline, nothing stays in flight.
    storage.append(&[entry(4, 1)]).unwrap();
    assert_eq!(storage.durable().unwrap().last, LogIndex(3));
    let barrier = storage.barrier();
    storage.request_sync(false).unwrap();
    wait(&mut storage, barrier);
    assert_eq!(storage.durable().unwrap().last, LogIndex(4));
    assert_eq!(scratch.segments(), names(&[1, 4]));
    storage.close().unwrap();
}

#[test]
fn a_truncation_reaches_into_a_sealed_segment() {
    let scratch = Scratch::new("truncate-sealed");
    written(&scratch.0, 10, tiny());
    assert_eq!(scratch.segments(), names(&[1, 4, 7, 10]));
    let (mut storage, _) = open(&scratch.0, tiny()).unwrap();
    // Entries 5.. go: the segments after the one holding 5 are removed, that one is cut.
    storage.truncate(LogIndex(5)).unwrap();
    assert_eq!(scratch.segments(), names(&[1, 4]));
    assert_eq!((storage.last_index(), storage.durable().unwrap().last), (LogIndex(4), LogIndex(4)));
    storage.append(&entries(5, 8, 2)).unwrap();
    storage.request_sync(true).unwrap();
    assert_eq!(storage.durable().unwrap().last, LogIndex(8));
    assert_eq!(scratch.segments(), names(&[1, 4, 7]));
    // A truncation at a sealed segment's first entry empties it.
    storage.truncate(LogIndex(4)).unwrap();
    assert_eq!(scratch.segments(), names(&[1, 4]));
    storage.append(&entries(4, 5, 3)).unwrap();
    storage.close().unwrap();

    let (mut storage, recovery) = open(&scratch.0, tiny()).unwrap();
    let expected: Vec<Entry> = entries(1, 3, 1).into_iter().chain(entries(4, 5, 3)).collect();
    assert_eq!(all_entries(&mut storage), expected);
    assert_eq!(recovery.entries, entries(4, 5, 3));
    assert_eq!(recovery.term_runs, vec![(LogIndex(1), Term(1)), (LogIndex(4), Term(3))]);
    assert!(recovery.warnings.is_empty(), "{:?}", recovery.warnings);
}

#[test]
fn a_missing_segment_is_an_error_naming_the_range_and_files() {
    let scratch = Scratch::new("missing");
    written(&scratch.0, 10, tiny());
    std::fs::remove_file(scratch.path(&segment_name(LogIndex(4)))).unwrap();
    let error = open(&scratch.0, tiny()).unwrap_err().to_string();
    assert!(error.contains("entries 4..=6 are missing"), "{error}");
    assert!(
        error.contains(&segment_name(LogIndex(1))) && error.contains(&segment_name(LogIndex(7))),
        "{error}"
    );
    assert_eq!(scratch.segments(), names(&[1, 7, 10]), "a refused start changes nothing");
    // With --repair the log is cut at the gap and the rest comes from the leader.
    let (_, recovery) = open_repair(&scratch.0, tiny()).unwrap();
    assert_eq!((recovery.entries, recovery.repair_to), (entries(1, 3, 1), LogIndex(4)));
    assert!(recovery.warnings.iter().any(|w| w.contains("--repair")), "{:?}", recovery.warnings);
    assert_eq!(scratch.segments(), names(&[1]));
    assert!(scratch.indexes().is_empty(), "the active segment and removed ones have no index");
}

#[test]
fn a_bad_record_in_a_sealed_segment_is_an_error_naming_the_file_and_line() {
    let scratch = Scratch::new("corrupt-sealed");
    written(&scratch.0, 10, tiny());
    let sealed = scratch.path(&segment_name(LogIndex(4)));
    let good = std::fs::read(&sealed).unwrap();
    let second_line = good.iter().position(|&b| b == b'\n').unwrap() + 10;
    let mut flipped = good.clone();
    flipped[second_line] ^= 0x01;
    std::fs::write(&sealed, &flipped).unwrap();
    // Its index still holds (same length, same last record): recovery does not read the
    // segment, a read of the damaged entry finds it, naming the file and line.
    let (mut storage, _) = open(&scratch.0, tiny()).unwrap();
    assert_eq!(storage.read_entries(LogIndex(1), LogIndex(4), u64::MAX).unwrap(), entries(1, 4, 1));
    assert_eq!(storage.read_entries(LogIndex(6), LogIndex(10), u64::MAX).unwrap(), entries(6, 10, 1));
    for from in [1, 4, 5] {
        let error = storage.read_entries(LogIndex(from), LogIndex(10), u64::MAX).unwrap_err();
        let StorageError::Corrupt { path, line, .. } = &error else { panic!("{error}") };
        assert_eq!((path, *line), (&sealed, 2), "{error}");
    }
    storage.close().unwrap();
    // Without the index, recovery reads the segment and refuses.
    std::fs::remove_file(scratch.path(&index_name(LogIndex(4)))).unwrap();
    let error = open(&scratch.0, tiny()).unwrap_err().to_string();
    assert!(error.contains(&format!("{} line 2", segment_name(LogIndex(4)))), "{error}");
    // An unfinished last record is a torn write only in the last segment: a sealed one was
    // synced whole before the next one began.
    std::fs::write(&sealed, &good[..good.len() - 5]).unwrap();
    let error = open(&scratch.0, tiny()).unwrap_err().to_string();
    assert!(error.contains(&format!("{} line 3", segment_name(LogIndex(4)))), "{error}");
    // With --repair: cut at the damage, the later segments removed.
    std::fs::write(&sealed, &flipped).unwrap();
    let (mut storage, recovery) = open_repair(&scratch.0, tiny()).unwrap();
    assert_eq!((recovery.entries, recovery.repair_to), (entries(4, 4, 1), LogIndex(5)));
    assert_eq!(all_entries(&mut storage), entries(1, 4, 1));
    assert_eq!(scratch.segments(), names(&[1, 4]));
    assert_eq!(scratch.indexes(), index_names(&[1]));
}

#[test]
fn a_torn_tail_of_the_last_segment_is_cut() {
    let scratch = Scratch::new("torn-last");
    written(&scratch.0, 11, tiny());
    let last = scratch.path(&segment_name(LogIndex(10)));
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() - 5]).unwrap();
    let (mut storage, recovery) = open(&scratch.0, tiny()).unwrap();
    assert_eq!(recovery.entries, entries(10, 10, 1));
    assert_eq!(all_entries(&mut storage), entries(1, 10, 1));
    assert_eq!(recovery.warnings.len(), 1, "{:?}", recovery.warnings);
    assert!(recovery.warnings[0].contains("torn"), "{:?}", recovery.warnings);
}

#[test]
fn an_old_log_jsonl_opens_as_the_first_segment() {
    let scratch = Scratch::new("legacy");
    written(&scratch.0, 5, StorageOptions::default());
    std::fs::rename(scratch.path(&first_segment()), scratch.path("log.jsonl")).unwrap();
    let (storage, recovery) = open(&scratch.0, StorageOptions::default()).unwrap();
    assert_eq!(recovery.entries, entries(1, 5, 1));
    assert_eq!(scratch.segments(), vec![first_segment()]);
    assert!(!scratch.path("log.jsonl").exists());
    drop(storage);
    // Both at once: which one holds the log is unclear.
    std::fs::copy(scratch.path(&first_segment()), scratch.path("log.jsonl")).unwrap();
    let error = open(&scratch.0, StorageOptions::default()).unwrap_err().to_string();
    assert!(error.contains("log.jsonl") && error.contains("unclear"), "{error}");
}
