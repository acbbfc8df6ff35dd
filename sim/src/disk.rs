//! A node's simulated file system, under the runtime's real storage code
//! (`replog_runtime::fs::FileSystem`). Writes sit in a volatile layer until synced; a crash
//! keeps, for each file and for the folder, the synced part plus any prefix of the unsynced
//! operations, and the first write it loses may be torn (some of its bytes reach the platter).
//! Syncs may fail. Background syncs (group commit) complete when the world says so.
//!
//! The durable bytes are also read back through the runtime's own parsers (segments, snapshot,
//! metadata), so the checker judges what a message vouches for against what would survive a
//! crash right now.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use replog_core::{Entry, HardState, LogIndex, SnapshotMeta, Term};
use replog_runtime::fs::{FileSystem, LogFile};
use replog_runtime::storage;
use std::cell::{Ref, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The folder every simulated node keeps its data in (each node has its own disk).
pub const DATA_DIR: &str = "data";

/// A handle on one node's disk; clones share it (the storage code holds one, the world another).
#[derive(Clone, Debug)]
pub struct SimDisk {
    state: Rc<RefCell<DiskState>>,
}

#[derive(Debug)]
enum FileOp {
    Write { at: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct SimFile {
    durable: Vec<u8>,
    volatile: Vec<u8>,
    /// Operations since the last sync, oldest first; `synced` counts the ones before them.
    pending: VecDeque<FileOp>,
    synced: u64,
}

impl SimFile {
    fn issued(&self) -> u64 {
        self.synced + self.pending.len() as u64
    }

    /// Makes the operations up to `upto` (counted since creation) durable. Returns the lowest
    /// durable offset they changed.
    fn sync_to(&mut self, upto: u64) -> Option<u64> {
        let mut changed = None;
        while self.synced < upto {
            let op = self.pending.pop_front().expect("counted");
            let at = apply(&mut self.durable, &op);
            changed = Some(changed.map_or(at, |c: u64| c.min(at)));
            self.synced += 1;
        }
        changed
    }
}

fn apply(bytes: &mut Vec<u8>, op: &FileOp) -> u64 {
    match op {
        FileOp::Write { at, bytes: data } => {
            let at_usize = *at as usize;
            if bytes.len() < at_usize + data.len() {
                bytes.resize(at_usize + data.len(), 0);
            }
            bytes[at_usize..at_usize + data.len()].copy_from_slice(data);
            *at
        }
        FileOp::SetLen(len) => {
            bytes.resize(*len as usize, 0);
            *len
        }
    }
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(PathBuf, usize),
    Rename(PathBuf, PathBuf),
    Unlink(PathBuf),
}

fn apply_dir(dir: &mut BTreeMap<PathBuf, usize>, op: &DirOp) {
    match op {
        DirOp::Link(path, id) => {
            dir.insert(path.clone(), *id);
        }
        DirOp::Rename(from, to) => {
            if let Some(id) = dir.remove(from) {
                dir.insert(to.clone(), id);
            }
        }
        DirOp::Unlink(path) => {
            dir.remove(path);
        }
    }
}

/// One durable segment's records as the runtime's parser reads them, kept up to date
/// incrementally.
#[derive(Debug)]
struct ParsedSegment {
    first: LogIndex,
    entries: Vec<Entry>,
    /// Where each entry's record ends (after its newline).
    ends: Vec<u64>,
    /// The lowest durable offset changed since the last parse.
    dirty_from: Option<u64>,
}

/// The log recovery would find after a crash now: the durable snapshot, then the durable
/// segments it keeps, judged by the rules of `replog_runtime`'s recovery. Kept up to date
/// incrementally: a sync of the active segment re-reads that segment's new records only.
#[derive(Debug, Default)]
struct DurableView {
    /// The durable folder's segments, by file id (ids are never reused).
    parsed: HashMap<usize, ParsedSegment>,
    /// The durable segments, by first index: (first, file id).
    order: Vec<(LogIndex, usize)>,
    /// The durable snapshot's meta (`Some(None)`: there is none); `None` until parsed again.
    snapshot: Option<Option<SnapshotMeta>>,
    /// Segments whose durable bytes changed since the last walk.
    dirty: Vec<usize>,
    /// The folder or the snapshot changed: the walk starts over.
    rewalk: bool,
    /// The segments recovery reads, oldest first: from the first one the snapshot does not
    /// cover wholly, each starting where the one before ends, up to the first gap or damaged
    /// sealed segment: (file id, first index, last index). Entries the snapshot covers are
    /// still in (see `after`).
    walk: Vec<(usize, LogIndex, LogIndex)>,
    /// The position in `order` of `walk[0]`.
    start: usize,
    /// The last position of `order` the walk looked at.
    examined: Option<usize>,
    /// The first index after the snapshot.
    after: LogIndex,
    /// The walked log does not hold the snapshot's last entry, or ends at or before it: recovery
    /// keeps none of it.
    dropped: bool,
}

impl DurableView {
    fn is_fresh(&self) -> bool {
        !self.rewalk && self.dirty.is_empty() && self.snapshot.is_some()
    }

    /// The walked segments, each with the part of it recovery keeps (possibly empty).
    fn kept(&self) -> impl DoubleEndedIterator<Item = (usize, LogIndex, LogIndex)> + '_ {
        let walk = if self.dropped { &self.walk[..0] } else { &self.walk[..] };
        walk.iter().map(|&(id, first, last)| (id, first.max(self.after), last))
    }
}

/// The durable log as recovery would read it now (see [`SimDisk::durable_log`]).
#[derive(Debug)]
pub struct DurableLog<'a> {
    state: Ref<'a, DiskState>,
}

impl DurableLog<'_> {
    /// The snapshot the log starts after.
    pub fn snapshot(&self) -> Option<SnapshotMeta> {
        self.state.view.snapshot.flatten()
    }

    /// (term, index) of the last entry, or of the snapshot if the log after it is empty.
    pub fn last(&self) -> (Term, LogIndex) {
        match self.last_entry() {
            Some(entry) => (entry.term, entry.index),
            None => self
                .snapshot()
                .map_or((Term::ZERO, LogIndex::ZERO), |snapshot| (snapshot.term, snapshot.index)),
        }
    }

    /// The last entry after the snapshot, if any.
    pub fn last_entry(&self) -> Option<&Entry> {
        let (id, _, last) = self.state.view.kept().rev().find(|&(_, first, last)| first <= last)?;
        Some(self.entry_in(id, last))
    }

    /// Entry `index`, if the log after the snapshot holds it.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let view = &self.state.view;
        if view.dropped || index < view.after {
            return None;
        }
        let at = view.walk.partition_point(|&(_, _, last)| last < index);
        let &(id, first, _) = view.walk.get(at)?;
        (index >= first).then(|| self.entry_in(id, index))
    }

    /// True if a restart now would find entry `index` of `term`: in the log, or covered by the
    /// snapshot (which holds committed entries only, the same on every node; at its own index
    /// the term is checked).
    pub fn covers(&self, index: LogIndex, term: Term) -> bool {
        match self.snapshot() {
            Some(snapshot) if index < snapshot.index => true,
            Some(snapshot) if index == snapshot.index => term == snapshot.term,
            _ => self.entry(index).is_some_and(|entry| entry.term == term),
        }
    }

    /// The entries after the snapshot, in order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.state.view.kept().filter(|&(_, first, last)| first <= last).flat_map(move |(id, first, last)| {
            let segment = &self.state.view.parsed[&id];
            let range = (first.0 - segment.first.0) as usize..(last.0 + 1 - segment.first.0) as usize;
            segment.entries[range].iter()
        })
    }

    fn entry_in(&self, id: usize, index: LogIndex) -> &Entry {
        let segment = &self.state.view.parsed[&id];
        &segment.entries[(index.0 - segment.first.0) as usize]
    }
}

#[derive(Debug)]
struct DiskState {
    files: Vec<SimFile>,
    dir: BTreeMap<PathBuf, usize>,
    dir_durable: BTreeMap<PathBuf, usize>,
    dir_pending: Vec<DirOp>,
    /// Background syncs asked for: (seq, file, operations issued then).
    requests: VecDeque<(u64, usize, u64)>,
    synced_seq: u64,
    failed: bool,
    /// Handles from before a crash are dead.
    life: u64,
    rng: ChaCha8Rng,
    sync_fail_rate: f64,
    torn_rate: f64,
    sync_failures: u64,
    /// A sync failed in this life: the storage code must stop the node.
    failed_this_life: bool,
    view: DurableView,
    /// The durable hard state, parsed again only after the metadata may have changed.
    metadata: Option<(HardState, LogIndex)>,
    dir_path: PathBuf,
    meta_path: PathBuf,
    snapshot_path: PathBuf,
}

/// What a crash did to the unsynced operations.
#[derive(Debug, PartialEq, Eq)]
pub struct CrashLoss {
    pub kept: usize,
    pub lost: usize,
    pub torn: bool,
}

impl SimDisk {
    pub fn new(rng: ChaCha8Rng, sync_fail_rate: f64, torn_rate: f64) -> SimDisk {
        let state = DiskState {
            files: Vec::new(),
            dir: BTreeMap::new(),
            dir_durable: BTreeMap::new(),
            dir_pending: Vec::new(),
            requests: VecDeque::new(),
            synced_seq: 0,
            failed: false,
            life: 0,
            rng,
            sync_fail_rate,
            torn_rate,
            sync_failures: 0,
            failed_this_life: false,
            view: DurableView::default(),
            metadata: None,
            dir_path: PathBuf::from(DATA_DIR),
            meta_path: Path::new(DATA_DIR).join(storage::METADATA_FILE),
            snapshot_path: Path::new(DATA_DIR).join(storage::SNAPSHOT_FILE),
        };
        SimDisk { state: Rc::new(RefCell::new(state)) }
    }

    /// No more failed syncs or torn writes (the liveness phase).
    pub fn calm(&self) {
        let mut state = self.state.borrow_mut();
        state.sync_fail_rate = 0.0;
        state.torn_rate = 0.0;
    }

    pub fn sync_failures(&self) -> u64 {
        self.state.borrow().sync_failures
    }

    /// True if a sync failed since the last crash (an injected fault, which stops the node).
    pub fn has_failed_sync(&self) -> bool {
        self.state.borrow().failed_this_life
    }

    /// The newest background sync asked for and not yet complete, if any.
    pub fn requested(&self) -> Option<u64> {
        self.state.borrow().requests.back().map(|&(seq, _, _)| seq)
    }

    /// Completes the background syncs asked for up to `seq` (one fsync covering them all),
    /// unless the fsync fails: then every later one reports the failure.
    pub fn complete_syncs(&self, seq: u64) {
        let mut state = self.state.borrow_mut();
        if state.failed || state.requests.is_empty() {
            return;
        }
        if state.fails() {
            state.failed = true;
            return;
        }
        while state.requests.front().is_some_and(|&(s, _, _)| s <= seq) {
            let (s, file, ops) = state.requests.pop_front().expect("front");
            state.sync_file_to(file, ops);
            state.synced_seq = s;
        }
    }

    /// Loses the unsynced operations, except a random prefix of each file's and the folder's;
    /// the first write lost may be torn.
    pub fn crash(&self, rng: &mut ChaCha8Rng) -> CrashLoss {
        let mut state = self.state.borrow_mut();
        let torn_rate = state.torn_rate;
        let mut loss = CrashLoss { kept: 0, lost: 0, torn: false };
        let dir_ops = std::mem::take(&mut state.dir_pending);
        let keep = rng.random_range(0..=dir_ops.len());
        for op in &dir_ops[..keep] {
            apply_dir(&mut state.dir_durable, op);
        }
        for id in 0..state.files.len() {
            let file = &mut state.files[id];
            let pending = file.pending.len();
            let keep = rng.random_range(0..=pending);
            let mut changed = file.sync_to(file.synced + keep as u64);
            loss.kept += keep;
            loss.lost += pending - keep;
            if let Some(FileOp::Write { at, bytes }) = file.pending.pop_front() {
                if bytes.len() > 1 && torn_rate > 0.0 && rng.random_bool(torn_rate) {
                    let part = rng.random_range(1..bytes.len());
                    let at = apply(&mut file.durable, &FileOp::Write { at, bytes: bytes[..part].to_vec() });
                    changed = Some(changed.map_or(at, |c| c.min(at)));
                    loss.torn = true;
                }
            }
            file.pending.clear();
            file.synced = 0;
            file.volatile = file.durable.clone();
            if let Some(at) = changed {
                state.note_durable_change(id, at);
            }
        }
        state.dir = state.dir_durable.clone();
        state.on_durable_dir_change();
        state.requests.clear();
        state.synced_seq = 0;
        state.failed = false;
        state.failed_this_life = false;
        state.life += 1;
        loss
    }

    /// A storage fault on synced data (the node must be down): the last durable segment keeps
    /// only its first `keep` records, as if a disk that lied about syncs, or an operator, lost
    /// the rest.
    pub fn lose_records(&self, keep: usize) {
        let mut state = self.state.borrow_mut();
        let Some(id) = state.last_segment() else {
            return;
        };
        let ends = record_ends(&state.files[id].durable);
        let Some(&cut) = keep.checked_sub(1).map_or(Some(&0), |i| ends.get(i)) else {
            return;
        };
        let file = &mut state.files[id];
        file.durable.truncate(cut);
        file.volatile = file.durable.clone();
        state.note_durable_change(id, cut as u64);
    }

    /// A storage fault on synced data (the node must be down): one byte inside record
    /// `record` (from 0) of the last durable segment flips, as bit rot would.
    pub fn flip_byte_in_record(&self, record: usize) {
        let mut state = self.state.borrow_mut();
        let Some(id) = state.last_segment() else {
            return;
        };
        let ends = record_ends(&state.files[id].durable);
        let Some(&end) = ends.get(record) else {
            return;
        };
        let start = record.checked_sub(1).map_or(0, |i| ends[i]);
        // The middle of the record: inside its JSON, never its newline.
        let at = start + (end - start) / 2;
        let file = &mut state.files[id];
        file.durable[at] ^= 0x04;
        file.volatile = file.durable.clone();
        state.note_durable_change(id, at as u64);
    }

    /// A fault on the segment indexes alone (the node must be down): each durable index file
    /// is kept, removed, cut short, has a byte flipped, or takes another one's contents, at
    /// random. Indexes are a cache: recovery must find the same log whatever this does. Returns
    /// how many were changed.
    pub fn damage_indexes(&self, rng: &mut ChaCha8Rng) -> usize {
        let mut state = self.state.borrow_mut();
        let indexes: Vec<(PathBuf, usize)> = state
            .dir_durable
            .iter()
            .filter(|(path, _)| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| storage::parse_index_name(name).is_some())
            })
            .map(|(path, &id)| (path.clone(), id))
            .collect();
        let mut changed = 0;
        for &(ref path, id) in &indexes {
            assert!(state.files[id].pending.is_empty(), "indexes are damaged on a disk at rest");
            let len = state.files[id].durable.len();
            match rng.random_range(0..5) {
                0 => continue,
                1 => {
                    state.dir.remove(path);
                    state.dir_durable.remove(path);
                }
                2 => {
                    let keep = rng.random_range(0..len.max(1));
                    state.files[id].durable.truncate(keep);
                }
                3 if len > 0 => {
                    let at = rng.random_range(0..len);
                    state.files[id].durable[at] ^= 1 << rng.random_range(0..8);
                }
                _ => {
                    let (_, other) = indexes[rng.random_range(0..indexes.len())];
                    state.files[id].durable = state.files[other].durable.clone();
                }
            }
            let file = &mut state.files[id];
            file.volatile = file.durable.clone();
            changed += 1;
        }
        changed
    }

    /// The last durable segment's first index and how many good records it holds (what
    /// `lose_records` and `flip_byte_in_record` count in), if there is one.
    pub fn durable_last_segment(&self) -> Option<(LogIndex, usize)> {
        self.state.borrow_mut().refresh_view();
        let state = self.state.borrow();
        let &(first, id) = state.view.order.last()?;
        Some((first, state.view.parsed[&id].entries.len()))
    }

    /// The log that would survive a crash now, read by the runtime's parsers.
    pub fn durable_log(&self) -> DurableLog<'_> {
        self.state.borrow_mut().refresh_view();
        DurableLog { state: self.state.borrow() }
    }

    /// Panics unless the durable view kept up to date incrementally equals one built from
    /// scratch (for tests of the view itself).
    pub fn check_durable_view(&self) {
        let kept = {
            let log = self.durable_log();
            (log.snapshot(), log.entries().cloned().collect::<Vec<_>>(), log.last())
        };
        self.state.borrow_mut().view = DurableView::default();
        self.state.borrow_mut().on_durable_dir_change();
        let log = self.durable_log();
        let rebuilt = (log.snapshot(), log.entries().cloned().collect::<Vec<_>>(), log.last());
        assert_eq!(kept, rebuilt, "the durable view drifted from the disk");
    }

    /// The snapshot that would survive a crash now.
    pub fn durable_snapshot(&self) -> Option<SnapshotMeta> {
        self.durable_log().snapshot()
    }

    /// The durable log's last (term, index): its last entry's, or the snapshot's if it is empty.
    pub fn durable_last(&self) -> (Term, LogIndex) {
        self.durable_log().last()
    }

    /// Term, vote and commit as `metadata.json` would be read after a crash now.
    pub fn durable_hard_state(&self) -> HardState {
        self.durable_metadata().0
    }

    /// The index through which the durable metadata says lost entries are being repaired.
    pub fn durable_repair_to(&self) -> LogIndex {
        self.durable_metadata().1
    }

    fn durable_metadata(&self) -> (HardState, LogIndex) {
        let mut state = self.state.borrow_mut();
        if let Some(metadata) = state.metadata {
            return metadata;
        }
        let metadata = state
            .dir_durable
            .get(&state.meta_path)
            .and_then(|&id| storage::decode_metadata(&state.files[id].durable))
            .unwrap_or_default();
        state.metadata = Some(metadata);
        metadata
    }

    fn handle(&self) -> Handle {
        Handle { disk: self.clone(), life: self.state.borrow().life }
    }
}

impl DiskState {
    fn fails(&mut self) -> bool {
        let fails = self.sync_fail_rate > 0.0 && self.rng.random_bool(self.sync_fail_rate);
        self.sync_failures += u64::from(fails);
        self.failed_this_life |= fails;
        fails
    }

    fn sync_file_to(&mut self, id: usize, upto: u64) {
        if let Some(at) = self.files[id].sync_to(upto) {
            self.note_durable_change(id, at);
        }
    }

    /// The durable segment with the highest first index.
    fn last_segment(&mut self) -> Option<usize> {
        self.view.order.last().map(|&(_, id)| id)
    }

    fn note_durable_change(&mut self, id: usize, at: u64) {
        if let Some(segment) = self.view.parsed.get_mut(&id) {
            if segment.dirty_from.is_none() {
                self.view.dirty.push(id);
            }
            segment.dirty_from = Some(segment.dirty_from.map_or(at, |d| d.min(at)));
        } else if self.dir_durable.get(&self.snapshot_path) == Some(&id) {
            self.view.snapshot = None;
        } else {
            self.metadata = None;
        }
    }

    /// These folder operations became durable. Most are the metadata's replacement; segments
    /// and the snapshot are looked up again only where one was touched.
    fn on_durable_dir_ops(&mut self, ops: &[DirOp]) {
        self.metadata = None;
        for op in ops {
            let (first, second) = match op {
                DirOp::Link(path, _) | DirOp::Unlink(path) => (path, None),
                DirOp::Rename(from, to) => (from, Some(to)),
            };
            for path in std::iter::once(first).chain(second) {
                if *path == self.snapshot_path {
                    self.view.snapshot = None;
                    continue;
                }
                let Some(first) = segment_first(&self.dir_path, path) else {
                    continue;
                };
                let view = &mut self.view;
                if let Ok(at) = view.order.binary_search_by_key(&first, |&(first, _)| first) {
                    let (_, id) = view.order.remove(at);
                    view.parsed.remove(&id);
                }
                if let Some(&id) = self.dir_durable.get(path) {
                    let at = view.order.partition_point(|&(other, _)| other < first);
                    view.order.insert(at, (first, id));
                    view.parsed.insert(id, ParsedSegment::new(first));
                }
                view.rewalk = true;
            }
        }
    }

    /// After a crash: which files are the segments and the snapshot is read again (segments
    /// still there keep their parse).
    fn on_durable_dir_change(&mut self) {
        self.metadata = None;
        let view = &mut self.view;
        view.snapshot = None;
        view.rewalk = true;
        view.order = self
            .dir_durable
            .iter()
            .filter_map(|(path, &id)| Some((segment_first(&self.dir_path, path)?, id)))
            .collect();
        view.order.sort();
        let ids: std::collections::HashSet<usize> = view.order.iter().map(|&(_, id)| id).collect();
        view.parsed.retain(|id, _| ids.contains(id));
        for &(first, id) in &view.order {
            view.parsed.entry(id).or_insert_with(|| ParsedSegment::new(first));
        }
    }

    /// Brings the durable view up to date: changed segments read again from where they
    /// changed, and the walk redone from the first segment that changed.
    fn refresh_view(&mut self) {
        if self.view.is_fresh() {
            return;
        }
        if self.view.snapshot.is_none() {
            let snapshot = self
                .dir_durable
                .get(&self.snapshot_path)
                .and_then(|&id| storage::decode_snapshot(&self.files[id].durable).ok())
                .map(|snapshot| snapshot.meta);
            self.view.snapshot = Some(snapshot);
            self.view.rewalk = true;
        }
        let mut changed: Vec<usize> = std::mem::take(&mut self.view.dirty);
        if self.view.rewalk {
            changed = self.view.parsed.keys().copied().collect();
        }
        let mut from = None;
        for id in changed {
            let Some(segment) = self.view.parsed.get_mut(&id) else {
                continue; // removed since
            };
            if !segment.parse(&self.files[id].durable) {
                continue;
            }
            let at =
                self.view.order.binary_search(&(segment.first, id)).expect("parsed segments are in order");
            from = Some(from.map_or(at, |from: usize| from.min(at)));
        }
        if self.view.rewalk {
            self.walk_all();
        } else if let Some(from) = from {
            self.walk_from(from);
        }
        self.view.rewalk = false;
        self.judge_against_snapshot();
    }

    /// The walk from its start: the first segment the snapshot does not cover wholly (the
    /// next one starts at or before the entry after it).
    fn walk_all(&mut self) {
        let view = &mut self.view;
        view.after = view.snapshot.flatten().map_or(LogIndex(1), |snapshot| snapshot.index.next());
        let reaching = view.order.partition_point(|&(first, _)| first <= view.after);
        view.start = reaching.saturating_sub(1);
        view.walk.clear();
        view.examined = None;
        self.walk_on(self.view.start);
    }

    /// The walk again from position `at` of `order`, whose segment changed.
    fn walk_from(&mut self, at: usize) {
        let view = &mut self.view;
        if at < view.start || view.examined.is_none_or(|examined| at > examined) {
            return; // covered, or past where the walk stopped: it changes nothing
        }
        view.walk.truncate(at - view.start);
        self.walk_on(at);
    }

    /// Walks `order` from position `at` (the walk holds the positions before it): each segment
    /// must start where the walked log ends; a sealed one must be whole.
    fn walk_on(&mut self, at: usize) {
        let view = &mut self.view;
        for i in at..view.order.len() {
            view.examined = Some(i);
            let (first, id) = view.order[i];
            let expected = view.walk.last().map_or(view.after, |&(_, _, last)| last.next());
            if first > expected || (!view.walk.is_empty() && first != expected) {
                break; // a gap (or an overlap): recovery refuses, or cuts there
            }
            let segment = &view.parsed[&id];
            view.walk.push((id, first, LogIndex(first.0 + segment.entries.len() as u64 - 1)));
            let whole = segment.ends.last().copied().unwrap_or(0) == self.files[id].durable.len() as u64;
            if i + 1 < view.order.len() && !whole {
                break; // a damaged sealed segment: recovery refuses, or cuts there
            }
        }
    }

    /// A walked log that does not hold the snapshot's last entry, or ends at or before it, is
    /// dropped: the snapshot wins.
    fn judge_against_snapshot(&mut self) {
        let view = &mut self.view;
        view.dropped = match view.snapshot.flatten() {
            None => false,
            Some(snapshot) => {
                let last = view.walk.last().map_or(snapshot.index, |&(_, _, last)| last);
                let held = view.walk.first().and_then(|&(id, first, _)| {
                    let at = snapshot.index.0.checked_sub(first.0)?;
                    view.parsed[&id].entries.get(at as usize).map(|entry| entry.term)
                });
                last <= snapshot.index || held.is_some_and(|term| term != snapshot.term)
            }
        };
    }
}

impl ParsedSegment {
    fn new(first: LogIndex) -> ParsedSegment {
        ParsedSegment { first, entries: Vec::new(), ends: Vec::new(), dirty_from: Some(0) }
    }

    /// Reads again the records that end after the lowest changed offset; false if nothing
    /// changed since the last parse.
    fn parse(&mut self, durable: &[u8]) -> bool {
        let Some(from) = self.dirty_from.take() else {
            return false;
        };
        let keep = self.ends.partition_point(|&end| end <= from);
        self.entries.truncate(keep);
        self.ends.truncate(keep);
        let start = self.ends.last().copied().unwrap_or(0);
        let next = self.first.0 + self.entries.len() as u64;
        for (entry, end) in storage::scan_records(&durable[start as usize..], next) {
            self.entries.push(entry);
            self.ends.push(start + end as u64);
        }
        true
    }
}

/// The first index of the segment at `path`, if it is one in the data folder.
fn segment_first(dir: &Path, path: &Path) -> Option<LogIndex> {
    if path.parent() != Some(dir) {
        return None;
    }
    storage::parse_segment_name(path.file_name()?.to_str()?)
}

/// Where each line of `bytes` ends (after its newline).
fn record_ends(bytes: &[u8]) -> Vec<usize> {
    bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1).collect()
}

/// The storage code's view of the disk.
#[derive(Debug)]
pub struct Handle {
    disk: SimDisk,
    life: u64,
}

fn dead() -> io::Error {
    io::Error::other("the disk of a crashed node")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

fn sync_failed() -> io::Error {
    io::Error::other("fsync failed (simulated)")
}

impl Handle {
    fn state(&self) -> io::Result<std::cell::RefMut<'_, DiskState>> {
        let state = self.disk.state.borrow_mut();
        if state.life != self.life {
            return Err(dead());
        }
        Ok(state)
    }
}

/// The simulated file system, as `replog_runtime`'s storage sees it.
#[derive(Debug)]
pub struct SimFs(Handle);

impl SimFs {
    pub fn new(disk: &SimDisk) -> SimFs {
        SimFs(disk.handle())
    }
}

impl FileSystem for SimFs {
    type Log = SimLog;

    fn create_dir_all(&mut self, _dir: &Path) -> io::Result<()> {
        self.0.state().map(drop)
    }

    fn exists(&mut self, path: &Path) -> bool {
        self.0.state().is_ok_and(|state| state.dir.contains_key(path))
    }

    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.0.state()?;
        let id = *state.dir.get(path).ok_or_else(|| not_found(path))?;
        Ok(state.files[id].volatile.clone())
    }

    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let state = self.0.state()?;
        let id = *state.dir.get(path).ok_or_else(|| not_found(path))?;
        let volatile = &state.files[id].volatile;
        let start = (offset.min(volatile.len() as u64)) as usize;
        let end = start + len.min(volatile.len() - start);
        Ok(volatile[start..end].to_vec())
    }

    fn file_len(&mut self, path: &Path) -> io::Result<u64> {
        let state = self.0.state()?;
        let id = *state.dir.get(path).ok_or_else(|| not_found(path))?;
        Ok(state.files[id].volatile.len() as u64)
    }

    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.0.state()?;
        let id = match state.dir.get(path) {
            Some(&id) => {
                state.files[id].pending.push_back(FileOp::SetLen(0));
                id
            }
            None => state.create(path),
        };
        let file = &mut state.files[id];
        file.volatile.clear();
        file.volatile.extend_from_slice(bytes);
        file.pending.push_back(FileOp::Write { at: 0, bytes: bytes.to_vec() });
        Ok(())
    }

    fn append_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.0.state()?;
        let id = *state.dir.get(path).ok_or_else(|| not_found(path))?;
        let file = &mut state.files[id];
        let op = FileOp::Write { at: file.volatile.len() as u64, bytes: bytes.to_vec() };
        apply(&mut file.volatile, &op);
        file.pending.push_back(op);
        Ok(())
    }

    fn sync_file(&mut self, path: &Path) -> io::Result<()> {
        let mut state = self.0.state()?;
        let id = *state.dir.get(path).ok_or_else(|| not_found(path))?;
        if state.fails() {
            return Err(sync_failed());
        }
        let issued = state.files[id].issued();
        state.sync_file_to(id, issued);
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.0.state()?;
        if !state.dir.contains_key(from) {
            return Err(not_found(from));
        }
        let op = DirOp::Rename(from.to_path_buf(), to.to_path_buf());
        apply_dir(&mut state.dir, &op);
        state.dir_pending.push(op);
        Ok(())
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        let mut state = self.0.state()?;
        if !state.dir.contains_key(path) {
            return Err(not_found(path));
        }
        let op = DirOp::Unlink(path.to_path_buf());
        apply_dir(&mut state.dir, &op);
        state.dir_pending.push(op);
        Ok(())
    }

    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.0.state()?;
        let mut names: Vec<String> = state
            .dir
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| Some(path.file_name()?.to_str()?.to_string()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn sync_dir(&mut self, _dir: &Path) -> io::Result<()> {
        let mut state = self.0.state()?;
        if state.fails() {
            return Err(sync_failed());
        }
        let ops = std::mem::take(&mut state.dir_pending);
        for op in &ops {
            apply_dir(&mut state.dir_durable, op);
        }
        state.on_durable_dir_ops(&ops);
        Ok(())
    }

    fn open_log(&mut self, path: &Path) -> io::Result<SimLog> {
        let mut state = self.0.state()?;
        let id = match state.dir.get(path) {
            Some(&id) => id,
            None => state.create(path),
        };
        let end = state.files[id].volatile.len() as u64;
        drop(state);
        Ok(SimLog { handle: Handle { disk: self.0.disk.clone(), life: self.0.life }, file: id, end })
    }
}

impl DiskState {
    fn create(&mut self, path: &Path) -> usize {
        let id = self.files.len();
        self.files.push(SimFile::default());
        let op = DirOp::Link(path.to_path_buf(), id);
        apply_dir(&mut self.dir, &op);
        self.dir_pending.push(op);
        id
    }
}

/// A log segment, with background syncs the world completes.
#[derive(Debug)]
pub struct SimLog {
    handle: Handle,
    file: usize,
    end: u64,
}

impl LogFile for SimLog {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.handle.state()?;
        let file = &mut state.files[self.file];
        let op = FileOp::Write { at: self.end, bytes: bytes.to_vec() };
        apply(&mut file.volatile, &op);
        file.pending.push_back(op);
        self.end += bytes.len() as u64;
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut state = self.handle.state()?;
        let file = &mut state.files[self.file];
        let op = FileOp::SetLen(len);
        apply(&mut file.volatile, &op);
        file.pending.push_back(op);
        self.end = len;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut state = self.handle.state()?;
        if state.failed || state.fails() {
            state.failed = true;
            return Err(sync_failed());
        }
        let issued = state.files[self.file].issued();
        state.sync_file_to(self.file, issued);
        Ok(())
    }

    fn request_sync(&mut self, seq: u64) -> bool {
        if let Ok(mut state) = self.handle.state() {
            let issued = state.files[self.file].issued();
            state.requests.push_back((seq, self.file, issued));
        }
        true
    }

    fn synced(&mut self) -> io::Result<u64> {
        let state = self.handle.state()?;
        if state.failed {
            return Err(sync_failed());
        }
        Ok(state.synced_seq)
    }
}
