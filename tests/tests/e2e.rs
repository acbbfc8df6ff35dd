//! End-to-end: real `replog` processes on loopback, driven through the CLI and the client
//! library. Every wait is bounded; only processes started here are signalled.

use replog_runtime::client;
use replog_tests::{serial, TestCluster};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The log's first segment file (the whole log in these short runs).
const FIRST_SEGMENT: &str = "log-00000000000000000001.jsonl";

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn seed_walkthrough_three_nodes_three_appends_query_everywhere() {
    let _serial = serial();
    let cluster = TestCluster::start("walkthrough", 3);
    let node1 = cluster.address(0);
    for command in ["user_login:alice", "create_order:order123", "payment_processed:$100"] {
        let (code, out, err) = cluster.cli(&["append", "-t", &node1, "-c", command]);
        assert_eq!(code, 0, "append {command}: {out}{err}");
        assert!(out.contains("Committed"), "{out}");
    }
    cluster.wait_converged(5 * SECOND);
    let expected = "📋 Log entries (3 total):
  1. ID:1 Term:1 Committed:true Command:Operation { data: \"user_login:alice\" }
  2. ID:2 Term:1 Committed:true Command:Operation { data: \"create_order:order123\" }
  3. ID:3 Term:1 Committed:true Command:Operation { data: \"payment_processed:$100\" }
";
    for k in 0..3 {
        let (code, out, err) = cluster.cli(&["query", "-t", &cluster.address(k)]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, expected, "query of node{}", k + 1);
    }
    let (code, out, _) = cluster.cli(&["status", "-t", &node1]);
    assert_eq!(code, 0);
    assert!(out.contains("leader in term 1") && out.contains("connected"), "{out}");
}

#[test]
fn append_via_a_follower_lands_exactly_once() {
    let _serial = serial();
    let cluster = TestCluster::start("follower", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    let follower = (leader + 1) % 3;
    let (code, out, err) = cluster.cli(&["append", "-t", &cluster.address(follower), "-c", "via-follower"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("leader {}", cluster.address(leader))), "{out}");
    let log = cluster.wait_converged(5 * SECOND);
    assert_eq!(log.iter().filter(|(_, c)| c == "via-follower").count(), 1, "{log:?}");
}

#[test]
fn killed_leader_is_replaced_within_two_seconds_and_catches_up() {
    let _serial = serial();
    let mut cluster = TestCluster::start("leader-kill", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    for i in 0..5 {
        client::append(&cluster.address(leader), format!("before-{i}").as_bytes(), 5 * SECOND)
            .expect("append");
    }
    cluster.kill(leader);
    let killed = Instant::now();
    let survivor = cluster.address((leader + 1) % 3);
    let appended = client::append(&survivor, b"after-kill", 5 * SECOND).expect("append after the kill");
    let took = killed.elapsed();
    assert!(took < 2 * SECOND, "a new leader took {took:?} to accept an append");
    assert_ne!(appended.leader, cluster.nodes[leader].address);
    cluster.start_node(leader, false);
    let log = cluster.wait_converged(10 * SECOND);
    let commands: Vec<&str> = log.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(commands, ["before-0", "before-1", "before-2", "before-3", "before-4", "after-kill"]);
}

#[test]
fn every_acknowledged_append_survives_kill_9_of_every_node() {
    let _serial = serial();
    let mut cluster = TestCluster::start("kill-all", 3);
    cluster.wait_leader(5 * SECOND).expect("a leader");
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let targets: Vec<String> = (0..3).map(|k| cluster.address(k)).collect();
            let (acknowledged, stop) = (Arc::clone(&acknowledged), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut sequence = 0;
                while !stop.load(Ordering::Relaxed) {
                    let command = format!("w{writer}-{sequence}");
                    sequence += 1;
                    let target = &targets[sequence % targets.len()];
                    if client::append(target, command.as_bytes(), Duration::from_millis(500)).is_ok() {
                        acknowledged.lock().unwrap().push(command);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    for k in 0..3 {
        cluster.kill(k);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 20, "only {} appends were acknowledged before the kill", acknowledged.len());
    for k in 0..3 {
        cluster.start_node(k, false);
    }
    cluster.wait_leader(10 * SECOND).expect("a leader after restarting everyone");
    // A fresh append in the new term commits everything before it.
    client::append(&cluster.address(0), b"after-restart", 5 * SECOND).expect("append after restart");
    let log = cluster.wait_converged(10 * SECOND);
    let present: BTreeSet<&str> = log.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(present.len(), log.len(), "a command appears twice: {log:?}");
    for command in &acknowledged {
        assert!(present.contains(command.as_str()), "acknowledged {command} was lost");
    }
}

#[test]
fn torn_tail_is_cut_with_a_warning_and_the_node_catches_up() {
    let _serial = serial();
    let mut cluster = TestCluster::start("torn", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    let victim = (leader + 1) % 3;
    client::append(&cluster.address(leader), b"one", 5 * SECOND).unwrap();
    cluster.wait_converged(5 * SECOND);
    cluster.kill(victim);
    client::append(&cluster.address(leader), b"two", 5 * SECOND).unwrap();
    let log = cluster.data_dir(victim).join(FIRST_SEGMENT);
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(b"{\"index\":3,\"term\":1,\"type\":\"comm").unwrap();
    drop(file);
    cluster.start_node(victim, false);
    let converged = cluster.wait_converged(10 * SECOND);
    let commands: Vec<&str> = converged.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(commands, ["one", "two"]);
    assert!(cluster.log_text(victim).contains("cut a torn record"), "{}", cluster.log_text(victim));
}

#[test]
fn garbage_and_oversized_frames_close_the_connection_not_the_node() {
    let _serial = serial();
    let cluster = TestCluster::start("garbage", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    let address = cluster.address(leader);
    let closed_by_node = |bytes: &[u8]| {
        let mut stream = TcpStream::connect(&address).unwrap();
        stream.set_read_timeout(Some(5 * SECOND)).unwrap();
        stream.write_all(bytes).unwrap();
        let mut buffer = [0u8; 64];
        matches!(stream.read(&mut buffer), Ok(0) | Err(_))
    };
    let mut bad_checksum = vec![0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef];
    bad_checksum.extend_from_slice(b"junk");
    assert!(closed_by_node(&bad_checksum), "bad checksum");
    let oversized = [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    assert!(closed_by_node(&oversized), "oversized frame");
    let mut unknown = Vec::new();
    replog_runtime::frame::encode(&[0xee, 1, 2, 3], &mut unknown);
    assert!(closed_by_node(&unknown), "unknown frame kind");
    // A caller that claims to be the node it calls.
    let mut impostor = Vec::new();
    replog_runtime::frame::encode_with(&mut impostor, |out| {
        let hello = replog_runtime::codec::Frame::Hello {
            address: address.clone(),
            name: "mallory".into(),
            id: replog_core::NodeId(1),
            bootstrap: None,
            cluster: Vec::new(),
        };
        replog_runtime::codec::encode(&hello, out)
    });
    assert!(closed_by_node(&impostor), "impostor");
    client::append(&address, b"still-serving", 5 * SECOND).expect("the node keeps serving");
    let log = cluster.log_text(leader);
    assert!(
        log.contains("checksum mismatch")
            && log.contains("exceeds")
            && log.contains("claims this node's own identity"),
        "{log}"
    );
}

/// A hello can point the node at any address, and it dials it as a peer link, which it only
/// writes to (peers answer on their own links). A listener there that streams data back gets
/// the link closed: the data used to pile up unread (2 GB in 12 s) while every read copied it
/// all, stalling the event loop.
#[test]
fn a_peer_link_that_streams_data_back_is_closed_not_buffered() {
    let _serial = serial();
    let cluster = TestCluster::start("streaming-peer", 1);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    let address = cluster.address(leader);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake = listener.local_addr().expect("address");
    let streamed = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the node dials the address of the hello");
        stream.set_write_timeout(Some(SECOND)).expect("timeout");
        let chunk = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + 10 * SECOND;
        let mut sent = 0usize;
        while Instant::now() < deadline {
            match stream.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => return (sent, true), // closed by the node (or it stopped reading)
            }
        }
        (sent, false)
    });
    let mut caller = TcpStream::connect(&address).expect("connect");
    let mut hello = Vec::new();
    replog_runtime::frame::encode_with(&mut hello, |out| {
        let frame = replog_runtime::codec::Frame::Hello {
            address: fake.to_string(),
            name: "streamer".into(),
            id: replog_core::NodeId(0x57ea),
            bootstrap: None,
            cluster: Vec::new(),
        };
        replog_runtime::codec::encode(&frame, out)
    });
    caller.write_all(&hello).expect("hello");
    let (sent, closed) = streamed.join().expect("listener thread");
    eprintln!("streamed {sent} bytes, closed={closed}");
    assert!(closed, "the node kept reading {sent} bytes from a link it should only write to");
    assert!(sent < 64 * 1024 * 1024, "{sent} bytes went in before the node closed the link");
    let started = Instant::now();
    client::append(&address, b"still-serving", 5 * SECOND).expect("the node keeps serving");
    assert!(started.elapsed() < 2 * SECOND, "the node answers slowly: {:?}", started.elapsed());
    let log = cluster.log_text(leader);
    assert!(log.contains("it sent data on a link it should only read"), "{log}");
    drop(caller);
}

#[test]
fn cluster_command_starts_a_working_cluster_and_stops_it() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("replog-e2e-cluster-cmd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Three consecutive free ports: probe a few bases.
    let base = (0..50)
        .map(|i| 20_000 + ((std::process::id() as u16 % 500) * 60) + i * 7)
        .find(|&base| (0..3).all(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok()))
        .expect("three free consecutive ports");
    let mut child = std::process::Command::new(replog_tests::replog_binary())
        .args(["cluster", "--nodes", "3", "--base-port", &base.to_string(), "--data-dir"])
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let target = format!("127.0.0.1:{base}");
    let appended = client::append(&target, b"hello-cluster", 10 * SECOND);
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + 10 * SECOND;
    let mut exited = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    appended.expect("append to the cluster");
    assert!(exited, "cluster did not stop on SIGTERM");
    assert!(out.contains("replog append -t") && out.contains("replog query -t"), "{out}");
    assert!(TcpStream::connect(&target).is_err(), "nodes still listening after the cluster stopped");
}

#[test]
fn append_without_a_reachable_leader_fails_clearly_within_seconds() {
    let _serial = serial();
    let mut cluster = TestCluster::start("no-leader", 3);
    cluster.wait_leader(5 * SECOND).expect("a leader");
    // A lone survivor of three cannot elect a leader; nothing at all listens on the other port.
    cluster.kill(1);
    cluster.kill(2);
    // Check-quorum makes a leader without a majority step down within an election timeout.
    std::thread::sleep(SECOND);
    assert_eq!(cluster.wait_leader(Duration::from_millis(100)), None, "a lone node still claims leadership");
    let nobody = format!("127.0.0.1:{}", replog_tests::free_ports(1)[0]);
    for target in [cluster.address(0), nobody] {
        let started = Instant::now();
        let (code, out, err) = cluster.cli(&["append", "-t", &target, "-c", "nobody-home", "--timeout", "2"]);
        let took = started.elapsed();
        assert_ne!(code, 0, "{out}");
        assert!(took < 5 * SECOND, "took {took:?}");
        assert!(err.starts_with("replog: no leader reachable") && err.lines().count() == 1, "{err}");
    }
}

#[test]
fn linearizable_query_sees_every_acknowledged_append_and_needs_a_quorum() {
    let _serial = serial();
    let mut cluster = TestCluster::start("linearizable", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    let follower = (leader + 1) % 3;
    for i in 0..20 {
        let command = format!("seen-{i}");
        client::append(&cluster.address(leader), command.as_bytes(), 5 * SECOND).unwrap();
        // Asked of a follower, the query is redirected to the leader and must see the append.
        let (commit, entries) = client::query(&cluster.address(follower), 5 * SECOND, true).unwrap();
        let index = entries
            .iter()
            .map(|queried| &queried.entry)
            .find(|e| matches!(&e.payload, replog_core::Payload::Command(d) if d.as_slice() == command.as_bytes()))
            .map(|e| e.index.0)
            .expect("the acknowledged append is in a linearizable query");
        assert!(index <= commit, "and it is committed");
    }
    let (code, out, err) = cluster.cli(&["query", "--linearizable", "-t", &cluster.address(follower)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("📋 Log entries (20 total):"), "{out}");
    // A leader cut off from its majority cannot confirm a read: the query fails, clearly.
    cluster.kill(follower);
    cluster.kill((leader + 2) % 3);
    let (code, _, err) = cluster.cli(&["query", "--linearizable", "-t", &cluster.address(leader)]);
    assert_ne!(code, 0);
    assert!(err.contains("no leader could confirm"), "{err}");
    // Its local view is still there for operators.
    let (code, out, _) = cluster.cli(&["query", "-t", &cluster.address(leader)]);
    assert_eq!(code, 0);
    assert!(out.contains("(20 total)"), "{out}");
}

#[test]
fn query_ids_count_client_commands_across_leader_changes() {
    let _serial = serial();
    let mut cluster = TestCluster::start("ids", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    for command in ["one", "two"] {
        client::append(&cluster.address(leader), command.as_bytes(), 5 * SECOND).expect("append");
    }
    // The next leader appends its own no-op: log indexes and command IDs part ways.
    cluster.kill(leader);
    let survivor = cluster.address((leader + 1) % 3);
    let (code, out, err) = cluster.cli(&["append", "-t", &survivor, "-c", "three"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ID:3 ") && !out.contains("(log index 3,"), "{out}");
    cluster.start_node(leader, false);
    cluster.wait_converged(10 * SECOND);
    let (code, out, err) = cluster.cli(&["query", "-t", &cluster.address(leader)]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<&str> =
        out.lines().skip(1).map(|line| line.split_whitespace().nth(1).unwrap_or("")).collect();
    assert_eq!(ids, ["ID:1", "ID:2", "ID:3"], "{out}");
    assert!(out.starts_with("📋 Log entries (3 total):\n  1. ID:1 Term:1 "), "{out}");
}

#[test]
fn query_pages_large_commands_and_oversized_commands_are_refused_clearly() {
    let _serial = serial();
    let cluster = TestCluster::start("large", 3);
    let leader = cluster.wait_leader(5 * SECOND).expect("a leader");
    // 150 commands of 120 KB: 18 MB, more than one 16 MiB frame can carry.
    let command = |i: usize| {
        let mut command = format!("{i:04}-").into_bytes();
        command.resize(120_000, b'x');
        command
    };
    for i in 1..=150 {
        client::append(&cluster.address(leader), &command(i), 5 * SECOND).expect("append");
    }
    cluster.wait_converged(10 * SECOND);
    let follower = cluster.address((leader + 1) % 3);
    let plain = ["query", "-t", follower.as_str()];
    let linearizable = ["query", "--linearizable", "-t", follower.as_str()];
    for args in [&plain[..], &linearizable[..]] {
        let (code, out, err) = cluster.cli(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "📋 Log entries (150 total):", "{args:?}");
        assert_eq!(lines.len(), 151, "{args:?}");
        for (i, line) in lines[1..].iter().enumerate() {
            let prefix = format!(
                "  {n}. ID:{n} Term:1 Committed:true Command:Operation {{ data: \"{n:04}-xxx",
                n = i + 1
            );
            assert!(line.starts_with(&prefix) && line.len() > 120_000, "{args:?} line {}", i + 1);
        }
    }
    // Bigger than a frame can carry to the followers: the client refuses before sending...
    let limit = replog_runtime::limits::COMMAND_BYTES_MAX;
    let error = client::append(&cluster.address(leader), &vec![b'x'; limit + 1], 5 * SECOND).unwrap_err();
    assert_eq!(error.to_string(), format!("a command of {} bytes exceeds the {limit}-byte limit", limit + 1));
    // ...and so does the node, for a client that does not check.
    let mut wire = Vec::new();
    replog_runtime::frame::encode_with(&mut wire, |out| {
        replog_runtime::codec::encode(
            &replog_runtime::codec::Frame::Append { request: 7, command: vec![b'x'; limit + 1] },
            out,
        )
    });
    let mut stream = TcpStream::connect(cluster.address(leader)).unwrap();
    stream.set_read_timeout(Some(5 * SECOND)).unwrap();
    stream.write_all(&wire).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 256];
    while replog_runtime::frame::decode(&answer).unwrap().is_none() {
        let n = stream.read(&mut buffer).expect("an answer");
        assert!(n > 0, "the node closed the connection");
        answer.extend_from_slice(&buffer[..n]);
    }
    let (payload, _) = replog_runtime::frame::decode(&answer).unwrap().unwrap();
    assert_eq!(
        replog_runtime::codec::decode(&answer[payload]),
        Ok(replog_runtime::codec::Frame::AppendResult {
            request: 7,
            result: replog_runtime::codec::AppendResult::TooLarge {
                bytes: limit as u64 + 1,
                limit: limit as u64
            },
        })
    );
    client::append(&cluster.address(leader), b"still-serving", 5 * SECOND).expect("the node keeps serving");
}
