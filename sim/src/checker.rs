//! Raft's safety properties (Figure 3), checked after every step of every node:
//! Election Safety, Leader Append-Only, Log Matching, Leader Completeness, State Machine Safety,
//! plus the durability order of what a node sends.

use crate::digest;
use crate::disk::DurableLog;
use replog_core::{Body, Entry, LogIndex, Message, Node, NodeId, Snapshot, SnapshotMeta, Term};
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
}

impl Checker {
    pub fn committed(&self) -> &[Entry] {
        &self.committed
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
        if node.is_leader() {
            let leader = *self.leaders_by_term.entry(node.term()).or_insert(id);
            if leader != id {
                return Err(("election safety", format!("{leader} and {id} both lead {}", node.term())));
            }
            if became_leader {
                // §5.4: entries committed in earlier terms must be in this leader's log. (A
                // stale election can still finish in an old term after later terms committed
                // more; those entries do not bind it.)
                let term = node.term();
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
#[derive(Clone, Copy, Debug)]
pub struct LogView {
    pub id: NodeId,
    /// (last term, last index) of the durable log, and whether it holds the entry.
    pub durable: (Term, LogIndex),
    pub durable_has: bool,
    /// The same for the in-memory log of a running node.
    pub memory: Option<((Term, LogIndex), bool)>,
    /// Repairing lost committed entries: it neither votes nor campaigns.
    pub repairing: bool,
}

/// Commit finality (the heart of §5.4.3): once an entry is committed, no node lacking it can
/// win an election. A node that lacks it (in its durable log, which it could restart from, or
/// its in-memory log) can win only if a majority of voters, judged by their durable logs, find
/// its log at least as up-to-date (§5.4.1). With correct Raft the majority that stores a
/// current-term entry always refuses; committing an earlier term's entry by counting (Figure 8)
/// leaves a window where it does not, and this check catches that window.
pub fn check_commit_final(views: &[LogView], index: LogIndex, quorum: usize) -> Result<(), Broken> {
    for candidate in views.iter().filter(|view| !view.repairing) {
        let mut best: Option<(Term, LogIndex)> = None;
        if !candidate.durable_has {
            best = Some(candidate.durable);
        }
        if let Some((last, false)) = candidate.memory {
            best = best.max(Some(last));
        }
        let Some(log) = best else {
            continue;
        };
        let granted = views
            .iter()
            .filter(|voter| voter.id == candidate.id || (!voter.repairing && log >= voter.durable))
            .count();
        if granted >= quorum {
            return Err((
                "commit finality",
                format!(
                    "{} lacks committed entry {index} yet {granted} of {} nodes would vote for its log ending {}/{}",
                    candidate.id,
                    views.len(),
                    log.1,
                    log.0
                ),
            ));
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
