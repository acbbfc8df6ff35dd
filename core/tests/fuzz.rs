//! proptest state-machine fuzzing of the core: random interleavings of ticks, out-of-order
//! delivery, loss, duplication, crashes, restarts, partitions, proposals and reads on an
//! in-memory cluster. The testkit checks election safety, committed-prefix agreement and
//! applied histories after every step, and the core asserts its own invariants; at the end
//! the cluster heals and must elect a leader and converge.

use proptest::prelude::*;
use replog_core::testkit::Cluster;
use replog_core::NodeId;

#[derive(Clone, Debug)]
enum Op {
    Tick(u64, u8),
    Deliver(usize),
    DeliverAll,
    Drop(usize),
    Duplicate(usize),
    Crash(u64),
    Restart(u64),
    Isolate(u64),
    Heal,
    Propose(u64),
    Read(u64),
    Campaign(u64),
    Compact(u64),
}

fn op(nodes: u64) -> impl Strategy<Value = Op> {
    let node = 1..=nodes;
    prop_oneof![
        4 => (node.clone(), 1u8..20).prop_map(|(n, t)| Op::Tick(n, t)),
        6 => any::<usize>().prop_map(Op::Deliver),
        2 => Just(Op::DeliverAll),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::Duplicate),
        1 => node.clone().prop_map(Op::Crash),
        1 => node.clone().prop_map(Op::Restart),
        1 => node.clone().prop_map(Op::Isolate),
        1 => Just(Op::Heal),
        3 => node.clone().prop_map(Op::Propose),
        1 => node.clone().prop_map(Op::Read),
        1 => node.clone().prop_map(Op::Campaign),
        1 => node.prop_map(Op::Compact),
    ]
}

fn run(nodes: u64, pre_vote: bool, ops: &[Op]) {
    let mut cluster = Cluster::new(nodes, |config| {
        config.pre_vote = pre_vote;
        config.entries_per_message_max = 2;
        config.inflight_messages_max = 2;
        config.snapshot_chunk_bytes = 5;
        // Tiny messages and cache: applied entries leave memory and are read back from "disk".
        config.message_bytes_max = 64;
        config.log_cache_bytes_max = 64;
    });
    let mut proposals = 0;
    for op in ops {
        match *op {
            Op::Tick(node, ticks) => {
                if cluster.is_up(NodeId(node)) {
                    cluster.tick_nodes(&[NodeId(node)], u32::from(ticks));
                }
            }
            Op::Deliver(at) => {
                cluster.deliver_nth(at);
            }
            Op::DeliverAll => cluster.deliver_all(),
            Op::Drop(at) => cluster.drop_nth(at),
            Op::Duplicate(at) => cluster.duplicate_nth(at),
            Op::Crash(node) => cluster.crash(NodeId(node)),
            Op::Restart(node) => {
                if !cluster.is_up(NodeId(node)) {
                    cluster.restart(NodeId(node));
                }
            }
            Op::Isolate(node) => cluster.isolate(&[NodeId(node)]),
            Op::Heal => cluster.heal(),
            Op::Propose(node) => {
                if cluster.is_up(NodeId(node)) {
                    proposals += 1;
                    cluster.propose(NodeId(node), &[&format!("p{proposals}")]);
                }
            }
            Op::Read(node) => {
                if cluster.is_up(NodeId(node)) {
                    cluster.read(NodeId(node));
                }
            }
            Op::Campaign(node) => {
                if cluster.is_up(NodeId(node)) {
                    cluster.campaign(NodeId(node));
                }
            }
            Op::Compact(node) => {
                if cluster.is_up(NodeId(node)) {
                    cluster.compact(NodeId(node));
                }
            }
        }
    }
    // Liveness: heal everything; a leader must emerge and every node must converge.
    cluster.heal();
    for id in cluster.ids() {
        if !cluster.is_up(id) {
            cluster.restart(id);
        }
    }
    cluster.run(&cluster.ids(), 150);
    let leader = cluster.leader().expect("a leader after healing");
    cluster.propose(leader, &["final"]);
    cluster.run(&cluster.ids(), 20);
    let commit = cluster.node(leader).commit();
    assert!(commit >= cluster.node(leader).last_index(), "the final proposal committed");
    for id in cluster.ids() {
        assert_eq!(cluster.node(id).commit(), commit, "{id} converged");
        assert_eq!(cluster.node(id).applied(), commit, "{id} applied everything");
        let from = cluster.node(id).cached_from().max(cluster.node(leader).cached_from());
        assert_eq!(cluster.node(id).entries(from, commit), cluster.node(leader).entries(from, commit));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_raft_safe_and_live(
        nodes in 1u64..=5,
        pre_vote in any::<bool>(),
        ops in proptest::collection::vec(op(5), 0..160),
    ) {
        let ops: Vec<Op> = ops.into_iter().filter(|op| match op {
            Op::Tick(n, _) | Op::Crash(n) | Op::Restart(n) | Op::Isolate(n) | Op::Propose(n) | Op::Read(n) | Op::Campaign(n) | Op::Compact(n) => *n <= nodes,
            _ => true,
        }).collect();
        run(nodes, pre_vote, &ops);
    }
}
