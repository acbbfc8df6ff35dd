//! Leadership transfer on real processes (dissertation §3.10): `replog transfer-leader` moves
//! leadership where asked, and a rolling restart that moves it off each node first loses no
//! acknowledged append while appends keep succeeding.

use replog_runtime::client;
use replog_tests::{serial, TestCluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn transfer_leader_moves_leadership_where_asked() {
    let _serial = serial();
    let cluster = TestCluster::start("transfer", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    let (via, to) = ((leader + 1) % 3, (leader + 2) % 3);
    // Asked through a follower, which redirects to the leader.
    let (code, out, err) =
        cluster.cli(&["transfer-leader", "-t", &cluster.address(via), "--to", &cluster.address(to)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("{} leads now", cluster.address(to))), "{out}");
    assert_eq!(cluster.wait_leader(SECOND), Some(to));
    // Without --to: the most up-to-date follower takes over.
    let (code, out, err) = cluster.cli(&["transfer-leader", "-t", &cluster.address(to)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(cluster.wait_leader(SECOND), Some(to));
    // Bad input: a stranger, a malformed address; each one line, exit 1, nothing moved.
    let leader = cluster.wait_leader(SECOND).expect("a leader");
    for bad in ["127.0.0.1:1", "not-an-address"] {
        let (code, _, err) = cluster.cli(&["transfer-leader", "-t", &cluster.address(leader), "--to", bad]);
        assert_eq!(code, 1, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(cluster.wait_leader(SECOND), Some(leader));
}

#[test]
fn a_rolling_restart_that_moves_leadership_first_loses_nothing() {
    let _serial = serial();
    let mut cluster = TestCluster::start("rolling", 3);
    cluster.wait_leader(5 * SECOND).expect("a leader");
    let addresses: Vec<String> = (0..3).map(|k| cluster.address(k)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
    // One appender, bounded in time and count, trying each node in turn.
    let writer = {
        let (stop, acknowledged, longest_gap) = (stop.clone(), acknowledged.clone(), longest_gap.clone());
        std::thread::spawn(move || {
            let began = Instant::now();
            let mut last_success = Instant::now();
            for i in 0..100_000u64 {
                if stop.load(Ordering::Relaxed) || began.elapsed() > 60 * SECOND {
                    break;
                }
                let command = format!("roll-{i}");
                let target = &addresses[i as usize % 3];
                if client::append(target, command.as_bytes(), 2 * SECOND).is_ok() {
                    let mut gap = longest_gap.lock().unwrap();
                    *gap = (*gap).max(last_success.elapsed());
                    last_success = Instant::now();
                    acknowledged.lock().unwrap().push(command);
                }
            }
        })
    };
    for k in 0..3 {
        sleep(SECOND / 2);
        if cluster.wait_leader(5 * SECOND) == Some(k) {
            let (code, out, err) = cluster.cli(&["transfer-leader", "-t", &cluster.address(k)]);
            assert_eq!(code, 0, "{out}{err}");
        }
        assert!(cluster.stop(k), "clean stop of node {k}");
        sleep(SECOND / 2);
        cluster.start_node(k, false);
        cluster.wait_leader(5 * SECOND).expect("a leader after the restart");
    }
    sleep(SECOND / 2);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let commands: Vec<String> = cluster.wait_converged(10 * SECOND).into_iter().map(|(_, c)| c).collect();
    let acknowledged = acknowledged.lock().unwrap();
    assert!(acknowledged.len() > 50, "appends kept succeeding: {}", acknowledged.len());
    for command in acknowledged.iter() {
        assert!(commands.contains(command), "acknowledged {command} is missing");
    }
    let gap = *longest_gap.lock().unwrap();
    println!(
        "rolling restart: {} appends acknowledged, longest gap {} ms",
        acknowledged.len(),
        gap.as_millis()
    );
}

#[test]
fn a_transfer_under_load_pauses_appends_only_briefly() {
    let _serial = serial();
    let cluster = TestCluster::start("transfer-load", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    let addresses: Vec<String> = (0..3).map(|k| cluster.address(k)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Every successful append's completion time, from 8 appenders (bounded in time and count).
    let successes = Arc::new(Mutex::new(Vec::new()));
    let began = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (stop, successes, addresses) = (stop.clone(), successes.clone(), addresses.clone());
            std::thread::spawn(move || {
                for i in 0..100_000u64 {
                    if stop.load(Ordering::Relaxed) || began.elapsed() > 30 * SECOND {
                        break;
                    }
                    let target = &addresses[(w + i as usize) % 3];
                    if client::append(target, format!("w{w}-{i}").as_bytes(), 2 * SECOND).is_ok() {
                        successes.lock().unwrap().push(began.elapsed());
                    }
                }
            })
        })
        .collect();
    sleep(SECOND);
    let to = (leader + 1) % 3;
    let (code, out, err) =
        cluster.cli(&["transfer-leader", "-t", &cluster.address(leader), "--to", &cluster.address(to)]);
    assert_eq!(code, 0, "{out}{err}");
    sleep(SECOND);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let mut times = successes.lock().unwrap().clone();
    times.sort();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    println!(
        "transfer under 8 appenders: {} appends, longest gap {} ms ({})",
        times.len(),
        gap.as_millis(),
        out.trim()
    );
    assert!(times.len() > 100, "appends kept succeeding");
    assert!(gap < 2 * SECOND, "appends stopped for {gap:?}");
    assert_eq!(cluster.wait_leader(SECOND), Some(to));
}
