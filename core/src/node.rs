//! The node: one way in (`step`), one way out (the returned actions). Term handling happens
//! once, here, before a message reaches its role's handler (§5.1).

use crate::action::{Action, RejectReason, Reply};
use crate::bugs::Bug;
use crate::candidate::Candidate;
use crate::config::{Config, ConfigError};
use crate::event::Event;
use crate::follower::Follower;
use crate::leader::Leader;
use crate::log::{Log, LogError};
use crate::message::{AppendOutcome, Body, Message};
use crate::progress::ReplicationState;
use crate::types::{Bytes, Entry, HardState, LogIndex, NodeId, RequestId, Term};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;

/// What a node recovered from durable storage at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
    /// How far the driver's state machine has already applied; the node re-delivers the rest.
    pub applied: LogIndex,
}

/// Why a node could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartError {
    Config(ConfigError),
    Log(LogError),
    /// The hard state's commit index lies past the end of the recovered log: entries are missing.
    CommitPastLog {
        commit: LogIndex,
        last_index: LogIndex,
    },
    AppliedPastCommit {
        applied: LogIndex,
        commit: LogIndex,
    },
    /// The log holds an entry of a term later than the recovered current term.
    LogTermAhead {
        log_term: Term,
        term: Term,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(error) => write!(f, "{error}"),
            StartError::Log(LogError::Gap { position, index }) => {
                write!(f, "recovered log has entry {index} at position {}", position + 1)
            }
            StartError::Log(LogError::TermDecreases { index }) => {
                write!(f, "recovered log term decreases at entry {index}")
            }
            StartError::CommitPastLog { commit, last_index } => write!(
                f,
                "commit index {commit} is past the last log entry {last_index}: committed entries are missing"
            ),
            StartError::AppliedPastCommit { applied, commit } => {
                write!(f, "applied index {applied} is past commit index {commit}")
            }
            StartError::LogTermAhead { log_term, term } => {
                write!(f, "log holds term {log_term}, past the saved current term {term}")
            }
        }
    }
}

impl std::error::Error for StartError {}

pub(crate) enum Role {
    Follower(Follower),
    Candidate(Candidate),
    Leader(Leader),
}

/// A Raft node. See the crate documentation for the driver contract.
pub struct Node {
    pub(crate) config: Config,
    pub(crate) rng: ChaCha8Rng,
    /// Latest term seen (§5.1). Never decreases.
    pub(crate) term: Term,
    /// Who this node voted for in `term`, if anyone (§5.2: at most one vote per term).
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) log: Log,
    /// Highest index known committed. Invariant: `applied <= commit <= log.last_index()`.
    pub(crate) commit: LogIndex,
    pub(crate) applied: LogIndex,
    pub(crate) role: Role,
    /// Ticks since the last election-timer reset; for a leader, ticks since the quorum check.
    pub(crate) election_elapsed: u32,
    /// This round's randomized timeout, in `[election_ticks_min, election_ticks_max)` (§5.2).
    pub(crate) election_timeout: u32,
    /// The hard state last handed to the driver, to emit only changes.
    saved: HardState,
    /// A storage action was emitted and no `Sync` has followed it yet.
    unsynced: bool,
    pub(crate) out: Vec<Action>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Node({} {} {} commit={} last={})",
            self.config.id,
            self.role_name(),
            self.term,
            self.commit,
            self.log.last_index()
        )
    }
}

/// Facts captured at the start of a step, to check what may not move backwards.
struct Before {
    term: Term,
    commit: LogIndex,
    leader_last: Option<(Term, LogIndex)>,
}

impl Node {
    pub fn new(config: Config, recovered: Recovered) -> Result<Node, StartError> {
        config.validate().map_err(StartError::Config)?;
        let mut config = config;
        config.peers.sort(); // Every iteration over peers is in id order: deterministic.
        let log = Log::recover(recovered.entries).map_err(StartError::Log)?;
        let hard_state = recovered.hard_state;
        if hard_state.commit > log.last_index() {
            return Err(StartError::CommitPastLog {
                commit: hard_state.commit,
                last_index: log.last_index(),
            });
        }
        if recovered.applied > hard_state.commit {
            return Err(StartError::AppliedPastCommit {
                applied: recovered.applied,
                commit: hard_state.commit,
            });
        }
        if log.last_term() > hard_state.term {
            return Err(StartError::LogTermAhead { log_term: log.last_term(), term: hard_state.term });
        }
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut node = Node {
            config,
            rng,
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            log,
            commit: hard_state.commit,
            applied: recovered.applied,
            role: Role::Follower(Follower { leader: None }),
            election_elapsed: 0,
            election_timeout: 0,
            saved: hard_state,
            unsynced: false,
            out: Vec::new(),
        };
        node.reset_election_timer();
        Ok(node)
    }

    /// Feeds one event to the node and returns what the driver must do, in order.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        let before = Before {
            term: self.term,
            commit: self.commit,
            leader_last: self.is_leader().then(|| (self.term, self.log.last_index())),
        };
        match event {
            Event::Tick => self.on_tick(),
            Event::Receive(message) => self.on_receive(message),
            Event::Propose { request, commands } => self.on_propose(request, commands),
            Event::Read { request } => self.on_read(request),
            Event::LogPersisted { index, term } => {
                if self.log.mark_persisted(index, term) && self.is_leader() {
                    self.maybe_commit();
                }
            }
            Event::Campaign => {
                if !self.is_leader() {
                    self.campaign(self.config.pre_vote);
                }
            }
        }
        self.finish_step();
        self.check_invariants(&before);
        std::mem::take(&mut self.out)
    }

    fn on_tick(&mut self) {
        if self.is_leader() {
            self.tick_leader();
            return;
        }
        self.election_elapsed += 1;
        if self.election_elapsed >= self.election_timeout {
            self.campaign(self.config.pre_vote);
        }
    }

    fn on_receive(&mut self, message: Message) {
        if message.to != self.config.id || !self.config.peers.contains(&message.from) {
            return; // Misrouted or from a stranger: not ours to act on.
        }
        if message.term > self.term {
            match message.body {
                // §4.2.3 (dissertation): a node that hears from a leader within the minimum
                // election timeout ignores vote requests, so a removed or partitioned node cannot
                // unseat a working leader.
                Body::VoteRequest { .. } if self.in_leader_lease() => return,
                // Pre-vote never changes anyone's term (§9.6).
                Body::VoteRequest { pre_vote: true, .. } => {}
                Body::VoteResponse { pre_vote: true, granted: true } => {}
                Body::AppendRequest { .. } => self.become_follower(message.term, Some(message.from)),
                _ => self.become_follower(message.term, None),
            }
        } else if message.term < self.term {
            match message.body {
                // A stale leader: answer with our term so it steps down (with check-quorum and
                // pre-vote it may never see a vote request that would tell it).
                Body::AppendRequest { prev_log_index, .. } => {
                    let outcome = AppendOutcome::Rejected {
                        prev_log_index,
                        conflict_index: self.log.last_index().next(),
                        conflict_term: None,
                    };
                    self.send(message.from, self.term, Body::AppendResponse { outcome, seq: 0 });
                }
                Body::VoteRequest { pre_vote: true, .. } => {
                    let body = Body::VoteResponse { pre_vote: true, granted: false };
                    self.send(message.from, self.term, body);
                }
                _ => {} // §5.1: stale requests and answers are ignored.
            }
            return;
        }
        let from = message.from;
        match message.body {
            Body::VoteRequest { pre_vote, last_log_index, last_log_term } => {
                self.on_vote_request(from, message.term, pre_vote, last_log_index, last_log_term)
            }
            Body::VoteResponse { pre_vote, granted } => {
                self.on_vote_response(from, message.term, pre_vote, granted)
            }
            Body::AppendRequest { prev_log_index, prev_log_term, entries, leader_commit, seq } => {
                // §5.2: at most one leader per term, so an AppendEntries of our own term while we
                // lead means two leaders: the log would be corrupted.
                assert!(
                    !self.is_leader(),
                    "{}: two leaders in {}: {} and {}",
                    self.config.id,
                    self.term,
                    self.config.id,
                    from
                );
                if !matches!(self.role, Role::Follower(_)) {
                    // §5.2: a candidate that hears from the leader of its term steps down.
                    self.become_follower(self.term, Some(from));
                }
                self.on_append_request(from, prev_log_index, prev_log_term, entries, leader_commit, seq);
            }
            Body::AppendResponse { outcome, seq } => {
                if self.is_leader() {
                    self.on_append_response(from, outcome, seq);
                }
            }
        }
    }

    /// §5.2, §5.4.1, and pre-vote (§9.6). `term` is the request's (>= ours after term handling
    /// for a real vote; any for a pre-vote).
    fn on_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        pre_vote: bool,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term)
            || self.config.has_bug(Bug::VoteWithoutLogCheck);
        let can_vote = self.voted_for == Some(from)
            || (self.voted_for.is_none() && self.leader().is_none())
            || (pre_vote && term > self.term);
        let granted = can_vote && up_to_date;
        if granted && !pre_vote {
            debug_assert_eq!(term, self.term);
            self.voted_for = Some(from);
            self.reset_election_timer();
        }
        let reply_term = if pre_vote && granted { term } else { self.term };
        self.send(from, reply_term, Body::VoteResponse { pre_vote, granted });
    }

    fn on_propose(&mut self, request: RequestId, commands: Vec<Bytes>) {
        if !self.is_leader() {
            let leader = self.leader();
            self.out.push(Action::Reply(Reply::NotLeader { request, leader }));
            return;
        }
        if commands.is_empty() {
            self.out.push(Action::Reply(Reply::Rejected { request, reason: RejectReason::Empty }));
            return;
        }
        self.propose(request, commands);
    }

    fn on_read(&mut self, request: RequestId) {
        if !self.is_leader() {
            let leader = self.leader();
            self.out.push(Action::Reply(Reply::NotLeader { request, leader }));
            return;
        }
        self.read(request);
    }

    /// Work every step ends with: hand committed entries to the state machine, answer clients
    /// whose requests are settled, and hand over the hard state if it changed.
    fn finish_step(&mut self) {
        if self.applied < self.commit {
            let entries = self.log.range(self.applied.next(), self.commit);
            self.applied = self.commit;
            self.out.push(Action::Apply { entries });
        }
        if self.is_leader() {
            self.answer_clients();
        }
        self.save_hard_state();
    }

    // ---- helpers shared by the roles ----

    /// Queues a message. One that vouches for durable state is preceded by the hard state it
    /// depends on and a `Sync`.
    pub(crate) fn send(&mut self, to: NodeId, term: Term, body: Body) {
        let skip_sync = match body {
            Body::VoteResponse { .. } => self.config.has_bug(Bug::VoteNotPersisted),
            Body::AppendResponse { .. } => self.config.has_bug(Bug::AckBeforePersist),
            _ => false,
        };
        if body.needs_durable_state() && !skip_sync {
            self.save_hard_state();
            if self.unsynced {
                self.out.push(Action::Sync);
                self.unsynced = false;
            }
        }
        self.out.push(Action::Send(Message { from: self.config.id, to, term, body }));
    }

    /// Appends entries to our own log and tells the driver to store them. The hard state goes
    /// first, so a durable entry of a term is never ahead of that term being durable.
    pub(crate) fn append_entries(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        self.save_hard_state();
        self.log.append(&entries);
        self.unsynced = true;
        self.out.push(Action::AppendLog { entries });
    }

    pub(crate) fn truncate_log(&mut self, from: LogIndex) {
        // A leader never overwrites or deletes entries in its log (§5.3, Leader Append-Only).
        assert!(!self.is_leader(), "{}: leader truncating its own log", self.config.id);
        // Committed entries are permanent (§5.4); truncating one would lose acknowledged data.
        assert!(
            from > self.commit,
            "{}: truncating committed entry {from} (commit {})",
            self.config.id,
            self.commit
        );
        self.save_hard_state();
        self.log.truncate_from(from);
        self.unsynced = true;
        self.out.push(Action::TruncateLog { from });
    }

    fn save_hard_state(&mut self) {
        let now = self.hard_state();
        if now != self.saved {
            // Only term and vote are promises (§5.2); the commit index may trail on disk, so a
            // commit-only change does not force the next vouching message to wait for a sync.
            if (now.term, now.voted_for) != (self.saved.term, self.saved.voted_for) {
                self.unsynced = true;
            }
            self.saved = now;
            self.out.push(Action::SaveHardState(now));
        }
    }

    pub(crate) fn reset_election_timer(&mut self) {
        let min = self.config.election_ticks_min;
        let span = u64::from(self.config.election_ticks_max - min);
        self.election_elapsed = 0;
        self.election_timeout = min + (self.rng.next_u64() % span) as u32;
    }

    /// This node heard from a leader recently enough to refuse disruptive votes (§4.2.3).
    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && match &self.role {
                Role::Leader(_) => true,
                Role::Follower(follower) => {
                    follower.leader.is_some() && self.election_elapsed < self.config.election_ticks_min
                }
                Role::Candidate(_) => false,
            }
    }

    pub(crate) fn cluster_size(&self) -> usize {
        self.config.peers.len() + 1
    }

    // ---- invariants ----

    fn check_invariants(&self, before: &Before) {
        let id = self.config.id;
        assert!(self.term >= before.term, "{id}: term went back from {} to {}", before.term, self.term);
        assert!(
            self.commit >= before.commit,
            "{id}: commit went back from {} to {}",
            before.commit,
            self.commit
        );
        assert!(
            self.commit <= self.log.last_index(),
            "{id}: commit {} past last index {}",
            self.commit,
            self.log.last_index()
        );
        assert!(self.applied <= self.commit, "{id}: applied past commit");
        assert!(self.log.last_term() <= self.term, "{id}: log holds a term from the future");
        assert_eq!(
            self.saved,
            self.hard_state(),
            "{id}: hard state changed but was not handed to the driver"
        );
        self.log.check();
        if let Some((term, last)) = before.leader_last {
            if self.is_leader() && self.term == term {
                assert!(self.log.last_index() >= last, "{id}: leader log shrank");
            }
        }
        match &self.role {
            Role::Leader(leader) => {
                assert_eq!(self.voted_for, Some(id), "{id}: leader that did not vote for itself");
                assert!(
                    leader.progress.keys().eq(self.config.peers.iter()),
                    "{id}: progress for the wrong peers"
                );
                for progress in leader.progress.values() {
                    progress.check(self.log.last_index());
                    if progress.state == ReplicationState::Replicate {
                        debug_assert!(
                            progress.inflight_messages() <= self.config.inflight_messages_max as usize
                        );
                    }
                }
            }
            Role::Candidate(candidate) => {
                if !candidate.pre_vote {
                    assert_eq!(self.voted_for, Some(id), "{id}: candidate that did not vote for itself");
                }
            }
            Role::Follower(follower) => {
                assert_ne!(follower.leader, Some(id), "{id}: follower that names itself leader");
            }
        }
    }

    // ---- read-only views ----

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }

    pub fn commit(&self) -> LogIndex {
        self.commit
    }

    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }

    pub fn persisted_index(&self) -> LogIndex {
        self.log.persisted()
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// Entries `from..=to` (clamped to the log).
    pub fn entries(&self, from: LogIndex, to: LogIndex) -> Vec<Entry> {
        self.log.range(from.max(LogIndex(1)), to.min(self.log.last_index()))
    }

    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, voted_for: self.voted_for, commit: self.commit }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// The leader of the current term, as far as this node knows.
    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(_) => Some(self.config.id),
            Role::Follower(follower) => follower.leader,
            Role::Candidate(_) => None,
        }
    }

    pub fn role_name(&self) -> &'static str {
        match &self.role {
            Role::Follower(_) => "follower",
            Role::Candidate(candidate) if candidate.pre_vote => "pre-candidate",
            Role::Candidate(_) => "candidate",
            Role::Leader(_) => "leader",
        }
    }

    /// A snapshot of what the node knows, for operators (`replog status`).
    pub fn status(&self) -> Status {
        let peers = match &self.role {
            Role::Leader(leader) => leader
                .progress
                .iter()
                .map(|(&id, progress)| PeerStatus {
                    id,
                    match_index: progress.match_index,
                    next_index: progress.next_index,
                    replicating: progress.state == ReplicationState::Replicate,
                    recent_active: progress.recent_active,
                })
                .collect(),
            _ => Vec::new(),
        };
        Status {
            id: self.config.id,
            role: self.role_name(),
            term: self.term,
            leader: self.leader(),
            commit: self.commit,
            applied: self.applied,
            last_index: self.log.last_index(),
            persisted: self.log.persisted(),
            peers,
        }
    }
}

/// What `Node::status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: &'static str,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub last_index: LogIndex,
    pub persisted: LogIndex,
    /// Replication progress per peer; filled on the leader only.
    pub peers: Vec<PeerStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub id: NodeId,
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub replicating: bool,
    pub recent_active: bool,
}
