//! The leader: replicates its log, decides commitment, answers clients (§5.3, §5.4).

use crate::action::{Action, RejectReason, Reply};
use crate::bugs::Bug;
use crate::message::{AppendOutcome, Body};
use crate::node::{Node, Role};
use crate::progress::{Progress, ReplicationState};
use crate::quorum;
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

impl Node {
    /// §5.2: won the election. §8: append a no-op of the new term so entries of earlier terms
    /// can commit (they may not by counting alone, §5.4.2).
    pub(crate) fn become_leader(&mut self) {
        assert_eq!(self.voted_for, Some(self.config.id), "leader must have voted for itself");
        let next = self.log.last_index().next();
        let progress = self.config.peers.iter().map(|&peer| (peer, Progress::new(next))).collect();
        self.role = Role::Leader(Leader {
            progress,
            proposals: VecDeque::new(),
            reads: VecDeque::new(),
            seq: 0,
            heartbeat_elapsed: 0,
        });
        self.election_elapsed = 0;
        let noop = Entry { index: next, term: self.term, payload: Payload::Noop };
        self.append_entries(vec![noop]);
        self.broadcast_append();
    }

    pub(crate) fn propose(&mut self, request: RequestId, commands: Vec<Bytes>) {
        let uncommitted = self.log.last_index().0 - self.commit.0;
        if uncommitted + commands.len() as u64 > self.config.uncommitted_entries_max {
            self.out.push(Action::Reply(Reply::Rejected { request, reason: RejectReason::Overloaded }));
            return;
        }
        let first = self.log.last_index().next();
        let term = self.term;
        let entries: Vec<Entry> = commands
            .into_iter()
            .enumerate()
            .map(|(i, data)| Entry { index: first.plus(i as u64), term, payload: Payload::Command(data) })
            .collect();
        let last = entries.last().expect("non-empty proposal").index;
        self.append_entries(entries);
        self.leader_mut().proposals.push_back(Proposal { request, first, last });
        self.broadcast_append();
    }

    /// ReadIndex (dissertation §6.4): note the read, then confirm leadership with a round of
    /// heartbeats; `answer_clients` replies once a majority echoed this round.
    pub(crate) fn read(&mut self, request: RequestId) {
        let reads_max = self.config.pending_reads_max as usize;
        let leader = self.leader_mut();
        if leader.reads.len() >= reads_max {
            self.out.push(Action::Reply(Reply::Rejected { request, reason: RejectReason::Overloaded }));
            return;
        }
        leader.seq += 1;
        let seq = leader.seq;
        leader.reads.push_back(PendingRead { request, seq });
        for position in 0..self.config.peers.len() {
            let peer = self.config.peers[position];
            self.send_heartbeat(peer);
        }
    }

    pub(crate) fn tick_leader(&mut self) {
        self.election_elapsed += 1;
        if self.config.check_quorum && self.election_elapsed >= self.config.election_ticks_min {
            self.election_elapsed = 0;
            // Dissertation §6.2: a leader that has not heard from a majority within an election
            // timeout steps down, so clients can find the real leader.
            let active = 1 + self.leader_mut().progress.values().filter(|p| p.recent_active).count();
            if active < self.config.quorum() {
                self.become_follower(self.term, None);
                return;
            }
            for progress in self.leader_mut().progress.values_mut() {
                progress.recent_active = false;
            }
        }
        let heartbeat_ticks = self.config.heartbeat_ticks;
        let leader = self.leader_mut();
        leader.heartbeat_elapsed += 1;
        if leader.heartbeat_elapsed < heartbeat_ticks {
            return;
        }
        leader.heartbeat_elapsed = 0;
        for position in 0..self.config.peers.len() {
            let peer = self.config.peers[position];
            let progress = self.leader_mut().progress.get_mut(&peer).expect("peer progress");
            let stalled = progress.state == ReplicationState::Replicate
                && progress.match_index < progress.next_index.prev()
                && !progress.advanced;
            progress.advanced = false;
            match progress.state {
                ReplicationState::Probe { .. } => {
                    // Retry the probe where it stands: the last one may have been lost.
                    progress.state = ReplicationState::Probe { paused: false };
                    self.send_append(peer, true);
                }
                ReplicationState::Replicate if stalled => {
                    // Nothing acknowledged for a whole heartbeat interval: something was lost.
                    // Retransmit from the last known match.
                    progress.become_probe();
                    self.send_append(peer, true);
                }
                ReplicationState::Replicate => self.send_heartbeat(peer),
            }
        }
    }

    pub(crate) fn on_append_response(&mut self, from: NodeId, outcome: AppendOutcome, seq: u64) {
        let last_index = self.log.last_index();
        let term_of_hint = |term: Term, before: LogIndex| self.log.last_index_of_term(term, before);
        let hint_next = match outcome {
            AppendOutcome::Rejected { prev_log_index, conflict_index, conflict_term } => {
                match conflict_term {
                    // §5.3: skip the follower's whole conflicting term; if we hold that term too,
                    // resume just after our last entry of it.
                    Some(term) => term_of_hint(term, prev_log_index).map_or(conflict_index, LogIndex::next),
                    None => conflict_index,
                }
            }
            AppendOutcome::Accepted { .. } => LogIndex::ZERO,
        };
        let Some(progress) = self.leader_mut().progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        progress.acked_seq = progress.acked_seq.max(seq);
        match outcome {
            AppendOutcome::Accepted { match_index } => {
                // Within our term a follower can only have received entries from us.
                assert!(
                    match_index <= last_index,
                    "{from} acknowledged {match_index}, past the leader's log {last_index}"
                );
                if progress.on_success(match_index) {
                    self.maybe_commit();
                }
                self.send_append(from, false);
            }
            AppendOutcome::Rejected { prev_log_index, .. } => {
                if progress.on_reject(prev_log_index, hint_next) {
                    self.send_append(from, true);
                }
            }
        }
    }

    /// Sends entries from `next_index` on, as many messages as the window allows. An empty
    /// message goes out only when `allow_empty` (a probe).
    pub(crate) fn send_append(&mut self, to: NodeId, allow_empty: bool) {
        let last_index = self.log.last_index();
        let (messages_max, bytes_max) = (self.config.inflight_messages_max, self.config.inflight_bytes_max);
        let (count_max, message_bytes_max) =
            (self.config.entries_per_message_max, self.config.message_bytes_max);
        let mut allow_empty = allow_empty;
        loop {
            let commit = self.commit;
            let Role::Leader(leader) = &mut self.role else { unreachable!("send_append on a non-leader") };
            let seq = leader.seq;
            let progress = leader.progress.get_mut(&to).expect("peer progress");
            if !progress.can_send(messages_max, bytes_max)
                || (progress.next_index > last_index && !allow_empty)
            {
                return;
            }
            allow_empty = false;
            let prev_log_index = progress.next_index.prev();
            let entries = self.log.slice(progress.next_index, last_index, count_max, message_bytes_max);
            let bytes = entries.iter().map(Entry::size_bytes).sum();
            let last_sent = entries.last().map_or(prev_log_index, |entry| entry.index);
            progress.sent(last_sent, bytes);
            let body = Body::AppendRequest {
                prev_log_index,
                prev_log_term: self.log.term_at(prev_log_index).expect("no compaction: every index is held"),
                entries,
                leader_commit: commit,
                seq,
            };
            self.send(to, self.term, body);
        }
    }

    /// An empty AppendEntries at the follower's known match point: keeps its timer quiet and
    /// tells it the commit index (capped at what it is known to hold).
    fn send_heartbeat(&mut self, to: NodeId) {
        let commit = self.commit;
        let leader = self.leader_mut();
        let seq = leader.seq;
        let match_index = leader.progress[&to].match_index;
        let body = Body::AppendRequest {
            prev_log_index: match_index,
            prev_log_term: self.log.term_at(match_index).expect("match within log"),
            entries: Vec::new(),
            leader_commit: commit.min(match_index),
            seq,
        };
        self.send(to, self.term, body);
    }

    pub(crate) fn broadcast_append(&mut self) {
        for position in 0..self.config.peers.len() {
            let peer = self.config.peers[position];
            self.send_append(peer, false);
        }
    }

    /// §5.3/§5.4.2: commit the highest index stored on a majority, if it is of the current term.
    /// The leader counts itself only as far as its own log is durable (§10.2.1).
    pub(crate) fn maybe_commit(&mut self) {
        let mut matches: Vec<LogIndex> = self.leader_mut().progress.values().map(|p| p.match_index).collect();
        matches.push(self.log.persisted());
        let candidate = quorum::quorum_value(&mut matches, self.config.quorum());
        let current_term = self.log.term_at(candidate) == Some(self.term);
        if candidate > self.commit && (current_term || self.config.has_bug(Bug::CommitOldTermByCounting)) {
            self.commit = candidate;
        }
    }

    /// Replies to proposals now committed and reads now confirmed.
    pub(crate) fn answer_clients(&mut self) {
        let (commit, term, size, quorum) =
            (self.commit, self.term, self.cluster_size(), self.config.quorum());
        let own_term_committed = self.log.term_at(commit) == Some(term);
        let leader = self.leader_mut();
        let mut replies = Vec::new();
        while leader.proposals.front().is_some_and(|p| p.last <= commit) {
            let Proposal { request, first, last } = leader.proposals.pop_front().expect("front exists");
            replies.push(Reply::Committed { request, first, last, term });
        }
        // §6.4: a read is safe once the leader has committed an entry of its own term and a
        // majority confirmed it is still leader after the read arrived.
        if own_term_committed && !leader.reads.is_empty() {
            let mut seqs: Vec<u64> = leader.progress.values().map(|p| p.acked_seq).collect();
            seqs.push(leader.seq);
            let confirmed = quorum::quorum_value(&mut seqs, quorum);
            debug_assert!(size == seqs.len());
            while leader.reads.front().is_some_and(|read| read.seq <= confirmed) {
                let read = leader.reads.pop_front().expect("front exists");
                replies.push(Reply::ReadReady { request: read.request, index: commit });
            }
        }
        self.out.extend(replies.into_iter().map(Action::Reply));
    }

    /// Leadership is over: proposals may or may not commit; reads must go elsewhere.
    pub(crate) fn abandon_clients(&mut self, new_leader: Option<NodeId>) {
        let leader = self.leader_mut();
        let proposals = std::mem::take(&mut leader.proposals);
        let reads = std::mem::take(&mut leader.reads);
        for proposal in proposals {
            self.out.push(Action::Reply(Reply::Indeterminate { request: proposal.request }));
        }
        for read in reads {
            self.out.push(Action::Reply(Reply::NotLeader { request: read.request, leader: new_leader }));
        }
    }

    fn leader_mut(&mut self) -> &mut Leader {
        match &mut self.role {
            Role::Leader(leader) => leader,
            _ => unreachable!("leader-only path taken by a non-leader"),
        }
    }
}
