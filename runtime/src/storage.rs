//! Durable state under `data/<node-id>/`, as the seed describes:
//!
//! - `log.jsonl`: one JSON record per entry, each ending in a CRC-32 of the rest of its line:
//!   `{"index":1,"term":1,"type":"command","data":"user_login:alice","crc":3735928559}`
//! - `metadata.json`: term, vote and commit index (and which node the folder belongs to), with
//!   the same kind of checksum, replaced atomically (write, fsync, rename, fsync the folder).
//!
//! Ordering (the core's prefix contract): a change of term or vote is made durable at once,
//! after the log writes issued before it and before any later log write can reach the disk,
//! so a durable entry of a term is never ahead of that term on disk, and a crash loses only a
//! suffix of the storage actions. Log writes are buffered and made durable by `sync` (group commit:
//! one fdatasync for everything written since). A commit-only change is written lazily (at most
//! every `COMMIT_WRITE_INTERVAL`, and at shutdown): the commit index is not needed for safety.
//!
//! Recovery: a torn last record (a crash mid-write) is cut off with a warning. A bad record
//! before the tail, a gap in the indexes, or a missing or unreadable metadata file next to a
//! log is an error naming the file and line: data is never silently dropped.

use crate::fs::{FileSystem, LogFile};
use replog_core::{Bytes, Entry, HardState, LogIndex, NodeId, Payload, Term};
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The commit index is written at most this often (in ticks), and at shutdown.
const COMMIT_WRITE_TICKS: u64 = 10;

/// Which node a data folder belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub address: String,
}

#[derive(Debug)]
pub enum StorageError {
    Io { path: PathBuf, error: io::Error },
    Corrupt { path: PathBuf, line: usize, why: String },
    Mismatch { path: PathBuf, why: String },
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
            StorageError::Mismatch { path, why } => write!(f, "{}: {why}", path.display()),
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
    /// Cut the log at the damaged record and repair it from the cluster (`start --repair`).
    Repair,
}

/// What was found on disk at start.
#[derive(Debug)]
pub struct Recovery {
    /// Term, vote and commit as saved; the commit index never exceeds `entries`.
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
    /// Committed entries this node held were lost through this index (its log ends before the
    /// commit index saved with it, or a damaged record was cut): the node must get them back
    /// from a leader before it votes (`replog_core::Recovered::repair_to`). Zero if none.
    pub repair_to: LogIndex,
    /// Things recovery repaired (a torn tail, a cut), for the log.
    pub warnings: Vec<String>,
}

/// How far the log is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Every write with a seq up to this one is durable (compare with [`Storage::barrier`]).
    pub seq: u64,
    /// The log is durable through this entry.
    pub last: LogIndex,
}

/// The log and metadata files of one node, on any [`FileSystem`].
///
/// Writes are buffered; `request_sync` hands them to the OS and asks for a sync (inline or on
/// the file's background thread); `durable` says, at any moment, how far the log is durable.
/// No call depends on another having been made first.
#[derive(Debug)]
pub struct Storage<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    log_path: PathBuf,
    log: F::Log,
    identity: Identity,
    /// `offsets[i - 1]` is where entry i starts; `end` is where the next one goes.
    offsets: Vec<u64>,
    end: u64,
    /// Serialized records not yet handed to the OS.
    buffer: Vec<u8>,
    /// Bytes handed to the OS but not yet covered by a sync (inline or requested).
    log_dirty: bool,
    /// Bumped by every write or truncation handed to the OS: a sync covers the seqs issued
    /// before it started.
    write_seq: u64,
    durable: Durable,
    /// Background syncs asked for: (seq, log length then), oldest first.
    in_flight: VecDeque<(u64, LogIndex)>,
    /// Truncations since: (seq, entries kept); a sync issued before one cannot vouch past it.
    truncations: Vec<(u64, LogIndex)>,
    hard: HardState,
    hard_written: HardState,
    ticks_since_commit_write: u64,
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
        mut fs: F,
        dir: &Path,
        identity: Identity,
        on_corruption: OnCorruption,
    ) -> Result<(Storage<F>, Recovery), StorageError> {
        fs.create_dir_all(dir).map_err(io_error(dir))?;
        let log_path = dir.join("log.jsonl");
        let meta_path = dir.join("metadata.json");
        let mut warnings = Vec::new();
        let (entries, offsets, end, cut) = match fs.read(&log_path) {
            Ok(bytes) => read_log(&log_path, &bytes, on_corruption)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => (Vec::new(), Vec::new(), 0, None),
            Err(error) => return Err(StorageError::Io { path: log_path, error }),
        };
        let meta = match fs.read(&meta_path) {
            Ok(bytes) => Some(parse_metadata(&meta_path, &bytes, &identity)?),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if !entries.is_empty() {
                    return Err(StorageError::Mismatch {
                        path: meta_path,
                        why: format!(
                            "missing, next to a log of {} entries: term and vote are unknown",
                            entries.len()
                        ),
                    });
                }
                None
            }
            Err(error) => return Err(StorageError::Io { path: meta_path, error }),
        };
        let (saved, repairing_to) = meta.unwrap_or_default();
        let last = LogIndex(entries.len() as u64);
        let damaged_at = cut.as_ref().filter(|cut| cut.damaged).map(|_| last.next());
        let repair_to = saved.commit.max(repairing_to).max(damaged_at.unwrap_or(LogIndex::ZERO));
        let repair_to = if repair_to > last { repair_to } else { LogIndex::ZERO };
        if repair_to > LogIndex::ZERO {
            warnings.push(format!(
                "{}: committed entries {}..={repair_to} are missing (lost or damaged on this disk); \
                 this node will not vote until a leader has restored them",
                log_path.display(),
                last.next()
            ));
        }
        let hard_state = HardState { commit: saved.commit.min(last), ..saved };
        let mut log = fs.open_log(&log_path).map_err(io_error(&log_path))?;
        if cut.is_some() {
            // Writes go where the good data ends, over the torn or damaged record.
            log.set_len(end).map_err(io_error(&log_path))?;
        }
        // What was read may sit in the page cache only (the process died, the machine did not):
        // it becomes durable before the node vouches for any of it.
        log.sync().map_err(io_error(&log_path))?;
        if let Some(Cut { line, bytes, damaged, why }) = &cut {
            warnings.push(if *damaged {
                format!(
                    "{}: cut {bytes} bytes from line {line} on ({why}), as --repair asked",
                    log_path.display()
                )
            } else {
                format!(
                    "{}: cut a torn record at line {line} ({bytes} bytes) left by a crash",
                    log_path.display()
                )
            });
        }
        let durable = Durable { seq: 0, last: LogIndex(entries.len() as u64) };
        let mut storage = Storage {
            fs,
            dir: dir.to_path_buf(),
            log_path,
            log,
            identity,
            offsets,
            end,
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
            commit_known: saved.commit,
        };
        if meta.is_none() {
            storage.write_metadata(hard_state)?; // a fresh folder records whose it is at once
        }
        Ok((storage, Recovery { hard_state, entries, repair_to, warnings }))
    }

    /// Buffers entries at the end of the log.
    pub fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            assert_eq!(entry.index.0, self.offsets.len() as u64 + 1, "log appends are contiguous");
            let start = self.buffer.len();
            encode_record(entry, &mut self.buffer);
            self.offsets.push(self.end);
            self.end += (self.buffer.len() - start) as u64;
        }
    }

    /// Removes entries `from` and after: one ftruncate, whatever the tail's length.
    pub fn truncate(&mut self, from: LogIndex) -> Result<(), StorageError> {
        let keep = from.0 as usize - 1;
        if keep >= self.offsets.len() {
            return Ok(());
        }
        self.flush_buffer()?;
        let at = self.offsets[keep];
        self.log.set_len(at).map_err(io_error(&self.log_path))?;
        self.offsets.truncate(keep);
        self.end = at;
        self.durable.last = self.durable.last.min(LogIndex(keep as u64));
        self.log_dirty = true;
        self.write_seq += 1;
        if !self.in_flight.is_empty() {
            self.truncations.push((self.write_seq, LogIndex(keep as u64)));
        }
        Ok(())
    }

    /// A new term or vote is made durable now (before later log writes can reach the disk);
    /// a new commit index only later.
    pub fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.hard = hard_state;
        if (hard_state.term, hard_state.voted_for) != (self.hard_written.term, self.hard_written.voted_for) {
            // Storage actions become durable in order (the core's contract): log writes issued
            // before this change are made durable before it is. Term and vote change rarely.
            self.flush_buffer()?;
            if self.log_dirty || !self.in_flight.is_empty() {
                self.log.sync().map_err(io_error(&self.log_path))?;
            }
            self.write_metadata(hard_state)?;
        }
        Ok(())
    }

    /// The write seq that everything written so far will carry once handed to the OS: once
    /// `durable().seq` reaches it, all of it is durable.
    pub fn barrier(&self) -> u64 {
        self.write_seq + u64::from(!self.buffer.is_empty())
    }

    /// Hands buffered writes to the OS and asks for a sync covering them: on the file's
    /// background thread (which merges requests that arrive while it is busy: group commit), or
    /// here when `inline_if_idle` and nothing else is in flight (two thread hand-offs cost more
    /// than they save when no other work is waiting), or when the file cannot sync in the
    /// background.
    pub fn request_sync(&mut self, inline_if_idle: bool) -> Result<(), StorageError> {
        self.flush_buffer()?;
        if !self.log_dirty {
            return Ok(());
        }
        if inline_if_idle && self.in_flight.is_empty() {
            return self.sync_now();
        }
        if !self.log.request_sync(self.write_seq) {
            return self.sync_now();
        }
        self.in_flight.push_back((self.write_seq, LogIndex(self.offsets.len() as u64)));
        self.log_dirty = false;
        Ok(())
    }

    /// How far the log is durable now, counting background syncs that have completed. An
    /// error if a sync failed: the node must stop (it never acknowledges what is not durable).
    pub fn durable(&mut self) -> Result<Durable, StorageError> {
        if self.in_flight.is_empty() {
            return Ok(self.durable);
        }
        let completed = self.log.synced().map_err(io_error(&self.log_path))?;
        let mut advanced = false;
        while let Some(&(seq, last)) = self.in_flight.front() {
            if seq > completed {
                break;
            }
            self.in_flight.pop_front();
            // Entries truncated after this sync was asked for are not what it made durable.
            let floor = self.truncations.iter().filter(|(at, _)| *at > seq).map(|(_, kept)| *kept).min();
            assert!(seq >= self.durable.seq, "durable seq never goes back");
            self.durable = Durable { seq, last: floor.map_or(last, |kept| last.min(kept)) };
            advanced = true;
        }
        if advanced {
            let oldest = self.in_flight.front().map_or(u64::MAX, |(seq, _)| *seq);
            self.truncations.retain(|(at, _)| *at > oldest.min(self.durable.seq));
        }
        assert!(self.durable.last.0 <= self.offsets.len() as u64, "durable within the log");
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
        self.log.sync().map_err(io_error(&self.log_path))?;
        self.in_flight.clear();
        self.durable = Durable { seq: self.write_seq, last: LogIndex(self.offsets.len() as u64) };
        if self.hard.commit != self.hard_written.commit {
            self.write_metadata(self.hard)?;
        }
        Ok(())
    }

    /// The file system this storage writes to.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// Makes every log write so far durable now, on this thread (one fdatasync).
    fn sync_now(&mut self) -> Result<(), StorageError> {
        self.log.sync().map_err(io_error(&self.log_path))?;
        self.log_dirty = false;
        assert!(self.in_flight.is_empty(), "an inline sync never overtakes background ones");
        self.durable = Durable { seq: self.write_seq, last: LogIndex(self.offsets.len() as u64) };
        Ok(())
    }

    fn flush_buffer(&mut self) -> Result<(), StorageError> {
        if !self.buffer.is_empty() {
            self.log.append(&self.buffer).map_err(io_error(&self.log_path))?;
            self.buffer.clear();
            self.log_dirty = true;
            self.write_seq += 1;
        }
        Ok(())
    }

    /// write, fsync, rename, fsync the folder. The commit written never exceeds the durable log.
    fn write_metadata(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        if self.durable.last >= self.repair_floor {
            self.repair_floor = LogIndex::ZERO; // repaired
        }
        let commit = hard_state.commit.max(self.commit_known).min(self.durable.last);
        let hard_state = HardState { commit, ..hard_state };
        let path = self.dir.join("metadata.json");
        let temp = self.dir.join("metadata.json.tmp");
        let mut text = format!(
            "{{\"name\":{},\"address\":{},\"term\":{},\"voted_for\":{},\"commit\":{}",
            json_string(&self.identity.name),
            json_string(&self.identity.address),
            hard_state.term.0,
            hard_state.voted_for.map_or("null".to_string(), |id| id.0.to_string()),
            hard_state.commit.0
        );
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

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// One log record, with its newline.
fn encode_record(entry: &Entry, out: &mut Vec<u8>) {
    let start = out.len();
    let _ = write!(out, "{{\"index\":{},\"term\":{},", entry.index.0, entry.term.0);
    match &entry.payload {
        Payload::Noop => out.extend_from_slice(b"\"type\":\"noop\""),
        Payload::Command(data) => match std::str::from_utf8(data.as_slice()) {
            Ok(text) => {
                out.extend_from_slice(b"\"type\":\"command\",\"data\":");
                serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
            }
            Err(_) => {
                out.extend_from_slice(b"\"type\":\"command\",\"data_hex\":\"");
                for byte in data.as_slice() {
                    let _ = write!(out, "{byte:02x}");
                }
                out.push(b'"');
            }
        },
    }
    let crc = crc32fast::hash(&out[start..]);
    let _ = writeln!(out, ",\"crc\":{crc}}}");
}

#[derive(serde::Deserialize)]
struct Record {
    index: u64,
    term: u64,
    #[serde(rename = "type")]
    kind: String,
    data: Option<String>,
    data_hex: Option<String>,
}

/// Splits `{...,"crc":N}` into the checked prefix and N, and verifies it.
fn checked(line: &str) -> Result<(), String> {
    let at = line.rfind(",\"crc\":").ok_or("record has no checksum")?;
    let digits = line[at + 7..].strip_suffix('}').ok_or("record does not end its object")?;
    let expected: u32 = digits.parse().map_err(|_| "checksum is not a number")?;
    let actual = crc32fast::hash(&line.as_bytes()[..at]);
    if actual != expected {
        return Err(format!("checksum mismatch (recorded {expected}, computed {actual})"));
    }
    Ok(())
}

fn decode_record(line: &str) -> Result<Entry, String> {
    checked(line)?;
    let record: Record = serde_json::from_str(line).map_err(|e| format!("unreadable record: {e}"))?;
    let payload = match (record.kind.as_str(), record.data, record.data_hex) {
        ("noop", None, None) => Payload::Noop,
        ("command", Some(text), None) => Payload::Command(Bytes::from(text.into_bytes())),
        ("command", None, Some(hex)) => {
            if hex.len() % 2 != 0 {
                return Err("odd-length data_hex".into());
            }
            let bytes: Result<Vec<u8>, _> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16)).collect();
            Payload::Command(Bytes::from(bytes.map_err(|_| "data_hex is not hex")?))
        }
        _ => return Err("record has an unknown type or payload".into()),
    };
    Ok(Entry { index: LogIndex(record.index), term: Term(record.term), payload })
}

/// What recovery cuts from the log's end.
#[derive(Debug)]
struct Cut {
    /// The first line cut, counted from 1.
    line: usize,
    bytes: usize,
    /// A damaged record before the tail (cut only on the operator's request), not a torn one.
    damaged: bool,
    why: String,
}

type ReadLog = (Vec<Entry>, Vec<u64>, u64, Option<Cut>);

/// Reads every record; returns entries, their offsets, where good data ends, and what must be
/// cut, if anything.
fn read_log(path: &Path, bytes: &[u8], on_corruption: OnCorruption) -> Result<ReadLog, StorageError> {
    let mut entries = Vec::new();
    let mut offsets = Vec::new();
    let mut position = 0usize;
    let mut line_number = 0usize;
    while position < bytes.len() {
        line_number += 1;
        let newline = bytes[position..].iter().position(|&b| b == b'\n');
        let is_last = newline.is_none_or(|n| position + n + 1 == bytes.len());
        let end = newline.map_or(bytes.len(), |n| position + n);
        let parsed = std::str::from_utf8(&bytes[position..end])
            .map_err(|_| "record is not UTF-8".to_string())
            .and_then(decode_record)
            .and_then(|entry| {
                if entry.index.0 == entries.len() as u64 + 1 {
                    Ok(entry)
                } else {
                    Err(format!("expected entry {}, found {}", entries.len() + 1, entry.index.0))
                }
            });
        match parsed {
            Ok(entry) if newline.is_some() => {
                offsets.push(position as u64);
                entries.push(entry);
                position = end + 1;
            }
            // The last line, unfinished or damaged: a write the crash interrupted.
            Ok(_) | Err(_) if is_last => {
                let cut = Cut {
                    line: line_number,
                    bytes: bytes.len() - position,
                    damaged: false,
                    why: String::new(),
                };
                return Ok((entries, offsets, position as u64, Some(cut)));
            }
            Err(why) if on_corruption == OnCorruption::Repair => {
                let cut = Cut { line: line_number, bytes: bytes.len() - position, damaged: true, why };
                return Ok((entries, offsets, position as u64, Some(cut)));
            }
            Err(why) => {
                return Err(StorageError::Corrupt { path: path.to_path_buf(), line: line_number, why })
            }
            Ok(_) => unreachable!("a record without newline is the last"),
        }
    }
    Ok((entries, offsets, position as u64, None))
}

/// The complete, valid records at the start of `bytes`, the first of which must be entry
/// `next_index`, each with where it ends (after its newline). Stops at the first incomplete or
/// damaged record: what a reader of this prefix of a log file could recover.
pub fn scan_records(bytes: &[u8], next_index: u64) -> Vec<(Entry, usize)> {
    let mut records = Vec::new();
    let mut position = 0;
    while let Some(length) = bytes[position..].iter().position(|&b| b == b'\n') {
        let line = &bytes[position..position + length];
        let entry = match std::str::from_utf8(line).map_err(|_| String::new()).and_then(decode_record) {
            Ok(entry) if entry.index.0 == next_index + records.len() as u64 => entry,
            _ => break,
        };
        position += length + 1;
        records.push((entry, position));
    }
    records
}

/// What a `metadata.json` holds, if it is complete and its checksum holds: the hard state,
/// and the index through which lost committed entries are still being repaired (zero if none).
pub fn decode_metadata(bytes: &[u8]) -> Option<(HardState, LogIndex)> {
    let meta = read_metadata(bytes).ok()?;
    Some((meta.hard_state(), LogIndex(meta.repair_to)))
}

#[derive(serde::Deserialize)]
struct Meta {
    name: String,
    address: String,
    term: u64,
    voted_for: Option<u64>,
    commit: u64,
    /// Present only while a repair is under way.
    #[serde(default)]
    repair_to: u64,
}

impl Meta {
    fn hard_state(&self) -> HardState {
        HardState {
            term: Term(self.term),
            voted_for: self.voted_for.map(NodeId),
            commit: LogIndex(self.commit),
        }
    }
}

fn read_metadata(bytes: &[u8]) -> Result<Meta, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let line = text.trim_end();
    checked(line)?;
    serde_json::from_str(line).map_err(|e| format!("unreadable: {e}"))
}

fn parse_metadata(
    path: &Path,
    bytes: &[u8],
    identity: &Identity,
) -> Result<(HardState, LogIndex), StorageError> {
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
    Ok((meta.hard_state(), LogIndex(meta.repair_to)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;
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
    fn write_sync_reopen_truncate() {
        let dir = temp_dir("basic");
        let (mut storage, recovery) = open(&dir, identity()).unwrap();
        assert!(recovery.entries.is_empty());
        storage
            .save_hard_state(HardState { term: Term(2), voted_for: Some(NodeId(5)), commit: LogIndex(0) })
            .unwrap();
        storage.append(&[
            entry(1, 1, "a"),
            entry(2, 2, "quote\"and\\slash"),
            Entry { index: LogIndex(3), term: Term(2), payload: Payload::Noop },
        ]);
        storage.append(&[Entry {
            index: LogIndex(4),
            term: Term(2),
            payload: Payload::Command(Bytes::from(vec![0xff, 0])),
        }]);
        storage.request_sync(true).unwrap();
        storage.truncate(LogIndex(3)).unwrap();
        storage.append(&[entry(3, 2, "c")]);
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
        storage.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]);
        let barrier = storage.barrier();
        storage.request_sync(false).unwrap();
        wait(&mut storage, barrier);
        assert_eq!(storage.durable().unwrap().last, LogIndex(3));
        // A sync asked for entries 4..5 cannot vouch for them once they are truncated.
        storage.append(&[entry(4, 1, "d"), entry(5, 1, "e")]);
        let first = storage.barrier();
        storage.request_sync(false).unwrap();
        storage.truncate(LogIndex(4)).unwrap();
        wait(&mut storage, first);
        assert_eq!(storage.durable().unwrap().last, LogIndex(3));
        storage.append(&[entry(4, 2, "D")]);
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
        storage.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]);
        storage.request_sync(true).unwrap();
        drop(storage);
        let log = dir.join("log.jsonl");
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
        assert!(error.contains("log.jsonl line 1"), "{error}");
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
        storage.append(&entries);
        storage.request_sync(true).unwrap();
        storage.save_hard_state(HardState { term: Term(1), voted_for: None, commit: LogIndex(6) }).unwrap();
        storage.close().unwrap();
        let log = dir.join("log.jsonl");
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
        storage.append(&[entry(5, 2, "y"), entry(6, 2, "z")]);
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
