//! This machine's durability floor: the latency of one 4 KiB write + fdatasync, and what
//! group commit buys (entries per second when 1 vs 64 entries share an fsync).
//! `cargo bench -p replog-runtime --bench fsync`. Runs in a temporary folder under target/.

use replog_core::{Bytes, Entry, HardState, LogIndex, Payload, Term};
use replog_runtime::fs::RealFs;
use replog_runtime::storage::{Identity, Storage};
use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

const SYNCS: usize = 500;

fn main() {
    let dir = std::env::current_dir().expect("cwd").join("target").join("fsync-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");

    let mut file =
        OpenOptions::new().create(true).write(true).truncate(true).open(dir.join("raw")).expect("file");
    let block = [7u8; 4096];
    let mut latencies: Vec<Duration> = (0..SYNCS)
        .map(|_| {
            let began = Instant::now();
            file.write_all(&block).expect("write");
            file.sync_data().expect("fdatasync");
            began.elapsed()
        })
        .collect();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "4 KiB write + fdatasync: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms ({SYNCS} syncs)",
        at(0.5),
        at(0.9),
        at(0.99)
    );

    for batch in [1u64, 64] {
        let folder = dir.join(format!("log-{batch}"));
        let identity = Identity { name: "bench".into(), address: "127.0.0.1:1".into() };
        let (mut storage, _) = Storage::open(RealFs::new(), &folder, identity).expect("storage");
        storage
            .save_hard_state(HardState { term: Term(1), voted_for: None, commit: LogIndex(0) })
            .expect("metadata");
        let data = Bytes::from(vec![b'x'; 100]);
        let began = Instant::now();
        let mut next = 1;
        for _ in 0..SYNCS {
            let entries: Vec<Entry> = (0..batch)
                .map(|i| Entry {
                    index: LogIndex(next + i),
                    term: Term(1),
                    payload: Payload::Command(data.clone()),
                })
                .collect();
            next += batch;
            storage.append(&entries).expect("append");
            storage.request_sync(true).expect("sync");
        }
        let seconds = began.elapsed().as_secs_f64();
        println!(
            "log segment, {batch:>2} x 100-byte entries per fsync: {:.0} entries/s ({:.3} ms per sync)",
            (SYNCS as u64 * batch) as f64 / seconds,
            seconds * 1000.0 / SYNCS as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
