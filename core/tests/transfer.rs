//! Leadership transfer (dissertation §3.10): the leader brings the target up to date, tells it
//! to campaign at once (`TimeoutNow`), refuses proposals meanwhile, and leads on if the target
//! does not take over within an election timeout.

use replog_core::testkit::Cluster;
use replog_core::*;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

/// n1 leads a cluster of three (pre-vote and check-quorum on, the defaults) with a command
/// committed everywhere.
fn led_by_n1() -> Cluster {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.propose(n(1), &["a"]);
    cluster.deliver_all();
    cluster.run(&cluster.ids(), 6);
    assert_eq!(cluster.leader(), Some(n(1)));
    cluster
}

#[test]
fn the_target_takes_over_at_once_despite_the_followers_lease() {
    let mut cluster = led_by_n1();
    let term = cluster.node(n(1)).term();
    cluster.step(n(1), Event::TransferLeadership { to: n(2) });
    // Proposals wait while the transfer is under way.
    let request = cluster.propose(n(1), &["during"]);
    assert!(matches!(
        cluster.reply(request),
        Some(Reply::Rejected { reason: RejectReason::Transferring, .. })
    ));
    cluster.deliver_all();
    // No ticks passed: n3 still heard from n1 within its lease, yet voted (a transfer election).
    assert_eq!(cluster.leader(), Some(n(2)));
    assert_eq!(cluster.node(n(2)).term(), term.next());
    assert!(!cluster.node(n(1)).is_leader());
    assert_eq!(cluster.node(n(2)).marks().transfer_elections, 1);
    let request = cluster.propose(n(2), &["after"]);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));
}

#[test]
fn a_lagging_target_is_brought_up_to_date_first() {
    let mut cluster = led_by_n1();
    cluster.crash(n(3));
    for i in 0..5 {
        cluster.propose(n(1), &[format!("x{i}").as_str()]);
        cluster.deliver_all();
    }
    cluster.restart(n(3));
    let last = cluster.node(n(1)).last_index();
    assert!(cluster.node(n(3)).last_index() < last);
    cluster.step(n(1), Event::TransferLeadership { to: n(3) });
    cluster.deliver_all();
    assert_eq!(cluster.leader(), Some(n(3)));
    assert!(cluster.node(n(3)).commit() >= last, "it had every committed entry before it campaigned");
}

#[test]
fn a_transfer_to_an_unreachable_target_is_given_up_and_proposals_resume() {
    let mut cluster = led_by_n1();
    cluster.isolate(&[n(3)]);
    cluster.step(n(1), Event::TransferLeadership { to: n(3) });
    assert_eq!(cluster.node(n(1)).status().transferring_to, Some(n(3)));
    // An election timeout at most (the maximum), then n1 leads on.
    cluster.run(&[n(1), n(2)], 30);
    assert!(cluster.node(n(1)).is_leader());
    assert_eq!(cluster.node(n(1)).status().transferring_to, None);
    assert_eq!(cluster.node(n(1)).marks().transfers_aborted, 1);
    let request = cluster.propose(n(1), &["resumed"]);
    cluster.deliver_all();
    assert!(matches!(cluster.reply(request), Some(Reply::Committed { .. })));
}

#[test]
fn transfers_to_itself_to_strangers_or_by_a_follower_are_ignored() {
    let mut cluster = led_by_n1();
    for (at, to) in [(n(1), n(1)), (n(1), n(9)), (n(2), n(3))] {
        let actions = cluster.step(at, Event::TransferLeadership { to });
        assert!(actions.is_empty(), "{actions:?}");
    }
    assert_eq!(cluster.node(n(1)).marks().transfers_started, 0);
    // A TimeoutNow from someone other than the leader is ignored too.
    let term = cluster.node(n(2)).term();
    let (last_log_index, last_log_term) = (cluster.node(n(2)).last_index(), cluster.node(n(2)).last_term());
    let stray =
        Message { from: n(3), to: n(2), term, body: Body::TimeoutNow { last_log_index, last_log_term } };
    let actions = cluster.step(n(2), Event::Receive(stray));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(cluster.leader(), Some(n(1)));
}

#[test]
fn a_late_timeout_now_after_the_leader_moved_on_starts_no_election() {
    let mut cluster = led_by_n1();
    cluster.step(n(1), Event::TransferLeadership { to: n(2) });
    // The TimeoutNow is held back (n2 paused, say) until the leader gave up and moved on.
    let held: Vec<Message> = cluster.take_in_flight();
    let timeout_now = held.into_iter().find(|m| matches!(m.body, Body::TimeoutNow { .. }));
    let timeout_now = timeout_now.expect("n2 was up to date: TimeoutNow at once");
    cluster.isolate(&[n(2)]);
    cluster.run(&[n(1), n(3)], 30);
    assert_eq!(cluster.node(n(1)).marks().transfers_aborted, 1);
    cluster.propose(n(1), &["moved on"]);
    cluster.deliver_all();
    cluster.heal();
    cluster.run(&[n(1)], 6); // n2 catches up: its log ends past what the TimeoutNow named
    let term = cluster.node(n(2)).term();
    let actions = cluster.step(n(2), Event::Receive(timeout_now));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(cluster.node(n(2)).term(), term, "no election");
    assert_eq!(cluster.leader(), Some(n(1)));
}
