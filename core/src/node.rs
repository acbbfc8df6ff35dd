//! The node: one way in (`step`), one way out (the returned actions). Term handling happens
//! once, here, before a message reaches its role's handler (§5.1).

use crate::action::{Action, Reply};
use crate::bugs::Bug;
use crate::candidate::Candidate;
use crate::config::{Config, ConfigError};
use crate::event::Event;
use crate::follower::Follower;
use crate::leader::{Leader, LeaderCtx, Leadership};
use crate::log::{Log, LogError};
use crate::marks::Marks;
use crate::membership::{Configurations, Membership};
use crate::message::{AppendOutcome, Body, Message};
use crate::progress::ReplicationState;
use crate::status::{PeerStatus, RoleKind, Status};
use crate::types::{
    Entry, HardState, LogIndex, NodeId, PartialSnapshot, Payload, RequestId, Snapshot, SnapshotMeta, Term,
};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;

/// What a node recovered from durable storage at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last hard state saved (`Action::SaveHardState`); the default for a fresh node.
    pub hard_state: HardState,
    /// The latest durable snapshot, if any: the log continues after it.
    pub snapshot: Option<Snapshot>,
    /// The newest entries of the durable log (all of it after the snapshot when `term_runs` is
    /// empty), contiguous, terms never decreasing, ending at the log's last index.
    pub entries: Vec<Entry>,
    /// The terms of the whole durable log after the snapshot, as `(first index, term)` of each
    /// run of equal terms, ascending. Empty: derived from `entries`, which then hold the whole
    /// log after the snapshot. Lets a driver start without reading old entries (only their
    /// terms matter to the protocol; the core reads their bytes with `Action::ReadLog`).
    pub term_runs: Vec<(LogIndex, Term)>,
    /// A snapshot transfer in progress, as far as it got (`Action::SaveSnapshotChunk`).
    pub partial: Option<PartialSnapshot>,
    /// How far the driver's state machine has already applied; the node re-delivers the rest.
    pub applied: LogIndex,
    /// The configuration entries of the durable log after the snapshot, ascending, as
    /// `(index, configuration)`: at least those older than `entries` (which the core reads
    /// itself); duplicates of ones in `entries` are allowed. The configuration in force is the
    /// latest of these, else the snapshot's, else the bootstrap's (`Config::peers`).
    pub configs: Vec<(LogIndex, Membership)>,
    /// Storage lost entries this node had (and may have acknowledged) through this index: a
    /// log shorter than the commit index saved with it, or a damaged record cut off on the
    /// operator's request. Until its log again reaches this index with entries from a leader,
    /// the node neither votes nor campaigns, so it can never help elect a leader that lacks what
    /// it acknowledged (protocol-aware recovery). `LogIndex::ZERO`: nothing lost.
    pub repair_to: LogIndex,
}

/// Why a node could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartError {
    /// The configuration breaks a limit or a relation between limits.
    Config(ConfigError),
    /// The recovered log is not a valid Raft log.
    Log(LogError),
    /// The hard state's commit index lies past the end of the recovered log: entries are missing.
    CommitPastLog {
        /// The recovered commit index.
        commit: LogIndex,
        /// The recovered log's last index.
        last_index: LogIndex,
    },
    /// The driver claims to have applied entries that are not known committed.
    AppliedPastCommit {
        /// `Recovered::applied`.
        applied: LogIndex,
        /// The recovered commit index.
        commit: LogIndex,
    },
    /// The log holds an entry of a term later than the recovered current term.
    LogTermAhead {
        /// The last entry's term.
        log_term: Term,
        /// The recovered current term.
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
            StartError::Log(LogError::BadTermRuns { index }) => {
                write!(f, "recovered term runs disagree with the log at entry {index}")
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

/// What only the current role has (style rule 3: role data lives in the role).
pub(crate) enum Role {
    Follower(Follower),
    Candidate(Candidate),
    Leader(Leader),
}

/// A Raft node. See the crate documentation for the driver contract.
pub struct Node {
    pub(crate) shared: Shared,
    pub(crate) role: Role,
}

/// The state every role has. It is a struct of its own so that leader-only code can borrow it
/// next to the leader's state ([`LeaderCtx`]), with no role check.
pub(crate) struct Shared {
    pub(crate) config: Config,
    rng: ChaCha8Rng,
    /// Latest term seen (§5.1). Never decreases.
    pub(crate) term: Term,
    /// Who this node voted for in `term`, if anyone (§5.2: at most one vote per term).
    pub(crate) voted_for: Option<NodeId>,
    /// The highest term of a real vote request this node ignored under its leader lease
    /// (§4.2.3: it keeps its term). The candidate voted for itself in that term, so if it is our
    /// next one, an election of ours there could not win that vote: ours skips it. Not
    /// persisted: it only saves a wasted term.
    pub(crate) lease_ignored_term: Term,
    pub(crate) log: Log,
    /// Highest index known committed. Invariant: `applied <= commit <= log.last_index()`.
    pub(crate) commit: LogIndex,
    pub(crate) applied: LogIndex,
    /// Ticks since the last election-timer reset; for a leader, ticks since the quorum check.
    pub(crate) election_elapsed: u32,
    /// This round's randomized timeout, in `[election_ticks_min, election_ticks_max)` (§5.2).
    pub(crate) election_timeout: u32,
    /// The hard state last handed to the driver, to emit only changes.
    saved: HardState,
    /// A storage action was emitted and no `Sync` has followed it yet.
    unsynced: bool,
    /// This step's actions, in order.
    pub(crate) out: Vec<Action>,
    pub(crate) marks: Marks,
    /// See `Recovered::repair_to`: while the log ends before it, no votes and no campaigns.
    pub(crate) repair_to: LogIndex,
    /// The latest snapshot (made here or installed); the log starts after it. A leader sends it
    /// to followers that need compacted entries.
    pub(crate) snapshot: Option<Snapshot>,
    /// A snapshot being received from a leader, as far as it got.
    pub(crate) incoming: Option<PartialSnapshot>,
    /// The configurations in the log; the latest is in force (§4.1).
    pub(crate) configs: Configurations,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Node({} {} {} commit={} last={})",
            self.shared.config.id,
            self.role(),
            self.shared.term,
            self.shared.commit,
            self.shared.log.last_index()
        )
    }
}

/// Facts captured at the start of a step, to check what may not move backwards.
struct Before {
    term: Term,
    voted_for: Option<NodeId>,
    was_leader: bool,
    commit: LogIndex,
    leader_last: Option<(Term, LogIndex)>,
}

impl Node {
    /// A node that resumes from what it `recovered` (the default for a fresh node), as a
    /// follower with no leader known. Refuses an invalid configuration or recovered state.
    pub fn new(config: Config, recovered: Recovered) -> Result<Node, StartError> {
        config.validate().map_err(StartError::Config)?;
        let mut config = config;
        config.peers.sort(); // Every iteration over peers is in id order: deterministic.
        let base = recovered.snapshot.as_ref().map(|snapshot| snapshot.meta).unwrap_or_default();
        let configs = recover_configurations(
            &config,
            recovered.snapshot.as_ref(),
            recovered.configs,
            &recovered.entries,
            base.index,
        );
        // A snapshot written before configurations were replicated carries none: it holds the
        // bootstrap's, which a follower that installs it must get.
        let mut snapshot = recovered.snapshot;
        if let Some(snapshot) = snapshot.as_mut().filter(|snapshot| snapshot.membership.members.is_empty()) {
            snapshot.membership = configs.at(base.index).clone();
        }
        let log = Log::recover(base, recovered.term_runs, recovered.entries).map_err(StartError::Log)?;
        // A snapshot covers only committed, applied entries (§7); the commit index on disk may
        // lag it (it is written lazily).
        let hard_state =
            HardState { commit: recovered.hard_state.commit.max(base.index), ..recovered.hard_state };
        let applied = recovered.applied.max(base.index);
        if hard_state.commit > log.last_index() {
            return Err(StartError::CommitPastLog {
                commit: hard_state.commit,
                last_index: log.last_index(),
            });
        }
        if applied > hard_state.commit {
            return Err(StartError::AppliedPastCommit { applied, commit: hard_state.commit });
        }
        if log.last_term() > hard_state.term {
            return Err(StartError::LogTermAhead { log_term: log.last_term(), term: hard_state.term });
        }
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut shared = Shared {
            config,
            rng,
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            lease_ignored_term: Term(0),
            log,
            commit: hard_state.commit,
            applied,
            election_elapsed: 0,
            election_timeout: 0,
            saved: hard_state,
            unsynced: false,
            out: Vec::new(),
            marks: Marks::default(),
            repair_to: recovered.repair_to,
            snapshot,
            incoming: recovered.partial.filter(|partial| partial.meta.index > base.index),
            configs,
        };
        shared.reset_election_timer();
        Ok(Node { shared, role: Role::Follower(Follower { leader: None }) })
    }

    /// Feeds one event to the node and returns what the driver must do, in order.
    #[must_use = "the actions must be carried out, in order"]
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        let before = Before {
            term: self.shared.term,
            voted_for: self.shared.voted_for,
            was_leader: self.is_leader(),
            commit: self.shared.commit,
            leader_last: self.is_leader().then(|| (self.shared.term, self.shared.log.last_index())),
        };
        match event {
            Event::Tick => self.on_tick(),
            Event::Receive(message) => self.on_receive(message),
            Event::Propose { request, payloads } => self.on_propose(request, payloads),
            Event::Read { request } => self.on_read(request),
            Event::LogPersisted { index, term } => {
                if self.shared.log.mark_persisted(index, term) {
                    if let Some(mut leader) = self.as_leader() {
                        leader.maybe_commit();
                    }
                }
            }
            Event::Compact { snapshot } => self.compact(snapshot),
            Event::TransferLeadership { to } => {
                if let Some(mut leader) = self.as_leader() {
                    leader.transfer_to(to);
                }
            }
            Event::LogRead { peer, entries } => {
                if let Some(mut leader) = self.as_leader() {
                    leader.on_log_read(peer, entries);
                }
            }
            Event::ChangeMembership { request, change, force } => match self.as_leader() {
                Some(mut leader) => leader.change_membership(request, change, force),
                None => self.reply_not_leader(request),
            },
            Event::Campaign => {
                if self.is_repairing() {
                    self.shared.marks.repair_refusals += 1;
                } else if !self.shared.may_campaign() {
                    self.shared.marks.campaigns_as_non_voter += 1;
                } else if !self.is_leader() {
                    self.campaign(self.shared.config.pre_vote);
                }
            }
        }
        self.finish_step();
        self.check_invariants(&before);
        std::mem::take(&mut self.shared.out)
    }

    /// The leader's view of this node, if it leads: leader-only handlers get it once, at
    /// dispatch, and never check the role again.
    fn as_leader(&mut self) -> Option<LeaderCtx<'_>> {
        match &mut self.role {
            Role::Leader(leader) => Some(LeaderCtx { leader, shared: &mut self.shared }),
            Role::Follower(_) | Role::Candidate(_) => None,
        }
    }

    fn on_tick(&mut self) {
        if let Some(mut leader) = self.as_leader() {
            if leader.tick() == Leadership::StepDown {
                self.become_follower(self.shared.term, None);
            }
            return;
        }
        self.shared.election_elapsed += 1;
        if self.shared.election_elapsed >= self.shared.election_timeout {
            // Nothing from a leader for a whole timeout: it knows no leader any more. Without
            // this, a node that does not campaign (below) would keep its old leader, and with
            // it a lease that ignores every candidate for most of each timeout (§4.2.3).
            if let Role::Follower(follower) = &mut self.role {
                follower.leader = None;
            }
            if !self.shared.may_campaign() {
                // A learner, a removed server, or one that has not joined: it never campaigns,
                // so it cannot disrupt the cluster (§4.2.3).
                self.shared.marks.campaigns_as_non_voter += 1;
                self.shared.reset_election_timer();
                return;
            }
            if self.is_repairing() {
                // Lost entries it may have acknowledged: it waits for a leader to restore them.
                self.shared.marks.repair_refusals += 1;
                self.shared.reset_election_timer();
                return;
            }
            self.campaign(self.shared.config.pre_vote);
        }
    }

    fn on_receive(&mut self, message: Message) {
        if message.to != self.shared.config.id || message.from == self.shared.config.id {
            return; // Misrouted: not ours to act on.
        }
        // §4.2.3: a vote request from a node that is no voter of our configuration (a removed
        // server, a learner, a stranger) is ignored, so it cannot disrupt the cluster, unless
        // its log is at least as up to date as ours. A log ahead of ours may hold a
        // configuration we have not received yet that makes it a voter (a promoted learner, or
        // we are a new server that knows none), and §4.1 says such a vote may be needed to keep
        // the cluster available. A log equal to ours is a leader that appended its own removal
        // and lost office before it committed: it may still be needed (§4.2.2, Figure 4.6), and
        // ignoring it leaves our term behind the one it spends at the members that lack the
        // removal, so our own campaigns ask in terms whose votes it took already (simulator seed
        // 360 at 08f8377: no leader for 180 ticks after a heal). A removed follower lacks the
        // entry that removed it, which every member that knows of the removal holds, so its log
        // is behind and it stays ignored; a removed leader stops campaigning once it knows the
        // removal committed (`may_campaign`). A stranger whose log is not behind gets through:
        // the runtime keeps other clusters' nodes out (a cluster id in the peer protocol is
        // future work). Every other request is processed whatever our configuration says (§4.1:
        // a new server learns its configuration from the leader's log).
        if let Body::VoteRequest { last_log_index, last_log_term, .. } = message.body {
            let behind =
                (last_log_term, last_log_index) < (self.shared.log.last_term(), self.shared.log.last_index());
            if !self.shared.configs.latest().is_voter(message.from) && behind {
                self.shared.marks.votes_from_non_voters += 1;
                return;
            }
        }
        if !message.body.is_well_formed(message.term) {
            self.shared.marks.malformed_messages += 1;
            return; // No correct peer sends this: acting on it could corrupt the log.
        }
        if message.term > self.shared.term {
            match message.body {
                // §4.2.3 (dissertation): a node that hears from a leader within the minimum
                // election timeout ignores vote requests, so a removed or partitioned node cannot
                // unseat a working leader.
                Body::VoteRequest { transfer: false, pre_vote, .. } if self.in_leader_lease() => {
                    self.shared.marks.votes_ignored_by_lease += 1;
                    if !pre_vote {
                        self.shared.lease_ignored_term = self.shared.lease_ignored_term.max(message.term);
                    }
                    return;
                }
                // Pre-vote never changes anyone's term (§9.6).
                Body::VoteRequest { pre_vote: true, .. } => {}
                Body::VoteResponse { pre_vote: true, granted: true } => {}
                Body::AppendRequest { .. } | Body::SnapshotRequest { .. } => {
                    self.become_follower(message.term, Some(message.from))
                }
                _ => self.become_follower(message.term, None),
            }
        } else if message.term < self.shared.term {
            if let Body::VoteResponse { pre_vote: false, granted: true } = message.body {
                if self.shared.config.has_bug(Bug::StaleVoteCounted) {
                    self.on_vote_response(message.from, message.term, false, true);
                    return;
                }
            }
            let shared = &mut self.shared;
            shared.marks.stale_term_messages += 1;
            match message.body {
                // A stale leader: answer with our term so it steps down (with check-quorum and
                // pre-vote it may never see a vote request that would tell it).
                Body::AppendRequest { prev_log_index, .. } => {
                    let outcome = AppendOutcome::Rejected {
                        prev_log_index,
                        conflict_index: shared.log.last_index().next(),
                        conflict_term: None,
                    };
                    shared.send(message.from, shared.term, Body::AppendResponse { outcome, seq: 0 });
                }
                Body::SnapshotRequest { meta, .. } => {
                    let body = Body::SnapshotResponse { meta, received: 0, installed: false };
                    shared.send(message.from, shared.term, body);
                }
                Body::VoteRequest { pre_vote: true, .. } => {
                    shared.marks.pre_vote_rejections_sent += 1;
                    let body = Body::VoteResponse { pre_vote: true, granted: false };
                    shared.send(message.from, shared.term, body);
                }
                _ => {} // §5.1: stale requests and answers are ignored.
            }
            return;
        }
        let from = message.from;
        match message.body {
            Body::VoteRequest { pre_vote, last_log_index, last_log_term, .. } => {
                self.on_vote_request(from, message.term, pre_vote, last_log_index, last_log_term)
            }
            Body::TimeoutNow { last_log_index, last_log_term } => {
                // §3.10: our leader has brought our log up to date and steps aside for us; only
                // while our log still ends where the leader's did when it asked.
                let current = self.shared.log.last_index() == last_log_index
                    && self.shared.log.last_term() == last_log_term;
                if self.leader() == Some(from) && !self.is_leader() && current {
                    if !self.shared.is_voter() {
                        self.shared.marks.campaigns_as_non_voter += 1;
                    } else if self.is_repairing() {
                        self.shared.marks.repair_refusals += 1;
                    } else {
                        self.shared.marks.transfer_elections += 1;
                        self.campaign_with(false, true);
                    }
                }
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
                    self.shared.config.id,
                    self.shared.term,
                    self.shared.config.id,
                    from
                );
                if !matches!(self.role, Role::Follower(_)) {
                    // §5.2: a candidate that hears from the leader of its term steps down.
                    self.become_follower(self.shared.term, Some(from));
                }
                self.on_append_request(from, prev_log_index, prev_log_term, entries, leader_commit, seq);
            }
            Body::AppendResponse { outcome, seq } => {
                if let Some(mut leader) = self.as_leader() {
                    leader.on_append_response(from, outcome, seq);
                }
            }
            Body::SnapshotRequest { meta, membership, total, checksum, offset, chunk } => {
                assert!(!self.is_leader(), "{}: two leaders in {}", self.shared.config.id, self.shared.term);
                if !matches!(self.role, Role::Follower(_)) {
                    self.become_follower(self.shared.term, Some(from));
                }
                self.on_snapshot_request(from, meta, membership, total, checksum, offset, chunk);
            }
            Body::SnapshotResponse { meta, received, installed } => {
                if let Some(mut leader) = self.as_leader() {
                    leader.on_snapshot_response(from, meta, received, installed);
                }
            }
        }
    }

    /// The driver's snapshot through `snapshot.meta.index` is durable: drop what it covers (§7).
    fn compact(&mut self, snapshot: Snapshot) {
        let shared = &mut self.shared;
        let meta = snapshot.meta;
        if meta.index <= shared.log.base().index {
            return; // Not newer than what we have.
        }
        // A snapshot of entries that are not applied (or not committed) would make them
        // permanent before Raft decided them: the driver broke its contract.
        assert!(
            meta.index <= shared.applied,
            "{}: snapshot through {} past the applied index {}",
            shared.config.id,
            meta.index,
            shared.applied
        );
        assert_eq!(
            shared.log.term_at(meta.index),
            Some(meta.term),
            "{}: snapshot through {} names the wrong term",
            shared.config.id,
            meta.index
        );
        assert_eq!(
            &snapshot.membership,
            shared.configs.at(meta.index),
            "{}: snapshot through {} names the wrong configuration",
            shared.config.id,
            meta.index
        );
        shared.log.compact(meta);
        shared.configs.compacted(meta.index);
        shared.snapshot = Some(snapshot);
        shared.marks.compactions += 1;
        if shared.incoming.as_ref().is_some_and(|partial| partial.meta.index <= meta.index) {
            shared.incoming = None;
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
        let leader = self.leader();
        let repairing = self.is_repairing();
        let shared = &mut self.shared;
        let up_to_date = shared.log.is_up_to_date(last_log_index, last_log_term)
            || shared.config.has_bug(Bug::VoteWithoutLogCheck);
        let can_vote = shared.voted_for == Some(from)
            || (shared.voted_for.is_none() && leader.is_none())
            || (pre_vote && term > shared.term);
        if repairing && can_vote && up_to_date {
            // Its log may lack entries it acknowledged: its vote could elect a leader without them.
            shared.marks.repair_refusals += 1;
        }
        let granted = can_vote && up_to_date && !repairing;
        if granted && !pre_vote {
            // A real vote is given only in the current term (the term step above made it so).
            assert_eq!(term, shared.term, "{}: vote recorded for another term", shared.config.id);
            shared.voted_for = Some(from);
            shared.reset_election_timer();
        }
        if pre_vote && !granted {
            shared.marks.pre_vote_rejections_sent += 1;
        }
        let reply_term = if pre_vote && granted { term } else { shared.term };
        shared.send(from, reply_term, Body::VoteResponse { pre_vote, granted });
    }

    fn on_propose(&mut self, request: RequestId, payloads: Vec<Payload>) {
        match self.as_leader() {
            Some(mut leader) => leader.propose(request, payloads),
            None => self.reply_not_leader(request),
        }
    }

    fn on_read(&mut self, request: RequestId) {
        match self.as_leader() {
            Some(mut leader) => leader.read(request),
            None => self.reply_not_leader(request),
        }
    }

    fn reply_not_leader(&mut self, request: RequestId) {
        let leader = self.leader();
        self.shared.out.push(Action::Reply(Reply::NotLeader { request, leader }));
    }

    /// Work every step ends with: hand committed entries to the state machine, answer clients
    /// whose requests are settled, and hand over the hard state if it changed.
    fn finish_step(&mut self) {
        let shared = &mut self.shared;
        if shared.applied < shared.commit {
            let entries = shared.log.range(shared.applied.next(), shared.commit);
            shared.applied = shared.commit;
            shared.out.push(Action::Apply { entries });
        }
        // Applied entries may leave memory once the cache is over budget; the driver reads
        // them back from disk when needed.
        shared.log.evict(shared.applied, shared.config.log_cache_bytes_max);
        if let Some(mut leader) = self.as_leader() {
            leader.answer_clients();
            if leader.removed_by_committed_configuration() {
                // §4.2.2: a leader that is no voter of its committed configuration steps down;
                // it hands over to an up-to-date voter so the cluster need not wait a timeout.
                leader.hand_over_after_removal();
                self.shared.marks.removed_stepdowns += 1;
                self.become_follower(self.shared.term, None);
            }
        }
        self.shared.save_hard_state();
    }

    // ---- transitions and helpers shared by the roles ----

    /// Replaces the role. A leader that stops leading tells its waiting clients, naming
    /// `new_leader` to the reads it turns away.
    pub(crate) fn set_role(&mut self, role: Role, new_leader: Option<NodeId>) {
        if let Role::Leader(old) = std::mem::replace(&mut self.role, role) {
            self.shared.marks.leader_stepdowns += 1;
            old.abandon_clients(&mut self.shared.out, new_leader);
        }
    }

    /// Removes our log from `from` on: a follower's conflicting suffix (§5.3).
    pub(crate) fn truncate_log(&mut self, from: LogIndex) {
        // A leader never overwrites or deletes entries in its log (§5.3, Leader Append-Only).
        assert!(!self.is_leader(), "{}: leader truncating its own log", self.shared.config.id);
        let shared = &mut self.shared;
        // Committed entries are permanent (§5.4); truncating one would lose acknowledged data.
        assert!(
            from > shared.commit,
            "{}: truncating committed entry {from} (commit {})",
            shared.config.id,
            shared.commit
        );
        shared.marks.truncations += 1;
        shared.save_hard_state();
        shared.log.truncate_from(from);
        shared.configs.truncated(from);
        shared.unsynced = true;
        shared.out.push(Action::TruncateLog { from });
    }

    /// This node heard from a leader recently enough to refuse disruptive votes (§4.2.3).
    fn in_leader_lease(&self) -> bool {
        self.shared.config.check_quorum
            && match &self.role {
                Role::Leader(_) => true,
                Role::Follower(follower) => {
                    follower.leader.is_some()
                        && self.shared.election_elapsed < self.shared.config.election_ticks_min
                }
                Role::Candidate(_) => false,
            }
    }

    // ---- invariants ----

    fn check_invariants(&self, before: &Before) {
        let shared = &self.shared;
        let id = shared.config.id;
        assert!(shared.term >= before.term, "{id}: term went back from {} to {}", before.term, shared.term);
        assert!(
            shared.commit >= before.commit,
            "{id}: commit went back from {} to {}",
            before.commit,
            shared.commit
        );
        assert!(
            shared.commit <= shared.log.last_index(),
            "{id}: commit {} past last index {}",
            shared.commit,
            shared.log.last_index()
        );
        assert!(shared.applied <= shared.commit, "{id}: applied past commit");
        // §7: a snapshot covers committed, applied entries only, and the core keeps the one its
        // log starts after (a leader must be able to send it).
        let base = shared.log.base();
        assert!(base.index <= shared.applied, "{id}: snapshot at {} past applied", base.index);
        assert!(
            base.index == LogIndex::ZERO || shared.snapshot.as_ref().is_some_and(|s| s.meta == base),
            "{id}: the log starts after a snapshot the node does not hold"
        );
        assert!(shared.log.last_term() <= shared.term, "{id}: log holds a term from the future");
        assert_eq!(
            shared.saved,
            shared.hard_state(),
            "{id}: hard state changed but was not handed to the driver"
        );
        shared.log.check();
        // §5.2: at most one vote per term.
        if shared.term == before.term && before.voted_for.is_some() {
            assert_eq!(shared.voted_for, before.voted_for, "{id}: a second vote in {}", shared.term);
        }
        // §5.4.2: a leader commits by counting replicas only entries of its own term (earlier
        // ones commit indirectly, with them).
        if before.was_leader
            && self.is_leader()
            && shared.term == before.term
            && shared.commit > before.commit
            && !shared.config.has_bug(Bug::CommitOldTermByCounting)
        {
            assert_eq!(
                shared.log.term_at(shared.commit),
                Some(shared.term),
                "{id}: counted an entry of an older term committed"
            );
        }
        if let Some((term, last)) = before.leader_last {
            if self.is_leader() && shared.term == term {
                assert!(shared.log.last_index() >= last, "{id}: leader log shrank");
            }
        }
        match &self.role {
            Role::Leader(leader) => {
                assert_eq!(shared.voted_for, Some(id), "{id}: leader that did not vote for itself");
                assert!(
                    leader.progress.keys().copied().eq(shared.configs.latest().others(id)),
                    "{id}: progress for the wrong peers"
                );
                for progress in leader.progress.values() {
                    progress.check(shared.log.last_index());
                    if progress.state == ReplicationState::Replicate {
                        debug_assert!(
                            progress.inflight_messages() <= shared.config.inflight_messages_max as usize
                        );
                    }
                }
            }
            Role::Candidate(candidate) => {
                if !candidate.pre_vote {
                    assert_eq!(shared.voted_for, Some(id), "{id}: candidate that did not vote for itself");
                }
            }
            Role::Follower(follower) => {
                assert_ne!(follower.leader, Some(id), "{id}: follower that names itself leader");
            }
        }
    }

    // ---- read-only views ----

    /// True while the node repairs a log that lost committed entries (see
    /// `Recovered::repair_to`): it neither votes nor campaigns until a leader has restored them.
    #[must_use]
    pub fn is_repairing(&self) -> bool {
        self.shared.repair_to > self.shared.log.last_index()
    }

    /// The configuration in force: the latest in the log, committed or not (§4.1).
    #[must_use]
    pub fn membership(&self) -> &Membership {
        self.shared.configs.latest()
    }

    /// The index of the entry that set the configuration in force; 0 if it comes from the
    /// snapshot or the bootstrap. It is committed once `commit() >= membership_index()`.
    #[must_use]
    pub fn membership_index(&self) -> LogIndex {
        self.shared.configs.latest_index()
    }

    /// The configuration in force through `index` (at least the snapshot's index): what a
    /// snapshot through `index` must carry (`Snapshot::membership`).
    #[must_use]
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.shared.configs.at(index)
    }

    /// This node's id.
    #[must_use]
    pub fn id(&self) -> NodeId {
        self.shared.config.id
    }

    /// The configuration it runs with (peers sorted by id).
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The latest term it has seen (§5.1).
    #[must_use]
    pub fn term(&self) -> Term {
        self.shared.term
    }

    /// Whom it voted for in the current term, if anyone.
    #[must_use]
    pub fn voted_for(&self) -> Option<NodeId> {
        self.shared.voted_for
    }

    /// The highest index it knows committed.
    #[must_use]
    pub fn commit(&self) -> LogIndex {
        self.shared.commit
    }

    /// The index of its last log entry (0 for an empty log).
    #[must_use]
    pub fn last_index(&self) -> LogIndex {
        self.shared.log.last_index()
    }

    /// The term of its last log entry (0 for an empty log).
    #[must_use]
    pub fn last_term(&self) -> Term {
        self.shared.log.last_term()
    }

    /// How far its log is durable, as reported with [`Event::LogPersisted`].
    #[must_use]
    pub fn persisted_index(&self) -> LogIndex {
        self.shared.log.persisted()
    }

    /// The entry at `index`, if it is in memory (see [`Node::cached_from`]).
    #[must_use]
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.shared.log.entry(index)
    }

    /// The term of the entry at `index`, known for every entry after the snapshot and the
    /// snapshot's last one, in memory or not.
    #[must_use]
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.shared.log.term_at(index)
    }

    /// Entries `from..=to` that are in memory (clamped to `cached_from()..=last_index()`); the
    /// driver reads older ones from its storage.
    #[must_use]
    pub fn entries(&self, from: LogIndex, to: LogIndex) -> Vec<Entry> {
        self.shared.log.range(from.max(self.shared.log.cached_from()), to.min(self.shared.log.last_index()))
    }

    /// Bytes (`Entry::size_bytes`) of the log entries held in memory.
    #[must_use]
    pub fn cached_bytes(&self) -> u64 {
        self.shared.log.cache_bytes()
    }

    /// Entries `from..=to`, stopping once `bytes_max` (`Entry::size_bytes`) is passed (the
    /// first entry always comes); nothing unless `from` is in memory (`cached_from() <= from`).
    #[must_use]
    pub fn entries_within(&self, from: LogIndex, to: LogIndex, bytes_max: u64) -> Vec<Entry> {
        if from < self.shared.log.cached_from() || from > to.min(self.shared.log.last_index()) {
            return Vec::new();
        }
        self.shared.log.slice(from, to, u32::MAX, bytes_max)
    }

    /// The first index whose entry is in memory. Entries from [`Node::first_index`] up to it
    /// are on disk only (applied, and evicted under `Config::log_cache_bytes_max`).
    #[must_use]
    pub fn cached_from(&self) -> LogIndex {
        self.shared.log.cached_from()
    }

    /// The first index the log holds an entry for: one past the latest snapshot (1 if none).
    #[must_use]
    pub fn first_index(&self) -> LogIndex {
        self.shared.log.first_index()
    }

    /// What the latest snapshot covers (index 0 if there is none).
    #[must_use]
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.shared.log.base()
    }

    /// The latest snapshot, made here or installed from a leader.
    #[must_use]
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.shared.snapshot.as_ref()
    }

    /// How far the applied state has reached (entries handed over with `Action::Apply`, or
    /// covered by a snapshot).
    #[must_use]
    pub fn applied(&self) -> LogIndex {
        self.shared.applied
    }

    /// Term, vote and commit index as they are now (the driver has been handed every change).
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        self.shared.hard_state()
    }

    /// The first entry of the oldest proposal this leader has not answered yet (its first
    /// entries may be committed and applied already): a driver whose replies name what the
    /// entries hold keeps them until then. `None` if it leads none (or does not lead).
    #[must_use]
    pub fn unanswered_from(&self) -> Option<LogIndex> {
        match &self.role {
            Role::Leader(leader) => leader.unanswered_from(),
            Role::Follower(_) | Role::Candidate(_) => None,
        }
    }

    /// Whether it leads the current term.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// The leader of the current term, as far as this node knows.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(_) => Some(self.shared.config.id),
            Role::Follower(follower) => follower.leader,
            Role::Candidate(_) => None,
        }
    }

    /// The role it plays now.
    #[must_use]
    pub fn role(&self) -> RoleKind {
        match &self.role {
            Role::Follower(_) => RoleKind::Follower,
            Role::Candidate(candidate) if candidate.pre_vote => RoleKind::PreCandidate,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }

    /// The role's name, `self.role().name()`; prefer [`Node::role`], which the compiler checks.
    #[must_use]
    pub fn role_name(&self) -> &'static str {
        self.role().name()
    }

    /// How often it took each decision worth a test's or a sweep's attention, since it was
    /// created.
    #[must_use]
    pub fn marks(&self) -> &Marks {
        &self.shared.marks
    }

    /// A snapshot of what the node knows, for operators (`replog status`).
    #[must_use]
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
                    answering: progress.silent_ticks < self.shared.config.election_ticks_min,
                })
                .collect(),
            Role::Follower(_) | Role::Candidate(_) => Vec::new(),
        };
        let shared = &self.shared;
        Status {
            id: shared.config.id,
            role: self.role(),
            term: shared.term,
            leader: self.leader(),
            commit: shared.commit,
            applied: shared.applied,
            last_index: shared.log.last_index(),
            persisted: shared.log.persisted(),
            peers,
            transferring_to: match &self.role {
                Role::Leader(leader) => leader.transferring_to(),
                Role::Follower(_) | Role::Candidate(_) => None,
            },
        }
    }
}

impl Shared {
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
        for entry in &entries {
            if let Payload::Config(membership) = &entry.payload {
                self.configs.appended(entry.index, membership.clone());
            }
        }
        self.unsynced = true;
        self.out.push(Action::AppendLog { entries });
    }

    /// A storage action went out: the next message that vouches for durable state needs a
    /// `Sync` first.
    pub(crate) fn mark_unsynced(&mut self) {
        self.unsynced = true;
    }

    pub(crate) fn save_hard_state(&mut self) {
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
        if self.config.has_bug(Bug::FixedElectionTimeout) {
            self.election_timeout = min;
        }
    }

    /// Whether this node votes in its latest configuration (a removed node, a learner and a
    /// node that has not joined yet do not).
    pub(crate) fn is_voter(&self) -> bool {
        self.configs.latest().is_voter(self.config.id)
    }

    /// Whether this node starts elections: a voter of its latest configuration does; so does
    /// a voter of the configuration before it while the latest (its own removal) is not known
    /// committed (dissertation §4.2.2: "a server that is not part of its own latest
    /// configuration should still start new elections, as it might still be needed until the
    /// C_new entry is committed"). A leader that appended its removal and lost office before it
    /// committed may hold the only log the others can elect (they refuse a shorter one); if it
    /// stayed silent the cluster could be left with no possible leader. Its own vote never
    /// counts (the tally takes the latest configuration's voters only), and once elected it
    /// commits the removal and steps down. Learners and nodes that never joined never campaign.
    pub(crate) fn may_campaign(&self) -> bool {
        let latest = self.configs.latest_index();
        self.is_voter() || (latest > self.commit && self.configs.at(latest.prev()).is_voter(self.config.id))
    }

    fn hard_state(&self) -> HardState {
        HardState { term: self.term, voted_for: self.voted_for, commit: self.commit }
    }
}

/// The configurations a recovered node starts with: the snapshot's (or the bootstrap's) at the
/// log's start, then every configuration entry of the durable log after it.
fn recover_configurations(
    config: &Config,
    snapshot: Option<&Snapshot>,
    listed: Vec<(LogIndex, Membership)>,
    entries: &[Entry],
    base: LogIndex,
) -> Configurations {
    let (start, recorded) = match snapshot {
        Some(snapshot) if snapshot.membership.voter_count() > 0 => (snapshot.membership.clone(), true),
        _ => (config.bootstrap(), false),
    };
    let last = entries.last().map_or(base, |entry| entry.index);
    let mut found: std::collections::BTreeMap<LogIndex, Membership> =
        listed.into_iter().filter(|&(index, _)| index > base && index <= last).collect();
    for entry in entries {
        if let Payload::Config(membership) = &entry.payload {
            found.insert(entry.index, membership.clone());
        }
    }
    Configurations::new(start, recorded, found.into_iter().collect())
}
