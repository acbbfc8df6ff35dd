//! Storage faults on acknowledged data (protocol-aware recovery) and what a leader sends to a
//! follower that does not answer.

use replog_core::testkit::Cluster;
use replog_core::*;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

/// Elects n1 in a cluster of `size` and commits `count` commands of `bytes` bytes each.
fn cluster_with_log(size: u64, count: usize, bytes: usize) -> Cluster {
    let mut cluster = Cluster::new(size, |_| {});
    cluster.campaign(n(1));
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(n(1)));
    let command = "x".repeat(bytes);
    for _ in 0..count {
        cluster.propose(n(1), &[command.as_str()]);
        cluster.deliver_all();
    }
    cluster
}

/// Ticks the running nodes for `ticks`, delivering everything except what goes to `dead`;
/// returns the entry bytes (payload plus per-entry overhead) sent to `dead`.
fn run_counting_bytes_to(cluster: &mut Cluster, dead: NodeId, ticks: u32) -> u64 {
    let mut bytes = 0;
    let alive: Vec<NodeId> = cluster.ids().into_iter().filter(|&id| id != dead).collect();
    for _ in 0..ticks {
        cluster.tick_nodes(&alive, 1);
        loop {
            let messages = cluster.take_in_flight();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                if message.to == dead {
                    if let Body::AppendRequest { entries, .. } = &message.body {
                        bytes += entries.iter().map(Entry::size_bytes).sum::<u64>();
                    }
                } else {
                    let to = message.to;
                    let _ = cluster.step(to, Event::Receive(message));
                }
            }
        }
    }
    bytes
}

#[test]
fn a_follower_that_never_answers_gets_empty_probes() {
    let mut cluster = cluster_with_log(3, 3, 10);
    cluster.crash(n(3));
    // A backlog n3 never receives: 1,500 commands of 1 KB, committed by n1 and n2.
    let command = "y".repeat(1000);
    for _ in 0..1500 {
        cluster.propose(n(1), &[command.as_str()]);
        let _ = run_counting_bytes_to(&mut cluster, n(3), 0);
        cluster.deliver_all();
    }
    let heartbeat = Config::new(n(1), vec![]).heartbeat_ticks;
    let intervals = 100;
    let bytes = run_counting_bytes_to(&mut cluster, n(3), heartbeat * intervals);
    let per_interval = bytes / u64::from(intervals);
    println!("entry bytes to a dead follower per heartbeat interval: {per_interval}");
    // At most one probe with entries after it fell silent; then empty probes only.
    assert!(per_interval <= 2_000, "{per_interval} bytes per heartbeat interval to a dead follower");
    assert!(cluster.node(n(1)).is_leader());
}

#[test]
fn a_follower_that_lost_acknowledged_entries_is_repaired_and_votes_only_after() {
    let mut cluster = cluster_with_log(3, 8, 10);
    let last = cluster.node(n(1)).last_index();
    assert_eq!(cluster.node(n(3)).last_index(), last);
    cluster.crash(n(3));
    // n3 had acknowledged and committed everything; its disk now holds only 3 entries.
    cluster.lose_entries(n(3), 3);
    cluster.restart(n(3));
    assert!(cluster.node(n(3)).is_repairing(), "its log ends before its commit index");
    // The leader learns from n3's rejection that it lost what it acknowledged, and resends it.
    cluster.run(&cluster.ids(), 40);
    assert_eq!(cluster.node(n(3)).last_index(), last, "{}", cluster.describe());
    assert!(!cluster.node(n(3)).is_repairing());
    assert!(cluster.node(n(1)).marks().lost_entries_detected >= 1);
}

#[test]
fn a_repairing_node_neither_votes_nor_campaigns() {
    let mut cluster = cluster_with_log(3, 8, 10);
    cluster.crash(n(1));
    cluster.crash(n(3));
    cluster.lose_entries(n(3), 2);
    cluster.restart(n(3));
    // n2 holds everything but needs n3's vote; n3 must not give it before it is repaired.
    cluster.campaign(n(2));
    cluster.deliver_all();
    cluster.campaign(n(3));
    cluster.deliver_all();
    assert_eq!(cluster.leader(), None, "{}", cluster.describe());
    assert!(cluster.node(n(3)).marks().repair_refusals >= 2);
    // The old leader returns: it (or n2 with its vote) leads, and n3 is repaired.
    cluster.restart(n(1));
    cluster.run(&cluster.ids(), 200);
    let leader = cluster.leader().expect("a leader once n1 is back");
    assert_ne!(leader, n(3));
    assert_eq!(cluster.node(n(3)).last_index(), cluster.node(leader).last_index(), "{}", cluster.describe());
}
