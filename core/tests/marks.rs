//! Coverage marks: the core counts its own decisions (`Node::marks`), and counting them never
//! changes what it does (the golden traces hold the behaviour).

use replog_core::testkit::Cluster;
use replog_core::*;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn plain(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
}

#[test]
fn split_vote_then_one_election_won() {
    // Four nodes, two candidates, each cut off from one voter: 2-2 (as in paper.rs, §5.2).
    let mut cluster = Cluster::new(4, plain);
    cluster.cut_link(n(1), n(4));
    cluster.cut_link(n(2), n(3));
    cluster.campaign(n(1));
    cluster.campaign(n(2));
    cluster.deliver_all();
    assert_eq!(cluster.leader(), None);
    let first = *cluster.node(n(1)).marks();
    assert_eq!((first.elections, first.split_votes, first.became_leader), (1, 0, 0));
    // n1 is still a candidate of term 1 when it campaigns again: its election never finished.
    cluster.campaign(n(1));
    let again = *cluster.node(n(1)).marks();
    assert_eq!((again.elections, again.split_votes), (2, 1));

    cluster.heal();
    cluster.run(&cluster.ids(), 40);
    let leader = cluster.leader().expect("a leader after the split");
    assert_eq!(cluster.node(leader).marks().became_leader, 1);
    let all: Vec<Marks> = cluster.ids().iter().map(|&id| *cluster.node(id).marks()).collect();
    assert_eq!(all.iter().map(|m| m.became_leader).sum::<u64>(), 1, "one election won");
    assert!(all.iter().all(|m| m.pre_vote_campaigns == 0 && m.leader_stepdowns == 0));
}

#[test]
fn leader_stepdown_and_truncation_are_counted() {
    let mut cluster = Cluster::new(3, plain);
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.isolate(&[n(1)]);
    cluster.propose(n(1), &["lost"]); // appended on n1 only
    cluster.campaign(n(2));
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(n(2)));
    cluster.heal();
    cluster.run(&cluster.ids(), 10);
    let old = cluster.node(n(1)).marks();
    assert_eq!((old.became_leader, old.leader_stepdowns, old.truncations), (1, 1, 1));
    let new = cluster.node(n(2)).marks();
    assert_eq!(new.leader_stepdowns, 0);
    assert!(new.stale_term_messages > 0, "the old leader's term-1 messages reached n2");
}

#[test]
fn pre_vote_rejections_and_the_lease_are_counted() {
    // n1's log is behind n2's, and no leader is known: n2 rejects n1's pre-vote.
    let mut cluster = Cluster::from_logs(&[&[1], &[1, 1]], |config| config.check_quorum = false);
    cluster.campaign(n(1));
    cluster.deliver_all();
    let (candidate, voter) = (*cluster.node(n(1)).marks(), *cluster.node(n(2)).marks());
    assert_eq!((candidate.pre_vote_campaigns, candidate.elections), (1, 0));
    assert_eq!(voter.pre_vote_rejections_sent, 1);
    assert_eq!(cluster.node(n(1)).term(), Term(1), "a lost pre-vote bumps no term");

    // With check-quorum, nodes that hear from their leader ignore a returning node's pre-votes.
    let mut cluster = Cluster::new(3, |_| {});
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.isolate(&[n(3)]);
    cluster.run(&cluster.ids(), 60);
    assert!(cluster.node(n(3)).marks().pre_vote_campaigns > 0);
    cluster.heal();
    cluster.tick_nodes(&[n(3)], 30);
    cluster.deliver_all();
    let ignored: u64 = [1, 2].iter().map(|&id| cluster.node(n(id)).marks().votes_ignored_by_lease).sum();
    assert!(ignored > 0, "the leader lease turned the pre-votes away");
    assert_eq!(cluster.leader(), Some(n(1)));
}
