//! The log's files: segments `log-<first index, 20 digits>.jsonl`, each a run of records (see
//! `records.rs`) starting at the index its name gives. Only the last segment (the active one)
//! is written; the ones before it are sealed: synced whole before the next one was created, so
//! a sealed segment is never torn. Each sealed segment has an index file next to it
//! (`segment_index.rs`), written when it is sealed and removed before it goes or becomes active
//! again. This file knows the files and their order; what is durable when is `storage.rs`'s
//! business.
//!
//! Recovery reads them in two steps so that an error changes nothing on disk: [`plan`] reads
//! and judges (the indexes of sealed segments, the last segment record by record), and
//! [`Plan::apply`] renames, removes, cuts, writes indexes again and opens.
//!
//! Reads are ranged: a sealed segment's index says where every 256th record starts, the
//! active segment's tally where each one does, so a read parses only the records it returns
//! (and at most 255 before them).

use crate::fs::{FileSystem, LogFile};
use crate::records::{decode_record, scan_records};
use crate::segment_index::{parse_index_name, SegmentIndex, Tally};
use crate::storage::{OnCorruption, StorageError};
use replog_core::{Entry, LogIndex, SnapshotMeta, Term};
use std::io;
use std::path::{Path, PathBuf};

/// The log file of versions before segments: it holds the log from index 1.
pub const LEGACY_LOG: &str = "log.jsonl";

const SEGMENT_PREFIX: &str = "log-";
const SEGMENT_SUFFIX: &str = ".jsonl";
const SEGMENT_DIGITS: usize = 20;

/// The file name of the segment whose first entry is `first`.
pub fn segment_name(first: LogIndex) -> String {
    format!("{SEGMENT_PREFIX}{:0width$}{SEGMENT_SUFFIX}", first.0, width = SEGMENT_DIGITS)
}

/// The first index of a segment, from its file name; `None` if the name is not a segment's.
pub fn parse_segment_name(name: &str) -> Option<LogIndex> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&first| first >= 1).map(LogIndex)
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |error| StorageError::Io { path: path.to_path_buf(), error }
}

/// A segment before the active one, known by its index.
#[derive(Clone, Debug)]
pub(crate) struct Sealed {
    pub(crate) path: PathBuf,
    pub(crate) index: SegmentIndex,
}

impl Sealed {
    pub(crate) fn first(&self) -> LogIndex {
        self.index.first
    }

    pub(crate) fn last(&self) -> LogIndex {
        self.index.last
    }
}

/// The segment new entries go to, with where each of its entries starts.
#[derive(Debug)]
pub(crate) struct Active<L> {
    pub(crate) path: PathBuf,
    pub(crate) log: L,
    /// Its entries, counting records still in the storage's buffer.
    pub(crate) tally: Tally,
}

impl<L> Active<L> {
    pub(crate) fn first(&self) -> LogIndex {
        self.tally.first
    }

    /// Its last entry's index (`first - 1` while it is empty).
    pub(crate) fn last(&self) -> LogIndex {
        self.tally.last()
    }
}

/// The log's segments, oldest first.
/// Invariant: each segment starts right after the one before it ends; every sealed segment's
/// index file holds its `index` (or is missing or damaged: never another segment's).
#[derive(Debug)]
pub(crate) struct Segments<L> {
    dir: PathBuf,
    pub(crate) sealed: Vec<Sealed>,
    pub(crate) active: Active<L>,
}

impl<L: LogFile> Segments<L> {
    pub(crate) fn last_index(&self) -> LogIndex {
        self.active.last()
    }

    /// The active segment becomes sealed and an empty one after it takes its place. The caller
    /// has made the old one durable; its index is durable next, then the new segment's
    /// directory entry (on return), so nothing written to the new one can outlive its name,
    /// and a sealed segment's index, once there, is whole.
    pub(crate) fn roll<F: FileSystem<Log = L>>(&mut self, fs: &mut F) -> Result<(), StorageError> {
        let old = &self.active;
        assert!(old.last() >= old.first(), "only a segment with entries is sealed");
        let tail_at = *old.tally.offsets.last().expect("a segment with entries");
        let tail_bytes = (old.tally.end - tail_at) as usize;
        let tail = fs.read_at(&old.path, tail_at, tail_bytes).map_err(io_error(&old.path))?;
        let index = old.tally.seal(crc32fast::hash(&tail));
        write_index(fs, &old.path, &index)?;
        let first = self.last_index().next();
        let path = self.dir.join(segment_name(first));
        if fs.exists(&path) {
            remove_segment(fs, &path)?; // nothing of ours: recovery removed later ones
        }
        let log = fs.open_log(&path).map_err(io_error(&path))?;
        fs.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        let old = std::mem::replace(&mut self.active, Active { path, log, tally: Tally::new(first) });
        self.sealed.push(Sealed { path: old.path, index });
        Ok(())
    }

    /// Makes the sealed segment holding `from` active again (a truncation reaches into it):
    /// the segments after it are removed, newest first, and its index, durably before the
    /// caller cuts it, so a crash in between leaves a prefix of the old log, never a gap, and
    /// no index of what the segment held before.
    pub(crate) fn reopen<F: FileSystem<Log = L>>(
        &mut self,
        fs: &mut F,
        from: LogIndex,
    ) -> Result<(), StorageError> {
        let k =
            self.sealed.iter().position(|sealed| sealed.last() >= from).expect("from is in a sealed segment");
        assert!(self.sealed[k].first() <= from, "segments are contiguous");
        remove_segment(fs, &self.active.path)?;
        for sealed in self.sealed[k + 1..].iter().rev() {
            remove_segment(fs, &sealed.path)?;
        }
        let sealed = self.sealed[k].clone();
        remove_index(fs, &sealed.path)?;
        fs.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        let bytes = fs.read(&sealed.path).map_err(io_error(&sealed.path))?;
        let records = scan_records(&bytes, sealed.first().0);
        let expected = (sealed.last().0 - sealed.first().0 + 1) as usize;
        if records.len() != expected || records.last().map(|(_, end)| *end as u64) != Some(sealed.index.bytes)
        {
            return Err(StorageError::Corrupt {
                path: sealed.path,
                line: records.len() + 1,
                why: format!("a sealed segment changed: {} good records of {expected}", records.len()),
            });
        }
        let mut tally = Tally::new(sealed.first());
        for (entry, end) in &records {
            tally.push(entry, *end as u64 - tally.end);
        }
        let log = fs.open_log(&sealed.path).map_err(io_error(&sealed.path))?;
        self.sealed.truncate(k);
        self.active = Active { path: sealed.path, log, tally };
        Ok(())
    }

    /// Removes every segment, newest first, and starts an empty active one at `first`; its
    /// directory entry (and every removal) is durable on return.
    pub(crate) fn reset<F: FileSystem<Log = L>>(
        &mut self,
        fs: &mut F,
        first: LogIndex,
    ) -> Result<(), StorageError> {
        remove_segment(fs, &self.active.path)?;
        for sealed in self.sealed.iter().rev() {
            remove_segment(fs, &sealed.path)?;
        }
        let path = self.dir.join(segment_name(first));
        let log = fs.open_log(&path).map_err(io_error(&path))?;
        fs.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        self.sealed.clear();
        self.active = Active { path, log, tally: Tally::new(first) };
        Ok(())
    }

    /// Removes the sealed segments that end at or before `index` (a snapshot covers them). No
    /// folder sync: recovery removes them again if a crash brings them back.
    pub(crate) fn remove_through<F: FileSystem<Log = L>>(
        &mut self,
        fs: &mut F,
        index: LogIndex,
    ) -> Result<(), StorageError> {
        let covered = self.sealed.partition_point(|sealed| sealed.last() <= index);
        for sealed in self.sealed.drain(..covered) {
            remove_segment(fs, &sealed.path)?;
        }
        Ok(())
    }

    /// Entries `from..=to` (all within the log) as the files hold them, stopping once they
    /// pass `bytes_max` (the first always comes). Reads only the bytes of the records asked
    /// for (and, in a sealed segment, up to `INDEX_STRIDE - 1` records before the first). A
    /// damaged record is an error naming its file and line, never skipped. The caller has
    /// handed buffered records to the OS.
    pub(crate) fn read<F: FileSystem<Log = L>>(
        &self,
        fs: &mut F,
        from: LogIndex,
        to: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        assert!(to <= self.last_index(), "reads stay within the log");
        let mut sink = Sink { entries: Vec::new(), bytes_total: 0, bytes_max };
        let mut index = from;
        let first_sealed = self.sealed.partition_point(|sealed| sealed.last() < from);
        for sealed in &self.sealed[first_sealed..] {
            if index > to {
                return Ok(sink.entries);
            }
            let last = to.min(sealed.last());
            let (start, skip) = sealed.index.seek(index);
            let span = Span { start, skip, end: sealed.index.interval_end(last) };
            if !read_records(fs, &sealed.path, sealed.first(), span, index, last, &mut sink)? {
                return Ok(sink.entries);
            }
            index = last.next();
        }
        let active = &self.active;
        if index <= to {
            let offset = |index: LogIndex| active.tally.offsets.get((index.0 - active.first().0) as usize);
            let start = *offset(index).expect("reads stay within the log");
            let end = offset(to.next()).copied().unwrap_or(active.tally.end);
            let span = Span { start, skip: 0, end };
            read_records(fs, &active.path, active.first(), span, index, to, &mut sink)?;
        }
        Ok(sink.entries)
    }
}

/// The index file of the segment at `segment`.
fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// Writes and syncs a sealed segment's index. No folder sync: an index whose name a crash
/// loses is rebuilt at recovery.
fn write_index<F: FileSystem>(fs: &mut F, segment: &Path, index: &SegmentIndex) -> Result<(), StorageError> {
    let path = index_path(segment);
    fs.write_file(&path, &index.encode()).map_err(io_error(&path))?;
    fs.sync_file(&path).map_err(io_error(&path))
}

/// Removes a segment's index file, if there is one.
fn remove_index<F: FileSystem>(fs: &mut F, segment: &Path) -> Result<(), StorageError> {
    let path = index_path(segment);
    if fs.exists(&path) {
        fs.remove_file(&path).map_err(io_error(&path))?;
    }
    Ok(())
}

/// Removes a segment, its index first (an index never outlives its segment but by a crash,
/// and then recovery removes it).
fn remove_segment<F: FileSystem>(fs: &mut F, segment: &Path) -> Result<(), StorageError> {
    remove_index(fs, segment)?;
    fs.remove_file(segment).map_err(io_error(segment))
}

/// The index of the sealed segment at `path` (starting at `first`), if its file is whole and
/// matches the segment (length and last record); `None` if it must be rebuilt. An error only if
/// the segment itself cannot be read.
fn load_index<F: FileSystem>(
    fs: &mut F,
    path: &Path,
    first: LogIndex,
) -> Result<Option<SegmentIndex>, StorageError> {
    let Ok(bytes) = fs.read(&index_path(path)) else {
        return Ok(None); // missing (or unreadable): it is only a cache
    };
    let segment_bytes = fs.file_len(path).map_err(io_error(path))?;
    let Ok(index) = SegmentIndex::decode(&bytes, first, segment_bytes) else {
        return Ok(None);
    };
    let tail =
        fs.read_at(path, index.tail.0, (index.bytes - index.tail.0) as usize).map_err(io_error(path))?;
    Ok(index.check_tail(&tail).is_ok().then_some(index))
}

/// Where a read's records lie in a segment: from byte `start`, where `skip` records come before
/// the first one asked for, to byte `end`.
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u64,
    skip: usize,
    end: u64,
}

/// Entries read so far, and the byte limit that stops a read.
#[derive(Debug)]
struct Sink {
    entries: Vec<Entry>,
    /// Sum of the entries' `size_bytes`.
    bytes_total: u64,
    bytes_max: u64,
}

impl Sink {
    /// Takes `entry` unless it would pass the limit (the first entry always comes).
    fn take(&mut self, entry: Entry) -> bool {
        let bytes_total = self.bytes_total + entry.size_bytes();
        if !self.entries.is_empty() && bytes_total > self.bytes_max {
            return false;
        }
        self.bytes_total = bytes_total;
        self.entries.push(entry);
        true
    }
}

/// The first read of a range; each next one doubles, up to the cap: a read stopped early by
/// its byte limit reads little past it, a long one few times.
const CHUNK_BYTES_MIN: usize = 16 * 1024;
const CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// Reads entries `from..=to` of the segment at `path` (whose first entry is `first`) from the
/// bytes `span` says, into `sink`. False if the sink's limit stopped it. A record missing
/// or damaged is an error naming its line (entry `i` is on line `i - first + 1`).
fn read_records<F: FileSystem>(
    fs: &mut F,
    path: &Path,
    first: LogIndex,
    span: Span,
    from: LogIndex,
    to: LogIndex,
    sink: &mut Sink,
) -> Result<bool, StorageError> {
    let mut data: Vec<u8> = Vec::new();
    let mut at = 0; // where the next line starts in `data`
    let mut scanned = 0; // how far past `at` no newline was found
    let mut next = span.start; // the file offset of the next byte to read
    let mut chunk = CHUNK_BYTES_MIN;
    let mut index = LogIndex(from.0 - span.skip as u64);
    while index <= to {
        let line = (index.0 - first.0 + 1) as usize;
        let corrupt = |why: String| StorageError::Corrupt { path: path.to_path_buf(), line, why };
        let length = loop {
            if let Some(n) = data[at + scanned..].iter().position(|&b| b == b'\n') {
                break scanned + n;
            }
            scanned = data.len() - at;
            if next >= span.end {
                return Err(corrupt("record is missing".into()));
            }
            data.drain(..at);
            at = 0;
            let len = chunk.min((span.end - next) as usize);
            let more = fs.read_at(path, next, len).map_err(io_error(path))?;
            if more.is_empty() {
                return Err(corrupt("record is missing (the segment is shorter than its index says)".into()));
            }
            next += more.len() as u64;
            data.extend_from_slice(&more);
            chunk = (chunk * 2).min(CHUNK_BYTES_MAX);
        };
        let record = &data[at..at + length];
        at += length + 1;
        scanned = 0;
        if index >= from {
            let entry = decode_record(record).map_err(corrupt)?;
            if entry.index != index {
                return Err(corrupt(format!("expected entry {}, found {}", index.0, entry.index.0)));
            }
            if !sink.take(entry) {
                return Ok(false);
            }
        }
        index = index.next();
    }
    Ok(true)
}

/// What recovery cuts from a segment's end.
#[derive(Debug)]
struct Cut {
    /// The first line cut, counted from 1.
    line: usize,
    bytes: usize,
    /// A damaged record (cut only on the operator's request), not a torn one.
    damaged: bool,
    why: String,
}

/// One segment as read record by record at start.
#[derive(Debug)]
struct SegmentRead {
    path: PathBuf,
    entries: Vec<Entry>,
    /// Its good records, through `tally.end`.
    tally: Tally,
    cut: Option<Cut>,
    /// CRC-32 of its last good record (zero if it has none).
    tail_crc: u32,
}

impl SegmentRead {
    fn last(&self) -> LogIndex {
        self.tally.last()
    }
}

/// Reads every record of a segment whose first entry is `first`. An unfinished or damaged last
/// line is a torn write to cut if `tail_may_tear` (the last segment), damage otherwise.
fn read_segment(
    path: &Path,
    bytes: &[u8],
    first: LogIndex,
    tail_may_tear: bool,
    on_corruption: OnCorruption,
) -> Result<SegmentRead, StorageError> {
    let mut read = SegmentRead {
        path: path.to_path_buf(),
        entries: Vec::new(),
        tally: Tally::new(first),
        cut: None,
        tail_crc: 0,
    };
    let mut position = 0usize;
    let mut line = 0usize;
    while position < bytes.len() {
        line += 1;
        let newline = bytes[position..].iter().position(|&b| b == b'\n');
        let is_last = newline.is_none_or(|n| position + n + 1 == bytes.len());
        let end = newline.map_or(bytes.len(), |n| position + n);
        let expected = read.last().next();
        let parsed = decode_record(&bytes[position..end]).and_then(|entry| {
            if entry.index == expected {
                Ok(entry)
            } else {
                Err(format!("expected entry {}, found {}", expected.0, entry.index.0))
            }
        });
        let bytes_cut = bytes.len() - position;
        let why = match parsed {
            Ok(entry) if newline.is_some() => {
                read.tally.push(&entry, (end + 1 - position) as u64);
                read.tail_crc = crc32fast::hash(&bytes[position..=end]);
                read.entries.push(entry);
                position = end + 1;
                continue;
            }
            // The last line, unfinished or damaged: a write the crash interrupted.
            Ok(_) | Err(_) if is_last && tail_may_tear => {
                read.cut = Some(Cut { line, bytes: bytes_cut, damaged: false, why: String::new() });
                break;
            }
            Ok(_) => "unfinished record in a sealed segment (sealed segments are synced whole)".to_string(),
            Err(why) => why,
        };
        if on_corruption == OnCorruption::Refuse {
            return Err(StorageError::Corrupt { path: path.to_path_buf(), line, why });
        }
        read.cut = Some(Cut { line, bytes: bytes_cut, damaged: true, why });
        break;
    }
    assert_eq!(read.tally.end, position as u64, "the tally ends where the good records do");
    Ok(read)
}

/// Renames an old-style `log.jsonl` (the log from index 1) to the first segment's name, durably;
/// returns the folder's names as they are then.
pub(crate) fn migrate_legacy<F: FileSystem>(
    fs: &mut F,
    dir: &Path,
    mut names: Vec<String>,
) -> Result<Vec<String>, StorageError> {
    let Some(at) = names.iter().position(|name| name == LEGACY_LOG) else {
        return Ok(names);
    };
    let legacy = dir.join(LEGACY_LOG);
    if let Some(segment) = names.iter().find(|name| parse_segment_name(name).is_some()) {
        return Err(StorageError::Mismatch {
            path: legacy,
            why: format!(
                "an old-style log next to log segments ({segment}): which one holds the log is unclear"
            ),
        });
    }
    let renamed = segment_name(LogIndex(1));
    fs.rename(&legacy, &dir.join(&renamed)).map_err(io_error(&legacy))?;
    fs.sync_dir(dir).map_err(io_error(dir))?;
    names[at] = renamed;
    names.sort();
    Ok(names)
}

/// One segment recovery keeps.
#[derive(Debug)]
enum Kept {
    /// A sealed segment known by its index: read from its file, or rebuilt by reading the
    /// segment whole (`write`: the file is written again).
    Indexed {
        path: PathBuf,
        index: SegmentIndex,
        write: bool,
        /// The sum of `size_bytes` of its entries after the snapshot.
        entry_bytes_kept: u64,
    },
    /// Read record by record: the segment that becomes the active one.
    Read(SegmentRead),
}

impl Kept {
    fn path(&self) -> &Path {
        match self {
            Kept::Indexed { path, .. } => path,
            Kept::Read(read) => &read.path,
        }
    }

    fn first(&self) -> LogIndex {
        match self {
            Kept::Indexed { index, .. } => index.first,
            Kept::Read(read) => read.tally.first,
        }
    }

    fn last(&self) -> LogIndex {
        match self {
            Kept::Indexed { index, .. } => index.last,
            Kept::Read(read) => read.last(),
        }
    }

    fn term_at(&self, at: LogIndex) -> Option<Term> {
        match self {
            Kept::Indexed { index, .. } => index.term_at(at),
            Kept::Read(read) => {
                let offset = at.0.checked_sub(read.tally.first.0)?;
                read.entries.get(offset as usize).map(|entry| entry.term)
            }
        }
    }
}

/// What recovery found and will do, decided before anything on disk changes.
#[derive(Debug)]
pub(crate) struct Plan {
    dir: PathBuf,
    /// Segments to remove, newest first (so a crash midway leaves a prefix of the old log).
    remove: Vec<PathBuf>,
    /// Some of `remove` come after the last kept segment (a repair cut): their removal is made
    /// durable before that segment is cut, so a crash in between leaves no gap.
    remove_before_cut: bool,
    /// The segments kept, oldest first; the last, read record by record, becomes the active
    /// one. None if the log is empty after the snapshot.
    kept: Vec<Kept>,
    /// The index files in the folder.
    indexes: Vec<PathBuf>,
    /// Where the log starts if it is empty: after the snapshot.
    first: LogIndex,
    /// The log's last index (the snapshot's, or 0, if it is empty after the snapshot).
    pub(crate) last: LogIndex,
    /// The entries after the snapshot in the last segment: a suffix of the log ending at `last`.
    pub(crate) entries: Vec<Entry>,
    /// The log's term runs after the snapshot: (first index of the run, its term), ascending.
    pub(crate) term_runs: Vec<(LogIndex, Term)>,
    /// The indexes of the no-op entries after the snapshot, ascending.
    pub(crate) noops: Vec<LogIndex>,
    /// The entries after the snapshot holding more than one command, with how many.
    pub(crate) batches: Vec<(LogIndex, u64)>,
    /// Spans of the log after the snapshot that may hold session requests (one a segment).
    pub(crate) request_spans: Vec<(LogIndex, LogIndex)>,
    /// The sum of `size_bytes` of the entries after the snapshot.
    pub(crate) entry_bytes: u64,
    /// Damage was cut on the operator's request: the first index lost.
    pub(crate) damaged_at: Option<LogIndex>,
    /// Repairs and removals, for the log.
    pub(crate) warnings: Vec<String>,
}

/// Reads the segments among `names` (the folder's files) against the snapshot, changing
/// nothing. A sealed segment with a good index is not read (but for its last record, and the
/// records of the snapshot's last entry's mark interval if the snapshot ends inside it); the
/// last segment, and a sealed one without a good index, are read record by record.
pub(crate) fn plan<F: FileSystem>(
    fs: &mut F,
    dir: &Path,
    names: &[String],
    snapshot: Option<SnapshotMeta>,
    on_corruption: OnCorruption,
) -> Result<Plan, StorageError> {
    let after_snapshot = snapshot.map_or(LogIndex(1), |snapshot| snapshot.index.next());
    let mut found: Vec<(LogIndex, PathBuf)> =
        names.iter().filter_map(|name| Some((parse_segment_name(name)?, dir.join(name)))).collect();
    found.sort();
    // Segments wholly covered by the snapshot (the next one starts at or before the entry after
    // it) are left over from before it: removed unread.
    let covered = (0..found.len())
        .find(|&i| found.get(i + 1).is_none_or(|(next, _)| *next > after_snapshot))
        .unwrap_or(0);
    let covered: Vec<PathBuf> = found.drain(..covered).map(|(_, path)| path).collect();

    let mut plan = Plan {
        dir: dir.to_path_buf(),
        remove: Vec::new(),
        remove_before_cut: false,
        kept: Vec::new(),
        indexes: names
            .iter()
            .filter(|name| parse_index_name(name).is_some())
            .map(|name| dir.join(name))
            .collect(),
        first: after_snapshot,
        last: after_snapshot.prev(),
        entries: Vec::new(),
        term_runs: Vec::new(),
        noops: Vec::new(),
        batches: Vec::new(),
        request_spans: Vec::new(),
        entry_bytes: 0,
        damaged_at: None,
        warnings: Vec::new(),
    };
    for (i, (first, path)) in found.iter().enumerate() {
        // Each segment starts where the one before it ends; the first at or before the entry
        // after the snapshot.
        let expected = plan.kept.last().map_or(after_snapshot, |kept| kept.last().next());
        let follows = if plan.kept.is_empty() { *first <= expected } else { *first == expected };
        if !follows {
            let why = gap(plan.kept.last(), snapshot, expected, *first, path);
            if on_corruption == OnCorruption::Refuse || *first < expected {
                return Err(StorageError::Missing { path: path.clone(), why });
            }
            plan.warnings.push(format!("{why}; cut the log there, as --repair asked"));
            plan.damaged_at = Some(expected);
            plan.remove.extend(found[i..].iter().rev().map(|(_, path)| path.clone()));
            plan.remove_before_cut = true;
            break;
        }
        let is_last = i + 1 == found.len();
        if !is_last {
            if let Some(kept) = indexed(fs, path, *first, after_snapshot)? {
                plan.kept.push(kept);
                continue;
            }
        }
        let bytes = fs.read(path).map_err(io_error(path))?;
        let read = read_segment(path, &bytes, *first, is_last, on_corruption)?;
        let damaged = read.cut.as_ref().is_some_and(|cut| cut.damaged);
        if let Some(warning) = read.cut_warning() {
            plan.warnings.push(warning);
        }
        if damaged {
            plan.damaged_at = Some(read.last().next());
            plan.remove.extend(found[i + 1..].iter().rev().map(|(_, path)| path.clone()));
            plan.remove_before_cut = !is_last;
        }
        if is_last || damaged {
            plan.kept.push(Kept::Read(read));
            break;
        }
        // A sealed segment without a good index: read whole now, indexed again at apply.
        let index = read.tally.seal(read.tail_crc);
        let entry_bytes_kept = read.tally.entry_bytes_from(after_snapshot);
        plan.kept.push(Kept::Indexed { path: read.path, index, write: true, entry_bytes_kept });
    }
    // The walk stopped at a gap after a sealed segment: that one becomes the active one, read
    // record by record.
    if let Some(Kept::Indexed { .. }) = plan.kept.last() {
        let Some(Kept::Indexed { path, index, .. }) = plan.kept.pop() else { unreachable!() };
        let bytes = fs.read(&path).map_err(io_error(&path))?;
        let read = read_segment(&path, &bytes, index.first, false, on_corruption)?;
        if let Some(warning) = read.cut_warning() {
            plan.warnings.push(warning);
            plan.damaged_at = Some(read.last().next());
        }
        plan.kept.push(Kept::Read(read));
    }

    // A log that does not hold the snapshot's last entry (the snapshot was installed over a log
    // that disagreed, or the log never got that far) is dropped: the snapshot wins. A log the
    // snapshot covers wholly goes too. Only the first kept segment can reach the snapshot.
    let last = plan.kept.last().map_or(after_snapshot.prev(), Kept::last);
    if let Some(snapshot) = snapshot {
        let first = plan.kept.first().map_or(after_snapshot, Kept::first);
        let held = plan.kept.first().and_then(|kept| kept.term_at(snapshot.index));
        let dropped = match held {
            Some(term) if term != snapshot.term => {
                Some(format!("holds entry {} of {term}, not of {}", snapshot.index.0, snapshot.term))
            }
            None if last < snapshot.index && first <= last => Some(format!("ends at entry {}", last.0)),
            _ => None,
        };
        if let Some(why) = &dropped {
            plan.warnings.push(format!(
                "{}: the log {why}: dropped its entries {}..={}, the snapshot through entry {} replaces them",
                dir.display(),
                first.0,
                last.0,
                snapshot.index.0,
            ));
        }
        if dropped.is_some() || last <= snapshot.index {
            plan.remove.extend(plan.kept.drain(..).rev().map(|kept| kept.path().to_path_buf()));
            plan.damaged_at = None;
        }
    }
    plan.remove.extend(covered.into_iter().rev());
    plan.tally_kept(after_snapshot);
    Ok(plan)
}

/// A sealed segment known by its good index file, with the entry bytes after the snapshot
/// (from the records of one mark interval if the snapshot ends inside it); `None` if it must be
/// read whole (no good index, or a damaged record in that interval).
fn indexed<F: FileSystem>(
    fs: &mut F,
    path: &Path,
    first: LogIndex,
    after_snapshot: LogIndex,
) -> Result<Option<Kept>, StorageError> {
    let Some(index) = load_index(fs, path, first)? else {
        return Ok(None);
    };
    let entry_bytes_kept = if after_snapshot <= index.first {
        index.entry_bytes
    } else if after_snapshot > index.last {
        0
    } else {
        let mut sink = Sink { entries: Vec::new(), bytes_total: 0, bytes_max: u64::MAX };
        let (start, skip) = index.seek(after_snapshot);
        let span = Span { start, skip, end: index.interval_end(after_snapshot) };
        let last = index.interval_last(after_snapshot);
        match read_records(fs, path, first, span, after_snapshot, last, &mut sink) {
            Ok(_) => sink.bytes_total + index.entry_bytes_after_interval(after_snapshot),
            Err(StorageError::Corrupt { .. }) => return Ok(None),
            Err(error) => return Err(error),
        }
    };
    Ok(Some(Kept::Indexed { path: path.to_path_buf(), index, write: false, entry_bytes_kept }))
}

impl Plan {
    /// The log after the snapshot, from what the kept segments hold: its term runs, no-ops,
    /// entry bytes and last index, and the last segment's entries.
    fn tally_kept(&mut self, after_snapshot: LogIndex) {
        for kept in &self.kept {
            let (terms, noops, batches, requests, entry_bytes) = match kept {
                Kept::Indexed { index, entry_bytes_kept, .. } => {
                    (&index.terms, &index.noops, &index.batches, index.requests, *entry_bytes_kept)
                }
                Kept::Read(read) => (
                    &read.tally.terms,
                    &read.tally.noops,
                    &read.tally.batches,
                    read.tally.requests,
                    read.tally.entry_bytes_from(after_snapshot),
                ),
            };
            if let Some((first, last)) = requests.filter(|&(_, last)| last >= after_snapshot) {
                self.request_spans.push((first.max(after_snapshot), last));
            }
            self.entry_bytes += entry_bytes;
            self.noops.extend(noops.iter().copied().filter(|&index| index >= after_snapshot));
            self.batches.extend(batches.iter().copied().filter(|&(index, _)| index >= after_snapshot));
            for (i, &(start, term)) in terms.iter().enumerate() {
                let end = terms.get(i + 1).map_or(kept.last(), |&(next, _)| next.prev());
                if end < after_snapshot {
                    continue; // the snapshot covers the run
                }
                if self.term_runs.last().is_none_or(|&(_, before)| before != term) {
                    self.term_runs.push((start.max(after_snapshot), term));
                }
            }
        }
        self.last = self.kept.last().map_or(after_snapshot.prev(), Kept::last);
        if let Some(kept) = self.kept.last_mut() {
            let Kept::Read(read) = kept else { panic!("the last segment kept is read record by record") };
            let skip = (after_snapshot.0.saturating_sub(read.tally.first.0) as usize).min(read.entries.len());
            self.entries = read.entries.split_off(skip);
        }
    }
}

/// Why segment `path`, starting at `first`, does not follow what comes before it.
fn gap(
    before: Option<&Kept>,
    snapshot: Option<SnapshotMeta>,
    expected: LogIndex,
    first: LogIndex,
    path: &Path,
) -> String {
    let before = match (before, snapshot) {
        (Some(kept), _) => format!("{} ends at entry {}", kept.path().display(), kept.last().0),
        (None, Some(snapshot)) => format!("snapshot.json ends at entry {}", snapshot.index.0),
        (None, None) => "the log starts at entry 1".to_string(),
    };
    if first > expected {
        format!(
            "entries {}..={} are missing: {before} and {} starts at entry {}",
            expected.0,
            first.0 - 1,
            path.display(),
            first.0
        )
    } else {
        format!("{before} but {} starts at entry {}: the files overlap", path.display(), first.0)
    }
}

impl SegmentRead {
    fn cut_warning(&self) -> Option<String> {
        let Cut { line, bytes, damaged, why } = self.cut.as_ref()?;
        Some(if *damaged {
            format!(
                "{}: cut {bytes} bytes from line {line} on ({why}), as --repair asked",
                self.path.display()
            )
        } else {
            format!(
                "{}: cut a torn record at line {line} ({bytes} bytes) left by a crash",
                self.path.display()
            )
        })
    }
}

impl Plan {
    /// Carries out the plan: removes index files other than the kept sealed segments' (left
    /// over from removed segments, or of the segment that becomes active), the removals and the
    /// cut; writes the indexes rebuilt; opens the active segment and syncs it (what was read may
    /// sit only in the page cache). Also returns whether the active segment was created here:
    /// its directory entry is durable only once the caller syncs the folder.
    pub(crate) fn apply<F: FileSystem>(self, fs: &mut F) -> Result<(Segments<F::Log>, bool), StorageError> {
        let dir = self.dir;
        let sealed_indexes: Vec<PathBuf> = self
            .kept
            .iter()
            .filter(|kept| matches!(kept, Kept::Indexed { .. }))
            .map(|kept| index_path(kept.path()))
            .collect();
        for path in self.indexes.iter().filter(|path| !sealed_indexes.contains(path)) {
            fs.remove_file(path).map_err(io_error(path))?;
        }
        for path in &self.remove {
            fs.remove_file(path).map_err(io_error(path))?;
        }
        if self.remove_before_cut {
            fs.sync_dir(&dir).map_err(io_error(&dir))?;
        }
        let mut kept = self.kept;
        let (active, created) = match kept.pop() {
            Some(Kept::Read(read)) => {
                let mut log = fs.open_log(&read.path).map_err(io_error(&read.path))?;
                if read.cut.is_some() {
                    // Writes go where the good data ends, over the torn or damaged record.
                    log.set_len(read.tally.end).map_err(io_error(&read.path))?;
                }
                log.sync().map_err(io_error(&read.path))?;
                (Active { path: read.path, log, tally: read.tally }, false)
            }
            Some(Kept::Indexed { .. }) => unreachable!("the last segment kept is read record by record"),
            None => {
                let path = dir.join(segment_name(self.first));
                let mut log = fs.open_log(&path).map_err(io_error(&path))?;
                log.sync().map_err(io_error(&path))?;
                (Active { path, log, tally: Tally::new(self.first) }, true)
            }
        };
        let mut sealed = Vec::with_capacity(kept.len());
        for kept in kept {
            let Kept::Indexed { path, index, write, .. } = kept else {
                unreachable!("only the last segment kept is read record by record")
            };
            if write {
                write_index(fs, &path, &index)?;
            }
            sealed.push(Sealed { path, index });
        }
        Ok((Segments { dir, sealed, active }, created))
    }
}
