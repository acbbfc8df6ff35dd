//! The checks after the heal. Liveness: within `LIVENESS_TICKS` a leader exists and every
//! client gets a fresh append acknowledged; then within `CONVERGENCE_TICKS` every node holds
//! the committed log, and the client history is linearizable against it. Availability: a
//! leader settles in the highest term and stays while the network is healthy, a follower cut
//! off for a while rejoins without deposing it, and after the leader crashes another settles
//! in a few terms, `FAILOVERS` times.

use crate::checker::{Kind, Violation};
use crate::cluster::Cluster;
use crate::follow::Followers;
use crate::network::Network;
use crate::options::{
    Options, CONVERGENCE_TICKS, FAILOVERS, FAILOVER_ELECTION_TIMEOUTS, FAILOVER_TERMS_MAX, LIVENESS_TICKS,
    REJOIN_ELECTION_TIMEOUTS, SETTLE_ELECTION_TIMEOUTS, TICK,
};
use crate::timeline::{SimEvent, Timeline};
use crate::workload::Workload;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use replog_core::{Config, NodeId, Term};

pub(crate) struct Availability {
    /// The leader and term that must stand while the network is healthy.
    stable: Option<(Term, NodeId)>,
    /// Leader failovers so far.
    failovers: u32,
    failed_leader: Option<NodeId>,
    /// The highest term when the current failover began.
    failover_term: Option<Term>,
    /// Pre-vote and check-quorum are on: a cut-off follower must rejoin without deposing.
    rejoin: bool,
}

impl Availability {
    pub(crate) fn new(options: &Options) -> Availability {
        Availability {
            stable: None,
            failovers: 0,
            failed_leader: None,
            failover_term: None,
            rejoin: options.pre_vote && options.check_quorum,
        }
    }

    /// Everything healed: the liveness check and the first settle check fall due.
    pub(crate) fn on_heal(&self, t: &mut Timeline) {
        t.schedule(LIVENESS_TICKS * TICK, SimEvent::LivenessCheck);
        t.schedule(election_timeout_ticks() * SETTLE_ELECTION_TIMEOUTS * TICK, SimEvent::Settled);
    }

    /// A leader holds office in the highest term. From now on the network stays healthy, so
    /// terms must stand still and the leader must stay; with pre-vote and check-quorum, a
    /// follower cut off for a while must rejoin without deposing it (`rng_fault` picks it).
    pub(crate) fn on_settled(
        &mut self,
        cluster: &Cluster,
        network: &mut Network,
        rng_fault: &mut ChaCha8Rng,
        t: &mut Timeline,
    ) -> Result<(), Violation> {
        let (max_term, leader) = cluster.leader();
        let Some(leader) = leader else {
            let broken = (
                "availability",
                format!(
                    "no leader in the highest term {max_term:?} {} ticks ({SETTLE_ELECTION_TIMEOUTS} election timeouts) after the heal",
                    election_timeout_ticks() * SETTLE_ELECTION_TIMEOUTS
                ),
            );
            return Err(t.violation(Kind::Liveness, None, broken));
        };
        let (term, id) = (leader.term(), leader.id());
        if let Some(before) = self.failover_term.take() {
            // §5.2: randomized timeouts make split votes rare, so an election after a leader
            // fails takes one term, rarely two or three. Identical timeouts split again and again.
            let terms = term.0 - before.0;
            if terms > FAILOVER_TERMS_MAX {
                let broken = (
                    "availability",
                    format!("electing a new leader after {} failed took {terms} terms (at most {FAILOVER_TERMS_MAX})", self.failed_leader.map_or("?".into(), |l| l.to_string())),
                );
                return Err(t.violation(Kind::Liveness, Some(id), broken));
            }
        }
        self.stable = Some((term, id));
        t.note(|| format!("availability: {id} leads {term}; terms must stand still from now on"));
        if self.failovers < FAILOVERS {
            t.schedule(election_timeout_ticks() * FAILOVER_ELECTION_TIMEOUTS * TICK, SimEvent::Failover);
        }
        if self.failovers > 0 {
            return Ok(());
        }
        let nodes = cluster.len() as u64;
        // Members only: cutting off a removed node or a spare tests nothing.
        let followers: Vec<u64> =
            (1..=nodes).filter(|&n| n != id.0 && cluster.is_member(NodeId(n))).collect();
        if self.rejoin && followers.len() >= 2 {
            let cut = followers[rng_fault.random_range(0..followers.len())];
            network.isolate(cut, nodes);
            t.note(|| {
                format!("availability: n{cut} is cut off for {REJOIN_ELECTION_TIMEOUTS} election timeouts")
            });
            t.schedule(election_timeout_ticks() * REJOIN_ELECTION_TIMEOUTS * TICK, SimEvent::Rejoin);
        }
        Ok(())
    }

    /// The last failover settled: nothing disturbs the cluster from now on.
    pub(crate) fn settled_for_good(&self) -> bool {
        self.failovers >= FAILOVERS && self.stable.is_some()
    }

    /// The cut-off follower rejoins.
    pub(crate) fn on_rejoin(&self, network: &mut Network, t: &mut Timeline) {
        t.note(|| "availability: the cut-off follower rejoins".into());
        network.heal();
    }

    /// The settled leader crashes: the others must elect a new one within the settle bound
    /// (election timeouts that are not randomized split the vote again and again).
    pub(crate) fn on_failover(&mut self, cluster: &mut Cluster, t: &mut Timeline) {
        let Some((_, leader)) = self.stable.take() else {
            return;
        };
        self.failovers += 1;
        self.failed_leader = Some(leader);
        let index = leader.0 as usize - 1;
        self.failover_term = cluster.max_term();
        cluster.crash(index, "crashed (availability: leader failover)", t);
        // It stays down until the others settled: it must not break their ties.
        let settle = election_timeout_ticks() * SETTLE_ELECTION_TIMEOUTS;
        t.schedule(settle * TICK, SimEvent::Settled);
        t.schedule((settle + 1) * TICK, SimEvent::RestartNode(index));
    }

    /// While settled, no term grows and nobody else leads: checked on node `index` after its
    /// rounds, if it is a member (a removed node may campaign on; the members ignore it).
    pub(crate) fn check_stable(
        &self,
        cluster: &Cluster,
        index: usize,
        t: &Timeline,
    ) -> Result<(), Violation> {
        let (Some((term, leader)), Some(node)) = (self.stable, cluster.node(index)) else {
            return Ok(());
        };
        if !cluster.is_member(node.id()) {
            return Ok(());
        }
        if node.term() > term || (node.is_leader() && node.id() != leader) {
            let broken = (
                "availability",
                format!(
                    "{} is {} in {} while {leader} led {term} on a healthy network",
                    node.id(),
                    node.role(),
                    node.term()
                ),
            );
            return Err(t.violation(Kind::Liveness, Some(node.id()), broken));
        }
        Ok(())
    }
}

fn election_timeout_ticks() -> u64 {
    u64::from(Config::new(NodeId(1), vec![]).election_ticks_max)
}

/// `LIVENESS_TICKS` after the heal: a leader in the highest term, and every client got an
/// append acknowledged. Then the clients stop and the cluster has `CONVERGENCE_TICKS`.
pub(crate) fn check_liveness(
    cluster: &Cluster,
    workload: &mut Workload,
    t: &mut Timeline,
) -> Result<(), Violation> {
    let (max_term, leader) = cluster.leader();
    if leader.is_none() {
        let broken = (
            "leader elected after heal",
            format!("no leader in the highest term {max_term:?} after {LIVENESS_TICKS} ticks"),
        );
        return Err(t.violation(Kind::Liveness, None, broken));
    }
    if let Some(client) = workload.waiting_for_progress() {
        let broken = (
            "progress after heal",
            format!("client {client} got no append acknowledged within {LIVENESS_TICKS} ticks"),
        );
        return Err(t.violation(Kind::Liveness, None, broken));
    }
    workload.stop();
    t.schedule(CONVERGENCE_TICKS * TICK, SimEvent::End);
    Ok(())
}

/// The end: every member holds exactly the committed log, the client history is exactly-once
/// and linearizable against it, and every follow stream is a gap-free part of it. (Nodes outside the committed configuration, removed or never
/// added, need not have it: nobody replicates to them.)
pub(crate) fn check_end(
    cluster: &Cluster,
    workload: &Workload,
    followers: &Followers,
    t: &Timeline,
) -> Result<(), Violation> {
    let committed = cluster.committed().len() as u64;
    for sim in cluster.nodes().iter().filter(|sim| cluster.is_member(sim.id)) {
        let node = sim.node().expect("every node runs after the heal");
        if node.commit().0 != committed || node.last_index().0 != committed {
            let broken = (
                "convergence",
                format!(
                    "{} has commit {} and last index {}, the cluster committed {committed}",
                    sim.id,
                    node.commit(),
                    node.last_index()
                ),
            );
            return Err(t.violation(Kind::Liveness, Some(sim.id), broken));
        }
    }
    workload.check(cluster.committed()).map_err(|broken| t.violation(Kind::Safety, None, broken))?;
    crate::history::check_streams(followers.streams(), cluster.committed())
        .map_err(|detail| t.violation(Kind::Safety, None, ("follow streams", detail)))
}
