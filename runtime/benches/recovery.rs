//! Start-up cost against log length: builds a data folder of N entries of 100-byte commands
//! with the storage API (64 MiB segments, the default), then opens it in a fresh process and
//! reports how long `Storage::open` took and how much resident memory the process gained
//! (`VmRSS` after minus before, and the peak `VmHWM`), with the segment indexes and without
//! them (recovery then reads every segment whole and writes the indexes again). Also times a
//! read of 1,000 old entries. The files are warm in the page cache (just written).
//!
//! `cargo bench -p replog-runtime --bench recovery` runs N = 100,000 (a few seconds). The
//! figures of issue 9, by hand (10M takes ~1.3 GB in the temporary folder, removed after):
//! `cargo bench -p replog-runtime --bench recovery -- 1000000 10000000`

use replog_core::{Bytes, Entry, HardState, LogIndex, Payload, Term};
use replog_runtime::fs::RealFs;
use replog_runtime::storage::{parse_index_name, Identity, Storage};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const ENTRIES_DEFAULT: u64 = 100_000;
const DATA_BYTES: usize = 100;
const BATCH: u64 = 10_000;
const CHILD: &str = "--open-child";

fn identity() -> Identity {
    Identity { name: "bench".into(), address: "127.0.0.1:1".into() }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CHILD) {
        return open_and_report(Path::new(&args[1]));
    }
    // `cargo bench` passes `--bench`; numbers are entry counts.
    let mut counts: Vec<u64> = args.iter().filter_map(|arg| arg.parse().ok()).collect();
    if counts.is_empty() {
        counts.push(ENTRIES_DEFAULT);
    }
    for count in counts {
        let dir = std::env::temp_dir().join(format!("replog-recovery-bench-{}-{count}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let began = Instant::now();
        let bytes = build(&dir, count);
        println!(
            "{count} entries: {:.0} MiB in {} segments, written in {:.1} s",
            bytes as f64 / (1024.0 * 1024.0),
            segment_count(&dir),
            began.elapsed().as_secs_f64()
        );
        println!("  with indexes:    {}", open_in_child(&dir));
        remove_indexes(&dir);
        println!("  without indexes: {}", open_in_child(&dir));
        println!("  indexes again:   {}", open_in_child(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Writes entries 1..=count of term 1, synced per batch; returns the log's bytes on disk.
fn build(dir: &Path, count: u64) -> u64 {
    let (mut storage, _) = Storage::open(RealFs::new(), dir, identity()).expect("storage");
    storage.save_hard_state(HardState { term: Term(1), voted_for: None, commit: LogIndex(0) }).expect("meta");
    let data = Bytes::from(vec![b'x'; DATA_BYTES]);
    let mut next = 1;
    while next <= count {
        let last = (next + BATCH - 1).min(count);
        let batch: Vec<Entry> = (next..=last)
            .map(|index| Entry {
                index: LogIndex(index),
                term: Term(1),
                payload: Payload::Command(data.clone()),
            })
            .collect();
        storage.append(&batch).expect("append");
        storage.request_sync(true).expect("sync");
        next = last + 1;
    }
    let commit = LogIndex(count);
    storage.save_hard_state(HardState { term: Term(1), voted_for: None, commit }).expect("meta");
    storage.close().expect("close");
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").metadata().expect("meta").len())
        .sum()
}

fn segment_count(dir: &Path) -> usize {
    names(dir).iter().filter(|name| name.ends_with(".jsonl")).count()
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name().into_string().expect("utf-8"))
        .collect()
}

fn remove_indexes(dir: &Path) {
    for name in names(dir).into_iter().filter(|name| parse_index_name(name).is_some()) {
        std::fs::remove_file(dir.join(name)).expect("remove index");
    }
}

/// Opens the folder in a fresh process (so what building it left in this one's heap does not
/// count), returning its report line.
fn open_in_child(dir: &Path) -> String {
    let exe: PathBuf = std::env::current_exe().expect("this program");
    let output = Command::new(exe).arg(CHILD).arg(dir).output().expect("child");
    assert!(output.status.success(), "child failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8").trim().to_string()
}

/// The child: opens, reads 1,000 entries from the middle of the log, reports.
fn open_and_report(dir: &Path) {
    let before = status_kib("VmRSS:");
    let began = Instant::now();
    let (mut storage, recovery) = Storage::open(RealFs::new(), dir, identity()).expect("open");
    let open_ms = began.elapsed().as_secs_f64() * 1000.0;
    let after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    let middle = LogIndex(recovery.last_index.0 / 2).max(LogIndex(1));
    let began = Instant::now();
    let read = storage.read_entries(middle, middle.plus(999), u64::MAX).expect("read");
    let read_ms = began.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(read.first().map(|entry| entry.index), Some(middle));
    println!(
        "open {open_ms:.1} ms, RSS +{:.1} MiB (peak {:.1} MiB), {} entries handed on of {}, {} term runs; \
         1,000 entries from {} read in {read_ms:.2} ms",
        (after.saturating_sub(before)) as f64 / 1024.0,
        peak as f64 / 1024.0,
        recovery.entries.len(),
        recovery.last_index.0,
        recovery.term_runs.len(),
        middle.0,
    );
}

/// A `/proc/self/status` field in KiB (0 where there is none).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}
