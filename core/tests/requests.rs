//! A client session's request (`Payload::Request`): several commands in one entry, so they
//! commit together or not at all, whatever the network does to the entries around them.

use replog_core::testkit::Cluster;
use replog_core::*;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn request(seq: u64, commands: &[&str]) -> Payload {
    Payload::Request(ClientRequest {
        client: ClientId(42),
        seq,
        commands: commands.iter().map(|&command| Bytes::from(command)).collect(),
    })
}

#[test]
fn a_request_commits_as_one_entry_with_its_commands_in_order() {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.campaign(n(1));
    cluster.deliver_all();
    let proposal = RequestId(7);
    let payloads = vec![request(1, &["a", "b", "c"]), Payload::Command(Bytes::from("d"))];
    cluster.step(n(1), Event::Propose { request: proposal, payloads });
    cluster.run(&cluster.ids(), 6);
    let Some(Reply::Committed { first, last, .. }) = cluster.reply(proposal).cloned() else {
        panic!("the proposal committed: {:?}", cluster.reply(proposal));
    };
    assert_eq!(last, first.next(), "two entries: the request and the command");
    for id in cluster.ids() {
        let entry = cluster.node(id).entry(first).expect("the request's entry").clone();
        assert_eq!(entry.payload, request(1, &["a", "b", "c"]));
        assert_eq!(entry.payload.commands().len(), 3);
        assert!(entry.size_bytes() > Payload::Command(Bytes::from("abc")).size_bytes());
    }
}

#[test]
fn a_request_without_commands_is_refused_and_nothing_is_appended() {
    let mut cluster = Cluster::new(1, |_| {});
    cluster.campaign(n(1));
    cluster.deliver_all();
    let last = cluster.node(n(1)).last_index();
    let proposal = RequestId(3);
    let payloads = vec![Payload::Command(Bytes::from("x")), request(1, &[])];
    cluster.step(n(1), Event::Propose { request: proposal, payloads });
    assert_eq!(
        cluster.reply(proposal),
        Some(&Reply::Rejected { request: proposal, reason: RejectReason::Empty })
    );
    assert_eq!(cluster.node(n(1)).last_index(), last);
}

#[test]
#[should_panic(expected = "no client may propose")]
fn proposing_a_protocol_entry_is_a_driver_bug() {
    let mut cluster = Cluster::new(1, |_| {});
    cluster.campaign(n(1));
    cluster.deliver_all();
    cluster.step(n(1), Event::Propose { request: RequestId(1), payloads: vec![Payload::Noop] });
}
