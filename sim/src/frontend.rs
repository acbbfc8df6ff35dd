//! The client-facing side of a simulated node, as the runtime's server runs it
//! (`runtime/src/clients.rs`): the appends that arrive within one round are proposed together
//! (session appends screened by `Driver::admit` first, then plain commands), linearizable reads
//! are stepped at once, and the core's replies and the entries it applies become answers to the
//! clients' attempts; after each round, clients waiting for entries the node will not apply as
//! leader are let go. It lives and dies with the node's process: a crash loses every client
//! waiting on it (they time out).

use crate::disk::SimFs;
use replog_core::{Bytes, ClientId, Entry, Event, LogIndex, NodeId, Payload, Reply, RequestId, Term};
use replog_runtime::driver::{Admission, Driver, SessionAppend};
use replog_runtime::sessions::{Outcome, SessionRefusal};
use std::collections::BTreeMap;

/// One attempt of a client: a retry is a new attempt of the same operation.
pub(crate) type Attempt = RequestId;

/// What a client asks a node.
#[derive(Clone, Debug)]
pub(crate) enum Arrival {
    /// A linearizable read (ReadIndex).
    Read,
    /// A plain append of one command.
    Append(Bytes),
    /// A session's append (exactly-once).
    Session(SessionAppend),
}

/// What a node answers an attempt (the runtime's `AppendResult`, and reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Committed as entry `index` of `term`, its commands at IDs `first_id..first_id + count`;
    /// `recognised`: the leader took it for a repeat of a request it had committed or held.
    Committed { index: LogIndex, term: Term, first_id: u64, count: u64, recognised: bool },
    /// A read that saw the first `len` entries applied.
    ReadOk { len: u64 },
    /// Not the leader; the one it knows of.
    NotLeader { leader: Option<NodeId> },
    /// Not done. `retry`: nothing was appended (pushed back); else it may or may not be in the
    /// log (leadership changed after it was appended, or the node lost track of its entry).
    Failed { retry: bool },
    /// A session's request refused; nothing appended.
    Refused(SessionRefusal),
}

impl Answer {
    /// The answer to a request committed before (`clients.rs` `committed`).
    fn committed(outcome: Outcome) -> Answer {
        let Outcome { index, term, first_id, count } = outcome;
        Answer::Committed { index, term, first_id, count, recognised: true }
    }

    /// The answer when the node cannot name an append's outcome (its entry was replaced, or a
    /// snapshot covers it): it may be in the log (`clients.rs` `retry_to_learn`).
    fn retry_to_learn() -> Answer {
        Answer::Failed { retry: false }
    }
}

/// How a node's frontends screened session appends (cumulative over lives).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdmissionStats {
    /// Proposed as new.
    pub proposed: u64,
    /// A retry of a committed request: answered from the session table.
    pub committed: u64,
    /// A retry of a request in the log, not applied yet: waits for it.
    pub in_log: u64,
    /// The same request twice in one round: one entry, both answered.
    pub same_as: u64,
    /// Refused (any reason).
    pub refused: u64,
    /// Proposals holding more than one payload.
    pub group_proposals: u64,
}

/// A session's request waiting for its entry to be applied.
#[derive(Debug)]
struct InLogWait {
    attempt: Attempt,
    client: ClientId,
    seq: u64,
}

/// One node's client connections.
#[derive(Debug, Default)]
pub(crate) struct Frontend {
    /// Plain appends received this round, proposed together at its end.
    batch: Vec<(Attempt, Bytes)>,
    /// Session appends received this round, screened and proposed with them.
    session_batch: Vec<(Attempt, SessionAppend)>,
    /// A flush of the round's batch is scheduled.
    flush_due: bool,
    /// Attempts waiting on a proposal: per entry of it, in order, who waits for it, and
    /// whether it repeats the request proposed (a session's retry in the same round).
    proposals: BTreeMap<RequestId, Vec<Vec<(Attempt, bool)>>>,
    /// Attempts waiting on a read.
    reads: BTreeMap<RequestId, Attempt>,
    /// Session requests found in the log, by index: answered when it is applied.
    in_log: BTreeMap<LogIndex, Vec<InLogWait>>,
}

impl Frontend {
    /// An append joins this round's batch. True if the round's flush must be scheduled.
    pub(crate) fn queue(&mut self, attempt: Attempt, arrival: Arrival) -> bool {
        match arrival {
            Arrival::Append(command) => self.batch.push((attempt, command)),
            Arrival::Session(append) => self.session_batch.push((attempt, append)),
            Arrival::Read => unreachable!("reads are stepped at once"),
        }
        !std::mem::replace(&mut self.flush_due, true)
    }

    /// A read arrives: the event to step, under the core request id `request`.
    pub(crate) fn read(&mut self, attempt: Attempt, request: RequestId) -> Event {
        self.reads.insert(request, attempt);
        Event::Read { request }
    }

    /// The round ends: the batch as one proposal under `request`, if anything is to be
    /// proposed, and the answers given at once (committed already, refused). Session appends
    /// in the log wait for it to be applied. As `Clients::take_proposal`.
    pub(crate) fn take_proposal(
        &mut self,
        driver: &Driver<SimFs>,
        request: RequestId,
        stats: &mut AdmissionStats,
    ) -> (Option<Event>, Vec<(Attempt, Answer)>) {
        self.flush_due = false;
        let mut answers = Vec::new();
        let mut waiting: Vec<Vec<(Attempt, bool)>> = Vec::new();
        let mut payloads = Vec::new();
        // The session appends first: a condition was checked against the log's end, so nothing
        // may come between it and the admitted entries.
        let sessions = std::mem::take(&mut self.session_batch);
        let appends: Vec<SessionAppend> = sessions.iter().map(|(_, append)| append.clone()).collect();
        // Where each admitted append's entry sits in the proposal.
        let mut slot_of: Vec<Option<usize>> = Vec::with_capacity(appends.len());
        for ((attempt, append), admission) in sessions.into_iter().zip(driver.admit(&appends)) {
            let mut slot = None;
            match admission {
                Admission::Propose(payload) => {
                    stats.proposed += 1;
                    slot = Some(payloads.len());
                    waiting.push(vec![(attempt, false)]);
                    payloads.push(payload);
                }
                Admission::SameAs(earlier) => {
                    stats.same_as += 1;
                    slot = slot_of[earlier];
                    let slot = slot.expect("an append is the same as an earlier one that was proposed");
                    waiting[slot].push((attempt, true));
                }
                Admission::Committed(outcome) => {
                    stats.committed += 1;
                    answers.push((attempt, Answer::committed(outcome)));
                }
                Admission::InLog(index) => {
                    stats.in_log += 1;
                    let wait = InLogWait { attempt, client: append.client, seq: append.seq };
                    self.in_log.entry(index).or_default().push(wait);
                }
                Admission::Refused(refusal) => {
                    stats.refused += 1;
                    answers.push((attempt, Answer::Refused(refusal)));
                }
            }
            slot_of.push(slot);
        }
        for (attempt, command) in self.batch.drain(..) {
            waiting.push(vec![(attempt, false)]);
            payloads.push(Payload::Command(command));
        }
        if payloads.is_empty() {
            return (None, answers);
        }
        if payloads.len() > 1 {
            stats.group_proposals += 1;
        }
        self.proposals.insert(request, waiting);
        (Some(Event::Propose { request, payloads }), answers)
    }

    /// Whether `request` is one of this frontend's proposals or reads.
    pub(crate) fn owns(&self, request: RequestId) -> bool {
        self.proposals.contains_key(&request) || self.reads.contains_key(&request)
    }

    /// The core replied; `read_len` is how much of the log the node has applied (what a read
    /// sees). As `Clients::on_reply`.
    pub(crate) fn on_reply(
        &mut self,
        reply: &Reply,
        read_len: u64,
        driver: &Driver<SimFs>,
    ) -> Vec<(Attempt, Answer)> {
        if let Some(attempt) = self.reads.remove(&reply.request()) {
            let answer = match reply {
                Reply::ReadReady { .. } => Answer::ReadOk { len: read_len },
                Reply::NotLeader { leader, .. } => Answer::NotLeader { leader: *leader },
                _ => Answer::Failed { retry: true },
            };
            return vec![(attempt, answer)];
        }
        let Some(waiting) = self.proposals.remove(&reply.request()) else {
            return Vec::new();
        };
        let mut answers = Vec::new();
        for (position, waiters) in waiting.into_iter().enumerate() {
            let answer = match reply {
                Reply::Committed { first, term, .. } => {
                    let index = first.plus(position as u64);
                    match driver.command_id_after_snapshot(index) {
                        Some(first_id) => {
                            let count = driver.command_id(index.next()) - first_id;
                            Answer::Committed { index, term: *term, first_id, count, recognised: false }
                        }
                        // A snapshot installed since (this node stepped down meanwhile).
                        None => Answer::retry_to_learn(),
                    }
                }
                Reply::NotLeader { leader, .. } => Answer::NotLeader { leader: *leader },
                Reply::Rejected { .. } => Answer::Failed { retry: true },
                Reply::Indeterminate { .. } => Answer::Failed { retry: false },
                Reply::ReadReady { .. } => continue,
            };
            for (attempt, repeat) in waiters {
                let mut answer = answer.clone();
                if let Answer::Committed { recognised, .. } = &mut answer {
                    *recognised = repeat;
                }
                answers.push((attempt, answer));
            }
        }
        answers
    }

    /// Lets go of the clients waiting for entries this node will not apply as leader: all of
    /// them once it no longer leads, and those a snapshot now covers; each is told to retry to
    /// learn. As `Clients::release_waiters`, after every round.
    pub(crate) fn release_waiters(&mut self, driver: &Driver<SimFs>) -> Vec<(Attempt, Answer)> {
        if self.in_log.is_empty() {
            return Vec::new();
        }
        let kept = if driver.node().is_leader() {
            self.in_log.split_off(&driver.node().snapshot_meta().index.next())
        } else {
            BTreeMap::new()
        };
        let released = std::mem::replace(&mut self.in_log, kept).into_values().flatten();
        released.map(|wait| (wait.attempt, Answer::retry_to_learn())).collect()
    }

    /// Entries were applied: the session requests waiting for them are answered, with the
    /// entry's outcome if it is theirs, else (a new leader replaced it, or a snapshot covers it)
    /// told to retry to learn. As `Clients::on_applied`.
    pub(crate) fn on_applied(&mut self, entries: &[Entry], driver: &Driver<SimFs>) -> Vec<(Attempt, Answer)> {
        let mut answers = Vec::new();
        if self.in_log.is_empty() {
            return answers;
        }
        for entry in entries {
            let Some(waits) = self.in_log.remove(&entry.index) else {
                continue;
            };
            for wait in waits {
                let id = driver.command_id_after_snapshot(entry.index);
                let answer = match (&entry.payload, id) {
                    (Payload::Request(request), Some(first_id))
                        if (request.client, request.seq) == (wait.client, wait.seq) =>
                    {
                        Answer::Committed {
                            index: entry.index,
                            term: entry.term,
                            first_id,
                            count: request.commands.len() as u64,
                            recognised: true,
                        }
                    }
                    // Replaced by a new leader, or covered by a snapshot since: the retry asks
                    // the leader's table.
                    _ => Answer::retry_to_learn(),
                };
                answers.push((wait.attempt, answer));
            }
        }
        answers
    }
}
