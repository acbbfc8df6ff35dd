//! The leader's side of membership changes (dissertation chapter 4; the rules and why we
//! chose single-server changes are in `membership.rs`).

use crate::action::{Action, RejectReason, Reply};
use crate::bugs::Bug;
use crate::leader::LeaderCtx;
use crate::membership::{ChangeRefusal, MemberRole, Membership, MembershipChange};
use crate::message::Body;
use crate::progress::Progress;
use crate::types::{Entry, NodeId, Payload, RequestId};

impl LeaderCtx<'_> {
    /// An operator's change: refused (with the reason) unless it is valid, the previous change
    /// committed, this leader committed an entry of its term, and (unless `force`) the new
    /// configuration keeps a live quorum. Otherwise appended as one configuration entry, in
    /// force at once (§4.1), answered when it commits.
    pub(crate) fn change_membership(&mut self, request: RequestId, change: MembershipChange, force: bool) {
        let refuse = |ctx: &mut Self, reason: RejectReason| {
            ctx.shared.marks.changes_refused += 1;
            ctx.shared.out.push(Action::Reply(Reply::Rejected { request, reason }));
        };
        if self.leader.is_transferring() {
            return refuse(self, RejectReason::Transferring);
        }
        let next = match self.allowed(&change) {
            Ok(next) => next,
            Err(refusal) => return refuse(self, RejectReason::Change(refusal)),
        };
        if !force {
            if let Err(refusal) = self.keeps_live_quorum(&next) {
                return refuse(self, RejectReason::Change(refusal));
            }
            if let MembershipChange::Promote { id } = change {
                let holds =
                    self.leader.progress.get(&id).map_or(crate::types::LogIndex::ZERO, |p| p.match_index);
                if holds < self.shared.configs.latest_index() {
                    return refuse(self, RejectReason::Change(ChangeRefusal::NotCaughtUp(id)));
                }
            }
        }
        let index = self.append_configuration(next);
        self.leader.track(request, index, index);
    }

    /// Whether a change may start now, and the configuration it makes.
    fn allowed(&self, change: &MembershipChange) -> Result<Membership, ChangeRefusal> {
        let shared = &*self.shared;
        // §4.1: one change at a time; the latest configuration must be committed first.
        if shared.configs.latest_index() > shared.commit {
            return Err(ChangeRefusal::Pending);
        }
        // The first-commit barrier (Ongaro, raft-dev 2015): until this leader has committed an
        // entry of its term, an uncommitted change of an earlier leader may still be in some
        // logs, and a change from here could differ from it by two servers.
        let barrier_passed = shared.log.term_at(shared.commit) == Some(shared.term);
        if !barrier_passed && !shared.config.has_bug(Bug::ChangeWithoutFirstCommit) {
            return Err(ChangeRefusal::NotReady);
        }
        shared.configs.latest().apply(change)
    }

    /// The safety check: after the change, the voters this leader heard from within an
    /// election timeout (itself included, if it stays a voter) must still make a quorum.
    fn keeps_live_quorum(&self, next: &Membership) -> Result<(), ChangeRefusal> {
        let shared = &*self.shared;
        let own = shared.config.id;
        let live_ticks = shared.config.election_ticks_min;
        let live = next
            .voters()
            .filter(|&id| {
                id == own || self.leader.progress.get(&id).is_some_and(|p| p.silent_ticks < live_ticks)
            })
            .count();
        let needed = shared.config.quorum_of(next.voter_count());
        if live < needed {
            return Err(ChangeRefusal::Unsafe { live: live as u32, needed: needed as u32 });
        }
        Ok(())
    }

    /// Appends `next` as a configuration entry, puts it in force, and starts replicating to
    /// any new member. Returns its index.
    fn append_configuration(&mut self, next: Membership) -> crate::types::LogIndex {
        let shared = &mut *self.shared;
        let index = shared.log.last_index().next();
        let entry = Entry { index, term: shared.term, payload: Payload::Config(next) };
        shared.append_entries(vec![entry]);
        shared.marks.membership_changes += 1;
        self.sync_progress();
        self.broadcast_append();
        index
    }

    /// One progress per member of the latest configuration but this node: new members start
    /// probing at the end of the log; removed ones are dropped.
    fn sync_progress(&mut self) {
        let own = self.shared.config.id;
        // From the configuration entry itself, so the broadcast that follows probes a new
        // member at once (not at the next heartbeat); its rejection says where its log ends.
        let next = self.shared.log.last_index();
        let members: Vec<NodeId> = self.shared.configs.latest().others(own).collect();
        self.leader.progress.retain(|id, _| members.contains(id));
        for id in members {
            self.leader.progress.entry(id).or_insert_with(|| Progress::new(next));
        }
    }

    /// §4.2.1: a joining learner whose log is within `promote_lag_entries_max` of the commit
    /// index, and that answered within an election timeout, becomes a voter (one at a time,
    /// like every change; never while one is pending or before the barrier). A learner that
    /// never answered is not caught up, however short the log.
    pub(crate) fn maybe_promote(&mut self) {
        let shared = &*self.shared;
        let lag_max = shared.config.promote_lag_entries_max;
        let live_ticks = shared.config.election_ticks_min;
        let commit = shared.commit;
        // It must hold the configuration that made it a member (or a later one): promoted
        // before, it would be a voter that knows no configuration, and neither votes nor
        // campaigns.
        let holds_configuration = shared.configs.latest_index();
        let ready = shared.configs.latest().members.iter().find(|&(id, member)| {
            member.role == MemberRole::Joining
                && self.leader.progress.get(id).is_some_and(|p| {
                    p.silent_ticks < live_ticks
                        && p.match_index >= holds_configuration
                        && p.match_index.0.saturating_add(lag_max) >= commit.0
                })
        });
        let Some((&id, _)) = ready else {
            return;
        };
        if self.leader.is_transferring() {
            return;
        }
        if let Ok(next) = self.allowed(&MembershipChange::Promote { id }) {
            self.shared.marks.promotions += 1;
            self.append_configuration(next);
        }
    }

    /// §4.2.2: the latest configuration is committed and this leader is no voter of it.
    pub(crate) fn removed_by_committed_configuration(&self) -> bool {
        let shared = &*self.shared;
        shared.configs.latest_index() <= shared.commit
            && !shared.is_voter()
            && !shared.config.has_bug(Bug::RemovedLeaderKeepsLeading)
    }

    /// Before stepping down after its removal: `TimeoutNow` to a voter whose log matches the
    /// leader's entirely (one exists once the removal committed, unless it is still on its way),
    /// so a new leader stands at once instead of after an election timeout.
    pub(crate) fn hand_over_after_removal(&mut self) {
        let shared = &*self.shared;
        let (last_log_index, last_log_term) = (shared.log.last_index(), shared.log.last_term());
        let membership = shared.configs.latest();
        let target = self
            .leader
            .progress
            .iter()
            .find(|(&id, progress)| membership.is_voter(id) && progress.match_index == last_log_index)
            .map(|(&id, _)| id);
        if let Some(to) = target {
            let shared = &mut *self.shared;
            shared.send(to, shared.term, Body::TimeoutNow { last_log_index, last_log_term });
        }
    }
}
