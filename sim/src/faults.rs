//! The fault phase: the schedule's faults, applied to the cluster and the network when they
//! fall due (crashes, ambushes of new leaders, restarts, pauses, partitions, clock drift,
//! storage damage), until the heal stops them.

use crate::checker::Violation;
use crate::cluster::Cluster;
use crate::network::Network;
use crate::options::{Options, TICK};
use crate::schedule::{Fault, MemberOp, Schedule, Target, Timed};
use crate::timeline::{SimEvent, Timeline};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use replog_core::{Event, NodeId};

/// An operator's request a fault makes.
pub(crate) enum Operation {
    /// Step this node with this event (a leadership transfer).
    Step(usize, Event),
    /// A membership change, for the operator to send.
    Member(MemberOp),
}

pub(crate) struct Faults {
    timed: Vec<Timed>,
    /// Armed by `Fault::Ambush`: crash the next new leader this many units after it wins.
    ambush: Option<u64>,
    /// The fault phase is over: nothing fires any more.
    healed: bool,
    fault_phase_end: u64,
    pub(crate) pauses: u64,
    pub(crate) partitions: u64,
}

impl Faults {
    pub(crate) fn new(options: &Options, schedule: Schedule) -> Faults {
        Faults {
            timed: schedule.faults,
            ambush: None,
            healed: false,
            fault_phase_end: options.ticks * TICK,
            pauses: 0,
            partitions: 0,
        }
    }

    /// Schedules every fault, and the heal at the end of the phase.
    pub(crate) fn start(&self, t: &mut Timeline) {
        for (index, timed) in self.timed.iter().enumerate() {
            t.schedule(timed.at, SimEvent::Fault(index));
        }
        t.schedule(self.fault_phase_end, SimEvent::Heal);
    }

    /// Fault `index` of the schedule falls due; `rng_fault` picks a node for `Target::Leader`
    /// when there is no leader. Returns an operator's request, if the fault is one (a
    /// leadership transfer, a membership change).
    pub(crate) fn apply(
        &mut self,
        index: usize,
        cluster: &mut Cluster,
        network: &mut Network,
        rng_fault: &mut ChaCha8Rng,
        t: &mut Timeline,
    ) -> Result<Option<Operation>, Violation> {
        // Faults past the phase end (a hand-written schedule may hold some) never fire.
        if self.healed {
            return Ok(None);
        }
        let fault = self.timed[index].fault.clone();
        t.note(|| format!("fault: {fault}"));
        let n = cluster.len() as u64;
        match fault {
            Fault::Crash(target) => {
                if let Some(node) = resolve(target, cluster, rng_fault) {
                    cluster.crash(node, "crashed", t);
                }
            }
            Fault::Ambush(delay) => self.ambush = Some(delay),
            Fault::Restart => cluster.start_all(rng_fault, t)?,
            Fault::Pause(target) => {
                if let Some(node) = resolve(target, cluster, rng_fault) {
                    if cluster.pause(node) {
                        self.pauses += 1;
                    }
                }
            }
            Fault::Resume => cluster.resume_all(t),
            Fault::Isolate(target) => {
                if let Some(node) = resolve(target, cluster, rng_fault) {
                    network.isolate(node as u64 + 1, n);
                    self.partitions += 1;
                }
            }
            Fault::Cut(links) => {
                network.cut(links.into_iter().filter(|&(a, b)| a <= n && b <= n));
                self.partitions += 1;
            }
            Fault::Heal => network.heal(),
            Fault::Drift(node, period) => cluster.drift(node as usize - 1, period),
            Fault::Damage(node, damage) => {
                if (1..=n).contains(&node) {
                    cluster.damage(node as usize - 1, damage, t);
                }
            }
            Fault::Transfer(node) => {
                let leader = cluster.leader().1.map(|leader| leader.id());
                if let (Some(leader), true) = (leader, (1..=n).contains(&node)) {
                    let event = Event::TransferLeadership { to: NodeId(node) };
                    return Ok(Some(Operation::Step(leader.0 as usize - 1, event)));
                }
            }
            Fault::Member(op) => return Ok(Some(Operation::Member(op))),
        }
        Ok(None)
    }

    /// Node `node` just won an election in its life `life`: an armed ambush crashes it soon.
    pub(crate) fn on_elected(&mut self, node: usize, life: u64, t: &mut Timeline) {
        if let Some(delay) = self.ambush.take() {
            t.schedule(delay, SimEvent::CrashNode { node, life });
        }
    }

    /// An ambush falls due: the new leader crashes, if it still lives that life.
    pub(crate) fn on_ambush(&mut self, node: usize, life: u64, cluster: &mut Cluster, t: &mut Timeline) {
        // An ambush armed in the fault phase never fires after the heal.
        if cluster.life(node) == life && !self.healed {
            cluster.crash(node, "crashed (ambushed new leader)", t);
        }
    }

    /// The end of the fault phase: no ambush waits, and faults scheduled past the phase end
    /// never fire.
    pub(crate) fn on_heal(&mut self) {
        self.healed = true;
        self.ambush = None;
    }
}

/// The node a fault hits: the leader in the highest term, or a random running node if none
/// leads (`None` if none runs or the node does not exist).
fn resolve(target: Target, cluster: &Cluster, rng_fault: &mut ChaCha8Rng) -> Option<usize> {
    let nodes = cluster.nodes();
    match target {
        Target::Node(id) if (1..=nodes.len() as u64).contains(&id) => Some(id as usize - 1),
        Target::Node(_) => None,
        Target::Leader => {
            let leader = nodes
                .iter()
                .enumerate()
                .filter_map(|(i, sim)| sim.node().filter(|n| n.is_leader()).map(|n| (n.term(), i)))
                .max()
                .map(|(_, i)| i);
            leader.or_else(|| {
                let up: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].is_up()).collect();
                (!up.is_empty()).then(|| up[rng_fault.random_range(0..up.len())])
            })
        }
    }
}
