//! The Raft paper's rules, one test each, in init / test / check form. Section numbers refer to
//! "In Search of an Understandable Consensus Algorithm" (Ongaro & Ousterhout, 2014); "§9.6",
//! "§6.2", "§6.4" and "§10.2.1" to Ongaro's dissertation (2014).

use replog_core::testkit::Cluster;
use replog_core::*;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn sent(actions: &[Action]) -> Vec<&Message> {
    actions.iter().filter_map(|a| if let Action::Send(m) = a { Some(m) } else { None }).collect()
}

fn no_pre_vote(config: &mut Config) {
    config.pre_vote = false;
}

fn plain(config: &mut Config) {
    config.pre_vote = false;
    config.check_quorum = false;
}

/// A three-node cluster with n1 elected and everything delivered.
fn elected(size: u64, tweak: impl FnMut(&mut Config)) -> Cluster {
    let mut cluster = Cluster::new(size, tweak);
    cluster.campaign(n(1));
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(n(1)));
    cluster
}

fn message(from: u64, to: u64, term: u64, body: Body) -> Event {
    Event::Receive(Message { from: n(from), to: n(to), term: Term(term), body })
}

fn append(prev: (u64, u64), entries: &[u64], commit: u64) -> Body {
    let first = prev.0 + 1;
    Body::AppendRequest {
        prev_log_index: LogIndex(prev.0),
        prev_log_term: Term(prev.1),
        entries: entries
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry { index: LogIndex(first + i as u64), term: Term(t), payload: Payload::Noop })
            .collect(),
        leader_commit: LogIndex(commit),
        seq: 0,
    }
}

fn log_terms(cluster: &Cluster, id: u64) -> Vec<u64> {
    let node = cluster.node(n(id));
    node.entries(LogIndex(1), node.last_index()).iter().map(|e| e.term.0).collect()
}

// ---- §5.1: terms ----

#[test]
fn s5_1_follower_adopts_higher_term_and_clears_vote() {
    let mut cluster = Cluster::from_logs(&[&[], &[]], plain);
    cluster.step(n(2), message(1, 2, 5, append((0, 0), &[], 0)));
    let node = cluster.node(n(2));
    assert_eq!((node.term(), node.voted_for(), node.leader()), (Term(5), None, Some(n(1))));
}

#[test]
fn s5_1_leader_steps_down_on_higher_term() {
    let mut cluster = elected(3, plain);
    let body = Body::AppendResponse {
        outcome: AppendOutcome::Rejected {
            prev_log_index: LogIndex(1),
            conflict_index: LogIndex(2),
            conflict_term: None,
        },
        seq: 0,
    };
    cluster.step(n(1), message(2, 1, 7, body));
    assert!(!cluster.node(n(1)).is_leader());
    assert_eq!(cluster.node(n(1)).term(), Term(7));
}

#[test]
fn s5_1_candidate_steps_down_on_higher_term() {
    let mut cluster = Cluster::new(3, plain);
    cluster.campaign(n(1));
    assert_eq!(cluster.node(n(1)).role(), RoleKind::Candidate);
    cluster.take_in_flight();
    cluster.step(n(1), message(3, 1, 9, Body::VoteResponse { pre_vote: false, granted: false }));
    assert_eq!((cluster.node(n(1)).role(), cluster.node(n(1)).term()), (RoleKind::Follower, Term(9)));
}

#[test]
fn s5_1_stale_append_is_rejected_with_current_term() {
    let mut cluster = Cluster::from_logs(&[&[], &[1, 3]], plain);
    let actions = cluster.step(n(2), message(1, 2, 2, append((0, 0), &[2], 0)));
    let replies = sent(&actions);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].term, Term(3), "the stale leader learns the newer term");
    assert_eq!(log_terms(&cluster, 2), vec![1, 3], "nothing appended from a stale leader");
}

#[test]
fn s5_1_stale_vote_request_is_ignored() {
    let mut cluster = Cluster::from_logs(&[&[], &[4]], plain);
    let actions = cluster.step(
        n(2),
        message(
            1,
            2,
            2,
            Body::VoteRequest {
                pre_vote: false,
                last_log_index: LogIndex(9),
                last_log_term: Term(9),
                transfer: false,
            },
        ),
    );
    assert!(actions.is_empty());
    assert_eq!(cluster.node(n(2)).voted_for(), None);
}

// ---- §5.2: leader election ----

#[test]
fn s5_2_follower_campaigns_after_election_timeout() {
    let mut cluster = Cluster::new(3, plain);
    cluster.tick_nodes(&[n(1)], 29); // election_ticks_max - 1: the timeout is drawn from [15, 30)
    let node = cluster.node(n(1));
    assert_eq!((node.role(), node.term(), node.voted_for()), (RoleKind::Candidate, Term(1), Some(n(1))));
    let requests: Vec<_> = cluster.take_in_flight();
    assert_eq!(requests.len(), 2, "asks every peer");
    assert!(requests.iter().all(|m| matches!(m.body, Body::VoteRequest { pre_vote: false, .. })));
}

#[test]
fn s5_2_election_timeouts_are_randomized_within_range() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let mut config = Config::new(n(1), vec![n(2)]);
        config.seed = seed;
        config.pre_vote = false;
        let mut node = Node::new(config.clone(), Recovered::default()).unwrap();
        let mut ticks = 0;
        while node.role() == RoleKind::Follower {
            let _ = node.step(Event::Tick);
            ticks += 1;
        }
        assert!((config.election_ticks_min..config.election_ticks_max).contains(&ticks), "timeout {ticks}");
        seen.insert(ticks);
    }
    assert!(seen.len() >= 10, "timeouts spread over the range, saw {seen:?}");
}

#[test]
fn s5_2_candidate_wins_with_majority() {
    let mut cluster = Cluster::new(5, plain);
    cluster.campaign(n(1));
    let requests = cluster.take_in_flight();
    for request in requests.into_iter().take(2) {
        cluster.step(request.to, Event::Receive(request));
    }
    assert!(!cluster.node(n(1)).is_leader(), "two answers not yet delivered");
    cluster.deliver_one();
    assert!(!cluster.node(n(1)).is_leader(), "self + 1 of 5 is not a majority");
    cluster.deliver_one();
    assert!(cluster.node(n(1)).is_leader(), "self + 2 of 5 is a majority");
}

#[test]
fn s5_2_candidate_loses_when_majority_rejects() {
    let mut cluster = Cluster::from_logs(&[&[1], &[1, 1], &[1, 1]], plain);
    cluster.campaign(n(1));
    cluster.deliver_all();
    assert_eq!(cluster.node(n(1)).role(), RoleKind::Follower);
    assert_eq!(cluster.node(n(1)).term(), Term(2));
}

#[test]
fn s5_2_candidate_yields_to_leader_of_same_term() {
    let mut cluster = Cluster::new(3, plain);
    cluster.campaign(n(1));
    cluster.take_in_flight();
    cluster.step(n(1), message(2, 1, 1, append((0, 0), &[], 0)));
    assert_eq!((cluster.node(n(1)).role(), cluster.node(n(1)).leader()), (RoleKind::Follower, Some(n(2))));
}

#[test]
fn s5_2_at_most_one_vote_per_term() {
    let mut cluster = Cluster::new(3, plain);
    let request = |from| {
        message(
            from,
            3,
            1,
            Body::VoteRequest {
                pre_vote: false,
                last_log_index: LogIndex(0),
                last_log_term: Term(0),
                transfer: false,
            },
        )
    };
    let first = cluster.step(n(3), request(1));
    let second = cluster.step(n(3), request(2));
    let again = cluster.step(n(3), request(1));
    let granted =
        |actions: &[Action]| matches!(sent(actions)[0].body, Body::VoteResponse { granted: true, .. });
    assert!(granted(&first));
    assert!(!granted(&second), "already voted for n1 in t1");
    assert!(granted(&again), "a repeated request from the same candidate is granted again");
}

#[test]
fn s5_2_vote_is_durable_before_it_is_sent() {
    let mut cluster = Cluster::new(3, plain);
    let actions = cluster.step(
        n(3),
        message(
            1,
            3,
            1,
            Body::VoteRequest {
                pre_vote: false,
                last_log_index: LogIndex(0),
                last_log_term: Term(0),
                transfer: false,
            },
        ),
    );
    let save =
        actions.iter().position(|a| matches!(a, Action::SaveHardState(hs) if hs.voted_for == Some(n(1))));
    let sync = actions.iter().position(|a| matches!(a, Action::Sync));
    let send = actions.iter().position(|a| matches!(a, Action::Send(_)));
    assert!(save < sync && sync < send, "save, then sync, then send: {actions:?}");
}

#[test]
fn s5_2_candidate_retries_in_a_new_term_after_split_vote() {
    let mut cluster = Cluster::new(4, plain);
    cluster.cut_link(n(1), n(4));
    cluster.cut_link(n(2), n(3));
    cluster.campaign(n(1));
    cluster.campaign(n(2));
    cluster.deliver_all();
    assert_eq!(cluster.leader(), None, "2-2 split");
    cluster.heal();
    cluster.run(&cluster.ids(), 40);
    let leader = cluster.leader().expect("a leader after the split");
    assert!(cluster.node(leader).term() >= Term(2));
}

#[test]
fn s5_2_leader_sends_heartbeats() {
    let mut cluster = elected(3, plain);
    cluster.tick_nodes(&[n(1)], 5);
    let heartbeats = cluster.take_in_flight();
    assert_eq!(heartbeats.len(), 2);
    assert!(heartbeats
        .iter()
        .all(|m| matches!(&m.body, Body::AppendRequest { entries, .. } if entries.is_empty())));
}

#[test]
fn s5_2_heartbeats_keep_followers_from_campaigning() {
    let mut cluster = elected(3, plain);
    cluster.run(&cluster.ids(), 200);
    assert_eq!(cluster.leader(), Some(n(1)));
    assert_eq!(cluster.node(n(2)).term(), Term(1));
}

// ---- §5.3: log replication ----

#[test]
fn s5_3_leader_replicates_and_commits_on_majority() {
    let mut cluster = elected(3, plain);
    let request = cluster.propose(n(1), &["x", "y"]);
    cluster.deliver_all();
    assert!(matches!(
        cluster.reply(request),
        Some(Reply::Committed { first: LogIndex(2), last: LogIndex(3), term: Term(1), .. })
    ));
    assert_eq!(cluster.node(n(1)).commit(), LogIndex(3));
    cluster.run(&cluster.ids(), 5);
    for id in 1..=3 {
        assert_eq!(cluster.applied(n(id)).len(), 3, "n{id} applied all");
    }
}

#[test]
fn s5_3_follower_rejects_mismatched_prev_with_hint() {
    let mut cluster = Cluster::from_logs(&[&[], &[1, 2, 2, 2]], plain);
    let actions = cluster.step(n(2), message(1, 2, 3, append((4, 3), &[3], 0)));
    let expected = AppendOutcome::Rejected {
        prev_log_index: LogIndex(4),
        conflict_index: LogIndex(2),
        conflict_term: Some(Term(2)),
    };
    assert!(matches!(sent(&actions)[0].body, Body::AppendResponse { outcome, .. } if outcome == expected));
    let actions = cluster.step(n(2), message(1, 2, 3, append((9, 3), &[3], 0)));
    let expected = AppendOutcome::Rejected {
        prev_log_index: LogIndex(9),
        conflict_index: LogIndex(5),
        conflict_term: None,
    };
    assert!(matches!(sent(&actions)[0].body, Body::AppendResponse { outcome, .. } if outcome == expected));
    assert_eq!(log_terms(&cluster, 2), vec![1, 2, 2, 2]);
}

#[test]
fn s5_3_conflicting_entries_are_truncated() {
    let mut cluster = Cluster::from_logs(&[&[], &[1, 2, 2, 2]], plain);
    let actions = cluster.step(n(2), message(1, 2, 3, append((1, 1), &[3, 3], 0)));
    assert!(actions.contains(&Action::TruncateLog { from: LogIndex(2) }));
    assert_eq!(log_terms(&cluster, 2), vec![1, 3, 3]);
}

#[test]
fn s5_3_stale_shorter_append_does_not_truncate() {
    let mut cluster = Cluster::from_logs(&[&[], &[1, 1, 1]], plain);
    let actions = cluster.step(n(2), message(1, 2, 1, append((0, 0), &[1], 0)));
    assert!(!actions.iter().any(|a| matches!(a, Action::TruncateLog { .. })));
    assert_eq!(log_terms(&cluster, 2), vec![1, 1, 1]);
}

#[test]
fn s5_3_append_ack_is_durable_before_it_is_sent() {
    let mut cluster = Cluster::new(2, plain);
    let actions = cluster.step(n(2), message(1, 2, 1, append((0, 0), &[1, 1], 0)));
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| match a {
            Action::SaveHardState(_) => "save",
            Action::AppendLog { .. } => "append",
            Action::Sync => "sync",
            Action::Send(_) => "send",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["save", "append", "sync", "send"]);
}

#[test]
fn s5_3_ack_covers_only_what_the_message_covered() {
    // n2 holds five entries of term 1; a message vouching for entries through 2 only is
    // acknowledged as matching through 2, not through n2's last index (5): entries 3..=5 were
    // never checked against the leader's log.
    let mut cluster = Cluster::from_logs(&[&[], &[1, 1, 1, 1, 1]], plain);
    let actions = cluster.step(n(2), message(1, 2, 1, append((1, 1), &[1], 0)));
    let ack = sent(&actions).into_iter().find_map(|m| match m.body {
        Body::AppendResponse { outcome: AppendOutcome::Accepted { match_index }, .. } => Some(match_index),
        _ => None,
    });
    assert_eq!(ack, Some(LogIndex(2)));
}

#[test]
fn s5_3_follower_commit_is_min_of_leader_commit_and_last_new_entry() {
    let mut cluster = Cluster::from_logs(&[&[], &[1, 1, 1, 1, 1]], plain);
    // The leader says commit=5 but only vouches for entries through 2 in this message.
    cluster.step(n(2), message(1, 2, 1, append((1, 1), &[1], 5)));
    assert_eq!(cluster.node(n(2)).commit(), LogIndex(2));
}

#[test]
fn s5_3_leader_backtracks_a_term_per_round_trip() {
    // A follower with a long divergent tail of term 2; the leader of term 4 skips it in one go.
    let tail = [2u64; 50];
    let follower: Vec<u64> = [1u64].iter().chain(tail.iter()).copied().collect();
    let leader = [1u64, 3, 3];
    let mut cluster = Cluster::from_logs(&[&leader, &follower, &leader], plain);
    cluster.campaign(n(1));
    cluster.deliver_all();
    let rejections = cluster
        .trace()
        .lines()
        .filter(|l| l.starts_with("  send n2->n1") && l.contains("AppendResponse reject"))
        .count();
    cluster.run(&cluster.ids(), 3);
    assert_eq!(log_terms(&cluster, 2), log_terms(&cluster, 1));
    assert!((1..=2).contains(&rejections), "{rejections} rejections for a 50-entry divergent tail");
}

// ---- Figure 7: any follower log converges to the leader's ----

#[test]
fn figure_7_every_follower_converges() {
    let leader: &[u64] = &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let logs: [&[u64]; 7] = [
        leader,
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],          // (a)
        &[1, 1, 1, 4],                         // (b)
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],    // (c)
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d)
        &[1, 1, 1, 4, 4, 4, 4],                // (e)
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],    // (f)
    ];
    let mut cluster = Cluster::from_logs(&logs, plain);
    // The leader of term 8 (Figure 7): bring n1 to term 7 so its campaign is for term 8.
    cluster.step(n(1), message(5, 1, 7, Body::VoteResponse { pre_vote: false, granted: false }));
    cluster.campaign(n(1));
    cluster.deliver_all();
    assert!(cluster.node(n(1)).is_leader(), "a, b, e, f vote for the leader");
    cluster.run(&[n(1)], 10);
    let expected: Vec<u64> = leader.iter().copied().chain([8]).collect();
    for id in 1..=7 {
        assert_eq!(log_terms(&cluster, id), expected, "n{id}");
    }
}

// ---- §5.4.1: election restriction ----

#[test]
fn s5_4_1_vote_denied_to_less_up_to_date_log() {
    let mut cluster = Cluster::from_logs(&[&[1], &[1, 2]], plain);
    cluster.campaign(n(1));
    cluster.deliver_all();
    assert!(!cluster.node(n(1)).is_leader(), "n2's log ends in a later term");
    let mut cluster = Cluster::from_logs(&[&[2], &[2, 2]], plain);
    cluster.campaign(n(1));
    cluster.deliver_all();
    assert!(!cluster.node(n(1)).is_leader(), "same last term, n2's log is longer");
    let mut cluster = Cluster::from_logs(&[&[3], &[2, 2, 2]], plain);
    cluster.campaign(n(1));
    cluster.deliver_all();
    assert!(cluster.node(n(1)).is_leader(), "a later last term wins despite a shorter log");
}

// ---- §5.4.2, Figure 8: committing entries from previous terms ----

#[test]
fn figure_8_previous_term_entry_is_not_committed_by_counting() {
    // Figure 8 (c): S1 leads term 4 with (2, t2) stored on S1, S2, S3, a majority of five.
    let mut cluster = Cluster::from_logs(&[&[1, 2], &[1, 2], &[1, 2], &[1], &[1, 3]], plain);
    cluster.step(n(1), message(5, 1, 3, Body::VoteResponse { pre_vote: false, granted: false }));
    cluster.campaign(n(1));
    let requests = cluster.take_in_flight();
    for request in requests {
        if request.to != n(5) {
            cluster.step(request.to, Event::Receive(request));
        }
    }
    cluster.take_in_flight();
    for voter in [2, 3] {
        cluster.step(n(1), message(voter, 1, 4, Body::VoteResponse { pre_vote: false, granted: true }));
    }
    assert!(cluster.node(n(1)).is_leader());
    assert_eq!(cluster.node(n(1)).term(), Term(4));
    cluster.take_in_flight();
    // S2 and S3 acknowledge index 2 only (not the new leader's no-op at index 3).
    for follower in [2, 3] {
        let ack =
            Body::AppendResponse { outcome: AppendOutcome::Accepted { match_index: LogIndex(2) }, seq: 0 };
        cluster.step(n(1), message(follower, 1, 4, ack));
    }
    assert_eq!(
        cluster.node(n(1)).commit(),
        LogIndex(0),
        "§5.4.2: (2, t2) may not commit by counting replicas"
    );
    // Once the current term's entry is on a majority, it commits and so does everything before it.
    for follower in [2, 3] {
        let ack =
            Body::AppendResponse { outcome: AppendOutcome::Accepted { match_index: LogIndex(3) }, seq: 0 };
        cluster.step(n(1), message(follower, 1, 4, ack));
    }
    assert_eq!(cluster.node(n(1)).commit(), LogIndex(3));
}

#[test]
fn s10_2_1_leader_counts_itself_only_once_its_log_is_durable() {
    let mut config = Config::new(n(1), vec![n(2), n(3)]);
    plain(&mut config);
    let mut node = Node::new(config, Recovered::default()).unwrap();
    let _ = node.step(Event::Campaign);
    let _ = node.step(message(2, 1, 1, Body::VoteResponse { pre_vote: false, granted: true }));
    assert!(node.is_leader());
    // n2 acknowledges the no-op, but the leader's own copy is not yet durable.
    let _ = node.step(message(
        2,
        1,
        1,
        Body::AppendResponse { outcome: AppendOutcome::Accepted { match_index: LogIndex(1) }, seq: 0 },
    ));
    assert_eq!(node.commit(), LogIndex(0));
    let _ = node.step(Event::LogPersisted { index: LogIndex(1), term: Term(1) });
    assert_eq!(node.commit(), LogIndex(1));
}

// ---- §9.6 (dissertation): pre-vote ----

#[test]
fn s9_6_isolated_node_does_not_inflate_its_term() {
    let mut cluster = elected(3, |_| {});
    cluster.isolate(&[n(3)]);
    cluster.run(&cluster.ids(), 200);
    assert_eq!(cluster.node(n(3)).term(), Term(1), "pre-vote rounds never bump the term");
    cluster.heal();
    cluster.run(&cluster.ids(), 10);
    assert_eq!(cluster.leader(), Some(n(1)), "the rejoining node did not disrupt the leader");
    assert_eq!(cluster.node(n(1)).term(), Term(1));
}

#[test]
fn s9_6_pre_vote_does_not_change_the_voters_term() {
    let mut cluster = Cluster::new(3, |_| {});
    let actions = cluster.step(
        n(2),
        message(
            1,
            2,
            5,
            Body::VoteRequest {
                pre_vote: true,
                last_log_index: LogIndex(0),
                last_log_term: Term(0),
                transfer: false,
            },
        ),
    );
    assert!(matches!(sent(&actions)[0].body, Body::VoteResponse { pre_vote: true, granted: true }));
    assert_eq!(cluster.node(n(2)).term(), Term(0));
    assert!(!actions.iter().any(|a| matches!(a, Action::SaveHardState(_) | Action::Sync)));
}

#[test]
fn s9_6_rejected_pre_candidate_keeps_its_term() {
    // n3's log is behind: its pre-vote is refused by both, and it must not raise its own term.
    let mut cluster = elected(3, |_| {});
    cluster.propose(n(1), &["x"]);
    cluster.isolate(&[n(3)]);
    cluster.deliver_all();
    cluster.heal();
    let before = cluster.node(n(3)).term();
    cluster.campaign(n(3));
    cluster.deliver_all();
    assert_eq!(cluster.node(n(3)).term(), before, "a refused pre-vote leaves the term alone");
    assert_eq!(cluster.leader(), Some(n(1)));
}

#[test]
fn s9_6_pre_vote_for_a_term_no_later_than_ours_is_refused_once_we_voted() {
    // n2 votes for n3 in term 1. A pre-vote asks about the term after the candidate's: one for
    // term 1 comes from a node that is not ahead of n2's election and is refused; one for term 2
    // is granted (logs are equally up to date).
    let mut cluster = Cluster::from_logs(&[&[1], &[1], &[1]], |_| {});
    let vote = Body::VoteRequest {
        pre_vote: false,
        last_log_index: LogIndex(1),
        last_log_term: Term(1),
        transfer: false,
    };
    let actions = cluster.step(n(2), message(3, 2, 1, vote));
    assert!(matches!(sent(&actions)[0].body, Body::VoteResponse { pre_vote: false, granted: true }));
    let pre_vote = || Body::VoteRequest {
        pre_vote: true,
        last_log_index: LogIndex(1),
        last_log_term: Term(1),
        transfer: false,
    };
    let actions = cluster.step(n(2), message(1, 2, 1, pre_vote()));
    assert!(matches!(sent(&actions)[0].body, Body::VoteResponse { pre_vote: true, granted: false }));
    let actions = cluster.step(n(2), message(1, 2, 2, pre_vote()));
    assert!(matches!(sent(&actions)[0].body, Body::VoteResponse { pre_vote: true, granted: true }));
    assert_eq!(cluster.node(n(2)).term(), Term(1), "pre-votes change nobody's term");
}

#[test]
fn s4_2_3_lease_lasts_exactly_the_minimum_election_timeout() {
    let mut cluster = elected(3, no_pre_vote);
    let lease = cluster.node(n(2)).config().election_ticks_min;
    let request = || {
        message(
            3,
            2,
            9,
            Body::VoteRequest {
                pre_vote: false,
                last_log_index: LogIndex(5),
                last_log_term: Term(1),
                transfer: false,
            },
        )
    };
    // n2 last heard from n1 just now; after lease-1 ticks it still ignores the request...
    for _ in 0..lease - 1 {
        let _ = cluster.step(n(2), Event::Tick);
    }
    assert!(cluster.step(n(2), request()).is_empty(), "inside the lease");
    // ...and after the full lease it hears it out.
    let _ = cluster.step(n(2), Event::Tick);
    assert_eq!(cluster.node(n(2)).leader(), Some(n(1)));
    assert!(!cluster.step(n(2), request()).is_empty(), "the lease has run out");
    assert_eq!(cluster.node(n(2)).term(), Term(9));
}

#[test]
fn s9_6_stale_pre_vote_is_answered_with_our_term() {
    // A pre-vote from a term behind ours is refused at once, carrying our term, so the
    // pre-candidate learns it is behind instead of waiting for its timeout.
    let mut cluster = Cluster::from_logs(&[&[1], &[1, 3]], |_| {});
    let request = Body::VoteRequest {
        pre_vote: true,
        last_log_index: LogIndex(1),
        last_log_term: Term(1),
        transfer: false,
    };
    let actions = cluster.step(n(2), message(1, 2, 2, request));
    let answer = sent(&actions)[0];
    assert!(matches!(answer.body, Body::VoteResponse { pre_vote: true, granted: false }));
    assert_eq!(answer.term, Term(3));
}

#[test]
fn leader_status_shows_each_followers_progress() {
    let mut cluster = elected(3, plain);
    cluster.propose(n(1), &["x"]);
    cluster.deliver_all();
    let status = cluster.node(n(1)).status();
    assert_eq!(status.role, RoleKind::Leader);
    assert_eq!(status.peers.len(), 2);
    for peer in &status.peers {
        assert!(peer.replicating, "{peer:?}: a follower that answered streams entries");
        assert_eq!((peer.match_index, peer.next_index), (LogIndex(2), LogIndex(3)), "{peer:?}");
    }
    assert!(cluster.node(n(2)).status().peers.is_empty(), "only a leader tracks progress");
}

#[test]
fn messages_from_strangers_or_for_others_are_ignored() {
    // n2 holds n1's no-op of term 1.
    let mut cluster = elected(3, plain);
    let request = || Body::VoteRequest {
        pre_vote: false,
        last_log_index: LogIndex(0),
        last_log_term: Term(0),
        transfer: false,
    };
    // n9 is no member and its log is behind n2's (§4.2.3: a wiped or removed server cannot
    // disrupt); the second message is addressed to n3, not n2.
    assert!(cluster.step(n(2), message(9, 2, 5, request())).is_empty());
    assert!(cluster.step(n(2), message(1, 3, 5, request())).is_empty());
    assert_eq!(cluster.node(n(2)).term(), Term(1));
    assert_eq!(cluster.node(n(2)).marks().votes_from_non_voters, 1);
}

#[test]
fn s4_2_3_vote_requests_ignored_while_leader_is_heard() {
    let mut cluster = elected(3, no_pre_vote);
    // n3 campaigns with a higher term while n2 hears from n1 regularly: n2 ignores it.
    let actions = cluster.step(
        n(2),
        message(
            3,
            2,
            9,
            Body::VoteRequest {
                pre_vote: false,
                last_log_index: LogIndex(5),
                last_log_term: Term(1),
                transfer: false,
            },
        ),
    );
    assert!(actions.is_empty());
    assert_eq!(cluster.node(n(2)).term(), Term(1));
    assert_eq!(cluster.node(n(2)).leader(), Some(n(1)));
}

// ---- §6.2 (dissertation): check-quorum ----

#[test]
fn s6_2_leader_without_quorum_steps_down() {
    let mut cluster = elected(3, |_| {});
    let request = cluster.propose(n(1), &["stranded"]);
    cluster.isolate(&[n(1)]);
    cluster.tick_nodes(&[n(1)], 31);
    assert!(!cluster.node(n(1)).is_leader());
    assert_eq!(cluster.reply(request), Some(&Reply::Indeterminate { request }));
}

#[test]
fn s6_2_leader_with_quorum_stays() {
    let mut cluster = elected(3, |_| {});
    cluster.isolate(&[n(3)]);
    cluster.run(&[n(1), n(2)], 100);
    assert_eq!(cluster.leader(), Some(n(1)));
}

// ---- §6.4 (dissertation): linearizable reads ----

#[test]
fn s6_4_read_waits_for_a_quorum_round() {
    let mut cluster = elected(3, plain);
    let request = cluster.read(n(1));
    assert_eq!(cluster.reply(request), None, "not before a majority confirms leadership");
    cluster.deliver_all();
    assert_eq!(cluster.reply(request), Some(&Reply::ReadReady { request, index: LogIndex(1) }));
}

#[test]
fn s6_4_isolated_leader_cannot_serve_reads() {
    let mut cluster = elected(3, plain);
    cluster.isolate(&[n(1)]);
    let request = cluster.read(n(1));
    cluster.run(&[n(1)], 10);
    assert_eq!(cluster.reply(request), None);
}

// ---- clients, limits and recovery ----

#[test]
fn follower_answers_proposals_with_leader_hint() {
    let mut cluster = elected(3, plain);
    let request = cluster.propose(n(2), &["x"]);
    assert_eq!(cluster.reply(request), Some(&Reply::NotLeader { request, leader: Some(n(1)) }));
    let request = cluster.read(n(3));
    assert_eq!(cluster.reply(request), Some(&Reply::NotLeader { request, leader: Some(n(1)) }));
}

#[test]
fn leader_refuses_proposals_beyond_uncommitted_limit() {
    let mut cluster = elected(3, |config| config.uncommitted_entries_max = 3);
    cluster.isolate(&[n(1)]);
    let accepted = cluster.propose(n(1), &["a", "b"]);
    let refused = cluster.propose(n(1), &["c", "d"]);
    assert_eq!(cluster.reply(accepted), None);
    assert_eq!(
        cluster.reply(refused),
        Some(&Reply::Rejected { request: refused, reason: RejectReason::Overloaded })
    );
    let empty = cluster.propose(n(1), &[]);
    assert_eq!(cluster.reply(empty), Some(&Reply::Rejected { request: empty, reason: RejectReason::Empty }));
    // Exactly at the limit is still accepted: two uncommitted, one more makes three.
    let last = cluster.propose(n(1), &["e"]);
    assert_eq!(cluster.reply(last), None, "the limit itself is allowed");
    let over = cluster.propose(n(1), &["f"]);
    assert_eq!(
        cluster.reply(over),
        Some(&Reply::Rejected { request: over, reason: RejectReason::Overloaded })
    );
}

#[test]
fn flow_control_limits_messages_in_flight() {
    let mut cluster = elected(2, |config| {
        plain(config);
        config.entries_per_message_max = 1;
        config.inflight_messages_max = 2;
    });
    for i in 0..10 {
        cluster.propose(n(1), &[&format!("c{i}")]);
    }
    let in_flight = cluster.take_in_flight();
    assert_eq!(in_flight.len(), 2, "window of two messages");
    assert!(in_flight
        .iter()
        .all(|m| matches!(&m.body, Body::AppendRequest { entries, .. } if entries.len() == 1)));
    for message in in_flight {
        cluster.step(message.to, Event::Receive(message));
    }
    cluster.deliver_all();
    assert_eq!(cluster.node(n(1)).commit(), LogIndex(11), "acks open the window until all is sent");
}

#[test]
fn message_byte_limit_splits_large_batches() {
    let mut cluster = elected(2, |config| {
        plain(config);
        config.message_bytes_max = 100;
        config.inflight_bytes_max = 100;
    });
    let big = "x".repeat(60);
    cluster.propose(n(1), &[&big, &big, &big]);
    let in_flight = cluster.take_in_flight();
    // 84 bytes an entry: one entry a message; the byte window (100) closes after the second.
    assert_eq!(in_flight.len(), 2);
    assert!(in_flight
        .iter()
        .all(|m| matches!(&m.body, Body::AppendRequest { entries, .. } if entries.len() == 1)));
}

#[test]
fn single_node_cluster_commits_once_durable() {
    let mut cluster = Cluster::new(1, |_| {});
    cluster.campaign(n(1));
    assert!(cluster.node(n(1)).is_leader());
    let request = cluster.propose(n(1), &["solo"]);
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { last: LogIndex(2), .. })));
}

#[test]
fn restart_recovers_term_vote_and_log_and_never_votes_twice() {
    let mut cluster = Cluster::new(3, plain);
    cluster.step(
        n(3),
        message(
            1,
            3,
            1,
            Body::VoteRequest {
                pre_vote: false,
                last_log_index: LogIndex(0),
                last_log_term: Term(0),
                transfer: false,
            },
        ),
    );
    cluster.crash(n(3));
    cluster.restart(n(3));
    assert_eq!((cluster.node(n(3)).term(), cluster.node(n(3)).voted_for()), (Term(1), Some(n(1))));
    let actions = cluster.step(
        n(3),
        message(
            2,
            3,
            1,
            Body::VoteRequest {
                pre_vote: false,
                last_log_index: LogIndex(0),
                last_log_term: Term(0),
                transfer: false,
            },
        ),
    );
    assert!(matches!(sent(&actions)[0].body, Body::VoteResponse { granted: false, .. }));
}

#[test]
fn lost_appends_are_retransmitted_after_a_stall() {
    let mut cluster = elected(3, plain);
    cluster.run(&cluster.ids(), 5);
    cluster.propose(n(1), &["lost-once"]);
    cluster.take_in_flight(); // the network eats the appends
    cluster.run(&cluster.ids(), 12);
    assert_eq!(cluster.node(n(1)).commit(), LogIndex(2));
    assert_eq!(cluster.node(n(2)).last_index(), LogIndex(2));
}

#[test]
fn duplicated_messages_are_harmless() {
    let mut cluster = Cluster::new(5, plain);
    cluster.campaign(n(1));
    cluster.take_in_flight();
    let yes = message(2, 1, 1, Body::VoteResponse { pre_vote: false, granted: true });
    cluster.step(n(1), yes.clone());
    cluster.step(n(1), yes);
    assert!(!cluster.node(n(1)).is_leader(), "one voter counted twice would make a false majority");
}

#[test]
fn recovered_state_is_validated() {
    let config = Config::new(n(1), vec![n(2)]);
    let entry = Entry { index: LogIndex(1), term: Term(3), payload: Payload::Noop };
    let ahead = Recovered {
        hard_state: HardState { term: Term(2), voted_for: None, commit: LogIndex(0) },
        entries: vec![entry.clone()],
        applied: LogIndex(0),
        repair_to: LogIndex(0),
        ..Recovered::default()
    };
    assert!(matches!(Node::new(config.clone(), ahead), Err(StartError::LogTermAhead { .. })));
    let missing = Recovered {
        hard_state: HardState { term: Term(3), voted_for: None, commit: LogIndex(4) },
        entries: vec![entry],
        applied: LogIndex(0),
        repair_to: LogIndex(0),
        ..Recovered::default()
    };
    let error = Node::new(config, missing).unwrap_err();
    assert!(error.to_string().contains("committed entries are missing"), "{error}");
}

#[test]
fn same_events_give_same_actions() {
    let run = || {
        let mut cluster = Cluster::new(5, |_| {});
        cluster.run(&cluster.ids(), 60);
        cluster.propose(cluster.leader().unwrap(), &["a"]);
        cluster.run(&cluster.ids(), 5);
        cluster.trace().to_string()
    };
    assert_eq!(run(), run());
}
