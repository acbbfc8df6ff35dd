//! The client workload: closed-loop clients that append and read through whichever node they
//! believe leads, and record every operation in the history that is checked at the end.
//!
//! Plain clients append one command and never retry: an answer that did not come (timeout,
//! crash) or a leader that lost office leaves the outcome indeterminate. Session clients
//! append through a client session (dissertation §6.3), by the rules of the runtime's
//! `session.rs`: one to four commands as one entry, sometimes only if the log's last command ID
//! is the last one the client knows of (which may be stale); every retry carries the same
//! sequence number, at the same node or another, until a definitive answer, `ATTEMPTS_MAX`
//! attempts or `DEADLINE_TICKS`. A refusal that says the session expired starts a new session
//! if no attempt may have been appended, else the outcome is unknown. A sequence number that
//! may have been appended is never used again for other commands.
//!
//! Two more ways a session's request comes again, both of which must be answered with the
//! original outcome (the original IDs) or refused: an attempt sometimes goes twice at once (the
//! two meet in one round), and an acknowledged append is sometimes sent again, a few times
//! over the next seconds, across crashes, restarts and leader changes, after newer requests of
//! its session (a process that restarted and resumed its session at a number it had stored,
//! or a request a paused node held and reads when it resumes).

use crate::cluster::Cluster;
use crate::frontend::{Answer, Arrival, Attempt};
use crate::history::{Ack, History, Op, OpKind, Outcome, Tally};
use crate::network::Network;
use crate::options::{Options, TICK};
use crate::timeline::{SimEvent, Timeline};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use replog_core::{Bytes, ClientId, Entry, LogIndex, NodeId, RequestId};
use replog_runtime::driver::SessionAppend;
use replog_runtime::sessions::SessionRefusal;
use std::collections::BTreeMap;

/// A client gives up on an attempt after this many ticks.
const CLIENT_TIMEOUT_TICKS: u64 = 30;
/// A session append is given up after this many attempts (the first included), or once this
/// many ticks passed since it was first sent (`replog append`'s default deadline is 5 s).
const ATTEMPTS_MAX: u32 = 30;
const DEADLINE_TICKS: u64 = 300;
/// The pause before retrying a leader that is not ready yet (`session.rs`: 2 ms), in units.
const NOT_READY_PAUSE: u64 = TICK / 5;
/// The pause before retrying after a failure (`session.rs`: 20 ms), in units.
const FAILED_PAUSE: u64 = 2 * TICK;
/// A session append of several commands (a batch), and a conditional one, this often.
const BATCH_RATE: f64 = 0.3;
const CONDITIONAL_RATE: f64 = 0.2;
/// A session's attempt goes twice at once this often.
const HEDGE_RATE: f64 = 0.05;
/// An acknowledged session append is sent again this often: a few times (`RESEND_PROBES`),
/// each up to `RESEND_DELAY_TICKS_MAX` after the one before. Each probe follows NotLeader hints
/// and retries a leader not ready or no answer, up to `RESEND_ATTEMPTS_MAX` attempts.
const RESEND_RATE: f64 = 0.5;
const RESEND_PROBES: u32 = 4;
const RESEND_DELAY_TICKS_MAX: u64 = 200;
const RESEND_ATTEMPTS_MAX: u32 = 8;

/// An acknowledged append sent again: nobody waits for it; its answers are checked.
struct Resend {
    op: usize,
    arrival: Arrival,
    /// Probes still to come after this one.
    probes_left: u32,
    /// Attempts of this probe.
    attempts: u32,
    /// Where its latest attempt went.
    node: usize,
}

/// A session as its client knows it.
#[derive(Clone, Copy, Debug)]
struct Session {
    id: ClientId,
    /// The number of its next request (0: none drawn yet).
    seq: u64,
    /// A commit index seen before its first request was first sent: learned from the node the
    /// first request goes to, just before (`session.rs` asks it for its status).
    since: Option<LogIndex>,
}

/// An operation in progress.
struct InFlight {
    op: usize,
    /// The attempt the client waits for.
    attempt: Attempt,
    attempts: u32,
    /// What each attempt sends.
    arrival: Arrival,
    /// Set once an attempt may have been appended (no answer, a leader that lost office, a
    /// second copy sent): from then on only the session can tell, and the outcome is unknown
    /// if it expired.
    maybe_appended: bool,
    /// The node the last attempt went to.
    node: usize,
    /// Nodes that could not serve, in a row: after as many as there are nodes, a pause.
    misses: usize,
}

struct Client {
    /// The node it sends to: the last leader it heard of.
    guess: usize,
    current: Option<InFlight>,
    next_op: u64,
    acked_after_heal: bool,
    /// Its session, if it appends through one.
    session: Option<Session>,
    /// The last command ID it knows of: what a conditional append expects.
    last_known_id: u64,
}

/// What the session clients met.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionStats {
    pub sessions: u64,
    pub attempts: u64,
    pub retries: u64,
    /// Acknowledged after more than one attempt.
    pub acked_after_retry: u64,
    pub batches_acked: u64,
    pub conditional: u64,
    pub hedged: u64,
    /// Acknowledgements that said the leader recognised a repeat.
    pub recognised: u64,
    /// Refusals by kind, to the clients' attempts and to resends.
    pub not_ready: u64,
    pub unknown_session: u64,
    pub sessions_dropped: u64,
    pub forgotten: u64,
    pub too_far_ahead: u64,
    pub condition_failed: u64,
    /// Ended with the outcome unknown: a session that expired after an attempt may have been
    /// appended, or attempts exhausted.
    pub unknown_outcomes: u64,
    pub given_up: u64,
    /// Acknowledged appends sent again, and how many of those were answered with their
    /// outcome (the others found the session expired, or no leader).
    pub resends: u64,
    pub resends_committed: u64,
}

pub(crate) struct Workload {
    clients: Vec<Client>,
    /// Every attempt sent: its client (none for a resend, which nobody waits for), and its
    /// operation in the history.
    attempts: BTreeMap<Attempt, (Option<usize>, usize)>,
    /// Resends, by their latest attempt.
    resends: BTreeMap<Attempt, Resend>,
    next_attempt: u64,
    history: History,
    nodes: usize,
    /// Clients start nothing new (the convergence phase).
    stopped: bool,
    /// The fault phase is over: appends invoked since then count as progress after the heal.
    healed: bool,
    fault_phase_end: u64,
    rng: ChaCha8Rng,
    pub(crate) stats: SessionStats,
}

impl Workload {
    /// `rng_setup` draws each client's first guess of the leader; `rng` everything after.
    pub(crate) fn new(options: &Options, rng_setup: &mut ChaCha8Rng, rng: ChaCha8Rng) -> Workload {
        let clients = (0..options.clients)
            .map(|client| Client {
                guess: rng_setup.random_range(0..options.ids() as usize),
                current: None,
                next_op: 0,
                acked_after_heal: false,
                // Drawn when its first append goes.
                session: options.uses_session(client).then_some(Session {
                    id: ClientId(0),
                    seq: 0,
                    since: None,
                }),
                last_known_id: 0,
            })
            .collect();
        Workload {
            clients,
            attempts: BTreeMap::new(),
            resends: BTreeMap::new(),
            next_attempt: 1,
            history: History::default(),
            // Clients may ask any node, spares and removed ones too: they redirect.
            nodes: options.ids() as usize,
            stopped: false,
            healed: false,
            fault_phase_end: options.ticks * TICK,
            rng,
            stats: SessionStats::default(),
        }
    }

    /// Every client starts within its first five ticks.
    pub(crate) fn start(&mut self, t: &mut Timeline) {
        for client in 0..self.clients.len() {
            let delay = self.rng.random_range(1..=5 * TICK);
            t.schedule(delay, SimEvent::ClientNext { client });
        }
    }

    /// The next operation of a client that waits for nothing.
    pub(crate) fn start_op(&mut self, client: usize, cluster: &Cluster, network: &Network, t: &mut Timeline) {
        if self.stopped || self.clients[client].current.is_some() {
            return;
        }
        let read = self.rng.random_bool(0.2);
        let n = self.clients[client].next_op;
        self.clients[client].next_op += 1;
        let (kind, arrival) = if read {
            (OpKind::Read, Arrival::Read)
        } else if self.clients[client].session.is_some() {
            let count = if self.rng.random_bool(BATCH_RATE) { self.rng.random_range(2..=4) } else { 1 };
            let commands: Vec<Vec<u8>> =
                (0..count).map(|k| format!("c{client}.{n}.{k}").into_bytes()).collect();
            let expect_last =
                self.rng.random_bool(CONDITIONAL_RATE).then_some(self.clients[client].last_known_id);
            if expect_last.is_some() {
                self.stats.conditional += 1;
            }
            let session = self.session(client, t);
            let append = SessionAppend {
                client: session.id,
                seq: session.seq,
                since: session.since.unwrap_or(LogIndex::ZERO),
                expect_last,
                commands: commands.iter().map(|command| Bytes::from(command.clone())).collect(),
            };
            (OpKind::Request { commands, expect_last }, Arrival::Session(append))
        } else {
            let value = format!("c{client}.{n}").into_bytes();
            (OpKind::Append { value: value.clone() }, Arrival::Append(Bytes::from(value)))
        };
        self.history.ops.push(Op {
            client: client as u32,
            kind,
            invoke: t.now(),
            response: None,
            outcome: Outcome::Pending,
        });
        let op = self.history.ops.len() - 1;
        let node = self.clients[client].guess;
        self.clients[client].current = Some(InFlight {
            op,
            attempt: RequestId(0),
            attempts: 0,
            arrival,
            maybe_appended: false,
            node,
            misses: 0,
        });
        self.send(client, cluster, network, t);
    }

    /// The client's session, a new one if it has none yet.
    fn session(&mut self, client: usize, t: &mut Timeline) -> Session {
        let session = self.clients[client].session.expect("a session client");
        if session.seq > 0 {
            return session;
        }
        self.new_session(client, t)
    }

    /// A new session for `client` (a random id, as `session.rs` draws).
    fn new_session(&mut self, client: usize, t: &mut Timeline) -> Session {
        let id = ClientId(self.rng.random_range(1..=u64::MAX));
        let session = Session { id, seq: 1, since: None };
        self.clients[client].session = Some(session);
        self.stats.sessions += 1;
        t.note(|| format!("client {client} starts session {id}"));
        session
    }

    /// Sends the client's operation once more: to the node it believes leads, sometimes to
    /// anyone (followers, stale leaders). A session's first request first learns that node's
    /// commit index (its `since`); a node that cannot tell (down, paused) is passed over.
    fn send(&mut self, client: usize, cluster: &Cluster, network: &Network, t: &mut Timeline) {
        let random = self.rng.random_range(0..self.nodes);
        let node = if self.rng.random_bool(0.2) { random } else { self.clients[client].guess };
        let attempt = RequestId(self.next_attempt);
        self.next_attempt += 1;
        let rng = &mut self.rng;
        let state = &mut self.clients[client];
        let current = state.current.as_mut().expect("an operation in progress");
        current.attempt = attempt;
        current.attempts += 1;
        current.node = node;
        if let (Arrival::Session(append), Some(session)) = (&mut current.arrival, &mut state.session) {
            if session.since.is_none() {
                let Some(commit) = cluster.commit_seen(node) else {
                    t.note(|| format!("client {client} cannot learn a commit index from n{}", node + 1));
                    state.guess = rng.random_range(0..self.nodes);
                    self.miss(client, t);
                    return;
                };
                session.since = Some(commit);
                append.since = commit;
            }
        }
        self.attempts.insert(attempt, (Some(client), current.op));
        let arrival = current.arrival.clone();
        let session = matches!(arrival, Arrival::Session(_));
        if session {
            self.stats.attempts += 1;
            if current.attempts > 1 {
                self.stats.retries += 1;
            }
        }
        t.note(|| {
            let what = match &arrival {
                Arrival::Read => "read".into(),
                Arrival::Append(_) => "append".into(),
                Arrival::Session(append) => format!(
                    "{}#{}{} ({} commands)",
                    append.client,
                    append.seq,
                    append.expect_last.map_or(String::new(), |last| format!(" if last {last}")),
                    append.commands.len()
                ),
            };
            format!("client {client} sends {attempt} {what} to n{}", node + 1)
        });
        let latency = network.latency(rng);
        if session && rng.random_bool(HEDGE_RATE) {
            // A second copy at once: from now on either may be the one appended.
            current.maybe_appended = true;
            self.stats.hedged += 1;
            let again = latency + rng.random_range(0..=TICK / 50);
            t.schedule(again, SimEvent::ClientArrive { node, attempt, arrival: arrival.clone() });
        }
        t.schedule(latency, SimEvent::ClientArrive { node, attempt, arrival });
        t.schedule(CLIENT_TIMEOUT_TICKS * TICK, SimEvent::ClientTimeout { client, attempt });
    }

    /// Answers from a node travel back to whoever sent the attempts.
    pub(crate) fn route_answers(
        &mut self,
        answers: Vec<(Attempt, Answer)>,
        network: &Network,
        t: &mut Timeline,
    ) {
        for (attempt, answer) in answers {
            let latency = network.latency(&mut self.rng);
            t.schedule(latency, SimEvent::ClientReply { attempt, answer });
        }
    }

    /// An answer arrives. Every answer that says where an append committed is recorded for
    /// the checks, whether the client still waits for it or not.
    pub(crate) fn on_answer(
        &mut self,
        attempt: Attempt,
        answer: Answer,
        network: &Network,
        t: &mut Timeline,
    ) {
        let Some(&(client, op)) = self.attempts.get(&attempt) else {
            return;
        };
        if let Answer::Committed { index, first_id, count, .. } = answer {
            self.history.acks.push(Ack { op, index, first_id, count });
        }
        let Some(client) = client else {
            self.on_resend_answer(attempt, Some(answer), network, t);
            return;
        };
        let Some(current) = &self.clients[client].current else {
            return;
        };
        if current.attempt != attempt {
            return; // an answer to an attempt the client gave up on
        }
        t.note(|| format!("client {client} got {attempt}: {answer:?}"));
        match (&current.arrival, answer) {
            (Arrival::Read, Answer::ReadOk { len }) => self.finish(client, Outcome::ReadOk { len }, t),
            (Arrival::Read | Arrival::Append(_), Answer::NotLeader { leader }) => {
                self.follow_hint(client, leader);
                self.finish(client, Outcome::Failed, t);
            }
            (Arrival::Append(_), Answer::Committed { index, first_id, .. }) => {
                self.finish(client, Outcome::AppendOk { index, first_id }, t)
            }
            (Arrival::Append(_), Answer::Failed { retry: false }) => {
                self.finish(client, Outcome::Indeterminate, t)
            }
            (Arrival::Read | Arrival::Append(_), _) => self.finish(client, Outcome::Failed, t),
            (Arrival::Session(_), answer) => self.on_session_answer(client, answer, network, t),
        }
    }

    /// A session's append is answered: by `session.rs`'s rules.
    fn on_session_answer(&mut self, client: usize, answer: Answer, network: &Network, t: &mut Timeline) {
        if let Answer::Refused(refusal) = &answer {
            self.count_refusal(refusal);
        }
        let current = self.clients[client].current.as_mut().expect("in progress");
        let maybe_appended = current.maybe_appended;
        let node = current.node;
        match answer {
            Answer::Committed { index, first_id, count, recognised, .. } => {
                if current.attempts > 1 {
                    self.stats.acked_after_retry += 1;
                }
                if recognised {
                    self.stats.recognised += 1;
                }
                if count > 1 {
                    self.stats.batches_acked += 1;
                }
                let (op, arrival) = (current.op, current.arrival.clone());
                let state = &mut self.clients[client];
                state.guess = node;
                state.last_known_id = state.last_known_id.max(first_id + count - 1);
                self.advance(client);
                self.finish(client, Outcome::AppendOk { index, first_id }, t);
                if self.rng.random_bool(RESEND_RATE) {
                    self.resend_later(op, arrival, network, t);
                }
            }
            // A hint is followed at once, another node asked if there is none; a pause after
            // as many misses in a row as there are nodes (`session.rs` `missed`).
            Answer::NotLeader { leader } => {
                self.follow_hint(client, leader);
                self.miss(client, t);
            }
            Answer::Failed { retry } => {
                // retry: nothing appended (pushed back, or the entry it waited for was
                // replaced); else leadership changed after it appended: a retry finds out.
                current.maybe_appended |= !retry;
                self.clients[client].guess = self.rng.random_range(0..self.nodes);
                self.retry(client, FAILED_PAUSE, t);
            }
            Answer::Refused(SessionRefusal::NotReady) => {
                self.clients[client].guess = node;
                self.retry(client, NOT_READY_PAUSE, t);
            }
            // No attempt can have been appended: any commit index since is a valid `since`.
            Answer::Refused(SessionRefusal::SessionsDropped { commit }) if !maybe_appended => {
                let since = LogIndex(commit);
                if let Arrival::Session(append) = &mut current.arrival {
                    append.since = since;
                }
                if let Some(session) = &mut self.clients[client].session {
                    session.since = Some(since);
                }
                self.retry(client, 1, t);
            }
            // The session expired, or ran too far ahead of what it committed (appends whose
            // outcome was unknown skip their numbers), before this append was ever appended: a
            // new session is safe.
            Answer::Refused(SessionRefusal::UnknownSession | SessionRefusal::TooFarAhead { .. })
                if !maybe_appended =>
            {
                let session = self.new_session(client, t);
                let current = self.clients[client].current.as_mut().expect("in progress");
                if let Arrival::Session(append) = &mut current.arrival {
                    (append.client, append.seq) = (session.id, session.seq);
                }
                self.retry(client, 1, t);
            }
            // Not appended, and no earlier attempt can be any more: the number may be reused.
            Answer::Refused(SessionRefusal::ConditionFailed { last_id }) if !maybe_appended => {
                let state = &mut self.clients[client];
                state.last_known_id = state.last_known_id.max(last_id);
                self.finish(client, Outcome::ConditionFailed { last_id }, t);
            }
            // An earlier attempt may have been appended (or still arrive somewhere): unknown.
            Answer::Refused(_) => {
                self.stats.unknown_outcomes += 1;
                self.advance(client);
                self.finish(client, Outcome::Indeterminate, t);
            }
            Answer::ReadOk { .. } => unreachable!("a read's answer to an append"),
        }
    }

    /// A refusal, counted by kind.
    fn count_refusal(&mut self, refusal: &SessionRefusal) {
        let count = match refusal {
            SessionRefusal::NotReady => &mut self.stats.not_ready,
            SessionRefusal::UnknownSession => &mut self.stats.unknown_session,
            SessionRefusal::SessionsDropped { .. } => &mut self.stats.sessions_dropped,
            SessionRefusal::Forgotten { .. } => &mut self.stats.forgotten,
            SessionRefusal::TooFarAhead { .. } => &mut self.stats.too_far_ahead,
            SessionRefusal::ConditionFailed { .. } => &mut self.stats.condition_failed,
        };
        *count += 1;
    }

    /// The session's request number is used: the next request takes the next one.
    fn advance(&mut self, client: usize) {
        if let Some(session) = &mut self.clients[client].session {
            session.seq += 1;
        }
    }

    /// A NotLeader answer's hint: the leader it names, else anyone.
    fn follow_hint(&mut self, client: usize, leader: Option<NodeId>) {
        self.clients[client].guess = match leader {
            Some(leader) => leader.0 as usize - 1,
            None => self.rng.random_range(0..self.nodes),
        };
    }

    /// The operation goes again after `pause` units, unless it has had its attempts: then the
    /// client gives up (the outcome unknown if an attempt may have been appended).
    fn retry(&mut self, client: usize, pause: u64, t: &mut Timeline) {
        let current = self.clients[client].current.as_ref().expect("in progress");
        let started = self.history.ops[current.op].invoke;
        let late = t.now() + pause > started + DEADLINE_TICKS * TICK;
        if current.attempts < ATTEMPTS_MAX && !late {
            t.schedule(pause.max(1), SimEvent::ClientRetry { client, op: current.op });
            return;
        }
        self.stats.given_up += 1;
        if current.maybe_appended {
            self.stats.unknown_outcomes += 1;
            self.advance(client);
            self.finish(client, Outcome::Indeterminate, t);
        } else {
            self.finish(client, Outcome::Failed, t);
        }
    }

    /// A retry falls due: the next attempt of operation `op`, if the client still waits for it.
    pub(crate) fn on_retry(
        &mut self,
        client: usize,
        op: usize,
        cluster: &Cluster,
        network: &Network,
        t: &mut Timeline,
    ) {
        if self.clients[client].current.as_ref().is_some_and(|current| current.op == op) {
            self.send(client, cluster, network, t);
        }
    }

    /// A node could not serve the operation: the next attempt goes at once, or after a pause
    /// once as many nodes as there are missed in a row.
    fn miss(&mut self, client: usize, t: &mut Timeline) {
        let nodes = self.nodes;
        let current = self.clients[client].current.as_mut().expect("in progress");
        current.misses += 1;
        let pause = if current.misses >= nodes {
            current.misses = 0;
            FAILED_PAUSE
        } else {
            1
        };
        self.retry(client, pause, t);
    }

    /// An acknowledged append goes again, later, to any node, while its client goes on.
    fn resend_later(&mut self, op: usize, arrival: Arrival, network: &Network, t: &mut Timeline) {
        self.stats.resends += 1;
        let resend = Resend { op, arrival, probes_left: RESEND_PROBES - 1, attempts: 0, node: 0 };
        self.probe_later(resend, network, t);
    }

    /// The resend's next probe, after a while, to any node.
    fn probe_later(&mut self, mut resend: Resend, network: &Network, t: &mut Timeline) {
        resend.attempts = 0;
        let delay = self.rng.random_range(1..=RESEND_DELAY_TICKS_MAX * TICK);
        let node = self.rng.random_range(0..self.nodes);
        self.send_resend(resend, node, delay, network, t);
    }

    fn send_resend(
        &mut self,
        mut resend: Resend,
        node: usize,
        delay: u64,
        network: &Network,
        t: &mut Timeline,
    ) {
        let attempt = RequestId(self.next_attempt);
        self.next_attempt += 1;
        resend.attempts += 1;
        resend.node = node;
        self.attempts.insert(attempt, (None, resend.op));
        let (op, arrival) = (resend.op, resend.arrival.clone());
        t.note(|| format!("op {op} goes again as {attempt} to n{}", node + 1));
        let delay = delay + network.latency(&mut self.rng);
        t.schedule(delay, SimEvent::ClientArrive { node, attempt, arrival });
        t.schedule(delay + CLIENT_TIMEOUT_TICKS * TICK, SimEvent::ResendTimeout { attempt });
        self.resends.insert(attempt, resend);
    }

    /// A probe is answered (or timed out: `None`): sent on where the answer points, or done.
    fn on_resend_answer(
        &mut self,
        attempt: Attempt,
        answer: Option<Answer>,
        network: &Network,
        t: &mut Timeline,
    ) {
        let Some(mut resend) = self.resends.remove(&attempt) else {
            return;
        };
        let op = resend.op;
        t.note(|| format!("resend {attempt} of op {op} got {answer:?}"));
        if let Some(Answer::Refused(refusal)) = &answer {
            self.count_refusal(refusal);
        }
        let next = match answer {
            Some(Answer::Committed { .. }) => {
                self.stats.resends_committed += 1;
                None
            }
            Some(Answer::NotLeader { leader: Some(leader) }) => Some((leader.0 as usize - 1, 1)),
            Some(Answer::Refused(SessionRefusal::NotReady)) => Some((resend.node, NOT_READY_PAUSE)),
            Some(Answer::NotLeader { leader: None } | Answer::Failed { .. }) | None => {
                Some((self.rng.random_range(0..self.nodes), FAILED_PAUSE))
            }
            Some(Answer::Refused(_) | Answer::ReadOk { .. }) => None,
        };
        if let Some((node, pause)) = next.filter(|_| resend.attempts < RESEND_ATTEMPTS_MAX) {
            self.send_resend(resend, node, pause, network, t);
        } else if resend.probes_left > 0 {
            resend.probes_left -= 1;
            self.probe_later(resend, network, t);
        }
    }

    /// A probe got no answer in time: it goes elsewhere.
    pub(crate) fn on_resend_timeout(&mut self, attempt: Attempt, network: &Network, t: &mut Timeline) {
        self.on_resend_answer(attempt, None, network, t);
    }

    /// The client's operation ends with `outcome`; its next starts after a pause.
    fn finish(&mut self, client: usize, outcome: Outcome, t: &mut Timeline) {
        let current = self.clients[client].current.take().expect("in progress");
        if let Outcome::AppendOk { .. } = outcome {
            if self.healed && self.history.ops[current.op].invoke >= self.fault_phase_end {
                self.clients[client].acked_after_heal = true;
            }
        }
        t.note(|| format!("client {client} op {}: {outcome:?}", current.op));
        let entry = &mut self.history.ops[current.op];
        entry.response = Some(t.now());
        entry.outcome = outcome;
        let think = self.rng.random_range(1..=2 * TICK);
        t.schedule(think, SimEvent::ClientNext { client });
    }

    pub(crate) fn on_timeout(&mut self, client: usize, attempt: Attempt, t: &mut Timeline) {
        let Some(current) = &mut self.clients[client].current else {
            return;
        };
        if current.attempt != attempt {
            return;
        }
        t.note(|| format!("client {client} timed out on {attempt}"));
        self.clients[client].guess = self.rng.random_range(0..self.nodes);
        let current = self.clients[client].current.as_mut().expect("in progress");
        match current.arrival {
            // A read simply did not happen; a plain append's fate is unknown.
            Arrival::Read => self.finish(client, Outcome::Failed, t),
            Arrival::Append(_) => self.finish(client, Outcome::Indeterminate, t),
            // Sent, perhaps received: a retry is recognised if it was appended.
            Arrival::Session(_) => {
                current.maybe_appended = true;
                self.retry(client, 1, t);
            }
        }
    }

    /// The fault phase is over.
    pub(crate) fn on_heal(&mut self) {
        self.healed = true;
    }

    /// A client that got no append acknowledged that it invoked after the heal.
    pub(crate) fn waiting_for_progress(&self) -> Option<usize> {
        self.clients.iter().position(|c| !c.acked_after_heal)
    }

    /// Clients start nothing new.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
    }

    pub(crate) fn tally(&self) -> Tally {
        self.history.tally()
    }

    /// Exactly-once and linearizability of the whole history against the committed log.
    pub(crate) fn check(&self, committed: &[Entry]) -> Result<(), crate::checker::Broken> {
        self.history.check(committed)
    }
}
