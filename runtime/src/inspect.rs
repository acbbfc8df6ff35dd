//! Reading a data folder offline, for `replog dump` and `replog verify`: what each file holds,
//! with every checksum checked, and damage reported with its file, line and byte offset instead
//! of stopping at it.
//!
//! The files are read by the runtime's own decoders (`records.rs`, `segment_index.rs`,
//! `storage.rs`, `image.rs`), so a folder is judged as a node starting on it would judge it:
//! - **damage** ([`Severity::Damage`]) is what a node refuses to start on (or, with `--repair`,
//!   cuts): a record whose checksum fails or that is not the entry its line should hold, a gap
//!   between segments, a damaged `metadata.json` or `snapshot.json`, a segment index that does
//!   not match its segment;
//! - a **warning** ([`Severity::Warning`]) is what a node deals with by itself at start: a torn
//!   last record of the last segment (a write a crash interrupted: cut), a sealed segment
//!   without its index (rebuilt), a damaged `snapshot.partial` (the transfer starts over), files
//!   a snapshot covers (removed), a log that ends before the commit index (repaired from the
//!   leader).
//!
//! Nothing is written, locked, renamed or removed, and every file is opened read-only, so a
//! folder can be read while its node runs (a record it is writing may then show as torn).
//! Segments are streamed a line at a time ([`Records`]) and [`compare`] walks several folders
//! side by side, so memory stays bounded whatever the log's length: a line longer than any
//! record can be ([`LINE_BYTES_MAX`]) is reported and skipped, never held.

use crate::image::Image;
use crate::limits::FRAME_BYTES_MAX;
use crate::records::{decode_partial_header, decode_record};
use crate::segment_index::{parse_index_name, SegmentIndex, Tally};
use crate::segments::{parse_segment_name, LEGACY_LOG};
use crate::sessions::SessionLimits;
use crate::storage::{decode_snapshot, parse_id, read_metadata, METADATA_FILE, PARTIAL_FILE, SNAPSHOT_FILE};
use replog_core::{Entry, HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term};
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// No record is longer: a command fits a frame, and JSON spends at most 6 bytes on one of its
/// bytes (`\u0000`); the rest is room for a request's per-command overhead. A longer line is
/// damage, skipped without being held in memory.
pub const LINE_BYTES_MAX: usize = 8 * FRAME_BYTES_MAX;

/// How much of a segment is read at once.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// The most of `snapshot.partial` read for its header line (the bytes after it are not read).
const PARTIAL_HEADER_BYTES_MAX: u64 = 1024 * 1024;

/// The findings [`compare`] keeps per folder (it counts them all).
pub const FINDINGS_KEPT: usize = 20;

/// One log record as a node writes it, with its checksum and newline: for tests and tools that
/// build or mend folders (nothing in this module writes).
pub fn encode_record(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    crate::records::encode_record(entry, &mut out);
    out
}

/// How bad a finding is (the module doc says which is which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// A node refuses to start on it.
    Damage,
    /// A node deals with it by itself at start.
    Warning,
}

/// Something wrong in a data folder, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub file: PathBuf,
    /// The line, from 1 (the one-line files have one).
    pub line: Option<usize>,
    /// Where that line starts in the file.
    pub offset: Option<u64>,
    /// The log entry it concerns, if one.
    pub index: Option<LogIndex>,
    pub why: String,
}

impl Finding {
    fn new(severity: Severity, file: &Path, why: impl Into<String>) -> Finding {
        Finding { severity, file: file.to_path_buf(), line: None, offset: None, index: None, why: why.into() }
    }

    fn at(mut self, line: usize, offset: u64) -> Finding {
        self.line = Some(line);
        self.offset = Some(offset);
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        match (self.line, self.offset) {
            (Some(line), Some(offset)) => write!(f, " line {line} (byte {offset})")?,
            (Some(line), None) => write!(f, " line {line}")?,
            _ => {}
        }
        if let Some(index) = self.index {
            write!(f, ", entry {}", index.0)?;
        }
        write!(f, ": {}", self.why)
    }
}

/// What `metadata.json` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub address: String,
    /// The node's random id; `None` in a folder of a version before random ids.
    pub id: Option<NodeId>,
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// The configuration the cluster started with.
    pub bootstrap: Option<Membership>,
    /// While a repair is under way, the index through which lost committed entries are being
    /// fetched again (zero if none).
    pub repair_to: LogIndex,
}

/// What `snapshot.json` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub meta: SnapshotMeta,
    /// The configuration in force at its index.
    pub membership: Membership,
    /// The image's length in bytes.
    pub image_bytes: usize,
    /// Command count and digest of the entries it covers; why not, if its data is no image.
    pub image: Result<Image, String>,
    /// Sessions in its session table.
    pub sessions: Result<usize, String>,
}

/// What the header of `snapshot.partial` (a snapshot being received) says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialInfo {
    pub meta: SnapshotMeta,
    pub membership: Membership,
    /// The snapshot's length, and the bytes received so far.
    pub total: u64,
    pub received: u64,
    /// The whole snapshot's checksum (FNV-1a), checked once it is complete.
    pub checksum: u64,
}

/// A log segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub path: PathBuf,
    /// The entry its name says it starts with.
    pub first: LogIndex,
    /// Its index file, if there is one.
    pub index_file: Option<PathBuf>,
}

/// A data folder, its one-line files read and its segments listed.
#[derive(Clone, Debug)]
pub struct Folder {
    pub dir: PathBuf,
    pub metadata: Option<Metadata>,
    pub snapshot: Option<SnapshotInfo>,
    pub partial: Option<PartialInfo>,
    /// Oldest first.
    pub segments: Vec<SegmentFile>,
    /// What is wrong with the files besides the segments and their indexes.
    pub findings: Vec<Finding>,
}

impl Folder {
    /// Reads `dir`'s `metadata.json`, `snapshot.json` and the header of `snapshot.partial`, and
    /// lists its segments. An error only if the folder cannot be listed or holds none of a
    /// data folder's files; damaged files are findings.
    pub fn open(dir: &Path) -> Result<Folder, String> {
        let unreadable = |error: io::Error| format!("{}: cannot read the folder: {error}", dir.display());
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            if let Ok(name) = entry.map_err(unreadable)?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        let has = |file: &str| names.iter().any(|name| name == file);
        let mut findings = Vec::new();
        let mut segments: Vec<SegmentFile> = names
            .iter()
            .filter_map(|name| {
                let first = parse_segment_name(name)?;
                Some(SegmentFile { path: dir.join(name), first, index_file: None })
            })
            .collect();
        if has(LEGACY_LOG) {
            let path = dir.join(LEGACY_LOG);
            if segments.is_empty() {
                // A folder of a version before segments: the log from entry 1, renamed at start.
                segments.push(SegmentFile { path, first: LogIndex(1), index_file: None });
            } else {
                let why = "an old-style log next to log segments: which one holds the log is unclear";
                findings.push(Finding::new(Severity::Damage, &path, why));
            }
        }
        if !(has(METADATA_FILE) || has(SNAPSHOT_FILE) || has(PARTIAL_FILE) || !segments.is_empty()) {
            return Err(format!(
                "{}: not a replog data folder (no {METADATA_FILE}, {SNAPSHOT_FILE} or log segment)",
                dir.display()
            ));
        }
        for name in &names {
            let Some(first) = parse_index_name(name) else { continue };
            let path = dir.join(name);
            match segments.iter_mut().find(|segment| segment.first == first) {
                Some(segment) => segment.index_file = Some(path),
                None => findings.push(Finding::new(
                    Severity::Warning,
                    &path,
                    "the index of a segment that is not there (left by a crash): a node removes it at start",
                )),
            }
        }

        let metadata = if has(METADATA_FILE) {
            read_metadata_file(&dir.join(METADATA_FILE), &mut findings)
        } else {
            if has(SNAPSHOT_FILE) || !segments.is_empty() {
                let why = "missing next to a log: a node refuses to start without it";
                findings.push(Finding::new(Severity::Damage, &dir.join(METADATA_FILE), why));
            }
            None
        };
        let snapshot = if has(SNAPSHOT_FILE) {
            read_snapshot_file(&dir.join(SNAPSHOT_FILE), &mut findings)
        } else {
            None
        };
        let snapshot_index = snapshot.as_ref().map_or(LogIndex::ZERO, |snapshot| snapshot.meta.index);
        let partial = if has(PARTIAL_FILE) {
            read_partial_file(&dir.join(PARTIAL_FILE), snapshot_index, &mut findings)
        } else {
            None
        };
        Ok(Folder { dir: dir.to_path_buf(), metadata, snapshot, partial, segments, findings })
    }

    /// The last entry the snapshot covers (zero without one).
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot.as_ref().map_or(LogIndex::ZERO, |snapshot| snapshot.meta.index)
    }

    /// The highest index the folder says is committed: its metadata's commit index, or the
    /// snapshot's if later (a snapshot covers committed entries only, and the commit index is
    /// written lazily).
    pub fn committed(&self) -> LogIndex {
        let commit = self.metadata.as_ref().map_or(LogIndex::ZERO, |meta| meta.hard_state.commit);
        commit.max(self.snapshot_index())
    }

    /// The folder's findings, then its segments' records in order, each segment announced,
    /// with what is wrong where it is found.
    pub fn records(&self) -> Records<'_> {
        Records {
            folder: self,
            next_segment: 0,
            scan: None,
            queue: self.findings.iter().cloned().map(Item::Finding).collect(),
            expected: Expected::Start,
            ids: self.ids_start(),
            last: None,
            snapshot_term_held: None,
            summary: Summary::default(),
            finished: false,
            line: Vec::new(),
        }
    }

    /// The first command ID of the log's first entry, if it can be counted: 1 for a log from
    /// entry 1; for a log that starts inside the snapshot, the snapshot's command count less
    /// the commands of the entries it holds through the snapshot's index (read once ahead).
    fn ids_start(&self) -> Option<(LogIndex, u64)> {
        let first = self.segments.first()?.first;
        let Some(snapshot) = &self.snapshot else {
            return (first == LogIndex(1)).then_some((first, 1));
        };
        let (image, through) = (snapshot.image.as_ref().ok()?, snapshot.meta.index);
        if first > through {
            return None; // the IDs start over after the snapshot anyway
        }
        let (mut counted, mut next, mut line) = (0u64, first, Vec::new());
        for segment in self.segments.iter().take_while(|segment| segment.first <= through) {
            if segment.first != next {
                return None;
            }
            let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, File::open(&segment.path).ok()?);
            while next <= through {
                let Some(read) = read_line(&mut reader, &mut line, LINE_BYTES_MAX).ok()? else { break };
                let entry = decode_record(&line).ok().filter(|entry| entry.index == next && read.newline)?;
                counted += entry.payload.commands().len() as u64;
                next = next.next();
            }
        }
        let before = image.commands.checked_sub(counted).filter(|_| next > through)?;
        Some((first, before + 1))
    }
}

fn read_metadata_file(path: &Path, findings: &mut Vec<Finding>) -> Option<Metadata> {
    let read = std::fs::read(path).map_err(|error| format!("unreadable: {error}")).and_then(|bytes| {
        let meta = read_metadata(&bytes)?;
        let hard_state = meta.hard_state()?;
        let id = meta.id.as_deref().map(parse_id).transpose()?;
        Ok(Metadata {
            name: meta.name,
            address: meta.address,
            id,
            hard_state,
            bootstrap: meta.bootstrap,
            repair_to: LogIndex(meta.repair_to),
        })
    });
    read.map_err(|why| findings.push(Finding::new(Severity::Damage, path, why).at(1, 0))).ok()
}

fn read_snapshot_file(path: &Path, findings: &mut Vec<Finding>) -> Option<SnapshotInfo> {
    let read = std::fs::read(path).map_err(|error| format!("unreadable: {error}"));
    let snapshot = match read.and_then(|bytes| decode_snapshot(&bytes)) {
        Ok(snapshot) => snapshot,
        Err(why) => {
            findings.push(Finding::new(Severity::Damage, path, why).at(1, 0));
            return None;
        }
    };
    let data = snapshot.data.as_slice();
    let image = Image::decode(data);
    if let Err(why) = &image {
        findings.push(Finding::new(Severity::Damage, path, format!("its image: {why}")).at(1, 0));
    }
    let sessions = Image::decode_sessions(data, SessionLimits::default()).map(|table| table.len());
    Some(SnapshotInfo {
        meta: snapshot.meta,
        membership: snapshot.membership,
        image_bytes: data.len(),
        image,
        sessions,
    })
}

fn read_partial_file(
    path: &Path,
    snapshot_index: LogIndex,
    findings: &mut Vec<Finding>,
) -> Option<PartialInfo> {
    let warn = |findings: &mut Vec<Finding>, why: String| {
        findings.push(Finding::new(Severity::Warning, path, why).at(1, 0));
    };
    let read = File::open(path).and_then(|file| {
        let length = file.metadata()?.len();
        let mut header = Vec::new();
        BufReader::new(file.take(PARTIAL_HEADER_BYTES_MAX)).read_until(b'\n', &mut header)?;
        Ok((length, header))
    });
    let (length, header) = match read {
        Ok(read) => read,
        Err(error) => {
            warn(findings, format!("unreadable: {error}"));
            return None;
        }
    };
    match decode_partial_header(&header) {
        Ok((header, start)) => {
            // The file may shrink or grow under a running node between the two reads.
            let received = length.saturating_sub(start as u64);
            if received > header.total {
                let why = format!("{received} bytes of a snapshot of {}: a node ignores it", header.total);
                warn(findings, why);
            } else if header.meta.index <= snapshot_index {
                let why = "a transfer the saved snapshot overtook: a node removes it at start";
                warn(findings, why.to_string());
            }
            Some(PartialInfo {
                meta: header.meta,
                membership: header.membership,
                total: header.total,
                received,
                checksum: header.checksum,
            })
        }
        Err(why) => {
            warn(findings, format!("{why}: a node ignores it and the transfer starts over"));
            None
        }
    }
}

/// One log record as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub entry: Entry,
    pub file: Arc<Path>,
    /// Its line in the file, from 1.
    pub line: usize,
    /// Where it starts in the file.
    pub offset: u64,
    /// The ID of its first command (the others follow); `None` if it holds none, or if the
    /// commands before it cannot be counted (a damaged record or a gap before it).
    pub first_id: Option<u64>,
}

/// What a segment's index file came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexFile {
    Absent,
    /// Whole and consistent with the segment's length (whether it matches the segment's
    /// records is known once they are read: a finding if not).
    Read,
    /// Damaged (a finding says how).
    Damaged,
}

/// A segment about to be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentStart {
    pub file: Arc<Path>,
    pub first: LogIndex,
    pub index: IndexFile,
}

/// What [`Records`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Segment(SegmentStart),
    Record(Record),
    Finding(Finding),
}

/// What a folder's records came to, counted as they are read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub segments: usize,
    pub records: u64,
    pub first: Option<LogIndex>,
    pub last: Option<LogIndex>,
    /// Client commands in the records, and the first and last ID among them where known.
    pub commands: u64,
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
    /// Commands whose IDs cannot be counted (after a damaged record or a gap).
    pub ids_unknown: u64,
    pub damaged: u64,
    pub warnings: u64,
}

/// Where the next segment should start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    /// At the log's start: entry 1, or at or before the one after the snapshot.
    Start,
    At(LogIndex),
    /// Unknown: the segment before could not be read.
    Unknown,
}

/// One segment being read.
#[derive(Debug)]
struct Scan {
    file: Arc<Path>,
    index_path: Option<PathBuf>,
    first: LogIndex,
    /// The last segment: its last record may be torn.
    is_last: bool,
    /// The snapshot covers it wholly (the next segment starts at or before the entry after
    /// it): a node removes it unread, so what is wrong in it is only a warning.
    covered: bool,
    reader: BufReader<File>,
    /// Where the next line starts.
    offset: u64,
    lines: usize,
    index: Option<SegmentIndex>,
    /// What its records add up to, while all of them so far were good.
    tally: Option<Tally>,
    /// CRC-32 of its last good record (with the newline).
    tail_crc: u32,
}

/// A folder's findings, then its records, segment by segment ([`Folder::records`]).
#[derive(Debug)]
pub struct Records<'a> {
    folder: &'a Folder,
    next_segment: usize,
    scan: Option<Scan>,
    /// Items ready to hand out, in order.
    queue: VecDeque<Item>,
    expected: Expected,
    /// The first ID of entry `.0`'s commands, while IDs can be counted.
    ids: Option<(LogIndex, u64)>,
    /// The last entry handed out: later segments that overlap it are not handed out again.
    last: Option<LogIndex>,
    /// The term of the log's entry at the snapshot's index, if it holds one.
    snapshot_term_held: Option<Term>,
    summary: Summary,
    finished: bool,
    /// The line being read (reused).
    line: Vec<u8>,
}

impl Iterator for Records<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                self.count(&item);
                return Some(item);
            }
            if let Some(scan) = self.scan.take() {
                self.step(scan);
            } else if self.next_segment < self.folder.segments.len() {
                self.open_segment();
            } else if !self.finished {
                self.finish();
                self.finished = true;
            } else {
                return None;
            }
        }
    }
}

impl Records<'_> {
    /// What was read so far (all of it once the iterator has ended).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    fn count(&mut self, item: &Item) {
        let summary = &mut self.summary;
        match item {
            Item::Segment(_) => summary.segments += 1,
            Item::Record(record) => {
                summary.records += 1;
                summary.first = summary.first.or(Some(record.entry.index));
                summary.last = Some(record.entry.index);
                let count = record.entry.payload.commands().len() as u64;
                summary.commands += count;
                match record.first_id {
                    Some(id) => {
                        summary.first_id = summary.first_id.or(Some(id));
                        summary.last_id = Some(id + count - 1);
                    }
                    None => summary.ids_unknown += count,
                }
            }
            Item::Finding(finding) => match finding.severity {
                Severity::Damage => summary.damaged += 1,
                Severity::Warning => summary.warnings += 1,
            },
        }
    }

    fn push_finding(&mut self, finding: Finding) {
        self.queue.push_back(Item::Finding(finding));
    }

    /// Opens the next segment: checks it follows the one before, reads its index file.
    fn open_segment(&mut self) {
        let segments = &self.folder.segments;
        let k = self.next_segment;
        self.next_segment += 1;
        let segment = &segments[k];
        let file: Arc<Path> = Arc::from(segment.path.as_path());
        let after_snapshot = self.folder.snapshot_index().next();
        let has_snapshot = self.folder.snapshot.is_some();
        let covered = has_snapshot && segments.get(k + 1).is_some_and(|next| next.first <= after_snapshot);
        let name = file_name(&segment.path);

        // Each segment starts where the one before it ends; the first at entry 1, or at or
        // before the entry after the snapshot.
        let gap = match self.expected {
            Expected::Start if has_snapshot && segment.first > after_snapshot => Some(format!(
                "entries {}..={} are missing: {SNAPSHOT_FILE} ends at entry {} and {name} starts at entry {}",
                after_snapshot.0,
                segment.first.0 - 1,
                after_snapshot.0 - 1,
                segment.first.0
            )),
            Expected::Start if !has_snapshot && segment.first > LogIndex(1) => Some(format!(
                "entries 1..={} are missing: the log starts at entry 1 and {name} starts at entry {}",
                segment.first.0 - 1,
                segment.first.0
            )),
            Expected::At(expected) if segment.first != expected => {
                let before = file_name(&segments[k - 1].path);
                Some(if segment.first > expected {
                    format!(
                        "entries {}..={} are missing: {before} ends at entry {} and {name} starts at entry {}",
                        expected.0,
                        segment.first.0 - 1,
                        expected.0 - 1,
                        segment.first.0
                    )
                } else {
                    format!(
                        "{before} ends at entry {} but {name} starts at entry {}: the files overlap",
                        expected.0 - 1,
                        segment.first.0
                    )
                })
            }
            _ => None,
        };
        if let Some(why) = gap {
            self.ids = None;
            // Missing entries the snapshot covers do not matter.
            let severity = if segment.first <= after_snapshot { Severity::Warning } else { Severity::Damage };
            self.push_finding(Finding::new(severity, &segment.path, why));
        }
        let severity = if covered { Severity::Warning } else { Severity::Damage };
        let covered_note = |why: String| {
            if covered {
                format!("{why}; the snapshot covers this segment: a node removes it at start")
            } else {
                why
            }
        };

        let opened = File::open(&segment.path).and_then(|file| Ok((file.metadata()?.len(), file)));
        let (length, reader) = match opened {
            Ok((length, opened)) => (length, BufReader::with_capacity(READ_BUFFER_BYTES, opened)),
            Err(error) => {
                self.queue.push_back(Item::Segment(SegmentStart {
                    file,
                    first: segment.first,
                    index: IndexFile::Absent,
                }));
                self.push_finding(Finding::new(severity, &segment.path, format!("unreadable: {error}")));
                self.expected = Expected::Unknown;
                self.ids = None;
                return;
            }
        };
        let is_last = k + 1 == segments.len();
        let (index, index_state) = match &segment.index_file {
            None => {
                if !is_last {
                    let why = "no index file: a node reads the segment whole at start and writes it again";
                    self.push_finding(Finding::new(Severity::Warning, &segment.path, why));
                }
                (None, IndexFile::Absent)
            }
            Some(path) => {
                let read = std::fs::read(path).map_err(|error| format!("unreadable: {error}"));
                match read.and_then(|bytes| SegmentIndex::decode(&bytes, segment.first, length)) {
                    Ok(index) => (Some(index), IndexFile::Read),
                    Err(why) => {
                        let why = covered_note(format!(
                            "{why} (an index is a cache: a node reads the segment instead and writes it again)"
                        ));
                        self.push_finding(Finding::new(severity, path, why).at(1, 0));
                        (None, IndexFile::Damaged)
                    }
                }
            }
        };
        self.queue.push_back(Item::Segment(SegmentStart {
            file: Arc::clone(&file),
            first: segment.first,
            index: index_state,
        }));
        self.scan = Some(Scan {
            file,
            index_path: segment.index_file.clone(),
            first: segment.first,
            is_last,
            covered,
            reader,
            offset: 0,
            lines: 0,
            index,
            tally: Some(Tally::new(segment.first)),
            tail_crc: 0,
        });
    }

    /// Reads the next line of the segment being read (or ends it).
    fn step(&mut self, mut scan: Scan) {
        let offset = scan.offset;
        let read = match read_line(&mut scan.reader, &mut self.line, LINE_BYTES_MAX) {
            Ok(Some(read)) => read,
            Ok(None) => return self.end_segment(scan),
            Err(error) => {
                let why = format!("unreadable: {error}");
                self.push_finding(Finding::new(Severity::Damage, &scan.file, why).at(scan.lines + 1, offset));
                self.expected = Expected::Unknown;
                self.ids = None;
                return;
            }
        };
        scan.lines += 1;
        scan.offset += read.consumed as u64;
        let at_end = scan.reader.fill_buf().map_or(true, |rest| rest.is_empty());
        // Entry i is on line i - first + 1.
        let index = LogIndex(scan.first.0 + scan.lines as u64 - 1);
        let parsed = if read.too_long {
            Err(format!("a line of more than {LINE_BYTES_MAX} bytes: no record is that long"))
        } else {
            decode_record(&self.line).and_then(|entry| {
                if entry.index == index {
                    Ok(entry)
                } else {
                    Err(format!("expected entry {}, found {}", index.0, entry.index.0))
                }
            })
        };
        match parsed {
            Ok(entry) if read.newline => {
                if let Some(tally) = scan.tally.as_mut() {
                    tally.push(&entry, read.consumed as u64);
                }
                let mut crc = crc32fast::Hasher::new();
                crc.update(&self.line);
                crc.update(b"\n");
                scan.tail_crc = crc.finalize();
                self.on_entry(entry, &scan, offset);
            }
            parsed => {
                let why = match parsed {
                    Ok(_) => "unfinished record (no newline at its end)".to_string(),
                    Err(why) => why,
                };
                scan.tally = None;
                let count = scan.index.as_ref().and_then(|segment_index| commands_at(segment_index, index));
                self.take_ids(index, count);
                let (severity, why) = if scan.is_last && at_end {
                    let why = format!(
                        "torn last record ({why}): a write a crash interrupted; a node cuts it at start"
                    );
                    (Severity::Warning, why)
                } else if scan.covered {
                    let why = format!("{why}; the snapshot covers this segment: a node removes it at start");
                    (Severity::Warning, why)
                } else {
                    (Severity::Damage, why)
                };
                let mut finding = Finding::new(severity, &scan.file, why).at(scan.lines, offset);
                finding.index = Some(index);
                self.push_finding(finding);
            }
        }
        self.scan = Some(scan);
    }

    /// A good record: its command IDs, and it is handed out (unless an overlapping segment
    /// handed it out already).
    fn on_entry(&mut self, entry: Entry, scan: &Scan, offset: u64) {
        let index = entry.index;
        if index == self.folder.snapshot_index() {
            self.snapshot_term_held = Some(entry.term);
        }
        let count = entry.payload.commands().len() as u64;
        let first_id = self.take_ids(index, Some(count)).filter(|_| count > 0);
        if self.last.is_some_and(|last| index <= last) {
            return;
        }
        self.last = Some(index);
        let record = Record { entry, file: Arc::clone(&scan.file), line: scan.lines, offset, first_id };
        self.queue.push_back(Item::Record(record));
    }

    /// The first command ID of entry `index`, if known, moving past its `count` commands
    /// (unknown: the IDs after it are too). IDs start over after the snapshot, from its image.
    fn take_ids(&mut self, index: LogIndex, count: Option<u64>) -> Option<u64> {
        if let Some(snapshot) = self.folder.snapshot.as_ref().filter(|s| s.meta.index.next() == index) {
            if let Ok(image) = &snapshot.image {
                self.ids = Some((index, image.commands + 1));
            }
        }
        let first_id = match self.ids {
            Some((at, id)) if at == index => Some(id),
            _ => None,
        };
        self.ids = first_id.zip(count).map(|(id, count)| (index.next(), id + count));
        first_id
    }

    /// The segment is read: an empty sealed segment is damage, and its index must be what its
    /// records make.
    fn end_segment(&mut self, scan: Scan) {
        let severity = if scan.covered { Severity::Warning } else { Severity::Damage };
        if scan.lines == 0 && !scan.is_last {
            let why = "empty, but segments follow it (a sealed segment holds at least one entry)";
            self.push_finding(Finding::new(severity, &scan.file, why));
        }
        if let (Some(index), Some(tally), Some(path)) = (&scan.index, &scan.tally, &scan.index_path) {
            if scan.lines > 0 {
                if let Some(why) = index_disagreement(index, &tally.seal(scan.tail_crc)) {
                    let why = format!("does not match its segment: {why}");
                    self.push_finding(Finding::new(severity, path, why).at(1, 0));
                }
            }
        }
        self.expected = Expected::At(scan.first.plus(scan.lines as u64));
    }

    /// After the last segment: does the log hold what the snapshot and the commit index say?
    fn finish(&mut self) {
        let folder = self.folder;
        let snapshot_index = folder.snapshot_index();
        if let Some(snapshot) = &folder.snapshot {
            let path = folder.dir.join(SNAPSHOT_FILE);
            let meta = snapshot.meta;
            if let Some(term) = self.snapshot_term_held.filter(|&term| term != meta.term) {
                let why = format!(
                    "the log holds entry {} of term {}, the snapshot's is of term {}: a node drops the log and goes on from the snapshot",
                    meta.index.0, term.0, meta.term.0
                );
                self.push_finding(Finding::new(Severity::Warning, &path, why));
            }
            if let Some(last) = self.last.filter(|&last| last < meta.index) {
                let why = format!(
                    "the log ends at entry {}, before the snapshot's last entry {}: a node drops it",
                    last.0, meta.index.0
                );
                self.push_finding(Finding::new(Severity::Warning, &path, why));
            }
        }
        if let Some(metadata) = &folder.metadata {
            let held = self.last.unwrap_or(LogIndex::ZERO).max(snapshot_index);
            let commit = metadata.hard_state.commit;
            if commit > held {
                let why = format!(
                    "commit index {}, but the log ends at entry {}: committed entries were lost; a node fetches them from the leader before it votes again",
                    commit.0, held.0
                );
                self.push_finding(Finding::new(Severity::Warning, &folder.dir.join(METADATA_FILE), why));
            }
        }
    }
}

/// The file name of `path`, for messages.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}

/// How many commands entry `at` holds, as a segment's index says (no-ops and batches).
fn commands_at(index: &SegmentIndex, at: LogIndex) -> Option<u64> {
    if at < index.first || at > index.last {
        return None;
    }
    if index.noops.binary_search(&at).is_ok() {
        return Some(0);
    }
    Some(index.batches.binary_search_by_key(&at, |&(batch, _)| batch).map_or(1, |k| index.batches[k].1))
}

/// How an index file differs from the index its segment's records make; `None` if it does
/// not. Its span of session requests may be wider than theirs (a truncation leaves it so).
fn index_disagreement(file: &SegmentIndex, records: &SegmentIndex) -> Option<String> {
    let mut differ = Vec::new();
    if (file.first, file.last) != (records.first, records.last) {
        differ.push(format!(
            "it indexes entries {}..={}, the segment holds {}..={}",
            file.first.0, file.last.0, records.first.0, records.last.0
        ));
    }
    if file.tail != records.tail {
        differ.push("its last record is not the segment's".to_string());
    }
    let fields = [
        ("length", file.bytes == records.bytes),
        ("entry bytes", file.entry_bytes == records.entry_bytes),
        ("stride", file.stride == records.stride),
        ("term runs", file.terms == records.terms),
        ("no-ops", file.noops == records.noops),
        ("batches", file.batches == records.batches),
        ("marks", file.marks == records.marks),
    ];
    differ.extend(fields.iter().filter(|(_, same)| !same).map(|(name, _)| format!("its {name} differ")));
    let covers = |(first, last): (LogIndex, LogIndex)| {
        file.requests.is_some_and(|(from, to)| from <= first && to >= last)
    };
    if !records.requests.is_none_or(covers) {
        differ.push("its span of session requests misses some".to_string());
    }
    (!differ.is_empty()).then(|| differ.join("; "))
}

/// How a line read ended.
#[derive(Clone, Copy, Debug)]
struct LineRead {
    /// Bytes consumed, with the newline.
    consumed: usize,
    newline: bool,
    /// Longer than the limit: `line` was left empty.
    too_long: bool,
}

/// Reads the next line into `line` (without its newline); `None` at the end of the file. A line
/// longer than `bytes_max` is consumed without being kept.
fn read_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    bytes_max: usize,
) -> io::Result<Option<LineRead>> {
    line.clear();
    let (mut consumed, mut too_long) = (0, false);
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok((consumed > 0).then_some(LineRead { consumed, newline: false, too_long }));
        }
        let newline = buffer.iter().position(|&b| b == b'\n');
        let data = newline.unwrap_or(buffer.len());
        if !too_long {
            if line.len() + data > bytes_max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(&buffer[..data]);
            }
        }
        let taken = newline.map_or(data, |n| n + 1);
        reader.consume(taken);
        consumed += taken;
        if newline.is_some() {
            return Ok(Some(LineRead { consumed, newline: true, too_long }));
        }
    }
}

/// What [`compare`] found in one folder.
#[derive(Clone, Debug)]
pub struct FolderCheck {
    pub summary: Summary,
    /// The first [`FINDINGS_KEPT`] findings (the summary counts them all).
    pub findings: Vec<Finding>,
    /// [`Folder::committed`].
    pub committed: LogIndex,
}

/// What a folder holds at the index where folders disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// Its log's entry, and the image its entries through it fold into (onto its snapshot's),
    /// if known.
    Entry { record: Record, image: Option<Image> },
    /// Its snapshot ends there.
    Snapshot { term: Term, image: Image },
    /// Nothing to compare: its snapshot covers the index, or its record there is damaged.
    Nothing,
}

/// The first index where the committed prefixes differ, and what each folder holds there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disagreement {
    pub index: LogIndex,
    /// One per folder, in the order given.
    pub held: Vec<Held>,
}

/// What [`compare`] found.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// One per folder, in the order given.
    pub folders: Vec<FolderCheck>,
    /// The common committed prefix ends here: the least of the folders' committed indexes and
    /// of where their logs end (zero: nothing in common).
    pub through: LogIndex,
    /// Indexes where two or more logs' entries were compared.
    pub entries_compared: u64,
    /// Indexes where a snapshot's image was compared (with another's, or with the image a log's
    /// entries fold into).
    pub images_compared: u64,
    pub disagreement: Option<Disagreement>,
    /// What could not be compared, and why.
    pub notes: Vec<String>,
}

/// One folder being walked by [`compare`].
#[derive(Debug)]
struct Cursor<'a> {
    folder: &'a Folder,
    records: Records<'a>,
    /// A record read ahead (a later index than the one asked for).
    pending: Option<Record>,
    findings: Vec<Finding>,
    /// The image of its entries through the index compared last, folded onto its snapshot's
    /// (while it can be: not past a damaged record).
    image: Option<Image>,
}

/// What a folder's log holds at an index.
enum At {
    Found(Record),
    /// Not there, but later entries are (a damaged record).
    Missing,
    /// The log ends before it.
    Ended,
}

impl<'a> Cursor<'a> {
    fn new(folder: &'a Folder) -> Cursor<'a> {
        let image = match &folder.snapshot {
            None => Some(Image::empty()),
            Some(snapshot) => snapshot.image.clone().ok(),
        };
        Cursor { folder, records: folder.records(), pending: None, findings: Vec::new(), image }
    }

    fn keep(&mut self, item: Item) -> Option<Record> {
        match item {
            Item::Record(record) => Some(record),
            Item::Finding(finding) => {
                if self.findings.len() < FINDINGS_KEPT {
                    self.findings.push(finding);
                }
                None
            }
            Item::Segment(_) => None,
        }
    }

    /// Its log's entry at `index` (which only goes up from call to call).
    fn at(&mut self, index: LogIndex) -> At {
        loop {
            if let Some(record) = self.pending.take() {
                if record.entry.index == index {
                    return At::Found(record);
                }
                if record.entry.index > index {
                    self.pending = Some(record);
                    return At::Missing;
                }
            }
            match self.records.next() {
                None => return At::Ended,
                Some(item) => self.pending = self.keep(item),
            }
        }
    }

    /// Reads the rest (every checksum is checked) and says what was found.
    fn finish(mut self) -> FolderCheck {
        while let Some(item) = self.records.next() {
            self.keep(item);
        }
        FolderCheck {
            summary: self.records.summary().clone(),
            findings: self.findings,
            committed: self.folder.committed(),
        }
    }
}

/// Checks every folder's checksums and that their committed prefixes agree. From the first
/// index after the earliest snapshot to the common committed prefix's end, every log holding
/// an entry must hold the same one (term and payload); where a folder's snapshot ends, its
/// image (command count and digest) and term must be those of the other folders' logs folded
/// through that index, or of their snapshots ending there. Ranges only one log holds, the
/// others' snapshots covering them without ending where a log is held, are not compared: a
/// note says so.
pub fn compare(folders: &[Folder]) -> Comparison {
    let mut cursors: Vec<Cursor> = folders.iter().map(Cursor::new).collect();
    let snapshots: Vec<LogIndex> = folders.iter().map(Folder::snapshot_index).collect();
    let mut through = folders.iter().map(Folder::committed).min().unwrap_or(LogIndex::ZERO);
    let start = snapshots.iter().copied().min().unwrap_or(LogIndex::ZERO);
    let (mut entries_compared, mut images_compared, mut proven) = (0, 0, LogIndex::ZERO);
    let mut disagreement = None;
    let mut notes = Vec::new();

    // Snapshots ending at the earliest snapshot's index: no log entry is compared there.
    if folders.len() > 1 && start > LogIndex::ZERO {
        let held: Vec<Held> = folders.iter().map(|folder| snapshot_held(folder, start)).collect();
        match check_held(&held) {
            Check::Differ => disagreement = Some(Disagreement { index: start, held }),
            Check::Agree { images: true, .. } => {
                images_compared += 1;
                proven = start;
            }
            Check::Agree { .. } => {}
        }
    }
    let mut index = start.next();
    while folders.len() > 1 && disagreement.is_none() && index <= through {
        let mut held = Vec::with_capacity(folders.len());
        let mut ended = false;
        for (cursor, &snapshot) in cursors.iter_mut().zip(&snapshots) {
            held.push(if snapshot >= index {
                snapshot_held(cursor.folder, index)
            } else {
                match cursor.at(index) {
                    At::Found(record) => {
                        cursor.image = cursor.image.map(|image| image.fold([&record.entry]));
                        Held::Entry { record, image: cursor.image }
                    }
                    At::Missing => {
                        cursor.image = None;
                        Held::Nothing
                    }
                    At::Ended => {
                        ended = true;
                        Held::Nothing
                    }
                }
            });
        }
        if ended {
            through = index.prev();
            break;
        }
        match check_held(&held) {
            Check::Differ => disagreement = Some(Disagreement { index, held }),
            Check::Agree { entries, images } => {
                entries_compared += u64::from(entries);
                if images {
                    images_compared += 1;
                    proven = index;
                }
            }
        }
        index = index.next();
    }

    // The range from what the snapshot comparisons covered to where two logs hold entries.
    let mut sorted = snapshots.clone();
    sorted.sort();
    if folders.len() == 1 {
        notes.push("one folder: its checksums are checked, there is nothing to compare it with".to_string());
    } else if disagreement.is_none() {
        let unchecked_to = sorted[1].min(through);
        if through == LogIndex::ZERO {
            notes.push("the folders have no committed entry in common".to_string());
        } else if proven < unchecked_to {
            let alone = snapshots.iter().position(|&s| s == sorted[0]).expect("the earliest snapshot");
            notes.push(format!(
                "entries {}..={} not compared: no other folder holds them in its log (their snapshots cover them), and no snapshot ends at an index {} holds",
                proven.next().0,
                unchecked_to.0,
                folders[alone].dir.display()
            ));
        }
        for (folder, &snapshot) in folders.iter().zip(&snapshots) {
            if snapshot > through {
                notes.push(format!(
                    "{}'s snapshot ends at entry {}, past the common committed prefix: its image is not compared",
                    folder.dir.display(),
                    snapshot.0
                ));
            }
        }
    }
    let folders = cursors.into_iter().map(Cursor::finish).collect();
    Comparison { folders, through, entries_compared, images_compared, disagreement, notes }
}

/// What `folder` holds at `index`, which its snapshot covers.
fn snapshot_held(folder: &Folder, index: LogIndex) -> Held {
    match &folder.snapshot {
        Some(snapshot) if snapshot.meta.index == index => match &snapshot.image {
            Ok(image) => Held::Snapshot { term: snapshot.meta.term, image: *image },
            Err(_) => Held::Nothing,
        },
        _ => Held::Nothing,
    }
}

enum Check {
    Differ,
    /// Whether two or more entries were compared, and a snapshot's image.
    Agree {
        entries: bool,
        images: bool,
    },
}

/// Whether what the folders hold at one index agrees: every entry equal; every snapshot
/// ending there of the same term and image as the others and as the images the logs fold into.
fn check_held(held: &[Held]) -> Check {
    let entries: Vec<&Entry> = held
        .iter()
        .filter_map(|held| match held {
            Held::Entry { record, .. } => Some(&record.entry),
            _ => None,
        })
        .collect();
    if entries.windows(2).any(|pair| pair[0] != pair[1]) {
        return Check::Differ;
    }
    // (term, image) of every snapshot ending here, and of every log folded through here.
    let snapshots: Vec<(Term, Image)> = held
        .iter()
        .filter_map(|held| match held {
            Held::Snapshot { term, image } => Some((*term, *image)),
            _ => None,
        })
        .collect();
    let folded: Vec<(Term, Image)> = held
        .iter()
        .filter_map(|held| match held {
            Held::Entry { record, image: Some(image) } => Some((record.entry.term, *image)),
            _ => None,
        })
        .collect();
    let mut images = false;
    if let Some(first) = snapshots.first() {
        if snapshots.iter().chain(&folded).any(|other| other != first) {
            return Check::Differ;
        }
        images = snapshots.len() + folded.len() > 1;
    }
    Check::Agree { entries: entries.len() > 1, images }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;
    use crate::storage::{Identity, OnCorruption, Storage, StorageOptions};
    use replog_core::{Bytes, ClientId, ClientRequest, Payload, Snapshot};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("replog-inspect-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn entry(index: u64, term: u64, payload: Payload) -> Entry {
        Entry { index: LogIndex(index), term: Term(term), payload }
    }

    /// Entry `index` of the test log: a configuration, a no-op, then commands, every 5th a
    /// session's batch of two, every 7th a session's single command.
    fn test_entry(index: u64) -> Entry {
        let payload = match index {
            1 => Payload::Config(Membership::voters_only([NodeId(1), NodeId(2), NodeId(3)])),
            2 => Payload::Noop,
            _ if index % 5 == 0 => Payload::Request(ClientRequest {
                client: ClientId(0xabc),
                seq: index,
                commands: vec![
                    Bytes::from(format!("a{index}").as_str()),
                    Bytes::from(format!("b{index}").as_str()),
                ],
            }),
            _ if index % 7 == 0 => Payload::Request(ClientRequest {
                client: ClientId(0xdef),
                seq: index,
                commands: vec![Bytes::from(format!("s{index}").as_str())],
            }),
            _ => Payload::Command(Bytes::from(format!("command {index}").as_str())),
        };
        entry(index, 1 + index / 40, payload)
    }

    /// A folder written by the runtime's storage: entries 1..=count in small segments (so
    /// several are sealed and indexed), committed through `commit`.
    fn write_folder(name: &str, count: u64, commit: u64) -> PathBuf {
        let dir = temp_dir(name);
        let identity = Identity { name: "node1".into(), address: "127.0.0.1:9000".into() };
        let options = StorageOptions { segment_bytes_max: 1024 };
        let (mut storage, _) =
            Storage::open_with_options(RealFs::new(), &dir, identity, OnCorruption::Refuse, options).unwrap();
        storage.record_identity(NodeId(0x5a1e), None).unwrap();
        let entries: Vec<Entry> = (1..=count).map(test_entry).collect();
        for chunk in entries.chunks(7) {
            storage.append(chunk).unwrap();
        }
        storage.request_sync(true).unwrap();
        let hard_state = HardState { term: Term(1 + count / 40), voted_for: None, commit: LogIndex(commit) };
        storage.save_hard_state(hard_state).unwrap();
        storage.close().unwrap();
        dir
    }

    /// (index, first ID) of every entry 1..=count, counted the plain way.
    fn expected_ids(count: u64) -> Vec<(u64, Option<u64>)> {
        let mut next = 1;
        (1..=count)
            .map(|index| {
                let commands = test_entry(index).payload.commands().len() as u64;
                let id = (commands > 0).then_some(next);
                next += commands;
                (index, id)
            })
            .collect()
    }

    fn read_all(folder: &Folder) -> (Vec<Record>, Vec<Finding>, Summary) {
        let mut records = folder.records();
        let (mut read, mut findings) = (Vec::new(), Vec::new());
        for item in records.by_ref() {
            match item {
                Item::Record(record) => read.push(record),
                Item::Finding(finding) => findings.push(finding),
                Item::Segment(_) => {}
            }
        }
        (read, findings, records.summary().clone())
    }

    /// The first segment (sorted by name) after the first, with its path: a sealed one.
    fn second_segment(folder: &Folder) -> &SegmentFile {
        assert!(folder.segments.len() >= 3, "the test log spans several segments");
        &folder.segments[1]
    }

    #[test]
    fn a_healthy_folder_reads_whole_with_ids_and_no_findings() {
        let dir = write_folder("healthy", 120, 118);
        let folder = Folder::open(&dir).unwrap();
        let metadata = folder.metadata.clone().unwrap();
        assert_eq!((metadata.name.as_str(), metadata.id), ("node1", Some(NodeId(0x5a1e))));
        assert_eq!(metadata.hard_state.commit, LogIndex(118));
        assert!(
            folder.segments.len() > 3
                && folder.segments[..folder.segments.len() - 1]
                    .iter()
                    .all(|segment| segment.index_file.is_some())
        );
        let (records, findings, summary) = read_all(&folder);
        assert_eq!(findings, Vec::new());
        let ids: Vec<(u64, Option<u64>)> = records.iter().map(|r| (r.entry.index.0, r.first_id)).collect();
        assert_eq!(ids, expected_ids(120));
        assert!(records.iter().all(|record| record.entry == test_entry(record.entry.index.0)));
        assert_eq!(
            (summary.records, summary.first, summary.last),
            (120, Some(LogIndex(1)), Some(LogIndex(120)))
        );
        assert_eq!((summary.damaged, summary.warnings, summary.segments), (0, 0, folder.segments.len()));
        let last_id = expected_ids(120)
            .iter()
            .rev()
            .find_map(|&(index, id)| id.map(|id| id + test_entry(index).payload.commands().len() as u64 - 1));
        assert_eq!((summary.first_id, summary.last_id), (Some(1), last_id));
        // Lines and offsets point at the records.
        let record = &records[49];
        let bytes = std::fs::read(&record.file).unwrap();
        let line = bytes[record.offset as usize..].split(|&b| b == b'\n').next().unwrap();
        assert_eq!(decode_record(line).unwrap(), record.entry);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(text.lines().nth(record.line - 1).unwrap().as_bytes(), line);
        assert!(Folder::open(&temp_dir("not-a-folder")).is_err());
    }

    #[test]
    fn a_damaged_record_is_reported_where_it_is_and_reading_goes_on() {
        let dir = write_folder("damaged", 120, 120);
        let folder = Folder::open(&dir).unwrap();
        let segment = second_segment(&folder).clone();
        let mut bytes = std::fs::read(&segment.path).unwrap();
        let second_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second_line + 20] ^= 0x01;
        std::fs::write(&segment.path, &bytes).unwrap();
        let (records, findings, summary) = read_all(&folder);
        let damaged = LogIndex(segment.first.0 + 1);
        assert_eq!(findings.len(), 1, "{findings:?}");
        let finding = &findings[0];
        assert_eq!(finding.severity, Severity::Damage);
        assert_eq!(
            (finding.file.clone(), finding.line, finding.offset),
            (segment.path.clone(), Some(2), Some(second_line as u64))
        );
        assert_eq!(finding.index, Some(damaged));
        assert!(finding.why.contains("checksum mismatch"), "{finding}");
        assert!(finding.to_string().contains("line 2 (byte"), "{finding}");
        // Every other record is read, with its ID (the segment's index counts the lost one's).
        assert_eq!(records.len(), 119);
        let ids: Vec<(u64, Option<u64>)> = records.iter().map(|r| (r.entry.index.0, r.first_id)).collect();
        let expected: Vec<_> =
            expected_ids(120).into_iter().filter(|&(index, _)| index != damaged.0).collect();
        assert_eq!(ids, expected);
        assert_eq!((summary.damaged, summary.warnings), (1, 0));
    }

    #[test]
    fn a_torn_tail_is_a_warning_and_a_lying_index_is_damage() {
        let dir = write_folder("torn", 120, 100);
        let folder = Folder::open(&dir).unwrap();
        let last = folder.segments.last().unwrap().path.clone();
        let bytes = std::fs::read(&last).unwrap();
        std::fs::write(&last, &bytes[..bytes.len() - 5]).unwrap();
        let (records, findings, summary) = read_all(&folder);
        assert_eq!(records.len(), 119);
        assert_eq!((summary.damaged, summary.warnings), (0, 1), "{findings:?}");
        assert!(findings[0].why.contains("torn last record"), "{}", findings[0]);

        // An index of another segment of the same length (a good checksum, wrong contents).
        let segment = second_segment(&folder).clone();
        let index_path = segment.index_file.clone().unwrap();
        let text = std::fs::read_to_string(&index_path).unwrap();
        let at = text.find("\"entry_bytes\":").unwrap() + "\"entry_bytes\":".len();
        let digits = text[at..].find(',').unwrap();
        let entry_bytes: u64 = text[at..at + digits].parse().unwrap();
        let mut forged = format!("{}{}{}", &text[..at], entry_bytes + 1, &text[at + digits..]);
        forged.truncate(forged.rfind(",\"crc\"").unwrap());
        let mut bytes = forged.into_bytes();
        crate::records::end_line(0, &mut bytes);
        std::fs::write(&index_path, &bytes).unwrap();
        let (_, findings, _) = read_all(&Folder::open(&dir).unwrap());
        let damage: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Damage).collect();
        assert_eq!(damage.len(), 1, "{findings:?}");
        assert_eq!(damage[0].file, index_path);
        assert!(
            damage[0].why.contains("does not match its segment: its entry bytes differ"),
            "{}",
            damage[0]
        );
        // Removed: only a warning (a node rebuilds it).
        std::fs::remove_file(&index_path).unwrap();
        let (_, findings, summary) = read_all(&Folder::open(&dir).unwrap());
        assert_eq!((summary.damaged, summary.warnings), (0, 2), "{findings:?}");
    }

    #[test]
    fn a_gap_damaged_metadata_and_a_partial_snapshot_are_reported() {
        let dir = write_folder("gap", 120, 120);
        // A transfer under way: 3 bytes of a snapshot of 10.
        let identity = Identity { name: "node1".into(), address: "127.0.0.1:9000".into() };
        let options = StorageOptions { segment_bytes_max: 1024 };
        let (mut storage, _) =
            Storage::open_with_options(RealFs::new(), &dir, identity, OnCorruption::Refuse, options).unwrap();
        let meta = SnapshotMeta { index: LogIndex(200), term: Term(9) };
        let membership = Membership::voters_only([NodeId(7)]);
        storage.save_snapshot_chunk((meta, membership.clone(), 10, 42), 0, b"abc").unwrap();
        storage.close().unwrap();
        let folder = Folder::open(&dir).unwrap();
        let partial = PartialInfo { meta, membership, total: 10, received: 3, checksum: 42 };
        assert_eq!(folder.partial, Some(partial));
        assert_eq!(folder.findings, Vec::new());

        // A sealed segment gone: the entries it held are missing, IDs after it unknown.
        let lost = second_segment(&folder).clone();
        std::fs::remove_file(&lost.path).unwrap();
        std::fs::remove_file(lost.index_file.as_ref().unwrap()).unwrap();
        let metadata = dir.join(METADATA_FILE);
        let mut bytes = std::fs::read(&metadata).unwrap();
        bytes[5] ^= 0x01;
        std::fs::write(&metadata, &bytes).unwrap();
        let folder = Folder::open(&dir).unwrap();
        assert_eq!(folder.metadata, None);
        let (records, findings, summary) = read_all(&folder);
        assert_eq!(summary.damaged, 2, "{findings:?}");
        assert_eq!((findings[0].file.clone(), findings[0].line), (metadata, Some(1)));
        assert!(findings[1].why.starts_with(&format!("entries {}..=", lost.first.0)), "{}", findings[1]);
        let after = records.iter().find(|record| record.entry.index > lost.first).unwrap();
        assert!(after.first_id.is_none() && summary.ids_unknown > 0);
    }

    /// Saves a snapshot through `through` (its image the test log's) in a folder.
    fn snapshot(dir: &Path, through: u64) {
        let identity = Identity { name: "node1".into(), address: "127.0.0.1:9000".into() };
        let options = StorageOptions { segment_bytes_max: 1024 };
        let (mut storage, _) =
            Storage::open_with_options(RealFs::new(), dir, identity, OnCorruption::Refuse, options).unwrap();
        let entries: Vec<Entry> = (1..=through).map(test_entry).collect();
        let image = Image::empty().fold(&entries);
        let meta = SnapshotMeta { index: LogIndex(through), term: test_entry(through).term };
        let membership = Membership::voters_only([NodeId(1), NodeId(2), NodeId(3)]);
        storage.save_snapshot(&Snapshot { meta, membership, data: image.encode() }).unwrap();
        storage.close().unwrap();
    }

    #[test]
    fn ids_count_from_the_snapshot_and_through_the_entries_it_covers() {
        let dir = write_folder("snapshot", 120, 120);
        snapshot(&dir, 70);
        let folder = Folder::open(&dir).unwrap();
        let info = folder.snapshot.clone().unwrap();
        assert_eq!((info.meta.index, info.sessions.clone()), (LogIndex(70), Ok(0)));
        assert_eq!(
            info.image.clone().unwrap(),
            Image::empty().fold(&(1..=70).map(test_entry).collect::<Vec<_>>())
        );
        let (records, findings, _) = read_all(&folder);
        assert_eq!(findings, Vec::new());
        // The first segment kept starts at or before entry 71: the entries it holds that the
        // snapshot covers have their IDs too.
        let first = records[0].entry.index.0;
        assert!(first <= 71 && first > 1, "{first}");
        let ids: Vec<(u64, Option<u64>)> = records.iter().map(|r| (r.entry.index.0, r.first_id)).collect();
        assert_eq!(ids, expected_ids(120)[first as usize - 1..]);
    }

    #[test]
    fn copies_agree_and_a_rewritten_entry_is_the_first_difference() {
        let one = write_folder("compare-1", 120, 120);
        let two = write_folder("compare-2", 120, 110);
        let three = write_folder("compare-3", 120, 120);
        snapshot(&three, 60);
        let open = |dirs: &[&PathBuf]| dirs.iter().map(|dir| Folder::open(dir).unwrap()).collect::<Vec<_>>();
        let comparison = compare(&open(&[&one, &two, &three]));
        assert_eq!(comparison.disagreement, None);
        assert_eq!(comparison.through, LogIndex(110));
        assert_eq!(comparison.entries_compared, 110);
        assert_eq!(comparison.images_compared, 1, "the snapshot's image against the others' entries");
        assert_eq!(comparison.notes, Vec::<String>::new());
        assert!(comparison.folders.iter().all(|check| check.summary.damaged == 0));

        // Entry 90 of folder two rewritten with a good checksum: they disagree there.
        let folder = Folder::open(&two).unwrap();
        let (records, _, _) = read_all(&folder);
        let record = records.iter().find(|record| record.entry.index == LogIndex(90)).unwrap();
        let mut bytes = std::fs::read(&record.file).unwrap();
        let end = record.offset as usize
            + bytes[record.offset as usize..].iter().position(|&b| b == b'\n').unwrap()
            + 1;
        let other = encode_record(&entry(90, record.entry.term.0, Payload::Command(Bytes::from("forged"))));
        bytes.splice(record.offset as usize..end, other);
        std::fs::write(&record.file, &bytes).unwrap();
        let comparison = compare(&open(&[&one, &two, &three]));
        let disagreement = comparison.disagreement.expect("they differ");
        assert_eq!(disagreement.index, LogIndex(90));
        assert!(matches!(&disagreement.held[1], Held::Entry { record, .. }
            if record.entry.payload == Payload::Command(Bytes::from("forged"))));

        // Snapshots at different indexes past every log's start: the range only one log holds
        // is compared through the later snapshot's image.
        let four = write_folder("compare-4", 120, 120);
        snapshot(&four, 100);
        let comparison = compare(&open(&[&one, &three, &four]));
        assert_eq!((comparison.disagreement, comparison.images_compared), (None, 2));
        // One folder: nothing to compare, said so.
        let comparison = compare(&open(&[&one]));
        assert_eq!(comparison.notes.len(), 1);
    }
}
