//! A sealed segment's index, `log-<first index, 20 digits>.idx` next to its
//! `log-<first>.jsonl`: what recovery needs to know of the segment without reading it, and where
//! its records are, so a read of any entry parses at most [`INDEX_STRIDE`] records.
//!
//! One line, a JSON object ending in a CRC-32 of the bytes before `,"crc"` (as the other files
//! of the data folder, `records.rs`):
//!
//! ```text
//! {"format":1,"first":F,"last":L,"bytes":B,"entry_bytes":S,"stride":256,
//!  "terms":[[F,T1],[I2,T2],...],"noops":[N1,...],"batches":[[B1,C1],...],"marks":[[0,0],[O,E],...],
//!  "tail":[A,C],"crc":N}
//! ```
//!
//! (one line in the file), where
//! - `first`..=`last` are the entries the segment holds (at least one) and `bytes` its length;
//! - `entry_bytes` is the sum of [`Entry::size_bytes`] of its entries;
//! - `terms` are its term runs: the first index of each run and its term, ascending;
//! - `noops` are the indexes of its entries that are no client command (leaders' no-ops and
//!   configuration changes), ascending;
//! - `batches` are the indexes of its entries that hold more than one client command (a
//!   session's batch), each with how many, ascending (absent in files of earlier versions:
//!   none);
//! - `requests` is `[first, last]`: the segment's session requests lie within (absent: none),
//!   so a restart rebuilding the session table reads only segments that hold some;
//! - `marks[k]` is `[byte offset, entry bytes before]` of entry `first + k * stride`: where its
//!   record starts, and the sum of `size_bytes` of the segment's entries before it;
//! - `tail` is `[offset, CRC-32]` of the last record (its bytes with the newline).
//!
//! The index is a cache: written and synced when the segment is sealed (on a roll, before the
//! next segment's name is made durable), and never trusted blindly. Recovery uses it only if its
//! checksum holds, it agrees with itself, the segment has the length it says, and the
//! segment's last record is the one it names (`tail`): so an index left over from another
//! segment of the same name is not taken for this one's. Otherwise the segment is scanned as
//! before indexes existed and its index is written again. A segment that is active has no index
//! (one is removed when its segment becomes active again or goes).

use crate::records::{checked, decode_record, end_line};
use replog_core::{Entry, LogIndex, Payload, Term};

/// Every this many entries, an index marks where a record starts.
pub const INDEX_STRIDE: u64 = 256;

const INDEX_FORMAT: u64 = 1;
const INDEX_PREFIX: &str = "log-";
const INDEX_SUFFIX: &str = ".idx";
const INDEX_DIGITS: usize = 20;

/// The file name of the index of the segment whose first entry is `first`.
pub fn index_name(first: LogIndex) -> String {
    format!("{INDEX_PREFIX}{:0width$}{INDEX_SUFFIX}", first.0, width = INDEX_DIGITS)
}

/// The first index of the segment an index file belongs to, from its name; `None` if the name
/// is not an index's.
pub fn parse_index_name(name: &str) -> Option<LogIndex> {
    let digits = name.strip_prefix(INDEX_PREFIX)?.strip_suffix(INDEX_SUFFIX)?;
    if digits.len() != INDEX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&first| first >= 1).map(LogIndex)
}

/// What a segment's entries add up to, kept up to date as they are appended (the active
/// segment) or built by reading the segment (recovery); sealed into a [`SegmentIndex`].
#[derive(Clone, Debug)]
pub(crate) struct Tally {
    pub(crate) first: LogIndex,
    /// `offsets[i]` is where entry `first + i` starts.
    pub(crate) offsets: Vec<u64>,
    /// `bytes_before[i]` is the sum of `size_bytes` of the entries before `first + i`.
    bytes_before: Vec<u64>,
    pub(crate) entry_bytes: u64,
    /// Term runs: (first index of the run, its term), ascending.
    pub(crate) terms: Vec<(LogIndex, Term)>,
    pub(crate) noops: Vec<LogIndex>,
    /// Entries holding more than one command, with how many.
    pub(crate) batches: Vec<(LogIndex, u64)>,
    /// The first and last session request (`Payload::Request`); after a truncation the last
    /// may be past the last one left (a span that covers them all is all a reader needs).
    pub(crate) requests: Option<(LogIndex, LogIndex)>,
    /// Where the next record goes (counting records still in the storage's buffer).
    pub(crate) end: u64,
}

impl Tally {
    pub(crate) fn new(first: LogIndex) -> Tally {
        Tally {
            first,
            offsets: Vec::new(),
            bytes_before: Vec::new(),
            entry_bytes: 0,
            terms: Vec::new(),
            noops: Vec::new(),
            batches: Vec::new(),
            requests: None,
            end: 0,
        }
    }

    /// The last entry's index (`first - 1` while there is none).
    pub(crate) fn last(&self) -> LogIndex {
        LogIndex(self.first.0 - 1 + self.offsets.len() as u64)
    }

    /// Counts the next entry, whose record is `record_bytes` long, at the end.
    pub(crate) fn push(&mut self, entry: &Entry, record_bytes: u64) {
        assert_eq!(entry.index, self.last().next(), "a segment's entries are contiguous");
        if self.terms.last().is_none_or(|&(_, term)| term != entry.term) {
            self.terms.push((entry.index, entry.term));
        }
        match entry.payload.commands().len() {
            0 => self.noops.push(entry.index),
            1 => {}
            count => self.batches.push((entry.index, count as u64)),
        }
        if matches!(entry.payload, Payload::Request(_)) {
            let first = self.requests.map_or(entry.index, |(first, _)| first);
            self.requests = Some((first, entry.index));
        }
        self.offsets.push(self.end);
        self.bytes_before.push(self.entry_bytes);
        self.entry_bytes += entry.size_bytes();
        self.end += record_bytes;
    }

    /// Forgets the entries from `from` on; returns where their records started (the new end).
    pub(crate) fn truncate(&mut self, from: LogIndex) -> u64 {
        assert!(from >= self.first && from <= self.last().next(), "a cut within the segment");
        let kept = (from.0 - self.first.0) as usize;
        if kept < self.offsets.len() {
            self.end = self.offsets[kept];
            self.entry_bytes = self.bytes_before[kept];
        }
        self.offsets.truncate(kept);
        self.bytes_before.truncate(kept);
        self.terms.retain(|&(start, _)| start < from);
        self.noops.retain(|&index| index < from);
        self.batches.retain(|&(index, _)| index < from);
        self.requests = self
            .requests
            .filter(|&(first, _)| first < from)
            .map(|(first, last)| (first, last.min(from.prev())));
        self.end
    }

    /// The sum of `size_bytes` of the entries from `from` on (`from` within the segment).
    pub(crate) fn entry_bytes_from(&self, from: LogIndex) -> u64 {
        let skip = from.0.saturating_sub(self.first.0) as usize;
        self.entry_bytes - self.bytes_before.get(skip).copied().unwrap_or(self.entry_bytes)
    }

    /// The index of the segment these entries fill, whose last record's bytes (with the newline)
    /// have CRC-32 `tail_crc`.
    pub(crate) fn seal(&self, tail_crc: u32) -> SegmentIndex {
        let last = *self.offsets.last().expect("only a segment with entries is sealed");
        let marks = (0..self.offsets.len())
            .step_by(INDEX_STRIDE as usize)
            .map(|i| (self.offsets[i], self.bytes_before[i]))
            .collect();
        SegmentIndex {
            first: self.first,
            last: self.last(),
            bytes: self.end,
            entry_bytes: self.entry_bytes,
            stride: INDEX_STRIDE,
            terms: self.terms.clone(),
            noops: self.noops.clone(),
            batches: self.batches.clone(),
            requests: self.requests,
            marks,
            tail: (last, tail_crc),
        }
    }
}

/// A sealed segment's index (the module doc has its fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    pub(crate) first: LogIndex,
    pub(crate) last: LogIndex,
    pub(crate) bytes: u64,
    pub(crate) entry_bytes: u64,
    pub(crate) stride: u64,
    pub(crate) terms: Vec<(LogIndex, Term)>,
    pub(crate) noops: Vec<LogIndex>,
    pub(crate) batches: Vec<(LogIndex, u64)>,
    pub(crate) requests: Option<(LogIndex, LogIndex)>,
    /// (byte offset, entry bytes before) of entries `first + k * stride`.
    pub(crate) marks: Vec<(u64, u64)>,
    /// (byte offset, CRC-32) of the last record.
    pub(crate) tail: (u64, u32),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct IndexRecord {
    format: u64,
    first: u64,
    last: u64,
    bytes: u64,
    entry_bytes: u64,
    stride: u64,
    terms: Vec<(u64, u64)>,
    noops: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    batches: Vec<(u64, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requests: Option<(u64, u64)>,
    marks: Vec<(u64, u64)>,
    tail: (u64, u32),
}

impl SegmentIndex {
    /// The term of entry `index`, if the segment holds it.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index < self.first || index > self.last {
            return None;
        }
        let run = self.terms.partition_point(|&(start, _)| start <= index);
        Some(self.terms[run - 1].1)
    }

    /// Where to start reading for entry `index` (within the segment): the byte offset of the
    /// mark at or before it, and how many records lie between that mark and it.
    pub(crate) fn seek(&self, index: LogIndex) -> (u64, usize) {
        let at = index.0 - self.first.0;
        let (offset, _) = self.marks[(at / self.stride) as usize];
        (offset, (at % self.stride) as usize)
    }

    /// Where the records of the mark interval holding entry `index` end: the next mark's offset,
    /// or the segment's end.
    pub(crate) fn interval_end(&self, index: LogIndex) -> u64 {
        let next = ((index.0 - self.first.0) / self.stride + 1) as usize;
        self.marks.get(next).map_or(self.bytes, |&(offset, _)| offset)
    }

    /// The sum of `size_bytes` of the entries after the mark interval holding `index` (from
    /// the next mark to the segment's end).
    pub(crate) fn entry_bytes_after_interval(&self, index: LogIndex) -> u64 {
        let next = ((index.0 - self.first.0) / self.stride + 1) as usize;
        self.entry_bytes - self.marks.get(next).map_or(self.entry_bytes, |&(_, before)| before)
    }

    /// The last entry of the interval holding `index`.
    pub(crate) fn interval_last(&self, index: LogIndex) -> LogIndex {
        let interval = (index.0 - self.first.0) / self.stride;
        LogIndex(self.first.0 + (interval + 1) * self.stride - 1).min(self.last)
    }

    /// The index file's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let record = IndexRecord {
            format: INDEX_FORMAT,
            first: self.first.0,
            last: self.last.0,
            bytes: self.bytes,
            entry_bytes: self.entry_bytes,
            stride: self.stride,
            terms: self.terms.iter().map(|&(index, term)| (index.0, term.0)).collect(),
            noops: self.noops.iter().map(|index| index.0).collect(),
            batches: self.batches.iter().map(|&(index, count)| (index.0, count)).collect(),
            requests: self.requests.map(|(first, last)| (first.0, last.0)),
            marks: self.marks.clone(),
            tail: self.tail,
        };
        let mut out = serde_json::to_vec(&record).expect("an index serializes");
        assert_eq!(out.pop(), Some(b'}'), "a JSON object ends in a brace");
        end_line(0, &mut out);
        out
    }

    /// The index an index file holds, if it is whole, of format 1, agrees with itself, and
    /// describes a segment starting at `first` that is `segment_bytes` long; why not otherwise.
    pub(crate) fn decode(bytes: &[u8], first: LogIndex, segment_bytes: u64) -> Result<SegmentIndex, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let line = text.strip_suffix('\n').ok_or("incomplete (no newline at its end)")?;
        checked(line)?;
        let record: IndexRecord = serde_json::from_str(line).map_err(|e| format!("unreadable: {e}"))?;
        if record.format != INDEX_FORMAT {
            return Err(format!("format {} (this version reads {INDEX_FORMAT})", record.format));
        }
        let index = SegmentIndex {
            first: LogIndex(record.first),
            last: LogIndex(record.last),
            bytes: record.bytes,
            entry_bytes: record.entry_bytes,
            stride: record.stride,
            terms: record.terms.iter().map(|&(index, term)| (LogIndex(index), Term(term))).collect(),
            noops: record.noops.into_iter().map(LogIndex).collect(),
            batches: record.batches.into_iter().map(|(index, count)| (LogIndex(index), count)).collect(),
            requests: record.requests.map(|(first, last)| (LogIndex(first), LogIndex(last))),
            marks: record.marks,
            tail: record.tail,
        };
        if index.first != first {
            return Err(format!("it indexes a segment from entry {}", index.first.0));
        }
        if index.bytes != segment_bytes {
            return Err(format!("it indexes {} bytes, the segment holds {segment_bytes}", index.bytes));
        }
        index.check()?;
        Ok(index)
    }

    /// Whether the fields agree with each other (a damaged file whose checksum still holds, or a
    /// bug, must not send reads astray).
    fn check(&self) -> Result<(), String> {
        let count = (self.last.0 + 1).checked_sub(self.first.0).filter(|&count| count > 0);
        let count = count.ok_or("no entries")?;
        if self.stride == 0 || self.marks.len() as u64 != count.div_ceil(self.stride) {
            return Err("marks do not match the entries and stride".into());
        }
        let ascending = |a: u64, b: u64| a < b;
        let within = |index: LogIndex| index >= self.first && index <= self.last;
        let (offsets, befores): (Vec<u64>, Vec<u64>) = self.marks.iter().copied().unzip();
        let marks_ok = self.marks[0] == (0, 0)
            && offsets.windows(2).all(|w| ascending(w[0], w[1]))
            && befores.windows(2).all(|w| w[0] <= w[1])
            && offsets.last().is_some_and(|&offset| offset <= self.tail.0)
            && befores.last().is_some_and(|&before| before <= self.entry_bytes)
            && self.tail.0 < self.bytes;
        let terms_ok = self.terms.first().is_some_and(|&(start, _)| start == self.first)
            && self.terms.iter().all(|&(start, _)| within(start))
            && self.terms.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let noops_ok = self.noops.iter().all(|&index| within(index))
            && self.noops.windows(2).all(|w| ascending(w[0].0, w[1].0))
            && self.batches.iter().all(|&(index, count)| within(index) && count >= 2)
            && self.batches.windows(2).all(|w| ascending(w[0].0 .0, w[1].0 .0))
            && self.requests.is_none_or(|(first, last)| within(first) && within(last) && first <= last);
        match (marks_ok, terms_ok, noops_ok) {
            (true, true, true) => Ok(()),
            (false, _, _) => Err("marks out of order or out of the segment".into()),
            (_, false, _) => Err("term runs out of order or out of the segment".into()),
            (_, _, false) => Err("no-op or batch indexes out of order or out of the segment".into()),
        }
    }

    /// Whether `record` (the bytes from `tail.0` to the segment's end) is the last record this
    /// index names: its checksum and its entry.
    pub(crate) fn check_tail(&self, record: &[u8]) -> Result<(), String> {
        if crc32fast::hash(record) != self.tail.1 || record.last() != Some(&b'\n') {
            return Err("the segment's last record is not the one indexed".into());
        }
        let entry = decode_record(&record[..record.len() - 1])?;
        if entry.index != self.last || Some(entry.term) != self.term_at(self.last) {
            return Err("the segment's last record is not the one indexed".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::encode_record;
    use replog_core::Bytes;

    fn entry(index: u64, term: u64, noop: bool) -> Entry {
        let payload =
            if noop { Payload::Noop } else { Payload::Command(Bytes::from(format!("c{index}").as_str())) };
        Entry { index: LogIndex(index), term: Term(term), payload }
    }

    /// A segment from entry 10 of 600 entries, terms changing at 10, 300 and 599, no-ops at
    /// each term's start: its bytes and its tally.
    fn segment() -> (Vec<u8>, Tally) {
        let mut bytes = Vec::new();
        let mut tally = Tally::new(LogIndex(10));
        for index in 10..610 {
            let term = match index {
                ..300 => 1,
                300..599 => 2,
                _ => 4,
            };
            let start = bytes.len();
            encode_record(&entry(index, term, [10, 300, 599].contains(&index)), &mut bytes);
            tally.push(&entry(index, term, [10, 300, 599].contains(&index)), (bytes.len() - start) as u64);
        }
        (bytes, tally)
    }

    #[test]
    fn an_index_round_trips_and_locates_every_entry() {
        let (bytes, tally) = segment();
        let tail = tally.offsets[599] as usize;
        let index = tally.seal(crc32fast::hash(&bytes[tail..]));
        assert_eq!((index.first, index.last, index.bytes), (LogIndex(10), LogIndex(609), bytes.len() as u64));
        assert_eq!(
            index.terms,
            vec![(LogIndex(10), Term(1)), (LogIndex(300), Term(2)), (LogIndex(599), Term(4))]
        );
        assert_eq!(index.noops, vec![LogIndex(10), LogIndex(300), LogIndex(599)]);
        assert_eq!(index.marks.len(), 3);
        let encoded = index.encode();
        assert_eq!(encoded.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let decoded = SegmentIndex::decode(&encoded, LogIndex(10), bytes.len() as u64).unwrap();
        assert_eq!(decoded, index);
        decoded.check_tail(&bytes[tail..]).unwrap();
        for at in [10, 11, 265, 266, 521, 522, 609] {
            let (offset, skip) = index.seek(LogIndex(at));
            assert_eq!(offset, tally.offsets[(at - 10) as usize - skip], "entry {at}");
            assert!(skip < INDEX_STRIDE as usize);
        }
        assert_eq!(index.term_at(LogIndex(299)), Some(Term(1)));
        assert_eq!(index.term_at(LogIndex(300)), Some(Term(2)));
        assert_eq!(index.term_at(LogIndex(610)), None);
        // Entry bytes from any entry: the interval's own entries plus all after it.
        for from in [10, 100, 266, 600] {
            let interval: u64 = (from..=index.interval_last(LogIndex(from)).0)
                .map(|i| entry(i, 1, [10, 300, 599].contains(&i)).size_bytes())
                .sum();
            let total = interval + index.entry_bytes_after_interval(LogIndex(from));
            assert_eq!(total, tally.entry_bytes_from(LogIndex(from)), "from {from}");
        }
    }

    #[test]
    fn a_damaged_or_foreign_index_is_refused() {
        let (bytes, tally) = segment();
        let tail = tally.offsets[599] as usize;
        let index = tally.seal(crc32fast::hash(&bytes[tail..]));
        let encoded = index.encode();
        let length = bytes.len() as u64;
        assert!(SegmentIndex::decode(&encoded[..encoded.len() - 3], LogIndex(10), length).is_err());
        let mut flipped = encoded.clone();
        flipped[30] ^= 0x01;
        assert!(SegmentIndex::decode(&flipped, LogIndex(10), length).unwrap_err().contains("checksum"));
        assert!(SegmentIndex::decode(&encoded, LogIndex(11), length).unwrap_err().contains("from entry"));
        assert!(SegmentIndex::decode(&encoded, LogIndex(10), length - 1).unwrap_err().contains("bytes"));
        // Fields that disagree, under a good checksum.
        let mut bad = index.clone();
        bad.marks.swap(1, 2);
        assert!(SegmentIndex::decode(&bad.encode(), LogIndex(10), length).unwrap_err().contains("marks"));
        let mut bad = index.clone();
        bad.terms[1].1 = Term(9);
        assert!(SegmentIndex::decode(&bad.encode(), LogIndex(10), length).unwrap_err().contains("term runs"));
        // Another last record (a segment of the same name and length, written again).
        let mut other = bytes[tail..].to_vec();
        other[12] ^= 0x01;
        assert!(index.check_tail(&other).is_err());
        assert_eq!(parse_index_name(&index_name(LogIndex(10))), Some(LogIndex(10)));
        assert_eq!(parse_index_name("log-00000000000000000010.jsonl"), None);
    }

    #[test]
    fn batches_and_session_requests_are_indexed_and_survive_truncation() {
        use replog_core::{ClientId, ClientRequest};
        let request = |index: u64, commands: usize| Entry {
            index: LogIndex(index),
            term: Term(1),
            payload: Payload::Request(ClientRequest {
                client: ClientId(1),
                seq: index,
                commands: (0..commands).map(|_| Bytes::from("c")).collect(),
            }),
        };
        let mut bytes = Vec::new();
        let mut tally = Tally::new(LogIndex(1));
        for entry in [entry(1, 1, true), request(2, 1), entry(3, 1, false), request(4, 3), entry(5, 1, false)]
        {
            let start = bytes.len();
            encode_record(&entry, &mut bytes);
            tally.push(&entry, (bytes.len() - start) as u64);
        }
        assert_eq!(
            (tally.batches.clone(), tally.requests),
            (vec![(LogIndex(4), 3)], Some((LogIndex(2), LogIndex(4))))
        );
        let tail = tally.offsets[4] as usize;
        let index = tally.seal(crc32fast::hash(&bytes[tail..]));
        let decoded = SegmentIndex::decode(&index.encode(), LogIndex(1), bytes.len() as u64).unwrap();
        assert_eq!(decoded, index);
        tally.truncate(LogIndex(4));
        assert_eq!((tally.batches.clone(), tally.requests), (Vec::new(), Some((LogIndex(2), LogIndex(3)))));
        tally.truncate(LogIndex(2));
        assert_eq!(tally.requests, None);
    }

    #[test]
    fn a_tally_truncates_back_to_what_it_had() {
        let (_, mut tally) = segment();
        let before = tally.clone();
        let end = tally.truncate(LogIndex(300));
        assert_eq!((tally.last(), end), (LogIndex(299), before.offsets[290]));
        assert_eq!(tally.terms, vec![(LogIndex(10), Term(1))]);
        assert_eq!(tally.noops, vec![LogIndex(10)]);
        assert_eq!(tally.entry_bytes, before.entry_bytes - before.entry_bytes_from(LogIndex(300)));
        assert_eq!(tally.truncate(LogIndex(10)), 0);
        assert_eq!((tally.entry_bytes, tally.terms.len(), tally.last()), (0, 0, LogIndex(9)));
    }
}
