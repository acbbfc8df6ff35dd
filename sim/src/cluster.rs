//! The cluster: every simulated node, started, crashed, paused, damaged and driven through
//! driver rounds, with the safety checks that watch every round. What a round releases (messages,
//! client replies) goes back to the world, which hands it to the network and the clients.

use crate::checker::{Kind, Violation};
use crate::disk::SimDisk;
use crate::frontend::{AdmissionStats, Answer, Arrival, Attempt};
use crate::health::{Clock, NodeMonitor};
use crate::node::{Call, Failure, Round, SimNode};
use crate::options::{Options, TICK};
use crate::safety::Safety;
use crate::schedule::Damage;
use crate::summary::Coverage;
use crate::timeline::{SimEvent, Timeline};
use crate::world::stream;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use replog_core::{
    Bytes, Config, Entry, Event, LogIndex, Marks, Membership, Message, Node, NodeId, Reply, RequestId,
    SnapshotMeta, Term,
};
use replog_runtime::driver::{DriverError, Output};
use replog_runtime::retention::Retention;
use replog_runtime::storage::StorageOptions;
use std::collections::BTreeMap;

pub(crate) struct Cluster {
    options: Options,
    nodes: Vec<SimNode>,
    safety: Safety,
    /// What a crash keeps, inline or background syncs, and sync latency.
    rng_disk: ChaCha8Rng,
    pub(crate) crashes: u64,
    pub(crate) restarts: u64,
    pub(crate) leader_changes: u64,
    pub(crate) coverage: Coverage,
    /// How the nodes' frontends screened session appends.
    pub(crate) admissions: AdmissionStats,
    /// The next request id a frontend gives the core (the operator's are far above).
    next_request: u64,
    /// The nodes' `Instant`s: one base for the run, plus virtual time.
    clock: Clock,
}

/// What became of a client's request at a node.
pub(crate) enum Arrived {
    /// Lost (the node is down) or held (paused): nothing to do now.
    Nothing,
    /// A read: step it.
    Step(Call),
    /// An append joined the node's batch; `flush`: the round's flush must be scheduled.
    Batched { flush: bool },
}

/// A page of the committed log a follow reader got from a node.
pub(crate) enum FollowPage {
    /// The node is down or paused: no answer.
    Unavailable,
    /// The node trimmed the command asked for; its log starts at this ID.
    Trimmed { first_id: u64 },
    /// Committed commands from the ID asked for on (maybe none), with their IDs.
    Commands(Vec<(u64, Bytes)>),
}

/// A node before a round, to tell what the round changed.
pub(crate) struct Before {
    was_leader: bool,
    term: Term,
    commit: LogIndex,
    marks: Marks,
}

impl Cluster {
    /// Every node down, with an empty disk; `rng_setup` draws each node's tick period.
    pub(crate) fn new(options: &Options, rng_setup: &mut ChaCha8Rng, rng_disk: ChaCha8Rng) -> Cluster {
        let spread = TICK * options.clock_drift_pct / 100;
        let nodes = (1..=options.ids())
            .map(|id| {
                let disk = SimDisk::new(
                    stream(options.seed, 100 + id),
                    options.fsync_fail_rate,
                    options.torn_write_rate,
                );
                SimNode::new(NodeId(id), disk, rng_setup.random_range(TICK - spread..=TICK + spread))
            })
            .collect::<Vec<_>>();
        // The bootstrap voters start with the configuration of them all; a spare with none.
        let cluster = Membership::voters_only((1..=options.nodes).map(NodeId));
        let bootstrap: BTreeMap<NodeId, Membership> = nodes
            .iter()
            .map(|sim| {
                (sim.id, if sim.id.0 <= options.nodes { cluster.clone() } else { Membership::default() })
            })
            .collect();
        Cluster {
            options: options.clone(),
            safety: Safety::new(bootstrap, cluster),
            nodes,
            rng_disk,
            crashes: 0,
            restarts: 0,
            leader_changes: 0,
            coverage: Coverage::default(),
            admissions: AdmissionStats::default(),
            next_request: 1,
            clock: Clock::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// The core of a running node.
    pub(crate) fn node(&self, index: usize) -> Option<&Node> {
        self.nodes[index].node()
    }

    pub(crate) fn is_up(&self, index: usize) -> bool {
        self.nodes[index].is_up()
    }

    /// The commit index of node `index`, if it runs and is not paused (what a client's status
    /// call learns).
    pub(crate) fn commit_seen(&self, index: usize) -> Option<LogIndex> {
        let sim = &self.nodes[index];
        sim.node().filter(|_| !sim.is_paused()).map(Node::commit)
    }

    pub(crate) fn life(&self, index: usize) -> u64 {
        self.nodes[index].life()
    }

    /// The longest committed log any node reported.
    pub(crate) fn committed(&self) -> &[Entry] {
        self.safety.committed()
    }

    /// Configuration entries in the committed log: membership changes that took effect.
    pub(crate) fn committed_changes(&self) -> u64 {
        self.committed()
            .iter()
            .filter(|entry| matches!(entry.payload, replog_core::Payload::Config(_)))
            .count() as u64
    }

    /// Whether `id` is a member (voter or learner) of the committed configuration. Removed
    /// nodes and spares not (yet) added are not: they may keep running, but no check after the
    /// heal waits for them (a removed node that never heard of its removal may campaign on in
    /// ever higher terms; the members ignore it).
    pub(crate) fn is_member(&self, id: NodeId) -> bool {
        self.safety.committed_membership().contains(id)
    }

    /// The running members.
    fn members(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter_map(SimNode::node).filter(|node| self.is_member(node.id()))
    }

    /// The highest term of a running member.
    pub(crate) fn max_term(&self) -> Option<Term> {
        self.members().map(Node::term).max()
    }

    /// The highest term of a running member, and a leader in that term if there is one.
    pub(crate) fn leader(&self) -> (Option<Term>, Option<&Node>) {
        let max_term = self.max_term();
        let leader = self.members().find(|n| n.is_leader() && Some(n.term()) == max_term);
        (max_term, leader)
    }

    fn config(&self, index: usize) -> Config {
        let id = self.nodes[index].id;
        let bootstrap = id.0 <= self.options.nodes;
        let peers = if bootstrap {
            (1..=self.options.nodes).map(NodeId).filter(|&peer| peer != id).collect()
        } else {
            Vec::new()
        };
        let mut config = Config::new(id, peers);
        // A spare waits to be added: no configuration until a leader's log gives it one.
        config.joining = !bootstrap;
        // As the runtime's server runs it: the first leader writes the bootstrap into the log.
        config.record_bootstrap = true;
        config.pre_vote = self.options.pre_vote;
        config.check_quorum = self.options.check_quorum;
        config.seed = crate::digest::of(&(self.options.seed, id.0, self.nodes[index].life()));
        config.entries_per_message_max = self.options.entries_per_message_max;
        config.inflight_messages_max = self.options.inflight_messages_max;
        config.snapshot_chunk_bytes = self.options.snapshot_chunk_bytes;
        if self.options.log_cache_bytes > 0 {
            // The message limit shrinks with it (the cache holds at least one full message).
            config.log_cache_bytes_max = self.options.log_cache_bytes;
            config.message_bytes_max = config.message_bytes_max.min(self.options.log_cache_bytes);
        }
        #[cfg(feature = "bugs")]
        {
            if let Some(crate::bugs::Planted::Core(bug)) = self.options.planted() {
                config.bug = Some(bug);
            }
        }
        config
    }

    // ---- lives ----

    /// Starts every node that is down, from its disk.
    pub(crate) fn start_all(
        &mut self,
        rng_fault: &mut ChaCha8Rng,
        t: &mut Timeline,
    ) -> Result<(), Violation> {
        for index in 0..self.nodes.len() {
            self.restart(index, rng_fault, t)?;
        }
        Ok(())
    }

    /// Starts node `index` from its disk, if it is down; `rng_fault` draws its first tick.
    pub(crate) fn restart(
        &mut self,
        index: usize,
        rng_fault: &mut ChaCha8Rng,
        t: &mut Timeline,
    ) -> Result<(), Violation> {
        if self.nodes[index].is_up() {
            return Ok(());
        }
        self.nodes[index].begin_life();
        let config = self.config(index);
        let monitor_config = config.clone();
        let storage = StorageOptions { segment_bytes_max: self.options.segment_bytes_max };
        let sim = &mut self.nodes[index];
        let id = sim.id;
        let (mut driver, opened) = match sim.open(config, storage) {
            Ok(opened) => opened,
            Err(DriverError::Storage(_)) if sim.disk.has_failed_sync() => {
                // Start-up stops at a failed fsync, as the runtime does; a later restart retries.
                let loss = sim.fail_start(&mut self.rng_disk);
                t.note(|| format!("{id} failed to start (fsync failed), lost {} unsynced writes", loss.lost));
                return Ok(());
            }
            Err(error) => return Err(t.violation(Kind::Safety, Some(id), ("recovery", error.to_string()))),
        };
        driver.record();
        driver.set_session_limits(self.options.session_limits()).map_err(|error| {
            t.violation(
                Kind::Safety,
                Some(id),
                ("recovery", format!("rebuilding the session table: {error}")),
            )
        })?;
        if self.options.read_budget > 0 {
            driver.set_read_budget(self.options.read_budget);
        }
        if self.options.retain_entries > 0 {
            driver.set_retention(Retention { entries: Some(self.options.retain_entries), bytes: None });
        }
        #[cfg(feature = "bugs")]
        if let Some(crate::bugs::Planted::Driver(bug)) = self.options.planted() {
            driver.plant(bug);
        }
        // The whole log it started from (the core holds only its newest entries in memory).
        let (first, last) = (driver.node().first_index(), driver.node().last_index());
        let log = driver.read_entries(first, last, u64::MAX).map_err(|error| {
            t.violation(Kind::Safety, Some(id), ("recovery", format!("reading the recovered log: {error}")))
        })?;
        let node = driver.node();
        self.safety.on_start(index, id, node.snapshot(), &log, node.hard_state()).map_err(t.unsafe_at(id))?;
        let sim = &mut self.nodes[index];
        sim.start(driver);
        let monitor_bug = match self.options.planted() {
            Some(crate::bugs::Planted::Monitor(bug)) => Some(bug),
            _ => None,
        };
        sim.monitor = Some(NodeMonitor::new(id, &monitor_config, self.clock.at(t.now()), monitor_bug));
        let (life, period) = (sim.life(), sim.tick_period());
        if life > 1 {
            self.restarts += 1;
            let repaired = if opened.warnings.is_empty() { "" } else { ", cut a torn record" };
            t.note(|| format!("{id} restarted from disk ({} entries{repaired})", log.len()));
        }
        let first = rng_fault.random_range(1..=period);
        t.schedule(first, SimEvent::Tick { node: index, life });
        Ok(())
    }

    /// Stops node `index` if it runs; its disk keeps what was synced (and maybe some of the rest).
    pub(crate) fn crash(&mut self, index: usize, why: &str, t: &mut Timeline) {
        let sim = &mut self.nodes[index];
        let Some(loss) = sim.crash(&mut self.rng_disk) else {
            return;
        };
        let id = sim.id;
        self.crashes += 1;
        if loss.torn {
            self.coverage.torn_writes += 1;
        }
        t.note(|| {
            format!(
                "{id} {why}: kept {} unsynced writes, lost {}{}",
                loss.kept,
                loss.lost,
                if loss.torn { ", tore one" } else { "" }
            )
        });
    }

    /// True if node `index` paused now (it was up and running).
    pub(crate) fn pause(&mut self, index: usize) -> bool {
        self.nodes[index].pause()
    }

    /// Every paused node runs again and gets what it held.
    pub(crate) fn resume_all(&mut self, t: &mut Timeline) {
        for sim in &mut self.nodes {
            for event in sim.resume() {
                t.schedule(0, event);
            }
        }
    }

    /// Clock drift: node `index` (if it exists) ticks every `period` units.
    pub(crate) fn drift(&mut self, index: usize, period: u64) {
        if let Some(sim) = self.nodes.get_mut(index) {
            sim.set_tick_period(period);
        }
    }

    /// The end of the fault phase: disks stop failing, every node runs.
    pub(crate) fn heal(&mut self, rng_fault: &mut ChaCha8Rng, t: &mut Timeline) -> Result<(), Violation> {
        for sim in &self.nodes {
            sim.disk.calm();
        }
        self.resume_all(t);
        self.start_all(rng_fault, t)
    }

    /// A storage fault on synced data: the node stops, and its log loses a suffix (cut, or a
    /// flipped bit that `start --repair` will cut). Only a suffix that a majority of the voters
    /// of every configuration that could elect a leader hold durably (the node itself not
    /// counted, nor any node repairing) may go: Raft promises nothing for an entry that a
    /// majority no longer keeps, so the checks could not tell a bug from bad luck.
    pub(crate) fn damage(&mut self, index: usize, damage: Damage, t: &mut Timeline) {
        self.crash(index, "stopped for a storage fault", t);
        // The fault hits the last segment, counted in its records.
        let disk = &self.nodes[index].disk;
        let (Some((first, records)), Some((last_index, last_term))) =
            (disk.durable_last_segment(), disk.durable_log().last_entry().map(|e| (e.index, e.term)))
        else {
            return;
        };
        if records == 0 {
            return; // a segment just started: nothing synced to damage
        }
        // Every configuration that could elect a leader (the committed one, and the latest in
        // each node's log, in memory or on disk) must keep a majority of its voters holding it.
        let holds = |other: usize| {
            other != index
                && !self.nodes[other].is_repairing()
                && self.nodes[other].disk.durable_log().covers(last_index, last_term)
        };
        let mut configs = vec![self.safety.committed_membership().clone()];
        for sim in &self.nodes {
            if sim.is_up() {
                configs.push(self.safety.membership(sim.id).clone());
            }
            configs.push(self.safety.durable_membership(sim));
        }
        let id = self.nodes[index].id;
        let kept = configs.iter().all(|config| {
            let voters: Vec<NodeId> = config.voters().collect();
            let holders = voters.iter().filter(|voter| holds(voter.0 as usize - 1)).count();
            voters.is_empty() || holders >= crate::checker::majority(voters.len())
        });
        if !kept {
            t.note(|| format!("{id} storage fault skipped: its tail is not on a majority of the others"));
            return;
        }
        let disk = &self.nodes[index].disk;
        let what = match damage {
            Damage::LoseTail(count) => {
                let keep = records.saturating_sub(count as usize);
                disk.lose_records(keep);
                format!("lost its synced log after entry {}", first.0 - 1 + keep as u64)
            }
            Damage::Flip(count) => {
                let record = records.saturating_sub(count as usize);
                disk.flip_byte_in_record(record);
                format!("a bit flipped in entry {}", first.0 + record as u64)
            }
        };
        self.nodes[index].mark_damaged();
        self.safety.on_damage(index);
        self.coverage.storage_faults += 1;
        t.note(|| format!("{id} storage fault: {what}"));
    }

    // ---- what arrives at a node: the call to drive it with, if it runs ----

    /// A tick of this life: the next one is scheduled, even while paused.
    pub(crate) fn on_tick(&mut self, index: usize, life: u64, t: &mut Timeline) -> Option<Call> {
        let sim = &self.nodes[index];
        if !sim.lives(life) {
            return None;
        }
        t.schedule(sim.tick_period(), SimEvent::Tick { node: index, life });
        (!sim.is_paused()).then_some(Call::Step(Event::Tick))
    }

    /// A message the network delivers to node `index`, which is up.
    pub(crate) fn on_deliver(&mut self, index: usize, message: Message, replayed: bool) -> Option<Call> {
        let sim = &mut self.nodes[index];
        if sim.is_paused() {
            sim.hold(SimEvent::Deliver(message, replayed));
            return None;
        }
        self.safety.on_deliver(&message);
        Some(Call::Step(Event::Receive(message)))
    }

    /// The disk's background syncs completed, for this life.
    pub(crate) fn on_sync_done(&mut self, index: usize, life: u64, upto: u64) -> Option<Call> {
        let sim = &mut self.nodes[index];
        if !sim.lives(life) {
            return None;
        }
        if sim.is_paused() {
            sim.hold(SimEvent::SyncDone { node: index, life, upto });
            return None;
        }
        sim.on_synced(upto);
        Some(Call::Synced)
    }

    /// A client's attempt arrives at node `index`: a read is stepped at once, an append joins
    /// the round's batch (proposed by `on_flush`).
    pub(crate) fn on_request(&mut self, index: usize, attempt: Attempt, arrival: Arrival) -> Arrived {
        let sim = &mut self.nodes[index];
        if !sim.is_up() {
            return Arrived::Nothing; // lost; the client times out
        }
        if sim.is_paused() {
            sim.hold(SimEvent::ClientArrive { node: index, attempt, arrival });
            return Arrived::Nothing;
        }
        match arrival {
            Arrival::Read => {
                let request = RequestId(self.next_request);
                self.next_request += 1;
                Arrived::Step(Call::Step(self.nodes[index].frontend.read(attempt, request)))
            }
            arrival => Arrived::Batched { flush: sim.frontend.queue(attempt, arrival) },
        }
    }

    /// The end of the round in which appends arrived at node `index` (in its life `life`): the
    /// answers given at once, and the proposal to step if there is one.
    pub(crate) fn on_flush(&mut self, index: usize, life: u64) -> (Vec<(Attempt, Answer)>, Option<Call>) {
        let sim = &mut self.nodes[index];
        if !sim.lives(life) {
            return (Vec::new(), None);
        }
        if sim.is_paused() {
            sim.hold(SimEvent::ClientFlush { node: index, life });
            return (Vec::new(), None);
        }
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let (frontend, driver) = sim.serving().expect("node is up");
        let (event, answers) = frontend.take_proposal(driver, request, &mut self.admissions);
        (answers, event.map(Call::Step))
    }

    /// A follow reader asks node `index` for the committed commands from ID `from_id` on, from
    /// at most `entries_max` entries (as the server's `reading::commands_page` answers
    /// `ReadCommands`, which this mirrors: it is not public).
    pub(crate) fn follow_read(&mut self, index: usize, from_id: u64, entries_max: u64) -> FollowPage {
        let sim = &mut self.nodes[index];
        if sim.is_paused() {
            return FollowPage::Unavailable;
        }
        let Some(driver) = sim.driver_mut() else {
            return FollowPage::Unavailable;
        };
        let first_id = driver.first_command_id();
        if from_id < first_id {
            return FollowPage::Trimmed { first_id };
        }
        let commit = driver.node().commit();
        if commit <= driver.node().snapshot_meta().index {
            return FollowPage::Commands(Vec::new());
        }
        let from = driver.index_of_command(from_id);
        if from > commit {
            return FollowPage::Commands(Vec::new());
        }
        let to = commit.min(from.plus(entries_max.max(1) - 1));
        let Ok(entries) = driver.read_entries(from, to, u64::MAX) else {
            return FollowPage::Unavailable;
        };
        let mut commands = Vec::new();
        for entry in &entries {
            let first = driver.command_id(entry.index);
            for (id, command) in (first..).zip(entry.payload.commands()) {
                if id >= from_id {
                    commands.push((id, command.clone()));
                }
            }
        }
        FollowPage::Commands(commands)
    }

    /// An operator's request (a leadership transfer, a membership change) reaches node `index`: stepped if it runs,
    /// dropped if it is down or paused (the operator's command times out).
    pub(crate) fn on_operator(&mut self, index: usize, event: Event) -> Option<Call> {
        let sim = &self.nodes[index];
        (sim.is_up() && !sim.is_paused()).then_some(Call::Step(event))
    }

    // ---- a driver round, in the order the world runs it ----

    /// Runs a driver round on node `index`, tracing and checking every core step it took.
    /// Returns what it released, in order; nothing if the node is down or stopped for an fsync
    /// failure (then nothing the failed round released leaves).
    pub(crate) fn begin_round(
        &mut self,
        index: usize,
        call: Call,
        t: &mut Timeline,
    ) -> Result<Option<(Before, Vec<Output>)>, Violation> {
        let Some(node) = self.nodes[index].node() else {
            return Ok(None);
        };
        let before = Before {
            was_leader: node.is_leader(),
            term: node.term(),
            commit: node.commit(),
            marks: *node.marks(),
        };
        // The runtime syncs inline when its round was quiet, on the fsync thread otherwise.
        let inline = self.rng_disk.random_bool(0.5);
        let round = self.nodes[index].round(call, inline);
        Ok(self.finish(index, round, t)?.map(|outputs| (before, outputs)))
    }

    /// Node `index` trims its log if its retention policy says so, once what its round released
    /// was handled (as the runtime's server does). What it released, if it still runs.
    pub(crate) fn retain(
        &mut self,
        index: usize,
        t: &mut Timeline,
    ) -> Result<Option<Vec<Output>>, Violation> {
        let round = self.nodes[index].retain();
        self.finish(index, round, t)
    }

    /// Traces and checks every core step of a round, and stops the node if the round failed
    /// on a failed fsync. What the round released, unless the node stopped.
    fn finish(
        &mut self,
        index: usize,
        round: Round,
        t: &mut Timeline,
    ) -> Result<Option<Vec<Output>>, Violation> {
        let id = self.nodes[index].id;
        for step in round.steps {
            t.record_step(id, &step.event, &step.actions);
            self.safety
                .on_step(index, id, round.role, &step.event, &step.actions)
                .map_err(t.unsafe_at(id))?;
        }
        match round.ended {
            Ok(()) => {}
            Err(Failure::Driver(DriverError::Storage(_))) if self.nodes[index].disk.has_failed_sync() => {
                // The node stops: nothing the failed round released leaves.
                self.coverage.fsync_failures += 1;
                self.crash(index, "stopped after an fsync failure", t);
                return Ok(None);
            }
            Err(Failure::Driver(error)) => {
                return Err(t.violation(Kind::Safety, Some(id), ("driver", error.to_string())))
            }
            Err(Failure::Panic(message)) => {
                return Err(t.violation(Kind::Safety, Some(id), ("core invariant", message)))
            }
        }
        Ok(Some(round.outputs))
    }

    /// A message node `index` released may leave: what it vouches for is on its disk.
    pub(crate) fn check_send(&self, index: usize, message: &Message, t: &Timeline) -> Result<(), Violation> {
        let sim = &self.nodes[index];
        self.safety.on_send(sim, message).map_err(t.unsafe_at(sim.id))
    }

    /// Node `index` applied these entries: the answers to the session requests that waited
    /// for them.
    pub(crate) fn on_apply(&mut self, index: usize, entries: &[Entry]) -> Vec<(Attempt, Answer)> {
        let sim = &mut self.nodes[index];
        sim.on_applied(entries.len() as u64);
        let (frontend, driver) = sim.serving().expect("node is up");
        frontend.on_applied(entries, driver)
    }

    /// Whether node `index`'s frontend waits for this reply (else it is the operator's).
    pub(crate) fn serves(&self, index: usize, request: RequestId) -> bool {
        self.nodes[index].frontend.owns(request)
    }

    /// Node `index`'s core replied to its frontend; `read_len` is what a read sees.
    pub(crate) fn on_client_reply(
        &mut self,
        index: usize,
        reply: &Reply,
        read_len: u64,
    ) -> Vec<(Attempt, Answer)> {
        let (frontend, driver) = self.nodes[index].serving().expect("node is up");
        frontend.on_reply(reply, read_len, driver)
    }

    /// Node `index` handled what it released: its frontend lets go of the clients waiting for
    /// entries it will not apply as leader.
    pub(crate) fn release_waiters(&mut self, index: usize) -> Vec<(Attempt, Answer)> {
        let (frontend, driver) = self.nodes[index].serving().expect("node is up");
        frontend.release_waiters(driver)
    }

    /// Node `index` replaced its state machine with a snapshot through `meta.index`.
    pub(crate) fn on_restored(&mut self, index: usize, meta: SnapshotMeta) {
        self.nodes[index].on_restored(meta.index.0);
    }

    /// A reply node `index` released may go to its client; returns how much of the log the node
    /// applied, which is what a read sees.
    pub(crate) fn check_reply(
        &mut self,
        index: usize,
        reply: &Reply,
        t: &Timeline,
    ) -> Result<u64, Violation> {
        let sim = &self.nodes[index];
        self.safety.on_reply(sim.id, reply).map_err(t.unsafe_at(sim.id))?;
        Ok(sim.applied_len())
    }

    /// The checks after node `index`'s round, given what it applied. True if it won an election.
    pub(crate) fn end_round(
        &mut self,
        index: usize,
        before: Before,
        applied: &[Vec<Entry>],
        t: &Timeline,
    ) -> Result<bool, Violation> {
        let node = self.nodes[index].node().expect("node is up");
        let id = node.id();
        let became_leader = node.is_leader() && (!before.was_leader || node.term() != before.term);
        let commit_moved = node.is_leader() && node.commit() > before.commit;
        self.coverage.add(&before.marks, node.marks());
        self.safety
            .after_round(&self.nodes, index, became_leader, commit_moved, applied)
            .map_err(t.unsafe_at(id))?;
        if became_leader {
            self.leader_changes += 1;
        }
        self.safety.check_durable_commit(index, &self.nodes[index]).map_err(t.unsafe_at(id))?;
        // A session's request applied twice: a duplicate in the log, which admission exists to
        // prevent (§6.3).
        let duplicates = self.nodes[index].driver().expect("node is up").duplicates_applied();
        if duplicates > 0 {
            let broken = (
                "exactly once",
                format!("{id} applied {duplicates} session request(s) that had committed before"),
            );
            return Err(t.unsafe_at(id)(broken));
        }
        Ok(became_leader)
    }

    // ---- the health monitors, fed as the server feeds them ----

    /// Node `index` stepped a message of `term` from `from`.
    pub(crate) fn heard(&mut self, index: usize, from: NodeId, term: Term, now: u64) {
        let at = self.clock.at(now);
        if let Some((driver, monitor)) = self.nodes[index].monitored() {
            monitor.heard(driver.node(), from, term, at);
        }
    }

    /// Node `index` finished a round: its view of the leadership.
    pub(crate) fn note_leadership(&mut self, index: usize) {
        if let Some((driver, monitor)) = self.nodes[index].monitored() {
            monitor.leadership(driver.node());
        }
    }

    /// Node `index` ticked: its monitor publishes.
    pub(crate) fn publish(&mut self, index: usize, now: u64) {
        let at = self.clock.at(now);
        if let Some((driver, monitor)) = self.nodes[index].monitored() {
            monitor.publish(driver, at);
        }
    }

    /// Node `index`'s health verdicts now (none if it is down).
    pub(crate) fn health_verdicts(
        &mut self,
        index: usize,
        now: u64,
    ) -> Vec<(&'static str, Result<(), String>)> {
        let at = self.clock.at(now);
        match self.nodes[index].monitored() {
            Some((driver, monitor)) => monitor.verdicts(driver, at).to_vec(),
            None => Vec::new(),
        }
    }

    /// Background syncs the driver asked for complete after the disk's latency.
    pub(crate) fn schedule_sync(&mut self, index: usize, t: &mut Timeline) {
        let sim = &mut self.nodes[index];
        let Some(upto) = sim.sync_due() else {
            return;
        };
        let life = sim.life();
        let delay = self.rng_disk.random_range(1..=self.options.sync_latency_max);
        t.schedule(delay, SimEvent::SyncDone { node: index, life, upto });
    }
}
