//! The in-memory Raft log: the entries after the last snapshot, and how far of it the driver
//! has made durable.
//!
//! The log starts after `base`, the last entry a snapshot covers (§7): its index and term stay
//! known so the consistency check at the boundary still works (§5.3); the entries before it are
//! gone. Invariants (asserted by `check`): entry `base.index + k` sits at position `k - 1`; terms
//! never decrease along the log (from `base.term`); `base.index <= persisted <= last_index`.

use crate::types::{Entry, LogIndex, SnapshotMeta, Term};

#[derive(Debug, Default)]
pub struct Log {
    /// The last entry covered by a snapshot (index 0, term 0 when there is none).
    base: SnapshotMeta,
    /// Entries `base.index + 1 ..`.
    entries: Vec<Entry>,
    /// Every entry up to here is durable, as reported by the driver (`Event::LogPersisted`),
    /// or covered by a durable snapshot.
    persisted: LogIndex,
}

/// Why a recovered log was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogError {
    /// The entry at this position does not carry the index it should.
    Gap {
        /// The entry's position in the recovered list, from 0.
        position: u64,
        /// The index it carries instead of the one after its predecessor.
        index: LogIndex,
    },
    /// The term drops here, which no valid Raft log does.
    TermDecreases {
        /// The first entry whose term is below its predecessor's.
        index: LogIndex,
    },
}

impl Log {
    /// A log recovered from durable storage, continuing after the snapshot `base` (the default
    /// meta for none); all of it counts as persisted.
    pub fn recover(base: SnapshotMeta, entries: Vec<Entry>) -> Result<Log, LogError> {
        let mut last_term = base.term;
        for (position, entry) in entries.iter().enumerate() {
            if entry.index != base.index.plus(position as u64 + 1) {
                return Err(LogError::Gap { position: position as u64, index: entry.index });
            }
            if entry.term < last_term {
                return Err(LogError::TermDecreases { index: entry.index });
            }
            last_term = entry.term;
        }
        let persisted = base.index.plus(entries.len() as u64);
        Ok(Log { base, entries, persisted })
    }

    /// The last entry a snapshot covers (index 0 if none).
    pub fn base(&self) -> SnapshotMeta {
        self.base
    }

    /// The first index the log still holds an entry for (it may hold none yet).
    pub fn first_index(&self) -> LogIndex {
        self.base.index.next()
    }

    pub fn last_index(&self) -> LogIndex {
        self.base.index.plus(self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(self.base.term, |entry| entry.term)
    }

    pub fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// Position of `index` in `entries`, if the log holds an entry there.
    fn position(&self, index: LogIndex) -> Option<usize> {
        if index <= self.base.index || index > self.last_index() {
            return None;
        }
        Some((index.0 - self.base.index.0 - 1) as usize)
    }

    /// The term of the entry at `index`: known for the snapshot's last entry and every entry
    /// after it; `None` before (compacted) and past the end.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.position(index).map(|at| self.entries[at].term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.position(index).map(|at| &self.entries[at])
    }

    /// The log holds an entry at `index` with `term` (§5.3, the AppendEntries consistency check).
    pub fn matches(&self, index: LogIndex, term: Term) -> bool {
        self.term_at(index) == Some(term)
    }

    /// §5.4.1: a log ending in (`last_index`, `last_term`) is at least as up-to-date as ours.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Entries `from..=to`, cut short after `count_max` entries or once `bytes_max` is reached
    /// (the first entry is always included so an oversized one still moves). `from` must be
    /// held (not compacted).
    pub fn slice(&self, from: LogIndex, to: LogIndex, count_max: u32, bytes_max: u64) -> Vec<Entry> {
        debug_assert!(from > self.base.index, "slice from a compacted index");
        let to = to.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut index = from;
        while index <= to && out.len() < count_max as usize {
            let entry = &self.entries[(index.0 - self.base.index.0 - 1) as usize];
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        out
    }

    /// Entries `from..=to`, all of them; `from` must be held (not compacted).
    pub fn range(&self, from: LogIndex, to: LogIndex) -> Vec<Entry> {
        if from > to {
            return Vec::new();
        }
        assert!(
            from > self.base.index,
            "range from compacted index {from} (snapshot at {})",
            self.base.index
        );
        let start = (from.0 - self.base.index.0 - 1) as usize;
        let end = (to.0 - self.base.index.0) as usize;
        self.entries[start..end].to_vec()
    }

    /// Appends entries that continue the log exactly.
    pub fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            assert_eq!(entry.index, self.last_index().next(), "log append must be contiguous");
            assert!(entry.term >= self.last_term(), "log terms must not decrease");
            self.entries.push(entry.clone());
        }
    }

    /// Removes every entry at `from` and after. Entries a snapshot covers are committed and can
    /// never be removed.
    pub fn truncate_from(&mut self, from: LogIndex) {
        assert!(from > self.base.index, "truncating {from}, covered by the snapshot at {}", self.base.index);
        self.entries.truncate((from.0 - self.base.index.0 - 1) as usize);
        self.persisted = self.persisted.min(self.last_index());
    }

    /// Drops the entries through `meta`, which the log holds: a durable snapshot covers them
    /// (§7, log compaction).
    pub fn compact(&mut self, meta: SnapshotMeta) {
        assert!(meta.index > self.base.index, "compaction goes forward");
        assert!(self.matches(meta.index, meta.term), "compacting through an entry the log does not hold");
        self.entries.drain(..(meta.index.0 - self.base.index.0) as usize);
        self.base = meta;
        self.persisted = self.persisted.max(meta.index);
    }

    /// Installs a leader's snapshot (§7, Figure 13, steps 6-7): if the log holds the snapshot's
    /// last entry, the entries after it are kept; otherwise the whole log is discarded. Returns
    /// whether entries were kept.
    pub fn install(&mut self, meta: SnapshotMeta) -> bool {
        assert!(meta.index > self.base.index, "an installed snapshot moves the log forward");
        let keep = self.matches(meta.index, meta.term);
        if keep {
            self.compact(meta);
        } else {
            self.entries.clear();
            self.base = meta;
            self.persisted = meta.index;
        }
        keep
    }

    /// The planted bug `InstallWithoutLogCheck`: the log restarts at `meta`, whatever it held.
    pub fn install_unchecked(&mut self, meta: SnapshotMeta) {
        self.entries.clear();
        self.base = meta;
        self.persisted = meta.index;
    }

    /// The first of `entries` that the log does not already hold (missing or a different term),
    /// so a stale, shorter AppendEntries never truncates a longer matching log (§5.3). Every
    /// entry must lie after the snapshot.
    pub fn first_new(&self, entries: &[Entry]) -> Option<usize> {
        entries.iter().position(|entry| !self.matches(entry.index, entry.term))
    }

    /// The first index of the run of `term` that contains `index`, scanning back no further than
    /// `floor` (nor past the snapshot): the follower's conflict hint (§5.3, "the follower can
    /// include the term of the conflicting entry and the first index it stores for that term").
    pub fn first_index_of_term(&self, index: LogIndex, floor: LogIndex) -> LogIndex {
        let term = self.term_at(index).expect("index within the log");
        let mut first = index;
        while first > floor.max(self.first_index()) && self.term_at(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// The last index holding `term`, if the log has any entry of that term (the snapshot's
    /// last entry included; nothing before it is known).
    pub fn last_index_of_term(&self, term: Term, at_or_before: LogIndex) -> Option<LogIndex> {
        let mut index = at_or_before.min(self.last_index());
        while index >= self.base.index && index > LogIndex::ZERO {
            let here = self.term_at(index).expect("index within the log");
            if here == term {
                return Some(index);
            }
            if here < term {
                return None;
            }
            index = index.prev();
        }
        None
    }

    /// The driver reports that every write up to (`index`, `term`) is durable. A report for an
    /// entry that has since been truncated and replaced is ignored.
    pub fn mark_persisted(&mut self, index: LogIndex, term: Term) -> bool {
        if index > self.persisted && self.matches(index, term) {
            self.persisted = index;
            return true;
        }
        false
    }

    pub fn check(&self) {
        assert!(self.persisted <= self.last_index(), "persisted index past the log end");
        assert!(self.persisted >= self.base.index, "persisted index before the snapshot");
        if let Some(first) = self.entries.first() {
            assert_eq!(first.index, self.base.index.next(), "log does not continue the snapshot");
            assert!(first.term >= self.base.term, "log term below the snapshot's");
        }
        if let Some(last) = self.entries.last() {
            assert_eq!(last.index, self.last_index(), "log positions and indexes disagree");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Payload;

    fn entries(terms: &[u64]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry { index: LogIndex(i as u64 + 1), term: Term(t), payload: Payload::Noop })
            .collect()
    }

    #[test]
    fn slice_stops_past_the_byte_limit_not_at_it() {
        let log = Log::recover(SnapshotMeta::default(), entries(&[1, 1, 1, 1])).unwrap();
        let each = log.entry(LogIndex(1)).unwrap().size_bytes();
        let all = LogIndex(4);
        // Exactly three entries' bytes: three fit, the fourth would go past.
        assert_eq!(log.slice(LogIndex(1), all, 10, 3 * each).len(), 3);
        assert_eq!(log.slice(LogIndex(1), all, 10, 3 * each - 1).len(), 2);
        // The first entry always moves, however small the limit; the count limit holds too.
        assert_eq!(log.slice(LogIndex(1), all, 10, 1).len(), 1);
        assert_eq!(log.slice(LogIndex(2), all, 2, u64::MAX).len(), 2);
    }

    #[test]
    fn recover_rejects_gaps_and_falling_terms() {
        let mut bad = entries(&[1, 1, 2]);
        bad[2].index = LogIndex(4);
        assert_eq!(
            Log::recover(SnapshotMeta::default(), bad).unwrap_err(),
            LogError::Gap { position: 2, index: LogIndex(4) }
        );
        assert_eq!(
            Log::recover(SnapshotMeta::default(), entries(&[2, 1])).unwrap_err(),
            LogError::TermDecreases { index: LogIndex(2) }
        );
        let log = Log::recover(SnapshotMeta::default(), entries(&[1, 1, 2])).unwrap();
        assert_eq!((log.last_index(), log.last_term(), log.persisted()), (LogIndex(3), Term(2), LogIndex(3)));
    }

    #[test]
    fn up_to_date_compares_term_first_then_length() {
        let log = Log::recover(SnapshotMeta::default(), entries(&[1, 2, 2])).unwrap();
        assert!(log.is_up_to_date(LogIndex(1), Term(3)));
        assert!(log.is_up_to_date(LogIndex(3), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(2), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(9), Term(1)));
    }

    #[test]
    fn first_new_skips_matching_prefix() {
        let log = Log::recover(SnapshotMeta::default(), entries(&[1, 1, 2])).unwrap();
        let incoming = entries(&[1, 1, 3, 3]);
        assert_eq!(log.first_new(&incoming[1..]), Some(1));
        assert_eq!(log.first_new(&incoming[..2]), None);
    }

    #[test]
    fn truncate_pulls_back_persisted_and_stale_reports_are_ignored() {
        let mut log = Log::recover(SnapshotMeta::default(), entries(&[1, 1, 2])).unwrap();
        log.truncate_from(LogIndex(2));
        assert_eq!((log.last_index(), log.persisted()), (LogIndex(1), LogIndex(1)));
        log.append(&[Entry { index: LogIndex(2), term: Term(3), payload: Payload::Noop }]);
        assert!(!log.mark_persisted(LogIndex(2), Term(1)), "report for a replaced entry");
        assert!(log.mark_persisted(LogIndex(2), Term(3)));
        log.check();
    }

    #[test]
    fn term_runs_for_conflict_hints() {
        let log = Log::recover(SnapshotMeta::default(), entries(&[1, 1, 2, 2, 2, 4])).unwrap();
        assert_eq!(log.first_index_of_term(LogIndex(5), LogIndex(0)), LogIndex(3));
        assert_eq!(log.first_index_of_term(LogIndex(5), LogIndex(4)), LogIndex(4));
        assert_eq!(log.last_index_of_term(Term(2), LogIndex(6)), Some(LogIndex(5)));
        assert_eq!(log.last_index_of_term(Term(3), LogIndex(6)), None);
    }

    #[test]
    fn slice_respects_count_and_bytes_but_always_moves_one() {
        let log = Log::recover(SnapshotMeta::default(), entries(&[1; 10])).unwrap();
        assert_eq!(log.slice(LogIndex(1), LogIndex(10), 3, u64::MAX).len(), 3);
        assert_eq!(log.slice(LogIndex(1), LogIndex(10), 100, 1).len(), 1);
        assert_eq!(log.slice(LogIndex(9), LogIndex(20), 100, u64::MAX).len(), 2);
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;
    use crate::types::Payload;

    fn entries(from: u64, terms: &[u64]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry { index: LogIndex(from + i as u64), term: Term(t), payload: Payload::Noop })
            .collect()
    }

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta { index: LogIndex(index), term: Term(term) }
    }

    #[test]
    fn a_log_after_a_snapshot_knows_the_boundary_term_and_nothing_before() {
        let log = Log::recover(meta(10, 2), entries(11, &[2, 3])).unwrap();
        assert_eq!(
            (log.first_index(), log.last_index(), log.last_term()),
            (LogIndex(11), LogIndex(12), Term(3))
        );
        assert_eq!(log.term_at(LogIndex(10)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(9)), None);
        assert!(log.entry(LogIndex(10)).is_none());
        assert_eq!(log.last_index_of_term(Term(2), LogIndex(12)), Some(LogIndex(11)));
        assert_eq!(log.last_index_of_term(Term(1), LogIndex(12)), None);
        assert_eq!(log.first_index_of_term(LogIndex(11), LogIndex(0)), LogIndex(11));
        let empty = Log::recover(meta(10, 2), Vec::new()).unwrap();
        assert_eq!(
            (empty.last_index(), empty.last_term(), empty.persisted()),
            (LogIndex(10), Term(2), LogIndex(10))
        );
        assert_eq!(
            Log::recover(meta(10, 2), entries(12, &[2])).unwrap_err(),
            LogError::Gap { position: 0, index: LogIndex(12) }
        );
        assert_eq!(
            Log::recover(meta(10, 2), entries(11, &[1])).unwrap_err(),
            LogError::TermDecreases { index: LogIndex(11) }
        );
    }

    #[test]
    fn compaction_drops_a_prefix_and_keeps_the_rest() {
        let mut log = Log::recover(SnapshotMeta::default(), entries(1, &[1, 1, 2, 2, 3])).unwrap();
        log.compact(meta(3, 2));
        assert_eq!((log.first_index(), log.last_index()), (LogIndex(4), LogIndex(5)));
        assert_eq!(log.range(LogIndex(4), LogIndex(5)).len(), 2);
        assert_eq!(log.slice(LogIndex(4), LogIndex(5), 10, u64::MAX)[0].index, LogIndex(4));
        log.truncate_from(LogIndex(5));
        assert_eq!(log.last_index(), LogIndex(4));
        log.check();
    }

    #[test]
    fn install_keeps_a_matching_suffix_and_drops_a_conflicting_log() {
        let mut log = Log::recover(SnapshotMeta::default(), entries(1, &[1, 1, 2, 2])).unwrap();
        assert!(log.install(meta(2, 1)), "the log holds the snapshot's last entry");
        assert_eq!((log.first_index(), log.last_index()), (LogIndex(3), LogIndex(4)));
        assert!(!log.install(meta(4, 3)), "a different term at 4: the log is discarded");
        assert_eq!((log.last_index(), log.last_term(), log.persisted()), (LogIndex(4), Term(3), LogIndex(4)));
        assert!(!log.install(meta(9, 3)), "past the end: discarded");
        assert_eq!(log.last_index(), LogIndex(9));
        log.check();
    }

    #[test]
    #[should_panic(expected = "covered by the snapshot")]
    fn entries_a_snapshot_covers_cannot_be_truncated() {
        let mut log = Log::recover(meta(5, 1), entries(6, &[1])).unwrap();
        log.truncate_from(LogIndex(5));
    }
}
