//! The plumbing of the safety checks: what the cluster reports of every node's steps, messages,
//! replies and disk, handed to `Checker`, `Provenance` and each node's `SyncContract`. Every
//! check returns what broke; the cluster adds when and where.

use crate::checker::{self, Broken, Checker, SyncContract};
use crate::node::SimNode;
use crate::provenance::Provenance;
use replog_core::{
    Action, Body, Entry, Event, HardState, LogIndex, Membership, Message, Node, NodeId, Reply, Snapshot, Term,
};
use std::collections::BTreeMap;

pub(crate) struct Safety {
    checker: Checker,
    provenance: Provenance,
    /// Per node: the core's Sync placement, checked on its actions.
    contracts: Vec<SyncContract>,
    /// Per node: the commit index in the durable metadata. It never goes back.
    durable_commits: Vec<LogIndex>,
}

impl Safety {
    /// `bootstrap`: each node's configuration at birth; `cluster`: the bootstrap voters'.
    pub(crate) fn new(bootstrap: BTreeMap<NodeId, Membership>, cluster: Membership) -> Safety {
        let nodes = bootstrap.len();
        Safety {
            checker: Checker::new(bootstrap, cluster),
            provenance: Provenance::default(),
            contracts: vec![SyncContract::new(HardState::default()); nodes],
            durable_commits: vec![LogIndex::ZERO; nodes],
        }
    }

    /// The configuration in force in node `id`'s log.
    pub(crate) fn membership(&self, id: NodeId) -> &Membership {
        self.checker.membership(id)
    }

    /// The configuration at the end of the committed log.
    pub(crate) fn committed_membership(&self) -> &Membership {
        self.checker.committed_membership()
    }

    /// The configuration node `sim` would restart with.
    pub(crate) fn durable_membership(&self, sim: &SimNode) -> Membership {
        self.checker.durable_membership(sim.id, &sim.disk.durable_log()).1
    }

    fn voters(&self, id: NodeId) -> Vec<NodeId> {
        self.checker.membership(id).voters().collect()
    }

    /// The longest committed log any node reported.
    pub(crate) fn committed(&self) -> &[Entry] {
        self.checker.committed()
    }

    /// Node `index` started from its disk with this log and hard state.
    pub(crate) fn on_start(
        &mut self,
        index: usize,
        id: NodeId,
        snapshot: Option<&Snapshot>,
        log: &[Entry],
        hard_state: HardState,
    ) -> Result<(), Broken> {
        self.checker.on_start(id, snapshot, log)?;
        self.contracts[index] = SyncContract::new(hard_state);
        Ok(())
    }

    /// A message reached a running node.
    pub(crate) fn on_deliver(&mut self, message: &Message) {
        self.provenance.on_deliver(message);
    }

    /// One core step of node `index` and its actions, as its driver recorded them; `role` is
    /// (leader or not, term) at the end of the round.
    pub(crate) fn on_step(
        &mut self,
        index: usize,
        id: NodeId,
        (is_leader, term): (bool, Term),
        event: &Event,
        actions: &[Action],
    ) -> Result<(), Broken> {
        if let (Event::Read { request }, true) = (event, is_leader) {
            let round = actions.iter().find_map(|action| match action {
                Action::Send(Message { body: Body::AppendRequest { seq, .. }, .. }) => Some(*seq),
                _ => None,
            });
            if let Some(seq) = round {
                self.provenance.on_read(*request, id, term, seq);
            }
        }
        if let Event::Compact { snapshot } = event {
            self.checker.check_snapshot(id, snapshot)?;
        }
        for action in actions {
            match action {
                // §4.2.1: learners and strangers never campaign; a removed server only while
                // its removal may not have committed (the node's commit index is not known
                // mid-round, so any removal in its log counts as that).
                Action::Send(Message { body: Body::VoteRequest { .. }, .. })
                    if !self.checker.may_campaign(id, LogIndex::ZERO) =>
                {
                    let membership = self.checker.membership(id);
                    Err(("only voters campaign", format!("{id} asks for votes, no voter of {membership}")))
                }
                Action::AppendLog { entries } => self.checker.on_append(id, entries),
                Action::TruncateLog { from } => self.checker.on_truncate(id, *from, is_leader, term),
                Action::InstallSnapshot { snapshot } => self.checker.on_install(id, snapshot),
                Action::Apply { entries } => {
                    self.checker.on_commit_entries(id, entries, term);
                    Ok(())
                }
                _ => Ok(()),
            }
            .and_then(|()| self.contracts[index].on_action(action))?;
        }
        Ok(())
    }

    /// A message that vouches for stored state leaves only once that state would survive a
    /// crash, judged from the simulated disk through the runtime's own parsers.
    pub(crate) fn on_send(&self, sim: &SimNode, message: &Message) -> Result<(), Broken> {
        if !checker::vouches_for_storage(message) {
            return Ok(());
        }
        let hard = sim.disk.durable_hard_state();
        let log = sim.disk.durable_log();
        let node = sim.node().expect("node is up");
        checker::check_durable(message, hard.term, hard.voted_for, &log, node)
    }

    /// A reply node `id` sends a client: a read it answers was confirmed by a quorum.
    pub(crate) fn on_reply(&mut self, id: NodeId, reply: &Reply) -> Result<(), Broken> {
        if let Reply::ReadReady { request, .. } = reply {
            let voters = self.voters(id);
            self.provenance.on_read_ready(*request, id, &voters)?;
        }
        Ok(())
    }

    /// After a round of node `index`: the checker's view of its step, how it won if it did,
    /// how its commit index moved if it did, and what it applied.
    pub(crate) fn after_round(
        &mut self,
        nodes: &[SimNode],
        index: usize,
        became_leader: bool,
        commit_moved: bool,
        applied: &[Vec<Entry>],
    ) -> Result<(), Broken> {
        let node = nodes[index].node().expect("node is up");
        let id = node.id();
        self.checker.after_step(node, became_leader)?;
        if became_leader {
            self.provenance.on_elected(id, node.term(), &self.voters(id))?;
        }
        if commit_moved {
            self.check_commit_provenance(&nodes[index])?;
            self.check_commit_final(nodes, node)?;
        }
        for entries in applied {
            self.checker.on_apply(id, entries)?;
        }
        Ok(())
    }

    /// See `Provenance::on_commit`; run whenever a leader's commit index moves.
    fn check_commit_provenance(&self, leader: &SimNode) -> Result<(), Broken> {
        let node = leader.node().expect("leader runs");
        let (commit, term) = (node.commit(), node.term());
        let entry_term = node.term_at(commit);
        let durable = leader.disk.durable_log();
        let self_durable = match entry_term {
            Some(term) => durable.covers(commit, term),
            None => durable.entry(commit).is_none(),
        };
        self.provenance.on_commit(node.id(), term, commit, self_durable, &self.voters(node.id()))
    }

    /// See `checker::check_commit_final`; run whenever a leader's commit index moves.
    fn check_commit_final(&self, nodes: &[SimNode], leader: &Node) -> Result<(), Broken> {
        let index = leader.commit();
        let term = leader.term_at(index).expect("committed entry");
        let views: Vec<checker::LogView> = nodes
            .iter()
            .map(|sim| {
                let (at, latest, before) = self.checker.durable_membership(sim.id, &sim.disk.durable_log());
                let commit = sim.disk.durable_hard_state().commit;
                let mut view = sim.log_view(index, term);
                view.durable_voters = latest.voters().collect();
                view.durable_campaigns = checker::may_campaign(sim.id, commit, at, &latest, &before);
                if let Some(node) = sim.node() {
                    view.memory_voters = Some(self.voters(sim.id));
                    view.memory_campaigns = self.checker.may_campaign(sim.id, node.commit());
                }
                view
            })
            .collect();
        checker::check_commit_final(&views, index)
    }

    /// The commit index on disk never goes back (it is written only up to the durable log).
    pub(crate) fn check_durable_commit(&mut self, index: usize, sim: &SimNode) -> Result<(), Broken> {
        // Counted within the durable log: after a storage fault cut the log, the commit index
        // rewritten to fit it is not a step back.
        let commit = sim.disk.durable_hard_state().commit.min(sim.disk.durable_last().1);
        let before = self.durable_commits[index];
        if commit < before {
            return Err(("commit monotonic", format!("durable commit went back from {before} to {commit}")));
        }
        self.durable_commits[index] = commit;
        Ok(())
    }

    /// A storage fault shortened node `index`'s log on disk: a fault, not a storage bug.
    pub(crate) fn on_damage(&mut self, index: usize) {
        self.durable_commits[index] = LogIndex::ZERO;
    }
}
