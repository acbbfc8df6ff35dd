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

use replog_core::{Bytes, Entry, HardState, LogIndex, NodeId, Payload, Term};
use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const COMMIT_WRITE_INTERVAL: Duration = Duration::from_millis(100);

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
                "{} line {line}: {why}; refusing to start (restore the file, or remove the node's data folder to rejoin empty)",
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

/// What was found on disk at start.
#[derive(Debug)]
pub struct Recovery {
    pub hard_state: HardState,
    pub entries: Vec<Entry>,
    /// Things recovery repaired (a torn tail), for the log.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
pub struct Storage {
    dir: PathBuf,
    log_path: PathBuf,
    log: File,
    identity: Identity,
    /// `offsets[i - 1]` is where entry i starts; `end` is where the next one goes.
    offsets: Vec<u64>,
    end: u64,
    /// Serialized records not yet handed to the OS.
    buffer: Vec<u8>,
    /// Bytes handed to the OS but not yet fsync'd.
    log_dirty: bool,
    durable_last: LogIndex,
    /// Bumped by every write or truncation handed to the OS: a sync covers the seqs issued
    /// before it started.
    write_seq: u64,
    durable_seq: u64,
    /// Syncs asked of the background thread: (seq, log length then), oldest first.
    in_flight: VecDeque<(u64, LogIndex)>,
    /// Truncations since: (seq, entries kept); a sync issued before one cannot vouch past it.
    truncations: Vec<(u64, LogIndex)>,
    syncer: Option<Syncer>,
    hard: HardState,
    hard_written: HardState,
    commit_written_at: Instant,
}

impl Storage {
    /// Opens (creating if needed) the folder and recovers what it holds.
    pub fn open(dir: &Path, identity: Identity) -> Result<(Storage, Recovery), StorageError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let log_path = dir.join("log.jsonl");
        let meta_path = dir.join("metadata.json");
        let mut warnings = Vec::new();
        let log_exists = log_path.exists();
        let (entries, offsets, end, cut) =
            if log_exists { read_log(&log_path)? } else { (Vec::new(), Vec::new(), 0, None) };
        let hard_state = match fs::read_to_string(&meta_path) {
            Ok(text) => parse_metadata(&meta_path, &text, &identity)?,
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
                HardState::default()
            }
            Err(error) => return Err(StorageError::Io { path: meta_path, error }),
        };
        let mut log = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&log_path)
            .map_err(io_error(&log_path))?;
        // Writes go where the good data ends (after a cut, over the torn record).
        log.seek(SeekFrom::Start(end)).map_err(io_error(&log_path))?;
        if let Some((line, bytes)) = cut {
            log.set_len(end).map_err(io_error(&log_path))?;
            log.sync_all().map_err(io_error(&log_path))?;
            warnings.push(format!(
                "{}: cut a torn record at line {line} ({bytes} bytes) left by a crash",
                log_path.display()
            ));
        }
        let durable_last = LogIndex(entries.len() as u64);
        let storage = Storage {
            dir: dir.to_path_buf(),
            log_path,
            log,
            identity,
            offsets,
            end,
            buffer: Vec::with_capacity(64 * 1024),
            log_dirty: false,
            durable_last,
            write_seq: 0,
            durable_seq: 0,
            in_flight: VecDeque::new(),
            truncations: Vec::new(),
            syncer: None,
            hard: hard_state,
            hard_written: hard_state,
            commit_written_at: Instant::now(),
        };
        let mut storage = storage;
        if !meta_path.exists() {
            storage.write_metadata(hard_state)?; // a fresh folder records whose it is at once
        }
        Ok((storage, Recovery { hard_state, entries, warnings }))
    }

    pub fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            debug_assert_eq!(entry.index.0, self.offsets.len() as u64 + 1);
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
        self.log.seek(SeekFrom::Start(at)).map_err(io_error(&self.log_path))?;
        self.offsets.truncate(keep);
        self.end = at;
        self.durable_last = self.durable_last.min(LogIndex(keep as u64));
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
                self.log.sync_data().map_err(io_error(&self.log_path))?;
            }
            self.write_metadata(hard_state)?;
        }
        Ok(())
    }

    /// Makes every log write so far durable now, on this thread (one fdatasync), and the
    /// commit index if due.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.flush_buffer()?;
        if self.log_dirty {
            self.log.sync_data().map_err(io_error(&self.log_path))?;
            self.log_dirty = false;
        }
        self.durable_last = LogIndex(self.offsets.len() as u64);
        self.durable_seq = self.write_seq;
        self.write_commit_if_due()
    }

    /// Moves fsyncs to a background thread: `request_sync` asks, `poll_synced` collects, and
    /// `waker` wakes the event loop when a sync completes. The loop goes on serving meanwhile.
    pub fn start_syncer(&mut self, waker: Arc<mio::Waker>) -> Result<(), StorageError> {
        let file = self.log.try_clone().map_err(io_error(&self.log_path))?;
        self.syncer = Some(Syncer::start(file, waker));
        Ok(())
    }

    /// The write seq that the buffered writes will carry: a `Sync` action waits for it.
    pub fn barrier(&self) -> u64 {
        self.write_seq + u64::from(!self.buffer.is_empty())
    }

    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Hands buffered writes to the OS and asks for an fdatasync covering them (the background
    /// thread merges requests that arrive while it is busy: group commit). Without a syncer
    /// it syncs at once.
    pub fn request_sync(&mut self, inline_if_idle: bool) -> Result<(), StorageError> {
        self.flush_buffer()?;
        if !self.log_dirty {
            return Ok(());
        }
        // With nothing else in flight, a lightly loaded node syncs here: two thread hand-offs
        // cost more than they save when no other work is waiting.
        if inline_if_idle && self.in_flight.is_empty() {
            return self.sync();
        }
        let Some(syncer) = &self.syncer else {
            return self.sync();
        };
        syncer.request(self.write_seq);
        self.in_flight.push_back((self.write_seq, LogIndex(self.offsets.len() as u64)));
        self.log_dirty = false;
        Ok(())
    }

    /// Takes completed background syncs into account; true if more is durable now.
    pub fn poll_synced(&mut self) -> Result<bool, StorageError> {
        let Some(syncer) = &self.syncer else {
            return Ok(false);
        };
        let completed =
            syncer.completed().map_err(|error| StorageError::Io { path: self.log_path.clone(), error })?;
        let mut advanced = false;
        while let Some(&(seq, last)) = self.in_flight.front() {
            if seq > completed {
                break;
            }
            self.in_flight.pop_front();
            // Entries truncated after this sync was asked for are not what it made durable.
            let floor = self.truncations.iter().filter(|(at, _)| *at > seq).map(|(_, kept)| *kept).min();
            self.durable_last = floor.map_or(last, |kept| last.min(kept));
            self.durable_seq = seq;
            advanced = true;
        }
        if advanced {
            let oldest = self.in_flight.front().map_or(u64::MAX, |(seq, _)| *seq);
            self.truncations.retain(|(at, _)| *at > oldest.min(self.durable_seq));
            self.write_commit_if_due()?;
        }
        Ok(advanced)
    }

    fn write_commit_if_due(&mut self) -> Result<(), StorageError> {
        if self.hard.commit != self.hard_written.commit
            && self.commit_written_at.elapsed() >= COMMIT_WRITE_INTERVAL
        {
            self.write_metadata(self.hard)?;
        }
        Ok(())
    }

    /// Everything durable, commit index included (clean shutdown).
    pub fn close(&mut self) -> Result<(), StorageError> {
        self.syncer = None; // joins the thread after its last sync
        self.in_flight.clear();
        self.log_dirty = true;
        self.sync()?;
        if self.hard.commit != self.hard_written.commit {
            self.write_metadata(self.hard)?;
        }
        Ok(())
    }

    pub fn durable_last(&self) -> LogIndex {
        self.durable_last
    }

    fn flush_buffer(&mut self) -> Result<(), StorageError> {
        if !self.buffer.is_empty() {
            self.log.write_all(&self.buffer).map_err(io_error(&self.log_path))?;
            self.buffer.clear();
            self.log_dirty = true;
            self.write_seq += 1;
        }
        Ok(())
    }

    /// write, fsync, rename, fsync the folder. The commit written never exceeds the durable log.
    fn write_metadata(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        let hard_state = HardState { commit: hard_state.commit.min(self.durable_last), ..hard_state };
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
        let crc = crc32fast::hash(text.as_bytes());
        text.push_str(&format!(",\"crc\":{crc}}}\n"));
        let mut file = File::create(&temp).map_err(io_error(&temp))?;
        file.write_all(text.as_bytes()).map_err(io_error(&temp))?;
        file.sync_all().map_err(io_error(&temp))?;
        fs::rename(&temp, &path).map_err(io_error(&path))?;
        File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(io_error(&self.dir))?;
        self.hard_written = hard_state;
        self.commit_written_at = Instant::now();
        Ok(())
    }
}

/// The background fsync thread.
#[derive(Debug)]
struct Syncer {
    requests: Option<mpsc::Sender<u64>>,
    shared: Arc<Mutex<SyncState>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SyncState {
    completed: u64,
    error: Option<io::Error>,
}

impl Syncer {
    fn start(file: File, waker: Arc<mio::Waker>) -> Syncer {
        let (requests, inbox) = mpsc::channel::<u64>();
        let shared = Arc::new(Mutex::new(SyncState::default()));
        let state = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("replog-fsync".into())
            .spawn(move || {
                while let Ok(mut seq) = inbox.recv() {
                    // Everything asked for meanwhile rides on this one fsync.
                    while let Ok(more) = inbox.try_recv() {
                        seq = seq.max(more);
                    }
                    let result = file.sync_data();
                    let mut state = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    match result {
                        Ok(()) => state.completed = seq,
                        Err(error) => {
                            state.error = Some(error);
                            let _ = waker.wake();
                            return; // nothing after a failed fsync can be trusted
                        }
                    }
                    drop(state);
                    let _ = waker.wake();
                }
            })
            .expect("spawning the fsync thread");
        Syncer { requests: Some(requests), shared, thread: Some(thread) }
    }

    fn request(&self, seq: u64) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(seq);
        }
    }

    fn completed(&self) -> io::Result<u64> {
        let state = self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &state.error {
            Some(error) => Err(io::Error::new(error.kind(), format!("fdatasync failed: {error}"))),
            None => Ok(state.completed),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.requests = None; // the thread ends once its inbox is closed and drained
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
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

type ReadLog = (Vec<Entry>, Vec<u64>, u64, Option<(usize, usize)>);

/// Reads every record; returns entries, their offsets, where good data ends, and the torn tail
/// that must be cut (line number, bytes), if any.
fn read_log(path: &Path) -> Result<ReadLog, StorageError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
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
                return Ok((entries, offsets, position as u64, Some((line_number, bytes.len() - position))))
            }
            Err(why) => {
                return Err(StorageError::Corrupt { path: path.to_path_buf(), line: line_number, why })
            }
            Ok(_) => unreachable!("a record without newline is the last"),
        }
    }
    Ok((entries, offsets, position as u64, None))
}

fn parse_metadata(path: &Path, text: &str, identity: &Identity) -> Result<HardState, StorageError> {
    let corrupt = |why: String| StorageError::Corrupt { path: path.to_path_buf(), line: 1, why };
    let line = text.trim_end();
    checked(line).map_err(corrupt)?;
    #[derive(serde::Deserialize)]
    struct Meta {
        name: String,
        address: String,
        term: u64,
        voted_for: Option<u64>,
        commit: u64,
    }
    let meta: Meta = serde_json::from_str(line).map_err(|e| corrupt(format!("unreadable: {e}")))?;
    if meta.address != identity.address {
        return Err(StorageError::Mismatch {
            path: path.to_path_buf(),
            why: format!(
                "this folder belongs to {} at {}, not to {} at {}; a node's address is its identity in the cluster",
                meta.name, meta.address, identity.name, identity.address
            ),
        });
    }
    Ok(HardState {
        term: Term(meta.term),
        voted_for: meta.voted_for.map(NodeId),
        commit: LogIndex(meta.commit),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (mut storage, recovery) = Storage::open(&dir, identity()).unwrap();
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
        storage.sync().unwrap();
        storage.truncate(LogIndex(3)).unwrap();
        storage.append(&[entry(3, 2, "c")]);
        storage
            .save_hard_state(HardState { term: Term(2), voted_for: Some(NodeId(5)), commit: LogIndex(3) })
            .unwrap();
        storage.close().unwrap();
        drop(storage);
        let (_, recovery) = Storage::open(&dir, identity()).unwrap();
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
        let (mut storage, _) = Storage::open(&dir, identity()).unwrap();
        let poll = mio::Poll::new().unwrap();
        storage.start_syncer(Arc::new(mio::Waker::new(poll.registry(), mio::Token(7)).unwrap())).unwrap();
        let wait = |storage: &mut Storage, seq: u64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while storage.durable_seq() < seq {
                storage.poll_synced().unwrap();
                assert!(Instant::now() < deadline, "sync never completed");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        storage.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]);
        let barrier = storage.barrier();
        storage.request_sync(false).unwrap();
        wait(&mut storage, barrier);
        assert_eq!(storage.durable_last(), LogIndex(3));
        // A sync asked for entries 4..5 cannot vouch for them once they are truncated.
        storage.append(&[entry(4, 1, "d"), entry(5, 1, "e")]);
        let first = storage.barrier();
        storage.request_sync(false).unwrap();
        storage.truncate(LogIndex(4)).unwrap();
        wait(&mut storage, first);
        assert_eq!(storage.durable_last(), LogIndex(3));
        storage.append(&[entry(4, 2, "D")]);
        let second = storage.barrier();
        storage.request_sync(false).unwrap();
        wait(&mut storage, second);
        assert_eq!(storage.durable_last(), LogIndex(4));
        storage.close().unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn torn_tail_is_cut_and_middle_corruption_refused() {
        let dir = temp_dir("torn");
        let (mut storage, _) = Storage::open(&dir, identity()).unwrap();
        storage.save_hard_state(HardState { term: Term(1), voted_for: None, commit: LogIndex(0) }).unwrap();
        storage.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")]);
        storage.sync().unwrap();
        drop(storage);
        let log = dir.join("log.jsonl");
        let mut bytes = fs::read(&log).unwrap();
        let full = bytes.clone();
        bytes.truncate(bytes.len() - 5);
        fs::write(&log, &bytes).unwrap();
        let (_, recovery) = Storage::open(&dir, identity()).unwrap();
        assert_eq!(recovery.entries.len(), 2);
        assert_eq!(recovery.warnings.len(), 1, "{:?}", recovery.warnings);
        // A flipped byte in the first record is corruption, not a torn tail.
        let mut corrupt = full.clone();
        corrupt[20] ^= 0x01;
        fs::write(&log, &corrupt).unwrap();
        let error = Storage::open(&dir, identity()).unwrap_err().to_string();
        assert!(error.contains("log.jsonl line 1"), "{error}");
        // A log without metadata is refused; a folder of another node too.
        fs::write(&log, &full).unwrap();
        let other = Identity { name: "node2".into(), address: "127.0.0.1:9".into() };
        assert!(Storage::open(&dir, other).unwrap_err().to_string().contains("belongs to node1"));
        fs::remove_file(dir.join("metadata.json")).unwrap();
        assert!(Storage::open(&dir, identity()).unwrap_err().to_string().contains("missing"));
        let _ = fs::remove_dir_all(&dir);
    }
}
