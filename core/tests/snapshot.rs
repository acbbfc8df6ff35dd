//! Log compaction and InstallSnapshot (§7, Figure 13): chunked, resumable transfers; snapshots
//! racing entries; old snapshots arriving late; corrupt transfers.

use replog_core::testkit::Cluster;
use replog_core::*;

/// The bootstrap configuration of a three-node test cluster.
fn three() -> Membership {
    Membership::voters_only([n(1), n(2), n(3)])
}

fn n(id: u64) -> NodeId {
    NodeId(id)
}

/// n1 leads a cluster of three with `commands` committed while n3 was down, and has compacted
/// its log through everything applied; n3 is still down.
fn compacted_with_n3_down(chunk: u64, commands: usize) -> Cluster {
    let mut cluster = Cluster::new(3, |config| config.snapshot_chunk_bytes = chunk);
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.crash(n(3));
    for i in 0..commands {
        cluster.propose(n(1), &[format!("c{i}").as_str()]);
        cluster.deliver_all();
    }
    cluster.run(&[n(1), n(2)], 6);
    cluster.compact(n(1));
    cluster.compact(n(2));
    assert!(cluster.node(n(1)).first_index() > LogIndex(2), "n1 compacted");
    cluster
}

fn snapshot_requests(cluster: &mut Cluster) -> Vec<Message> {
    cluster.take_in_flight()
}

#[test]
fn a_follower_behind_the_compaction_point_installs_the_snapshot_and_catches_up() {
    let mut cluster = compacted_with_n3_down(4, 5);
    cluster.restart(n(3));
    cluster.run(&cluster.ids(), 20);
    let (leader, follower) = (cluster.node(n(1)), cluster.node(n(3)));
    assert_eq!(follower.snapshot_meta(), leader.snapshot_meta());
    assert_eq!(follower.commit(), leader.commit());
    assert_eq!(follower.last_index(), leader.last_index());
    assert_eq!(follower.marks().snapshots_installed, 1);
    assert_eq!(leader.marks().snapshot_transfers, 1);
    // 19 bytes in 4-byte chunks: five chunks, and no retransmission on a perfect network.
    assert_eq!(leader.snapshot().unwrap().data.len(), 19);
    assert_eq!(leader.marks().snapshot_chunks_sent, 5);
    // New entries flow after the install.
    cluster.propose(n(1), &["after"]);
    cluster.run(&cluster.ids(), 6);
    assert_eq!(cluster.node(n(3)).commit(), cluster.node(n(1)).commit());
}

#[test]
fn lost_chunks_are_sent_again_from_the_followers_offset() {
    let mut cluster = compacted_with_n3_down(4, 5);
    cluster.restart(n(3));
    let mut dropped = 0;
    for _ in 0..60 {
        cluster.tick(1);
        loop {
            let messages = snapshot_requests(&mut cluster);
            if messages.is_empty() {
                break;
            }
            for message in messages {
                // Every third chunk is lost on the way.
                if matches!(message.body, Body::SnapshotRequest { ref chunk, .. } if !chunk.is_empty()) {
                    dropped += 1;
                    if dropped % 3 == 0 {
                        continue;
                    }
                }
                cluster.step(message.to, Event::Receive(message));
            }
        }
    }
    assert!(dropped >= 5, "chunks were sent");
    let follower = cluster.node(n(3));
    assert_eq!(follower.marks().snapshots_installed, 1);
    assert_eq!(follower.commit(), cluster.node(n(1)).commit());
}

#[test]
fn a_transfer_resumes_after_a_leader_change_and_after_the_follower_restarts() {
    let mut cluster = compacted_with_n3_down(4, 5);
    cluster.restart(n(3));
    // Two chunks arrive; then n1 crashes.
    cluster.tick_nodes(&[n(1)], 5);
    for _ in 0..2 {
        for message in cluster.take_in_flight() {
            if message.to == n(3) {
                cluster.step(n(3), Event::Receive(message));
            }
        }
        for message in cluster.take_in_flight() {
            if message.to == n(1) {
                cluster.step(n(1), Event::Receive(message));
            }
        }
    }
    cluster.take_in_flight();
    cluster.crash(n(1));
    // n3 restarts too: the chunks it saved survive.
    cluster.crash(n(3));
    cluster.restart(n(3));
    // n2 (which compacted at the same point: the same snapshot) takes over and resumes.
    cluster.campaign(n(2));
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(n(2)));
    cluster.run(&[n(2), n(3)], 20);
    let follower = cluster.node(n(3));
    assert_eq!(follower.marks().snapshots_installed, 1);
    assert_eq!(follower.marks().snapshot_resumes, 1, "the new leader went on from the held offset");
    assert_eq!(follower.commit(), cluster.node(n(2)).commit());
    assert!(cluster.node(n(2)).marks().snapshot_chunks_sent < 5, "not everything was sent again");
}

#[test]
fn a_snapshot_arriving_after_newer_entries_keeps_them_and_an_old_one_changes_nothing() {
    let mut cluster = Cluster::new(3, |config| config.snapshot_chunk_bytes = 64);
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.propose(n(1), &["a", "b"]);
    cluster.deliver_all();
    cluster.run(&cluster.ids(), 6);
    cluster.compact(n(1));
    let snapshot = cluster.node(n(1)).snapshot().unwrap().clone();
    cluster.propose(n(1), &["c"]);
    cluster.deliver_all();
    cluster.run(&cluster.ids(), 6);
    let before = (cluster.node(n(3)).commit(), cluster.node(n(3)).last_index());
    // The snapshot reaches n3 late (a delayed or duplicated transfer): n3's commit index covers
    // it, so it is acknowledged and ignored; nothing is rolled back.
    let request = Message {
        from: n(1),
        to: n(3),
        term: cluster.node(n(1)).term(),
        body: Body::SnapshotRequest {
            membership: three(),
            meta: snapshot.meta,
            total: snapshot.data.len() as u64,
            checksum: snapshot.checksum(),
            offset: 0,
            chunk: snapshot.data.clone(),
        },
    };
    let actions = cluster.step(n(3), Event::Receive(request));
    assert!(!actions.iter().any(|a| matches!(a, Action::InstallSnapshot { .. })), "{actions:?}");
    assert_eq!((cluster.node(n(3)).commit(), cluster.node(n(3)).last_index()), before);
    assert_eq!(cluster.node(n(3)).marks().snapshots_stale, 1);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Send(Message { body: Body::SnapshotResponse { installed: true, .. }, .. })
    )));
}

#[test]
fn a_snapshot_whose_last_entry_the_follower_holds_keeps_the_entries_after_it() {
    // n3 holds entries past the snapshot's last index, uncommitted as far as it knows.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.propose(n(1), &["a", "b", "c"]);
    cluster.deliver_all(); // n3 holds 1..=4; its commit lags (heartbeats carry it later)
    let follower = cluster.node(n(3));
    assert_eq!(follower.last_index(), LogIndex(4));
    assert!(follower.commit() < LogIndex(3), "commit is still behind");
    let term = follower.term();
    let snapshot = Snapshot {
        meta: SnapshotMeta { index: LogIndex(3), term },
        membership: three(),
        data: Bytes::from("s"),
    };
    let request = Message {
        from: n(1),
        to: n(3),
        term,
        body: Body::SnapshotRequest {
            membership: three(),
            meta: snapshot.meta,
            total: 1,
            checksum: snapshot.checksum(),
            offset: 0,
            chunk: snapshot.data.clone(),
        },
    };
    let actions = cluster.step(n(3), Event::Receive(request));
    assert!(actions.iter().any(|a| matches!(a, Action::InstallSnapshot { .. })));
    let follower = cluster.node(n(3));
    assert_eq!((follower.first_index(), follower.last_index()), (LogIndex(4), LogIndex(4)));
    assert_eq!(follower.commit(), LogIndex(3));
    // The install is durable before it is acknowledged: a Sync sits between them.
    let install = actions.iter().position(|a| matches!(a, Action::InstallSnapshot { .. })).unwrap();
    let answer = actions.iter().position(|a| matches!(a, Action::Send(_))).unwrap();
    assert!(actions[install..answer].contains(&Action::Sync), "{actions:?}");
}

/// A follower on its own, for snapshots made up by the test (the cluster's safety checks
/// would rightly flag them as never committed).
struct Lone(Node);

impl Lone {
    fn new() -> Lone {
        Lone(Node::new(Config::new(n(3), vec![n(1), n(2)]), Recovered::default()).unwrap())
    }

    fn step(&mut self, _id: NodeId, event: Event) -> Vec<Action> {
        self.0.step(event)
    }

    fn node(&self, _id: NodeId) -> &Node {
        &self.0
    }
}

#[test]
fn a_corrupt_transfer_is_refused_and_fetched_again() {
    let mut cluster = Lone::new();
    let term = Term(1);
    let meta = SnapshotMeta { index: LogIndex(9), term };
    let good = Snapshot { meta, membership: three(), data: Bytes::from("image") };
    let request = Message {
        from: n(1),
        to: n(3),
        term,
        body: Body::SnapshotRequest {
            membership: three(),
            meta,
            total: 5,
            checksum: good.checksum(),
            offset: 0,
            chunk: Bytes::from("imagE"),
        },
    };
    let actions = cluster.step(n(3), Event::Receive(request));
    assert!(!actions.iter().any(|a| matches!(a, Action::InstallSnapshot { .. })));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Send(Message { body: Body::SnapshotResponse { received: 0, installed: false, .. }, .. })
    )));
    let node = cluster.node(n(3));
    assert_eq!(node.marks().snapshots_corrupt, 1);
    assert!(node.last_index() < LogIndex(9));
}

#[test]
fn a_chunk_at_the_wrong_offset_is_answered_with_the_offset_held() {
    let mut cluster = Lone::new();
    let term = Term(1);
    let meta = SnapshotMeta { index: LogIndex(9), term };
    let snapshot = Snapshot { meta, membership: three(), data: Bytes::from("0123456789") };
    let chunk = |offset: u64, bytes: &str| Message {
        from: n(1),
        to: n(3),
        term,
        body: Body::SnapshotRequest {
            membership: three(),
            meta,
            total: 10,
            checksum: snapshot.checksum(),
            offset,
            chunk: Bytes::from(bytes),
        },
    };
    let received = |actions: &[Action]| {
        actions.iter().find_map(|a| match a {
            Action::Send(Message { body: Body::SnapshotResponse { received, .. }, .. }) => Some(*received),
            _ => None,
        })
    };
    // Not started: a chunk past 0 is refused with 0.
    assert_eq!(received(&cluster.step(n(3), Event::Receive(chunk(4, "4567")))), Some(0));
    assert_eq!(received(&cluster.step(n(3), Event::Receive(chunk(0, "0123")))), Some(4));
    // A duplicate and a gap: both answered with 4.
    assert_eq!(received(&cluster.step(n(3), Event::Receive(chunk(0, "0123")))), Some(4));
    assert_eq!(received(&cluster.step(n(3), Event::Receive(chunk(8, "89")))), Some(4));
    // A chunk running past the total is malformed: dropped unanswered.
    assert_eq!(received(&cluster.step(n(3), Event::Receive(chunk(4, "4567890")))), None);
    assert_eq!(received(&cluster.step(n(3), Event::Receive(chunk(4, "4567")))), Some(8));
    let actions = cluster.step(n(3), Event::Receive(chunk(8, "89")));
    assert_eq!(received(&actions), Some(10));
    assert!(actions.iter().any(|a| matches!(a, Action::InstallSnapshot { snapshot: s } if *s == snapshot)));
    assert_eq!(cluster.node(n(3)).last_index(), LogIndex(9));
}

#[test]
#[should_panic(expected = "past the applied index")]
fn a_snapshot_of_unapplied_entries_is_a_broken_contract() {
    let mut cluster = Cluster::new(1, |_| {});
    cluster.campaign(n(1));
    cluster.deliver_all();
    let term = cluster.node(n(1)).term();
    let snapshot = Snapshot {
        meta: SnapshotMeta { index: LogIndex(5), term },
        membership: three(),
        data: Bytes::from("x"),
    };
    let _ = cluster.step(n(1), Event::Compact { snapshot });
}

#[test]
fn a_lagging_follower_is_served_from_disk_once_entries_leave_memory() {
    let mut cluster = Cluster::new(3, |config| {
        config.message_bytes_max = 100;
        config.log_cache_bytes_max = 100;
    });
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.crash(n(3));
    let mut reads = 0;
    for i in 0..40 {
        let actions = cluster.step(
            n(1),
            Event::Propose {
                request: RequestId(1000 + i),
                payloads: vec![Payload::Command(Bytes::from("0123456789"))],
            },
        );
        reads += actions.iter().filter(|a| matches!(a, Action::ReadLog { .. })).count();
        cluster.deliver_all();
    }
    let leader = cluster.node(n(1));
    assert!(leader.cached_bytes() <= 100, "memory stays within the budget: {}", leader.cached_bytes());
    assert!(leader.cached_from() > LogIndex(30), "old entries left memory");
    cluster.restart(n(3));
    let ids = cluster.ids();
    for _ in 0..40 {
        cluster.tick_nodes(&ids, 1);
        loop {
            let messages = cluster.take_in_flight();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                let to = message.to;
                let actions = cluster.step(to, Event::Receive(message));
                reads += actions.iter().filter(|a| matches!(a, Action::ReadLog { .. })).count();
            }
        }
    }
    assert!(reads > 0, "the leader read evicted entries back");
    let (leader, follower) = (cluster.node(n(1)), cluster.node(n(3)));
    assert_eq!(follower.commit(), leader.commit());
    assert_eq!(follower.last_index(), leader.last_index());
    assert_eq!(follower.applied(), leader.commit());
}

#[test]
fn a_duplicated_chunk_answer_does_not_start_a_second_chain_of_chunks() {
    let mut cluster = compacted_with_n3_down(4, 5);
    cluster.restart(n(3));
    cluster.tick_nodes(&[n(1)], 5);
    let chunk = cluster.take_in_flight().into_iter().find(|m| m.to == n(3)).expect("a chunk for n3");
    cluster.step(n(3), Event::Receive(chunk));
    let answer = cluster.take_in_flight().into_iter().find(|m| m.to == n(1)).expect("n3's answer");
    let chunks = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Send(Message { body: Body::SnapshotRequest { .. }, .. })))
            .count()
    };
    assert_eq!(chunks(&cluster.step(n(1), Event::Receive(answer.clone()))), 1, "the next chunk");
    assert_eq!(chunks(&cluster.step(n(1), Event::Receive(answer))), 0, "a duplicate moves nothing");
}

#[test]
fn a_malformed_append_at_the_snapshot_boundary_is_refused_not_a_panic() {
    let mut cluster = compacted_with_n3_down(4, 5);
    let base = cluster.node(n(2)).snapshot_meta();
    let term = cluster.node(n(2)).term();
    let bad = Message {
        from: n(1),
        to: n(2),
        term,
        body: Body::AppendRequest {
            prev_log_index: base.index,
            prev_log_term: Term(base.term.0 - 1), // not the snapshot's term, not in the future
            entries: Vec::new(),
            leader_commit: base.index,
            seq: 99,
        },
    };
    let actions = cluster.step(n(2), Event::Receive(bad));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Send(Message {
            body: Body::AppendResponse { outcome: AppendOutcome::Rejected { .. }, .. },
            ..
        })
    )));
}

#[test]
fn malformed_messages_from_a_peer_are_dropped_not_acted_on() {
    let mut node = Lone::new();
    let term = Term(2);
    let entry =
        |index: u64, term: u64| Entry { index: LogIndex(index), term: Term(term), payload: Payload::Noop };
    let append = |prev: u64, entries: Vec<Entry>| Message {
        from: n(1),
        to: n(3),
        term,
        body: Body::AppendRequest {
            prev_log_index: LogIndex(prev),
            prev_log_term: Term::ZERO,
            entries,
            leader_commit: LogIndex(0),
            seq: 1,
        },
    };
    let bad = [
        append(0, vec![entry(2, 1)]),              // a gap
        append(0, vec![entry(1, 2), entry(2, 1)]), // a falling term
        append(0, vec![entry(1, 3)]),              // a term from the future
        append(u64::MAX, vec![entry(0, 1)]),       // an index that overflows
        Message {
            from: n(1),
            to: n(3),
            term,
            body: Body::SnapshotRequest {
                membership: three(),
                meta: SnapshotMeta { index: LogIndex(5), term: Term(3) }, // a later term
                total: 1,
                checksum: 0,
                offset: 0,
                chunk: Bytes::from("x"),
            },
        },
        Message {
            from: n(1),
            to: n(3),
            term,
            body: Body::SnapshotRequest {
                membership: three(),
                meta: SnapshotMeta { index: LogIndex(5), term: Term(1) },
                total: 1,
                checksum: 0,
                offset: u64::MAX,
                chunk: Bytes::from("x"), // runs past the snapshot and past u64
            },
        },
    ];
    for message in bad {
        let actions = node.step(n(3), Event::Receive(message));
        assert!(actions.is_empty(), "{actions:?}");
    }
    assert_eq!(node.node(n(3)).marks().malformed_messages, 6);
    assert_eq!((node.node(n(3)).term(), node.node(n(3)).last_index()), (Term::ZERO, LogIndex::ZERO));
    // A well-formed one is still served.
    let actions = node.step(n(3), Event::Receive(append(0, vec![entry(1, 2)])));
    assert_eq!(node.node(n(3)).last_index(), LogIndex(1), "{actions:?}");
}
