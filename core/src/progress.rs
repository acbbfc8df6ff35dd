//! What a leader knows of one follower's log, and how fast it may send to it (flow control).

use crate::types::{LogIndex, Snapshot};
use std::collections::VecDeque;

/// How the leader replicates to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Where the follower's log matches is unknown: one AppendEntries at a time, then wait for
    /// the answer (or the next heartbeat).
    Probe { paused: bool },
    /// The follower is known to match up to `match_index`: stream entries without waiting,
    /// within the inflight window.
    Replicate,
    /// The follower needs entries the leader has compacted: its snapshot goes out one chunk at
    /// a time (§7). The transfer holds the snapshot, so a newer compaction on the leader does
    /// not restart it (a slow follower never loops).
    Snapshot(Transfer),
}

/// A snapshot on its way to one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub snapshot: Snapshot,
    /// `snapshot.checksum()`, computed once.
    pub checksum: u64,
    /// The next byte to send: what the follower last said it holds.
    pub offset: u64,
    /// A chunk is out and unanswered.
    pub paused: bool,
}

/// What a rejection told the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// An old answer (reordered or duplicated): nothing changes.
    Stale,
    /// The follower's log diverges or ends before `next_index`: probe further back.
    Backoff,
    /// The follower no longer holds entries it acknowledged: it lost them.
    Lost,
}

/// One follower's replication progress.
///
/// Invariant: `match_index < next_index`; `next_index <= leader.last_index + 1`.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be durably stored on the follower.
    pub match_index: LogIndex,
    /// The next index to send.
    pub next_index: LogIndex,
    pub state: ReplicationState,
    /// Unacknowledged AppendEntries in Replicate state: (last index sent, bytes), oldest first.
    inflight: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Leader ticks since the follower last answered: it counts as live for a membership
    /// change's safety check while this is under an election timeout. `u32::MAX` until this
    /// leader first hears from it: a follower that died before the election is not live.
    pub silent_ticks: u32,
    /// Answered since the last heartbeat round: a retransmission carries entries only to a
    /// follower that answers, so a dead one costs an empty probe per round, not a window.
    pub heard: bool,
    /// `match_index` moved since the last heartbeat round (a stalled pipeline falls back to
    /// probing, which retransmits what was lost).
    pub advanced: bool,
    /// The highest heartbeat sequence the follower echoed (confirms leadership for reads).
    pub acked_seq: u64,
    /// An `Action::ReadLog` for this follower is out: entries no longer in memory are being
    /// read from disk; nothing more is read for it until they arrive.
    pub reading: bool,
    /// The `seq` of the answer that last raised `match_index`: a rejection below the match
    /// that answers a later request is news (lost entries), an earlier one is stale.
    match_seq: u64,
}

impl Progress {
    pub fn new(next_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex::ZERO,
            next_index,
            state: ReplicationState::Probe { paused: false },
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: false,
            silent_ticks: u32::MAX,
            heard: true,
            advanced: false,
            acked_seq: 0,
            reading: false,
            match_seq: 0,
        }
    }

    /// May another AppendEntries carrying entries go out now?
    pub fn can_send(&self, inflight_messages_max: u32, inflight_bytes_max: u64) -> bool {
        match self.state {
            ReplicationState::Probe { paused } => !paused,
            ReplicationState::Snapshot(ref transfer) => !transfer.paused,
            ReplicationState::Replicate => {
                self.inflight.len() < inflight_messages_max as usize
                    && self.inflight_bytes < inflight_bytes_max
            }
        }
    }

    /// Records that entries up to `last` (of `bytes`) were sent.
    pub fn sent(&mut self, last: LogIndex, bytes: u64) {
        match &mut self.state {
            ReplicationState::Probe { paused } => *paused = true,
            ReplicationState::Snapshot(_) => {}
            ReplicationState::Replicate => {
                if last >= self.next_index {
                    self.next_index = last.next();
                    self.inflight.push_back((last, bytes));
                    self.inflight_bytes += bytes;
                }
            }
        }
    }

    /// A success answer to a request of round `seq`: the follower stores everything up to
    /// `index`. Returns whether this was news (a stale or duplicated answer is not).
    pub fn on_success(&mut self, index: LogIndex, seq: u64) -> bool {
        if index <= self.match_index {
            // Still unpauses a probe: the follower answered.
            if let ReplicationState::Probe { paused } = &mut self.state {
                *paused = false;
            }
            return false;
        }
        self.match_index = index;
        self.match_seq = self.match_seq.max(seq);
        self.next_index = self.next_index.max(index.next());
        self.advanced = true;
        match self.state {
            ReplicationState::Probe { .. } => self.become_replicate(),
            ReplicationState::Replicate => self.free_through(index),
            // An answer to entries sent before the transfer began: the transfer goes on.
            ReplicationState::Snapshot(_) => {}
        }
        true
    }

    /// A rejection of the AppendEntries of round `seq` whose previous index was
    /// `rejected_prev`; `hint_next` is where the leader's own log and the follower's conflict
    /// hint say to retry.
    pub fn on_reject(&mut self, rejected_prev: LogIndex, hint_next: LogIndex, seq: u64) -> Rejection {
        if rejected_prev <= self.match_index {
            // The follower acknowledged everything through match, durably. Rejecting a request
            // sent no later than that acknowledgement is an old answer; rejecting a later one
            // means it lost what it acknowledged (a disk that lied about a sync, bit rot, a cut
            // file, an old backup). It no longer counts for those entries: start over from what
            // it says it holds, so the lost entries are replicated again.
            if seq <= self.match_seq {
                return Rejection::Stale;
            }
            self.match_index = LogIndex::ZERO;
            self.match_seq = seq;
            self.become_probe();
            self.next_index = hint_next.min(rejected_prev).max(LogIndex(1));
            return Rejection::Lost;
        }
        // A probe waits for the answer to the one it sent; a snapshot transfer ignores answers
        // to the entries sent before it.
        if matches!(self.state, ReplicationState::Probe { .. } if rejected_prev != self.next_index.prev())
            || matches!(self.state, ReplicationState::Snapshot(_))
        {
            return Rejection::Stale;
        }
        let next = hint_next.min(rejected_prev).max(self.match_index.next());
        self.become_probe();
        self.next_index = next;
        Rejection::Backoff
    }

    pub fn become_probe(&mut self) {
        self.state = ReplicationState::Probe { paused: false };
        self.next_index = self.match_index.next();
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Starts sending `snapshot` (the follower needs entries before the leader's log starts).
    pub fn become_snapshot(&mut self, snapshot: Snapshot) {
        self.next_index = self.next_index.max(snapshot.meta.index.next());
        self.inflight.clear();
        self.inflight_bytes = 0;
        let checksum = snapshot.checksum();
        self.state = ReplicationState::Snapshot(Transfer { snapshot, checksum, offset: 0, paused: false });
    }

    /// The follower holds everything through `index` (`seq`: the leader's round now): it
    /// installed the snapshot, or already had what it covers. Replication resumes after it.
    pub fn on_snapshot_installed(&mut self, index: LogIndex, seq: u64) -> bool {
        let news = index > self.match_index;
        if news {
            self.match_index = index;
            self.match_seq = self.match_seq.max(seq);
            self.advanced = true;
        }
        if let ReplicationState::Snapshot(transfer) = &self.state {
            if transfer.snapshot.meta.index <= self.match_index {
                self.become_probe();
            }
        }
        news
    }

    fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index.next();
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    fn free_through(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.inflight.front() {
            if last > index {
                break;
            }
            self.inflight.pop_front();
            self.inflight_bytes -= bytes;
        }
    }

    pub fn inflight_messages(&self) -> usize {
        self.inflight.len()
    }

    pub fn check(&self, leader_last: LogIndex) {
        assert!(
            self.match_index < self.next_index,
            "progress: match {} >= next {}",
            self.match_index,
            self.next_index
        );
        assert!(self.next_index <= leader_last.next(), "progress: next past the leader's log");
        debug_assert_eq!(self.inflight_bytes, self.inflight.iter().map(|(_, b)| b).sum::<u64>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_then_pauses_until_answer() {
        let mut pr = Progress::new(LogIndex(5));
        assert!(pr.can_send(4, 100));
        pr.sent(LogIndex(6), 10);
        assert!(!pr.can_send(4, 100));
        assert!(pr.on_success(LogIndex(6), 1));
        assert_eq!(pr.state, ReplicationState::Replicate);
        assert_eq!(pr.next_index, LogIndex(7));
    }

    #[test]
    fn replicate_pipelines_within_window_and_frees_on_ack() {
        let mut pr = Progress::new(LogIndex(1));
        pr.on_success(LogIndex(0), 1);
        pr.state = ReplicationState::Replicate;
        pr.sent(LogIndex(2), 40);
        pr.sent(LogIndex(4), 40);
        assert!(!pr.can_send(2, 1000), "message window full");
        assert!(!Progress { inflight_bytes: 80, ..pr.clone() }.can_send(8, 80), "byte window full");
        assert!(pr.on_success(LogIndex(2), 1));
        assert!(pr.can_send(2, 1000));
        assert_eq!(pr.next_index, LogIndex(5));
        assert!(!pr.on_success(LogIndex(1), 1), "stale ack is not news");
    }

    #[test]
    fn reject_backs_off_and_stale_rejects_are_ignored() {
        let mut pr = Progress::new(LogIndex(10));
        // Probe: only a rejection of the probe just sent counts.
        assert_eq!(pr.on_reject(LogIndex(5), LogIndex(3), 1), Rejection::Stale);
        assert_eq!(pr.on_reject(LogIndex(9), LogIndex(3), 1), Rejection::Backoff);
        assert_eq!(pr.next_index, LogIndex(3));
        // The hint can never move next below match + 1.
        pr.on_success(LogIndex(2), 2);
        pr.sent(LogIndex(6), 1);
        assert_eq!(pr.on_reject(LogIndex(6), LogIndex(1), 2), Rejection::Backoff);
        assert_eq!(pr.next_index, LogIndex(3));
        assert_eq!(pr.on_reject(LogIndex(2), LogIndex(1), 2), Rejection::Stale, "an old answer below match");
    }

    #[test]
    fn a_later_rejection_below_match_means_the_follower_lost_entries() {
        let mut pr = Progress::new(LogIndex(1));
        assert!(pr.on_success(LogIndex(5), 3));
        assert_eq!(pr.match_index, LogIndex(5));
        // Answers to requests of round 3 or earlier that reject below match are stale.
        assert_eq!(pr.on_reject(LogIndex(4), LogIndex(2), 3), Rejection::Stale);
        assert_eq!(pr.match_index, LogIndex(5));
        // A request of round 4 found the follower's log ending at 2: it lost 3..=5.
        assert_eq!(pr.on_reject(LogIndex(5), LogIndex(3), 4), Rejection::Lost);
        assert_eq!((pr.match_index, pr.next_index), (LogIndex::ZERO, LogIndex(3)));
        assert!(matches!(pr.state, ReplicationState::Probe { paused: false }));
        pr.check(LogIndex(5));
    }
}
