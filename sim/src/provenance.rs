//! How things happened, not only what came out: every leader, every commit and every
//! linearizable read must be backed by the messages the simulated network actually delivered,
//! counted here independently of the core's own tallies.
//!
//! - Vote provenance (§5.2): a leader of term T won with grants *of term T* from distinct
//!   voters, itself included, forming a quorum. A candidate that counts a stale grant of an
//!   earlier term, or one vote twice, is caught the moment it wins, even when the outcome
//!   happens to look legal.
//! - Commit provenance (§5.3, §5.4.2): a leader's commit index is acknowledged, in its term,
//!   by a quorum counting itself only once its own log is durable through it.
//! - Read provenance (dissertation §6.4): a read answered by a leader was confirmed by a quorum
//!   answering heartbeats it sent after the read arrived.

use crate::checker::Broken;
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

    /// `leader` just won term `term`.
    pub fn on_elected(&self, leader: NodeId, term: Term, quorum: usize) -> Result<(), Broken> {
        let mut voters = self.grants.get(&(leader, term)).cloned().unwrap_or_default();
        voters.insert(leader);
        if voters.len() < quorum {
            return Err((
                "vote provenance",
                format!("{leader} leads {term} with grants of {term} from only {voters:?} (quorum {quorum})"),
            ));
        }
        Ok(())
    }

    /// `leader` of `term` moved its commit index to `commit`; `self_durable` if its own durable
    /// log holds that entry.
    pub fn on_commit(
        &self,
        leader: NodeId,
        term: Term,
        commit: LogIndex,
        self_durable: bool,
        quorum: usize,
    ) -> Result<(), Broken> {
        let acked = self.acks.get(&(leader, term));
        let followers = acked.map_or(0, |acks| acks.values().filter(|&&index| index >= commit).count());
        let count = followers + usize::from(self_durable);
        if count < quorum {
            return Err((
                "commit provenance",
                format!(
                    "{leader} committed {commit} in {term} with {followers} acknowledgements delivered{} (quorum {quorum})",
                    if self_durable { " and its own durable copy" } else { ", its own copy not durable" }
                ),
            ));
        }
        Ok(())
    }

    /// `leader` of `term` took read `request` and sent heartbeats of round `seq` for it.
    pub fn on_read(&mut self, request: RequestId, leader: NodeId, term: Term, seq: u64) {
        self.reads.insert(request, (leader, term, seq));
    }

    /// `node` answered read `request` as ready.
    pub fn on_read_ready(&mut self, request: RequestId, node: NodeId, quorum: usize) -> Result<(), Broken> {
        let Some((leader, term, seq)) = self.reads.remove(&request) else {
            if quorum == 1 {
                return Ok(());
            }
            return Err((
                "read provenance",
                format!("{node} answered {request} without a heartbeat round for it"),
            ));
        };
        let echoes = self.echoes.get(&(leader, term));
        let confirmed = 1 + echoes.map_or(0, |echoes| echoes.values().filter(|&&echo| echo >= seq).count());
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
