//! Elections beyond the paper's tests: how the leader lease (dissertation §4.2.3) and an
//! election started afterwards share terms.

use replog_core::testkit::Cluster;
use replog_core::*;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

/// With pre-vote off, a candidate whose log is behind asks while the others still hold their
/// leader lease: they ignore it and keep their term (§4.2.3), but it voted for itself in its
/// new term. The one node that can win must not hold its own election in that term, where the
/// lagging candidate's vote is spent: it starts above it, and wins in one round (simulator seed
/// 4885: five terms for one failover).
#[test]
fn an_election_starts_above_a_term_whose_request_the_lease_ignored() {
    let mut cluster = Cluster::new(3, |config| {
        config.pre_vote = false;
        config.check_quorum = true;
    });
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.propose(n(1), &["a"]);
    cluster.run(&cluster.ids(), 6);
    // n3 misses the next entries, so only n2 can win once n1 is gone.
    cluster.cut_link(n(1), n(3));
    cluster.propose(n(1), &["b", "c"]);
    cluster.run(&[n(1), n(2)], 3);
    assert!(cluster.node(n(2)).last_index() > cluster.node(n(3)).last_index());
    let term = cluster.node(n(2)).term();
    cluster.crash(n(1));
    cluster.heal();

    // n3 campaigns at once: n2 heard from n1 moments ago and ignores it.
    cluster.campaign(n(3));
    cluster.deliver_all();
    assert_eq!(cluster.node(n(3)).term(), term.next());
    assert_eq!(cluster.node(n(2)).term(), term, "the lease keeps n2's term");
    assert_eq!(cluster.node(n(2)).marks().votes_ignored_by_lease, 1);

    // n2's election skips the term n3 spent, and n3 (its log behind) grants.
    cluster.campaign(n(2));
    cluster.deliver_all();
    assert_eq!(cluster.node(n(2)).term(), term.next().next());
    assert_eq!(cluster.leader(), Some(n(2)), "{}", cluster.describe());
}
