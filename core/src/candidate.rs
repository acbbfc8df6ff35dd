//! The candidate (and pre-candidate): asks for votes and counts them (§5.2, dissertation §9.6).

use crate::bugs::Bug;
use crate::message::Body;
use crate::node::{Node, Role};
use crate::quorum::{VoteResult, VoteTally};
use crate::types::{NodeId, Term};

/// Candidate-only state: which kind of election and the votes so far.
#[derive(Debug)]
pub(crate) struct Candidate {
    /// A pre-vote round: the term has not been bumped yet.
    pub pre_vote: bool,
    pub votes: VoteTally,
}

impl Node {
    /// Starts an election: a pre-vote round first when enabled, else a real one (§5.2: increment
    /// the term, vote for self, reset the timer, ask everyone).
    pub(crate) fn campaign(&mut self, pre_vote: bool) {
        self.campaign_with(pre_vote, false);
    }

    /// As `campaign`; `transfer`: the election a leader asked for (`TimeoutNow`, §3.10).
    pub(crate) fn campaign_with(&mut self, pre_vote: bool, transfer: bool) {
        let election_unfinished = matches!(&self.role, Role::Candidate(candidate) if !candidate.pre_vote);
        let shared = &mut self.shared;
        if election_unfinished {
            shared.marks.split_votes += 1;
        }
        if pre_vote {
            shared.marks.pre_vote_campaigns += 1;
            if shared.config.has_bug(Bug::PreVoteRaisesTerm) {
                shared.term = shared.term.next();
                shared.voted_for = None;
            }
        } else {
            // Not in the next term if a candidate we ignored under our lease took its vote for
            // itself there: with pre-vote off, our election would be lost before it began
            // (simulator seed 4885). Only that term: a higher one is no collision, and jumping to
            // it would hand a disruptive node's term to the cluster, which the lease avoids.
            let next = shared.term.next();
            shared.term = if shared.lease_ignored_term == next { next.next() } else { next };
            shared.voted_for = Some(shared.config.id);
            shared.marks.elections += 1;
        }
        // §4.1: the voters of the latest configuration decide; learners never count (unless
        // the planted bug says otherwise).
        let membership = shared.configs.latest();
        let voters: Vec<NodeId> = if shared.config.has_bug(Bug::LearnerCountedInQuorum) {
            membership.members.keys().copied().collect()
        } else {
            membership.voters().collect()
        };
        let quorum = shared.config.quorum_of(voters.len());
        let mut votes = VoteTally::new(voters.clone(), quorum);
        votes.record(shared.config.id, true);
        let result = votes.result();
        self.set_role(Role::Candidate(Candidate { pre_vote, votes }), None);
        self.shared.reset_election_timer();
        if result == VoteResult::Won {
            self.won_election(pre_vote);
            return;
        }
        // A pre-vote asks about the term we would move to; a real vote is in the new term.
        let shared = &mut self.shared;
        let term = if pre_vote { shared.term.next() } else { shared.term };
        let body = Body::VoteRequest {
            pre_vote,
            last_log_index: shared.log.last_index(),
            last_log_term: shared.log.last_term(),
            transfer,
        };
        let own = shared.config.id;
        for peer in voters.into_iter().filter(|&peer| peer != own) {
            shared.send(peer, term, body.clone());
        }
    }

    pub(crate) fn on_vote_response(&mut self, from: NodeId, term: Term, pre_vote: bool, granted: bool) {
        let Role::Candidate(candidate) = &mut self.role else {
            return; // Answers that arrive after the election ended.
        };
        if candidate.pre_vote != pre_vote {
            return; // From the other round.
        }
        // A granted pre-vote is for the term after ours; anything else is from an older round.
        if pre_vote && granted && term != self.shared.term.next() {
            return;
        }
        candidate.votes.record(from, granted);
        match candidate.votes.result() {
            VoteResult::Won => self.won_election(pre_vote),
            VoteResult::Lost => self.become_follower(self.shared.term, None),
            VoteResult::Pending => {}
        }
    }

    fn won_election(&mut self, pre_vote: bool) {
        if pre_vote {
            self.campaign(false);
        } else {
            self.become_leader();
        }
    }
}
