//! Durable state under `data/<node-id>/`. The folder holds:
//!
//! - `log-<first index, 20 digits>.jsonl` (`log-00000000000000000001.jsonl`, ...): the log, in
//!   segments (`segments.rs`). Each holds one JSON record per entry from the index its name
//!   gives, each record ending in a CRC-32 of the rest of its line:
//!   `{"index":1,"term":1,"type":"command","data":"user_login:alice","crc":3735928559}`
//!   (formats in `records.rs`). New entries go to the last (active) segment; once it passes
//!   [`StorageOptions::segment_bytes_max`] the next entry starts a new one, after the old one is
//!   synced whole and before the new one's name is made durable, so only the last segment can
//!   end in a torn record. The log starts after the snapshot: the first segment may still hold
//!   entries the snapshot covers (they are skipped), and segments wholly covered are removed.
//! - `log-<first index, 20 digits>.idx`: a sealed segment's index (`segment_index.rs`): its
//!   entries' range, term runs, no-ops and entry bytes, the byte offset of every 256th record,
//!   and its length and last record, written and synced when the segment is sealed. A cache:
//!   one that is missing, damaged, or does not match its segment is rebuilt at recovery.
//! - `snapshot.json`: the latest snapshot, one line `{"index":N,"term":T,"data":"...","crc":C}`
//!   (`"data_hex"` for bytes that are not UTF-8), replaced atomically (write
//!   `snapshot.json.tmp`, fsync, rename, fsync the folder) before the log it covers is removed.
//! - `snapshot.partial`: a snapshot being received: a header line (what it covers, its length and
//!   checksum, a CRC) and the bytes so far. Never synced: a cache, so a transfer resumes after a
//!   restart; the whole snapshot is checked against its checksum once complete.
//! - `metadata.json`: which node the folder belongs to (name, address, and the random id it drew
//!   at its first start), the configuration it bootstrapped with, term, vote (the id and address
//!   of the node voted for) and commit index, with the same kind of checksum, replaced atomically
//!   like the snapshot:
//!   `{"name":"node1","address":"127.0.0.1:8080","id":"9f0c...","term":3,"voted_for":{"id":
//!   "5a1e...","address":"127.0.0.1:8081"},"commit":42,"bootstrap":{"members":{...}},"crc":N}`.
//!
//! A folder of a version before segments holds the log in `log.jsonl`: at open it is renamed to
//! the first segment's name.
//!
//! Ordering (the core's prefix contract): a change of term or vote is made durable at once,
//! after the log writes issued before it and before any later log write can reach the disk,
//! so a durable entry of a term is never ahead of that term on disk, and a crash loses only a
//! suffix of the storage actions. Log writes are buffered and made durable by `sync` (group commit:
//! one fdatasync for everything written since). A commit-only change is written lazily (at most
//! every `COMMIT_WRITE_TICKS`, and at shutdown): the commit index is not needed for safety.
//! A snapshot is durable when `save_snapshot` returns.
//!
//! Recovery reads the index of each sealed segment, not the segment (it checks that the
//! segments exist, follow each other, and have the length and last record their index says),
//! and only the last segment record by record; so start-up costs one segment's parse however
//! long the log, and [`Recovery`] holds the last segment's entries, not the log's. Older entries
//! are read on demand with [`Storage::read_entries`] (ranged reads, at most 255 records before
//! the first one asked for). A torn last record of the last segment (a crash mid-write) is cut
//! off with a warning. A bad record anywhere else, a gap between segments, a damaged
//! `snapshot.json`, or a missing or unreadable metadata file next to a log is an error naming
//! the file (and line): data is never silently dropped. A bad record in a sealed segment with a
//! good index is found when it is read: `read_entries` then fails naming the file and line. A
//! log that disagrees with the snapshot (it does not hold the snapshot's last entry) is dropped
//! with a warning: the snapshot holds committed entries only.

use crate::fs::{FileSystem, LogFile};
use crate::records::{
    self, decode_partial_header, encode_partial_header, encode_record, json_string, PartialHeader,
};
use crate::segments::{self, Segments};
use replog_core::{
    Entry, HardState, LogIndex, Membership, NodeId, PartialSnapshot, Snapshot, SnapshotMeta, Term,
};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use crate::records::{decode_snapshot, scan_records};
pub use crate::segment_index::{index_name, parse_index_name, INDEX_STRIDE};
pub use crate::segments::{parse_segment_name, segment_name, LEGACY_LOG};

/// The commit index is written at most this often (in ticks), and at shutdown.
const COMMIT_WRITE_TICKS: u64 = 10;

/// A segment's size past which the next entry starts a new one.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// The latest snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot.json";
const SNAPSHOT_TEMP_FILE: &str = "snapshot.json.tmp";
/// A snapshot being received.
pub const PARTIAL_FILE: &str = "snapshot.partial";
/// Term, vote and commit index.
pub const METADATA_FILE: &str = "metadata.json";
const METADATA_TEMP_FILE: &str = "metadata.json.tmp";

/// How the storage lays out its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// Once the active segment is larger, the next entry starts a new one. Small values roll
    /// often (tests); each roll costs an fsync of the file and of the folder.
    pub segment_bytes_max: u64,
}

impl Default for StorageOptions {
    fn default() -> StorageOptions {
        StorageOptions { segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT }
    }
}

/// Which node a data folder belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub address: String,
}

#[derive(Debug)]
pub enum StorageError {
    Io {
        path: PathBuf,
        error: io::Error,
    },
    Corrupt {
        path: PathBuf,
        line: usize,
        why: String,
    },
    /// Log entries are missing between the snapshot and a segment, or between two segments.
    Missing {
        path: PathBuf,
        why: String,
    },
    Mismatch {
        path: PathBuf,
        why: String,
    },
    /// Entries asked for that the snapshot replaced.
    Compacted {
        from: LogIndex,
        first: LogIndex,
    },
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            StorageError::Corrupt { path, line, why } => write!(
                f,
                "{} line {line}: {why}; refusing to start (restore the file, or start with --repair to cut the log there and fetch the rest from the leader)",
                path.display()
            ),
            StorageError::Missing { path, why } => write!(
                f,
                "{}: {why}; refusing to start (restore the missing file, or start with --repair to cut the log there and fetch the rest from the leader)",
                path.display()
            ),
            StorageError::Mismatch { path, why } => write!(f, "{}: {why}", path.display()),
            StorageError::Compacted { from, first } => {
                write!(f, "entries from {from} asked for, but the log starts at {first} (a snapshot replaced the rest)")
            }
        }
    }
}

impl std::error::Error for StorageError {}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |error| StorageError::Io { path: path.to_path_buf(), error }
}

/// What to do with a damaged record before the log's tail (a torn tail is always cut: it is a
/// write a crash interrupted, never acknowledged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnCorruption {
    /// Refuse to start, naming the file and line (the default: data is never silently dropped).
    #[default]
    Refuse,
    /// Cut the log at the damaged record (or missing segment) and repair it from the cluster
    /// (`start --repair`).
    Repair,
}

/// What was found on disk at start.
#[derive(Debug)]
pub struct Recovery {
    /// Term, vote and commit as saved; the commit index never exceeds the log's last index, and
    /// is at least the snapshot's.
    pub hard_state: HardState,
    /// The latest snapshot saved.
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot held in the last segment: a suffix of the log, ending at
    /// `last_index` (the log's last entries, not all of them: read older ones with
    /// [`Storage::read_entries`]). Empty if the log is empty after the snapshot, and also
    /// if the last segment has just started (a crash right after a roll).
    pub entries: Vec<Entry>,
    /// The log's terms after the snapshot: (first index of a run of entries of one term, that
    /// term), ascending in both; empty if the log is empty after the snapshot.
    pub term_runs: Vec<(LogIndex, Term)>,
    /// The indexes of the leaders' no-op entries after the snapshot, ascending.
    pub noops: Vec<LogIndex>,
    /// The entries after the snapshot holding more than one client command (a session's
    /// batch), with how many, ascending.
    pub batches: Vec<(LogIndex, u64)>,
    /// Spans of the log after the snapshot that may hold session requests, ascending: a
    /// restart reads only these to rebuild the session table.
    pub request_spans: Vec<(LogIndex, LogIndex)>,
    /// The sum of [`Entry::size_bytes`] of the entries after the snapshot.
    pub entry_bytes: u64,
    /// The log's last index: its last entry's, or the snapshot's (or 0) if it is empty after
    /// the snapshot.
    pub last_index: LogIndex,
    /// The term of entry `last_index` (the snapshot's, or 0, likewise).
    pub last_term: Term,
    /// A snapshot being received when the node stopped, to resume.
    pub partial: Option<PartialSnapshot>,
    /// Committed entries this node held were lost through this index (its log ends before the
    /// commit index saved with it, or a damaged record was cut): the node must get them back
    /// from a leader before it votes (`replog_core::Recovered::repair_to`). Zero if none.
    pub repair_to: LogIndex,
    /// Things recovery repaired (a torn tail, a cut, a dropped log), for the log.
    pub warnings: Vec<String>,
}

/// How far the log is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Every write with a seq up to this one is durable (compare with [`Storage::barrier`]).
    pub seq: u64,
    /// The log is durable through this entry (the snapshot counts).
    pub last: LogIndex,
}

/// The bytes of a snapshot being received so far, as `snapshot.partial` holds them.
#[derive(Debug)]
struct Partial {
    header: PartialHeader,
    /// Data bytes after the header.
    len: u64,
}

/// The log, snapshot and metadata files of one node, on any [`FileSystem`].
///
/// Writes are buffered; `request_sync` hands them to the OS and asks for a sync (inline or on
/// the active segment's background thread); `durable` says, at any moment, how far the log is
/// durable. No call depends on another having been made first.
#[derive(Debug)]
pub struct Storage<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    options: StorageOptions,
    /// Invariant: every sealed segment is durable; the active one ends at the log's end.
    segments: Segments<F::Log>,
    identity: Identity,
    /// Invariant: the log's last index is at least the snapshot's.
    snapshot: Option<SnapshotMeta>,
    /// Some while `snapshot.partial` exists.
    partial: Option<Partial>,
    /// Serialized records not yet handed to the OS (all of the active segment).
    buffer: Vec<u8>,
    /// Bytes handed to the OS but not yet covered by a sync (inline or requested).
    log_dirty: bool,
    /// Bumped by every write or truncation handed to the OS: a sync covers the seqs issued
    /// before it started.
    write_seq: u64,
    durable: Durable,
    /// Background syncs asked for on the active segment: (seq, log length then), oldest first.
    in_flight: VecDeque<(u64, LogIndex)>,
    /// Truncations since: (seq, entries kept); a sync issued before one cannot vouch past it.
    truncations: Vec<(u64, LogIndex)>,
    hard: HardState,
    hard_written: HardState,
    ticks_since_commit_write: u64,
    /// The node's id, once recorded (`record_identity`); a folder of an older version has none.
    node_id: Option<NodeId>,
    /// The configuration the node bootstrapped with, once recorded.
    bootstrap: Option<Membership>,
    /// Addresses of members by id, so `voted_for` is written with the address it names.
    labels: std::collections::BTreeMap<NodeId, String>,
    /// While the log repairs lost entries, `metadata.json` records through which index
    /// (`repair_to`), so a restart mid-repair still knows what is missing.
    repair_floor: LogIndex,
    /// The commit index found on disk at start. It stays known committed even while a repair
    /// has the core start lower (its log was cut below it), so what is written never goes back.
    commit_known: LogIndex,
}

impl<F: FileSystem> Storage<F> {
    /// Opens (creating if needed) the folder and recovers what it holds; a damaged record
    /// before the tail is an error.
    pub fn open(fs: F, dir: &Path, identity: Identity) -> Result<(Storage<F>, Recovery), StorageError> {
        Storage::open_with(fs, dir, identity, OnCorruption::Refuse)
    }

    /// Opens the folder, doing `on_corruption` with a damaged record before the tail.
    pub fn open_with(
        fs: F,
        dir: &Path,
        identity: Identity,
        on_corruption: OnCorruption,
    ) -> Result<(Storage<F>, Recovery), StorageError> {
        Storage::open_with_options(fs, dir, identity, on_corruption, StorageOptions::default())
    }

    /// Opens the folder with these options, doing `on_corruption` with a damaged record before
    /// the tail.
    pub fn open_with_options(
        mut fs: F,
        dir: &Path,
        identity: Identity,
        on_corruption: OnCorruption,
        options: StorageOptions,
    ) -> Result<(Storage<F>, Recovery), StorageError> {
        fs.create_dir_all(dir).map_err(io_error(dir))?;
        let names = fs.list_dir(dir).map_err(io_error(dir))?;
        let names = segments::migrate_legacy(&mut fs, dir, names)?;
        let has = |name: &str| names.iter().any(|n| n == name);
        let snapshot = if has(SNAPSHOT_FILE) { Some(read_snapshot(&mut fs, dir)?) } else { None };
        let snapshot_meta = snapshot.as_ref().map(|snapshot| snapshot.meta);
        let mut plan = segments::plan(&mut fs, dir, &names, snapshot_meta, on_corruption)?;
        let meta_path = dir.join(METADATA_FILE);
        let meta = match fs.read(&meta_path) {
            Ok(bytes) => Some(parse_metadata(&meta_path, &bytes, &identity)?),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let log_entries = plan.last.0.saturating_sub(snapshot_meta.map_or(0, |meta| meta.index.0));
                if log_entries > 0 || snapshot.is_some() {
                    return Err(StorageError::Mismatch {
                        path: meta_path,
                        why: format!(
                            "missing, next to a log of {log_entries} entries{}: term and vote are unknown",
                            if snapshot.is_some() { " and a snapshot" } else { "" }
                        ),
                    });
                }
                None
            }
            Err(error) => return Err(StorageError::Io { path: meta_path, error }),
        };
        // What recovery found is settled; from here on it repairs.
        let mut warnings = std::mem::take(&mut plan.warnings);
        let entries = std::mem::take(&mut plan.entries);
        let term_runs = std::mem::take(&mut plan.term_runs);
        let noops = std::mem::take(&mut plan.noops);
        let batches = std::mem::take(&mut plan.batches);
        let request_spans = std::mem::take(&mut plan.request_spans);
        let entry_bytes = plan.entry_bytes;
        let damaged_at = plan.damaged_at;
        if has(SNAPSHOT_TEMP_FILE) {
            // A snapshot whose rename never happened: the one before it stands.
            let temp = dir.join(SNAPSHOT_TEMP_FILE);
            fs.remove_file(&temp).map_err(io_error(&temp))?;
        }
        let snapshot_index = snapshot_meta.map_or(LogIndex::ZERO, |meta| meta.index);
        let partial =
            if has(PARTIAL_FILE) { read_partial(&mut fs, dir, snapshot_index, &mut warnings)? } else { None };
        let (segments, created) = plan.apply(&mut fs)?;
        let last = segments.last_index();
        assert!(last >= snapshot_index, "the log ends at or after the snapshot");
        assert!(
            entries.first().is_none_or(|entry| entry.index > snapshot_index)
                && entries.last().is_none_or(|entry| entry.index == last),
            "recovered entries are a suffix of the log after the snapshot"
        );
        assert_eq!(
            term_runs.is_empty(),
            last == snapshot_index,
            "term runs cover the log after the snapshot"
        );
        let last_term = term_runs
            .last()
            .map(|&(_, term)| term)
            .or(snapshot_meta.map(|meta| meta.term))
            .unwrap_or(Term::ZERO);
        let fresh = meta.is_none();
        let (saved, repairing_to, node_id, bootstrap) = meta.unwrap_or_default();
        let repair_to = saved.commit.max(repairing_to).max(damaged_at.unwrap_or(LogIndex::ZERO));
        let repair_to = if repair_to > last { repair_to } else { LogIndex::ZERO };
        if repair_to > LogIndex::ZERO {
            warnings.insert(
                0,
                format!(
                    "{}: committed entries {}..={repair_to} are missing (lost or damaged on this disk); \
                     this node will not vote until a leader has restored them",
                    segments.active.path.display(),
                    last.next()
                ),
            );
        }
        // A snapshot holds committed entries only.
        let hard_state = HardState { commit: saved.commit.min(last).max(snapshot_index), ..saved };
        let durable = Durable { seq: 0, last };
        let mut storage = Storage {
            fs,
            dir: dir.to_path_buf(),
            options,
            segments,
            identity,
            snapshot: snapshot_meta,
            partial: partial
                .as_ref()
                .map(|(header, data)| Partial { header: header.clone(), len: data.len() as u64 }),
            buffer: Vec::with_capacity(64 * 1024),
            log_dirty: false,
            write_seq: 0,
            durable,
            in_flight: VecDeque::new(),
            truncations: Vec::new(),
            hard: hard_state,
            hard_written: saved,
            ticks_since_commit_write: 0,
            repair_floor: repair_to,
            commit_known: saved.commit.max(snapshot_index),
            node_id,
            bootstrap,
            labels: std::collections::BTreeMap::new(),
        };
        // A fresh folder gets its `metadata.json` with its first durable fact: the node's
        // identity (`record_identity`) or a term (`save_hard_state`, which precedes any entry),
        // so a folder whose first metadata has no id was written by an earlier version.
        if created || fresh {
            storage.fs.sync_dir(&storage.dir).map_err(io_error(&storage.dir))?;
        }
        let partial = partial.map(|(header, data)| PartialSnapshot {
            meta: header.meta,
            membership: header.membership,
            total: header.total,
            checksum: header.checksum,
            data,
        });
        storage.check_invariants();
        let recovery = Recovery {
            hard_state,
            snapshot,
            entries,
            term_runs,
            noops,
            batches,
            request_spans,
            entry_bytes,
            last_index: last,
            last_term,
            partial,
            repair_to,
            warnings,
        };
        Ok((storage, recovery))
    }

    /// The snapshot the log starts after, if any.
    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    /// The first index the log holds: the one after the snapshot's, or 1.
    pub fn first_index(&self) -> LogIndex {
        self.snapshot_index().next()
    }

    /// The log's last index (the snapshot's if the log after it is empty).
    pub fn last_index(&self) -> LogIndex {
        self.segments.last_index()
    }

    /// Buffers entries at the end of the log. Once the active segment is full, the next entry
    /// starts a new one (the old one is synced first, inline).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        for entry in entries {
            assert_eq!(entry.index, self.last_index().next(), "log appends are contiguous");
            let active = &self.segments.active;
            if active.tally.end > self.options.segment_bytes_max && active.last() >= active.first() {
                self.roll()?;
            }
            let start = self.buffer.len();
            encode_record(entry, &mut self.buffer);
            self.segments.active.tally.push(entry, (self.buffer.len() - start) as u64);
        }
        Ok(())
    }

    /// Removes entries `from` and after: one ftruncate, whatever the tail's length. Reaching
    /// into a sealed segment (uncommitted entries right after a roll) removes the segments after
    /// it and syncs the folder first.
    pub fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> {
        if from > self.last_index() {
            return Ok(());
        }
        // §5.4: only uncommitted entries are ever removed, and a snapshot holds committed ones.
        assert!(from > self.snapshot_index(), "a truncation never reaches into the snapshot");
        let keep = from.prev();
        if from < self.segments.active.first() {
            // The buffered records and everything in flight belong to the active segment,
            // which goes; the sealed ones are durable.
            self.check_background_syncs()?;
            self.buffer.clear();
            self.segments.reopen(&mut self.fs, from)?;
            self.in_flight.clear();
            self.truncations.clear();
        } else {
            self.flush_buffer()?;
        }
        let active = &mut self.segments.active;
        let at = active.tally.truncate(from);
        active.log.set_len(at).map_err(io_error(&active.path))?;
        self.durable.last = self.durable.last.min(keep);
        self.log_dirty = true;
        self.write_seq += 1;
        if !self.in_flight.is_empty() {
            self.truncations.push((self.write_seq, keep));
        }
        self.check_invariants();
        Ok(())
    }

    /// A new term or vote is made durable now (before later log writes can reach the disk);
    /// a new commit index only later.
    pub fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.hard = hard_state;
        if (hard_state.term, hard_state.voted_for) != (self.hard_written.term, self.hard_written.voted_for) {
            // Storage actions become durable in order (the core's contract): log writes issued
            // before this change are made durable before it is. Term and vote change rarely.
            // Sealed segments are durable already.
            self.flush_buffer()?;
            if self.log_dirty || !self.in_flight.is_empty() {
                let active = &mut self.segments.active;
                active.log.sync().map_err(io_error(&active.path))?;
            }
            self.write_metadata(hard_state)?;
        }
        Ok(())
    }

    /// Makes `snapshot` durable (atomically replacing the one before), then removes the log it
    /// covers: if the log holds the snapshot's last entry, the sealed segments that end at or
    /// before it (and the active one too if it is covered wholly); otherwise (a follower
    /// installing a leader's snapshot over a log that disagrees or is too short) the whole log.
    /// Removes `snapshot.partial`.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let meta = snapshot.meta;
        if let Some(current) = self.snapshot {
            assert!(meta.index >= current.index, "a snapshot never replaces a later one");
            assert!(meta.index > current.index || meta.term == current.term, "one entry, one term");
        }
        let holds = self.term_at(meta.index)? == Some(meta.term);
        self.write_snapshot(snapshot)?;
        self.snapshot = Some(meta);
        if holds && self.last_index() > meta.index {
            self.segments.remove_through(&mut self.fs, meta.index)?;
            self.durable.last = self.durable.last.max(meta.index);
        } else {
            // The whole log goes: what was buffered or in flight for it no longer matters.
            self.check_background_syncs()?;
            self.buffer.clear();
            self.segments.reset(&mut self.fs, meta.index.next())?;
            self.in_flight.clear();
            self.truncations.clear();
            self.log_dirty = false;
            self.write_seq += 1;
            self.durable = Durable { seq: self.write_seq, last: meta.index };
        }
        self.check_invariants();
        Ok(())
    }

    /// Stores a chunk of a snapshot being received in `snapshot.partial`, unsynced (a cache: a
    /// lost chunk is fetched again). `partial_meta` is (what it covers, total length, checksum).
    /// A chunk at offset 0 starts the file over; one elsewhere is kept only if it continues the
    /// same transfer exactly where the file ends, and is ignored otherwise.
    pub fn save_snapshot_chunk(
        &mut self,
        partial_meta: (SnapshotMeta, Membership, u64, u64),
        offset: u64,
        chunk: &[u8],
    ) -> Result<(), StorageError> {
        let (meta, membership, total, checksum) = partial_meta;
        let header = PartialHeader { meta, membership, total, checksum };
        if offset.checked_add(chunk.len() as u64).is_none_or(|end| end > total) {
            return Ok(()); // not a part of that snapshot
        }
        let path = self.dir.join(PARTIAL_FILE);
        if offset == 0 {
            let mut bytes = encode_partial_header(&header);
            bytes.extend_from_slice(chunk);
            self.fs.write_file(&path, &bytes).map_err(io_error(&path))?;
            self.partial = Some(Partial { header, len: chunk.len() as u64 });
            return Ok(());
        }
        match &mut self.partial {
            Some(partial) if partial.header == header && partial.len == offset => {
                self.fs.append_file(&path, chunk).map_err(io_error(&path))?;
                partial.len += chunk.len() as u64;
            }
            _ => {}
        }
        Ok(())
    }

    /// Entries `from..=to` (`to` past the log's end reads to the end), from the files, as
    /// written so far (durable or not, buffered records included): at least one if any is in
    /// range, and no more once their [`Entry::size_bytes`] pass `bytes_max`. Reads only the
    /// byte ranges that hold them (and at most [`INDEX_STRIDE`]` - 1` records before the first,
    /// in a sealed segment). [`StorageError::Compacted`] if `from` is before the log's first
    /// index (the snapshot replaced it); [`StorageError::Corrupt`] naming the file and line if a
    /// record read is damaged (recovery does not read sealed segments with a good index, so
    /// damage there is found here), never other data.
    pub fn read_entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if from < self.first_index() {
            return Err(StorageError::Compacted { from, first: self.first_index() });
        }
        let to = to.min(self.last_index());
        if from > to {
            return Ok(Vec::new());
        }
        self.flush_buffer()?;
        self.segments.read(&mut self.fs, from, to, bytes_max)
    }

    /// The write seq that everything written so far will carry once handed to the OS: once
    /// `durable().seq` reaches it, all of it is durable.
    pub fn barrier(&self) -> u64 {
        self.write_seq + u64::from(!self.buffer.is_empty())
    }

    /// Hands buffered writes to the OS and asks for a sync covering them: on the active
    /// segment's background thread (which merges requests that arrive while it is busy: group
    /// commit), or here when `inline_if_idle` and nothing else is in flight (two thread
    /// hand-offs cost more than they save when no other work is waiting), or when the file
    /// cannot sync in the background.
    pub fn request_sync(&mut self, inline_if_idle: bool) -> Result<(), StorageError> {
        self.flush_buffer()?;
        if !self.log_dirty {
            return Ok(());
        }
        if inline_if_idle && self.in_flight.is_empty() {
            return self.sync_now();
        }
        if !self.segments.active.log.request_sync(self.write_seq) {
            return self.sync_now();
        }
        self.in_flight.push_back((self.write_seq, self.last_index()));
        self.log_dirty = false;
        Ok(())
    }

    /// How far the log is durable now, counting background syncs that have completed. An
    /// error if a sync failed: the node must stop (it never acknowledges what is not durable).
    pub fn durable(&mut self) -> Result<Durable, StorageError> {
        if self.in_flight.is_empty() {
            return Ok(self.durable);
        }
        let active = &mut self.segments.active;
        let completed = active.log.synced().map_err(io_error(&active.path))?;
        let mut advanced = false;
        while let Some(&(seq, last)) = self.in_flight.front() {
            if seq > completed {
                break;
            }
            self.in_flight.pop_front();
            // Entries truncated after this sync was asked for are not what it made durable.
            let floor = self.truncations.iter().filter(|(at, _)| *at > seq).map(|(_, kept)| *kept).min();
            assert!(seq >= self.durable.seq, "durable seq never goes back");
            // A snapshot saved since covers what it had not reached.
            let last = floor.map_or(last, |kept| last.min(kept)).max(self.snapshot_index());
            self.durable = Durable { seq, last };
            advanced = true;
        }
        if advanced {
            let oldest = self.in_flight.front().map_or(u64::MAX, |(seq, _)| *seq);
            self.truncations.retain(|(at, _)| *at > oldest.min(self.durable.seq));
        }
        assert!(self.durable.last <= self.last_index(), "durable within the log");
        Ok(self.durable)
    }

    /// How far the log was durable when last checked (by `durable`, a sync or a truncation):
    /// never ahead of the truth, possibly behind it.
    pub fn durable_known(&self) -> Durable {
        self.durable
    }

    /// One tick passed: a changed commit index is written when due.
    pub fn on_tick(&mut self) -> Result<(), StorageError> {
        self.ticks_since_commit_write += 1;
        if self.hard.commit != self.hard_written.commit && self.ticks_since_commit_write >= COMMIT_WRITE_TICKS
        {
            self.durable()?;
            self.write_metadata(self.hard)?;
        }
        Ok(())
    }

    /// Everything durable, commit index included (clean shutdown).
    pub fn close(mut self) -> Result<(), StorageError> {
        self.flush_buffer()?;
        let active = &mut self.segments.active;
        active.log.sync().map_err(io_error(&active.path))?;
        self.in_flight.clear();
        self.durable = Durable { seq: self.write_seq, last: self.last_index() };
        if self.hard.commit != self.hard_written.commit {
            self.write_metadata(self.hard)?;
        }
        Ok(())
    }

    /// The file system this storage writes to.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    fn snapshot_index(&self) -> LogIndex {
        self.snapshot.map_or(LogIndex::ZERO, |snapshot| snapshot.index)
    }

    /// The term of entry `index`, if the log holds it (or the snapshot ends at it).
    fn term_at(&mut self, index: LogIndex) -> Result<Option<Term>, StorageError> {
        if let Some(snapshot) = self.snapshot.filter(|snapshot| snapshot.index == index) {
            return Ok(Some(snapshot.term));
        }
        if index < self.first_index() || index > self.last_index() {
            return Ok(None);
        }
        Ok(self.read_entries(index, index, 0)?.first().map(|entry| entry.term))
    }

    /// The active segment is full: it is made durable whole (so nothing is in flight on it and
    /// a sealed segment is never torn), then the next one starts.
    fn roll(&mut self) -> Result<(), StorageError> {
        self.flush_buffer()?;
        let active = &mut self.segments.active;
        active.log.sync().map_err(io_error(&active.path))?;
        self.check_background_syncs()?;
        self.in_flight.clear();
        self.truncations.clear();
        self.log_dirty = false;
        self.durable = Durable { seq: self.write_seq, last: self.last_index() };
        self.segments.roll(&mut self.fs)
    }

    /// Before the active segment's file handle goes: a background sync that failed on it is
    /// never forgotten (nothing after a failed fsync can be trusted).
    fn check_background_syncs(&mut self) -> Result<(), StorageError> {
        if !self.in_flight.is_empty() {
            let active = &mut self.segments.active;
            active.log.synced().map_err(io_error(&active.path))?;
        }
        Ok(())
    }

    /// Makes every log write so far durable now, on this thread (one fdatasync).
    fn sync_now(&mut self) -> Result<(), StorageError> {
        let active = &mut self.segments.active;
        active.log.sync().map_err(io_error(&active.path))?;
        self.log_dirty = false;
        assert!(self.in_flight.is_empty(), "an inline sync never overtakes background ones");
        self.durable = Durable { seq: self.write_seq, last: self.last_index() };
        Ok(())
    }

    fn flush_buffer(&mut self) -> Result<(), StorageError> {
        if !self.buffer.is_empty() {
            let active = &mut self.segments.active;
            active.log.append(&self.buffer).map_err(io_error(&active.path))?;
            self.buffer.clear();
            self.log_dirty = true;
            self.write_seq += 1;
        }
        Ok(())
    }

    /// Invariants that, broken, would lose or misplace entries.
    fn check_invariants(&self) {
        let snapshot_index = self.snapshot_index();
        assert!(self.last_index() >= snapshot_index, "the log ends at or after the snapshot");
        assert!(self.durable.last <= self.last_index(), "durable within the log");
        if let Some(sealed) = self.segments.sealed.last() {
            assert_eq!(sealed.last().next(), self.segments.active.first(), "segments are contiguous");
            assert!(self.durable.last >= sealed.last(), "sealed segments are durable");
        }
        if let Some(first) = self.segments.sealed.first() {
            assert!(first.last() > snapshot_index, "sealed segments the snapshot covers are removed");
        }
    }

    /// write, fsync, remove the partial, rename, fsync the folder: one folder sync makes the
    /// snapshot and the partial's removal durable, in that order or neither.
    fn write_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let path = self.dir.join(SNAPSHOT_FILE);
        let temp = self.dir.join(SNAPSHOT_TEMP_FILE);
        self.fs.write_file(&temp, &records::encode_snapshot(snapshot)).map_err(io_error(&temp))?;
        self.fs.sync_file(&temp).map_err(io_error(&temp))?;
        if self.partial.take().is_some() {
            let partial = self.dir.join(PARTIAL_FILE);
            self.fs.remove_file(&partial).map_err(io_error(&partial))?;
        }
        self.fs.rename(&temp, &path).map_err(io_error(&path))?;
        self.fs.sync_dir(&self.dir).map_err(io_error(&self.dir))
    }

    /// write, fsync, rename, fsync the folder. The commit written never exceeds the durable log.
    /// Records who this node is: its id and (once known) the configuration it bootstrapped
    /// with; durable when this returns. A recorded id never changes: a folder belongs to one
    /// node for its whole life.
    pub fn record_identity(&mut self, id: NodeId, bootstrap: Option<Membership>) -> Result<(), StorageError> {
        assert!(self.node_id.is_none_or(|known| known == id), "a data folder's node id never changes");
        self.node_id = Some(id);
        if bootstrap.is_some() {
            self.bootstrap = bootstrap;
        }
        self.write_metadata(self.hard)
    }

    /// The id recorded in `metadata.json`, if any.
    pub fn node_id(&self) -> Option<NodeId> {
        self.node_id
    }

    /// The configuration recorded as this node's bootstrap, if any.
    pub fn bootstrap(&self) -> Option<&Membership> {
        self.bootstrap.as_ref()
    }

    /// Remembers `address` for member `id`, so a vote for it names it in `metadata.json`.
    pub fn label_member(&mut self, id: NodeId, address: String) {
        self.labels.insert(id, address);
    }

    /// Forgets the labels of the nodes `keep` refuses.
    pub fn retain_labels(&mut self, keep: impl Fn(NodeId) -> bool) {
        self.labels.retain(|&id, _| keep(id));
    }

    fn write_metadata(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        if self.durable.last >= self.repair_floor {
            self.repair_floor = LogIndex::ZERO; // repaired
        }
        let commit = hard_state.commit.max(self.commit_known).min(self.durable.last);
        let hard_state = HardState { commit, ..hard_state };
        let path = self.dir.join(METADATA_FILE);
        let temp = self.dir.join(METADATA_TEMP_FILE);
        let mut text = format!(
            "{{\"name\":{},\"address\":{}",
            json_string(&self.identity.name),
            json_string(&self.identity.address)
        );
        if let Some(id) = self.node_id {
            text.push_str(&format!(",\"id\":\"{}\"", id_text(id)));
        }
        let voted_for = match hard_state.voted_for {
            None => "null".to_string(),
            Some(id) => format!(
                "{{\"id\":\"{}\",\"address\":{}}}",
                id_text(id),
                json_string(self.labels.get(&id).map_or("", String::as_str))
            ),
        };
        text.push_str(&format!(
            ",\"term\":{},\"voted_for\":{voted_for},\"commit\":{}",
            hard_state.term.0, hard_state.commit.0
        ));
        if let Some(bootstrap) = &self.bootstrap {
            text.push_str(",\"bootstrap\":");
            text.push_str(&serde_json::to_string(bootstrap).expect("a configuration serializes"));
        }
        if self.repair_floor > LogIndex::ZERO {
            text.push_str(&format!(",\"repair_to\":{}", self.repair_floor.0));
        }
        let crc = crc32fast::hash(text.as_bytes());
        text.push_str(&format!(",\"crc\":{crc}}}\n"));
        self.fs.write_file(&temp, text.as_bytes()).map_err(io_error(&temp))?;
        self.fs.sync_file(&temp).map_err(io_error(&temp))?;
        self.fs.rename(&temp, &path).map_err(io_error(&path))?;
        self.fs.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        self.hard_written = hard_state;
        self.ticks_since_commit_write = 0;
        Ok(())
    }
}

/// `snapshot.json`, which must be whole: a damaged snapshot is an error, never skipped (the log
/// it replaced may be gone).
fn read_snapshot<F: FileSystem>(fs: &mut F, dir: &Path) -> Result<Snapshot, StorageError> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = fs.read(&path).map_err(io_error(&path))?;
    decode_snapshot(&bytes).map_err(|why| StorageError::Corrupt { path, line: 1, why })
}

/// `snapshot.partial`, if it is readable and newer than the snapshot; otherwise it is removed
/// (it is only a cache), with a warning if it was damaged.
fn read_partial<F: FileSystem>(
    fs: &mut F,
    dir: &Path,
    snapshot_index: LogIndex,
    warnings: &mut Vec<String>,
) -> Result<Option<(PartialHeader, Vec<u8>)>, StorageError> {
    let path = dir.join(PARTIAL_FILE);
    let bytes = fs.read(&path).map_err(io_error(&path))?;
    let read = decode_partial_header(&bytes).and_then(|(header, start)| {
        let data = bytes[start..].to_vec();
        if data.len() as u64 > header.total {
            return Err(format!("{} bytes of a snapshot of {}", data.len(), header.total));
        }
        Ok((header, data))
    });
    match read {
        Ok((header, data)) if header.meta.index > snapshot_index => return Ok(Some((header, data))),
        Ok(_) => {} // a transfer the saved snapshot has overtaken
        Err(why) => warnings.push(format!("{}: ignored ({why}); the transfer starts over", path.display())),
    }
    fs.remove_file(&path).map_err(io_error(&path))?;
    Ok(None)
}

/// What a `metadata.json` holds, if it is complete and its checksum holds: the hard state,
/// and the index through which lost committed entries are still being repaired (zero if none).
pub fn decode_metadata(bytes: &[u8]) -> Option<(HardState, LogIndex)> {
    let meta = read_metadata(bytes).ok()?;
    Some((meta.hard_state().ok()?, LogIndex(meta.repair_to)))
}

#[derive(serde::Deserialize)]
pub(crate) struct Meta {
    pub(crate) name: String,
    pub(crate) address: String,
    /// Absent in folders of versions before node ids were drawn at random.
    #[serde(default)]
    pub(crate) id: Option<String>,
    term: u64,
    voted_for: Option<Vote>,
    commit: u64,
    /// Present only while a repair is under way.
    #[serde(default)]
    pub(crate) repair_to: u64,
    #[serde(default)]
    pub(crate) bootstrap: Option<Membership>,
}

/// `voted_for` as written now (the id and the address it names) or by older versions (a number).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Vote {
    Named { id: String },
    Legacy(u64),
}

impl Meta {
    pub(crate) fn hard_state(&self) -> Result<HardState, String> {
        let voted_for = match &self.voted_for {
            None => None,
            Some(Vote::Legacy(id)) => Some(NodeId(*id)),
            Some(Vote::Named { id }) => Some(parse_id(id)?),
        };
        Ok(HardState { term: Term(self.term), voted_for, commit: LogIndex(self.commit) })
    }
}

/// A node id as the data folder and the operator commands show it: 16 hex digits.
pub fn id_text(id: NodeId) -> String {
    format!("{:016x}", id.0)
}

/// The id `id_text` wrote.
pub fn parse_id(text: &str) -> Result<NodeId, String> {
    if text.len() != 16 {
        return Err(format!("node id {text:?} is not 16 hex digits"));
    }
    u64::from_str_radix(text, 16).map(NodeId).map_err(|_| format!("node id {text:?} is not 16 hex digits"))
}

/// Who a data folder says it is, read before the node starts: its id (None for a folder of a
/// version before random ids) and the configuration it bootstrapped with. None: no readable
/// `metadata.json` (a fresh folder; `Storage::open` reports damage with the details).
pub fn stored_identity(fs: &mut impl FileSystem, dir: &Path) -> Option<(Option<NodeId>, Option<Membership>)> {
    let bytes = fs.read(&dir.join(METADATA_FILE)).ok()?;
    let meta = read_metadata(&bytes).ok()?;
    let id = meta.id.as_deref().map(parse_id).transpose().ok()?;
    Some((id, meta.bootstrap))
}

pub(crate) fn read_metadata(bytes: &[u8]) -> Result<Meta, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let line = text.trim_end();
    records::checked(line)?;
    serde_json::from_str(line).map_err(|e| format!("unreadable: {e}"))
}

fn parse_metadata(path: &Path, bytes: &[u8], identity: &Identity) -> Result<ParsedMeta, StorageError> {
    let meta = read_metadata(bytes).map_err(|why| StorageError::Corrupt {
        path: path.to_path_buf(),
        line: 1,
        why,
    })?;
    if meta.address != identity.address {
        return Err(StorageError::Mismatch {
            path: path.to_path_buf(),
            why: format!(
                "this folder belongs to {} at {}, not to {} at {}; a node's address is its identity in the cluster",
                meta.name, meta.address, identity.name, identity.address
            ),
        });
    }
    let corrupt = |why: String| StorageError::Corrupt { path: path.to_path_buf(), line: 1, why };
    let hard_state = meta.hard_state().map_err(corrupt)?;
    let id = meta.id.as_deref().map(parse_id).transpose().map_err(corrupt)?;
    Ok((hard_state, LogIndex(meta.repair_to), id, meta.bootstrap))
}

/// What `metadata.json` held: hard state, repair index, id, bootstrap configuration.
type ParsedMeta = (HardState, LogIndex, Option<NodeId>, Option<Membership>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;
    use replog_core::{Bytes, Payload};
    use std::fs;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn open(dir: &Path, identity: Identity) -> Result<(Storage<RealFs>, Recovery), StorageError> {
        Storage::open(RealFs::new(), dir, identity)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("replog-storage-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn identity() -> Identity {
        Identity { name: "node1".into(), address: "127.0.0.1:8080".into() }
    }

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry { index: LogIndex(index), term: Term(term), payload: Payload::Command(Bytes::from(data)) }
    }

    #[test]
    fn a_fresh_folders_first_metadata_names_its_id_and_one_without_is_an_earlier_versions() {
        let dir = temp_dir("identity");
        let (mut storage, _) = open(&dir, identity()).unwrap();
        // Nothing durable yet: a crash here leaves a fresh folder, never one that looks legacy.
        assert!(!dir.join(METADATA_FILE).exists());
        assert_eq!(stored_identity(&mut RealFs::new(), &dir), None);
        let bootstrap = Membership::voters_only([NodeId(0xab)]);
        storage.record_identity(NodeId(0xab), Some(bootstrap.clone())).unwrap();
        let text = fs::read_to_string(dir.join(METADATA_FILE)).unwrap();
        assert!(text.contains(r#""id":"00000000000000ab""#), "{text}");
        assert_eq!(stored_identity(&mut RealFs::new(), &dir), Some((Some(NodeId(0xab)), Some(bootstrap))));
        storage.label_member(NodeId(0xab), "127.0.0.1:8080".into());
        storage
            .save_hard_state(HardState { term: Term(1), voted_for: Some(NodeId(0xab)), commit: LogIndex(0) })
            .unwrap();
        let text = fs::read_to_string(dir.join(METADATA_FILE)).unwrap();
        assert!(
            text.contains(r#""voted_for":{"id":"00000000000000ab","address":"127.0.0.1:8080"}"#),
            "{text}"
        );
        storage.close().unwrap();
        // An earlier version's metadata: no id, a numeric vote. Read as legacy, even at term 0.
        let legacy = temp_dir("identity-legacy");
        let line = r#"{"name":"node1","address":"127.0.0.1:8080","term":0,"voted_for":7,"commit":0"#;
        let crc = crc32fast::hash(line.as_bytes());
        fs::create_dir_all(&legacy).unwrap();
        fs::write(legacy.join(METADATA_FILE), format!("{line},\"crc\":{crc}}}\n")).unwrap();
        assert_eq!(stored_identity(&mut RealFs::new(), &legacy), Some((None, None)));
        let (_, recovery) = open(&legacy, identity()).unwrap();
        assert_eq!(recovery.hard_state.voted_for, Some(NodeId(7)));
    }

    #[test]
    fn write_sync_reopen_truncate() {
        let dir = temp_dir("basic");
        let (mut storage, recovery) = open(&dir, identity()).unwrap();
        assert!(recovery.entries.is_empty());
        storage
            .save_hard_state(HardState { term: Term(2), voted_for: Some(NodeId(5)), commit: LogIndex(0) })
            .unwrap();
        storage
            .append(&[
                entry(1, 1, "a"),
                entry(2, 2, "quote\"and\\slash"),
                Entry { index: LogIndex(3), term: Term(2), payload: Payload::Noop },
            ])
            .unwrap();
        storage
            .append(&[Entry {
                index: LogIndex(4),
                term: Term(2),
                payload: Payload::Command(Bytes::from(vec![0xff, 0])),
            }])
            .unwrap();
        storage.request_sync(true).unwrap();
        storage.truncate(LogIndex(3)).unwrap();
        storage.append(&[entry(3, 2, "c")]).unwrap();
        storage
            .save_hard_state(HardState { term: Term(2), voted_for: Some(NodeId(5)), commit: LogIndex(3) })
            .unwrap();
        storage.close().unwrap();
        let (_, recovery) = open(&dir, identity()).unwrap();
        assert_eq!(
            recovery.hard_state,
            HardState { term: Term(2), voted_for: Some(NodeId(5)), commit: LogIndex(3) }
        );
        assert_eq!(
            recovery.entries,
            vec![entry(1, 1, "a"), entry(2, 2, "quote\"and\\slash"), entry(3, 2, "c")]
        );
        assert!(recovery.warnings.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn background_syncs_vouch_only_for_what_they_covered() {
        let dir = temp_dir("syncer");
        let poll = mio::Poll::new().unwrap();
        let fs =
            RealFs::with_background_sync(Arc::new(mio::Waker::new(poll.registry(), mio::Token(7)).unwrap()));
        let (mut storage, _) = Storage::open(fs, &dir, identity()).unwrap();
        let wait = |storage: &mut Storage<RealFs>, seq: u64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while storage.durable().unwrap().seq < seq {
                assert!(Instant::now() < deadline, "sync never completed");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        storage.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]).unwrap();
        let barrier = storage.barrier();
        storage.request_sync(false).unwrap();
        wait(&mut storage, barrier);
        assert_eq!(storage.durable().unwrap().last, LogIndex(3));
        // A sync asked for entries 4..5 cannot vouch for them once they are truncated.
        storage.append(&[entry(4, 1, "d"), entry(5, 1, "e")]).unwrap();
        let first = storage.barrier();
        storage.request_sync(false).unwrap();
        storage.truncate(LogIndex(4)).unwrap();
        wait(&mut storage, first);
        assert_eq!(storage.durable().unwrap().last, LogIndex(3));
        storage.append(&[entry(4, 2, "D")]).unwrap();
        let second = storage.barrier();
        storage.request_sync(false).unwrap();
        wait(&mut storage, second);
        assert_eq!(storage.durable().unwrap().last, LogIndex(4));
        storage.close().unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn torn_tail_is_cut_and_middle_corruption_refused() {
        let dir = temp_dir("torn");
        let (mut storage, _) = open(&dir, identity()).unwrap();
        storage.save_hard_state(HardState { term: Term(1), voted_for: None, commit: LogIndex(0) }).unwrap();
        storage.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]).unwrap();
        storage.request_sync(true).unwrap();
        drop(storage);
        let log = dir.join(segment_name(LogIndex(1)));
        let mut bytes = fs::read(&log).unwrap();
        let full = bytes.clone();
        bytes.truncate(bytes.len() - 5);
        fs::write(&log, &bytes).unwrap();
        let (_, recovery) = open(&dir, identity()).unwrap();
        assert_eq!(recovery.entries.len(), 2);
        assert_eq!(recovery.warnings.len(), 1, "{:?}", recovery.warnings);
        // A flipped byte in the first record is corruption, not a torn tail.
        let mut corrupt = full.clone();
        corrupt[20] ^= 0x01;
        fs::write(&log, &corrupt).unwrap();
        let error = open(&dir, identity()).unwrap_err().to_string();
        assert!(error.contains(&format!("{} line 1", segment_name(LogIndex(1)))), "{error}");
        // A log without metadata is refused; a folder of another node too.
        fs::write(&log, &full).unwrap();
        let other = Identity { name: "node2".into(), address: "127.0.0.1:9".into() };
        assert!(open(&dir, other).unwrap_err().to_string().contains("belongs to node1"));
        fs::remove_file(dir.join("metadata.json")).unwrap();
        assert!(open(&dir, identity()).unwrap_err().to_string().contains("missing"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn lost_committed_entries_are_repaired_not_forgotten() {
        let dir = temp_dir("repair");
        let (mut storage, _) = open(&dir, identity()).unwrap();
        let entries: Vec<Entry> = (1..=6).map(|i| entry(i, 1, "x")).collect();
        storage.append(&entries).unwrap();
        storage.request_sync(true).unwrap();
        storage.save_hard_state(HardState { term: Term(1), voted_for: None, commit: LogIndex(6) }).unwrap();
        storage.close().unwrap();
        let log = dir.join(segment_name(LogIndex(1)));
        let full = fs::read(&log).unwrap();
        // A disk that lost the last two (synced, committed) records.
        let lines: Vec<&[u8]> = full.split_inclusive(|&b| b == b'\n').collect();
        fs::write(&log, lines[..4].concat()).unwrap();
        let (mut storage, recovery) = open(&dir, identity()).unwrap();
        assert_eq!((recovery.entries.len(), recovery.repair_to), (4, LogIndex(6)));
        assert_eq!(recovery.hard_state.commit, LogIndex(4), "the commit handed on is within the log");
        // A restart before the repair finished still knows what is missing.
        storage.save_hard_state(HardState { term: Term(2), voted_for: None, commit: LogIndex(4) }).unwrap();
        drop(storage);
        let (mut storage, recovery) = open(&dir, identity()).unwrap();
        assert_eq!(recovery.repair_to, LogIndex(6));
        // Restored from the leader: the floor is gone once the log is durable past it.
        storage.append(&[entry(5, 2, "y"), entry(6, 2, "z")]).unwrap();
        storage.request_sync(true).unwrap();
        storage.save_hard_state(HardState { term: Term(2), voted_for: None, commit: LogIndex(5) }).unwrap();
        storage.close().unwrap();
        let (_, recovery) = open(&dir, identity()).unwrap();
        assert_eq!((recovery.repair_to, recovery.hard_state.commit), (LogIndex::ZERO, LogIndex(5)));
        // A damaged record in the middle: refused, or cut and repaired on request.
        let mut damaged = lines.concat();
        damaged[lines[0].len() + 5] ^= 0x20;
        fs::write(&log, &damaged).unwrap();
        assert!(open(&dir, identity()).unwrap_err().to_string().contains("line 2"));
        let (_, recovery) =
            Storage::open_with(RealFs::new(), &dir, identity(), OnCorruption::Repair).unwrap();
        assert_eq!((recovery.entries.len(), recovery.repair_to), (1, LogIndex(5)));
        assert!(recovery.warnings.iter().any(|w| w.contains("--repair")), "{:?}", recovery.warnings);
        let _ = fs::remove_dir_all(&dir);
    }
}
