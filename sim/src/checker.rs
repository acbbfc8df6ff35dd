//! Raft's safety properties (Figure 3), checked after every step of every node:
//! Election Safety, Leader Append-Only, Log Matching, Leader Completeness, State Machine Safety,
//! plus the durability order of what a node sends.

use crate::digest;
use crate::disk::DurableLog;
use replog_core::{
    Body, Entry, LogIndex, Membership, Message, Node, NodeId, Payload, Snapshot, SnapshotMeta, Term,
};
use replog_runtime::image::Image;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Safety,
    Liveness,
}

/// A property that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: Kind,
    pub property: String,
    /// Simulated time, in units (`options::TICK` per tick).
    pub at: u64,
    pub node: Option<NodeId>,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Safety => "SAFETY",
            Kind::Liveness => "LIVENESS",
        };
        let tick = crate::options::TICK;
        write!(f, "{kind} violation: {} at tick {}.{:03}", self.property, self.at / tick, self.at % tick)?;
        if let Some(node) = self.node {
            write!(f, " on {node}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// Why a property failed; the world adds when and where.
pub type Broken = (&'static str, String);

#[derive(Debug, Default)]
pub struct Checker {
    leaders_by_term: BTreeMap<Term, NodeId>,
    /// For every (index, term) any node ever held: the fingerprint of the log prefix ending
    /// there. Log Matching says it is unique.
    prefix_of: HashMap<(u64, u64), u64>,
    /// Each node's in-memory log as prefix fingerprints, mirrored from its storage actions.
    logs: BTreeMap<NodeId, Vec<u64>>,
    /// The committed log: the longest committed prefix any node has reported.
    committed: Vec<Entry>,
    committed_prefix: Vec<u64>,
    /// For each committed entry, the term of the node that first reported it committed (the
    /// committing leader's term): Leader Completeness binds leaders of later terms only.
    committed_in: Vec<Term>,
    /// The state-machine image of the committed log through each index, built on demand: what
    /// a snapshot through that index must hold.
    committed_images: Vec<Image>,
    /// Each node's configuration before any configuration entry: the bootstrap voters for the
    /// nodes the cluster starts with, none for a spare (`Config::joining`).
    bootstrap: BTreeMap<NodeId, Membership>,
    /// The cluster's bootstrap configuration: in force before the first configuration entry.
    cluster_bootstrap: Membership,
    /// Each node's configurations, mirrored from its storage actions like `logs` (§4.1: the
    /// latest in the log is in force, committed or not).
    configs: BTreeMap<NodeId, ConfigMirror>,
    /// Every configuration entry any node ever held, by (index, term): what a durable log's
    /// configuration is looked up in.
    config_entries: BTreeMap<(LogIndex, Term), Membership>,
    /// The configuration entries of the committed log, in order, and how much of it was scanned.
    committed_configs: Vec<(LogIndex, Membership)>,
    committed_scanned: usize,
}

/// A node's configurations: the one its log starts with (snapshot or bootstrap) and every
/// configuration entry after it.
#[derive(Clone, Debug, Default)]
struct ConfigMirror {
    base: Membership,
    entries: Vec<(LogIndex, Membership)>,
}

impl ConfigMirror {
    fn latest(&self) -> &Membership {
        self.entries.last().map_or(&self.base, |(_, membership)| membership)
    }

    fn latest_index(&self) -> LogIndex {
        self.entries.last().map_or(LogIndex::ZERO, |&(index, _)| index)
    }

    /// The configuration before the latest entry's.
    fn before_latest(&self) -> &Membership {
        match self.entries.len() {
            0 | 1 => &self.base,
            n => &self.entries[n - 2].1,
        }
    }
}

/// Who may start an election (dissertation §4.2.2): a voter of its latest configuration, and
/// a voter of the configuration before it while the latest (its removal) is not committed as
/// far as it knows: it may still be needed until the change commits. Learners never do.
pub fn may_campaign(
    id: NodeId,
    commit: LogIndex,
    latest_index: LogIndex,
    latest: &Membership,
    before: &Membership,
) -> bool {
    latest.is_voter(id) || (latest_index > commit && !latest.contains(id) && before.is_voter(id))
}

/// How many voters make a majority.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

impl Checker {
    /// A checker for a cluster whose nodes start with these configurations (`cluster` is the
    /// bootstrap voters').
    pub fn new(bootstrap: BTreeMap<NodeId, Membership>, cluster: Membership) -> Checker {
        Checker { bootstrap, cluster_bootstrap: cluster, ..Checker::default() }
    }

    pub fn committed(&self) -> &[Entry] {
        &self.committed
    }

    /// The configuration in force in node `id`'s log (its latest, committed or not).
    pub fn membership(&self, id: NodeId) -> &Membership {
        self.configs.get(&id).map_or(&self.cluster_bootstrap, ConfigMirror::latest)
    }

    /// The configuration at the end of the committed log.
    pub fn committed_membership(&self) -> &Membership {
        self.committed_configs.last().map_or(&self.cluster_bootstrap, |(_, membership)| membership)
    }

    /// The configuration in force in the committed log through `index`.
    pub fn committed_membership_at(&self, index: LogIndex) -> &Membership {
        let at = self.committed_configs.partition_point(|&(at, _)| at <= index);
        at.checked_sub(1).map_or(&self.cluster_bootstrap, |at| &self.committed_configs[at].1)
    }

    /// The configurations node `id` would start with from this durable log: the index of its
    /// latest configuration entry (0 if none), that configuration, and the one before it (each
    /// from a configuration entry, else the snapshot's configuration, else the bootstrap).
    pub fn durable_membership(&self, id: NodeId, log: &DurableLog) -> (LogIndex, Membership, Membership) {
        let snapshot = log.snapshot();
        let mut found: Vec<(LogIndex, &Membership)> = Vec::new();
        for (&(index, term), membership) in self.config_entries.iter().rev() {
            if found.len() == 2 || snapshot.is_some_and(|snapshot| index <= snapshot.index) {
                break;
            }
            if found.last().is_none_or(|&(last, _)| index < last)
                && log.entry(index).is_some_and(|entry| entry.term == term)
            {
                found.push((index, membership));
            }
        }
        let base = match snapshot {
            // A snapshot holds committed entries only, and their configuration.
            Some(snapshot) if snapshot.index > LogIndex::ZERO => {
                self.committed_membership_at(snapshot.index).clone()
            }
            _ => self.bootstrap.get(&id).cloned().unwrap_or_default(),
        };
        match (found.first(), found.get(1)) {
            (None, _) => (LogIndex::ZERO, base.clone(), base),
            (Some(&(index, latest)), None) => (index, latest.clone(), base),
            (Some(&(index, latest)), Some(&(_, previous))) => (index, latest.clone(), previous.clone()),
        }
    }

    /// Whether node `id` may start an election now (see `may_campaign`).
    pub fn may_campaign(&self, id: NodeId, commit: LogIndex) -> bool {
        let mirror = &self.configs[&id];
        may_campaign(id, commit, mirror.latest_index(), mirror.latest(), mirror.before_latest())
    }

    /// Finds the configuration entries the committed log gained.
    fn scan_committed_configs(&mut self) {
        for entry in &self.committed[self.committed_scanned..] {
            if let Payload::Config(membership) = &entry.payload {
                self.committed_configs.push((entry.index, membership.clone()));
            }
        }
        self.committed_scanned = self.committed.len();
    }

    /// A node (re)started from its durable snapshot (if any) and the log after it.
    pub fn on_start(&mut self, id: NodeId, snapshot: Option<&Snapshot>, log: &[Entry]) -> Result<(), Broken> {
        let base = match snapshot {
            Some(snapshot) => {
                self.check_snapshot(id, snapshot)?;
                snapshot.meta.index.0 as usize
            }
            None => 0,
        };
        let mut prefixes = Vec::with_capacity(base + log.len());
        prefixes.extend_from_slice(&self.committed_prefix[..base]);
        self.logs.insert(id, prefixes);
        // As the core recovers it: the snapshot's configuration, else the bootstrap, then the
        // log's configuration entries.
        let start = match snapshot {
            Some(snapshot) if snapshot.membership.voter_count() > 0 => snapshot.membership.clone(),
            _ => self.bootstrap.get(&id).cloned().unwrap_or_default(),
        };
        self.configs.insert(id, ConfigMirror { base: start, entries: Vec::new() });
        self.on_append(id, log)
    }

    /// A node in `term` applied these entries: they are committed. Extends the committed log
    /// at once (a node may snapshot and drop them in the same round, before `after_step`).
    pub fn on_commit_entries(&mut self, id: NodeId, entries: &[Entry], term: Term) {
        let prefixes = &self.logs[&id];
        for entry in entries {
            let at = entry.index.0 as usize - 1;
            if at == self.committed.len() && at < prefixes.len() {
                self.committed.push(entry.clone());
                self.committed_prefix.push(prefixes[at]);
                self.committed_in.push(term);
            }
        }
        self.scan_committed_configs();
    }

    /// A snapshot a node made or received covers committed entries only, ends in the committed
    /// entry's term, and holds the committed log's image through its index (§7).
    pub fn check_snapshot(&mut self, id: NodeId, snapshot: &Snapshot) -> Result<(), Broken> {
        let SnapshotMeta { index, term } = snapshot.meta;
        let at = index.0 as usize;
        if at > self.committed.len() {
            return Err((
                "snapshot of committed entries",
                format!(
                    "{id} holds a snapshot through {index}, past the committed log ({})",
                    self.committed.len()
                ),
            ));
        }
        if at > 0 && self.committed[at - 1].term != term {
            return Err((
                "snapshot of committed entries",
                format!(
                    "{id}'s snapshot ends in {index}/{term}; the committed entry is of {}",
                    self.committed[at - 1].term
                ),
            ));
        }
        while self.committed_images.len() < at {
            let previous = self.committed_images.last().copied().unwrap_or_else(Image::empty);
            let next = self.committed_images.len();
            self.committed_images.push(previous.fold(&self.committed[next..=next]));
        }
        self.scan_committed_configs();
        let membership = self.committed_membership_at(index);
        if snapshot.membership != *membership {
            return Err((
                "snapshot configuration",
                format!(
                    "{id}'s snapshot through {index} carries configuration {}, the committed log's is {membership}",
                    snapshot.membership
                ),
            ));
        }
        let expected = if at == 0 { Image::empty() } else { self.committed_images[at - 1] };
        let image = Image::decode(snapshot.data.as_slice())
            .map_err(|why| ("snapshot image", format!("{id}: {why}")))?;
        if image != expected {
            return Err((
                "snapshot image",
                format!("{id}'s snapshot through {index} holds {image:?}, the committed log {expected:?}"),
            ));
        }
        Ok(())
    }

    /// A follower installed a leader's snapshot: its log keeps the entries after the snapshot
    /// if it held the snapshot's last entry, else it becomes the committed prefix alone.
    pub fn on_install(&mut self, id: NodeId, snapshot: &Snapshot) -> Result<(), Broken> {
        self.check_snapshot(id, snapshot)?;
        let at = snapshot.meta.index.0 as usize;
        let committed = &self.committed_prefix[..at];
        let prefixes = self.logs.get_mut(&id).expect("node known");
        let holds = at == 0 || prefixes.get(at - 1) == committed.last();
        if !holds {
            prefixes.clear();
            prefixes.extend_from_slice(committed);
        }
        let mirror = self.configs.get_mut(&id).expect("node known");
        mirror.base = snapshot.membership.clone();
        if holds {
            mirror.entries.retain(|&(index, _)| index > snapshot.meta.index);
        } else {
            mirror.entries.clear();
        }
        Ok(())
    }

    pub fn on_append(&mut self, id: NodeId, entries: &[Entry]) -> Result<(), Broken> {
        let prefixes = self.logs.get_mut(&id).expect("node known");
        for entry in entries {
            if entry.index.0 != prefixes.len() as u64 + 1 {
                return Err((
                    "log continuity",
                    format!("{id} appended {} after {} entries", entry.index, prefixes.len()),
                ));
            }
            let previous = prefixes.last().copied().unwrap_or(0);
            let prefix = digest::chain(previous, digest::of(entry));
            let known = *self.prefix_of.entry((entry.index.0, entry.term.0)).or_insert(prefix);
            if known != prefix {
                return Err((
                    "log matching",
                    format!(
                        "{id} holds {}/{} after a different prefix than another node",
                        entry.index, entry.term
                    ),
                ));
            }
            prefixes.push(prefix);
            if let Payload::Config(membership) = &entry.payload {
                let mirror = self.configs.get_mut(&id).expect("node known");
                mirror.entries.push((entry.index, membership.clone()));
                self.config_entries.entry((entry.index, entry.term)).or_insert_with(|| membership.clone());
            }
        }
        Ok(())
    }

    /// A node in `term` removed its entries from `from` on, on the word of that term's leader.
    pub fn on_truncate(
        &mut self,
        id: NodeId,
        from: LogIndex,
        is_leader: bool,
        term: Term,
    ) -> Result<(), Broken> {
        if is_leader {
            return Err(("leader append-only", format!("{id} truncated its log from {from} while leader")));
        }
        let prefixes = self.logs.get_mut(&id).expect("node known");
        // Removing a stale entry at a committed index is fine; removing the committed entry
        // itself (same prefix) loses data, if the leader that asked is bound to hold it: Leader
        // Completeness binds the leaders of the committing term and later ones only. A stale
        // leader of an older term (paused, cut off) may still replace it on a node of its term
        // that never learned it was committed; a later leader puts it back.
        let at = from.0 as usize - 1;
        let bound = self.committed_in.get(at).is_some_and(|&committed_in| term >= committed_in);
        if at < self.committed.len() && bound && prefixes.get(at) == Some(&self.committed_prefix[at]) {
            return Err(("state machine safety", format!("{id} truncated committed entry {from} in {term}")));
        }
        prefixes.truncate(at);
        // A truncated configuration entry takes its configuration with it (§4.1).
        self.configs.get_mut(&id).expect("node known").entries.retain(|&(index, _)| index < from);
        Ok(())
    }

    /// After a node's step and its actions: election safety, leader completeness, and the
    /// node's committed prefix against everyone's.
    pub fn after_step(&mut self, node: &Node, became_leader: bool) -> Result<(), Broken> {
        let id = node.id();
        let prefixes = &self.logs[&id];
        if prefixes.len() as u64 != node.last_index().0 {
            return Err((
                "log mirror",
                format!("{id} reports {} entries, its actions built {}", node.last_index(), prefixes.len()),
            ));
        }
        let mirror = &self.configs[&id];
        let (membership, membership_index) = (mirror.latest(), mirror.latest_index());
        if membership != node.membership() {
            return Err((
                "configuration mirror",
                format!("{id} reports configuration {}, its log holds {membership}", node.membership()),
            ));
        }
        if node.is_leader() {
            let leader = *self.leaders_by_term.entry(node.term()).or_insert(id);
            if leader != id {
                return Err(("election safety", format!("{leader} and {id} both lead {}", node.term())));
            }
            let term = node.term();
            // §4.2.1: learners never vote, so never lead; a node is elected only if it may
            // campaign (its configuration cannot change while it does).
            let learner =
                membership.members.get(&id).is_some_and(|m| m.role != replog_core::MemberRole::Voter);
            let eligible =
                may_campaign(id, node.commit(), membership_index, membership, mirror.before_latest());
            if learner || (became_leader && !eligible) {
                return Err((
                    "only voters lead",
                    format!("{id} leads {term} but is no voter of its configuration {membership}"),
                ));
            }
            // §4.2.2: a leader removed by a committed configuration steps down (in the step
            // that commits it), whether or not anything was lost yet.
            if membership_index <= node.commit() && !membership.is_voter(id) {
                return Err((
                    "removed leader steps down",
                    format!(
                        "{id} still leads {term} after its removal committed: {membership} at {membership_index}, commit {}",
                        node.commit()
                    ),
                ));
            }
            if became_leader {
                // §5.4: entries committed in earlier terms must be in this leader's log. (A
                // stale election can still finish in an old term after later terms committed
                // more; those entries do not bind it.)
                let len = self
                    .committed_in
                    .iter()
                    .rposition(|&committed_in| committed_in < term)
                    .map_or(0, |i| i + 1);
                if len > 0 && prefixes.get(len - 1) != Some(&self.committed_prefix[len - 1]) {
                    return Err((
                        "leader completeness",
                        format!("{id} leads {term} without entry {len}, committed in an earlier term"),
                    ));
                }
            }
        }
        let commit = node.commit().0 as usize;
        let shared = commit.min(self.committed.len());
        if shared > 0 && prefixes[shared - 1] != self.committed_prefix[shared - 1] {
            return Err((
                "state machine safety",
                format!("{id} committed a different entry at or before {shared}"),
            ));
        }
        if commit > self.committed.len() && node.cached_from().0 as usize <= self.committed.len() + 1 {
            let from = LogIndex(self.committed.len() as u64 + 1);
            self.committed.extend(node.entries(from, LogIndex(commit as u64)));
            self.committed_prefix.extend_from_slice(&prefixes[shared..commit]);
            self.committed_in.resize(commit, node.term());
            self.scan_committed_configs();
        }
        Ok(())
    }

    pub fn on_apply(&self, id: NodeId, entries: &[Entry]) -> Result<(), Broken> {
        for entry in entries {
            match self.committed.get(entry.index.0 as usize - 1) {
                Some(committed) if committed == entry => {}
                Some(_) => {
                    return Err((
                        "state machine safety",
                        format!("{id} applied a different entry at {}", entry.index),
                    ))
                }
                None => {
                    return Err((
                        "state machine safety",
                        format!("{id} applied uncommitted entry {}", entry.index),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The core's side of the driver contract (rule 3 in `replog_core`'s crate doc): a message that
/// vouches for stored state follows an `Action::Sync` placed after every storage action it may
/// depend on. Checked on the action stream itself, so a core that forgets the `Sync` is caught
/// even when the runtime's driver happens to make the state durable in time anyway.
#[derive(Clone, Copy, Debug)]
pub struct SyncContract {
    unsynced: bool,
    saved: (Term, Option<NodeId>),
}

impl SyncContract {
    /// A node (re)started with this durable hard state.
    pub fn new(hard_state: replog_core::HardState) -> SyncContract {
        SyncContract { unsynced: false, saved: (hard_state.term, hard_state.voted_for) }
    }

    pub fn on_action(&mut self, action: &replog_core::Action) -> Result<(), Broken> {
        use replog_core::Action;
        match action {
            Action::SaveHardState(hard_state) => {
                // A commit-only change promises nothing (§5.4): it need not be synced first.
                let promise = (hard_state.term, hard_state.voted_for);
                if promise != self.saved {
                    self.saved = promise;
                    self.unsynced = true;
                }
            }
            Action::TruncateLog { .. } | Action::AppendLog { .. } | Action::InstallSnapshot { .. } => {
                self.unsynced = true
            }
            Action::Sync => self.unsynced = false,
            Action::Send(message) if self.unsynced && vouches_for_storage(message) => {
                return Err((
                    "sync before vouching",
                    format!("{message} produced after unsynced storage actions with no Sync between"),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// True for the messages `check_durable` judges: they promise something about the sender's disk.
pub fn vouches_for_storage(message: &Message) -> bool {
    matches!(
        message.body,
        Body::VoteResponse { pre_vote: false, granted: true }
            | Body::VoteRequest { pre_vote: false, .. }
            | Body::AppendResponse { outcome: replog_core::AppendOutcome::Accepted { .. }, .. }
            | Body::SnapshotResponse { installed: true, .. }
    )
}

/// A vote, a vote request or an append acknowledgement may leave only once what it vouches
/// for is durable (§5.2, §5.3, Figure 2: "persistent state ... updated on stable storage before
/// responding to RPCs"). Checked when the message leaves the driver, which may be long after the
/// core produced it (it waited for a sync): by then the node may have moved to a later term,
/// durably, which also makes the old vote or acknowledgement safe (it can never be given again).
pub fn check_durable(
    message: &Message,
    durable_term: Term,
    durable_vote: Option<NodeId>,
    durable_log: &DurableLog,
    node: &Node,
) -> Result<(), Broken> {
    let vote_durable = |voter_for: NodeId| {
        durable_term > message.term || (durable_term == message.term && durable_vote == Some(voter_for))
    };
    match &message.body {
        Body::VoteResponse { pre_vote: false, granted: true } if !vote_durable(message.to) => {
            return Err((
                "durability order",
                format!(
                    "vote for {} in {} sent while disk holds {durable_term} vote {durable_vote:?}",
                    message.to, message.term
                ),
            ));
        }
        Body::VoteRequest { pre_vote: false, .. } if !vote_durable(message.from) => {
            return Err((
                "durability order",
                format!("vote request in {} sent before its own vote was durable", message.term),
            ));
        }
        Body::AppendResponse { outcome: replog_core::AppendOutcome::Accepted { match_index }, .. }
            if match_index.0 > 0 =>
        {
            let base = node.snapshot_meta();
            let durable = if *match_index <= base.index {
                // Covered by the node's snapshot (of committed entries): durable once a durable
                // snapshot covers it too.
                durable_log.snapshot().is_some_and(|snapshot| snapshot.index >= *match_index)
            } else {
                let memory = node.term_at(*match_index);
                memory.is_some_and(|term| durable_log.covers(*match_index, term))
            };
            // Once the node has durably moved to a later term, the entry this older
            // acknowledgement vouched for may have been replaced on that term's leader's
            // word (as with an answer delayed in the network); it was durable before the
            // move, since the runtime syncs the log before it writes a new term.
            let superseded = durable_term > message.term;
            if !superseded && !durable {
                return Err((
                    "durability order",
                    format!(
                        "acknowledged {match_index} while only {} entries are durable",
                        durable_log.last().1 .0
                    ),
                ));
            }
        }
        Body::SnapshotResponse { meta, installed: true, .. } => {
            let durable = durable_log.snapshot().is_some_and(|snapshot| snapshot.index >= meta.index)
                || durable_log.covers(meta.index, meta.term);
            if !durable && durable_term <= message.term {
                return Err((
                    "durability order",
                    format!("acknowledged the snapshot through {} before it was durable", meta.index),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// What one node's logs look like to the commit-finality check.
#[derive(Clone, Debug)]
pub struct LogView {
    pub id: NodeId,
    /// (last term, last index) of the durable log, and whether it holds the entry.
    pub durable: (Term, LogIndex),
    pub durable_has: bool,
    /// The same for the in-memory log of a running node.
    pub memory: Option<((Term, LogIndex), bool)>,
    /// Repairing lost committed entries: it neither votes nor campaigns.
    pub repairing: bool,
    /// The voters of the configuration its durable log ends in (what it restarts with), and of
    /// its in-memory log's latest configuration (a running node's).
    pub durable_voters: Vec<NodeId>,
    pub memory_voters: Option<Vec<NodeId>>,
    /// Whether it may campaign from its durable log, and from its in-memory log.
    pub durable_campaigns: bool,
    pub memory_campaigns: bool,
}

/// Commit finality (the heart of §5.4.3): once an entry is committed, no node lacking it can
/// win an election. A node that lacks it (in its durable log, which it could restart from, or
/// its in-memory log), if it may campaign from that log, can win only if a majority of the
/// voters of the configuration that log ends in (§4.1: a candidate counts the voters of its
/// latest configuration) would vote for it:
/// each judged by its durable log (§5.4.1), and only if the candidate is a voter of its own
/// configuration, in memory or on disk (§4.2.3: others' vote requests are ignored). With
/// correct Raft the majority that stores a current-term entry always refuses, and with
/// single-server changes any two configurations a candidate and the committing leader can hold
/// have overlapping majorities; committing an earlier term's entry by counting (Figure 8), or
/// a change made before the new leader's first commit (two changes apart), leaves a window
/// where they do not, and this check catches that window.
pub fn check_commit_final(views: &[LogView], index: LogIndex) -> Result<(), Broken> {
    for candidate in views.iter().filter(|view| !view.repairing) {
        let mut logs: Vec<((Term, LogIndex), &[NodeId])> = Vec::new();
        if !candidate.durable_has && candidate.durable_campaigns {
            logs.push((candidate.durable, &candidate.durable_voters));
        }
        if let (Some((last, false)), Some(voters), true) =
            (candidate.memory, &candidate.memory_voters, candidate.memory_campaigns)
        {
            logs.push((last, voters));
        }
        // Its own vote counts only if it is a voter of that configuration.
        for (log, voters) in logs {
            let accepts = |voter: &LogView| {
                voter.durable_voters.contains(&candidate.id)
                    || voter.memory_voters.as_ref().is_some_and(|voters| voters.contains(&candidate.id))
            };
            let granted = views
                .iter()
                .filter(|voter| voters.contains(&voter.id))
                .filter(|voter| {
                    voter.id == candidate.id || (!voter.repairing && log >= voter.durable && accepts(voter))
                })
                .count();
            let quorum = majority(voters.len());
            if granted >= quorum {
                return Err((
                    "commit finality",
                    format!(
                        "{} lacks committed entry {index} yet {granted} of its {} voters {voters:?} would vote for its log ending {}/{}",
                        candidate.id,
                        voters.len(),
                        log.1,
                        log.0
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_core::Payload;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index: LogIndex(index), term: Term(term), payload: Payload::Noop }
    }

    /// A node may replace an entry the cluster committed when the AppendEntries comes from an
    /// older term than the committing one (a stale leader it still follows); Leader
    /// Completeness binds only the committing term and later ones.
    #[test]
    fn truncating_a_committed_entry_is_judged_by_the_asking_term() {
        let mut checker = Checker::default();
        let (a, b) = (NodeId(1), NodeId(2));
        checker.on_start(a, None, &[entry(1, 1), entry(2, 2)]).unwrap();
        checker.on_start(b, None, &[entry(1, 1), entry(2, 2)]).unwrap();
        // Entry 2 (of term 2) is committed in term 4.
        checker.committed = vec![entry(1, 1), entry(2, 2)];
        checker.committed_prefix = checker.logs[&a].clone();
        checker.committed_in = vec![Term(4), Term(4)];
        assert!(checker.on_truncate(a, LogIndex(2), false, Term(3)).is_ok(), "a stale term-3 leader may");
        let error = checker.on_truncate(b, LogIndex(2), false, Term(4)).unwrap_err();
        assert_eq!(error.0, "state machine safety");
        assert_eq!(checker.on_truncate(b, LogIndex(2), true, Term(3)).unwrap_err().0, "leader append-only");
    }
}
