//! The driver: everything between the core and the outside world that decides durability,
//! with no sockets, clock or threads of its own. The runtime's event loop runs it on real files
//! and the simulator runs the very same code on its simulated disk.
//!
//! It carries out the core's actions in order (the contract in `replog_core`'s crate doc):
//! storage actions go to [`Storage`] at once (buffered; moving a write earlier is always safe).
//! An `Action::Sync` sets a barrier: every later send, reply and apply waits, in order, until a
//! sync covering everything written before the barrier has completed. Group commit: the caller
//! runs many steps, then [`Driver::end_round`] asks for one sync of everything they wrote; when
//! syncs complete, [`Driver::on_synced`] releases what waited and tells the core how far its log
//! is durable (`Event::LogPersisted`). Released actions wait in [`Driver::output`] for the caller
//! to hand them to the network and clients.
//!
//! So a leader's AppendEntries leave while its own write is being synced (dissertation
//! §10.2.1), the caller keeps serving while the disk works, and no vote, vote request or
//! acknowledgement leaves before the state it vouches for is on disk.

use crate::command_ids::CommandIds;
use crate::fs::FileSystem;
use crate::image::Image;
use crate::retention::Retention;
use crate::sessions::{Outcome, SessionLimits, SessionRefusal, SessionTable, Verdict};
use crate::storage::{Identity, OnCorruption, Storage, StorageError, StorageOptions};
use replog_core::{
    Action, Bytes, ClientId, ClientRequest, Config, Entry, Event, LogIndex, Membership, Message, Node,
    Payload, Recovered, Reply, Snapshot, SnapshotMeta, StartError, Term,
};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::Path;

/// What the driver has released for the caller, in the order the core produced it.
#[derive(Debug)]
pub enum Output {
    /// Send this message to its peer.
    Send(Message),
    /// Answer this client request.
    Reply(Reply),
    /// These entries are committed, in order.
    Apply(Vec<Entry>),
    /// The state machine was replaced by a leader's snapshot through this entry; the next
    /// `Apply` continues after it.
    Restored(SnapshotMeta),
}

/// Why the driver stopped. Either way the node must stop: after a storage error nothing more
/// may be written or acknowledged.
#[derive(Debug)]
pub enum DriverError {
    /// Reading, writing or syncing the data folder failed, or it holds bad data.
    Storage(StorageError),
    /// The recovered state does not make a valid node.
    Start(StartError),
    /// A snapshot's state-machine image could not be read (a snapshot from an incompatible
    /// version, or damaged before its checksum was taken).
    Image(String),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Storage(error) => write!(f, "storage: {error}"),
            DriverError::Start(error) => write!(f, "recovered state: {error}"),
            DriverError::Image(why) => write!(f, "snapshot: {why}"),
        }
    }
}

impl std::error::Error for DriverError {}

impl From<StorageError> for DriverError {
    fn from(error: StorageError) -> DriverError {
        DriverError::Storage(error)
    }
}

/// What start-up found in the data folder.
#[derive(Debug)]
pub struct Opened {
    /// Repairs made (a torn tail cut off), for the log.
    pub warnings: Vec<String>,
    /// Entries recovered.
    pub entries: u64,
    /// No term and no entries: a node that has never been part of a cluster.
    pub fresh: bool,
}

/// One core step as the driver saw it (recorded for the simulator's checks and trace).
#[derive(Clone, Debug)]
pub struct Stepped {
    /// The event stepped.
    pub event: Event,
    /// The actions the core returned, in order.
    pub actions: Vec<Action>,
}

/// A client session's append as the client sent it (see `sessions.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionAppend {
    /// The session.
    pub client: ClientId,
    /// The request's number in it; a retry carries the same.
    pub seq: u64,
    /// The commit index the client saw before it first sent this request (0 if it saw none).
    pub since: LogIndex,
    /// Append only if the log's last command ID is this when the entry is appended (and so when
    /// it commits: the log before it is then exactly the leader's).
    pub expect_last: Option<u64>,
    /// The commands, appended as one entry.
    pub commands: Vec<Bytes>,
}

/// What [`Driver::admit`] decided for one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// New: propose this payload (with the others, in order).
    Propose(Payload),
    /// Committed already: its outcome.
    Committed(Outcome),
    /// In the log, not applied yet: it has the outcome of the entry at this index, once that
    /// is applied and is still this request (a new leader may have replaced it: then retry).
    InLog(LogIndex),
    /// The same request as the append at this position of the batch: the same answer.
    SameAs(usize),
    /// Refused; nothing appended.
    Refused(SessionRefusal),
}

/// Deliberate driver bugs, for the simulator's evidence that it catches them. They can be
/// planted only in builds with the `bugs` feature; otherwise the checks compile away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverBug {
    /// Sends and replies are released without waiting for the sync before them.
    ReleaseBeforeSync,
    /// `LogPersisted` reports the log as written, not as synced.
    PersistedBeforeSync,
    /// A `Sync` waits only for what was handed to the OS, not for the writes still buffered
    /// (an off-by-one in the barrier).
    BarrierMissesBuffered,
    /// Retention snapshots through the log's last entry instead of the applied one: a
    /// snapshot over entries that are not committed.
    SnapshotUncommitted,
    /// The session table is not rebuilt when the node restarts: it starts empty.
    SessionsNotRestored,
    /// Sessions are deduplicated on the sequence number alone, not on (session, number).
    DedupOnSeqAlone,
}

impl DriverBug {
    /// Every driver bug.
    pub const ALL: [DriverBug; 6] = [
        DriverBug::ReleaseBeforeSync,
        DriverBug::PersistedBeforeSync,
        DriverBug::BarrierMissesBuffered,
        DriverBug::SnapshotUncommitted,
        DriverBug::SessionsNotRestored,
        DriverBug::DedupOnSeqAlone,
    ];

    /// The bug's name on command lines.
    pub fn name(self) -> &'static str {
        match self {
            DriverBug::ReleaseBeforeSync => "release-before-sync",
            DriverBug::PersistedBeforeSync => "persisted-before-sync",
            DriverBug::BarrierMissesBuffered => "barrier-misses-buffered",
            DriverBug::SnapshotUncommitted => "snapshot-uncommitted",
            DriverBug::SessionsNotRestored => "sessions-not-restored",
            DriverBug::DedupOnSeqAlone => "dedup-on-seq-alone",
        }
    }

    /// The bug with this name.
    pub fn from_name(name: &str) -> Option<DriverBug> {
        DriverBug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

/// The core, its storage, and the actions waiting for a sync.
#[derive(Debug)]
pub struct Driver<F: FileSystem> {
    node: Node,
    storage: Storage<F>,
    /// Actions waiting, in order, for the sync of the write seq they are tagged with.
    /// Invariant: tags never decrease from front to back.
    deferred: VecDeque<(u64, Action)>,
    /// The write seq the latest `Sync` waits for.
    barrier: u64,
    /// Released actions, for the caller.
    output: Vec<Output>,
    /// Command IDs of the log after the snapshot.
    ids: CommandIds,
    /// The state machine's image at the snapshot the log starts after.
    base_image: Image,
    /// The session table at the snapshot the log starts after, and as of `applied`.
    base_sessions: SessionTable,
    sessions: SessionTable,
    /// Session requests in the log after `applied`: where each is, and the reverse.
    in_log: BTreeMap<(ClientId, u64), LogIndex>,
    in_log_at: BTreeMap<LogIndex, (ClientId, u64)>,
    /// Session requests applied that were committed already (a duplicate in the log: a bug).
    duplicates_applied: u64,
    /// Where recovery found the log's session requests (spans after the snapshot): what a
    /// rebuild of the table at the open reads.
    request_spans: Vec<(LogIndex, LogIndex)>,
    /// How far the released `Apply`s (and snapshots) have brought the state machine.
    applied: LogIndex,
    /// When to snapshot and trim.
    retention: Retention,
    /// Bytes (`Entry::size_bytes`) of the applied entries after the snapshot: a cheap test of
    /// whether retention has anything to do.
    held_bytes: u64,
    /// The applied index when retention last read the held entries.
    retain_checked: LogIndex,
    /// `Event::LogRead`s to step once the current step's actions are carried out.
    log_reads: VecDeque<Event>,
    /// Entry bytes read from disk for the core this round (`Action::ReadLog`), and the most
    /// a round reads before leaving further reads for the next.
    read_bytes_this_round: u64,
    read_bytes_per_round_max: u64,
    /// `Action::ReadLog`s past this round's budget, carried out at the end of the round.
    pending_reads: VecDeque<Action>,
    /// Every core step, when recording (the simulator).
    recorded: Option<Vec<Stepped>>,
    #[cfg(feature = "bugs")]
    bug: Option<DriverBug>,
}

/// Entry bytes the driver reads from disk for the core in one round before it leaves further
/// reads for the next round (`end_round`): a bound on how long catching up a follower holds the
/// event loop (a few 1 MiB reads, some milliseconds each).
const READ_BYTES_PER_ROUND_MAX: u64 = 4 * 1024 * 1024;

impl<F: FileSystem> Driver<F> {
    /// Opens the data folder on `fs`, recovers it, and starts the core on what it holds.
    pub fn open(
        config: Config,
        fs: F,
        dir: &Path,
        identity: Identity,
    ) -> Result<(Driver<F>, Opened), DriverError> {
        Driver::open_with(config, fs, dir, identity, OnCorruption::Refuse)
    }

    /// As `open`, doing `on_corruption` with a damaged record before the log's tail.
    pub fn open_with(
        config: Config,
        fs: F,
        dir: &Path,
        identity: Identity,
        on_corruption: OnCorruption,
    ) -> Result<(Driver<F>, Opened), DriverError> {
        Driver::open_with_options(config, fs, dir, identity, on_corruption, StorageOptions::default())
    }

    /// As `open_with`, with the storage laid out as `options` says.
    pub fn open_with_options(
        config: Config,
        fs: F,
        dir: &Path,
        identity: Identity,
        on_corruption: OnCorruption,
        options: StorageOptions,
    ) -> Result<(Driver<F>, Opened), DriverError> {
        let (mut storage, mut recovery) =
            Storage::open_with_options(fs, dir, identity, on_corruption, options)?;
        let base = recovery.snapshot.as_ref().map_or(LogIndex::ZERO, |snapshot| snapshot.meta.index);
        // The log is the state machine: everything committed before the restart is applied.
        let applied = recovery.hard_state.commit.max(base);
        // The core starts with the terms of the whole log and the entries of the last segment,
        // plus any older ones not yet applied (it must hold those); older entries stay on disk
        // until a follower or a query needs them.
        let tail_first = recovery.entries.first().map_or(recovery.last_index.next(), |entry| entry.index);
        let from = applied.next().min(tail_first).max(base.next());
        if from < tail_first {
            let mut older = storage.read_entries(from, tail_first.prev(), u64::MAX)?;
            older.append(&mut recovery.entries);
            recovery.entries = older;
        }
        if recovery.entries.is_empty() && recovery.last_index > base {
            // The last segment had just started (a crash right after a roll): the core still
            // needs the last entry.
            recovery.entries = storage.read_entries(recovery.last_index, recovery.last_index, u64::MAX)?;
        }
        let fresh = recovery.hard_state.term.0 == 0
            && recovery.last_index == LogIndex::ZERO
            && recovery.snapshot.is_none();
        let entries = recovery.last_index.0 - base.0;
        let limits = SessionLimits::default();
        let (base_image, base_sessions) = match &recovery.snapshot {
            Some(snapshot) => (
                Image::decode(snapshot.data.as_slice()).map_err(DriverError::Image)?,
                Image::decode_sessions(snapshot.data.as_slice(), limits).map_err(DriverError::Image)?,
            ),
            None => (Image::empty(), SessionTable::new(limits)),
        };
        let ids = CommandIds::new(base, base_image.commands, &recovery.noops, &recovery.batches);
        let unapplied: u64 =
            recovery.entries.iter().filter(|e| e.index > applied).map(Entry::size_bytes).sum();
        let held_bytes = recovery.entry_bytes.saturating_sub(unapplied);
        let repair_to = recovery.repair_to;
        // Configuration entries are among the entries that are no command; those older than
        // the tail the core gets are read one by one (few: one per election or change).
        let tail_from = recovery.entries.first().map_or(LogIndex(u64::MAX), |entry| entry.index);
        let mut configs = Vec::new();
        for &index in recovery.noops.iter().filter(|&&index| index > base && index < tail_from) {
            for entry in storage.read_entries(index, index, 0)? {
                if let Payload::Config(membership) = entry.payload {
                    configs.push((entry.index, membership));
                }
            }
        }
        let recovered = Recovered {
            configs,
            hard_state: recovery.hard_state,
            snapshot: recovery.snapshot,
            entries: recovery.entries,
            partial: recovery.partial,
            term_runs: recovery.term_runs,
            applied,
            repair_to,
        };
        let node = Node::new(config, recovered).map_err(DriverError::Start)?;
        let applied = node.applied();
        let mut driver = Driver {
            node,
            storage,
            deferred: VecDeque::new(),
            barrier: 0,
            output: Vec::new(),
            ids,
            base_image,
            sessions: base_sessions.clone(),
            base_sessions,
            in_log: BTreeMap::new(),
            in_log_at: BTreeMap::new(),
            duplicates_applied: 0,
            request_spans: std::mem::take(&mut recovery.request_spans),
            applied,
            retention: Retention::default(),
            held_bytes,
            retain_checked: LogIndex::ZERO,
            log_reads: VecDeque::new(),
            read_bytes_this_round: 0,
            read_bytes_per_round_max: READ_BYTES_PER_ROUND_MAX,
            pending_reads: VecDeque::new(),
            recorded: None,
            #[cfg(feature = "bugs")]
            bug: None,
        };
        driver.restore_sessions()?;
        Ok((driver, Opened { warnings: recovery.warnings, entries, fresh }))
    }

    /// The session table as of the applied index: the snapshot's, then every session request
    /// applied since, and the requests in the log after it. Only the segments that hold
    /// requests are read back (a log without sessions costs nothing; with sessions, the cost
    /// grows with the entries since the last snapshot, which retention bounds).
    fn restore_sessions(&mut self) -> Result<(), DriverError> {
        self.in_log.clear();
        self.in_log_at.clear();
        let base = self.node.snapshot_meta().index;
        let mut sessions = self.base_sessions.clone();
        let (ids, mut duplicates) = (self.ids.clone(), 0);
        let (applied, last) = (self.applied, self.node.last_index());
        let mut requests = Vec::new();
        for (first, to) in self.request_spans.clone() {
            let (first, to) = (first.max(base.next()), to.min(last));
            self.scan(first, to, |entry| {
                let Payload::Request(request) = &entry.payload else {
                    return;
                };
                if entry.index > applied {
                    requests.push((entry.index, request.client, request.seq));
                } else if !sessions.apply(entry, ids.first_id(entry.index)) {
                    duplicates += 1;
                }
            })?;
        }
        self.sessions = sessions;
        self.duplicates_applied += duplicates;
        if self.has_bug(DriverBug::SessionsNotRestored) {
            self.sessions = SessionTable::new(self.sessions.limits());
            return Ok(());
        }
        for (index, client, seq) in requests {
            self.in_log.insert((client, seq), index);
            self.in_log_at.insert(index, (client, seq));
        }
        Ok(())
    }

    /// Keeps sessions within `limits` (the simulator draws small ones). Call it right after
    /// the open, before any step: the table is rebuilt under them, so a node that restarted
    /// builds the same table as one that did not.
    pub fn set_session_limits(&mut self, limits: SessionLimits) -> Result<(), DriverError> {
        self.base_sessions.set_limits(limits);
        self.sessions.set_limits(limits);
        self.restore_sessions()
    }

    /// Sessions in the table (as of the applied index).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Session requests applied that were committed already: a duplicate in the log, which
    /// `admit` exists to prevent (0 unless something is broken).
    pub fn duplicates_applied(&self) -> u64 {
        self.duplicates_applied
    }

    /// Screens a round's session appends, in order, before they are proposed (`sessions.rs`
    /// says why this is sound): each is new (propose it), committed already, in the log, the
    /// same as an earlier one of the batch, or refused. A node that does not lead admits
    /// everything: the core answers that it does not lead. The admitted payloads must be
    /// proposed at once, in order, before anything else: conditions (`expect_last`) were
    /// checked against the log's end.
    pub fn admit(&self, appends: &[SessionAppend]) -> Vec<Admission> {
        let node = &self.node;
        let to_propose = |append: &SessionAppend| {
            Admission::Propose(Payload::Request(ClientRequest {
                client: append.client,
                seq: append.seq,
                commands: append.commands.clone(),
            }))
        };
        if !node.is_leader() {
            return appends.iter().map(to_propose).collect();
        }
        // The barrier: until an entry of its term commits, entries outside its log may commit.
        if node.term_at(node.commit()) != Some(node.term()) {
            return appends.iter().map(|_| Admission::Refused(SessionRefusal::NotReady)).collect();
        }
        let on_seq_alone = self.has_bug(DriverBug::DedupOnSeqAlone);
        let mut next_id = self.ids.first_id(node.last_index().next());
        let mut batch: BTreeMap<(ClientId, u64), usize> = BTreeMap::new();
        let mut admissions = Vec::with_capacity(appends.len());
        for (position, append) in appends.iter().enumerate() {
            let key = (append.client, append.seq);
            let in_log = if on_seq_alone {
                self.in_log.iter().find(|((_, seq), _)| *seq == append.seq).map(|(_, &index)| index)
            } else {
                self.in_log.get(&key).copied()
            };
            let admission = if let Some(&earlier) = batch.get(&key) {
                Admission::SameAs(earlier)
            } else if let Some(index) = in_log {
                Admission::InLog(index)
            } else {
                match self.sessions.check(append.client, append.seq, append.since, on_seq_alone) {
                    Verdict::Committed(outcome) => Admission::Committed(outcome),
                    Verdict::Refused(SessionRefusal::SessionsDropped { .. }) => {
                        Admission::Refused(SessionRefusal::SessionsDropped { commit: node.commit().0 })
                    }
                    Verdict::Refused(refusal) => Admission::Refused(refusal),
                    Verdict::New => match append.expect_last {
                        Some(expected) if expected != next_id - 1 => {
                            Admission::Refused(SessionRefusal::ConditionFailed { last_id: next_id - 1 })
                        }
                        _ => {
                            batch.insert(key, position);
                            next_id += append.commands.len() as u64;
                            to_propose(append)
                        }
                    },
                }
            };
            admissions.push(admission);
        }
        admissions
    }

    /// Snapshots and trims the log by this policy from now on.
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// Records every core step from now on (see [`Driver::take_recorded`]).
    pub fn record(&mut self) {
        self.recorded = Some(Vec::new());
    }

    /// The core steps since the last call, when recording.
    pub fn take_recorded(&mut self) -> Vec<Stepped> {
        self.recorded.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Switches on a deliberate bug.
    #[cfg(feature = "bugs")]
    pub fn plant(&mut self, bug: DriverBug) {
        self.bug = Some(bug);
        if bug == DriverBug::SessionsNotRestored {
            // Planted right after the open: as if it had not rebuilt the table.
            self.sessions = SessionTable::new(self.sessions.limits());
            self.in_log.clear();
            self.in_log_at.clear();
        }
    }

    #[cfg(feature = "bugs")]
    fn has_bug(&self, bug: DriverBug) -> bool {
        self.bug == Some(bug)
    }

    #[cfg(not(feature = "bugs"))]
    fn has_bug(&self, _bug: DriverBug) -> bool {
        false
    }

    /// Steps the core and carries out its actions.
    pub fn step(&mut self, event: Event) -> Result<(), DriverError> {
        if matches!(event, Event::Tick) {
            self.storage.on_tick()?;
        }
        let recorded_event = self.recorded.is_some().then(|| event.clone());
        let actions = self.node.step(event);
        if let (Some(recorded), Some(event)) = (self.recorded.as_mut(), recorded_event) {
            recorded.push(Stepped { event, actions: actions.clone() });
        }
        for action in actions {
            self.carry_out(action)?;
        }
        // Entries read from disk for the core go back in after the step's other actions.
        while let Some(event) = self.log_reads.pop_front() {
            self.step(event)?;
        }
        Ok(())
    }

    /// Entries `from..=to` from memory or, once evicted, from the log files; stops once
    /// `bytes_max` (`Entry::size_bytes`) is passed, the first entry always included. Nothing
    /// before the snapshot (an error naming the first index held).
    pub fn read_entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let to = to.min(self.node.last_index());
        if from > to {
            return Ok(Vec::new());
        }
        if from >= self.node.cached_from() {
            return Ok(self.node.entries_within(from, to, bytes_max));
        }
        self.storage.read_entries(from, to, bytes_max)
    }

    /// Every entry `from..=to`, in chunks (from memory or disk), handed to `each`.
    fn scan(
        &mut self,
        from: LogIndex,
        to: LogIndex,
        mut each: impl FnMut(&Entry),
    ) -> Result<(), DriverError> {
        const CHUNK_BYTES: u64 = 4 * 1024 * 1024;
        let mut next = from;
        while next <= to {
            let chunk = self.read_entries(next, to, CHUNK_BYTES)?;
            let Some(last) = chunk.last() else {
                break;
            };
            next = last.index.next();
            chunk.iter().for_each(&mut each);
        }
        Ok(())
    }

    /// Snapshots the state machine and trims the log if the retention policy says it is time.
    /// The caller runs it between rounds, once it has handled what the round released (replies
    /// name command IDs, which need the entries they count from).
    pub fn retain(&mut self) -> Result<(), DriverError> {
        if !self.retention.trims() {
            return Ok(());
        }
        let base = self.node.snapshot_meta().index;
        let due = |held: u64, keep: Option<u64>| {
            keep.is_none_or(|keep| held >= keep.saturating_add((keep / 4).max(1)))
        };
        // The applied index bounds what may be trimmed: most rounds stop here, before the walk
        // over the actions waiting for a sync that `trimmable_through` takes.
        if !self.has_bug(DriverBug::SnapshotUncommitted)
            && !due(self.applied.0.saturating_sub(base.0), self.retention.entries)
        {
            return Ok(());
        }
        let mut applied = self.trimmable_through();
        if self.has_bug(DriverBug::SnapshotUncommitted) {
            applied = self.node.last_index();
        }
        let count = applied.0.saturating_sub(base.0);
        if count == 0 || !due(count, self.retention.entries) || !due(self.held_bytes, self.retention.bytes) {
            return Ok(());
        }
        // A check that found nothing to trim (a byte window over small entries) is not repeated
        // until a quarter more entries have been applied.
        if applied < self.retain_checked.plus((count / 4).max(1)) && self.retain_checked > base {
            return Ok(());
        }
        self.retain_checked = applied;
        let point = match self.retention.bytes {
            // By count alone: no entry needs reading.
            None => self.retention.point_by_count(base, applied),
            Some(_) => {
                let mut held = Vec::new();
                self.scan(base.next(), applied, |entry| held.push((entry.index, entry.size_bytes())))?;
                self.retention.point(&held)
            }
        };
        if let Some(through) = point {
            self.compact(through)?;
        }
        Ok(())
    }

    /// How far a snapshot may reach: applied entries, but not those of a proposal not answered
    /// yet (its first entries may be applied while the rest waits) or whose answer waits for a
    /// sync: replies name their entries' IDs, which need the entries.
    fn trimmable_through(&self) -> LogIndex {
        let answered_through = self
            .deferred
            .iter()
            .filter_map(|(_, action)| match action {
                Action::Reply(Reply::Committed { first, .. }) => Some(*first),
                _ => None,
            })
            .chain(self.node.unanswered_from())
            .min()
            .map_or(LogIndex(u64::MAX), LogIndex::prev);
        self.applied.min(answered_through)
    }

    /// Snapshots the state machine through `through` (applied, after the current snapshot),
    /// makes it durable, then lets the core and the storage drop what it covers (§7).
    /// Nothing happens (the current snapshot's end is returned) while the configuration at
    /// `through` is unknown: a node that joined holds no configuration before the first
    /// configuration entry its log got, and a snapshot carrying none would leave whoever
    /// restarts from it or installs it with none, or with its bootstrap, until later entries
    /// tell it.
    fn compact(&mut self, through: LogIndex) -> Result<SnapshotMeta, DriverError> {
        if self.node.membership_at(through).voter_count() == 0 {
            return Ok(self.node.snapshot_meta());
        }
        let base = self.node.snapshot_meta().index;
        let term = self.node.term_at(through).expect("an applied entry after the snapshot");
        let (mut image, mut covered_bytes) = (self.base_image, 0);
        let (mut sessions, ids) = (self.base_sessions.clone(), self.ids.clone());
        self.scan(base.next(), through, |entry| {
            let first_id = image.commands + 1;
            image = image.fold([entry]);
            covered_bytes += entry.size_bytes();
            debug_assert_eq!(first_id, ids.first_id(entry.index));
            sessions.apply(entry, first_id);
        })?;
        let membership = self.node.membership_at(through).clone();
        let data = image.encode_with(&sessions);
        let snapshot = Snapshot { meta: SnapshotMeta { index: through, term }, membership, data };
        // Durable before the core is told (the Event::Compact contract).
        self.storage.save_snapshot(&snapshot)?;
        self.base_image = image;
        self.base_sessions = sessions;
        let last = self.node.last_index();
        self.ids.compacted(through, image.commands, last);
        self.held_bytes = self.held_bytes.saturating_sub(covered_bytes);
        self.step(Event::Compact { snapshot })?;
        Ok(SnapshotMeta { index: through, term })
    }

    /// An operator's trim (`replog trim --before ID`): snapshots through the entry before
    /// `before` (at most the applied index) and drops what the snapshot covers. Returns the
    /// snapshot's last entry; nothing happens if it would not move the log's start.
    pub fn trim(&mut self, before: LogIndex) -> Result<SnapshotMeta, DriverError> {
        let through = before.prev().min(self.trimmable_through());
        if through <= self.node.snapshot_meta().index {
            return Ok(self.node.snapshot_meta());
        }
        self.compact(through)
    }

    /// Ends a round of steps: asks for one sync of everything they wrote, inline if
    /// `inline_if_idle` and no other sync is in flight. Call [`Driver::on_synced`] after it and
    /// whenever a background sync completes.
    pub fn end_round(&mut self, inline_if_idle: bool) -> Result<(), DriverError> {
        // A new round's read budget: the reads that waited go now (their entries are stepped
        // in, which may ask for more, within the budget), the rest wait for the next round.
        self.read_bytes_this_round = 0;
        while self.read_bytes_this_round < self.read_bytes_per_round_max {
            let Some(read) = self.pending_reads.pop_front() else {
                break;
            };
            self.carry_out(read)?;
            while let Some(event) = self.log_reads.pop_front() {
                self.step(event)?;
            }
        }
        Ok(self.storage.request_sync(inline_if_idle)?)
    }

    /// Releases what waited for completed syncs, in order, and tells the core how far its log
    /// is durable. An error (a failed sync) means the node must stop.
    pub fn on_synced(&mut self) -> Result<(), DriverError> {
        loop {
            let durable = self.storage.durable()?;
            while self.deferred.front().is_some_and(|(tag, _)| *tag <= durable.seq) {
                let (_, action) = self.deferred.pop_front().expect("front exists");
                self.release(action);
            }
            let mut last = durable.last;
            if self.has_bug(DriverBug::PersistedBeforeSync) {
                last = self.node.last_index();
            }
            // The term, not the entry: it may have left memory already.
            let Some(term) = self.node.term_at(last) else {
                return Ok(());
            };
            if self.node.persisted_index() >= last {
                return Ok(());
            }
            self.step(Event::LogPersisted { index: last, term })?;
        }
    }

    /// Moves the released actions, oldest first, to the end of `into`; the caller takes them
    /// after each call.
    pub fn take_output(&mut self, into: &mut Vec<Output>) {
        into.append(&mut self.output);
    }

    /// The core.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Gives a node that has never done anything (no term, no log, no snapshot) the bootstrap
    /// configuration `membership` (all voters; this node among them), recorded durably in
    /// `metadata.json` first, so a restart keeps it. False (and nothing changes) if the node
    /// has done something: a configuration then comes only from a leader's log.
    pub fn bootstrap(&mut self, membership: &Membership) -> Result<bool, DriverError> {
        let node = &self.node;
        let pristine =
            node.term() == Term::ZERO && node.last_index() == LogIndex::ZERO && node.snapshot().is_none();
        let id = node.id();
        if !pristine || !membership.is_voter(id) {
            return Ok(false);
        }
        self.storage.record_identity(id, Some(membership.clone()))?;
        let mut config = node.config().clone();
        config.joining = false;
        config.peers = membership.voters().filter(|&voter| voter != id).collect();
        config.addresses =
            membership.members.iter().map(|(&id, member)| (id, member.address.clone())).collect();
        self.node = Node::new(config, Recovered::default()).map_err(DriverError::Start)?;
        Ok(true)
    }

    /// Reads at most `bytes` of entries from disk for the core per round (at least one read a
    /// round goes through); the default is 4 MiB. The simulator draws small budgets so reads
    /// left for the next round happen often.
    pub fn set_read_budget(&mut self, bytes: u64) {
        self.read_bytes_per_round_max = bytes.max(1);
    }

    /// The storage, to record who this node is (`Storage::record_identity`) and label members.
    pub fn storage_mut(&mut self) -> &mut Storage<F> {
        &mut self.storage
    }

    /// The storage.
    pub fn storage(&self) -> &Storage<F> {
        &self.storage
    }

    /// How far the log is durable.
    pub fn durable_index(&mut self) -> Result<LogIndex, DriverError> {
        Ok(self.storage.durable()?.last)
    }

    /// True while actions wait for a sync.
    pub fn is_waiting(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// The ID (position among client commands since the log began, what users see) of entry
    /// `index`'s first command: the commands a snapshot covers, plus those of the entries
    /// between it and the snapshot (no-ops and configurations hold none, a batch several; see
    /// `command_ids.rs`). For an entry with no command, the ID the next command gets. Stable
    /// across trims. `index` must be after the snapshot.
    pub fn command_id(&self, index: LogIndex) -> u64 {
        self.ids.first_id(index)
    }

    /// As [`Driver::command_id`], `None` for an entry a snapshot now covers (one installed
    /// after the entry was applied or committed: its ID is no longer known here).
    pub fn command_id_after_snapshot(&self, index: LogIndex) -> Option<u64> {
        (index > self.node.snapshot_meta().index).then(|| self.ids.first_id(index))
    }

    /// The index of the command with this ID: past the log's end if it is not there yet, and
    /// the log's first index (or before) if it was trimmed.
    pub fn index_of_command(&self, id: u64) -> LogIndex {
        self.ids.index_of(id, self.node.last_index())
    }

    /// The first command ID the log still holds (IDs before it were trimmed).
    pub fn first_command_id(&self) -> u64 {
        self.ids.base_commands() + 1
    }

    /// Makes everything durable, commit index included (clean shutdown).
    pub fn close(self) -> Result<(), DriverError> {
        Ok(self.storage.close()?)
    }

    fn carry_out(&mut self, action: Action) -> Result<(), DriverError> {
        match action {
            Action::SaveHardState(hard_state) => self.storage.save_hard_state(hard_state)?,
            Action::TruncateLog { from } => {
                self.ids.truncated(from);
                for (_, key) in self.in_log_at.split_off(&from) {
                    self.in_log.remove(&key);
                }
                self.storage.truncate(from)?;
            }
            Action::AppendLog { entries } => {
                self.ids.appended(&entries);
                for entry in &entries {
                    if let Payload::Request(request) = &entry.payload {
                        self.in_log.insert((request.client, request.seq), entry.index);
                        self.in_log_at.insert(entry.index, (request.client, request.seq));
                    }
                }
                self.storage.append(&entries)?
            }
            Action::InstallSnapshot { snapshot } => {
                let image = Image::decode(snapshot.data.as_slice()).map_err(DriverError::Image)?;
                let limits = self.sessions.limits();
                let sessions =
                    Image::decode_sessions(snapshot.data.as_slice(), limits).map_err(DriverError::Image)?;
                self.storage.save_snapshot(&snapshot)?;
                let through = snapshot.meta.index;
                self.base_image = image;
                self.base_sessions = sessions;
                // The core's log now ends at `through` if it did not hold the snapshot's last
                // entry (it was discarded): what was known of the discarded suffix goes too.
                let last = self.node.last_index();
                self.ids.compacted(through, image.commands, last);
                let beyond = self.in_log_at.split_off(&last.next());
                let kept = self.in_log_at.split_off(&through.next());
                for (_, key) in std::mem::replace(&mut self.in_log_at, kept).into_iter().chain(beyond) {
                    self.in_log.remove(&key);
                }
                // The state machine is replaced in order with the applies around it.
                let action = Action::InstallSnapshot { snapshot };
                if self.must_wait(&action) {
                    self.deferred.push_back((self.barrier, action));
                } else {
                    self.release(action);
                }
            }
            Action::SaveSnapshotChunk { meta, membership, total, checksum, offset, chunk } => self
                .storage
                .save_snapshot_chunk((meta, membership, total, checksum), offset, chunk.as_slice())?,
            action @ Action::ReadLog { .. }
                if self.read_bytes_this_round >= self.read_bytes_per_round_max =>
            {
                // Each read's entries let the core ask for the next one at once: without a
                // budget one step would read a lagging follower's whole window (16 MiB) from
                // disk while the event loop waits, long enough to miss heartbeats.
                self.pending_reads.push_back(action);
            }
            Action::ReadLog { peer, from, to, bytes_max } => {
                self.read_bytes_this_round += bytes_max.clamp(1, self.read_bytes_per_round_max);
                let entries = match self.storage.read_entries(from, to, bytes_max) {
                    Ok(entries) => entries,
                    // Trimmed meanwhile: the core sends the snapshot instead.
                    Err(StorageError::Compacted { .. }) => Vec::new(),
                    Err(error) => return Err(error.into()),
                };
                self.log_reads.push_back(Event::LogRead { peer, entries });
            }
            Action::Sync => {
                let mut barrier = self.storage.barrier();
                if self.has_bug(DriverBug::BarrierMissesBuffered) {
                    barrier = barrier.saturating_sub(1).max(self.barrier);
                }
                assert!(barrier >= self.barrier, "barriers never go back");
                self.barrier = barrier;
            }
            action if self.must_wait(&action) => {
                assert!(
                    self.deferred.back().is_none_or(|(tag, _)| *tag <= self.barrier),
                    "deferred actions wait in order"
                );
                self.deferred.push_back((self.barrier, action))
            }
            action => self.release(action),
        }
        Ok(())
    }

    /// An action waits if the sync it follows has not completed, or if anything before it
    /// waits (actions are released in order).
    fn must_wait(&self, action: &Action) -> bool {
        if self.has_bug(DriverBug::ReleaseBeforeSync) && matches!(action, Action::Send(_) | Action::Reply(_))
        {
            return false;
        }
        !self.deferred.is_empty() || self.barrier > self.storage.durable_known().seq
    }

    fn release(&mut self, action: Action) {
        match action {
            Action::Send(message) => self.output.push(Output::Send(message)),
            Action::Reply(reply) => self.output.push(Output::Reply(reply)),
            Action::Apply { entries } => {
                if let Some(last) = entries.last() {
                    self.applied = last.index;
                }
                for entry in &entries {
                    let Payload::Request(request) = &entry.payload else {
                        continue;
                    };
                    // A snapshot installed after this Apply was deferred covers the entry: the
                    // table it carries replaces this one when its release follows.
                    let Some(first_id) = self.command_id_after_snapshot(entry.index) else {
                        continue;
                    };
                    if !self.sessions.apply(entry, first_id) {
                        self.duplicates_applied += 1;
                    }
                    self.in_log.remove(&(request.client, request.seq));
                    self.in_log_at.remove(&entry.index);
                }
                self.held_bytes += entries.iter().map(Entry::size_bytes).sum::<u64>();
                self.output.push(Output::Apply(entries))
            }
            Action::InstallSnapshot { snapshot } => {
                self.applied = self.applied.max(snapshot.meta.index);
                self.held_bytes = 0;
                // The sessions as of this snapshot (not necessarily the latest carried out: two
                // installs may wait in line); the log after it is not applied yet. Its image was
                // read when the install was carried out, so it decodes.
                let limits = self.sessions.limits();
                self.sessions = Image::decode_sessions(snapshot.data.as_slice(), limits)
                    .unwrap_or_else(|_| SessionTable::new(limits));
                self.output.push(Output::Restored(snapshot.meta))
            }
            Action::SaveHardState(_)
            | Action::TruncateLog { .. }
            | Action::AppendLog { .. }
            | Action::SaveSnapshotChunk { .. }
            | Action::ReadLog { .. }
            | Action::Sync => {
                unreachable!("storage actions are carried out at once, never deferred")
            }
        }
    }
}
