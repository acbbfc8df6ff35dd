//! Log lifetime on real processes: retention and `replog trim` drop a log prefix behind a
//! snapshot; a follower that was down while its leader trimmed catches up through the snapshot
//! (InstallSnapshot, §7) and ends with the same committed suffix; command IDs survive trimming.

use replog_runtime::client::{self, QueriedLog};
use replog_tests::{serial, TestCluster};
use std::thread::sleep;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// (first ID, [(ID, command)]) of a node's own log.
fn commands(log: &QueriedLog) -> (u64, Vec<(u64, String)>) {
    let commands = log
        .entries
        .iter()
        .filter_map(|queried| match (&queried.entry.payload, queried.id) {
            (replog_core::Payload::Command(data), Some(id)) => {
                Some((id, String::from_utf8_lossy(data.as_slice()).into_owned()))
            }
            _ => None,
        })
        .collect();
    (log.first_id, commands)
}

/// Waits until node `k`'s log starts where node `reference`'s does and holds the same
/// commands, both committed through their last entry.
fn wait_same_suffix(cluster: &TestCluster, k: usize, reference: usize, within: Duration) {
    let began = Instant::now();
    loop {
        let mine = client::query_log(&cluster.address(k), SECOND, false);
        let theirs = client::query_log(&cluster.address(reference), SECOND, false);
        if let (Ok(mine), Ok(theirs)) = (&mine, &theirs) {
            let last = |log: &QueriedLog| log.entries.last().map_or(0, |e| e.entry.index.0);
            if commands(mine) == commands(theirs)
                && mine.commit == last(mine)
                && theirs.commit == last(theirs)
            {
                return;
            }
        }
        assert!(
            began.elapsed() < within,
            "node {k} did not catch up: {mine:?} vs {theirs:?}\n{}",
            cluster.log_text(k)
        );
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_follower_down_while_the_leader_trims_rejoins_through_a_snapshot() {
    let _serial = serial();
    let mut cluster = TestCluster::start("snapshot-rejoin", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    for i in 1..=10 {
        client::append(&cluster.address(leader), format!("before-{i}").as_bytes(), 5 * SECOND).unwrap();
    }
    cluster.kill(follower);
    for i in 11..=60 {
        client::append(&cluster.address(leader), format!("while-down-{i}").as_bytes(), 5 * SECOND).unwrap();
    }
    // Both running nodes drop everything before command 50.
    for k in [leader, other] {
        let (code, out, err) = cluster.cli(&["trim", "-t", &cluster.address(k), "--before", "50"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("now starts at ID:50"), "{out}");
    }
    let (first_id, held) = commands(&client::query_log(&cluster.address(leader), SECOND, false).unwrap());
    assert_eq!(first_id, 50);
    assert_eq!(held.first(), Some(&(50, "while-down-50".to_string())), "IDs survive trimming");
    assert_eq!(held.len(), 11);
    // The follower comes back: the entries it lacks are gone everywhere; it gets the snapshot.
    cluster.start_node(follower, false);
    wait_same_suffix(&cluster, follower, leader, 10 * SECOND);
    let output = cluster.log_text(follower);
    assert!(output.contains("installed the leader's snapshot"), "{output}");
    // It keeps up from there, and a restart reads the snapshot and the log after it.
    client::append(&cluster.address(leader), b"after", 5 * SECOND).unwrap();
    wait_same_suffix(&cluster, follower, leader, 5 * SECOND);
    assert!(cluster.stop(follower), "clean stop");
    cluster.start_node(follower, false);
    wait_same_suffix(&cluster, follower, leader, 5 * SECOND);
    let (first_id, held) = commands(&client::query_log(&cluster.address(follower), SECOND, false).unwrap());
    assert_eq!(first_id, 50);
    assert_eq!(held.last(), Some(&(61, "after".to_string())));
    // The plain query says what was trimmed, on stderr, and lists the rest as the seed does.
    let (code, out, err) = cluster.cli(&["query", "-t", &cluster.address(follower)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("before ID:50 were trimmed"), "{err}");
    assert!(out.contains("ID:50 Term:") && out.contains("Command:Operation { data: \"after\" }"), "{out}");
}

#[test]
fn retention_keeps_the_newest_entries_and_deletes_old_segments() {
    let _serial = serial();
    let mut cluster = TestCluster::start("retention", 1);
    cluster.stop(0);
    let flags = ["--retain-entries", "20", "--segment-bytes", "4096"];
    cluster.start_node_with(0, true, &flags);
    let address = cluster.address(0);
    for i in 1..=200 {
        client::append(&address, format!("command-{i}").as_bytes(), 5 * SECOND).unwrap();
    }
    let (first_id, held) = commands(&client::query_log(&address, SECOND, false).unwrap());
    assert!((19..=30).contains(&held.len()), "kept {} commands", held.len());
    assert_eq!(held.last(), Some(&(200, "command-200".to_string())));
    assert_eq!(held.first().map(|(id, _)| *id), Some(first_id));
    // A restart starts from the snapshot and holds the same.
    assert!(cluster.stop(0), "clean stop");
    cluster.start_node_with(0, true, &flags);
    let began = Instant::now();
    let after = loop {
        if let Ok(log) = client::query_log(&address, SECOND, false) {
            break log;
        }
        assert!(began.elapsed() < 5 * SECOND, "node did not come back");
        sleep(Duration::from_millis(20));
    };
    assert_eq!(commands(&after), (first_id, held));
    assert!(cluster.data_dir(0).join("snapshot.json").exists());
    // 200 records of about 80 bytes fill four 4 KiB segments; the ones wholly behind the
    // snapshot are gone.
    let segments = std::fs::read_dir(cluster.data_dir(0))
        .unwrap()
        .filter(|f| {
            let name = f.as_ref().unwrap().file_name();
            replog_runtime::storage::parse_segment_name(&name.to_string_lossy()).is_some()
        })
        .count();
    assert!((1..=2).contains(&segments), "{segments} segments left");
    // Bad flags are refused with a clear error.
    let (code, _, err) = cluster.cli(&["start", "-i", "x", "--retain-entries", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("--retain-entries"), "{err}");
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[test]
fn a_node_restarts_on_a_million_entries_quickly_and_in_bounded_memory() {
    let _serial = serial();
    let mut cluster = TestCluster::start("million", 1);
    assert!(cluster.stop(0), "clean stop");
    let _ = std::fs::remove_dir_all(cluster.data_dir(0));
    const COUNT: u64 = 1_000_000;
    cluster.build_log(0, COUNT, 100);
    let began = Instant::now();
    cluster.start_node(0, true);
    let address = cluster.address(0);
    let status = loop {
        if let Ok(status) = client::status(&address, SECOND) {
            break status;
        }
        assert!(began.elapsed() < 10 * SECOND, "the node did not answer:\n{}", cluster.log_text(0));
        sleep(Duration::from_millis(10));
    };
    let took = began.elapsed();
    assert!(status.last_index.0 >= COUNT, "{status:?}");
    let rss = rss_mib(cluster.nodes[0].pid().expect("running"));
    println!("restart on {COUNT} entries: answering after {} ms, {rss:.0} MiB resident", took.as_millis());
    // Generous bounds for a shared 2-core machine (measured: about 0.2 s and under 100 MiB).
    assert!(took < 5 * SECOND, "start-up took {took:?}");
    assert!(rss < 200.0, "{rss:.0} MiB resident after start");
    // It serves: a new append lands after the million, and old entries are read from disk.
    let appended = client::append(&address, b"after-a-million", 5 * SECOND).unwrap();
    assert_eq!(appended.id, COUNT + 1);
    let old = client::query_log(&address, 5 * SECOND, false).unwrap();
    assert_eq!(old.entries.len() as u64, appended.index);
}
