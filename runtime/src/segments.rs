//! The log's files: segments `log-<first index, 20 digits>.jsonl`, each a run of records (see
//! `records.rs`) starting at the index its name gives. Only the last segment (the active one)
//! is written; the ones before it are sealed: synced whole before the next one was created, so
//! a sealed segment is never torn. This file knows the files and their order; what is durable
//! when is `storage.rs`'s business.
//!
//! Recovery reads them in two steps so that an error changes nothing on disk: [`plan`] reads
//! and judges, [`Plan::apply`] renames, removes, cuts and opens.

use crate::fs::{FileSystem, LogFile};
use crate::records::{decode_record, scan_records};
use crate::storage::{OnCorruption, StorageError};
use replog_core::{Entry, LogIndex, SnapshotMeta};
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

/// A segment before the active one.
#[derive(Clone, Debug)]
pub(crate) struct Sealed {
    pub(crate) first: LogIndex,
    pub(crate) last: LogIndex,
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
}

/// The segment new entries go to, with where each of its entries starts.
#[derive(Debug)]
pub(crate) struct Active<L> {
    pub(crate) first: LogIndex,
    pub(crate) path: PathBuf,
    pub(crate) log: L,
    /// `offsets[i]` is where entry `first + i` starts; `end` is where the next one goes
    /// (counting records still in the storage's buffer).
    pub(crate) offsets: Vec<u64>,
    pub(crate) end: u64,
}

impl<L> Active<L> {
    /// Its last entry's index (`first - 1` while it is empty).
    pub(crate) fn last(&self) -> LogIndex {
        LogIndex(self.first.0 - 1 + self.offsets.len() as u64)
    }
}

/// The log's segments, oldest first.
/// Invariant: each segment starts right after the one before it ends.
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
    /// has made the old one durable; the new one's directory entry is durable on return, so
    /// nothing written to it can outlive its name.
    pub(crate) fn roll<F: FileSystem<Log = L>>(&mut self, fs: &mut F) -> Result<(), StorageError> {
        let first = self.last_index().next();
        let path = self.dir.join(segment_name(first));
        if fs.exists(&path) {
            fs.remove_file(&path).map_err(io_error(&path))?; // nothing of ours: recovery removed later ones
        }
        let log = fs.open_log(&path).map_err(io_error(&path))?;
        fs.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        let old =
            std::mem::replace(&mut self.active, Active { first, path, log, offsets: Vec::new(), end: 0 });
        assert!(old.last() >= old.first, "only a segment with entries is sealed");
        self.sealed.push(Sealed { first: old.first, last: old.last(), path: old.path, bytes: old.end });
        Ok(())
    }

    /// Makes the sealed segment holding `from` active again (a truncation reaches into it):
    /// the segments after it are removed, newest first, durably before the caller cuts it, so a
    /// crash in between leaves a prefix of the old log, never a gap.
    pub(crate) fn reopen<F: FileSystem<Log = L>>(
        &mut self,
        fs: &mut F,
        from: LogIndex,
    ) -> Result<(), StorageError> {
        let k =
            self.sealed.iter().position(|sealed| sealed.last >= from).expect("from is in a sealed segment");
        assert!(self.sealed[k].first <= from, "segments are contiguous");
        fs.remove_file(&self.active.path).map_err(io_error(&self.active.path))?;
        for sealed in self.sealed[k + 1..].iter().rev() {
            fs.remove_file(&sealed.path).map_err(io_error(&sealed.path))?;
        }
        fs.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        let sealed = self.sealed[k].clone();
        let bytes = fs.read(&sealed.path).map_err(io_error(&sealed.path))?;
        let records = scan_records(&bytes, sealed.first.0);
        let expected = (sealed.last.0 - sealed.first.0 + 1) as usize;
        if records.len() != expected || records.last().map(|(_, end)| *end as u64) != Some(sealed.bytes) {
            return Err(StorageError::Corrupt {
                path: sealed.path,
                line: records.len() + 1,
                why: format!("a sealed segment changed: {} good records of {expected}", records.len()),
            });
        }
        let offsets =
            std::iter::once(0).chain(records[..expected - 1].iter().map(|(_, end)| *end as u64)).collect();
        let log = fs.open_log(&sealed.path).map_err(io_error(&sealed.path))?;
        self.sealed.truncate(k);
        self.active = Active { first: sealed.first, path: sealed.path, log, offsets, end: sealed.bytes };
        Ok(())
    }

    /// Removes every segment, newest first, and starts an empty active one at `first`; its
    /// directory entry (and every removal) is durable on return.
    pub(crate) fn reset<F: FileSystem<Log = L>>(
        &mut self,
        fs: &mut F,
        first: LogIndex,
    ) -> Result<(), StorageError> {
        fs.remove_file(&self.active.path).map_err(io_error(&self.active.path))?;
        for sealed in self.sealed.iter().rev() {
            fs.remove_file(&sealed.path).map_err(io_error(&sealed.path))?;
        }
        let path = self.dir.join(segment_name(first));
        let log = fs.open_log(&path).map_err(io_error(&path))?;
        fs.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        self.sealed.clear();
        self.active = Active { first, path, log, offsets: Vec::new(), end: 0 };
        Ok(())
    }

    /// Removes the sealed segments that end at or before `index` (a snapshot covers them). No
    /// folder sync: recovery removes them again if a crash brings them back.
    pub(crate) fn remove_through<F: FileSystem<Log = L>>(
        &mut self,
        fs: &mut F,
        index: LogIndex,
    ) -> Result<(), StorageError> {
        let covered = self.sealed.partition_point(|sealed| sealed.last <= index);
        for sealed in self.sealed.drain(..covered) {
            fs.remove_file(&sealed.path).map_err(io_error(&sealed.path))?;
        }
        Ok(())
    }

    /// Entries `from..=to` (all within the log) as the files hold them, stopping once they
    /// pass `bytes_max` (the first always comes). The caller has handed buffered records to the OS.
    pub(crate) fn read<F: FileSystem<Log = L>>(
        &self,
        fs: &mut F,
        from: LogIndex,
        to: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        assert!(to <= self.last_index(), "reads stay within the log");
        let active = (self.active.first, self.active.last(), &self.active.path);
        let files = self.sealed.iter().map(|sealed| (sealed.first, sealed.last, &sealed.path));
        let mut out = Vec::new();
        let mut bytes_total = 0u64;
        let mut index = from;
        for (first, last, path) in files.chain(std::iter::once(active)) {
            if index > to {
                break;
            }
            if last < index {
                continue;
            }
            let bytes = fs.read(path).map_err(io_error(path))?;
            let mut position = if first == self.active.first {
                self.active.offsets[(index.0 - first.0) as usize] as usize
            } else {
                // A sealed segment holds one line per entry from `first`: skip lines, parse none.
                line_start(&bytes, (index.0 - first.0) as usize)
            };
            while index <= to.min(last) {
                let line = (index.0 - first.0) as usize + 1;
                let corrupt = |why: String| StorageError::Corrupt { path: path.clone(), line, why };
                let length = bytes
                    .get(position..)
                    .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
                    .ok_or_else(|| corrupt("record is missing".into()))?;
                let entry = decode_record(&bytes[position..position + length]).map_err(corrupt)?;
                if entry.index != index {
                    return Err(corrupt(format!("expected entry {}, found {}", index.0, entry.index.0)));
                }
                bytes_total += entry.size_bytes();
                if !out.is_empty() && bytes_total > bytes_max {
                    return Ok(out);
                }
                out.push(entry);
                position += length + 1;
                index = index.next();
            }
        }
        Ok(out)
    }
}

/// Where line `skip` (from 0) starts: after the `skip`th newline (or the end).
fn line_start(bytes: &[u8], skip: usize) -> usize {
    if skip == 0 {
        return 0;
    }
    bytes.iter().enumerate().filter(|(_, &b)| b == b'\n').nth(skip - 1).map_or(bytes.len(), |(at, _)| at + 1)
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

/// One segment as read at start.
#[derive(Debug)]
struct SegmentRead {
    first: LogIndex,
    path: PathBuf,
    entries: Vec<Entry>,
    offsets: Vec<u64>,
    /// Where its good data ends.
    end: u64,
    cut: Option<Cut>,
}

impl SegmentRead {
    fn last(&self) -> LogIndex {
        LogIndex(self.first.0 - 1 + self.entries.len() as u64)
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
        first,
        path: path.to_path_buf(),
        entries: Vec::new(),
        offsets: Vec::new(),
        end: 0,
        cut: None,
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
                read.offsets.push(position as u64);
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
    read.end = position as u64;
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

/// What recovery found and will do, decided before anything on disk changes.
#[derive(Debug)]
pub(crate) struct Plan {
    dir: PathBuf,
    /// Segments to remove, newest first (so a crash midway leaves a prefix of the old log).
    remove: Vec<PathBuf>,
    /// Some of `remove` come after the last kept segment (a repair cut): their removal is made
    /// durable before that segment is cut, so a crash in between leaves no gap.
    remove_before_cut: bool,
    /// The segments kept, oldest first (the last becomes the active one); none if the log is
    /// empty after the snapshot.
    kept: Vec<SegmentRead>,
    /// Where the log starts if it is empty: after the snapshot.
    first: LogIndex,
    /// The entries after the snapshot.
    pub(crate) entries: Vec<Entry>,
    /// Damage was cut on the operator's request: the first index lost.
    pub(crate) damaged_at: Option<LogIndex>,
    /// Repairs and removals, for the log.
    pub(crate) warnings: Vec<String>,
}

/// Reads the segments among `names` (the folder's files) against the snapshot, changing nothing.
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
        first: after_snapshot,
        entries: Vec::new(),
        damaged_at: None,
        warnings: Vec::new(),
    };
    for (i, (first, path)) in found.iter().enumerate() {
        // Each segment starts where the one before it ends; the first at or before the entry
        // after the snapshot.
        let expected = plan.kept.last().map_or(after_snapshot, |read| read.last().next());
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
        let bytes = fs.read(path).map_err(io_error(path))?;
        let is_last = i + 1 == found.len();
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
        plan.kept.push(read);
        if damaged {
            break;
        }
    }

    // A log that does not hold the snapshot's last entry (the snapshot was installed over a log
    // that disagreed, or the log never got that far) is dropped: the snapshot wins. A log the
    // snapshot covers wholly goes too. Only the first kept segment can reach the snapshot.
    let last = plan.kept.last().map_or(after_snapshot.prev(), SegmentRead::last);
    if let Some(snapshot) = snapshot {
        let first = plan.kept.first().map_or(after_snapshot, |read| read.first);
        let held = plan.kept.first().and_then(|read| {
            let at = snapshot.index.0.checked_sub(read.first.0)?;
            read.entries.get(at as usize).map(|entry| entry.term)
        });
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
            plan.remove.extend(plan.kept.drain(..).rev().map(|read| read.path));
            plan.damaged_at = None;
        }
    }
    plan.remove.extend(covered.into_iter().rev());
    for read in &plan.kept {
        let skip = (after_snapshot.0.saturating_sub(read.first.0) as usize).min(read.entries.len());
        plan.entries.extend_from_slice(&read.entries[skip..]);
    }
    Ok(plan)
}

/// Why segment `path`, starting at `first`, does not follow what comes before it.
fn gap(
    before: Option<&SegmentRead>,
    snapshot: Option<SnapshotMeta>,
    expected: LogIndex,
    first: LogIndex,
    path: &Path,
) -> String {
    let before = match (before, snapshot) {
        (Some(read), _) => format!("{} ends at entry {}", read.path.display(), read.last().0),
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
    /// Carries out the plan: the removals and the cut; opens the active segment and syncs it
    /// (what was read may sit only in the page cache). Also returns whether the active segment
    /// was created here: its directory entry is durable only once the caller syncs the folder.
    pub(crate) fn apply<F: FileSystem>(self, fs: &mut F) -> Result<(Segments<F::Log>, bool), StorageError> {
        let dir = self.dir;
        for path in &self.remove {
            fs.remove_file(path).map_err(io_error(path))?;
        }
        if self.remove_before_cut {
            fs.sync_dir(&dir).map_err(io_error(&dir))?;
        }
        let mut kept = self.kept;
        let (active, created) = match kept.pop() {
            Some(read) => {
                let mut log = fs.open_log(&read.path).map_err(io_error(&read.path))?;
                if read.cut.is_some() {
                    // Writes go where the good data ends, over the torn or damaged record.
                    log.set_len(read.end).map_err(io_error(&read.path))?;
                }
                log.sync().map_err(io_error(&read.path))?;
                (
                    Active { first: read.first, path: read.path, log, offsets: read.offsets, end: read.end },
                    false,
                )
            }
            None => {
                let path = dir.join(segment_name(self.first));
                let mut log = fs.open_log(&path).map_err(io_error(&path))?;
                log.sync().map_err(io_error(&path))?;
                (Active { first: self.first, path, log, offsets: Vec::new(), end: 0 }, true)
            }
        };
        let sealed = kept
            .into_iter()
            .map(|read| Sealed { first: read.first, last: read.last(), path: read.path, bytes: read.end })
            .collect();
        Ok((Segments { dir, sealed, active }, created))
    }
}
