//! The follower: accepts the leader's entries after the consistency check (§5.3).

use crate::action::Action;
use crate::bugs::Bug;
use crate::membership::Membership;
use crate::message::{AppendOutcome, Body};
use crate::node::{Node, Role};
use crate::types::{Bytes, Entry, LogIndex, NodeId, PartialSnapshot, Snapshot, SnapshotMeta, Term};

/// Follower-only state.
#[derive(Debug)]
pub(crate) struct Follower {
    /// The leader of the current term, once heard from.
    pub leader: Option<NodeId>,
}

impl Node {
    /// Becomes a follower in `term` (>= the current one). A leader that steps down tells its
    /// waiting clients.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let shared = &mut self.shared;
        assert!(term >= shared.term, "{}: becoming follower in older {term}", shared.config.id);
        if term > shared.term {
            // §5.1: a newer term clears the vote, which belonged to the old term.
            shared.term = term;
            shared.voted_for = None;
        }
        let was_leader = self.is_leader();
        self.set_role(Role::Follower(Follower { leader }), leader);
        // Figure 2: the election timer restarts on hearing from the leader (or granting a
        // vote), not on merely learning of a higher term. Otherwise nodes with stale logs that
        // keep campaigning would keep resetting the up-to-date nodes' timers, and no electable
        // node would ever stand (a livelock the fuzzer found without pre-vote).
        if leader.is_some() || was_leader {
            self.shared.reset_election_timer();
        }
    }

    /// AppendEntries receiver implementation (Figure 2). Our term equals the message's here.
    pub(crate) fn on_append_request(
        &mut self,
        from: NodeId,
        mut prev_log_index: LogIndex,
        mut prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
        seq: u64,
    ) {
        if let Role::Follower(follower) = &mut self.role {
            follower.leader = Some(from);
        }
        self.shared.election_elapsed = 0;

        // Entries through our commit index are settled (§5.4, Leader Completeness): skip them so
        // a delayed message is not mistaken for a conflict with committed data.
        if prev_log_index < self.shared.commit {
            let skip = (self.shared.commit.0 - prev_log_index.0).min(entries.len() as u64) as usize;
            // Leader Completeness (§5.4.3): the leader holds every committed entry, so a
            // different one here means committed data diverged.
            if !self.shared.config.has_bug(Bug::AppendWithoutConsistencyCheck) {
                // Entries a snapshot covers cannot be compared (their terms are gone); they are
                // committed all the same.
                let base = self.shared.log.base().index;
                for entry in entries[..skip].iter().filter(|entry| entry.index > base) {
                    assert!(
                        self.shared.log.matches(entry.index, entry.term),
                        "{}: committed entry {} differs from the leader's ({})",
                        self.shared.config.id,
                        entry.index,
                        entry.term
                    );
                }
            }
            entries.drain(..skip);
            prev_log_index = self.shared.commit;
            prev_log_term = self.shared.log.term_at(self.shared.commit).expect("commit within log");
        }

        let consistent = if self.shared.config.has_bug(Bug::AppendWithoutConsistencyCheck) {
            prev_log_index <= self.shared.log.last_index()
        } else {
            self.shared.log.matches(prev_log_index, prev_log_term)
        };
        if !consistent {
            let outcome = self.conflict_hint(prev_log_index);
            self.shared.send(from, self.shared.term, Body::AppendResponse { outcome, seq });
            return;
        }

        let last_new = prev_log_index.plus(entries.len() as u64);
        if let Some(first_new) = self.shared.log.first_new(&entries) {
            let from_index = entries[first_new].index;
            if from_index <= self.shared.log.last_index() {
                // §5.3 step 3: an existing entry conflicts with a new one: delete it and all after.
                self.truncate_log(from_index);
            }
            entries.drain(..first_new);
            self.shared.append_entries(entries);
        }
        // §5.3 step 5: commit = min(leaderCommit, index of last new entry), never backwards.
        let commit = if self.shared.config.has_bug(Bug::FollowerCommitPastMatch) {
            leader_commit.min(self.shared.log.last_index())
        } else {
            leader_commit.min(last_new)
        };
        if commit > self.shared.commit {
            self.shared.commit = commit;
        }
        let match_index = if self.shared.config.has_bug(Bug::AckLastIndex) {
            self.shared.log.last_index()
        } else {
            last_new
        };
        let outcome = AppendOutcome::Accepted { match_index };
        self.shared.send(from, self.shared.term, Body::AppendResponse { outcome, seq });
    }

    /// Where the leader should retry after our log failed the check at `prev_log_index`.
    fn conflict_hint(&self, prev_log_index: LogIndex) -> AppendOutcome {
        // At or before the snapshot's last entry (committed, so only a malformed request can
        // disagree there): no term run to point into; ask for what follows the snapshot.
        if prev_log_index <= self.shared.log.base().index {
            return AppendOutcome::Rejected {
                prev_log_index,
                conflict_index: self.shared.log.base().index.next(),
                conflict_term: None,
            };
        }
        if prev_log_index > self.shared.log.last_index() {
            return AppendOutcome::Rejected {
                prev_log_index,
                conflict_index: self.shared.log.last_index().next(),
                conflict_term: None,
            };
        }
        let term = self.shared.log.term_at(prev_log_index).expect("index within log");
        AppendOutcome::Rejected {
            prev_log_index,
            conflict_index: self.shared.log.first_index_of_term(prev_log_index, self.shared.commit.next()),
            conflict_term: Some(term),
        }
    }
}

impl Node {
    /// InstallSnapshot receiver implementation (§7, Figure 13), one chunk at a time. Our term
    /// equals the message's here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_snapshot_request(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        membership: Membership,
        total: u64,
        checksum: u64,
        offset: u64,
        chunk: Bytes,
    ) {
        if let Role::Follower(follower) = &mut self.role {
            follower.leader = Some(from);
        }
        let without_check = self.shared.config.has_bug(Bug::InstallWithoutLogCheck);
        let shared = &mut self.shared;
        shared.election_elapsed = 0;
        // Figure 13 step 6 / etcd's restore: a snapshot this node's commit index already covers
        // holds nothing new, and installing it would throw away committed entries after it.
        if meta.index <= shared.commit && !without_check {
            shared.marks.snapshots_stale += 1;
            let body = Body::SnapshotResponse { meta, received: total, installed: true };
            shared.send(from, shared.term, body);
            return;
        }
        let same = |p: &PartialSnapshot| {
            p.meta == meta && p.total == total && p.checksum == checksum && p.membership == membership
        };
        if !shared.incoming.as_ref().is_some_and(same) {
            if offset != 0 {
                // A transfer we hold nothing of: start it over.
                let body = Body::SnapshotResponse { meta, received: 0, installed: false };
                shared.send(from, shared.term, body);
                return;
            }
            shared.incoming = Some(PartialSnapshot { meta, membership, total, checksum, data: Vec::new() });
        }
        let incoming = shared.incoming.as_mut().expect("set above");
        let held = incoming.data.len() as u64;
        // Chunks past the snapshot's length never get here (`Body::is_well_formed`).
        debug_assert!(offset + chunk.len() as u64 <= total, "a malformed chunk reached the follower");
        if offset != held {
            // A duplicate, a reordered chunk, or the first request of a resumed transfer: say
            // where to go on from.
            if offset == 0 && held > 0 {
                shared.marks.snapshot_resumes += 1;
            }
            let body = Body::SnapshotResponse { meta, received: held, installed: false };
            shared.send(from, shared.term, body);
            return;
        }
        if !chunk.is_empty() {
            incoming.data.extend_from_slice(chunk.as_slice());
            let membership = incoming.membership.clone();
            shared.out.push(Action::SaveSnapshotChunk { meta, membership, total, checksum, offset, chunk });
        }
        let received = incoming.data.len() as u64;
        if received < total {
            let body = Body::SnapshotResponse { meta, received, installed: false };
            shared.send(from, shared.term, body);
            return;
        }
        let partial = shared.incoming.take().expect("complete");
        let snapshot = Snapshot { meta, membership: partial.membership, data: Bytes::from(partial.data) };
        if snapshot.checksum() != checksum {
            // Damaged on the way (or by a faulty sender): never install it; fetch it again.
            shared.marks.snapshots_corrupt += 1;
            let body = Body::SnapshotResponse { meta, received: 0, installed: false };
            shared.send(from, shared.term, body);
            return;
        }
        self.install_snapshot(snapshot);
        let shared = &mut self.shared;
        let body = Body::SnapshotResponse { meta, received: total, installed: true };
        shared.send(from, shared.term, body);
    }

    /// Figure 13 steps 6-8: keep the log after the snapshot if it holds the snapshot's last
    /// entry, else discard it; the state machine restarts from the snapshot.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let shared = &mut self.shared;
        let meta = snapshot.meta;
        if shared.config.has_bug(Bug::InstallWithoutLogCheck) {
            // The bug: the log is thrown away and the commit index set to the snapshot's,
            // whatever this node held and had committed.
            shared.log.install_unchecked(meta);
            shared.configs.installed(meta.index, snapshot.membership.clone(), false);
            shared.commit = meta.index;
            shared.applied = meta.index;
        } else {
            // Only entries past the commit index can be dropped here (meta.index > commit).
            let kept = shared.log.install(meta);
            shared.configs.installed(meta.index, snapshot.membership.clone(), kept);
            shared.commit = shared.commit.max(meta.index);
            shared.applied = shared.applied.max(meta.index);
        }
        shared.marks.snapshots_installed += 1;
        shared.snapshot = Some(snapshot.clone());
        shared.save_hard_state();
        shared.mark_unsynced();
        shared.out.push(Action::InstallSnapshot { snapshot });
    }
}
