//! The file-system seam. The storage code (`storage.rs`) reads and writes only through
//! [`FileSystem`] and [`LogFile`], so the same record format, metadata replacement, recovery and
//! group commit run on real files here ([`RealFs`]) and on the simulator's disk, where crashes
//! lose unsynced writes, tear records and fail fsyncs.
//!
//! What the storage code may assume, and no more (so a simulated disk may do anything else):
//! - a write is durable only after a sync of its file that started after the write;
//! - a directory change (create, rename, remove) is durable only after a sync of the directory;
//! - a crash keeps, for each file, any prefix of its writes since its last sync, and the first
//!   write it loses may be partly kept (a torn record).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The operations the storage code needs from a file system.
pub trait FileSystem: fmt::Debug {
    /// A log segment's handle.
    type Log: LogFile;

    /// Creates the folder and its parents if missing.
    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()>;
    /// True if `path` names a file.
    fn exists(&mut self, path: &Path) -> bool;
    /// The whole file; an error of kind `NotFound` if it does not exist.
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>>;
    /// At most `len` bytes of the file from `offset` (fewer only where the file ends, none
    /// past its end), as written so far; an error of kind `NotFound` if it does not exist.
    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The file's length as written so far; an error of kind `NotFound` if it does not exist.
    fn file_len(&mut self, path: &Path) -> io::Result<u64>;
    /// Creates `path` (or empties it) and writes `bytes`; durable only after `sync_file`.
    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Writes `bytes` at the end of an existing file; durable only after `sync_file`.
    fn append_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Makes the file's contents durable.
    fn sync_file(&mut self, path: &Path) -> io::Result<()>;
    /// Renames atomically, replacing `to`; durable only after `sync_dir`.
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file; durable only after `sync_dir`. An error of kind `NotFound` if it does
    /// not exist.
    fn remove_file(&mut self, path: &Path) -> io::Result<()>;
    /// The names of the files in `dir`, sorted.
    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the folder's entries (creations, renames, removals) durable.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
    /// Opens a log segment for appending at its end, creating it if missing.
    fn open_log(&mut self, path: &Path) -> io::Result<Self::Log>;
}

/// An append-only file with optional background syncing (group commit).
pub trait LogFile: fmt::Debug {
    /// Writes `bytes` at the end of the file.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes; later appends go there.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes everything written so far durable before returning.
    fn sync(&mut self) -> io::Result<()>;
    /// Asks for everything written so far to become durable in the background, tagged `seq`
    /// (increasing). False if this file cannot sync in the background: the caller syncs inline.
    fn request_sync(&mut self, seq: u64) -> bool;
    /// The highest `seq` whose background sync has completed (0 if none); an error once a
    /// background sync failed (nothing after a failed fsync can be trusted).
    fn synced(&mut self) -> io::Result<u64>;
}

/// Real files. With a waker, the log syncs on a background thread that wakes the event loop
/// when a sync completes.
#[derive(Debug, Default)]
pub struct RealFs {
    waker: Option<Arc<mio::Waker>>,
    timer: Option<SyncTimer>,
}

/// Told how long each fdatasync of a log segment took, on whichever thread ran it (the node's
/// `replog_fsync_latency_seconds`).
#[derive(Clone)]
pub struct SyncTimer(Arc<dyn Fn(Duration) + Send + Sync>);

impl SyncTimer {
    /// Calls `record` with each sync's duration.
    pub fn new(record: impl Fn(Duration) + Send + Sync + 'static) -> SyncTimer {
        SyncTimer(Arc::new(record))
    }

    fn time<T>(timer: Option<&SyncTimer>, sync: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = sync();
        if let Some(timer) = timer {
            (timer.0)(started.elapsed());
        }
        result
    }
}

impl fmt::Debug for SyncTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncTimer")
    }
}

impl RealFs {
    /// Syncs the log inline only.
    pub fn new() -> RealFs {
        RealFs { waker: None, timer: None }
    }

    /// Syncs the log on a background thread, waking `waker` after each sync.
    pub fn with_background_sync(waker: Arc<mio::Waker>) -> RealFs {
        RealFs { waker: Some(waker), timer: None }
    }

    /// Tells `timer` how long each sync of the log takes.
    pub fn timing_syncs(mut self, timer: SyncTimer) -> RealFs {
        self.timer = Some(timer);
        self
    }
}

impl FileSystem for RealFs {
    type Log = RealLog;

    fn create_dir_all(&mut self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn exists(&mut self, path: &Path) -> bool {
        path.exists()
    }

    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_at(&mut self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::with_capacity(len);
        file.take(len as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn file_len(&mut self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        File::create(path)?.write_all(bytes)
    }

    fn append_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        OpenOptions::new().append(true).open(path)?.write_all(bytes)
    }

    fn sync_file(&mut self, path: &Path) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.sync_all()
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list_dir(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                // A name that is not UTF-8 is none of ours.
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn open_log(&mut self, path: &Path) -> io::Result<RealLog> {
        let mut file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(path)?;
        file.seek(SeekFrom::End(0))?;
        let syncer = match &self.waker {
            Some(waker) => Some(Syncer::start(file.try_clone()?, Arc::clone(waker), self.timer.clone())),
            None => None,
        };
        Ok(RealLog { file, syncer, timer: self.timer.clone() })
    }
}

/// A real log file and its fsync thread.
#[derive(Debug)]
pub struct RealLog {
    file: File,
    syncer: Option<Syncer>,
    timer: Option<SyncTimer>,
}

impl LogFile for RealLog {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len)).map(drop)
    }

    fn sync(&mut self) -> io::Result<()> {
        SyncTimer::time(self.timer.as_ref(), || self.file.sync_data())
    }

    fn request_sync(&mut self, seq: u64) -> bool {
        match &self.syncer {
            Some(syncer) => syncer.request(seq),
            None => false,
        }
    }

    fn synced(&mut self) -> io::Result<u64> {
        match &self.syncer {
            Some(syncer) => syncer.completed(),
            None => Ok(0),
        }
    }
}

/// The background fsync thread: it merges requests that arrive while it is busy, so one
/// fdatasync covers every write handed to the OS before it started (group commit).
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
    fn start(file: File, waker: Arc<mio::Waker>, timer: Option<SyncTimer>) -> Syncer {
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
                    let result = SyncTimer::time(timer.as_ref(), || file.sync_data());
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

    /// If the thread has stopped after a failed fsync, the request is dropped and `completed`
    /// reports the failure: a request is never answered by an inline sync that might succeed.
    fn request(&self, seq: u64) -> bool {
        if let Some(requests) = &self.requests {
            let _ = requests.send(seq);
        }
        true
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
