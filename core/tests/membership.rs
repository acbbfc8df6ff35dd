//! Membership changes (dissertation chapter 4): single-server changes carried in the log,
//! learners that catch up before they count, refusals, a leader that removes itself, removed
//! servers that must not disrupt, and configurations through truncation, compaction and
//! restarts. "§4.x" are sections of Ongaro's dissertation (2014).

use replog_core::testkit::Cluster;
use replog_core::*;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

/// Neither pre-vote nor check-quorum: elections happen exactly when a test says so.
fn plain(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
}

/// n1 leads `size` nodes and has committed (and spread the commit index of) its no-op and one
/// command, so the first-commit barrier is behind it.
fn led_by_n1(size: u64, tweak: impl FnMut(&mut Config)) -> Cluster {
    let mut cluster = Cluster::new(size, tweak);
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.propose(n(1), &["a"]);
    cluster.run(&cluster.ids(), 6);
    assert_eq!(cluster.leader(), Some(n(1)));
    cluster
}

fn add(id: u64, promote: bool) -> MembershipChange {
    MembershipChange::Add { id: n(id), address: format!("addr-{id}"), promote }
}

fn remove(id: u64) -> MembershipChange {
    MembershipChange::Remove { id: n(id) }
}

fn promote(id: u64) -> MembershipChange {
    MembershipChange::Promote { id: n(id) }
}

/// `change` at n1, delivered until quiet; panics unless it committed.
fn change_committed(cluster: &mut Cluster, change: MembershipChange) {
    let request = cluster.change(n(1), change.clone(), false);
    cluster.deliver_all();
    assert!(
        matches!(cluster.reply(request), Some(Reply::Committed { .. })),
        "{change:?}: {:?}",
        cluster.reply(request)
    );
}

fn role_of(cluster: &Cluster, at: u64, member: u64) -> Option<MemberRole> {
    cluster.node(n(at)).membership().members.get(&n(member)).map(|member| member.role)
}

fn refusal(cluster: &Cluster, request: RequestId) -> Option<ChangeRefusal> {
    match cluster.reply(request) {
        Some(Reply::Rejected { reason: RejectReason::Change(refusal), .. }) => Some(*refusal),
        _ => None,
    }
}

fn sent(actions: &[Action]) -> Vec<&Message> {
    actions.iter().filter_map(|a| if let Action::Send(m) = a { Some(m) } else { None }).collect()
}

/// n1's configuration, its index and its last log index: what a refused change must not move.
fn configuration_state(cluster: &Cluster) -> (Membership, LogIndex, LogIndex) {
    let leader = cluster.node(n(1));
    (leader.membership().clone(), leader.membership_index(), leader.last_index())
}

// ---- votes across configurations ----

/// §4.1: a server uses the latest configuration in its log, so a voter promoted in an entry
/// another server lacks is no voter to it. Its vote request is still heard when its log is at
/// least as up to date: here it is the only node that can win (n2 lacks `q`, n3 lacks the
/// promotion), and dropping its requests would leave the cluster without a leader for good.
#[test]
fn a_voter_of_a_configuration_another_lacks_can_still_be_elected() {
    let mut cluster = led_by_n1(3, plain);
    cluster.add_node(n(4));
    change_committed(&mut cluster, add(4, false));
    cluster.isolate(&[n(3)]);
    change_committed(&mut cluster, promote(4));
    assert!(!cluster.node(n(3)).membership().is_voter(n(4)), "n3 never got the promotion");
    // q reaches n4 only; then n1 is gone.
    cluster.cut_link(n(1), n(2));
    cluster.propose(n(1), &["q"]);
    cluster.deliver_all();
    cluster.crash(n(1));
    cluster.heal();
    cluster.campaign(n(4));
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(n(4)), "n2 and n3 both grant: n4's log is the most up to date");
    assert_eq!(cluster.node(n(3)).marks().votes_from_non_voters, 0);
}

/// A node that never campaigns (here a learner) forgets its leader once it has heard nothing
/// for an election timeout, like a voter does when it campaigns. Otherwise its leader lease
/// (§4.2.3) would stay armed against every candidate for most of each timeout, and a learner
/// that a newer configuration made a voter could never help elect anyone (simulator seed 731).
#[test]
fn a_node_that_does_not_campaign_forgets_a_silent_leader() {
    let mut cluster = led_by_n1(3, |_| {});
    cluster.add_node(n(4));
    change_committed(&mut cluster, add(4, false));
    assert_eq!(cluster.node(n(4)).leader(), Some(n(1)));
    cluster.crash(n(1));
    let before = cluster.node(n(4)).marks().campaigns_as_non_voter;
    while cluster.node(n(4)).marks().campaigns_as_non_voter == before {
        cluster.tick_nodes(&[n(4)], 1);
    }
    assert_eq!(cluster.node(n(4)).leader(), None, "its timer fired with nothing heard");
    // A candidate ahead of it (n2 holds what n4 holds, and more) is answered, not ignored.
    let (last, term) = (cluster.node(n(4)).last_index(), cluster.node(n(4)).last_term());
    let request = Body::VoteRequest {
        pre_vote: true,
        last_log_index: last.next(),
        last_log_term: term,
        transfer: false,
    };
    let message = Message { from: n(2), to: n(4), term: term.next(), body: request };
    let actions = cluster.step(n(4), Event::Receive(message));
    assert!(
        sent(&actions).iter().any(|m| matches!(m.body, Body::VoteResponse { pre_vote: true, .. })),
        "{actions:?}"
    );
}

// ---- learners ----

/// §4.2.1: a learner receives the log but never votes, never counts in a quorum and never
/// campaigns.
#[test]
fn a_learner_gets_the_log_but_never_votes_counts_or_campaigns() {
    let mut cluster = led_by_n1(3, |_| {});
    for id in [4, 5] {
        cluster.add_node(n(id));
        change_committed(&mut cluster, add(id, false));
    }
    cluster.propose(n(1), &["b"]);
    cluster.run(&cluster.ids(), 6);
    let (leader, learner) = (cluster.node(n(1)), cluster.node(n(4)));
    assert_eq!(learner.last_index(), leader.last_index(), "it receives the whole log");
    assert_eq!(learner.commit(), leader.commit());
    assert_eq!(learner.membership(), leader.membership(), "it learned the configuration from the log");
    assert_eq!(role_of(&cluster, 4, 4), Some(MemberRole::Learner));
    // Kept a learner: no automatic promotion however long it has been caught up.
    assert_eq!(cluster.node(n(1)).marks().promotions, 0);

    // Never counts: with both other voters cut off, the leader and the two learners (3 of 5
    // members, 1 of 3 voters) commit nothing, though the learners hold the entry.
    cluster.isolate(&[n(2), n(3)]);
    let commit = cluster.node(n(1)).commit();
    let request = cluster.propose(n(1), &["needs a voter"]);
    cluster.deliver_all();
    for id in [4, 5] {
        assert_eq!(cluster.node(n(id)).last_index(), cluster.node(n(1)).last_index());
    }
    assert_eq!(cluster.node(n(1)).commit(), commit);
    assert_eq!(cluster.reply(request), None);
    cluster.heal();
    cluster.run(&cluster.ids(), 6);
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));

    // Never asked to vote, and their votes would not count: n2 campaigns with n1 and n3 down.
    cluster.crash(n(1));
    cluster.crash(n(3));
    let actions = cluster.step(n(2), Event::Campaign);
    let asked: Vec<NodeId> = sent(&actions).iter().map(|m| m.to).collect();
    assert_eq!(asked, vec![n(1), n(3)], "pre-vote requests go to the voters only");
    let term = cluster.node(n(2)).term();
    for learner in [4, 5] {
        let body = Body::VoteResponse { pre_vote: true, granted: true };
        let grant = Message { from: n(learner), to: n(2), term: term.next(), body };
        cluster.step(n(2), Event::Receive(grant));
    }
    assert_eq!(cluster.node(n(2)).role(), RoleKind::PreCandidate, "the learners' grants do not count");
    cluster.drop_all();

    // Never campaigns: a learner that hears from no leader for ten election timeouts stays put.
    cluster.isolate(&[n(4)]);
    let term = cluster.node(n(4)).term();
    cluster.tick_nodes(&[n(4)], 300);
    cluster.step(n(4), Event::Campaign);
    let learner = cluster.node(n(4));
    assert!(learner.marks().campaigns_as_non_voter >= 11, "{:?}", learner.marks());
    assert_eq!(learner.marks().pre_vote_campaigns + learner.marks().elections, 0);
    assert_eq!((learner.term(), learner.role()), (term, RoleKind::Follower));
    assert_eq!(cluster.in_flight(), 0, "it sent nothing");
}

/// §4.2.1: a server added with promotion becomes a voter once caught up, through a second
/// configuration entry the leader appends by itself.
#[test]
fn a_joining_learner_is_promoted_once_caught_up() {
    let mut cluster = led_by_n1(3, |_| {});
    cluster.add_node(n(4));
    let request = cluster.change(n(1), add(4, true), false);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));
    assert_eq!(role_of(&cluster, 1, 4), Some(MemberRole::Joining));
    // The leader looks at each heartbeat interval: the first one reaches n4 (a probe), the
    // second finds it answered and caught up.
    cluster.run(&cluster.ids(), 11);
    let leader = cluster.node(n(1));
    assert_eq!(leader.marks().promotions, 1);
    assert!(leader.membership().is_voter(n(4)));
    assert!(leader.commit() >= leader.membership_index(), "the promotion committed");
    for id in 1..=4 {
        assert_eq!(cluster.node(n(id)).membership(), leader.membership(), "n{id}");
    }
    // It counts now: four voters, three make a quorum; n1 + n4 alone no longer commit.
    cluster.isolate(&[n(2), n(3)]);
    let commit = cluster.node(n(1)).commit();
    cluster.propose(n(1), &["needs three"]);
    cluster.deliver_all();
    assert_eq!(cluster.node(n(1)).commit(), commit);
    cluster.heal();
    cluster.isolate(&[n(3)]);
    // The copy n2 lost is sent again once a heartbeat interval passed without progress.
    cluster.run(&[n(1), n(2), n(4)], 11);
    assert!(cluster.node(n(1)).commit() > commit, "n1, n2 and the new voter n4 are a quorum");
}

/// §4.2.1: a server far behind is not made a voter: it would hold up every commit until it had
/// copied the log.
#[test]
fn a_joining_learner_far_behind_is_not_promoted() {
    const LAG_MAX: u64 = 2;
    let mut cluster = led_by_n1(3, |config| {
        config.promote_lag_entries_max = LAG_MAX;
        config.entries_per_message_max = 1;
        config.inflight_messages_max = 1;
    });
    for i in 0..40 {
        cluster.propose(n(1), &[format!("c{i}").as_str()]);
    }
    cluster.run(&cluster.ids(), 6);
    cluster.add_node(n(4));
    cluster.cut_link(n(1), n(4));
    let request = cluster.change(n(1), add(4, true), false);
    // Twenty heartbeat intervals while n4 has nothing of the 40-odd committed entries.
    cluster.run(&[n(1), n(2), n(3)], 100);
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));
    assert_eq!(role_of(&cluster, 1, 4), Some(MemberRole::Joining));
    assert_eq!(cluster.node(n(1)).marks().promotions, 0);
    // Once it can catch up it is promoted, and only when within LAG_MAX of the commit index.
    cluster.heal();
    for _ in 0..100 {
        let leader = cluster.node(n(1));
        let matched = leader.status().peers.iter().find(|p| p.id == n(4)).expect("n4 progress").match_index;
        let commit = leader.commit();
        cluster.tick_nodes(&cluster.ids(), 1);
        if cluster.node(n(1)).membership().is_voter(n(4)) {
            assert!(matched.0 + LAG_MAX >= commit.0, "promoted at match {matched} with commit {commit}");
            break;
        }
        cluster.deliver_all();
    }
    assert_eq!(cluster.node(n(1)).marks().promotions, 1);
}

/// §4.2.1: "caught up" means heard from and close behind, not merely a short log: a server
/// that never answered (down, or a wrong address) is not made a voter, or a one-voter
/// cluster would need it for every commit from then on.
#[test]
fn a_joining_learner_that_never_answers_is_not_promoted() {
    let mut cluster = Cluster::new(1, |_| {});
    cluster.campaign(n(1));
    cluster.deliver_all();
    // n2 is added but never starts: everything sent to it is lost.
    change_committed(&mut cluster, add(2, true));
    cluster.run(&[n(1)], 50);
    assert_eq!(role_of(&cluster, 1, 2), Some(MemberRole::Joining));
    assert_eq!(cluster.node(n(1)).marks().promotions, 0);
    let request = cluster.propose(n(1), &["alone"]);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })), "n1 still commits alone");
    // Once it runs and answers, it is promoted.
    cluster.add_node(n(2));
    cluster.run(&cluster.ids(), 12);
    assert!(cluster.node(n(1)).membership().is_voter(n(2)));
    assert!(cluster.node(n(2)).membership().is_voter(n(2)));
}

// ---- operators' changes ----

/// §4.1: promote by hand, remove a follower, remove a learner; each one committed entry, in
/// force everywhere.
#[test]
fn promote_remove_a_follower_and_remove_a_learner() {
    let mut cluster = led_by_n1(3, |_| {});
    cluster.add_node(n(4));
    cluster.add_node(n(5));
    change_committed(&mut cluster, add(4, false));
    change_committed(&mut cluster, promote(4));
    assert!(cluster.node(n(4)).membership().is_voter(n(4)));
    assert_eq!(cluster.node(n(1)).membership().voter_count(), 4);

    change_committed(&mut cluster, remove(3));
    let leader = cluster.node(n(1));
    assert!(!leader.membership().contains(n(3)));
    let peers: Vec<NodeId> = leader.status().peers.iter().map(|p| p.id).collect();
    assert_eq!(peers, vec![n(2), n(4)], "no replication to a removed member");
    // Three voters again: n1 + n4 commit with n2 and n3 down.
    cluster.crash(n(2));
    cluster.crash(n(3));
    let request = cluster.propose(n(1), &["without n2 and n3"]);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));
    cluster.restart(n(2));
    cluster.run(&[n(1), n(2), n(4), n(5)], 6);

    change_committed(&mut cluster, add(5, false));
    assert_eq!(role_of(&cluster, 2, 5), Some(MemberRole::Learner));
    change_committed(&mut cluster, remove(5));
    cluster.run(&[n(1), n(2), n(4)], 6);
    // The bootstrap members have no address in a test cluster.
    let mut expected = Membership::voters_only([n(1), n(2), n(4)]);
    expected.members.get_mut(&n(4)).expect("n4").address = "addr-4".into();
    for id in [1, 2, 4] {
        assert_eq!(cluster.node(n(id)).membership(), &expected, "n{id}");
    }
    assert_eq!(cluster.node(n(1)).marks().membership_changes, 5);
}

/// §4.1: a change must make sense in the latest configuration, one at a time, from the leader.
/// Each refusal leaves the configuration (and the log) as it was, and says why.
#[test]
fn invalid_changes_are_refused_and_change_nothing() {
    let mut cluster = led_by_n1(3, |config| {
        config.addresses = (1..=3).map(|id| (n(id), format!("addr-{id}"))).collect();
    });
    let before = configuration_state(&cluster);
    let cases = [
        (add(2, false), ChangeRefusal::AlreadyMember(n(2))),
        (
            MembershipChange::Add { id: n(4), address: "addr-3".into(), promote: false },
            ChangeRefusal::AddressInUse(n(3)),
        ),
        (promote(9), ChangeRefusal::UnknownMember(n(9))),
        (promote(2), ChangeRefusal::AlreadyVoter(n(2))),
        (remove(9), ChangeRefusal::UnknownMember(n(9))),
    ];
    for (change, expected) in cases {
        let request = cluster.change(n(1), change.clone(), false);
        assert_eq!(refusal(&cluster, request), Some(expected), "{change:?}");
        assert_eq!(configuration_state(&cluster), before, "{change:?}");
    }
    assert_eq!(cluster.node(n(1)).marks().changes_refused, 5);
    assert_eq!(cluster.node(n(1)).marks().membership_changes, 0);

    // A follower does not decide: it names the leader.
    let request = cluster.change(n(2), add(4, false), false);
    assert_eq!(cluster.reply(request), Some(&Reply::NotLeader { request, leader: Some(n(1)) }));
    assert_eq!(cluster.node(n(2)).membership(), &before.0);

    // §4.1: one change at a time.
    let first = cluster.change(n(1), add(4, false), false);
    let after_first = configuration_state(&cluster);
    let second = cluster.change(n(1), add(5, false), false);
    assert_eq!(refusal(&cluster, second), Some(ChangeRefusal::Pending));
    assert_eq!(configuration_state(&cluster), after_first);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(first), Some(Reply::Committed { .. })));
    // Committed: the next one is taken.
    let third = cluster.change(n(1), add(5, false), false);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(third), Some(Reply::Committed { .. })));

    // §3.10: not while leadership is being handed over.
    cluster.step(n(1), Event::TransferLeadership { to: n(2) });
    let before = configuration_state(&cluster);
    let request = cluster.change(n(1), remove(5), false);
    assert!(matches!(
        cluster.reply(request),
        Some(Reply::Rejected { reason: RejectReason::Transferring, .. })
    ));
    assert_eq!(configuration_state(&cluster), before);
}

/// §4.1: a configuration keeps at least one voter; a one-voter cluster cannot remove its
/// voter, learners or not, forced or not.
#[test]
fn the_last_voter_cannot_be_removed() {
    let mut cluster = Cluster::new(1, |_| {});
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.add_node(n(2));
    change_committed(&mut cluster, add(2, false));
    let before = configuration_state(&cluster);
    let request = cluster.change(n(1), remove(1), false);
    assert_eq!(refusal(&cluster, request), Some(ChangeRefusal::LastVoter));
    let request = cluster.change(n(1), remove(1), true);
    assert_eq!(refusal(&cluster, request), Some(ChangeRefusal::LastVoter), "not even forced");
    assert_eq!(configuration_state(&cluster), before);
}

/// The first-commit barrier (Ongaro's 2015 correction to §4.1, see below): a new leader
/// changes nothing until its no-op committed.
#[test]
fn a_new_leader_refuses_changes_until_it_committed_an_entry_of_its_term() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.campaign(n(1));
    while !cluster.node(n(1)).is_leader() {
        assert!(cluster.deliver_one(), "n1 wins");
    }
    let before = configuration_state(&cluster);
    assert!(cluster.node(n(1)).commit() < before.2, "its no-op is not committed yet");
    let request = cluster.change(n(1), add(4, false), false);
    assert_eq!(refusal(&cluster, request), Some(ChangeRefusal::NotReady));
    assert_eq!(configuration_state(&cluster), before);
    cluster.deliver_all();
    let request = cluster.change(n(1), add(4, false), false);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));
}

/// §4.1's availability concern, as a check: removing n2 while n3 is down leaves {n1, n3} with one live voter of
/// the two it needs. Refused; forced, it is taken and cannot commit until n3 is back.
#[test]
fn a_change_that_leaves_no_live_quorum_is_refused_unless_forced() {
    // Without check-quorum, so the leader waits for n3 rather than stepping down once the
    // forced configuration has no live quorum.
    let mut cluster = led_by_n1(3, |config| config.check_quorum = false);
    cluster.crash(n(3));
    // n3 silent for more than an election timeout.
    cluster.run(&[n(1), n(2)], 20);
    assert!(cluster.node(n(1)).is_leader());
    let before = configuration_state(&cluster);
    let request = cluster.change(n(1), remove(2), false);
    assert_eq!(refusal(&cluster, request), Some(ChangeRefusal::Unsafe { live: 1, needed: 2 }));
    assert_eq!(configuration_state(&cluster), before);

    let forced = cluster.change(n(1), remove(2), true);
    cluster.run(&[n(1), n(2)], 20);
    let leader = cluster.node(n(1));
    assert!(!leader.membership().contains(n(2)), "in force at once");
    assert!(leader.commit() < leader.membership_index(), "but {{n1, n3}} cannot commit without n3");
    assert_eq!(cluster.reply(forced), None);
    cluster.restart(n(3));
    cluster.run(&[n(1), n(3)], 6);
    assert!(matches!(cluster.reply(forced), Some(Reply::Committed { .. })));
}

/// §4.1, the live-quorum check: it counts only voters the leader has heard from: a leader elected
/// after a follower died must not take it for live because it has not been leading long
/// enough to notice its silence.
#[test]
fn a_new_leader_does_not_count_a_follower_it_never_heard_from_as_live() {
    let mut cluster = led_by_n1(3, |_| {});
    cluster.crash(n(3));
    cluster.run(&[n(1), n(2)], 40);
    // A hand-over elects n2 at once; its no-op commits with n1.
    cluster.step(n(1), Event::TransferLeadership { to: n(2) });
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(n(2)));
    let leader = cluster.node(n(2));
    assert_eq!(leader.term_at(leader.commit()), Some(leader.term()), "past the barrier");
    // Removing n1 would leave {n2, n3} with n3 dead: the cluster could commit nothing more.
    let request = cluster.change(n(2), remove(1), false);
    assert_eq!(refusal(&cluster, request), Some(ChangeRefusal::Unsafe { live: 1, needed: 2 }));
}

/// §3.10 meets §4.2.1: a learner cannot win an election, so a hand-over to one is ignored
/// like one to a stranger, instead of stopping proposals for an election timeout.
#[test]
fn leadership_is_not_handed_to_a_learner() {
    let mut cluster = led_by_n1(3, |_| {});
    cluster.add_node(n(4));
    change_committed(&mut cluster, add(4, false));
    cluster.run(&cluster.ids(), 6);
    cluster.step(n(1), Event::TransferLeadership { to: n(4) });
    assert_eq!(cluster.node(n(1)).marks().transfers_started, 0);
    assert_eq!(cluster.node(n(1)).status().transferring_to, None);
    let request = cluster.propose(n(1), &["not held up"]);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));
    assert_eq!(cluster.leader(), Some(n(1)));
}

// ---- removing the leader ----

/// §4.2.2: a leader that removes itself replicates the change without counting itself, steps
/// down once it commits, and hands over (`TimeoutNow`) so the others need not wait a timeout.
#[test]
fn a_removed_leader_steps_down_once_its_removal_commits_and_hands_over() {
    let mut cluster = led_by_n1(3, |_| {});
    let term = cluster.node(n(1)).term();
    cluster.isolate(&[n(3)]);
    let campaigns_before =
        cluster.node(n(1)).marks().elections + cluster.node(n(1)).marks().pre_vote_campaigns;
    let request = cluster.change(n(1), remove(1), false);
    let after = cluster.propose(n(1), &["after the removal"]);
    cluster.deliver_all();
    let leader = cluster.node(n(1));
    assert!(leader.is_leader(), "it leads until the removal commits");
    assert_eq!(cluster.node(n(2)).last_index(), leader.last_index(), "and keeps replicating");
    // n1 and n2 hold it, but in {n2, n3} that is one voter of the two needed.
    assert!(leader.commit() < leader.membership_index(), "the removed leader does not count itself");
    assert_eq!(cluster.reply(request), None);

    cluster.heal();
    let mut rounds = 0;
    while cluster.leader().is_none_or(|leader| leader == n(1)) {
        rounds += 1;
        assert!(rounds <= 6, "a new leader within a heartbeat interval or so");
        cluster.run(&cluster.ids(), 1);
    }
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));
    // Once it appended its removal it takes no new entries: one would keep every voter's log
    // short of its own, and the hand-over (TimeoutNow to a voter whose log matches it) miss.
    assert!(
        matches!(cluster.reply(after), Some(Reply::Rejected { reason: RejectReason::Transferring, .. })),
        "{:?}",
        cluster.reply(after)
    );
    let old = cluster.node(n(1));
    assert_eq!((old.marks().removed_stepdowns, old.role()), (1, RoleKind::Follower));
    let new = cluster.leader().expect("a new leader");
    assert_eq!(cluster.node(new).term(), term.next());
    assert_eq!(cluster.node(new).marks().transfer_elections, 1, "elected on the hand-over");
    // The old leader, no voter now, never campaigns.
    cluster.run(&cluster.ids(), 100);
    assert_eq!(cluster.leader(), Some(new));
    let campaigns = cluster.node(n(1)).marks().elections + cluster.node(n(1)).marks().pre_vote_campaigns;
    assert_eq!(campaigns, campaigns_before);
    assert!(cluster.node(n(1)).marks().campaigns_as_non_voter > 0);
}

/// §4.2.2 (Figure 4.6): a leader that appended its own removal and lost office before the
/// removal committed may still be needed, so it campaigns. A member that holds the removal too
/// (its log equals the candidate's) must hear it out. Ignoring it, as a removed server whose log
/// is behind is ignored, left that member's term behind the candidate's: the members lacking the
/// removal gave each term's vote to the removed leader first, and the member that could win
/// always asked in a term already spent (simulator seed 360 at 08f8377, pre-vote off: no leader
/// for 180 ticks after the heal).
#[test]
fn a_removed_leader_is_heard_by_members_holding_its_uncommitted_removal() {
    let mut cluster = led_by_n1(4, plain);
    // The removal reaches n4 only: in {n2, n3, n4} that is one voter of the two needed.
    cluster.cut_link(n(1), n(2));
    cluster.cut_link(n(1), n(3));
    let request = cluster.change(n(1), remove(1), false);
    cluster.run(&[n(1), n(4)], 5);
    assert_eq!(cluster.node(n(4)).last_index(), cluster.node(n(1)).last_index());
    assert!(cluster.node(n(4)).commit() < cluster.node(n(4)).membership_index(), "not committed");
    assert!(!cluster.node(n(4)).membership().is_voter(n(1)));
    // n1 loses office (a restart), n2 is down: n3 (without the removal) and n4 (with it) remain.
    cluster.crash(n(1));
    cluster.crash(n(2));
    cluster.heal();
    cluster.restart(n(1));
    let term = cluster.node(n(4)).term();

    // The removed leader campaigns first; n3 knows it as a voter and grants.
    cluster.campaign(n(1));
    cluster.deliver_all();
    assert!(cluster.node(n(4)).term() > term, "n4 ignored a candidate whose log equals its own");
    // Whoever wins, the removal commits and a member leads.
    cluster.campaign(n(4));
    cluster.deliver_all();
    cluster.run(&[n(1), n(3), n(4)], 20);
    let leader = cluster.leader().expect("a leader");
    assert_ne!(leader, n(1), "{}", cluster.describe());
    assert!(
        matches!(cluster.reply(request), Some(Reply::Committed { .. })) || {
            let node = cluster.node(leader);
            node.commit() >= node.membership_index() && !node.membership().contains(n(1))
        },
        "{}",
        cluster.describe()
    );
}

/// §4.2.3: a removed server that never learned of its removal times out and campaigns; the
/// others ignore it (they know it is no voter), so it cannot raise their term or unseat the
/// leader. Checked without pre-vote or check-quorum too, where nothing else would stop it.
#[test]
fn a_removed_follower_that_keeps_running_does_not_disrupt() {
    for plain_config in [false, true] {
        let mut cluster = led_by_n1(3, |config| {
            if plain_config {
                plain(config)
            }
        });
        let term = cluster.node(n(1)).term();
        cluster.isolate(&[n(3)]);
        change_committed(&mut cluster, remove(3));
        cluster.heal();
        assert!(cluster.node(n(3)).membership().is_voter(n(3)), "n3 never got the removal");
        cluster.run(&cluster.ids(), 300);
        let removed = cluster.node(n(3));
        assert!(removed.marks().pre_vote_campaigns + removed.marks().elections > 0, "n3 tried");
        let ignored: u64 = [1, 2].iter().map(|&id| cluster.node(n(id)).marks().votes_from_non_voters).sum();
        assert!(ignored > 0, "plain={plain_config}");
        assert_eq!(cluster.leader(), Some(n(1)), "plain={plain_config}");
        assert_eq!(cluster.node(n(1)).term(), term);
        assert_eq!(cluster.node(n(2)).term(), term);
        let request = cluster.propose(n(1), &["still leading"]);
        cluster.run(&cluster.ids(), 6);
        assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));
    }
}

// ---- the configuration in the log ----

/// §4.1: a server uses the latest configuration in its log, committed or not; a configuration
/// entry a new leader overwrites takes its configuration with it.
#[test]
fn the_latest_configuration_rules_even_uncommitted_and_goes_with_its_entry() {
    let mut cluster = led_by_n1(5, |_| {});
    let bootstrap = cluster.node(n(1)).membership().clone();
    // Only n2 hears from n1: the change reaches two of five voters.
    for to in 3..=5 {
        cluster.cut_link(n(1), n(to));
    }
    let request = cluster.change(n(1), add(6, false), false);
    cluster.run(&[n(1), n(2)], 5);
    for id in [1, 2] {
        let node = cluster.node(n(id));
        assert!(node.membership().contains(n(6)), "n{id}: in force once appended");
        assert!(node.commit() < node.membership_index(), "n{id}: not committed");
    }
    // The leader replicates to the new member at once (n6 does not exist: its messages are lost).
    assert!(cluster.node(n(1)).status().peers.iter().any(|p| p.id == n(6)));
    assert!(cluster.trace().contains("(no such node)"));

    // n1 fails; n3, n4, n5 elect a leader whose log lacks the entry, and it overwrites n2's.
    cluster.crash(n(1));
    cluster.heal();
    cluster.isolate(&[n(2)]);
    cluster.run(&[n(3), n(4), n(5)], 60);
    let new = cluster.leader().expect("a leader among n3..n5");
    assert_ne!(new, n(2));
    cluster.heal();
    cluster.run(&[n(2), n(3), n(4), n(5)], 6);
    let follower = cluster.node(n(2));
    assert!(follower.marks().truncations >= 1);
    assert_eq!(follower.membership(), &bootstrap, "the truncated entry took its configuration");
    assert_eq!(follower.membership(), cluster.node(new).membership());
    assert_eq!(cluster.reply(request), None, "never committed");
}

/// §4 with §7: a snapshot carries the configuration in force at its last entry; a node that
/// installs it, and any node that restarts, recovers the same configuration.
#[test]
fn the_configuration_survives_compaction_snapshots_and_restarts() {
    let mut cluster = led_by_n1(3, |config| config.snapshot_chunk_bytes = 8);
    cluster.add_node(n(4));
    change_committed(&mut cluster, add(4, true));
    cluster.run(&cluster.ids(), 11);
    assert!(cluster.node(n(1)).membership().is_voter(n(4)), "promoted");
    // n2 misses the removal of n3: it will learn of it from the snapshot alone.
    cluster.crash(n(2));
    change_committed(&mut cluster, remove(3));
    cluster.crash(n(3));
    for i in 0..5 {
        cluster.propose(n(1), &[format!("c{i}").as_str()]);
    }
    cluster.run(&[n(1), n(4)], 6);
    let compacted = cluster.node(n(1)).membership().clone();
    let last_change = cluster.node(n(1)).membership_index();
    cluster.compact(n(1));
    let leader = cluster.node(n(1));
    assert!(leader.first_index() > last_change, "every configuration entry compacted");
    assert_eq!(leader.membership_index(), LogIndex::ZERO, "it comes from the snapshot now");
    assert_eq!(leader.snapshot().expect("compacted").membership, compacted);
    assert_eq!(leader.membership(), &compacted);

    cluster.restart(n(2));
    cluster.run(&[n(1), n(2), n(4)], 10);
    let (leader, lagging) = (cluster.node(n(1)), cluster.node(n(2)));
    assert_eq!(lagging.marks().snapshots_installed, 1);
    assert!(lagging.membership().is_voter(n(4)) && !lagging.membership().contains(n(3)));
    assert_eq!(lagging.membership(), leader.membership());

    // n5 joins after the compaction: it can only get the log through the snapshot.
    cluster.add_node(n(5));
    change_committed(&mut cluster, add(5, false));
    cluster.run(&[n(1), n(2), n(4), n(5)], 10);
    let (leader, joined) = (cluster.node(n(1)), cluster.node(n(5)));
    assert_eq!(joined.marks().snapshots_installed, 1);
    assert_eq!(joined.snapshot().expect("installed").membership, compacted);
    assert_eq!(joined.membership_at(joined.snapshot_meta().index), &compacted);
    assert_eq!(joined.membership(), leader.membership());
    assert_eq!(role_of(&cluster, 5, 5), Some(MemberRole::Learner));

    // Restarts recover it: from the log (n2), from the snapshot plus the log (n1, n5).
    for id in [1, 2, 5] {
        let membership = cluster.node(n(id)).membership().clone();
        let index = cluster.node(n(id)).membership_index();
        cluster.crash(n(id));
        cluster.restart(n(id));
        assert_eq!(cluster.node(n(id)).membership(), &membership, "n{id}");
        assert_eq!(cluster.node(n(id)).membership_index(), index, "n{id}");
    }
    // And compacting past the last change leaves it in the snapshot alone.
    cluster.run(&[n(1), n(2), n(4), n(5)], 60);
    let leader = cluster.leader().expect("a leader after the restarts");
    let membership = cluster.node(leader).membership().clone();
    cluster.compact(leader);
    cluster.crash(leader);
    cluster.restart(leader);
    assert_eq!(cluster.node(leader).membership(), &membership);
    assert_eq!(cluster.node(leader).membership_index(), LogIndex::ZERO, "it comes from the snapshot");
}

// ---- Ongaro's single-server change bug (raft-dev, 2015) ----
//
// The classic scenario, with our learners: {S1..S4} are voters and S5 a learner (committed).
// S1 (leader, term 1) promotes S5, C1 = {S1..S5}, reaching only S5. S2 wins term 2 with S3 and
// S4 and removes S1, C2 = {S2, S3, S4}, before anything of its term committed; C2 commits on
// S2 and S3 (a majority of C2) although S4 never saw term 2's entries. S1 then wins term 3
// with S4 and S5 (a majority of C1) and overwrites the committed C2. C1 and C2 differ by two
// voters (S5 in, S1 out), so their majorities need not meet. Our leaders append a no-op when
// elected, so S2's change lands after its no-op rather than at the same index; the conflict is
// the same. The first-commit barrier refuses S2's change until the no-op committed, which
// takes S4 (S1 being gone), and S4 with a term-2 entry never votes for S1's term-1 log.
// Sk is node nk; without pre-vote and check-quorum, so each election happens when the test
// says (they are not what protects against this bug).

/// Up to S2 leading term 2 with its no-op on S2 and S3 only; S1 and S5 down with C1.
fn ongaro_scenario_until_s2_leads(tweak: impl FnMut(&mut Config)) -> Cluster {
    let mut cluster = led_by_n1(4, tweak);
    cluster.add_node(n(5));
    change_committed(&mut cluster, add(5, false));
    cluster.run(&cluster.ids(), 6);
    for to in 2..=4 {
        cluster.cut_link(n(1), n(to));
    }
    let c1 = cluster.change(n(1), promote(5), false);
    cluster.deliver_all();
    assert!(cluster.node(n(5)).membership().is_voter(n(5)), "S5 holds C1");
    assert_eq!(cluster.reply(c1), None, "C1 is not committed");
    cluster.crash(n(1));
    cluster.crash(n(5));
    cluster.heal();

    cluster.campaign(n(2));
    // Its vote requests (to S1: lost; S3; S4) are answered; then S4 hears nothing more.
    for _ in 0..3 {
        cluster.deliver_one();
    }
    cluster.cut_link(n(2), n(4));
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(n(2)));
    let s2 = cluster.node(n(2));
    assert_eq!(s2.term(), Term(2));
    assert!(s2.commit() < s2.last_index(), "S2's no-op is not committed: S4 did not get it");
    cluster
}

/// With the barrier: S2's change is refused at the point where the bug lets it through, and
/// once S2 could commit in its term, S1 can no longer be elected.
#[test]
fn ongaro_scenario_the_barrier_refuses_the_change_and_the_cluster_stays_safe() {
    let mut cluster = ongaro_scenario_until_s2_leads(plain);
    let before = cluster.node(n(2)).membership().clone();
    let request = cluster.change(n(2), remove(1), false);
    assert_eq!(refusal(&cluster, request), Some(ChangeRefusal::NotReady), "where the bug proceeds");
    assert_eq!(cluster.node(n(2)).membership(), &before);

    // S4 reachable again: the no-op commits (S2, S3, S4), and so does C2 after it.
    cluster.heal();
    cluster.run(&[n(2), n(3), n(4)], 6);
    let request = cluster.change(n(2), remove(1), false);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));

    // S1 and S5 return with C1; S1 campaigns again and again, and never wins: S2..S4 know it
    // is no voter, and S4's log is ahead of S1's anyway. (S5 may take S1's higher term before
    // S2 brings it C2, and unseat S2 with it: the price of running without pre-vote and
    // check-quorum. A new leader among S2..S4 follows; safety is never at stake.)
    cluster.restart(n(1));
    cluster.restart(n(5));
    for _ in 0..5 {
        cluster.campaign(n(1));
        cluster.run(&cluster.ids(), 10);
    }
    cluster.run(&cluster.ids(), 60);
    assert_eq!(cluster.node(n(1)).marks().became_leader, 0);
    let leader = cluster.leader().expect("a leader");
    assert!([n(2), n(3), n(4)].contains(&leader), "{leader}");
    let c2 = cluster.node(leader).membership().clone();
    assert!(!c2.contains(n(1)));
    for id in 2..=5 {
        assert_eq!(cluster.node(n(id)).membership(), &c2, "n{id}");
    }
}

/// Without the barrier: C2 commits, S1 wins term 3 under C1 and commits over it; the
/// cluster's safety check catches S1's committed log differing from the committed history.
#[cfg(feature = "bugs")]
#[test]
#[should_panic(expected = "state machine safety")]
fn ongaro_scenario_without_the_barrier_loses_a_committed_configuration() {
    let mut cluster = ongaro_scenario_until_s2_leads(|config| {
        plain(config);
        config.bug = Some(Bug::ChangeWithoutFirstCommit);
    });
    let request = cluster.change(n(2), remove(1), false);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })), "C2 committed on S2, S3");
    cluster.isolate(&[n(2), n(3)]);
    cluster.restart(n(1));
    cluster.restart(n(5));
    // Term 2: S4 already voted for S2. Term 3: S4 and S5 vote for S1, a majority of C1.
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.campaign(n(1));
    cluster.deliver_all();
    unreachable!("S1 won term 3 and committed over C2 without the safety check noticing");
}

// ---- planted bugs: the wrong behaviour is observable ----

/// A leader that counts learners commits with learners only, and a leader the voters elect
/// without it then overwrites a committed entry.
#[cfg(feature = "bugs")]
#[test]
#[should_panic(expected = "state machine safety")]
fn learner_counted_in_quorum_commits_without_a_voter_majority() {
    let mut cluster = led_by_n1(3, |config| {
        plain(config);
        if config.id == n(1) {
            config.bug = Some(Bug::LearnerCountedInQuorum);
        }
    });
    for id in [4, 5] {
        cluster.add_node_with(n(id), |config| config.bug = None);
        change_committed(&mut cluster, add(id, false));
    }
    cluster.run(&cluster.ids(), 6);
    cluster.isolate(&[n(2), n(3)]);
    let request = cluster.propose(n(1), &["learners only"]);
    cluster.deliver_all();
    // The wrong behaviour: n1, n4, n5 are 3 of 5 members but 1 of 3 voters.
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })), "committed by learners");
    // n2 and n3, a majority of the voters, elect n2, which never had that entry.
    cluster.campaign(n(2));
    cluster.deliver_all();
    unreachable!("n2 leads and committed over the entry without the safety check noticing");
}

/// §4.2.2 broken: the removed leader stays leader after its removal committed, and counts
/// itself in a configuration it is not in: one voter of {n2, n3} and itself commit.
#[cfg(feature = "bugs")]
#[test]
fn removed_leader_keeps_leading_and_counting_itself() {
    let mut cluster = led_by_n1(3, |config| config.bug = Some(Bug::RemovedLeaderKeepsLeading));
    change_committed(&mut cluster, remove(1));
    cluster.run(&cluster.ids(), 20);
    let leader = cluster.node(n(1));
    assert!(!leader.membership().contains(n(1)));
    assert!(leader.commit() >= leader.membership_index(), "its removal committed");
    assert!(leader.is_leader(), "and it still leads");
    assert_eq!(leader.marks().removed_stepdowns, 0);
    cluster.isolate(&[n(3)]);
    let request = cluster.propose(n(1), &["one voter of two"]);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));
    assert!(cluster.node(n(3)).last_index() < cluster.node(n(1)).commit(), "n3 lacks a committed entry");
}
