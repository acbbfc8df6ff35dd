//! The candidate (and pre-candidate): asks for votes and counts them (§5.2, dissertation §9.6).

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
        if !pre_vote {
            self.term = self.term.next();
            self.voted_for = Some(self.config.id);
        }
        if self.is_leader() {
            self.abandon_clients(None);
        }
        let mut votes = VoteTally::new(self.cluster_size(), self.config.quorum());
        votes.record(self.config.id, true);
        self.role = Role::Candidate(Candidate { pre_vote, votes });
        self.reset_election_timer();
        if self.tally() == VoteResult::Won {
            self.won_election(pre_vote);
            return;
        }
        // A pre-vote asks about the term we would move to; a real vote is in the new term.
        let term = if pre_vote { self.term.next() } else { self.term };
        let body = Body::VoteRequest {
            pre_vote,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        for position in 0..self.config.peers.len() {
            let peer = self.config.peers[position];
            self.send(peer, term, body.clone());
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
        if pre_vote && granted && term != self.term.next() {
            return;
        }
        candidate.votes.record(from, granted);
        match self.tally() {
            VoteResult::Won => self.won_election(pre_vote),
            VoteResult::Lost => self.become_follower(self.term, None),
            VoteResult::Pending => {}
        }
    }

    fn tally(&self) -> VoteResult {
        match &self.role {
            Role::Candidate(candidate) => candidate.votes.result(),
            _ => unreachable!("tally outside an election"),
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
