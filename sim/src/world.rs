//! One simulated run: nodes running the real core, a faulty network, faulty disks, clients,
//! and the fault schedule, all on one virtual clock driven by a seeded event queue.
//!
//! Phases: faults for `options.ticks` ticks; then everything heals (crashed nodes restart,
//! paused ones resume, the network calms) and within `LIVENESS_TICKS` a leader must exist and
//! every client must get a fresh append acknowledged; then clients stop and within
//! `CONVERGENCE_TICKS` all nodes must hold the same committed log. Finally the client history
//! is checked for linearizability against that log.

use crate::checker::{self, Broken, Checker, Kind, Violation};
use crate::digest::{self, Fnv};
use crate::disk::{SimDisk, SimFs, DATA_DIR};
use crate::history::{History, Op, OpKind, Outcome, Tally};
use crate::network::{Network, NetworkStats};
use crate::options::{
    Options, CONVERGENCE_TICKS, FAILOVERS, FAILOVER_ELECTION_TIMEOUTS, FAILOVER_TERMS_MAX, LIVENESS_TICKS,
    REJOIN_ELECTION_TIMEOUTS, SETTLE_ELECTION_TIMEOUTS, TICK,
};
use crate::provenance::Provenance;
use crate::schedule::{Damage, Fault, Schedule, Target};
use rand::RngExt;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use replog_core::{
    Action, Body, Bytes, Config, Entry, Event, LogIndex, Marks, Message, Node, NodeId, Reply, RequestId,
};
use replog_runtime::driver::{Driver, DriverError, Output};
use replog_runtime::storage::{Identity, OnCorruption};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A client gives up on a request after this many ticks.
const CLIENT_TIMEOUT_TICKS: u64 = 30;
/// Lines kept for a failure report.
const TRACE_TAIL_LINES: usize = 40;

/// Where trace lines go.
pub enum Trace {
    Off,
    /// Keep the last lines only (failure reports).
    Tail(VecDeque<String>),
    /// Keep everything (tests).
    Collect(String),
    /// Stream to a writer (`--trace`).
    Stream(Box<dyn std::io::Write>),
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trace::Off => write!(f, "Trace::Off"),
            Trace::Tail(lines) => write!(f, "Trace::Tail({} lines)", lines.len()),
            Trace::Collect(all) => write!(f, "Trace::Collect({} bytes)", all.len()),
            Trace::Stream(_) => write!(f, "Trace::Stream"),
        }
    }
}

thread_local! {
    static IN_CORE_STEP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while this thread runs `Node::step`: a panic there is a caught, reported violation, so
/// a panic hook may stay quiet about it.
pub fn in_core_step() -> bool {
    IN_CORE_STEP.with(|flag| flag.get())
}

impl Trace {
    fn on(&self) -> bool {
        !matches!(self, Trace::Off)
    }

    fn line(&mut self, line: String) {
        match self {
            Trace::Off => {}
            Trace::Tail(lines) => {
                if lines.len() == TRACE_TAIL_LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
            Trace::Collect(all) => {
                all.push_str(&line);
                all.push('\n');
            }
            Trace::Stream(out) => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
}

/// How often the interesting paths ran: faults from the world, decisions from the core's own
/// coverage marks (`replog_core::Marks`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Coverage {
    pub elections: u64,
    pub split_votes: u64,
    pub truncations: u64,
    pub stale_term_messages: u64,
    pub leader_stepdowns: u64,
    pub prevote_rejections: u64,
    pub votes_ignored_by_lease: u64,
    pub torn_writes: u64,
    pub fsync_failures: u64,
    pub storage_faults: u64,
    pub lost_entries_detected: u64,
    pub repair_refusals: u64,
}

impl Coverage {
    /// Adds what a node's marks counted between two moments of one life.
    fn add(&mut self, before: &Marks, after: &Marks) {
        self.elections += after.elections - before.elections;
        self.split_votes += after.split_votes - before.split_votes;
        self.truncations += after.truncations - before.truncations;
        self.stale_term_messages += after.stale_term_messages - before.stale_term_messages;
        self.leader_stepdowns += after.leader_stepdowns - before.leader_stepdowns;
        self.prevote_rejections += after.pre_vote_rejections_sent - before.pre_vote_rejections_sent;
        self.votes_ignored_by_lease += after.votes_ignored_by_lease - before.votes_ignored_by_lease;
        self.lost_entries_detected += after.lost_entries_detected - before.lost_entries_detected;
        self.repair_refusals += after.repair_refusals - before.repair_refusals;
    }
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub ticks: u64,
    pub network: NetworkStats,
    pub crashes: u64,
    pub restarts: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub leader_changes: u64,
    pub committed: u64,
    pub clients: Tally,
    pub coverage: Coverage,
    /// Fingerprint of every event and action, in order: equal runs have equal digests.
    pub digest: u64,
}

#[derive(Debug)]
pub struct RunResult {
    pub summary: Summary,
    pub violation: Option<Violation>,
    pub trace: Trace,
}

/// One node: the runtime's driver (the core and the real storage code) on a simulated disk.
struct SimNode {
    id: NodeId,
    driver: Option<Driver<SimFs>>,
    /// Bumped at every crash and restart; events of an old life are ignored.
    life: u64,
    disk: SimDisk,
    paused: bool,
    held: Vec<SimEvent>,
    tick_period: u64,
    /// A completion of the disk's background syncs is scheduled.
    sync_scheduled: bool,
    applied_len: u64,
    /// The commit index in the durable metadata: it never goes back.
    durable_commit: LogIndex,
    /// The core's Sync placement, checked on its actions.
    contract: checker::SyncContract,
    /// A storage fault hit its disk: a damaged record is cut at the next start, as an
    /// operator's `start --repair` would.
    damaged: bool,
}

impl SimNode {
    fn node(&self) -> Option<&Node> {
        self.driver.as_ref().map(Driver::node)
    }

    fn is_up(&self) -> bool {
        self.driver.is_some()
    }
}

/// What a driver call does before the round ends.
enum Call {
    Step(Event),
    /// Background syncs completed.
    Synced,
}

struct Client {
    guess: usize,
    outstanding: Option<(RequestId, usize)>,
    next_op: u64,
    acked_after_heal: bool,
}

enum SimEvent {
    Tick {
        node: usize,
        life: u64,
    },
    Deliver(Message),
    /// The disk's background syncs asked for up to `upto` complete.
    SyncDone {
        node: usize,
        life: u64,
        upto: u64,
    },
    ClientArrive {
        node: usize,
        request: RequestId,
        command: Option<Bytes>,
    },
    ClientReply {
        client: usize,
        request: RequestId,
        reply: Reply,
        read_len: u64,
    },
    ClientTimeout {
        client: usize,
        request: RequestId,
    },
    ClientNext {
        client: usize,
    },
    Fault(usize),
    CrashNode {
        node: usize,
        life: u64,
    },
    Heal,
    LivenessCheck,
    /// Availability: a leader must hold office now, and keep it while the network is healthy.
    Settled,
    /// Availability: a cut-off follower rejoins.
    Rejoin,
    /// Availability: the settled leader crashes; another must settle in time.
    Failover,
    /// Start this node again (the crashed leader of a failover).
    RestartNode(usize),
    End,
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: SimEvent,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct World {
    options: Options,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    clients_stopped: bool,
    network: Network,
    checker: Checker,
    provenance: Provenance,
    history: History,
    requests: BTreeMap<RequestId, (usize, usize)>,
    next_request: u64,
    faults: Vec<crate::schedule::Timed>,
    healed: bool,
    /// Availability: the leader and term that must stand while the network is healthy.
    stable: Option<(replog_core::Term, NodeId)>,
    /// Leader failovers so far in the availability phase.
    failovers: u32,
    failed_leader: Option<NodeId>,
    /// The highest term when the current failover began.
    failover_term: Option<replog_core::Term>,
    /// Armed by `Fault::Ambush`: crash the next new leader this many units after it wins.
    ambush: Option<u64>,
    rng_net: ChaCha8Rng,
    rng_disk: ChaCha8Rng,
    rng_client: ChaCha8Rng,
    rng_fault: ChaCha8Rng,
    trace: Trace,
    digest: Fnv,
    summary: Summary,
}

/// Runs one simulation. Deterministic: the same options and schedule give the same result.
pub fn run(options: &Options, schedule: &Schedule, trace: Trace) -> RunResult {
    let mut world = World::new(options.clone(), schedule.clone(), trace);
    let violation = world.run().err();
    world.summary.ticks = world.now / TICK;
    world.summary.committed = world.checker.committed().len() as u64;
    world.summary.clients = world.history.tally();
    world.summary.network = world.network.stats;
    world.summary.digest = world.digest.finish();
    RunResult { summary: world.summary, violation, trace: world.trace }
}

fn stream(seed: u64, salt: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(digest::of(&(seed, salt)))
}

impl World {
    fn new(options: Options, schedule: Schedule, trace: Trace) -> World {
        let seed = options.seed;
        let mut rng_setup = stream(seed, 1);
        let spread = TICK * options.clock_drift_pct / 100;
        let nodes = (1..=options.nodes)
            .map(|id| SimNode {
                id: NodeId(id),
                driver: None,
                life: 0,
                disk: SimDisk::new(stream(seed, 100 + id), options.fsync_fail_rate, options.torn_write_rate),
                paused: false,
                held: Vec::new(),
                tick_period: rng_setup.random_range(TICK - spread..=TICK + spread),
                sync_scheduled: false,
                applied_len: 0,
                durable_commit: LogIndex::ZERO,
                contract: checker::SyncContract::new(replog_core::HardState::default()),
                damaged: false,
            })
            .collect();
        let clients = (0..options.clients)
            .map(|_| Client {
                guess: rng_setup.random_range(0..options.nodes as usize),
                outstanding: None,
                next_op: 0,
                acked_after_heal: false,
            })
            .collect();
        let network = Network::new(
            options.drop_rate,
            options.dup_rate,
            options.delay_rate,
            options.replay_rate,
            options.latency_max,
        );
        World {
            options,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            clients,
            clients_stopped: false,
            network,
            checker: Checker::default(),
            provenance: Provenance::default(),
            history: History::default(),
            requests: BTreeMap::new(),
            next_request: 1,
            faults: schedule.faults,
            healed: false,
            stable: None,
            failovers: 0,
            failed_leader: None,
            failover_term: None,
            ambush: None,
            rng_net: stream(seed, 2),
            rng_disk: stream(seed, 3),
            rng_client: stream(seed, 4),
            rng_fault: stream(seed, 5),
            trace,
            digest: Fnv::default(),
            summary: Summary::default(),
        }
    }

    fn schedule(&mut self, delay: u64, event: SimEvent) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { at: self.now + delay, seq: self.seq, event }));
    }

    fn note(&mut self, text: impl FnOnce() -> String) {
        if self.trace.on() {
            let line = format!("{:>6}.{:03} {}", self.now / TICK, self.now % TICK, text());
            self.trace.line(line);
        }
    }

    fn violation(&self, kind: Kind, node: Option<NodeId>, (property, detail): Broken) -> Violation {
        Violation { kind, property: property.to_string(), at: self.now, node, detail }
    }

    fn run(&mut self) -> Result<(), Violation> {
        for index in 0..self.nodes.len() {
            self.restart(index)?;
        }
        for client in 0..self.clients.len() {
            let delay = self.rng_client.random_range(1..=5 * TICK);
            self.schedule(delay, SimEvent::ClientNext { client });
        }
        for index in 0..self.faults.len() {
            let at = self.faults[index].at;
            self.schedule(at, SimEvent::Fault(index));
        }
        self.schedule(self.options.ticks * TICK, SimEvent::Heal);
        while let Some(Reverse(next)) = self.queue.pop() {
            self.now = next.at;
            match next.event {
                SimEvent::Tick { node, life } => self.on_tick(node, life)?,
                SimEvent::Deliver(message) => self.on_deliver(message)?,
                SimEvent::SyncDone { node, life, upto } => self.on_sync_done(node, life, upto)?,
                SimEvent::ClientArrive { node, request, command } => {
                    self.on_client_arrive(node, request, command)?
                }
                SimEvent::ClientReply { client, request, reply, read_len } => {
                    self.on_client_reply(client, request, reply, read_len)
                }
                SimEvent::ClientTimeout { client, request } => self.on_client_timeout(client, request),
                SimEvent::ClientNext { client } => self.start_op(client),
                SimEvent::Fault(index) => self.on_fault(index)?,
                SimEvent::CrashNode { node, life } => {
                    // An ambush armed in the fault phase never fires after the heal.
                    if self.nodes[node].life == life && !self.healed {
                        self.crash(node, "crashed (ambushed new leader)");
                    }
                }
                SimEvent::Heal => self.on_heal()?,
                SimEvent::LivenessCheck => self.check_liveness()?,
                SimEvent::Settled => self.on_settled()?,
                SimEvent::Rejoin => {
                    self.note(|| "availability: the cut-off follower rejoins".into());
                    self.network.heal();
                }
                SimEvent::Failover => self.on_failover(),
                SimEvent::RestartNode(node) => self.restart(node)?,
                SimEvent::End => return self.check_end(),
            }
        }
        unreachable!("the run ends with its End event")
    }

    // ---- nodes ----

    fn config(&self, index: usize) -> Config {
        let id = self.nodes[index].id;
        let peers = self.nodes.iter().map(|n| n.id).filter(|&peer| peer != id).collect();
        let mut config = Config::new(id, peers);
        config.pre_vote = self.options.pre_vote;
        config.check_quorum = self.options.check_quorum;
        config.seed = digest::of(&(self.options.seed, id.0, self.nodes[index].life));
        config.entries_per_message_max = self.options.entries_per_message_max;
        config.inflight_messages_max = self.options.inflight_messages_max;
        #[cfg(feature = "bugs")]
        {
            if let Some(crate::bugs::Planted::Core(bug)) = self.options.planted() {
                config.bug = Some(bug);
            }
        }
        config
    }

    fn restart(&mut self, index: usize) -> Result<(), Violation> {
        if self.nodes[index].is_up() {
            return Ok(());
        }
        self.nodes[index].life += 1;
        let config = self.config(index);
        let sim = &mut self.nodes[index];
        let id = sim.id;
        let identity = Identity { name: id.to_string(), address: format!("sim:{}", id.0) };
        let fs = SimFs::new(&sim.disk);
        // After a storage fault the operator starts it with --repair; otherwise damage is refused.
        let on_corruption = if sim.damaged { OnCorruption::Repair } else { OnCorruption::Refuse };
        let opened = Driver::open_with(config, fs, std::path::Path::new(DATA_DIR), identity, on_corruption);
        let (mut driver, opened) = match opened {
            Ok(opened) => opened,
            Err(DriverError::Storage(_)) if sim.disk.has_failed_sync() => {
                // Start-up stops at a failed fsync, as the runtime does; a later restart retries.
                let loss = sim.disk.crash(&mut self.rng_disk);
                sim.life += 1;
                self.note(|| {
                    format!("{id} failed to start (fsync failed), lost {} unsynced writes", loss.lost)
                });
                return Ok(());
            }
            Err(error) => {
                return Err(self.violation(Kind::Safety, Some(id), ("recovery", error.to_string())))
            }
        };
        driver.record();
        #[cfg(feature = "bugs")]
        if let Some(crate::bugs::Planted::Driver(bug)) = self.options.planted() {
            driver.plant(bug);
        }
        let node = driver.node();
        let log = node.entries(LogIndex(1), node.last_index());
        let commit = node.commit();
        let contract = checker::SyncContract::new(node.hard_state());
        self.checker.on_start(id, &log).map_err(|broken| self.violation(Kind::Safety, Some(id), broken))?;
        let sim = &mut self.nodes[index];
        sim.driver = Some(driver);
        sim.contract = contract;
        sim.damaged = false;
        // The log is the state machine: what was committed before the restart is applied.
        sim.applied_len = commit.0;
        sim.sync_scheduled = false;
        let (life, period) = (sim.life, sim.tick_period);
        if life > 1 {
            self.summary.restarts += 1;
            let repaired = if opened.warnings.is_empty() { "" } else { ", cut a torn record" };
            self.note(|| format!("{id} restarted from disk ({} entries{repaired})", log.len()));
        }
        let first = self.rng_fault.random_range(1..=period);
        self.schedule(first, SimEvent::Tick { node: index, life });
        Ok(())
    }

    fn crash(&mut self, index: usize, why: &str) {
        let sim = &mut self.nodes[index];
        if sim.driver.take().is_none() {
            return;
        }
        let loss = sim.disk.crash(&mut self.rng_disk);
        sim.life += 1;
        sim.paused = false;
        sim.held.clear();
        sim.sync_scheduled = false;
        let id = sim.id;
        self.summary.crashes += 1;
        if loss.torn {
            self.summary.coverage.torn_writes += 1;
        }
        self.note(|| {
            format!(
                "{id} {why}: kept {} unsynced writes, lost {}{}",
                loss.kept,
                loss.lost,
                if loss.torn { ", tore one" } else { "" }
            )
        });
    }

    fn on_tick(&mut self, index: usize, life: u64) -> Result<(), Violation> {
        let sim = &self.nodes[index];
        if sim.life != life || !sim.is_up() {
            return Ok(());
        }
        let (period, paused) = (sim.tick_period, sim.paused);
        self.schedule(period, SimEvent::Tick { node: index, life });
        if !paused {
            self.drive(index, Call::Step(Event::Tick))?;
        }
        Ok(())
    }

    fn on_deliver(&mut self, message: Message) -> Result<(), Violation> {
        let index = message.to.0 as usize - 1;
        if self.network.is_cut(message.from.0, message.to.0) || !self.nodes[index].is_up() {
            self.network.stats.dropped += 1;
            return Ok(());
        }
        if self.nodes[index].paused {
            self.nodes[index].held.push(SimEvent::Deliver(message));
            return Ok(());
        }
        self.network.stats.delivered += 1;
        self.provenance.on_deliver(&message);
        self.drive(index, Call::Step(Event::Receive(message)))
    }

    fn on_sync_done(&mut self, index: usize, life: u64, upto: u64) -> Result<(), Violation> {
        let sim = &mut self.nodes[index];
        if sim.life != life || !sim.is_up() {
            return Ok(());
        }
        if sim.paused {
            sim.held.push(SimEvent::SyncDone { node: index, life, upto });
            return Ok(());
        }
        sim.sync_scheduled = false;
        sim.disk.complete_syncs(upto);
        self.drive(index, Call::Synced)
    }

    /// One round of the runtime's driver on a node, as its event loop runs it: the call, then
    /// one sync request for everything written, then whatever completed syncs release. Every
    /// core step and every released message is checked.
    fn drive(&mut self, index: usize, call: Call) -> Result<(), Violation> {
        let Some(node) = self.nodes[index].node() else {
            return Ok(());
        };
        let id = node.id();
        let (was_leader, term_before, commit_before, marks_before) =
            (node.is_leader(), node.term(), node.commit(), *node.marks());
        // The runtime syncs inline when its round was quiet, on the fsync thread otherwise.
        let inline = self.rng_disk.random_bool(0.5);
        let driver = self.nodes[index].driver.as_mut().expect("node is up");
        IN_CORE_STEP.with(|flag| flag.set(true));
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Call::Step(event) = call {
                driver.step(event)?;
            }
            driver.end_round(inline)?;
            driver.on_synced()
        }));
        IN_CORE_STEP.with(|flag| flag.set(false));
        let mut outputs = Vec::new();
        driver.take_output(&mut outputs);
        let recorded = driver.take_recorded();
        let (is_leader, term) = (driver.node().is_leader(), driver.node().term());
        for stepped in recorded {
            self.observe(index, (is_leader, term), stepped.event, stepped.actions)?;
        }
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(DriverError::Storage(_))) if self.nodes[index].disk.has_failed_sync() => {
                // The node stops: nothing the failed round released leaves.
                self.summary.coverage.fsync_failures += 1;
                self.crash(index, "stopped after an fsync failure");
                return Ok(());
            }
            Ok(Err(error)) => {
                return Err(self.violation(Kind::Safety, Some(id), ("driver", error.to_string())))
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(self.violation(Kind::Safety, Some(id), ("core invariant", message)));
            }
        }
        let mut applied: Vec<Vec<Entry>> = Vec::new();
        for output in outputs {
            match output {
                Output::Send(message) => {
                    self.check_durable(index, &message)?;
                    self.transmit(message);
                }
                // The core applies before it answers a read: the read sees what was applied.
                Output::Apply(entries) => {
                    self.nodes[index].applied_len += entries.len() as u64;
                    applied.push(entries);
                }
                Output::Reply(reply) => {
                    if let Reply::ReadReady { request, .. } = reply {
                        self.provenance
                            .on_read_ready(request, id, self.quorum())
                            .map_err(|b| self.violation(Kind::Safety, Some(id), b))?;
                    }
                    self.route_reply(index, reply)
                }
            }
        }
        let node = self.nodes[index].node().expect("node is up");
        let became_leader = node.is_leader() && (!was_leader || node.term() != term_before);
        let commit_moved = node.is_leader() && node.commit() > commit_before;
        self.summary.coverage.add(&marks_before, node.marks());
        self.checker
            .after_step(node, became_leader)
            .map_err(|b| self.violation(Kind::Safety, Some(id), b))?;
        if became_leader {
            let term = node.term();
            self.provenance
                .on_elected(id, term, self.quorum())
                .map_err(|b| self.violation(Kind::Safety, Some(id), b))?;
        }
        if commit_moved {
            self.check_commit_provenance(index)?;
            self.check_commit_final(index)?;
        }
        for entries in &applied {
            self.checker.on_apply(id, entries).map_err(|b| self.violation(Kind::Safety, Some(id), b))?;
        }
        if became_leader {
            self.summary.leader_changes += 1;
            if let Some(delay) = self.ambush.take() {
                let life = self.nodes[index].life;
                self.schedule(delay, SimEvent::CrashNode { node: index, life });
            }
        }
        self.check_durable_commit(index)?;
        self.check_stable(index)?;
        self.schedule_sync(index);
        Ok(())
    }

    /// A message that vouches for stored state leaves only once that state would survive a
    /// crash, judged from the simulated disk through the runtime's own parsers.
    fn check_durable(&self, index: usize, message: &Message) -> Result<(), Violation> {
        if !checker::vouches_for_storage(message) {
            return Ok(());
        }
        let sim = &self.nodes[index];
        let hard = sim.disk.durable_hard_state();
        let log = sim.disk.durable_log();
        let node = sim.node().expect("node is up");
        checker::check_durable(message, hard.term, hard.voted_for, &log, node)
            .map_err(|b| self.violation(Kind::Safety, Some(sim.id), b))
    }

    /// Traces, fingerprints and checks one core step the driver took.
    fn observe(
        &mut self,
        index: usize,
        (is_leader, term): (bool, replog_core::Term),
        event: Event,
        actions: Vec<Action>,
    ) -> Result<(), Violation> {
        let id = self.nodes[index].id;
        if let (Event::Read { request }, true) = (&event, is_leader) {
            let round = actions.iter().find_map(|action| match action {
                Action::Send(Message { body: Body::AppendRequest { seq, .. }, .. }) => Some(*seq),
                _ => None,
            });
            if let Some(seq) = round {
                self.provenance.on_read(*request, id, term, seq);
            }
        }
        (self.now, id.0, &event).hash(&mut self.digest);
        actions.hash(&mut self.digest);
        if self.trace.on() {
            let text = describe(&event);
            self.note(|| format!("{id} {text}"));
            for action in &actions {
                self.trace.line(format!("         {action}"));
            }
        }
        for action in &actions {
            let checked = match action {
                Action::AppendLog { entries } => self.checker.on_append(id, entries),
                Action::TruncateLog { from } => self.checker.on_truncate(id, *from, is_leader, term),
                _ => Ok(()),
            }
            .and_then(|()| self.nodes[index].contract.on_action(action));
            checked.map_err(|b| self.violation(Kind::Safety, Some(id), b))?;
        }
        Ok(())
    }

    /// The commit index on disk never goes back (it is written only up to the durable log).
    fn check_durable_commit(&mut self, index: usize) -> Result<(), Violation> {
        let sim = &mut self.nodes[index];
        // Counted within the durable log: after a storage fault cut the log, the commit index
        // rewritten to fit it is not a step back.
        let commit = sim.disk.durable_hard_state().commit.min(sim.disk.durable_last().1);
        if commit < sim.durable_commit {
            let (id, before) = (sim.id, sim.durable_commit);
            let broken = ("commit monotonic", format!("durable commit went back from {before} to {commit}"));
            return Err(self.violation(Kind::Safety, Some(id), broken));
        }
        sim.durable_commit = commit;
        Ok(())
    }

    /// Background syncs the driver asked for complete after the disk's latency.
    fn schedule_sync(&mut self, index: usize) {
        let sim = &self.nodes[index];
        let Some(upto) = sim.disk.requested() else {
            return;
        };
        if sim.sync_scheduled || !sim.is_up() {
            return;
        }
        let life = sim.life;
        self.nodes[index].sync_scheduled = true;
        let delay = self.rng_disk.random_range(1..=self.options.sync_latency_max);
        self.schedule(delay, SimEvent::SyncDone { node: index, life, upto });
    }

    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// See `Provenance::on_commit`; run whenever a leader's commit index moves.
    fn check_commit_provenance(&self, leader: usize) -> Result<(), Violation> {
        let sim = &self.nodes[leader];
        let node = sim.node().expect("leader runs");
        let (commit, term) = (node.commit(), node.term());
        let entry_term = node.entry(commit).map(|e| e.term);
        let self_durable = sim.disk.durable_log().get(commit.0 as usize - 1).map(|e| e.term) == entry_term;
        self.provenance
            .on_commit(node.id(), term, commit, self_durable, self.quorum())
            .map_err(|b| self.violation(Kind::Safety, Some(node.id()), b))
    }

    /// See `checker::check_commit_final`; run whenever a leader's commit index moves.
    fn check_commit_final(&self, leader: usize) -> Result<(), Violation> {
        let node = self.nodes[leader].node().expect("leader runs");
        let index = node.commit();
        let term = node.entry(index).expect("committed entry").term;
        let views: Vec<checker::LogView> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(position, sim)| {
                let durable = sim.disk.durable_last();
                let durable_has =
                    sim.disk.durable_log().get(index.0 as usize - 1).is_some_and(|e| e.term == term);
                let memory = sim.node().map(|n| {
                    ((n.last_term(), n.last_index()), n.entry(index).is_some_and(|e| e.term == term))
                });
                let repairing = self.is_repairing(position);
                checker::LogView { id: sim.id, durable, durable_has, memory, repairing }
            })
            .collect();
        let quorum = self.nodes.len() / 2 + 1;
        checker::check_commit_final(&views, index, quorum)
            .map_err(|broken| self.violation(Kind::Safety, Some(node.id()), broken))
    }

    fn transmit(&mut self, message: Message) {
        for (delay, message) in self.network.send(&mut self.rng_net, message) {
            self.schedule(delay, SimEvent::Deliver(message));
        }
    }

    // ---- clients ----

    fn start_op(&mut self, client: usize) {
        if self.clients_stopped || self.clients[client].outstanding.is_some() {
            return;
        }
        let rng = &mut self.rng_client;
        let read = rng.random_bool(0.2);
        // Mostly follow the leader hint; sometimes ask anyone (followers, stale leaders).
        let node = if rng.random_bool(0.2) {
            rng.random_range(0..self.nodes.len())
        } else {
            self.clients[client].guess
        };
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let state = &mut self.clients[client];
        let value = format!("c{client}.{}", state.next_op).into_bytes();
        state.next_op += 1;
        let kind = if read { OpKind::Read } else { OpKind::Append { value: value.clone() } };
        self.history.ops.push(Op {
            client: client as u32,
            kind,
            invoke: self.now,
            response: None,
            outcome: Outcome::Pending,
        });
        let op = self.history.ops.len() - 1;
        self.clients[client].outstanding = Some((request, op));
        self.requests.insert(request, (client, op));
        let command = (!read).then(|| Bytes::from(value));
        self.note(|| {
            format!(
                "client {client} sends {request} {} to n{}",
                if read { "read" } else { "append" },
                node + 1
            )
        });
        let latency = self.network.latency(&mut self.rng_client);
        self.schedule(latency, SimEvent::ClientArrive { node, request, command });
        self.schedule(CLIENT_TIMEOUT_TICKS * TICK, SimEvent::ClientTimeout { client, request });
    }

    fn on_client_arrive(
        &mut self,
        node: usize,
        request: RequestId,
        command: Option<Bytes>,
    ) -> Result<(), Violation> {
        if !self.nodes[node].is_up() {
            return Ok(()); // lost; the client times out
        }
        if self.nodes[node].paused {
            self.nodes[node].held.push(SimEvent::ClientArrive { node, request, command });
            return Ok(());
        }
        let event = match command {
            Some(command) => Event::Propose { request, commands: vec![command] },
            None => Event::Read { request },
        };
        self.drive(node, Call::Step(event))
    }

    fn route_reply(&mut self, node: usize, reply: Reply) {
        let Some(&(client, _)) = self.requests.get(&reply.request()) else {
            return;
        };
        let read_len = self.nodes[node].applied_len;
        let request = reply.request();
        let latency = self.network.latency(&mut self.rng_client);
        self.schedule(latency, SimEvent::ClientReply { client, request, reply, read_len });
    }

    fn on_client_reply(&mut self, client: usize, request: RequestId, reply: Reply, read_len: u64) {
        let Some((outstanding, op)) = self.clients[client].outstanding else {
            return;
        };
        if outstanding != request {
            return; // an answer to a request the client gave up on
        }
        let outcome = match reply {
            Reply::Committed { first, .. } => Outcome::AppendOk { index: first },
            Reply::ReadReady { index, .. } => {
                debug_assert!(read_len >= index.0);
                Outcome::ReadOk { len: read_len }
            }
            Reply::NotLeader { leader, .. } => {
                if let Some(leader) = leader {
                    self.clients[client].guess = leader.0 as usize - 1;
                } else {
                    self.clients[client].guess = self.rng_client.random_range(0..self.nodes.len());
                }
                Outcome::Failed
            }
            Reply::Rejected { .. } => Outcome::Failed,
            Reply::Indeterminate { .. } => Outcome::Indeterminate,
        };
        if let Outcome::AppendOk { .. } = outcome {
            if self.healed && self.history.ops[op].invoke >= self.options.ticks * TICK {
                self.clients[client].acked_after_heal = true;
            }
        }
        self.note(|| format!("client {client} got {request}: {outcome:?}"));
        let entry = &mut self.history.ops[op];
        entry.response = Some(self.now);
        entry.outcome = outcome;
        self.clients[client].outstanding = None;
        let think = self.rng_client.random_range(1..=2 * TICK);
        self.schedule(think, SimEvent::ClientNext { client });
    }

    fn on_client_timeout(&mut self, client: usize, request: RequestId) {
        let Some((outstanding, op)) = self.clients[client].outstanding else {
            return;
        };
        if outstanding != request {
            return;
        }
        // An append's fate is unknown; a read simply did not happen.
        let entry = &mut self.history.ops[op];
        entry.outcome =
            if matches!(entry.kind, OpKind::Read) { Outcome::Failed } else { Outcome::Indeterminate };
        self.note(|| format!("client {client} timed out on {request}"));
        self.clients[client].outstanding = None;
        self.clients[client].guess = self.rng_client.random_range(0..self.nodes.len());
        self.schedule(1, SimEvent::ClientNext { client });
    }

    // ---- faults and phases ----

    fn resolve(&mut self, target: Target) -> Option<usize> {
        match target {
            Target::Node(id) if (1..=self.nodes.len() as u64).contains(&id) => Some(id as usize - 1),
            Target::Node(_) => None,
            Target::Leader => {
                let leader = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, sim)| sim.node().filter(|n| n.is_leader()).map(|n| (n.term(), i)))
                    .max()
                    .map(|(_, i)| i);
                leader.or_else(|| {
                    let up: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].is_up()).collect();
                    (!up.is_empty()).then(|| up[self.rng_fault.random_range(0..up.len())])
                })
            }
        }
    }

    fn on_fault(&mut self, index: usize) -> Result<(), Violation> {
        let fault = self.faults[index].fault.clone();
        self.note(|| format!("fault: {fault}"));
        match fault {
            Fault::Crash(target) => {
                if let Some(node) = self.resolve(target) {
                    self.crash(node, "crashed");
                }
            }
            Fault::Ambush(delay) => self.ambush = Some(delay),
            Fault::Restart => {
                for node in 0..self.nodes.len() {
                    self.restart(node)?;
                }
            }
            Fault::Pause(target) => {
                if let Some(node) = self.resolve(target) {
                    if self.nodes[node].is_up() && !self.nodes[node].paused {
                        self.nodes[node].paused = true;
                        self.summary.pauses += 1;
                    }
                }
            }
            Fault::Resume => self.resume_all(),
            Fault::Isolate(target) => {
                if let Some(node) = self.resolve(target) {
                    let id = node as u64 + 1;
                    let others: Vec<u64> = (1..=self.nodes.len() as u64).filter(|&o| o != id).collect();
                    self.network.cut(others.iter().flat_map(|&o| [(id, o), (o, id)]));
                    self.summary.partitions += 1;
                }
            }
            Fault::Cut(links) => {
                let n = self.nodes.len() as u64;
                self.network.cut(links.into_iter().filter(|&(a, b)| a <= n && b <= n));
                self.summary.partitions += 1;
            }
            Fault::Heal => self.network.heal(),
            Fault::Drift(node, period) => {
                if let Some(sim) = self.nodes.get_mut(node as usize - 1) {
                    sim.tick_period = period.max(1);
                }
            }
            Fault::Damage(node, damage) => {
                if (1..=self.nodes.len() as u64).contains(&node) {
                    self.damage(node as usize - 1, damage);
                }
            }
        }
        Ok(())
    }

    /// A storage fault on synced data: the node stops, and its log loses a suffix (cut, or a
    /// flipped bit that `start --repair` will cut). Only a suffix that a majority of the other
    /// nodes hold durably, and none of them is repairing, may go: Raft promises nothing for an
    /// entry that a majority no longer keeps, so the checks could not tell a bug from bad luck.
    fn damage(&mut self, index: usize, damage: Damage) {
        self.crash(index, "stopped for a storage fault");
        let (len, last) = {
            let log = self.nodes[index].disk.durable_log();
            (log.len(), log.last().map(|e| (e.index, e.term)))
        };
        let Some((last_index, last_term)) = last else {
            return;
        };
        let holders = (0..self.nodes.len())
            .filter(|&other| other != index && !self.is_repairing(other))
            .filter(|&other| {
                let log = self.nodes[other].disk.durable_log();
                log.get(last_index.0 as usize - 1).is_some_and(|e| e.term == last_term)
            })
            .count();
        let id = self.nodes[index].id;
        if holders < self.nodes.len() / 2 + 1 {
            self.note(|| format!("{id} storage fault skipped: its tail is not on a majority of the others"));
            return;
        }
        let disk = &self.nodes[index].disk;
        let what = match damage {
            Damage::LoseTail(count) => {
                let keep = len.saturating_sub(count as usize);
                disk.lose_records(keep);
                format!("lost its synced log after entry {keep}")
            }
            Damage::Flip(count) => {
                let record = len.saturating_sub(count as usize);
                disk.flip_byte_in_record(record);
                format!("a bit flipped in entry {}", record + 1)
            }
        };
        self.nodes[index].damaged = true;
        // The log on disk is shorter now: a fault, not a storage bug.
        self.nodes[index].durable_commit = LogIndex::ZERO;
        self.summary.coverage.storage_faults += 1;
        self.note(|| format!("{id} storage fault: {what}"));
    }

    /// True if the node is (or, restarted, would be) repairing lost committed entries: it
    /// neither votes nor campaigns.
    fn is_repairing(&self, index: usize) -> bool {
        let sim = &self.nodes[index];
        match sim.node() {
            Some(node) => node.is_repairing(),
            None => {
                let last = sim.disk.durable_last().1;
                sim.disk.durable_hard_state().commit > last || sim.disk.durable_repair_to() > last
            }
        }
    }

    fn resume_all(&mut self) {
        for node in 0..self.nodes.len() {
            if !self.nodes[node].paused {
                continue;
            }
            self.nodes[node].paused = false;
            for event in std::mem::take(&mut self.nodes[node].held) {
                self.schedule(0, event);
            }
        }
    }

    /// The end of the fault phase: heal everything and stop injecting faults.
    fn on_heal(&mut self) -> Result<(), Violation> {
        self.note(|| "heal: faults stop, every node runs, the network calms".into());
        self.healed = true;
        self.network.calm();
        for sim in &self.nodes {
            sim.disk.calm();
        }
        self.ambush = None;
        self.resume_all();
        for node in 0..self.nodes.len() {
            self.restart(node)?;
        }
        // Faults scheduled past the phase end never fire.
        self.faults.retain(|timed| timed.at < self.options.ticks * TICK);
        self.schedule(LIVENESS_TICKS * TICK, SimEvent::LivenessCheck);
        self.schedule(self.election_timeout_ticks() * SETTLE_ELECTION_TIMEOUTS * TICK, SimEvent::Settled);
        Ok(())
    }

    fn election_timeout_ticks(&self) -> u64 {
        u64::from(Config::new(NodeId(1), vec![]).election_ticks_max)
    }

    /// Availability after the heal: a leader holds office in the highest term. From now on the
    /// network stays healthy, so terms must stand still and the leader must stay; with pre-vote
    /// and check-quorum, a follower cut off for a while must rejoin without deposing it.
    fn on_settled(&mut self) -> Result<(), Violation> {
        let max_term = self.nodes.iter().filter_map(SimNode::node).map(Node::term).max();
        let leader =
            self.nodes.iter().filter_map(SimNode::node).find(|n| n.is_leader() && Some(n.term()) == max_term);
        let Some(leader) = leader else {
            let broken = (
                "availability",
                format!(
                    "no leader in the highest term {max_term:?} {} ticks ({SETTLE_ELECTION_TIMEOUTS} election timeouts) after the heal",
                    self.election_timeout_ticks() * SETTLE_ELECTION_TIMEOUTS
                ),
            );
            return Err(self.violation(Kind::Liveness, None, broken));
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
                return Err(self.violation(Kind::Liveness, Some(id), broken));
            }
        }
        self.stable = Some((term, id));
        self.note(|| format!("availability: {id} leads {term}; terms must stand still from now on"));
        if self.failovers < FAILOVERS {
            self.schedule(
                self.election_timeout_ticks() * FAILOVER_ELECTION_TIMEOUTS * TICK,
                SimEvent::Failover,
            );
        }
        if self.failovers > 0 {
            return Ok(());
        }
        if self.options.pre_vote && self.options.check_quorum && self.nodes.len() >= 3 {
            let followers: Vec<u64> = (1..=self.nodes.len() as u64).filter(|&n| n != id.0).collect();
            let cut = followers[self.rng_fault.random_range(0..followers.len())];
            let others: Vec<u64> = (1..=self.nodes.len() as u64).filter(|&o| o != cut).collect();
            self.network.cut(others.iter().flat_map(|&o| [(cut, o), (o, cut)]));
            self.note(|| {
                format!("availability: n{cut} is cut off for {REJOIN_ELECTION_TIMEOUTS} election timeouts")
            });
            self.schedule(self.election_timeout_ticks() * REJOIN_ELECTION_TIMEOUTS * TICK, SimEvent::Rejoin);
        }
        Ok(())
    }

    /// The settled leader crashes: the others must elect a new one within the settle bound
    /// (election timeouts that are not randomized split the vote again and again).
    fn on_failover(&mut self) {
        let Some((_, leader)) = self.stable.take() else {
            return;
        };
        self.failovers += 1;
        self.failed_leader = Some(leader);
        let index = leader.0 as usize - 1;
        self.failover_term = self.nodes.iter().filter_map(SimNode::node).map(Node::term).max();
        self.crash(index, "crashed (availability: leader failover)");
        // It stays down until the others settled: it must not break their ties.
        let settle = self.election_timeout_ticks() * SETTLE_ELECTION_TIMEOUTS;
        self.schedule(settle * TICK, SimEvent::Settled);
        self.schedule((settle + 1) * TICK, SimEvent::RestartNode(index));
    }

    /// While settled, no term grows and nobody else leads.
    fn check_stable(&self, index: usize) -> Result<(), Violation> {
        let (Some((term, leader)), Some(node)) = (self.stable, self.nodes[index].node()) else {
            return Ok(());
        };
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
            return Err(self.violation(Kind::Liveness, Some(node.id()), broken));
        }
        Ok(())
    }

    fn check_liveness(&mut self) -> Result<(), Violation> {
        let max_term = self.nodes.iter().filter_map(SimNode::node).map(Node::term).max();
        let leader =
            self.nodes.iter().filter_map(SimNode::node).find(|n| n.is_leader() && Some(n.term()) == max_term);
        if leader.is_none() {
            let broken = (
                "leader elected after heal",
                format!("no leader in the highest term {max_term:?} after {LIVENESS_TICKS} ticks"),
            );
            return Err(self.violation(Kind::Liveness, None, broken));
        }
        if let Some(client) = self.clients.iter().position(|c| !c.acked_after_heal) {
            let broken = (
                "progress after heal",
                format!("client {client} got no append acknowledged within {LIVENESS_TICKS} ticks"),
            );
            return Err(self.violation(Kind::Liveness, None, broken));
        }
        self.clients_stopped = true;
        self.schedule(CONVERGENCE_TICKS * TICK, SimEvent::End);
        Ok(())
    }

    fn check_end(&mut self) -> Result<(), Violation> {
        let committed = self.checker.committed().len() as u64;
        for sim in &self.nodes {
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
                return Err(self.violation(Kind::Liveness, Some(sim.id), broken));
            }
        }
        self.history
            .check(self.checker.committed())
            .map_err(|detail| self.violation(Kind::Safety, None, ("linearizability", detail)))
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::Tick => "tick".into(),
        Event::Receive(message) => format!("recv {message}"),
        Event::Propose { request, commands } => format!("propose {request} {commands:?}"),
        Event::Read { request } => format!("read {request}"),
        Event::LogPersisted { index, term } => format!("persisted {index}/{term}"),
        Event::Campaign => "campaign".into(),
    }
}

/// A one-paragraph summary of a run.
pub fn render_summary(summary: &Summary) -> String {
    let mut out = String::new();
    let net = &summary.network;
    let c = &summary.coverage;
    let _ = writeln!(
        out,
        "ticks={} messages: sent={} delivered={} dropped={} duplicated={} delayed={} replayed={}",
        summary.ticks, net.sent, net.delivered, net.dropped, net.duplicated, net.delayed, net.replayed
    );
    let _ = writeln!(
        out,
        "faults: crashes={} restarts={} pauses={} partitions={} torn_writes={} fsync_failures={}",
        summary.crashes,
        summary.restarts,
        summary.pauses,
        summary.partitions,
        c.torn_writes,
        c.fsync_failures
    );
    let _ = writeln!(
        out,
        "raft: elections={} leader_changes={} split_votes={} truncations={} stale_term_messages={} stepdowns={} prevote_rejections={} lease_ignored_votes={} committed={}",
        c.elections, summary.leader_changes, c.split_votes, c.truncations, c.stale_term_messages, c.leader_stepdowns, c.prevote_rejections, c.votes_ignored_by_lease, summary.committed
    );
    let _ = write!(
        out,
        "clients: acknowledged={} failed={} indeterminate={} reads={} digest={:016x}",
        summary.clients.acked,
        summary.clients.failed,
        summary.clients.indeterminate,
        summary.clients.reads,
        summary.digest
    );
    out
}
