//! The driver's screening of session appends (`Driver::admit`) on a real data folder: retries
//! answered from the table, across restarts and snapshots; conditions; batches; refusals.

mod common;

use common::{identity, Scratch};
use replog_core::{Bytes, ClientId, Config, Event, LogIndex, NodeId, Payload, RequestId};
use replog_runtime::driver::{Admission, Driver, Output, SessionAppend};
use replog_runtime::fs::RealFs;
use replog_runtime::sessions::{SessionLimits, SessionRefusal};
use replog_runtime::storage::{OnCorruption, StorageOptions};
use std::path::Path;

fn open(dir: &Path) -> Driver<RealFs> {
    let options = StorageOptions { segment_bytes_max: 4096 };
    let config = Config::new(NodeId(1), Vec::new());
    let (driver, _) =
        Driver::open_with_options(config, RealFs::new(), dir, identity(), OnCorruption::Refuse, options)
            .expect("the folder opens");
    driver
}

/// Steps and syncs until the released outputs are handed over.
fn settle(driver: &mut Driver<RealFs>) -> Vec<Output> {
    let mut outputs = Vec::new();
    for _ in 0..4 {
        driver.end_round(true).unwrap();
        driver.on_synced().unwrap();
        driver.take_output(&mut outputs);
    }
    outputs
}

fn lead(driver: &mut Driver<RealFs>) {
    driver.step(Event::Campaign).unwrap();
    settle(driver);
    assert!(driver.node().is_leader());
}

fn append(client: u64, seq: u64, commands: &[&str]) -> SessionAppend {
    SessionAppend {
        client: ClientId(client),
        seq,
        since: LogIndex::ZERO,
        expect_last: None,
        commands: commands.iter().map(|&command| Bytes::from(command)).collect(),
    }
}

/// Admits `appends`, proposes what is new, and returns the admissions.
fn submit(driver: &mut Driver<RealFs>, appends: &[SessionAppend]) -> Vec<Admission> {
    let admissions = driver.admit(appends);
    let payloads: Vec<Payload> = admissions
        .iter()
        .filter_map(|admission| match admission {
            Admission::Propose(payload) => Some(payload.clone()),
            _ => None,
        })
        .collect();
    if !payloads.is_empty() {
        driver.step(Event::Propose { request: RequestId(1), payloads }).unwrap();
        settle(driver);
    }
    admissions
}

fn committed_ids(admission: &Admission) -> (u64, u64) {
    match admission {
        Admission::Committed(outcome) => (outcome.first_id, outcome.count),
        other => panic!("expected a committed outcome, got {other:?}"),
    }
}

#[test]
fn retries_are_answered_from_the_table_across_restarts_and_snapshots() {
    let scratch = Scratch::new("sessions-retries");
    let mut driver = open(&scratch.0);
    lead(&mut driver);
    let first = append(7, 1, &["a", "b"]);
    assert!(matches!(submit(&mut driver, std::slice::from_ref(&first))[0], Admission::Propose(_)));
    assert_eq!(committed_ids(&driver.admit(std::slice::from_ref(&first))[0]), (1, 2));
    // Another session's request number 1 is its own.
    assert!(matches!(submit(&mut driver, &[append(8, 1, &["c"])])[0], Admission::Propose(_)));
    assert_eq!(driver.command_id(driver.index_of_command(3)), 3);
    driver.close().unwrap();

    let mut driver = open(&scratch.0);
    lead(&mut driver);
    assert_eq!(committed_ids(&driver.admit(std::slice::from_ref(&first))[0]), (1, 2), "after a restart");
    // Many sessions' requests across sealed segments (4 KiB each), between plain commands:
    // the restart reads only the segments holding requests, and recognises every one.
    for client in 100..160u64 {
        submit(&mut driver, &[append(client, 1, &["spread over segments"])]);
        driver
            .step(Event::Propose {
                request: RequestId(9),
                payloads: vec![Payload::Command(Bytes::from("plain"))],
            })
            .unwrap();
        settle(&mut driver);
    }
    driver.close().unwrap();
    assert!(scratch.indexes().len() >= 3, "sealed segments: {:?}", scratch.indexes());
    let mut driver = open(&scratch.0);
    lead(&mut driver);
    for client in 100..160u64 {
        assert!(matches!(
            driver.admit(&[append(client, 1, &["spread over segments"])])[0],
            Admission::Committed(_)
        ));
    }
    // A snapshot past the request, then a restart: the table comes from the snapshot.
    for seq in 2..=5 {
        submit(&mut driver, &[append(7, seq, &["more"])]);
    }
    let fifth = committed_ids(&driver.admit(&[append(7, 5, &["more"])])[0]);
    assert_eq!(fifth, (3 + 120 + 4, 1), "after 3 commands, 60 requests and 60 plain ones, seq 2..=5");
    let last = driver.node().commit();
    driver.trim(last).unwrap();
    assert!(driver.node().snapshot_meta().index >= LogIndex(3), "the request is under the snapshot");
    driver.close().unwrap();
    let mut driver = open(&scratch.0);
    lead(&mut driver);
    assert_eq!(committed_ids(&driver.admit(&[append(7, 5, &["more"])])[0]), fifth);
    assert_eq!(driver.duplicates_applied(), 0);
}

#[test]
fn a_batch_is_screened_in_order_conditions_and_repeats_included() {
    let scratch = Scratch::new("sessions-batch");
    let mut driver = open(&scratch.0);
    lead(&mut driver);
    let mut conditional = append(1, 1, &["x"]);
    conditional.expect_last = Some(0);
    let mut stale = append(2, 1, &["y"]);
    stale.expect_last = Some(0); // the first one makes the last ID 1
    let admissions = driver.admit(&[conditional.clone(), stale, conditional.clone(), append(3, 2, &["z"])]);
    assert!(matches!(admissions[0], Admission::Propose(_)));
    assert_eq!(admissions[1], Admission::Refused(SessionRefusal::ConditionFailed { last_id: 1 }));
    assert_eq!(admissions[2], Admission::SameAs(0));
    assert_eq!(admissions[3], Admission::Refused(SessionRefusal::UnknownSession));
    // Proposed but not yet committed: a retry waits for the entry in the log.
    driver
        .step(Event::Propose { request: RequestId(2), payloads: vec![admission_payload(&admissions[0])] })
        .unwrap();
    let index = driver.node().last_index();
    assert_eq!(driver.admit(std::slice::from_ref(&conditional))[0], Admission::InLog(index));
    settle(&mut driver);
    assert_eq!(committed_ids(&driver.admit(&[conditional])[0]), (1, 1));
}

fn admission_payload(admission: &Admission) -> Payload {
    match admission {
        Admission::Propose(payload) => payload.clone(),
        other => panic!("expected a proposal, got {other:?}"),
    }
}

#[test]
fn a_new_leader_is_not_ready_until_it_commits_in_its_term() {
    let scratch = Scratch::new("sessions-ready");
    let mut driver = open(&scratch.0);
    driver.step(Event::Campaign).unwrap();
    // Elected (one voter), its first entry written but not yet durable: not committed.
    assert!(driver.node().is_leader());
    assert_eq!(driver.admit(&[append(1, 1, &["x"])])[0], Admission::Refused(SessionRefusal::NotReady));
    settle(&mut driver);
    assert!(matches!(driver.admit(&[append(1, 1, &["x"])])[0], Admission::Propose(_)));
}

#[test]
fn expired_sessions_are_refused_not_appended_again() {
    let scratch = Scratch::new("sessions-expiry");
    let mut driver = open(&scratch.0);
    driver.set_session_limits(SessionLimits { sessions_max: 1, window: 2, idle_entries: 1000 }).unwrap();
    lead(&mut driver);
    submit(&mut driver, &[append(1, 1, &["a"])]);
    submit(&mut driver, &[append(2, 1, &["b"])]); // session 1 is dropped
    assert_eq!(driver.admit(&[append(1, 2, &["c"])])[0], Admission::Refused(SessionRefusal::UnknownSession));
    let commit = driver.node().commit().0;
    assert_eq!(
        driver.admit(&[append(1, 1, &["a"])])[0],
        Admission::Refused(SessionRefusal::SessionsDropped { commit })
    );
    // Window: session 2 remembers its last 2 requests.
    submit(&mut driver, &[append(2, 2, &["b2"])]);
    submit(&mut driver, &[append(2, 3, &["b3"])]);
    assert_eq!(
        driver.admit(&[append(2, 1, &["b"])])[0],
        Admission::Refused(SessionRefusal::Forgotten { oldest: 2 })
    );
    assert_eq!(
        driver.admit(&[append(2, 9, &["b9"])])[0],
        Admission::Refused(SessionRefusal::TooFarAhead { newest: 3, window: 2 })
    );
}

/// A follower's Apply of a session's request waits behind a sync while a snapshot past it is
/// installed in the same round (a review's finding: the release used to ask for the ID of an
/// entry the snapshot covers, and panicked).
#[test]
fn a_deferred_apply_overtaken_by_a_snapshot_install_is_released_safely() {
    use replog_core::{Body, ClientRequest, Entry, Membership, Message, Snapshot, SnapshotMeta, Term};
    let message = |body| Event::Receive(Message { from: NodeId(1), to: NodeId(2), term: Term(1), body });
    let scratch = Scratch::new("sessions-install");
    let config = Config::new(NodeId(2), vec![NodeId(1), NodeId(3)]);
    let (mut driver, _) = Driver::open(config, RealFs::new(), &scratch.0, identity()).unwrap();
    let request = Payload::Request(ClientRequest {
        client: ClientId(7),
        seq: 1,
        commands: vec![Bytes::from("a"), Bytes::from("b")],
    });
    let entries = vec![
        Entry { index: LogIndex(1), term: Term(1), payload: Payload::Noop },
        Entry { index: LogIndex(2), term: Term(1), payload: request },
    ];
    let append = Body::AppendRequest {
        prev_log_index: LogIndex(0),
        prev_log_term: Term(0),
        entries,
        leader_commit: LogIndex(2),
        seq: 1,
    };
    driver.step(message(append)).unwrap();
    assert!(driver.is_waiting(), "the Apply waits for the sync");
    let snapshot = Snapshot {
        meta: SnapshotMeta { index: LogIndex(10), term: Term(1) },
        membership: Membership::voters_only([NodeId(1), NodeId(2), NodeId(3)]),
        data: Bytes::from("{\"commands\":9,\"digest\":\"0000000000000000\"}"),
    };
    driver
        .step(message(Body::SnapshotRequest {
            meta: snapshot.meta,
            membership: snapshot.membership.clone(),
            total: snapshot.data.len() as u64,
            checksum: snapshot.checksum(),
            offset: 0,
            chunk: snapshot.data.clone(),
        }))
        .unwrap();
    let outputs = settle(&mut driver);
    assert!(outputs.iter().any(|output| matches!(output, Output::Restored(_))));
    assert_eq!(driver.command_id_after_snapshot(LogIndex(2)), None);
    assert_eq!(driver.command_id(LogIndex(11)), 10);
}
