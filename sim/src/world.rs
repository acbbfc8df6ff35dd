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
use crate::disk::Disk;
use crate::history::{History, Op, OpKind, Outcome, Tally};
use crate::network::{Network, NetworkStats};
use crate::options::{Options, CONVERGENCE_TICKS, LIVENESS_TICKS, TICK};
use crate::schedule::{Fault, Schedule, Target};
use rand::RngExt;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use replog_core::{Action, Body, Bytes, Config, Event, LogIndex, Message, Node, NodeId, Reply, RequestId};
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

/// How often the interesting paths ran.
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

struct SimNode {
    id: NodeId,
    node: Option<Node>,
    /// Bumped at every crash and restart; events of an old life are ignored.
    life: u64,
    disk: Disk,
    paused: bool,
    held: Vec<SimEvent>,
    tick_period: u64,
    flush_scheduled: bool,
    applied_len: u64,
}

struct Client {
    guess: usize,
    outstanding: Option<(RequestId, usize)>,
    next_op: u64,
    acked_after_heal: bool,
}

enum SimEvent {
    Tick { node: usize, life: u64 },
    Deliver(Message),
    Flush { node: usize, life: u64 },
    ClientArrive { node: usize, request: RequestId, command: Option<Bytes> },
    ClientReply { client: usize, request: RequestId, reply: Reply, read_len: u64 },
    ClientTimeout { client: usize, request: RequestId },
    ClientNext { client: usize },
    Fault(usize),
    CrashNode { node: usize, life: u64 },
    Heal,
    LivenessCheck,
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
    history: History,
    requests: BTreeMap<RequestId, (usize, usize)>,
    next_request: u64,
    faults: Vec<crate::schedule::Timed>,
    healed: bool,
    /// Armed by `Fault::Ambush`: crash the next new leader this many units after it wins.
    ambush: Option<u64>,
    fsync_fail_rate: f64,
    torn_write_rate: f64,
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
                node: None,
                life: 0,
                disk: Disk::default(),
                paused: false,
                held: Vec::new(),
                tick_period: rng_setup.random_range(TICK - spread..=TICK + spread),
                flush_scheduled: false,
                applied_len: 0,
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
            fsync_fail_rate: options.fsync_fail_rate,
            torn_write_rate: options.torn_write_rate,
            options,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            clients,
            clients_stopped: false,
            network,
            checker: Checker::default(),
            history: History::default(),
            requests: BTreeMap::new(),
            next_request: 1,
            faults: schedule.faults,
            healed: false,
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
                SimEvent::Flush { node, life } => self.on_flush(node, life)?,
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
            config.bug = self.options.bug.as_deref().and_then(replog_core::Bug::from_name);
        }
        config
    }

    fn restart(&mut self, index: usize) -> Result<(), Violation> {
        if self.nodes[index].node.is_some() {
            return Ok(());
        }
        self.nodes[index].life += 1;
        let config = self.config(index);
        let sim = &mut self.nodes[index];
        let id = sim.id;
        let recovered = sim.disk.recover();
        let node = Node::new(config, recovered)
            .map_err(|error| self.violation(Kind::Safety, Some(id), ("recovery", error.to_string())))?;
        let log = self.nodes[index].disk.log().to_vec();
        self.checker.on_start(id, &log).map_err(|broken| self.violation(Kind::Safety, Some(id), broken))?;
        let sim = &mut self.nodes[index];
        sim.node = Some(node);
        sim.applied_len = 0;
        sim.flush_scheduled = false;
        let (life, period) = (sim.life, sim.tick_period);
        if life > 1 {
            self.summary.restarts += 1;
            self.note(|| format!("{id} restarted from disk ({} entries)", log.len()));
        }
        let first = self.rng_fault.random_range(1..=period);
        self.schedule(first, SimEvent::Tick { node: index, life });
        Ok(())
    }

    fn crash(&mut self, index: usize, why: &str) {
        let sim = &mut self.nodes[index];
        if sim.node.take().is_none() {
            return;
        }
        let loss = sim.disk.crash(&mut self.rng_disk, self.torn_write_rate);
        sim.life += 1;
        sim.paused = false;
        sim.held.clear();
        sim.flush_scheduled = false;
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
        if sim.life != life || sim.node.is_none() {
            return Ok(());
        }
        let (period, paused) = (sim.tick_period, sim.paused);
        self.schedule(period, SimEvent::Tick { node: index, life });
        if !paused {
            self.step(index, Event::Tick)?;
        }
        Ok(())
    }

    fn on_deliver(&mut self, message: Message) -> Result<(), Violation> {
        let index = message.to.0 as usize - 1;
        if self.network.is_cut(message.from.0, message.to.0) || self.nodes[index].node.is_none() {
            self.network.stats.dropped += 1;
            return Ok(());
        }
        if self.nodes[index].paused {
            self.nodes[index].held.push(SimEvent::Deliver(message));
            return Ok(());
        }
        self.network.stats.delivered += 1;
        self.step(index, Event::Receive(message))
    }

    fn on_flush(&mut self, index: usize, life: u64) -> Result<(), Violation> {
        let sim = &mut self.nodes[index];
        if sim.life != life || sim.node.is_none() {
            return Ok(());
        }
        if sim.paused {
            sim.held.push(SimEvent::Flush { node: index, life });
            return Ok(());
        }
        sim.flush_scheduled = false;
        if !self.sync(index)? {
            self.crash(index, "stopped after an fsync failure");
            return Ok(());
        }
        self.report_persisted(index)
    }

    /// One fsync: it may fail, which stops the node (it must never go on as if it succeeded).
    fn sync(&mut self, index: usize) -> Result<bool, Violation> {
        if self.fsync_fail_rate > 0.0 && self.rng_disk.random_bool(self.fsync_fail_rate) {
            self.summary.coverage.fsync_failures += 1;
            return Ok(false);
        }
        let id = self.nodes[index].id;
        let (before, after) = self.nodes[index].disk.sync();
        if after < before {
            let broken = ("commit monotonic", format!("durable commit went back from {before} to {after}"));
            return Err(self.violation(Kind::Safety, Some(id), broken));
        }
        Ok(true)
    }

    /// Tells a node how far its log is durable, as the driver contract asks.
    fn report_persisted(&mut self, index: usize) -> Result<(), Violation> {
        let sim = &self.nodes[index];
        let (Some(node), Some(last)) = (sim.node.as_ref(), sim.disk.last()) else {
            return Ok(());
        };
        if node.persisted_index() < last.index && node.entry(last.index).map(|e| e.term) == Some(last.term) {
            let event = Event::LogPersisted { index: last.index, term: last.term };
            self.step(index, event)?;
        }
        Ok(())
    }

    /// Steps a node and carries out its actions in order, checking safety as it goes.
    fn step(&mut self, index: usize, event: Event) -> Result<(), Violation> {
        let Some(mut node) = self.nodes[index].node.take() else {
            return Ok(());
        };
        let id = node.id();
        let (was_leader, term_before, role_before) = (node.is_leader(), node.term(), node.role_name());
        let commit_before = node.commit();
        if let Event::Receive(message) = &event {
            if message.term < term_before {
                self.summary.coverage.stale_term_messages += 1;
            }
        }
        let ignored_vote = matches!(&event, Event::Receive(m) if matches!(m.body, Body::VoteRequest { .. }) && m.term > term_before);
        (self.now, id.0, &event).hash(&mut self.digest);
        if self.trace.on() {
            let text = describe(&event);
            self.note(|| format!("{id} {text}"));
        }
        IN_CORE_STEP.with(|flag| flag.set(true));
        let stepped = catch_unwind(AssertUnwindSafe(|| node.step(event)));
        IN_CORE_STEP.with(|flag| flag.set(false));
        let actions = match stepped {
            Ok(actions) => actions,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(self.violation(Kind::Safety, Some(id), ("core invariant", message)));
            }
        };
        actions.hash(&mut self.digest);
        if ignored_vote && actions.is_empty() && node.term() == term_before {
            self.summary.coverage.votes_ignored_by_lease += 1;
        }
        let mut applied = Vec::new();
        for action in actions {
            if self.trace.on() {
                let text = format!("         {action}");
                self.trace.line(text);
            }
            match action {
                Action::SaveHardState(_) => self.nodes[index].disk.write(action),
                Action::AppendLog { ref entries } => {
                    self.checker
                        .on_append(id, entries)
                        .map_err(|b| self.violation(Kind::Safety, Some(id), b))?;
                    self.nodes[index].disk.write(action);
                }
                Action::TruncateLog { from } => {
                    self.summary.coverage.truncations += 1;
                    self.checker
                        .on_truncate(id, from, node.is_leader())
                        .map_err(|b| self.violation(Kind::Safety, Some(id), b))?;
                    self.nodes[index].disk.write(action);
                }
                Action::Sync => {
                    if !self.sync(index)? {
                        // The node stops: nothing after the failed sync happens.
                        self.nodes[index].node = Some(node);
                        self.crash(index, "stopped after an fsync failure");
                        return Ok(());
                    }
                }
                Action::Send(message) => {
                    let disk = &self.nodes[index].disk;
                    let hard = disk.hard_state();
                    checker::check_durable(&message, hard.term, hard.voted_for, disk.log(), &node)
                        .map_err(|b| self.violation(Kind::Safety, Some(id), b))?;
                    if matches!(message.body, Body::VoteResponse { pre_vote: true, granted: false }) {
                        self.summary.coverage.prevote_rejections += 1;
                    }
                    self.transmit(message);
                }
                Action::Apply { entries } => {
                    self.nodes[index].applied_len += entries.len() as u64;
                    applied.push(entries);
                }
                Action::Reply(reply) => self.route_reply(index, reply),
            }
        }
        let became_leader = node.is_leader() && (!was_leader || node.term() != term_before);
        if node.is_leader() && node.commit() > commit_before {
            self.nodes[index].node = Some(node);
            let result = self.check_commit_final(index);
            node = self.nodes[index].node.take().expect("just put back");
            result?;
        }
        self.checker
            .after_step(&node, became_leader)
            .map_err(|b| self.violation(Kind::Safety, Some(id), b))?;
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
        if was_leader && !node.is_leader() {
            self.summary.coverage.leader_stepdowns += 1;
        }
        if node.role_name() == "candidate" && node.term() > term_before {
            self.summary.coverage.elections += 1;
            if role_before == "candidate" {
                self.summary.coverage.split_votes += 1;
            }
        }
        self.nodes[index].node = Some(node);
        if self.nodes[index].disk.has_pending() && !self.nodes[index].flush_scheduled {
            self.nodes[index].flush_scheduled = true;
            let delay = self.rng_disk.random_range(1..=self.options.sync_latency_max);
            let life = self.nodes[index].life;
            self.schedule(delay, SimEvent::Flush { node: index, life });
        }
        self.report_persisted(index)
    }

    /// See `checker::check_commit_final`; run whenever a leader's commit index moves.
    fn check_commit_final(&self, leader: usize) -> Result<(), Violation> {
        let node = self.nodes[leader].node.as_ref().expect("leader runs");
        let index = node.commit();
        let term = node.entry(index).expect("committed entry").term;
        let views: Vec<checker::LogView> = self
            .nodes
            .iter()
            .map(|sim| {
                let durable =
                    sim.disk.last().map_or((replog_core::Term::ZERO, LogIndex::ZERO), |e| (e.term, e.index));
                let durable_has = sim.disk.log().get(index.0 as usize - 1).is_some_and(|e| e.term == term);
                let memory = sim.node.as_ref().map(|n| {
                    ((n.last_term(), n.last_index()), n.entry(index).is_some_and(|e| e.term == term))
                });
                checker::LogView { id: sim.id, durable, durable_has, memory }
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
        if self.nodes[node].node.is_none() {
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
        self.step(node, event)
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
                    .filter_map(|(i, sim)| sim.node.as_ref().filter(|n| n.is_leader()).map(|n| (n.term(), i)))
                    .max()
                    .map(|(_, i)| i);
                leader.or_else(|| {
                    let up: Vec<usize> =
                        (0..self.nodes.len()).filter(|&i| self.nodes[i].node.is_some()).collect();
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
                    if self.nodes[node].node.is_some() && !self.nodes[node].paused {
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
        }
        Ok(())
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
        self.fsync_fail_rate = 0.0;
        self.torn_write_rate = 0.0;
        self.ambush = None;
        self.resume_all();
        for node in 0..self.nodes.len() {
            self.restart(node)?;
        }
        // Faults scheduled past the phase end never fire.
        self.faults.retain(|timed| timed.at < self.options.ticks * TICK);
        self.schedule(LIVENESS_TICKS * TICK, SimEvent::LivenessCheck);
        Ok(())
    }

    fn check_liveness(&mut self) -> Result<(), Violation> {
        let max_term = self.nodes.iter().filter_map(|s| s.node.as_ref()).map(Node::term).max();
        let leader = self
            .nodes
            .iter()
            .filter_map(|s| s.node.as_ref())
            .find(|n| n.is_leader() && Some(n.term()) == max_term);
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
            let node = sim.node.as_ref().expect("every node runs after the heal");
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
