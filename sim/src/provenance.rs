//! How things happened, not only what came out: every leader, every commit and every
//! linearizable read must be backed by the messages the simulated network actually delivered,
//! counted here independently of the core's own tallies.
//!
//! - Vote provenance (§5.2): a leader of term T won with grants *of term T* from distinct
//!   voters of its configuration, itself included, forming a majority of them. A candidate
//!   that counts a stale grant of an earlier term, one vote twice, or a learner's grant
//!   (§4.2.1: learners never count), is caught the moment it wins, even when the outcome
//!   happens to look legal.
//! - Commit provenance (§5.3, §5.4.2): a leader's commit index is acknowledged, in its term,
//!   by a majority of the voters of its configuration, counting itself only while it is one
//!   of them (§4.2.2) and its own log is durable through it.
//! - Read provenance (dissertation §6.4): a read answered by a leader was confirmed by a
//!   majority of its configuration's voters answering heartbeats it sent after the read
//!   arrived.
//!
//! "Its configuration" is the latest in the leader's log when it decides (§4.1), committed or
//! not. That is all single-server changes guarantee: an entry is durable on a majority of the
//! voters of the configuration the leader held when it committed the entry, which may be one
//! change later than the configuration in force at the entry itself (an entry committed right
//! after a removal from four voters to three may be on two of the four). Any two
//! configurations one change apart have overlapping majorities, which is what the later checks
//! (commit finality, leader completeness) rely on.

use crate::checker::{majority, Broken};
use replog_core::{AppendOutcome, Body, LogIndex, Message, NodeId, RequestId, Term};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct Provenance {
    /// Granted real votes delivered: (candidate, term) -> voters.
    grants: BTreeMap<(NodeId, Term), BTreeSet<NodeId>>,
    /// Acknowledgements delivered: (leader, term) -> follower -> highest match.
    acks: BTreeMap<(NodeId, Term), BTreeMap<NodeId, LogIndex>>,
    /// Echoed heartbeat rounds delivered: (leader, term) -> follower -> highest seq.
    echoes: BTreeMap<(NodeId, Term), BTreeMap<NodeId, u64>>,
    /// Reads a leader took: request -> (leader, term, the round it sent for them).
    reads: BTreeMap<RequestId, (NodeId, Term, u64)>,
}

impl Provenance {
    /// A message reached its addressee.
    pub fn on_deliver(&mut self, message: &Message) {
        let key = (message.to, message.term);
        match &message.body {
            Body::VoteResponse { pre_vote: false, granted: true } => {
                self.grants.entry(key).or_default().insert(message.from);
            }
            Body::AppendResponse { outcome, seq } => {
                let echoes = self.echoes.entry(key).or_default().entry(message.from).or_default();
                *echoes = (*echoes).max(*seq);
                if let AppendOutcome::Accepted { match_index } = outcome {
                    let acked = self.acks.entry(key).or_default().entry(message.from).or_default();
                    *acked = (*acked).max(*match_index);
                }
            }
            _ => {}
        }
    }

    /// `leader` just won term `term`; `voters` are its configuration's.
    pub fn on_elected(&self, leader: NodeId, term: Term, voters: &[NodeId]) -> Result<(), Broken> {
        let mut granted = self.grants.get(&(leader, term)).cloned().unwrap_or_default();
        granted.insert(leader);
        granted.retain(|id| voters.contains(id));
        let quorum = majority(voters.len());
        if granted.len() < quorum {
            return Err((
                "vote provenance",
                format!(
                    "{leader} leads {term} with grants of {term} from only {granted:?} of the voters {voters:?} (quorum {quorum})"
                ),
            ));
        }
        Ok(())
    }

    /// `leader` of `term` moved its commit index to `commit`; `self_durable` if its own durable
    /// log holds that entry; `voters` are its configuration's.
    pub fn on_commit(
        &self,
        leader: NodeId,
        term: Term,
        commit: LogIndex,
        self_durable: bool,
        voters: &[NodeId],
    ) -> Result<(), Broken> {
        let acked = self.acks.get(&(leader, term));
        let followers = acked.map_or(0, |acks| {
            acks.iter()
                .filter(|&(id, &index)| index >= commit && *id != leader && voters.contains(id))
                .count()
        });
        let self_counts = self_durable && voters.contains(&leader);
        let count = followers + usize::from(self_counts);
        let quorum = majority(voters.len());
        if count < quorum {
            return Err((
                "commit provenance",
                format!(
                    "{leader} committed {commit} in {term} with {followers} acknowledgements of voters {voters:?} delivered{} (quorum {quorum})",
                    if self_counts {
                        " and its own durable copy"
                    } else if self_durable {
                        ", its own copy not counted (no voter)"
                    } else {
                        ", its own copy not durable"
                    }
                ),
            ));
        }
        Ok(())
    }

    /// `leader` of `term` took read `request` and sent heartbeats of round `seq` for it.
    pub fn on_read(&mut self, request: RequestId, leader: NodeId, term: Term, seq: u64) {
        self.reads.insert(request, (leader, term, seq));
    }

    /// `node` answered read `request` as ready; `voters` are its configuration's.
    pub fn on_read_ready(
        &mut self,
        request: RequestId,
        node: NodeId,
        voters: &[NodeId],
    ) -> Result<(), Broken> {
        let quorum = majority(voters.len());
        let Some((leader, term, seq)) = self.reads.remove(&request) else {
            // A sole voter with no one to replicate to confirms itself.
            if voters == [node] {
                return Ok(());
            }
            return Err((
                "read provenance",
                format!("{node} answered {request} without a heartbeat round for it"),
            ));
        };
        let echoes = self.echoes.get(&(leader, term));
        let confirmed = usize::from(voters.contains(&leader))
            + echoes.map_or(0, |echoes| {
                echoes
                    .iter()
                    .filter(|&(id, &echo)| echo >= seq && *id != leader && voters.contains(id))
                    .count()
            });
        if node != leader || confirmed < quorum {
            return Err((
                "read provenance",
                format!(
                    "{node} answered {request} with {confirmed} of {quorum} confirmations of round {seq} in {term}"
                ),
            ));
        }
        Ok(())
    }
}
