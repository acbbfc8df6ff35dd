//! One simulated run: nodes running the real core, a faulty network, faulty disks, clients,
//! and the fault schedule, all on one virtual clock driven by a seeded event queue.
//!
//! Phases: faults for `options.ticks` ticks; then everything heals (crashed nodes restart,
//! paused ones resume, the network calms) and within `LIVENESS_TICKS` a leader must exist and
//! every client must get a fresh append acknowledged; then clients stop and within
//! `CONVERGENCE_TICKS` all nodes must hold the same committed log. Finally the client history
//! is checked against that log for exactly once and linearizability, and the follow readers'
//! streams for gaps and duplicates.
//!
//! The parts, each owning its data: `Cluster` (the nodes, their disks and client connections,
//! the safety checks), `Network`, `Workload` (the clients and their history), `Followers`
//! (readers of the committed log), `Faults` (the schedule) and `Availability` (the checks after
//! the heal), all writing to one `Timeline` (the clock, the event queue, the trace). `World`
//! hands each event to its part, and a part that acts on others (a fault on the cluster, a
//! check on the clients) is handed them. A driver round, in `drive`, is where the cluster's
//! output meets the network and the clients.

use crate::availability::{self, Availability};
use crate::checker::Violation;
use crate::cluster::{Arrived, Cluster};
use crate::digest;
use crate::faults::{Faults, Operation};
use crate::follow::Followers;
use crate::health::Health;
use crate::network::Network;
use crate::node::Call;
use crate::operator::Operator;
use crate::options::{Options, TICK};
use crate::schedule::Schedule;
use crate::timeline::{SimEvent, Timeline};
use crate::workload::Workload;
use rand::RngExt;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use replog_core::{Entry, Message};
use replog_runtime::driver::Output;
use std::hash::Hasher;

pub use crate::node::in_core_step;
pub use crate::summary::{render_summary, Coverage, RunResult, Summary};
pub use crate::trace::Trace;

/// Runs one simulation. Deterministic: the same options and schedule give the same result.
pub fn run(options: &Options, schedule: &Schedule, trace: Trace) -> RunResult {
    let mut world = World::new(options, schedule.clone(), trace);
    let violation = world.run().err();
    let summary = world.summary();
    RunResult { summary, violation, trace: world.timeline.trace }
}

/// An independent random stream of the seed: 1 setup, 2 network, 3 crashes and sync timing,
/// 4 clients, 5 faults (and the timing of node starts), 6 follow readers, `100 + id` each
/// node's disk.
pub(crate) fn stream(seed: u64, salt: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(digest::of(&(seed, salt)))
}

/// How long, in units, a node's poll round lasts after an append arrives: appends that arrive
/// meanwhile are proposed together.
const BATCH_WINDOW: u64 = TICK / 20;

struct World {
    timeline: Timeline,
    cluster: Cluster,
    network: Network,
    workload: Workload,
    followers: Followers,
    faults: Faults,
    operator: Operator,
    availability: Availability,
    health: Health,
    rng_net: ChaCha8Rng,
    /// Which node a fault or check hits, and when a started node first ticks.
    rng_fault: ChaCha8Rng,
}

impl World {
    fn new(options: &Options, schedule: Schedule, trace: Trace) -> World {
        let seed = options.seed;
        let mut rng_setup = stream(seed, 1);
        World {
            timeline: Timeline::new(trace),
            cluster: Cluster::new(options, &mut rng_setup, stream(seed, 3)),
            workload: Workload::new(options, &mut rng_setup, stream(seed, 4)),
            followers: Followers::new(options, stream(seed, 6)),
            network: Network::new(
                options.drop_rate,
                options.dup_rate,
                options.delay_rate,
                options.replay_rate,
                options.latency_max,
            ),
            faults: Faults::new(options, schedule),
            operator: Operator::new(options),
            availability: Availability::new(options),
            health: Health::new(options),
            rng_net: stream(seed, 2),
            rng_fault: stream(seed, 5),
        }
    }

    fn run(&mut self) -> Result<(), Violation> {
        let t = &mut self.timeline;
        self.cluster.start_all(&mut self.rng_fault, t)?;
        self.workload.start(t);
        self.followers.start(t);
        self.faults.start(t);
        self.health.start(t);
        while let Some(event) = self.timeline.next_event() {
            let t = &mut self.timeline;
            match event {
                // The cluster: a node runs a driver round on what arrives, if it runs.
                SimEvent::Tick { node, life } => {
                    if let Some(call) = self.cluster.on_tick(node, life, t) {
                        self.drive(node, call)?;
                        self.cluster.publish(node, self.timeline.now());
                    }
                }
                SimEvent::Deliver(message, replayed) => self.on_deliver(message, replayed)?,
                SimEvent::SyncDone { node, life, upto } => {
                    if let Some(call) = self.cluster.on_sync_done(node, life, upto) {
                        self.drive(node, call)?;
                    }
                }
                SimEvent::ClientArrive { node, attempt, arrival } => {
                    match self.cluster.on_request(node, attempt, arrival) {
                        Arrived::Step(call) => self.drive(node, call)?,
                        Arrived::Batched { flush: true } => {
                            // The round the append arrived in ends a little later (a poll
                            // round): what else arrives meanwhile is proposed with it.
                            let life = self.cluster.life(node);
                            let delay = self.rng_net.random_range(0..=BATCH_WINDOW);
                            t.schedule(delay, SimEvent::ClientFlush { node, life });
                        }
                        Arrived::Batched { flush: false } | Arrived::Nothing => {}
                    }
                }
                SimEvent::ClientFlush { node, life } => {
                    let (answers, call) = self.cluster.on_flush(node, life);
                    self.workload.route_answers(answers, &self.network, t);
                    if let Some(call) = call {
                        self.drive(node, call)?;
                    }
                }
                // The workload.
                SimEvent::ClientReply { attempt, answer } => {
                    self.workload.on_answer(attempt, answer, &self.network, t)
                }
                SimEvent::ClientTimeout { client, attempt } => self.workload.on_timeout(client, attempt, t),
                SimEvent::ResendTimeout { attempt } => {
                    self.workload.on_resend_timeout(attempt, &self.network, t)
                }
                SimEvent::ClientNext { client } => {
                    self.workload.start_op(client, &self.cluster, &self.network, t)
                }
                SimEvent::ClientRetry { client, op } => {
                    self.workload.on_retry(client, op, &self.cluster, &self.network, t)
                }
                SimEvent::FollowRead { reader } => {
                    self.followers.on_read(reader, &mut self.cluster, &self.network, t)
                }
                // The fault phase.
                SimEvent::Fault(index) => {
                    let request = self.faults.apply(
                        index,
                        &mut self.cluster,
                        &mut self.network,
                        &mut self.rng_fault,
                        t,
                    )?;
                    let step = match request {
                        Some(Operation::Step(node, event)) => Some((node, event)),
                        Some(Operation::Member(op)) => {
                            self.operator.on_fault(op, &self.cluster, &mut self.rng_fault, t)
                        }
                        None => None,
                    };
                    self.operate(step)?;
                }
                SimEvent::OperatorArrive { node, request } => {
                    let step = self.operator.arrive(node, request, &self.cluster, &mut self.rng_fault, t);
                    self.operate(step)?;
                }
                SimEvent::OperatorTimeout { request } => {
                    self.operator.on_timeout(request, &self.cluster, &mut self.rng_fault, t)
                }
                SimEvent::CrashNode { node, life } => self.faults.on_ambush(node, life, &mut self.cluster, t),
                SimEvent::Heal => self.on_heal()?,
                // The checks after the heal.
                SimEvent::LivenessCheck => {
                    availability::check_liveness(&self.cluster, &mut self.workload, t)?
                }
                SimEvent::Settled => {
                    self.availability.on_settled(&self.cluster, &mut self.network, &mut self.rng_fault, t)?;
                    if self.availability.settled_for_good() {
                        self.health.on_final_settle(self.timeline.now());
                    }
                }
                SimEvent::Rejoin => self.availability.on_rejoin(&mut self.network, t),
                SimEvent::Failover => self.availability.on_failover(&mut self.cluster, t),
                SimEvent::RestartNode(node) => self.cluster.restart(node, &mut self.rng_fault, t)?,
                SimEvent::HealthSample => self.health.sample(&mut self.cluster, &self.network, t)?,
                SimEvent::End => {
                    return availability::check_end(&self.cluster, &self.workload, &self.followers, t)
                }
            }
        }
        unreachable!("the run ends with its End event")
    }

    /// An operator's request reaches a node: stepped if it runs.
    fn operate(&mut self, step: Option<(usize, replog_core::Event)>) -> Result<(), Violation> {
        if let Some((node, event)) = step {
            if let Some(call) = self.cluster.on_operator(node, event) {
                self.drive(node, call)?;
            }
        }
        Ok(())
    }

    /// One driver round on a node, and where what it released goes: each message, once checked,
    /// to the network; each reply, once checked, to its client. Then the node trims its log if
    /// it is time (after the replies, which name command IDs), the checks of the whole round, an
    /// ambush on a new leader, and the disk's syncs.
    fn drive(&mut self, index: usize, call: Call) -> Result<(), Violation> {
        let Some((before, outputs)) = self.cluster.begin_round(index, call, &mut self.timeline)? else {
            return Ok(());
        };
        let mut applied = Vec::new();
        self.dispatch(index, outputs, &mut applied)?;
        let Some(outputs) = self.cluster.retain(index, &mut self.timeline)? else {
            return Ok(());
        };
        self.dispatch(index, outputs, &mut applied)?;
        if self.cluster.end_round(index, before, &applied, &self.timeline)? {
            self.faults.on_elected(index, self.cluster.life(index), &mut self.timeline);
            self.operator.on_elected(index, &mut self.rng_fault, &mut self.timeline);
        }
        self.availability.check_stable(&self.cluster, index, &self.timeline)?;
        self.cluster.note_leadership(index);
        self.cluster.schedule_sync(index, &mut self.timeline);
        Ok(())
    }

    /// What node `index` released, in order: messages to the network, applied entries to the
    /// checks (and the clients waiting for them), replies to the operator or the clients; then
    /// the clients waiting for entries it will not apply as leader are let go (as the server's
    /// `dispatch`).
    fn dispatch(
        &mut self,
        index: usize,
        outputs: Vec<Output>,
        applied: &mut Vec<Vec<Entry>>,
    ) -> Result<(), Violation> {
        for output in outputs {
            match output {
                Output::Send(message) => {
                    self.cluster.check_send(index, &message, &self.timeline)?;
                    self.transmit(message);
                }
                // The core applies before it answers a read: the read sees what was applied.
                Output::Apply(entries) => {
                    let answers = self.cluster.on_apply(index, &entries);
                    self.workload.route_answers(answers, &self.network, &mut self.timeline);
                    applied.push(entries);
                }
                Output::Restored(meta) => self.cluster.on_restored(index, meta),
                Output::Reply(reply) => {
                    let read_len = self.cluster.check_reply(index, &reply, &self.timeline)?;
                    if self.cluster.serves(index, reply.request()) {
                        let answers = self.cluster.on_client_reply(index, &reply, read_len);
                        self.workload.route_answers(answers, &self.network, &mut self.timeline);
                    } else if self.operator.owns(reply.request()) {
                        let t = &mut self.timeline;
                        self.operator.on_reply(&reply, &self.cluster, &mut self.rng_fault, t);
                    }
                }
            }
        }
        let answers = self.cluster.release_waiters(index);
        self.workload.route_answers(answers, &self.network, &mut self.timeline);
        Ok(())
    }

    fn transmit(&mut self, message: Message) {
        for (delay, message, replayed) in self.network.send(&mut self.rng_net, message) {
            self.timeline.schedule(delay, SimEvent::Deliver(message, replayed));
        }
    }

    /// A message arrives, unless a partition or a crash stopped it.
    fn on_deliver(&mut self, message: Message, replayed: bool) -> Result<(), Violation> {
        let index = message.to.0 as usize - 1;
        if self.network.is_cut(message.from.0, message.to.0) || !self.cluster.is_up(index) {
            self.network.stats.dropped += 1;
            return Ok(());
        }
        let (from, term) = (message.from, message.term);
        if let Some(call) = self.cluster.on_deliver(index, message, replayed) {
            self.network.stats.delivered += 1;
            self.drive(index, call)?;
            // As the server: after the message was stepped, it counts as contact.
            self.cluster.heard(index, from, term, self.timeline.now());
            if replayed {
                self.health.on_replayed(index, self.timeline.now());
            }
        }
        Ok(())
    }

    /// The end of the fault phase: heal everything and stop injecting faults.
    fn on_heal(&mut self) -> Result<(), Violation> {
        let t = &mut self.timeline;
        t.note(|| "heal: faults stop, every node runs, the network calms".into());
        self.faults.on_heal();
        self.operator.on_heal();
        self.workload.on_heal();
        self.network.calm();
        self.cluster.heal(&mut self.rng_fault, t)?;
        self.availability.on_heal(t);
        Ok(())
    }

    fn summary(&self) -> Summary {
        Summary {
            ticks: self.timeline.now() / TICK,
            network: self.network.stats,
            crashes: self.cluster.crashes,
            restarts: self.cluster.restarts,
            pauses: self.faults.pauses,
            partitions: self.faults.partitions,
            leader_changes: self.cluster.leader_changes,
            committed: self.cluster.committed().len() as u64,
            clients: self.workload.tally(),
            sessions: self.workload.stats,
            admissions: self.cluster.admissions,
            follow: self.followers.stats,
            coverage: self.cluster.coverage,
            operator: self.operator.stats,
            changes_committed: self.cluster.committed_changes(),
            digest: self.timeline.digest.finish(),
        }
    }
}
