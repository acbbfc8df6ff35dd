//! The leader: replicates its log, decides commitment, answers clients (§5.3, §5.4).
//!
//! Leader-only code runs on a [`LeaderCtx`]: the leader's own state and the state every role
//! shares, borrowed together. `Node` hands one out only while it leads, so nothing here checks
//! the role.

use crate::action::{Action, RejectReason, Reply};
use crate::bugs::Bug;
use crate::message::{AppendOutcome, Body};
use crate::node::{Node, Role, Shared};
use crate::progress::{Progress, Rejection, ReplicationState};
use crate::quorum;
use crate::types::SnapshotMeta;
use crate::types::{Bytes, Entry, LogIndex, NodeId, Payload, RequestId, Term};
use std::collections::{BTreeMap, VecDeque};

/// Leader-only state.
#[derive(Debug)]
pub(crate) struct Leader {
    /// One entry per peer (never this node), in id order.
    pub progress: BTreeMap<NodeId, Progress>,
    /// Proposals appended and not yet committed, in log order.
    proposals: VecDeque<Proposal>,
    /// Reads waiting for a quorum to confirm leadership, in `seq` order.
    reads: VecDeque<PendingRead>,
    /// Heartbeat round counter; followers echo it back.
    seq: u64,
    heartbeat_elapsed: u32,
    /// A leadership transfer under way (dissertation §3.10).
    transfer: Option<LeadershipTransfer>,
}

/// Handing leadership to `to`: proposals wait (are refused) until it ends.
#[derive(Debug)]
struct LeadershipTransfer {
    to: NodeId,
    /// Ticks since it began; given up after `election_ticks_max`.
    elapsed: u32,
}

#[derive(Debug)]
struct Proposal {
    request: RequestId,
    first: LogIndex,
    last: LogIndex,
}

#[derive(Debug)]
struct PendingRead {
    request: RequestId,
    /// Leadership is confirmed once a majority echoed a round at least this recent.
    seq: u64,
}

/// A leader's view of its node: its own state and the shared state, borrowed together.
pub(crate) struct LeaderCtx<'a> {
    pub leader: &'a mut Leader,
    pub shared: &'a mut Shared,
}

/// What a leader's tick decided.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leadership {
    Keep,
    /// No majority heard from within an election timeout (check-quorum): become a follower.
    StepDown,
}

impl Node {
    /// §5.2: won the election. §8: append a no-op of the new term so entries of earlier terms
    /// can commit (they may not by counting alone, §5.4.2).
    pub(crate) fn become_leader(&mut self) {
        let shared = &mut self.shared;
        assert_eq!(shared.voted_for, Some(shared.config.id), "leader must have voted for itself");
        let next = shared.log.last_index().next();
        let mut leader = Leader {
            progress: shared
                .configs
                .latest()
                .others(shared.config.id)
                .map(|peer| (peer, Progress::new(next)))
                .collect(),
            proposals: VecDeque::new(),
            reads: VecDeque::new(),
            seq: 0,
            heartbeat_elapsed: 0,
            transfer: None,
        };
        shared.election_elapsed = 0;
        shared.marks.became_leader += 1;
        let mut ctx = LeaderCtx { leader: &mut leader, shared };
        let shared = &*ctx.shared;
        let payload = if shared.config.record_bootstrap && shared.configs.only_bootstrapped() {
            // The same configuration, now in the log: it commits like the no-op would.
            Payload::Config(shared.configs.latest().clone())
        } else {
            Payload::Noop
        };
        let noop = Entry { index: next, term: ctx.shared.term, payload };
        ctx.shared.append_entries(vec![noop]);
        ctx.broadcast_append();
        self.set_role(Role::Leader(leader), None);
    }
}

impl Leader {
    /// Waits for `first..=last` to commit, then answers `request` (in log order).
    pub(crate) fn track(&mut self, request: RequestId, first: LogIndex, last: LogIndex) {
        self.proposals.push_back(Proposal { request, first, last });
    }

    /// The first entry of the oldest proposal not answered yet.
    pub(crate) fn unanswered_from(&self) -> Option<LogIndex> {
        self.proposals.front().map(|proposal| proposal.first)
    }

    /// Whether a leadership transfer is under way.
    pub(crate) fn is_transferring(&self) -> bool {
        self.transfer.is_some()
    }

    /// The member leadership is being handed to, if a transfer is under way.
    pub(crate) fn transferring_to(&self) -> Option<NodeId> {
        self.transfer.as_ref().map(|transfer| transfer.to)
    }

    /// Leadership is over: proposals may or may not commit; reads must go elsewhere.
    pub(crate) fn abandon_clients(self, out: &mut Vec<Action>, new_leader: Option<NodeId>) {
        for proposal in self.proposals {
            out.push(Action::Reply(Reply::Indeterminate { request: proposal.request }));
        }
        for read in self.reads {
            out.push(Action::Reply(Reply::NotLeader { request: read.request, leader: new_leader }));
        }
    }
}

impl LeaderCtx<'_> {
    pub(crate) fn propose(&mut self, request: RequestId, payloads: Vec<Payload>) {
        let shared = &mut *self.shared;
        // The protocol's own entries are never a client's to propose: a driver bug.
        assert!(payloads.iter().all(Payload::is_client), "proposed a payload no client may propose");
        if payloads.is_empty() || payloads.iter().any(|payload| payload.commands().is_empty()) {
            shared.out.push(Action::Reply(Reply::Rejected { request, reason: RejectReason::Empty }));
            return;
        }
        if self.leader.transfer.is_some() || !shared.is_voter() {
            // §3.10: no new entries while the target catches up, or it could never be up to date.
            // A leader that removed itself (§4.2.2) is handing over too: once its removal
            // commits it tells a voter whose log matches its own to take over, which no new
            // entry may spoil.
            let reason = RejectReason::Transferring;
            shared.out.push(Action::Reply(Reply::Rejected { request, reason }));
            return;
        }
        let uncommitted = shared.log.last_index().0 - shared.commit.0;
        if uncommitted + payloads.len() as u64 > shared.config.uncommitted_entries_max {
            shared.out.push(Action::Reply(Reply::Rejected { request, reason: RejectReason::Overloaded }));
            return;
        }
        let first = shared.log.last_index().next();
        let term = shared.term;
        let entries: Vec<Entry> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Entry { index: first.plus(i as u64), term, payload })
            .collect();
        let last = entries.last().expect("non-empty proposal").index;
        shared.append_entries(entries);
        self.leader.proposals.push_back(Proposal { request, first, last });
        self.broadcast_append();
    }

    /// ReadIndex (dissertation §6.4): note the read, then confirm leadership with a round of
    /// heartbeats; `answer_clients` replies once a majority echoed this round.
    pub(crate) fn read(&mut self, request: RequestId) {
        if self.leader.reads.len() >= self.shared.config.pending_reads_max as usize {
            let reason = RejectReason::Overloaded;
            self.shared.out.push(Action::Reply(Reply::Rejected { request, reason }));
            return;
        }
        self.leader.seq += 1;
        let seq = self.leader.seq;
        self.leader.reads.push_back(PendingRead { request, seq });
        for peer in self.peers() {
            self.send_heartbeat(peer);
        }
        // A leader that is the only voter confirms itself.
        self.answer_clients();
    }

    pub(crate) fn tick(&mut self) -> Leadership {
        let shared = &mut *self.shared;
        shared.election_elapsed += 1;
        if shared.config.check_quorum && shared.election_elapsed >= shared.config.election_ticks_min {
            shared.election_elapsed = 0;
            // Dissertation §6.2: a leader that has not heard from a majority within an election
            // timeout steps down, so clients can find the real leader.
            let membership = shared.configs.latest();
            let counted = |id: NodeId| {
                membership.is_voter(id)
                    || (shared.config.has_bug(Bug::LearnerCountedInQuorum) && membership.contains(id))
            };
            let active = usize::from(counted(shared.config.id))
                + self.leader.progress.iter().filter(|(&id, p)| p.recent_active && counted(id)).count();
            let voters = membership.members.keys().filter(|&&id| counted(id)).count();
            if active < shared.config.quorum_of(voters) {
                return Leadership::StepDown;
            }
            for progress in self.leader.progress.values_mut() {
                progress.recent_active = false;
            }
        }
        for progress in self.leader.progress.values_mut() {
            progress.silent_ticks = progress.silent_ticks.saturating_add(1);
        }
        if let Some(transfer) = self.leader.transfer.as_mut() {
            transfer.elapsed += 1;
            if transfer.elapsed >= shared.config.election_ticks_max {
                // The target did not take over within an election timeout: lead on.
                self.leader.transfer = None;
                shared.marks.transfers_aborted += 1;
            }
        }
        self.leader.heartbeat_elapsed += 1;
        if self.leader.heartbeat_elapsed < shared.config.heartbeat_ticks {
            return Leadership::Keep;
        }
        self.leader.heartbeat_elapsed = 0;
        // A new round: answers echo it, so a rejection below a follower's acknowledged match
        // can be told apart as news (the follower lost entries) or an old answer.
        self.leader.seq += 1;
        for peer in self.peers() {
            let progress = self.leader.progress.get_mut(&peer).expect("peer progress");
            let stalled = progress.state == ReplicationState::Replicate
                && progress.match_index < progress.next_index.prev()
                && !progress.advanced;
            progress.advanced = false;
            // Entries are retransmitted only to a follower that answered since the last round;
            // a silent one (down, cut off) gets an empty probe until it answers.
            let answered = std::mem::replace(&mut progress.heard, false);
            match progress.state {
                ReplicationState::Probe { .. } => {
                    // Retry the probe where it stands: the last one may have been lost.
                    progress.state = ReplicationState::Probe { paused: false };
                    self.send_probe(peer, answered);
                }
                ReplicationState::Replicate if stalled => {
                    // Nothing acknowledged for a whole heartbeat interval: something was lost.
                    // Retransmit from the last known match.
                    progress.become_probe();
                    self.send_probe(peer, answered);
                }
                ReplicationState::Replicate => self.send_heartbeat(peer),
                ReplicationState::Snapshot(ref mut transfer) => {
                    // The last chunk (or its answer) may have been lost: send it again, with its
                    // data only to a follower that answers.
                    if transfer.paused {
                        transfer.paused = false;
                        self.send_snapshot_chunk(peer, answered);
                    }
                }
            }
        }
        // After the round, not before: a promotion's entry, sent with it, would look stalled
        // to the round's check and be sent a second time.
        self.maybe_promote();
        Leadership::Keep
    }

    pub(crate) fn on_append_response(&mut self, from: NodeId, outcome: AppendOutcome, seq: u64) {
        let log = &self.shared.log;
        let last_index = log.last_index();
        let hint_next = match outcome {
            AppendOutcome::Rejected { prev_log_index, conflict_index, conflict_term } => {
                match conflict_term {
                    // §5.3: skip the follower's whole conflicting term; if we hold that term too,
                    // resume just after our last entry of it.
                    Some(term) => {
                        log.last_index_of_term(term, prev_log_index).map_or(conflict_index, LogIndex::next)
                    }
                    None => conflict_index,
                }
            }
            AppendOutcome::Accepted { .. } => LogIndex::ZERO,
        };
        let Some(progress) = self.leader.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        progress.silent_ticks = 0;
        progress.heard = true;
        progress.acked_seq = progress.acked_seq.max(seq);
        match outcome {
            AppendOutcome::Accepted { match_index } => {
                // Within our term a follower can only have received entries from us.
                assert!(
                    match_index <= last_index,
                    "{from} acknowledged {match_index}, past the leader's log {last_index}"
                );
                if progress.on_success(match_index, seq) {
                    self.maybe_commit();
                }
                self.send_append(from, false);
                self.maybe_tell_transfer_target(from);
            }
            AppendOutcome::Rejected { prev_log_index, .. } => {
                match progress.on_reject(prev_log_index, hint_next, seq) {
                    Rejection::Stale => {}
                    Rejection::Backoff => self.send_append(from, true),
                    Rejection::Lost => {
                        self.shared.marks.lost_entries_detected += 1;
                        self.send_append(from, true);
                    }
                }
            }
        }
    }

    /// Sends entries from `next_index` on, as many messages as the window allows. An empty
    /// message goes out only when `allow_empty` (a probe).
    pub(crate) fn send_append(&mut self, to: NodeId, allow_empty: bool) {
        let config = &self.shared.config;
        let (messages_max, bytes_max) = (config.inflight_messages_max, config.inflight_bytes_max);
        let (count_max, message_bytes_max) = (config.entries_per_message_max, config.message_bytes_max);
        let last_index = self.shared.log.last_index();
        let mut allow_empty = allow_empty;
        if self.needs_snapshot(to) {
            return;
        }
        loop {
            let progress = self.leader.progress.get_mut(&to).expect("peer progress");
            if !progress.can_send(messages_max, bytes_max)
                || (progress.next_index > last_index && !allow_empty)
            {
                return;
            }
            let shared = &mut *self.shared;
            if progress.next_index < shared.log.cached_from() && progress.next_index <= last_index {
                // Applied and evicted from memory: the driver reads them from disk; they go out
                // when they arrive (on_log_read).
                if !progress.reading {
                    progress.reading = true;
                    shared.marks.log_reads += 1;
                    let (peer, from) = (to, progress.next_index);
                    let last = from.plus(u64::from(count_max) - 1).min(last_index);
                    shared.out.push(Action::ReadLog { peer, from, to: last, bytes_max: message_bytes_max });
                }
                return;
            }
            allow_empty = false;
            let prev_log_index = progress.next_index.prev();
            let entries = shared.log.slice(progress.next_index, last_index, count_max, message_bytes_max);
            send_entries(shared, progress, to, self.leader.seq, prev_log_index, entries);
        }
    }

    /// A probe at `next_index`: with entries (as many as one message takes) or, to a follower
    /// that has not answered lately, without.
    fn send_probe(&mut self, to: NodeId, with_entries: bool) {
        if with_entries {
            self.send_append(to, true);
            return;
        }
        if self.needs_snapshot(to) {
            return;
        }
        let shared = &mut *self.shared;
        let progress = self.leader.progress.get_mut(&to).expect("peer progress");
        let prev_log_index = progress.next_index.prev();
        progress.sent(prev_log_index, 0);
        let body = Body::AppendRequest {
            prev_log_index,
            prev_log_term: shared.log.term_at(prev_log_index).expect("next index after the snapshot"),
            entries: Vec::new(),
            leader_commit: shared.commit,
            seq: self.leader.seq,
        };
        shared.send(to, shared.term, body);
    }

    /// An empty AppendEntries at the follower's known match point: keeps its timer quiet and
    /// tells it the commit index (capped at what it is known to hold).
    fn send_heartbeat(&mut self, to: NodeId) {
        let match_index = self.leader.progress[&to].match_index;
        let shared = &mut *self.shared;
        // Below the snapshot no term is known: check at the snapshot's last entry instead. A
        // follower that lacks it rejects (still echoing the round, which confirms leadership
        // for reads) and is sent the snapshot.
        let prev_log_index = match_index.max(shared.log.base().index);
        let body = Body::AppendRequest {
            prev_log_index,
            prev_log_term: shared.log.term_at(prev_log_index).expect("match within log"),
            entries: Vec::new(),
            leader_commit: shared.commit.min(match_index),
            seq: self.leader.seq,
        };
        shared.send(to, shared.term, body);
    }

    /// Starts handing leadership to `to` (dissertation §3.10): no new proposals, bring `to` up
    /// to date, then `TimeoutNow`. A transfer to itself, to a stranger, or while one is under
    /// way is ignored.
    pub(crate) fn transfer_to(&mut self, to: NodeId) {
        // Only a voter can be elected: a learner would never campaign.
        let voter = self.shared.configs.latest().is_voter(to);
        if self.leader.transfer.is_some() || !self.leader.progress.contains_key(&to) || !voter {
            return;
        }
        self.shared.marks.transfers_started += 1;
        self.leader.transfer = Some(LeadershipTransfer { to, elapsed: 0 });
        self.send_append(to, true);
        self.maybe_tell_transfer_target(to);
    }

    /// `TimeoutNow` to the transfer's target once its log matches ours entirely; again on each
    /// later acknowledgement while the transfer lasts (one may be lost; a second one after the
    /// target campaigned is of an older term and ignored).
    fn maybe_tell_transfer_target(&mut self, peer: NodeId) {
        let log = &self.shared.log;
        let (last_log_index, last_log_term) = (log.last_index(), log.last_term());
        let targeted = self.leader.transfer.as_ref().is_some_and(|t| t.to == peer);
        if targeted && self.leader.progress[&peer].match_index == last_log_index {
            let body = Body::TimeoutNow { last_log_index, last_log_term };
            self.shared.send(peer, self.shared.term, body);
        }
    }

    /// Entries read from disk for `peer` arrived: they go out if the follower still needs them
    /// there, then replication goes on (from memory, or with the next read).
    pub(crate) fn on_log_read(&mut self, peer: NodeId, entries: Vec<Entry>) {
        let Some(progress) = self.leader.progress.get_mut(&peer) else {
            return;
        };
        progress.reading = false;
        let Some(first) = entries.first() else {
            return; // Nothing could be read (compacted meanwhile): the next round retries.
        };
        let config = &self.shared.config;
        let wanted = first.index == progress.next_index
            && !matches!(progress.state, ReplicationState::Snapshot(_))
            && progress.can_send(config.inflight_messages_max, config.inflight_bytes_max);
        // What storage returned must be this leader's log (a leader never truncates its own).
        let ours = entries.iter().all(|entry| self.shared.log.matches(entry.index, entry.term));
        assert!(ours, "{}: entries read from disk differ from the log", self.shared.config.id);
        if wanted {
            let prev_log_index = first.index.prev();
            send_entries(self.shared, progress, peer, self.leader.seq, prev_log_index, entries);
        }
        self.send_append(peer, false);
    }

    /// A follower whose next entry the leader has compacted gets the snapshot instead (§7):
    /// starts a transfer if none is under way and sends its next chunk if none is out. True if
    /// the follower is (now) in a snapshot transfer.
    fn needs_snapshot(&mut self, to: NodeId) -> bool {
        let base = self.shared.log.base();
        let progress = self.leader.progress.get_mut(&to).expect("peer progress");
        if !matches!(progress.state, ReplicationState::Snapshot(_)) {
            if progress.next_index > base.index {
                return false;
            }
            let snapshot = self.shared.snapshot.clone().expect("a compacted log comes with its snapshot");
            progress.become_snapshot(snapshot);
            self.shared.marks.snapshot_transfers += 1;
        }
        if progress.can_send(1, u64::MAX) {
            self.send_snapshot_chunk(to, true);
        }
        true
    }

    /// The transfer's next chunk at the follower's offset (its data only `with_data`; without,
    /// a probe for the offset).
    fn send_snapshot_chunk(&mut self, to: NodeId, with_data: bool) {
        let chunk_max = self.shared.config.snapshot_chunk_bytes.min(self.shared.config.message_bytes_max);
        let progress = self.leader.progress.get_mut(&to).expect("peer progress");
        let ReplicationState::Snapshot(transfer) = &mut progress.state else {
            unreachable!("chunks go only to a follower in a snapshot transfer");
        };
        let data = transfer.snapshot.data.as_slice();
        let total = data.len() as u64;
        let offset = transfer.offset.min(total);
        let end = if with_data { (offset + chunk_max).min(total) } else { offset };
        transfer.paused = true;
        let body = Body::SnapshotRequest {
            meta: transfer.snapshot.meta,
            membership: transfer.snapshot.membership.clone(),
            total,
            checksum: transfer.checksum,
            offset,
            chunk: Bytes::from(&data[offset as usize..end as usize]),
        };
        self.shared.marks.snapshot_chunks_sent += 1;
        self.shared.send(to, self.shared.term, body);
    }

    pub(crate) fn on_snapshot_response(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        received: u64,
        installed: bool,
    ) {
        let seq = self.leader.seq;
        let Some(progress) = self.leader.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        progress.silent_ticks = 0;
        progress.heard = true;
        if installed {
            // The follower holds everything through meta.index, durably (§7).
            let index = meta.index.min(self.shared.log.last_index());
            let news = progress.on_snapshot_installed(index, seq);
            let done = !matches!(progress.state, ReplicationState::Snapshot(_));
            if news {
                self.maybe_commit();
            }
            if done {
                self.send_append(from, true);
            }
            return;
        }
        let ReplicationState::Snapshot(transfer) = &mut progress.state else {
            return; // An answer to a transfer that is over.
        };
        // Only an answer that moves the offset (forward: chunks arrived; back: the follower lost
        // what it had) sends the next chunk. An answer at the offset already known is a
        // duplicate or answers an older chunk: replying to it too would start a second chain
        // of chunk and answer beside the first, and every duplicate would add one.
        if transfer.snapshot.meta != meta || received == transfer.offset {
            return;
        }
        transfer.offset = received;
        transfer.paused = false;
        self.send_snapshot_chunk(from, true);
    }

    pub(crate) fn broadcast_append(&mut self) {
        for peer in self.peers() {
            self.send_append(peer, false);
        }
    }

    /// Every member but this node, in id order: whom the leader replicates to.
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        self.leader.progress.keys().copied().collect()
    }

    /// Whether `id` counts in quorums: a voter of the latest configuration (§4.1). Learners
    /// never do; neither does a leader that removed itself (§4.2.2).
    fn counts(&self, id: NodeId) -> bool {
        let shared = &*self.shared;
        let membership = shared.configs.latest();
        membership.is_voter(id)
            || (shared.config.has_bug(Bug::LearnerCountedInQuorum) && membership.contains(id))
            || (id == shared.config.id && shared.config.has_bug(Bug::RemovedLeaderKeepsLeading))
    }

    /// §5.3/§5.4.2: commit the highest index stored on a majority of the voters, if it is of the
    /// current term. The leader counts itself only as far as its own log is durable (§10.2.1),
    /// and only while it is a voter (§4.2.2).
    pub(crate) fn maybe_commit(&mut self) {
        let own = self.shared.config.id;
        let mut matches: Vec<LogIndex> = self
            .leader
            .progress
            .iter()
            .filter(|(&id, _)| self.counts(id))
            .map(|(_, p)| p.match_index)
            .collect();
        if self.counts(own) {
            matches.push(self.shared.log.persisted());
        }
        let shared = &mut *self.shared;
        if matches.is_empty() {
            return; // No voter at all (a malformed configuration never gets here).
        }
        let quorum = shared.config.quorum_of(matches.len());
        let candidate = quorum::quorum_value(&mut matches, quorum);
        let current_term = shared.log.term_at(candidate) == Some(shared.term);
        if candidate > shared.commit && (current_term || shared.config.has_bug(Bug::CommitOldTermByCounting))
        {
            shared.commit = candidate;
        }
    }

    /// Replies to proposals now committed and reads now confirmed.
    pub(crate) fn answer_clients(&mut self) {
        let (leader, shared) = (&mut *self.leader, &mut *self.shared);
        let (commit, term): (LogIndex, Term) = (shared.commit, shared.term);
        while leader.proposals.front().is_some_and(|p| p.last <= commit) {
            let Proposal { request, first, last } = leader.proposals.pop_front().expect("front exists");
            shared.out.push(Action::Reply(Reply::Committed { request, first, last, term }));
        }
        // §6.4: a read is safe once the leader has committed an entry of its own term and a
        // majority confirmed it is still leader after the read arrived.
        let own_term_committed =
            shared.log.term_at(commit) == Some(term) || shared.config.has_bug(Bug::ReadBeforeOwnTermCommit);
        if own_term_committed && !leader.reads.is_empty() {
            let membership = shared.configs.latest();
            let mut seqs: Vec<u64> = leader
                .progress
                .iter()
                .filter(|(&id, _)| membership.is_voter(id))
                .map(|(_, p)| p.acked_seq)
                .collect();
            if membership.is_voter(shared.config.id) {
                seqs.push(leader.seq);
            }
            let quorum = shared.config.quorum_of(seqs.len());
            let mut confirmed = if seqs.is_empty() { 0 } else { quorum::quorum_value(&mut seqs, quorum) };
            if shared.config.has_bug(Bug::ReadWithoutQuorum) {
                confirmed = leader.seq;
            }
            while leader.reads.front().is_some_and(|read| read.seq <= confirmed) {
                let read = leader.reads.pop_front().expect("front exists");
                shared.out.push(Action::Reply(Reply::ReadReady { request: read.request, index: commit }));
            }
        }
    }
}

/// Sends `entries` (continuing the leader's log after `prev_log_index`) to `to` in an
/// AppendEntries of heartbeat round `seq`, and records them in its progress.
fn send_entries(
    shared: &mut Shared,
    progress: &mut Progress,
    to: NodeId,
    seq: u64,
    prev_log_index: LogIndex,
    entries: Vec<Entry>,
) {
    let bytes = entries.iter().map(Entry::size_bytes).sum();
    let last_sent = entries.last().map_or(prev_log_index, |entry| entry.index);
    progress.sent(last_sent, bytes);
    let body = Body::AppendRequest {
        prev_log_index,
        prev_log_term: shared.log.term_at(prev_log_index).expect("next index after the snapshot"),
        entries,
        leader_commit: shared.commit,
        seq,
    };
    shared.send(to, shared.term, body);
}
