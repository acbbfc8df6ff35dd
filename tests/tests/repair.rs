//! Storage faults on acknowledged data, on real processes: a node that lost entries it had
//! acknowledged gets them back from the leader (protocol-aware recovery), and `start --repair`
//! cuts a damaged record instead of refusing to start.

use replog_runtime::client;
use replog_tests::{serial, TestCluster};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The log's first segment file (the whole log in these short runs).
const FIRST_SEGMENT: &str = "log-00000000000000000001.jsonl";

const SECOND: Duration = Duration::from_secs(1);

/// Waits until node `k`'s own log (its local view) equals node `reference`'s.
fn wait_same_log(cluster: &TestCluster, k: usize, reference: usize, within: Duration) -> Duration {
    let began = Instant::now();
    loop {
        // Not listening yet, or answering: either way, ask again until the deadline.
        let mine = client::query(&cluster.address(k), SECOND, false).map(|(_, entries)| entries);
        let theirs = client::query(&cluster.address(reference), SECOND, false).map(|(_, entries)| entries);
        if let (Ok(mine), Ok(theirs)) = (&mine, &theirs) {
            if mine == theirs {
                return began.elapsed();
            }
        }
        assert!(began.elapsed() < within, "node {k} did not catch up:\n{}", cluster.log_text(k));
        sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_follower_whose_acknowledged_tail_was_cut_catches_up_while_the_leader_lives() {
    let _serial = serial();
    let mut cluster = TestCluster::start("cut-tail", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    for command in ["a", "b", "c", "d", "e"] {
        client::append(&cluster.address(leader), command.as_bytes(), 5 * SECOND).unwrap();
    }
    cluster.wait_converged(5 * SECOND);
    let victim = (leader + 1) % 3;
    assert!(cluster.stop(victim), "clean stop");
    // The last 7 bytes of records it had acknowledged (and knew committed) are gone.
    let log = cluster.data_dir(victim).join(FIRST_SEGMENT);
    let bytes = std::fs::read(&log).unwrap();
    std::fs::write(&log, &bytes[..bytes.len() - 7]).unwrap();
    cluster.start_node(victim, false);
    let took = wait_same_log(&cluster, victim, leader, 10 * SECOND);
    println!("catch-up after the acknowledged tail was cut: {} ms", took.as_millis());
    let output = cluster.log_text(victim);
    assert!(output.contains("cut a torn record"), "{output}");
    assert!(output.contains("are missing"), "{output}");
    // The cluster still takes appends, and the repaired node has them all.
    client::append(&cluster.address(leader), b"f", 5 * SECOND).unwrap();
    let commands: Vec<String> = cluster.wait_converged(5 * SECOND).into_iter().map(|(_, c)| c).collect();
    assert_eq!(commands, ["a", "b", "c", "d", "e", "f"]);
}

#[test]
fn start_with_repair_cuts_a_damaged_record_and_fetches_the_rest_from_the_leader() {
    let _serial = serial();
    let mut cluster = TestCluster::start("repair", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    for command in ["a", "b", "c"] {
        client::append(&cluster.address(leader), command.as_bytes(), 5 * SECOND).unwrap();
    }
    cluster.wait_converged(5 * SECOND);
    let victim = (leader + 1) % 3;
    assert!(cluster.stop(victim), "clean stop");
    let log = cluster.data_dir(victim).join(FIRST_SEGMENT);
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"data\":\"a\"", "\"data\":\"A\"", 1)).unwrap();
    // Without --repair it refuses, naming the file and line and what to do.
    cluster.start_node(victim, false);
    assert_ne!(cluster.wait_exit(victim, 5 * SECOND).expect("it stops by itself"), 0);
    let output = cluster.log_text(victim);
    assert!(
        output.contains(&format!("{FIRST_SEGMENT} line 2")) && output.contains("checksum mismatch"),
        "{output}"
    );
    assert!(output.contains("--repair"), "the error says what to do: {output}");
    // With --repair it cuts the log there and gets every entry back from the leader.
    cluster.start_node_with(victim, false, &["--repair"]);
    wait_same_log(&cluster, victim, leader, 10 * SECOND);
    assert!(cluster.log_text(victim).contains("as --repair asked"), "{}", cluster.log_text(victim));
    let commands: Vec<String> = cluster.wait_converged(5 * SECOND).into_iter().map(|(_, c)| c).collect();
    assert_eq!(commands, ["a", "b", "c"]);
}
