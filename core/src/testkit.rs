//! An in-memory cluster that drives real [`Node`]s with a perfect-but-controllable network and
//! storage that syncs at the end of every step. Tests and golden scripts use it; it is pure (no
//! IO, no clock), so it belongs to the core. The simulator adds faults on top of the same nodes.
//!
//! Safety is checked after every step: at most one leader per term (§5.2), committed prefixes
//! agree across nodes (§5.4.3, State Machine Safety), and every node applies the same history.
//!
//! Compiled only with the crate feature `testkit`, which the core's own tests, examples and
//! golden scripts switch on through a dev-dependency of the crate on itself.

use crate::action::{Action, Reply};
use crate::config::Config;
use crate::event::Event;
use crate::membership::{Membership, MembershipChange};
use crate::message::Message;
use crate::node::{Node, Recovered};
use crate::types::{
    Bytes, Entry, HardState, LogIndex, NodeId, PartialSnapshot, Payload, RequestId, Snapshot, SnapshotMeta,
    Term,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;

/// What survives a crash: the storage actions that were synced.
#[derive(Clone, Debug, Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// The entries after the snapshot.
    log: Vec<Entry>,
    /// Chunks of a snapshot in transfer (kept so a restart resumes it).
    partial: Option<PartialSnapshot>,
}

impl Disk {
    fn base(&self) -> SnapshotMeta {
        self.snapshot.as_ref().map(|snapshot| snapshot.meta).unwrap_or_default()
    }

    fn last(&self) -> LogIndex {
        self.base().index.plus(self.log.len() as u64)
    }

    fn write(&mut self, action: &Action) {
        match action {
            Action::SaveHardState(hard_state) => self.hard_state = *hard_state,
            Action::TruncateLog { from } => self.log.truncate((from.0 - self.base().index.0 - 1) as usize),
            Action::AppendLog { entries } => self.log.extend(entries.iter().cloned()),
            Action::InstallSnapshot { snapshot } => self.store_snapshot(snapshot.clone()),
            Action::SaveSnapshotChunk { meta, membership, total, checksum, offset, chunk } => {
                if *offset == 0 {
                    let (meta, total, checksum, membership) = (*meta, *total, *checksum, membership.clone());
                    self.partial =
                        Some(PartialSnapshot { meta, membership, total, checksum, data: Vec::new() });
                }
                if let Some(partial) = self.partial.as_mut().filter(|p| p.data.len() as u64 == *offset) {
                    partial.data.extend_from_slice(chunk.as_slice());
                }
            }
            _ => unreachable!("not a storage action"),
        }
    }

    /// Entries `from..=to`, stopping once `bytes_max` is passed (the first always comes).
    fn read(&self, from: LogIndex, to: LogIndex, bytes_max: u64) -> Vec<Entry> {
        let base = self.base().index;
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in self.log.iter().filter(|e| e.index >= from.max(base.next()) && e.index <= to) {
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Stores `snapshot` and drops the log it covers: all of it unless it holds the snapshot's
    /// last entry (§7).
    fn store_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        let base = self.base().index;
        let at = (meta.index.0 - base.0) as usize;
        let holds = at <= self.log.len() && (at == 0 || self.log[at - 1].term == meta.term);
        if holds {
            self.log.drain(..at);
        } else {
            self.log.clear();
        }
        self.snapshot = Some(snapshot);
        self.partial = None;
    }
}

/// A cluster of nodes `n1..=nN` on a network that delivers in order unless told otherwise.
/// Nodes added later (`add_node`) join with no configuration; a message to a node that does not
/// exist is lost, as on a real network.
#[derive(Debug)]
pub struct Cluster {
    configs: BTreeMap<NodeId, Config>,
    /// The bootstrap configuration `n1..=nN`: `describe` shows a node's configuration only when
    /// it differs from this one.
    bootstrap: Membership,
    /// `None` while crashed.
    nodes: BTreeMap<NodeId, Option<Node>>,
    disks: BTreeMap<NodeId, Disk>,
    in_flight: VecDeque<Message>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Groups cut off from everyone outside them (`isolate`), nodes added later included.
    isolated: Vec<BTreeSet<NodeId>>,
    /// What each node applied since it last started (or installed a snapshot): the index its
    /// state started from, and the entries after it.
    applied: BTreeMap<NodeId, (LogIndex, Vec<Entry>)>,
    /// Every client reply, with the node that gave it.
    pub replies: Vec<(NodeId, Reply)>,
    leaders_by_term: BTreeMap<Term, NodeId>,
    /// The longest committed history seen anywhere; every node's committed prefix must agree.
    committed: Vec<Entry>,
    next_request: u64,
    trace: String,
}

impl Cluster {
    /// `size` nodes with the default configuration, adjusted by `tweak`. Node `k`'s generator is
    /// seeded with `k`, so a cluster is the same on every run.
    pub fn new(size: u64, mut tweak: impl FnMut(&mut Config)) -> Cluster {
        let ids: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let mut cluster = Cluster {
            configs: BTreeMap::new(),
            bootstrap: Membership::voters_only(ids.iter().copied()),
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            isolated: Vec::new(),
            applied: BTreeMap::new(),
            replies: Vec::new(),
            leaders_by_term: BTreeMap::new(),
            committed: Vec::new(),
            next_request: 1,
            trace: String::new(),
        };
        for &id in &ids {
            let peers = ids.iter().copied().filter(|&peer| peer != id).collect();
            let mut config = Config::new(id, peers);
            tweak(&mut config);
            cluster.configs.insert(id, config);
            cluster.disks.insert(id, Disk::default());
            cluster.nodes.insert(id, None);
            cluster.start(id);
        }
        cluster
    }

    /// Nodes `n1..` whose disks already hold logs with these terms (as in the paper's Figures 7
    /// and 8); each node's current term is its last entry's term.
    pub fn from_logs(logs: &[&[u64]], tweak: impl FnMut(&mut Config)) -> Cluster {
        let mut cluster = Cluster::new(logs.len() as u64, tweak);
        for (position, terms) in logs.iter().enumerate() {
            let id = NodeId(position as u64 + 1);
            let log: Vec<Entry> = terms
                .iter()
                .enumerate()
                .map(|(i, &term)| Entry {
                    index: LogIndex(i as u64 + 1),
                    term: Term(term),
                    payload: Payload::Noop,
                })
                .collect();
            let term = log.last().map_or(Term::ZERO, |entry| entry.term);
            cluster.disks.insert(
                id,
                Disk {
                    hard_state: HardState { term, voted_for: None, commit: LogIndex::ZERO },
                    snapshot: None,
                    log,
                    partial: None,
                },
            );
            cluster.start(id);
        }
        cluster
    }

    /// A new, empty, running node `id` that joins the cluster (`Config::joining`): no bootstrap
    /// configuration, so it neither votes nor campaigns until a leader's log makes it a voter.
    /// Its configuration is node n1's (the `Cluster::new` tweak included) with its own id and
    /// seed. It hears nothing until a leader adds it (`change`).
    pub fn add_node(&mut self, id: NodeId) {
        self.add_node_with(id, |_| {});
    }

    /// As `add_node`, with `tweak` applied to its configuration last.
    pub fn add_node_with(&mut self, id: NodeId, tweak: impl FnOnce(&mut Config)) {
        assert!(!self.nodes.contains_key(&id), "{id} exists already");
        let template = self.configs.values().next().expect("a cluster has a node").clone();
        let mut config = Config { id, peers: Vec::new(), joining: true, seed: id.0, ..template };
        tweak(&mut config);
        self.configs.insert(id, config);
        self.disks.insert(id, Disk::default());
        self.start(id);
        let _ = writeln!(self.trace, "{id} added (joining, empty)");
    }

    fn start(&mut self, id: NodeId) {
        let disk = &self.disks[&id];
        // As a real driver does: a log that ends before its saved commit index lost committed
        // entries, and the node repairs it from the leader.
        let last = disk.last();
        let repair_to = if disk.hard_state.commit > last { disk.hard_state.commit } else { LogIndex::ZERO };
        let hard_state = HardState { commit: disk.hard_state.commit.min(last), ..disk.hard_state };
        let base = disk.base().index;
        let recovered = Recovered {
            hard_state,
            snapshot: disk.snapshot.clone(),
            entries: disk.log.clone(),
            partial: disk.partial.clone(),
            term_runs: Vec::new(),
            configs: Vec::new(),
            applied: base,
            repair_to,
        };
        let node = Node::new(self.configs[&id].clone(), recovered).expect("recovered state is valid");
        self.nodes.insert(id, Some(node));
        self.applied.insert(id, (base, Vec::new()));
    }

    /// Every node's id, running or not, in order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The running node `id`; panics if it is crashed.
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes[&id].as_ref().expect("node is running")
    }

    /// Whether node `id` exists and is running.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(Option::is_some)
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .flatten()
            .filter(|node| node.is_leader())
            .max_by_key(|node| node.term())
            .map(Node::id)
    }

    /// The entries node `id` applied since it last started or installed a snapshot, in order.
    pub fn applied(&self, id: NodeId) -> &[Entry] {
        &self.applied[&id].1
    }

    /// How many messages the network holds.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Everything that happened so far: each step's event and actions, and the notes.
    pub fn trace(&self) -> &str {
        &self.trace
    }

    /// Adds a line to the trace.
    pub fn note(&mut self, line: &str) {
        let _ = writeln!(self.trace, "{line}");
    }

    /// Feeds one event to a running node and carries out its actions, then checks safety.
    pub fn step(&mut self, id: NodeId, event: Event) -> Vec<Action> {
        let Some(node) = self.nodes.get_mut(&id).and_then(Option::as_mut) else {
            return Vec::new();
        };
        let header = match &event {
            Event::Tick => format!("{id} tick"),
            Event::Receive(message) => format!("{id} recv {message}"),
            Event::Propose { request, payloads } => {
                format!("{id} propose {request} {}", crate::event::fmt_payloads(payloads))
            }
            Event::Read { request } => format!("{id} read {request}"),
            Event::LogPersisted { index, term } => format!("{id} persisted {index}/{term}"),
            Event::LogRead { peer, entries } => match (entries.first(), entries.last()) {
                (Some(first), Some(last)) => {
                    format!("{id} log-read for {peer} {}..={}", first.index, last.index)
                }
                _ => format!("{id} log-read for {peer} nothing"),
            },
            Event::TransferLeadership { to } => format!("{id} transfer-leadership to {to}"),
            Event::Compact { snapshot } => {
                format!("{id} compact {}/{} {:?}", snapshot.meta.index, snapshot.meta.term, snapshot.data)
            }
            Event::ChangeMembership { request, change, force } => {
                format!("{id} change-membership {request} {change:?}{}", if *force { " forced" } else { "" })
            }
            Event::Campaign => format!("{id} campaign"),
        };
        let is_tick = event == Event::Tick;
        let actions = node.step(event);
        // Idle ticks are noise in a trace.
        if !is_tick || !actions.is_empty() {
            let _ = writeln!(self.trace, "{header}");
            for action in &actions {
                let _ = writeln!(self.trace, "  {action}");
            }
        }
        self.carry_out(id, &actions);
        self.check_safety();
        actions
    }

    fn carry_out(&mut self, id: NodeId, actions: &[Action]) {
        let mut wrote = false;
        for action in actions {
            match action {
                Action::SaveHardState(_)
                | Action::TruncateLog { .. }
                | Action::AppendLog { .. }
                | Action::SaveSnapshotChunk { .. } => {
                    self.disks.get_mut(&id).expect("disk").write(action);
                    wrote = true;
                }
                Action::InstallSnapshot { snapshot } => {
                    self.disks.get_mut(&id).expect("disk").write(action);
                    // The state machine restarts from the snapshot.
                    self.applied.insert(id, (snapshot.meta.index, Vec::new()));
                    wrote = true;
                }
                // Every write is applied to the disk at once: syncs are immediate here.
                Action::Sync => {}
                Action::Send(message) => {
                    if self.is_cut(message.from, message.to) {
                        let _ = writeln!(self.trace, "  (dropped by partition)");
                    } else {
                        self.in_flight.push_back(message.clone());
                    }
                }
                Action::Apply { entries } => {
                    // Applied entries are committed: the record of the committed log grows from
                    // them too (the node may let them leave memory within this step).
                    for entry in entries {
                        if entry.index.0 as usize == self.committed.len() + 1 {
                            self.committed.push(entry.clone());
                        }
                    }
                    let (base, applied) = self.applied.get_mut(&id).expect("applied");
                    for entry in entries {
                        assert_eq!(
                            entry.index,
                            base.plus(applied.len() as u64 + 1),
                            "{id} applied out of order"
                        );
                        applied.push(entry.clone());
                    }
                }
                Action::Reply(reply) => self.replies.push((id, reply.clone())),
                Action::ReadLog { .. } => {}
            }
        }
        // Reads from the log are answered after the step's other actions (the contract).
        for action in actions {
            if let Action::ReadLog { peer, from, to, bytes_max } = action {
                let entries = self.disks[&id].read(*from, *to, *bytes_max);
                self.step(id, Event::LogRead { peer: *peer, entries });
            }
        }
        // The driver syncs before it waits for input and reports how far the log is durable.
        let disk = &self.disks[&id];
        let last = disk.log.last().map(|entry| (entry.index, entry.term));
        if let (true, Some((index, term))) = (wrote, last) {
            if self.node(id).persisted_index() < index {
                self.step(id, Event::LogPersisted { index, term });
            }
        }
    }

    fn check_safety(&mut self) {
        for node in self.nodes.values().flatten() {
            if node.is_leader() {
                let leader = *self.leaders_by_term.entry(node.term()).or_insert(node.id());
                assert_eq!(leader, node.id(), "election safety: two leaders in {}", node.term());
            }
            let commit = node.commit().0 as usize;
            let base = node.snapshot_meta();
            if base.index > LogIndex::ZERO && base.index.0 as usize <= self.committed.len() {
                assert_eq!(
                    base.term,
                    self.committed[base.index.0 as usize - 1].term,
                    "state machine safety: {}'s snapshot ends in another entry",
                    node.id()
                );
            }
            for index in base.index.0 as usize + 1..=commit.min(self.committed.len()) {
                let committed = &self.committed[index - 1];
                // Entries out of memory are compared by term (Log Matching makes that enough);
                // those in memory in full.
                let term = node.term_at(LogIndex(index as u64)).expect("committed entry present");
                assert_eq!(term, committed.term, "state machine safety: {} differs at {index}", node.id());
                if let Some(entry) = node.entry(LogIndex(index as u64)) {
                    assert_eq!(entry, committed, "state machine safety: {} differs at {index}", node.id());
                }
            }
            if commit > self.committed.len() && node.cached_from().0 as usize <= self.committed.len() + 1 {
                let more = node.entries(LogIndex(self.committed.len() as u64 + 1), LogIndex(commit as u64));
                self.committed.extend(more);
            }
        }
        for (id, (base, applied)) in &self.applied {
            let (from, to) = (base.0 as usize, base.0 as usize + applied.len());
            assert!(to <= self.committed.len(), "{id} applied an uncommitted entry");
            assert_eq!(applied[..], self.committed[from..to], "{id} applied a different history");
        }
    }

    /// Node `id` snapshots its state machine through what it has applied and compacts its log
    /// (as a driver's retention would). The image is the applied entries' count and last term,
    /// enough for the state-machine safety check. No-op if nothing new is applied.
    pub fn compact(&mut self, id: NodeId) -> Vec<Action> {
        let node = self.node(id);
        let index = node.applied();
        if index <= node.snapshot_meta().index {
            return Vec::new();
        }
        let term = node.term_at(index).expect("applied entry in the log");
        let data = Bytes::from(format!("state through {index}/{term}").as_str());
        let membership = node.membership_at(index).clone();
        let snapshot = Snapshot { meta: SnapshotMeta { index, term }, membership, data };
        // Durable first, then the core is told (the Event::Compact contract).
        self.disks.get_mut(&id).expect("disk").store_snapshot(snapshot.clone());
        self.step(id, Event::Compact { snapshot })
    }

    /// Ticks every running node `count` times, one round at a time in id order.
    pub fn tick(&mut self, count: u32) {
        self.tick_nodes(&self.ids(), count);
    }

    /// Ticks the listed nodes `count` times, one round at a time in the order given.
    pub fn tick_nodes(&mut self, ids: &[NodeId], count: u32) {
        for _ in 0..count {
            for &id in ids {
                self.step(id, Event::Tick);
            }
        }
    }

    /// `rounds` times: tick each of `ids` once, then deliver until the network is quiet. Time
    /// passes while messages flow, as on a real network far faster than a tick.
    pub fn run(&mut self, ids: &[NodeId], rounds: u32) {
        for _ in 0..rounds {
            self.tick_nodes(ids, 1);
            self.deliver_all();
        }
    }

    /// Delivers the oldest message in flight; returns false when none is.
    pub fn deliver_one(&mut self) -> bool {
        let Some(message) = self.in_flight.pop_front() else {
            return false;
        };
        if !self.nodes.contains_key(&message.to) {
            let _ = writeln!(self.trace, "lost {message} (no such node)");
            return true;
        }
        if !self.is_up(message.to) {
            let _ = writeln!(self.trace, "lost {message} (receiver down)");
            return true;
        }
        self.step(message.to, Event::Receive(message));
        true
    }

    /// Delivers until nothing is in flight (bounded: a livelock is a test failure).
    pub fn deliver_all(&mut self) {
        const DELIVERIES_MAX: u32 = 100_000;
        for _ in 0..DELIVERIES_MAX {
            if !self.deliver_one() {
                return;
            }
        }
        panic!("network never went quiet after {DELIVERIES_MAX} deliveries");
    }

    /// Delivers the in-flight message at `position` (modulo their number): out of order.
    pub fn deliver_nth(&mut self, position: usize) -> bool {
        if self.in_flight.is_empty() {
            return false;
        }
        let message = self.in_flight.remove(position % self.in_flight.len()).expect("in range");
        if self.is_up(message.to) {
            self.step(message.to, Event::Receive(message));
        }
        true
    }

    /// Loses the in-flight message at `position` (modulo their number).
    pub fn drop_nth(&mut self, position: usize) {
        if !self.in_flight.is_empty() {
            let at = position % self.in_flight.len();
            self.in_flight.remove(at);
        }
    }

    /// Queues a second copy of the in-flight message at `position` (modulo their number).
    pub fn duplicate_nth(&mut self, position: usize) {
        if !self.in_flight.is_empty() {
            let copy = self.in_flight[position % self.in_flight.len()].clone();
            self.in_flight.push_back(copy);
        }
    }

    /// Throws away everything in flight.
    pub fn drop_all(&mut self) {
        let dropped = self.in_flight.len();
        self.in_flight.clear();
        let _ = writeln!(self.trace, "dropped {dropped} messages in flight");
    }

    /// Takes every message in flight out of the network, for tests that deliver by hand.
    pub fn take_in_flight(&mut self) -> Vec<Message> {
        self.in_flight.drain(..).collect()
    }

    /// Node `id` starts an election now (`Event::Campaign`).
    pub fn campaign(&mut self, id: NodeId) {
        self.step(id, Event::Campaign);
    }

    /// Asks node `id` for a membership change (§4.1); returns the request id. `force` skips the
    /// leader's live-quorum check.
    pub fn change(&mut self, id: NodeId, change: MembershipChange, force: bool) -> RequestId {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        self.step(id, Event::ChangeMembership { request, change, force });
        request
    }

    /// Proposes commands at `id`; returns the request id.
    pub fn propose(&mut self, id: NodeId, commands: &[&str]) -> RequestId {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let payloads = commands.iter().map(|&text| Payload::Command(Bytes::from(text))).collect();
        self.step(id, Event::Propose { request, payloads });
        request
    }

    /// Asks node `id` for a linearizable read; returns the request id.
    pub fn read(&mut self, id: NodeId) -> RequestId {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        self.step(id, Event::Read { request });
        request
    }

    /// The first reply to `request`, if one was given.
    pub fn reply(&self, request: RequestId) -> Option<&Reply> {
        self.replies.iter().map(|(_, reply)| reply).find(|reply| reply.request() == request)
    }

    /// Cuts every link between `group` and the rest (nodes added later included), both ways.
    pub fn isolate(&mut self, group: &[NodeId]) {
        self.isolated.push(group.iter().copied().collect());
    }

    /// Whether the network drops messages from `from` to `to`.
    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
            || self.isolated.iter().any(|group| group.contains(&from) != group.contains(&to))
    }

    /// Cuts one direction only.
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.isolated.clear();
    }

    /// Stops a node; it keeps only what it wrote to its disk.
    pub fn crash(&mut self, id: NodeId) {
        self.nodes.insert(id, None);
        let _ = writeln!(self.trace, "{id} crashed");
    }

    /// A storage fault on a crashed node: its disk keeps only the first `keep` log entries, as
    /// if later writes it had synced (and acknowledged) were lost by a disk that lied, bit rot
    /// or an operator's cut. The hard state survives.
    pub fn lose_entries(&mut self, id: NodeId, keep: u64) {
        assert!(!self.is_up(id), "storage faults are injected into crashed nodes");
        let disk = self.disks.get_mut(&id).expect("disk");
        let base = disk.base().index.0;
        disk.log.truncate(keep.saturating_sub(base) as usize);
        let _ = writeln!(self.trace, "{id} lost its log after entry {keep}");
    }

    /// Starts a crashed node again from what its disk holds.
    pub fn restart(&mut self, id: NodeId) {
        self.start(id);
        let node = self.node(id);
        let line =
            format!("{id} restarted {} vote={:?} last={}", node.term(), node.voted_for(), node.last_index());
        let _ = writeln!(self.trace, "{line}");
    }

    /// One line per node: role, term, commit, its configuration (only when it is not the
    /// bootstrap one, marked if not committed yet), and its log as index/term pairs.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (id, node) in &self.nodes {
            match node {
                None => {
                    let _ = writeln!(out, "{id} down");
                }
                Some(node) => {
                    let log: Vec<String> = node
                        .entries(LogIndex(1), node.last_index())
                        .iter()
                        .map(|entry| match &entry.payload {
                            Payload::Noop => format!("{}", entry.term.0),
                            Payload::Command(data) => format!("{}:{data:?}", entry.term.0),
                            Payload::Config(membership) => format!("{}:config{membership}", entry.term.0),
                            Payload::Request(request) => format!(
                                "{}:{}#{}{:?}",
                                entry.term.0, request.client, request.seq, request.commands
                            ),
                        })
                        .collect();
                    let membership = match node.membership() {
                        membership if *membership == self.bootstrap => String::new(),
                        membership if node.membership_index() > node.commit() => {
                            format!("config={membership}(uncommitted) ")
                        }
                        membership => format!("config={membership} "),
                    };
                    let _ = writeln!(
                        out,
                        "{id} {} {} commit={} {}{membership}log=[{}]",
                        node.role(),
                        node.term(),
                        node.commit(),
                        match node.snapshot_meta() {
                            meta if meta.index == LogIndex::ZERO => String::new(),
                            meta => format!("snapshot={}/{} ", meta.index, meta.term),
                        },
                        log.join(" ")
                    );
                }
            }
        }
        out
    }

    /// Runs a script of commands (see `fixtures/scripts/README.md`) and returns the trace.
    pub fn run_script(script: &str) -> Result<String, String> {
        let mut cluster: Option<Cluster> = None;
        let mut settings: Vec<(String, String)> = Vec::new();
        for (number, raw) in script.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fail = |why: &str| format!("line {}: {why}: {raw}", number + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            if words[0] == "set" {
                for pair in &words[1..] {
                    let (key, value) = pair.split_once('=').ok_or_else(|| fail("expected key=value"))?;
                    settings.push((key.to_string(), value.to_string()));
                }
                continue;
            }
            if words[0] == "cluster" {
                let size: u64 =
                    words.get(1).and_then(|n| n.parse().ok()).ok_or_else(|| fail("cluster needs a size"))?;
                let settings = settings.clone();
                let mut bad = None;
                let built = Cluster::new(size, |config| {
                    for (key, value) in &settings {
                        if let Err(why) = apply_setting(config, key, value) {
                            bad = Some(why);
                        }
                    }
                });
                if let Some(why) = bad {
                    return Err(fail(&why));
                }
                cluster = Some(built);
                continue;
            }
            let cluster = cluster.as_mut().ok_or_else(|| fail("no cluster yet"))?;
            let _ = writeln!(cluster.trace, "\n== {line}");
            let node_arg = |i: usize| -> Result<NodeId, String> {
                let word = words.get(i).ok_or_else(|| fail("missing node"))?;
                let id = word
                    .strip_prefix('n')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| fail("bad node name"))?;
                Ok(NodeId(id))
            };
            match words[0] {
                "tick" => {
                    let count = words
                        .get(1)
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| fail("tick needs a count"))?;
                    let ids = if words.len() > 2 {
                        (2..words.len()).map(node_arg).collect::<Result<Vec<_>, _>>()?
                    } else {
                        cluster.ids()
                    };
                    cluster.tick_nodes(&ids, count);
                }
                "run" => {
                    let rounds =
                        words.get(1).and_then(|n| n.parse().ok()).ok_or_else(|| fail("run needs a count"))?;
                    let ids = if words.len() > 2 {
                        (2..words.len()).map(node_arg).collect::<Result<Vec<_>, _>>()?
                    } else {
                        cluster.ids()
                    };
                    cluster.run(&ids, rounds);
                }
                "deliver" => cluster.deliver_all(),
                "deliver-one" => {
                    cluster.deliver_one();
                }
                "drop" => cluster.drop_all(),
                "campaign" => cluster.campaign(node_arg(1)?),
                "propose" => {
                    let id = node_arg(1)?;
                    cluster.propose(id, &words[2..]);
                }
                "read" => {
                    cluster.read(node_arg(1)?);
                }
                "compact" => {
                    cluster.compact(node_arg(1)?);
                }
                "transfer" => {
                    let to = node_arg(2)?;
                    cluster.step(node_arg(1)?, Event::TransferLeadership { to });
                }
                "add-node" => cluster.add_node(node_arg(1)?),
                "member" => {
                    let (leader, target) = (node_arg(1)?, node_arg(3)?);
                    let flag = words.get(4).copied();
                    let (change, force) = match (words.get(2).copied(), flag) {
                        (Some("add"), None | Some("learner")) => {
                            let address = format!("{target}");
                            let promote = flag.is_none();
                            (MembershipChange::Add { id: target, address, promote }, false)
                        }
                        (Some("promote"), None) => (MembershipChange::Promote { id: target }, false),
                        (Some("remove"), None | Some("force")) => {
                            (MembershipChange::Remove { id: target }, flag.is_some())
                        }
                        _ => {
                            return Err(fail(
                                "expected member N add M [learner] | promote M | remove M [force]",
                            ))
                        }
                    };
                    cluster.change(leader, change, force);
                }
                "crash" => cluster.crash(node_arg(1)?),
                "restart" => cluster.restart(node_arg(1)?),
                "isolate" => {
                    let group = (1..words.len()).map(node_arg).collect::<Result<Vec<_>, _>>()?;
                    cluster.isolate(&group);
                }
                "cut" => cluster.cut_link(node_arg(1)?, node_arg(2)?),
                "heal" => cluster.heal(),
                "state" => {
                    let description = cluster.describe();
                    cluster.trace.push_str(&description);
                }
                other => return Err(fail(&format!("unknown command {other:?}"))),
            }
        }
        Ok(cluster.map(|c| c.trace).unwrap_or_default())
    }
}

fn apply_setting(config: &mut Config, key: &str, value: &str) -> Result<(), String> {
    let number = || value.parse::<u64>().map_err(|_| format!("{key} needs a number"));
    let flag = || value.parse::<bool>().map_err(|_| format!("{key} needs true or false"));
    match key {
        "pre_vote" => config.pre_vote = flag()?,
        "check_quorum" => config.check_quorum = flag()?,
        "election_ticks_min" => config.election_ticks_min = number()? as u32,
        "election_ticks_max" => config.election_ticks_max = number()? as u32,
        "heartbeat_ticks" => config.heartbeat_ticks = number()? as u32,
        "entries_per_message_max" => config.entries_per_message_max = number()? as u32,
        "inflight_messages_max" => config.inflight_messages_max = number()? as u32,
        "snapshot_chunk_bytes" => config.snapshot_chunk_bytes = number()?,
        "promote_lag_entries_max" => config.promote_lag_entries_max = number()?,
        _ => return Err(format!("unknown setting {key}")),
    }
    Ok(())
}
