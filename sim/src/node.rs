//! One simulated node: the runtime's driver (the core and the real storage code) on a
//! simulated disk, and the mechanics of its lives: start from disk, crash, pause and resume,
//! and one round of the driver.

use crate::checker::LogView;
use crate::disk::{CrashLoss, SimDisk, SimFs, DATA_DIR};
use crate::frontend::Frontend;
use crate::health::NodeMonitor;
use crate::timeline::SimEvent;
use rand_chacha::ChaCha8Rng;
use replog_core::{Config, Event, LogIndex, Node, NodeId, Term};
use replog_runtime::driver::{Driver, DriverError, Opened, Output, Stepped};
use replog_runtime::storage::{Identity, OnCorruption, StorageOptions};
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static IN_CORE_STEP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while this thread runs `Node::step`: a panic there is a caught, reported violation, so
/// a panic hook may stay quiet about it.
pub fn in_core_step() -> bool {
    IN_CORE_STEP.with(|flag| flag.get())
}

/// What a driver call does before the round ends.
pub(crate) enum Call {
    Step(Event),
    /// Background syncs completed.
    Synced,
}

/// How a driver round ended, when it did not end well.
pub(crate) enum Failure {
    Driver(DriverError),
    /// The core panicked (its invariant assertions): the panic's message.
    Panic(String),
}

/// What one driver round produced.
pub(crate) struct Round {
    pub(crate) ended: Result<(), Failure>,
    /// Messages, applied entries and client replies, in the order the driver released them.
    pub(crate) outputs: Vec<Output>,
    /// Every core step the round took, with its actions.
    pub(crate) steps: Vec<Stepped>,
    /// Leader or not, and the term, at the end of the round.
    pub(crate) role: (bool, Term),
}

pub(crate) struct SimNode {
    pub(crate) id: NodeId,
    driver: Option<Driver<SimFs>>,
    /// Bumped at every crash and restart; events of an old life are ignored.
    life: u64,
    pub(crate) disk: SimDisk,
    paused: bool,
    /// What arrived while paused, delivered at the resume.
    held: Vec<SimEvent>,
    tick_period: u64,
    /// A completion of the disk's background syncs is scheduled.
    sync_scheduled: bool,
    /// Entries applied so far (the log is the state machine).
    applied_len: u64,
    /// A storage fault hit its disk: a damaged record is cut at the next start, as an
    /// operator's `start --repair` would.
    damaged: bool,
    /// Its clients' connections: they die with the process.
    pub(crate) frontend: Frontend,
    /// Its health monitor: it dies with the process too.
    pub(crate) monitor: Option<NodeMonitor>,
}

impl SimNode {
    pub(crate) fn new(id: NodeId, disk: SimDisk, tick_period: u64) -> SimNode {
        SimNode {
            id,
            driver: None,
            life: 0,
            disk,
            paused: false,
            held: Vec::new(),
            tick_period,
            sync_scheduled: false,
            applied_len: 0,
            damaged: false,
            frontend: Frontend::default(),
            monitor: None,
        }
    }

    pub(crate) fn node(&self) -> Option<&Node> {
        self.driver.as_ref().map(Driver::node)
    }

    /// The driver of a running node.
    pub(crate) fn driver(&self) -> Option<&Driver<SimFs>> {
        self.driver.as_ref()
    }

    pub(crate) fn driver_mut(&mut self) -> Option<&mut Driver<SimFs>> {
        self.driver.as_mut()
    }

    /// The driver and the health monitor of a running node, together.
    pub(crate) fn monitored(&mut self) -> Option<(&Driver<SimFs>, &mut NodeMonitor)> {
        Some((self.driver.as_ref()?, self.monitor.as_mut()?))
    }

    /// The frontend and the driver of a running node, together.
    pub(crate) fn serving(&mut self) -> Option<(&mut Frontend, &mut Driver<SimFs>)> {
        Some((&mut self.frontend, self.driver.as_mut()?))
    }

    pub(crate) fn is_up(&self) -> bool {
        self.driver.is_some()
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    pub(crate) fn life(&self) -> u64 {
        self.life
    }

    /// Up, and still in this life.
    pub(crate) fn lives(&self, life: u64) -> bool {
        self.life == life && self.is_up()
    }

    pub(crate) fn tick_period(&self) -> u64 {
        self.tick_period
    }

    /// Clock drift: ticks come every `period` units from now on.
    pub(crate) fn set_tick_period(&mut self, period: u64) {
        self.tick_period = period.max(1);
    }

    pub(crate) fn applied_len(&self) -> u64 {
        self.applied_len
    }

    pub(crate) fn on_applied(&mut self, entries: u64) {
        self.applied_len += entries;
    }

    /// The state machine restarted from a snapshot through `index`.
    pub(crate) fn on_restored(&mut self, index: u64) {
        self.applied_len = self.applied_len.max(index);
    }

    /// A new life begins: its events are the only ones that count from now on.
    pub(crate) fn begin_life(&mut self) {
        self.life += 1;
    }

    /// Opens the storage and the core on it, as `replog start` does. After
    /// a storage fault the operator starts it with `--repair`; otherwise damage is refused.
    pub(crate) fn open(
        &mut self,
        config: Config,
        storage: StorageOptions,
    ) -> Result<(Driver<SimFs>, Opened), DriverError> {
        let identity = Identity { name: self.id.to_string(), address: format!("sim:{}", self.id.0) };
        let fs = SimFs::new(&self.disk);
        let on_corruption = if self.damaged { OnCorruption::Repair } else { OnCorruption::Refuse };
        let dir = std::path::Path::new(DATA_DIR);
        Driver::open_with_options(config, fs, dir, identity, on_corruption, storage)
    }

    /// A start that stopped at a failed fsync, as the runtime does: the disk loses what was
    /// not synced, and this life is over before it began.
    pub(crate) fn fail_start(&mut self, rng_disk: &mut ChaCha8Rng) -> CrashLoss {
        let loss = self.disk.crash(rng_disk);
        self.life += 1;
        loss
    }

    /// Runs the opened driver. What was committed before the restart is applied already.
    pub(crate) fn start(&mut self, driver: Driver<SimFs>) {
        self.applied_len = driver.node().applied().0;
        self.driver = Some(driver);
        self.damaged = false;
        self.sync_scheduled = false;
        self.frontend = Frontend::default();
    }

    /// Stops the node; its disk keeps what was synced (and maybe part of the rest). `None` if
    /// it was down already.
    pub(crate) fn crash(&mut self, rng_disk: &mut ChaCha8Rng) -> Option<CrashLoss> {
        self.driver.take()?;
        let loss = self.disk.crash(rng_disk);
        self.life += 1;
        self.paused = false;
        self.held.clear();
        self.sync_scheduled = false;
        self.frontend = Frontend::default();
        self.monitor = None;
        Some(loss)
    }

    /// A storage fault hit the disk: start with `--repair` next time.
    pub(crate) fn mark_damaged(&mut self) {
        self.damaged = true;
    }

    /// True if it paused now (it was up and running).
    pub(crate) fn pause(&mut self) -> bool {
        if !self.is_up() || self.paused {
            return false;
        }
        self.paused = true;
        true
    }

    /// Keeps an event that arrived while paused.
    pub(crate) fn hold(&mut self, event: SimEvent) {
        self.held.push(event);
    }

    /// Runs again; returns what it held, to deliver now.
    pub(crate) fn resume(&mut self) -> Vec<SimEvent> {
        if !self.paused {
            return Vec::new();
        }
        self.paused = false;
        std::mem::take(&mut self.held)
    }

    /// One round of the runtime's driver, as its event loop runs it: the call, then one sync
    /// request for everything written (inline if `inline`), then whatever completed syncs
    /// release. Trimming waits for [`SimNode::retain`], once what the round released is handled
    /// (replies name command IDs, which need the entries they count from). A panic of the core
    /// is caught and returned.
    pub(crate) fn round(&mut self, call: Call, inline: bool) -> Round {
        self.run(|driver| {
            if let Call::Step(event) = call {
                driver.step(event)?;
            }
            driver.end_round(inline)?;
            driver.on_synced()
        })
    }

    /// Snapshots and trims the log if the retention policy says it is time, as the runtime's
    /// server does after handling what a round released.
    pub(crate) fn retain(&mut self) -> Round {
        self.run(Driver::retain)
    }

    fn run(&mut self, work: impl FnOnce(&mut Driver<SimFs>) -> Result<(), DriverError>) -> Round {
        let driver = self.driver.as_mut().expect("node is up");
        IN_CORE_STEP.with(|flag| flag.set(true));
        let outcome = catch_unwind(AssertUnwindSafe(|| work(driver)));
        IN_CORE_STEP.with(|flag| flag.set(false));
        let mut outputs = Vec::new();
        driver.take_output(&mut outputs);
        let steps = driver.take_recorded();
        let role = (driver.node().is_leader(), driver.node().term());
        let ended = match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Failure::Driver(error)),
            Err(panic) => Err(Failure::Panic(
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into()),
            )),
        };
        Round { ended, outputs, steps, role }
    }

    /// Syncs the driver asked for and that no scheduled completion covers yet: up to where.
    /// The caller schedules their completion.
    pub(crate) fn sync_due(&mut self) -> Option<u64> {
        let upto = self.disk.requested()?;
        if self.sync_scheduled || !self.is_up() {
            return None;
        }
        self.sync_scheduled = true;
        Some(upto)
    }

    /// Background syncs up to `upto` completed.
    pub(crate) fn on_synced(&mut self, upto: u64) {
        self.sync_scheduled = false;
        self.disk.complete_syncs(upto);
    }

    /// True if the node is (or, restarted, would be) repairing lost committed entries: it
    /// neither votes nor campaigns.
    pub(crate) fn is_repairing(&self) -> bool {
        match self.node() {
            Some(node) => node.is_repairing(),
            None => {
                let last = self.disk.durable_last().1;
                self.disk.durable_hard_state().commit > last || self.disk.durable_repair_to() > last
            }
        }
    }

    /// Whether this node holds entry `index` of term `term`, on disk and in memory (its
    /// configurations are the checker's to fill in).
    pub(crate) fn log_view(&self, index: LogIndex, term: Term) -> LogView {
        let durable = self.disk.durable_last();
        let durable_has = self.disk.durable_log().covers(index, term);
        let memory = self.node().map(|n| {
            // A snapshot covers committed entries only: it holds the committed `index`.
            let held = n.term_at(index) == Some(term) || index <= n.snapshot_meta().index;
            ((n.last_term(), n.last_index()), held)
        });
        LogView {
            id: self.id,
            durable,
            durable_has,
            memory,
            repairing: self.is_repairing(),
            durable_voters: Vec::new(),
            memory_voters: None,
            durable_campaigns: false,
            memory_campaigns: false,
        }
    }
}
