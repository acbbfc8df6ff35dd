//! Segment indexes on real files: written when a segment is sealed, read at recovery instead of
//! the segment, rebuilt when missing, damaged or another segment's; ranged reads across
//! segments, mark intervals, the active segment and the write buffer; and the log's term runs,
//! no-ops and entry bytes as recovery reports them after rolls, truncations and snapshots.

mod common;

use common::*;
use replog_core::{Bytes, Entry, HardState, LogIndex, Payload, Snapshot, SnapshotMeta, Term};
use replog_runtime::fs::{FileSystem, RealFs, RealLog};
use replog_runtime::storage::{
    index_name, segment_name, Identity, OnCorruption, Recovery, Storage, StorageOptions, INDEX_STRIDE,
};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::rc::Rc;

/// Real files, counting the bytes read from each file (whole reads and ranged ones apart).
#[derive(Debug, Default, Clone)]
struct CountingFs {
    real: Rc<RefCell<RealFs>>,
    read: Rc<RefCell<BTreeMap<String, Counted>>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counted {
    whole_bytes: u64,
    ranged_bytes: u64,
}

impl CountingFs {
    fn count(&self, path: &Path, bytes: usize, whole: bool) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let mut read = self.read.borrow_mut();
        let counted = read.entry(name).or_default();
        if whole {
            counted.whole_bytes += bytes as u64;
        } else {
            counted.ranged_bytes += bytes as u64;
        }
    }

    fn counted(&self, name: &str) -> Counted {
        self.read.borrow().get(name).copied().unwrap_or_default()
    }

    fn forget(&self) {
        self.read.borrow_mut().clear();
    }
}

impl FileSystem for CountingFs {
    type Log = RealLog;

    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
        self.real.borrow_mut().create_dir_all(dir)
    }
    fn exists(&mut self, path: &Path) -> bool {
        self.real.borrow_mut().exists(path)
    }
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        let bytes = self.real.borrow_mut().read(path)?;
        self.count(path, bytes.len(), true);
        Ok(bytes)
    }
    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let bytes = self.real.borrow_mut().read_at(path, offset, len)?;
        self.count(path, bytes.len(), false);
        Ok(bytes)
    }
    fn file_len(&mut self, path: &Path) -> io::Result<u64> {
        self.real.borrow_mut().file_len(path)
    }
    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.real.borrow_mut().write_file(path, bytes)
    }
    fn append_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.real.borrow_mut().append_file(path, bytes)
    }
    fn sync_file(&mut self, path: &Path) -> io::Result<()> {
        self.real.borrow_mut().sync_file(path)
    }
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.real.borrow_mut().rename(from, to)
    }
    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        self.real.borrow_mut().remove_file(path)
    }
    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        self.real.borrow_mut().list_dir(dir)
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.real.borrow_mut().sync_dir(dir)
    }
    fn open_log(&mut self, path: &Path) -> io::Result<RealLog> {
        self.real.borrow_mut().open_log(path)
    }
}

/// Segments of about 700 records (a record here is about 75 bytes): several mark intervals
/// each.
fn medium() -> StorageOptions {
    StorageOptions { segment_bytes_max: 50_000 }
}

fn open_counting(fs: &CountingFs, dir: &Path) -> (Storage<CountingFs>, Recovery) {
    let identity = Identity { name: "node1".into(), address: "127.0.0.1:8080".into() };
    Storage::open_with_options(fs.clone(), dir, identity, OnCorruption::Refuse, medium()).unwrap()
}

/// Entry `index` of `term`: a no-op if `noop`, else a command.
fn entry_of(index: u64, term: u64, noop: bool) -> Entry {
    if noop {
        Entry { index: LogIndex(index), term: Term(term), payload: Payload::Noop }
    } else {
        entry(index, term)
    }
}

/// What recovery should report of `log` (the log after the snapshot, `snapshot` its meta).
fn check_recovery(recovery: &Recovery, log: &[Entry], snapshot: Option<SnapshotMeta>) {
    let mut runs: Vec<(LogIndex, Term)> = Vec::new();
    for entry in log {
        if runs.last().is_none_or(|&(_, term)| term != entry.term) {
            runs.push((entry.index, entry.term));
        }
    }
    assert_eq!(recovery.term_runs, runs);
    let noops: Vec<LogIndex> = log.iter().filter(|e| e.payload == Payload::Noop).map(|e| e.index).collect();
    assert_eq!(recovery.noops, noops);
    assert_eq!(recovery.entry_bytes, log.iter().map(Entry::size_bytes).sum::<u64>());
    let snapshot = snapshot.map(|meta| (meta.index, meta.term)).unwrap_or_default();
    let last = log.last().map_or(snapshot, |entry| (entry.index, entry.term));
    assert_eq!((recovery.last_index, recovery.last_term), last);
    assert_eq!(recovery.entries, log[log.len() - recovery.entries.len()..]);
}

/// A folder holding entries 1..=`last` of term 1 in `medium` segments, closed cleanly.
fn written_medium(dir: &Path, last: u64) -> Vec<Entry> {
    let (mut storage, _) = open(dir, medium()).unwrap();
    storage.save_hard_state(HardState { term: Term(1), ..Default::default() }).unwrap();
    let log = entries(1, last, 1);
    for batch in log.chunks(100) {
        storage.append(batch).unwrap();
    }
    storage.close().unwrap();
    log
}

#[test]
fn recovery_reads_the_indexes_not_the_sealed_segments() {
    let scratch = Scratch::new("index-used");
    let log = written_medium(&scratch.0, 3000);
    let segments = scratch.segments();
    assert!(segments.len() >= 4, "{segments:?}");
    let sealed = &segments[..segments.len() - 1];
    assert_eq!(scratch.indexes().len(), sealed.len(), "every sealed segment has its index");

    let fs = CountingFs::default();
    let (mut storage, recovery) = open_counting(&fs, &scratch.0);
    check_recovery(&recovery, &log, None);
    for name in sealed {
        let counted = fs.counted(name);
        assert_eq!(counted.whole_bytes, 0, "{name} is not read whole");
        assert!(counted.ranged_bytes < 200, "{name}: only its last record is read: {counted:?}");
    }
    let last = segments.last().unwrap();
    let last_bytes = std::fs::metadata(scratch.path(last)).unwrap().len();
    assert_eq!(fs.counted(last).whole_bytes, last_bytes, "the last segment is read record by record");
    // Reads come from the files, ranged.
    fs.forget();
    assert_eq!(storage.read_entries(LogIndex(1000), LogIndex(1000), 0).unwrap(), log[999..1000]);
    let read: u64 = segments.iter().map(|name| fs.counted(name).ranged_bytes).sum();
    assert!(read <= INDEX_STRIDE * 80, "one entry reads at most a mark interval: {read} bytes");
    assert_eq!(all_entries(&mut storage), log);
    storage.close().unwrap();

    // Without their indexes, the sealed segments are read whole, and the indexes written again.
    let indexes: Vec<(String, Vec<u8>)> = scratch
        .indexes()
        .into_iter()
        .map(|name| (name.clone(), std::fs::read(scratch.path(&name)).unwrap()))
        .collect();
    for (name, _) in &indexes {
        std::fs::remove_file(scratch.path(name)).unwrap();
    }
    fs.forget();
    let (mut storage, recovery) = open_counting(&fs, &scratch.0);
    check_recovery(&recovery, &log, None);
    for name in sealed {
        let bytes = std::fs::metadata(scratch.path(name)).unwrap().len();
        assert_eq!(fs.counted(name).whole_bytes, bytes, "{name} is read whole");
    }
    for (name, bytes) in &indexes {
        assert_eq!(&std::fs::read(scratch.path(name)).unwrap(), bytes, "{name} is written again, the same");
    }
    assert_eq!(all_entries(&mut storage), log);
}

#[test]
fn a_damaged_or_foreign_index_is_rebuilt() {
    let scratch = Scratch::new("index-damaged");
    let log = written_medium(&scratch.0, 2500);
    let target = scratch.segments()[1].clone();
    let target_index = scratch.path(&index_name(scratch_first(&target)));
    let good = std::fs::read(&target_index).unwrap();
    let other = std::fs::read(scratch.path(&scratch.indexes()[0])).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x04;
    let damages: [(&str, Vec<u8>); 4] = [
        ("cut short", good[..good.len() - 7].to_vec()),
        ("flipped", flipped),
        ("another segment's", other),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damages {
        std::fs::write(&target_index, &bytes).unwrap();
        let fs = CountingFs::default();
        let (mut storage, recovery) = open_counting(&fs, &scratch.0);
        check_recovery(&recovery, &log, None);
        assert!(recovery.warnings.is_empty(), "{what}: an index is a cache: {:?}", recovery.warnings);
        let target_bytes = std::fs::metadata(scratch.path(&target)).unwrap().len();
        assert_eq!(fs.counted(&target).whole_bytes, target_bytes, "{what}: the segment is read whole");
        assert_eq!(std::fs::read(&target_index).unwrap(), good, "{what}: the index is written again");
        assert_eq!(all_entries(&mut storage), log, "{what}");
    }
}

/// The first index a segment's name gives.
fn scratch_first(name: &str) -> LogIndex {
    replog_runtime::storage::parse_segment_name(name).unwrap()
}

/// An index file's fields, as JSON.
fn index_fields(bytes: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let line = std::str::from_utf8(bytes).unwrap().trim_end();
    let serde_json::Value::Object(fields) = serde_json::from_str(line).unwrap() else { panic!("{line}") };
    fields
}

/// An index file holding `fields`, with a good checksum.
fn index_file(mut fields: serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    fields.remove("crc");
    let mut text = serde_json::to_string(&fields).unwrap();
    text.pop(); // the closing brace
    let crc = crc32fast::hash(text.as_bytes());
    format!("{text},\"crc\":{crc}}}\n").into_bytes()
}

#[test]
fn an_index_of_what_a_segment_held_before_is_not_taken_for_it() {
    // A sealed segment is written again (a truncation reached into it, and a new term's
    // entries replaced the old ones). An index of its old contents, whose checksum holds and
    // which names the segment's present length, is still not taken for it: the last record
    // it names is not the segment's.
    let scratch = Scratch::new("index-stale");
    written_medium(&scratch.0, 2000);
    let second = scratch_first(&scratch.segments()[1]);
    let stale = std::fs::read(scratch.path(&index_name(second))).unwrap();
    let (mut storage, _) = open(&scratch.0, medium()).unwrap();
    storage.save_hard_state(HardState { term: Term(2), ..Default::default() }).unwrap();
    storage.truncate(LogIndex(second.0 + 10)).unwrap();
    assert!(!scratch.path(&index_name(second)).exists(), "a segment active again has no index");
    storage.append(&entries(second.0 + 10, 2000, 2)).unwrap();
    storage.close().unwrap();
    let fresh = std::fs::read(scratch.path(&index_name(second))).unwrap();
    let mut fields = index_fields(&stale);
    assert_eq!(fields["first"], index_fields(&fresh)["first"]);
    assert_ne!(fields["terms"], index_fields(&fresh)["terms"]);
    fields.insert("bytes".into(), index_fields(&fresh)["bytes"].clone());
    std::fs::write(scratch.path(&index_name(second)), index_file(fields)).unwrap();
    let (mut storage, recovery) = open(&scratch.0, medium()).unwrap();
    let log: Vec<Entry> =
        entries(1, second.0 + 9, 1).into_iter().chain(entries(second.0 + 10, 2000, 2)).collect();
    check_recovery(&recovery, &log, None);
    assert_eq!(all_entries(&mut storage), log);
    assert_eq!(std::fs::read(scratch.path(&index_name(second))).unwrap(), fresh, "written again");
    // The same file with the fresh index's fields is taken (the test's file is well made).
    drop(storage);
    std::fs::write(scratch.path(&index_name(second)), index_file(index_fields(&fresh))).unwrap();
    let fs = CountingFs::default();
    let (_, recovery) = open_counting(&fs, &scratch.0);
    check_recovery(&recovery, &log, None);
    assert_eq!(fs.counted(&segment_name(second)).whole_bytes, 0);
}

#[test]
fn reads_cross_segments_mark_intervals_the_active_segment_and_the_buffer() {
    let scratch = Scratch::new("index-reads");
    let (mut storage, _) = open(&scratch.0, medium()).unwrap();
    storage.save_hard_state(HardState { term: Term(1), ..Default::default() }).unwrap();
    let log: Vec<Entry> = (1..=2600).map(|i| entry_of(i, 1 + i / 1000, i % 1000 == 0)).collect();
    storage.append(&log[..2500]).unwrap();
    storage.request_sync(true).unwrap();
    storage.append(&log[2500..]).unwrap(); // buffered, not yet handed to the OS
    assert!(scratch.segments().len() >= 4);
    let mut rng = 12345u64;
    let mut random = |below: u64| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng >> 33) % below
    };
    for _ in 0..300 {
        let from = 1 + random(2600);
        let to = from + random(900);
        let bytes_max = [0, 1, 500, 20_000, u64::MAX][random(5) as usize];
        let read = storage.read_entries(LogIndex(from), LogIndex(to), bytes_max).unwrap();
        let mut expected = Vec::new();
        let mut bytes = 0;
        for entry in &log[(from - 1) as usize..to.min(2600) as usize] {
            bytes += entry.size_bytes();
            if !expected.is_empty() && bytes > bytes_max {
                break;
            }
            expected.push(entry.clone());
        }
        assert_eq!(read, expected, "{from}..={to} within {bytes_max}");
    }
    storage.close().unwrap();
    let (mut storage, recovery) = open(&scratch.0, medium()).unwrap();
    check_recovery(&recovery, &log, None);
    assert_eq!(all_entries(&mut storage), log);
}

#[test]
fn term_runs_noops_and_entry_bytes_follow_rolls_truncations_and_snapshots() {
    let scratch = Scratch::new("index-tally");
    let (mut storage, _) = open(&scratch.0, medium()).unwrap();
    // Terms 1..=4, each starting with a leader's no-op, across several segments.
    let mut log: Vec<Entry> = Vec::new();
    for (term, last) in [(1, 900), (2, 1500), (3, 2300), (4, 3000)] {
        storage.save_hard_state(HardState { term: Term(term), ..Default::default() }).unwrap();
        let first = log.len() as u64 + 1;
        let batch: Vec<Entry> = (first..=last).map(|i| entry_of(i, term, i == first)).collect();
        storage.append(&batch).unwrap();
        log.extend(batch);
    }
    storage.close().unwrap();
    let (mut storage, recovery) = open(&scratch.0, medium()).unwrap();
    check_recovery(&recovery, &log, None);

    // A truncation into a sealed segment, then a new term.
    let second = scratch_first(&scratch.segments()[1]).0;
    let cut = second + 300;
    storage.save_hard_state(HardState { term: Term(5), ..Default::default() }).unwrap();
    storage.truncate(LogIndex(cut)).unwrap();
    log.truncate((cut - 1) as usize);
    let batch: Vec<Entry> = (cut..=cut + 1200).map(|i| entry_of(i, 5, i == cut)).collect();
    storage.append(&batch).unwrap();
    log.extend(batch);
    storage.close().unwrap();
    let (mut storage, recovery) = open(&scratch.0, medium()).unwrap();
    check_recovery(&recovery, &log, None);
    assert_eq!(all_entries(&mut storage), log);

    // A snapshot ending inside a sealed segment's later mark interval: the entry bytes after it
    // come from that interval's records and the index.
    let third = scratch_first(&scratch.segments()[2]).0;
    let at = third + INDEX_STRIDE + 17;
    let meta = SnapshotMeta { index: LogIndex(at), term: log[(at - 1) as usize].term };
    storage
        .save_snapshot(&Snapshot { meta, membership: Default::default(), data: Bytes::from("state") })
        .unwrap();
    storage.close().unwrap();
    let after: Vec<Entry> = log[at as usize..].to_vec();
    let (mut storage, recovery) = open(&scratch.0, medium()).unwrap();
    check_recovery(&recovery, &after, Some(meta));
    assert_eq!(all_entries(&mut storage), after);
    drop(storage);
    // The same without indexes.
    for name in scratch.indexes() {
        std::fs::remove_file(scratch.path(&name)).unwrap();
    }
    let (mut storage, recovery) = open(&scratch.0, medium()).unwrap();
    check_recovery(&recovery, &after, Some(meta));
    assert_eq!(all_entries(&mut storage), after);

    // A snapshot at the log's end: the log after it is empty.
    let end = SnapshotMeta { index: storage.last_index(), term: after.last().unwrap().term };
    storage
        .save_snapshot(&Snapshot { meta: end, membership: Default::default(), data: Bytes::from("all") })
        .unwrap();
    storage.close().unwrap();
    let (_, recovery) = open(&scratch.0, medium()).unwrap();
    check_recovery(&recovery, &[], Some(end));
    assert!(scratch.indexes().is_empty());
}

#[test]
fn a_crash_right_after_a_roll_leaves_an_empty_last_segment() {
    let scratch = Scratch::new("index-empty-last");
    let log = written_medium(&scratch.0, 1000);
    // The roll made the new segment's name durable; nothing was written to it yet.
    let segments = scratch.segments();
    let last = segments.last().unwrap();
    let next = LogIndex(1001);
    std::fs::write(scratch.path(&segment_name(next)), b"").unwrap();
    let (mut storage, recovery) = open(&scratch.0, medium()).unwrap();
    assert!(recovery.entries.is_empty(), "the last segment holds no entries");
    check_recovery(&recovery, &log, None);
    assert_eq!(all_entries(&mut storage), log);
    assert!(scratch.path(&index_name(scratch_first(last))).exists(), "the segment before it is sealed");
}
