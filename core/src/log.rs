//! The Raft log as the core sees it: the terms of every entry after the last snapshot, the
//! newest entries themselves (a bounded cache), and how far the driver has made it durable.
//!
//! The log starts after `base`, the last entry a snapshot covers (§7): its index and term stay
//! known so the consistency check at the boundary still works (§5.3); the entries before it are
//! gone. After `base` every entry's term is known, as runs (a new run where the term changes), so
//! the consistency check, conflict hints and vote comparisons never need an entry's bytes. The
//! bytes of only the newest entries are held: older ones, already applied, are evicted once the
//! cache passes its byte budget, and the driver reads them back from disk when a lagging follower
//! or a client needs them (`Action::ReadLog`). Memory is then bounded by the budget, not by the
//! log's length.
//!
//! Invariants (asserted by `check`): the runs cover `base.index + 1 ..= last` in ascending order
//! with non-decreasing terms (from `base.term`); the cache is a contiguous suffix ending at
//! `last`; `base.index <= persisted <= last`.

use crate::types::{Entry, LogIndex, SnapshotMeta, Term};
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct Log {
    /// The last entry covered by a snapshot (index 0, term 0 when there is none).
    base: SnapshotMeta,
    /// `(first index, term)` of each run of equal terms after `base`, ascending.
    runs: Vec<(LogIndex, Term)>,
    /// The last index.
    last: LogIndex,
    /// The newest entries, contiguous, ending at `last`.
    cache: VecDeque<Entry>,
    /// `Entry::size_bytes` of the cached entries.
    cache_bytes: u64,
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
    /// The recovered term runs are not ascending, start before the snapshot, or disagree with
    /// the recovered entries.
    BadTermRuns {
        /// The first index where they go wrong.
        index: LogIndex,
    },
}

impl Log {
    /// A log recovered from durable storage, continuing after the snapshot `base` (the default
    /// meta for none); all of it counts as persisted. `entries` are the newest entries, a suffix
    /// of the log; `runs` are the terms of the whole log after `base` (empty: derive them from
    /// `entries`, which must then start right after `base`).
    pub fn recover(
        base: SnapshotMeta,
        runs: Vec<(LogIndex, Term)>,
        entries: Vec<Entry>,
    ) -> Result<Log, LogError> {
        let mut log = Log { base, last: base.index, persisted: base.index, ..Log::default() };
        if runs.is_empty() {
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
            log.append(&entries);
        } else {
            let mut previous: Option<(LogIndex, Term)> = None;
            for &(first, term) in &runs {
                let ordered = match previous {
                    None => first == base.index.next() && term >= base.term,
                    Some((before, before_term)) => first > before && term > before_term,
                };
                if !ordered {
                    return Err(LogError::BadTermRuns { index: first });
                }
                previous = Some((first, term));
            }
            let last = match entries.last() {
                Some(entry) => entry.index,
                None => return Err(LogError::BadTermRuns { index: base.index.next() }),
            };
            // Every run holds at least one entry: the last starts at or before the last entry.
            if let Some(&(first, _)) = runs.last().filter(|&&(first, _)| first > last) {
                return Err(LogError::BadTermRuns { index: first });
            }
            log.runs = runs;
            log.last = last;
            for (position, entry) in entries.iter().enumerate() {
                let index = last.0 + 1 - (entries.len() - position) as u64;
                if entry.index != LogIndex(index) || index <= base.index.0 {
                    return Err(LogError::Gap { position: position as u64, index: entry.index });
                }
                if log.term_at(entry.index) != Some(entry.term) {
                    return Err(LogError::BadTermRuns { index: entry.index });
                }
            }
            log.cache_bytes = entries.iter().map(Entry::size_bytes).sum();
            log.cache = entries.into();
        }
        log.persisted = log.last;
        Ok(log)
    }

    /// The last entry a snapshot covers (index 0 if none).
    pub fn base(&self) -> SnapshotMeta {
        self.base
    }

    /// The first index the log still holds an entry for (it may hold none yet).
    pub fn first_index(&self) -> LogIndex {
        self.base.index.next()
    }

    /// The first index whose entry is in memory; older ones must be read from disk.
    pub fn cached_from(&self) -> LogIndex {
        LogIndex(self.last.0 + 1 - self.cache.len() as u64)
    }

    pub fn last_index(&self) -> LogIndex {
        self.last
    }

    pub fn last_term(&self) -> Term {
        self.runs.last().map_or(self.base.term, |&(_, term)| term)
    }

    pub fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// Bytes (`Entry::size_bytes`) of the entries held in memory.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    /// The term of the entry at `index`: known for the snapshot's last entry and every entry
    /// after it; `None` before (compacted) and past the end.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        if index <= self.base.index || index > self.last {
            return None;
        }
        let run = self.runs.partition_point(|&(first, _)| first <= index) - 1;
        Some(self.runs[run].1)
    }

    /// The entry at `index`, if it is in memory.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index < self.cached_from() || index > self.last {
            return None;
        }
        self.cache.get((index.0 - self.cached_from().0) as usize)
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
    /// (the first entry is always included so an oversized one still moves). `from` must be in
    /// memory (`cached_from() <= from`).
    pub fn slice(&self, from: LogIndex, to: LogIndex, count_max: u32, bytes_max: u64) -> Vec<Entry> {
        debug_assert!(from >= self.cached_from(), "slice from an entry not in memory");
        let to = to.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut index = from;
        while index <= to && out.len() < count_max as usize {
            let entry = self.entry(index).expect("cached");
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        out
    }

    /// Entries `from..=to`, all of them; they must be in memory.
    pub fn range(&self, from: LogIndex, to: LogIndex) -> Vec<Entry> {
        if from > to {
            return Vec::new();
        }
        assert!(
            from >= self.cached_from() && to <= self.last,
            "range {from}..={to} not in memory (held {}..={})",
            self.cached_from(),
            self.last
        );
        let start = (from.0 - self.cached_from().0) as usize;
        let end = (to.0 - self.cached_from().0) as usize;
        self.cache.range(start..=end).cloned().collect()
    }

    /// Appends entries that continue the log exactly.
    pub fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            assert_eq!(entry.index, self.last_index().next(), "log append must be contiguous");
            assert!(entry.term >= self.last_term(), "log terms must not decrease");
            if self.runs.last().is_none_or(|&(_, term)| term != entry.term) {
                self.runs.push((entry.index, entry.term));
            }
            self.last = entry.index;
            self.cache_bytes += entry.size_bytes();
            self.cache.push_back(entry.clone());
        }
    }

    /// Removes every entry at `from` and after. Entries a snapshot covers are committed and can
    /// never be removed; nor can entries no longer in memory (they are applied, so committed).
    pub fn truncate_from(&mut self, from: LogIndex) {
        assert!(from > self.base.index, "truncating {from}, covered by the snapshot at {}", self.base.index);
        assert!(from >= self.cached_from(), "truncating {from}, applied and evicted from memory");
        if from > self.last {
            return;
        }
        let keep = (from.0 - self.cached_from().0) as usize;
        for entry in self.cache.drain(keep..) {
            self.cache_bytes -= entry.size_bytes();
        }
        self.last = from.prev();
        self.runs.retain(|&(first, _)| first < from);
        self.persisted = self.persisted.min(self.last_index());
    }

    /// Drops the entries through `meta`, which the log holds: a durable snapshot covers them
    /// (§7, log compaction).
    pub fn compact(&mut self, meta: SnapshotMeta) {
        assert!(meta.index > self.base.index, "compaction goes forward");
        assert!(self.matches(meta.index, meta.term), "compacting through an entry the log does not hold");
        while self.cache.front().is_some_and(|entry| entry.index <= meta.index) {
            let entry = self.cache.pop_front().expect("front");
            self.cache_bytes -= entry.size_bytes();
        }
        // The run holding meta.index now starts after it (or ends there and goes).
        let keep_from = self.runs.partition_point(|&(first, _)| first <= meta.index) - 1;
        self.runs.drain(..keep_from);
        if meta.index < self.last {
            self.runs[0].0 = meta.index.next();
            if self.runs.len() > 1 && self.runs[1].0 == self.runs[0].0 {
                self.runs.remove(0);
            }
        } else {
            self.runs.clear();
        }
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
            self.install_unchecked(meta);
        }
        keep
    }

    /// The log restarts at `meta`, whatever it held (and the planted bug
    /// `InstallWithoutLogCheck` uses it where it must not).
    pub fn install_unchecked(&mut self, meta: SnapshotMeta) {
        self.cache.clear();
        self.cache_bytes = 0;
        self.runs.clear();
        self.base = meta;
        self.last = meta.index;
        self.persisted = meta.index;
    }

    /// Lets go of the oldest entries in memory while the cache holds more than `bytes_max`,
    /// never one after `through` (the applied index: what is not applied yet must stay).
    pub fn evict(&mut self, through: LogIndex, bytes_max: u64) {
        while self.cache_bytes > bytes_max && self.cache.front().is_some_and(|entry| entry.index <= through) {
            let entry = self.cache.pop_front().expect("front");
            self.cache_bytes -= entry.size_bytes();
        }
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
        assert!(index > self.base.index && index <= self.last, "index within the log");
        let run = self.runs.partition_point(|&(first, _)| first <= index) - 1;
        self.runs[run].0.max(floor).max(self.first_index()).min(index)
    }

    /// The last index holding `term`, if the log has any entry of that term (the snapshot's
    /// last entry included; nothing before it is known).
    pub fn last_index_of_term(&self, term: Term, at_or_before: LogIndex) -> Option<LogIndex> {
        let at = at_or_before.min(self.last_index());
        if at < self.base.index {
            return None;
        }
        // Runs that start at or before `at`, newest first.
        let count = self.runs.partition_point(|&(first, _)| first <= at);
        for position in (0..count).rev() {
            let (first, run_term) = self.runs[position];
            if run_term == term {
                let end = self.runs.get(position + 1).map_or(self.last, |&(next, _)| next.prev());
                return Some(end.min(at));
            }
            if run_term < term {
                return None;
            }
            debug_assert!(first > self.base.index);
        }
        (self.base.term == term && self.base.index > LogIndex::ZERO).then_some(self.base.index)
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
        assert!(self.last >= self.base.index, "log ends before its snapshot");
        match self.runs.first() {
            Some(&(first, term)) => {
                assert_eq!(first, self.base.index.next(), "term runs do not continue the snapshot");
                assert!(term >= self.base.term, "log term below the snapshot's");
            }
            None => assert_eq!(self.last, self.base.index, "entries without term runs"),
        }
        debug_assert!(self.runs.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1), "runs ascend");
        if let Some(last) = self.cache.back() {
            assert_eq!(last.index, self.last, "the cache ends at the last index");
            assert!(self.cached_from() > self.base.index, "cached entries a snapshot covers");
        }
        debug_assert_eq!(self.cache_bytes, self.cache.iter().map(Entry::size_bytes).sum::<u64>());
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
        let log = Log::recover(SnapshotMeta::default(), Vec::new(), entries(&[1, 1, 1, 1])).unwrap();
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
            Log::recover(SnapshotMeta::default(), Vec::new(), bad).unwrap_err(),
            LogError::Gap { position: 2, index: LogIndex(4) }
        );
        assert_eq!(
            Log::recover(SnapshotMeta::default(), Vec::new(), entries(&[2, 1])).unwrap_err(),
            LogError::TermDecreases { index: LogIndex(2) }
        );
        let log = Log::recover(SnapshotMeta::default(), Vec::new(), entries(&[1, 1, 2])).unwrap();
        assert_eq!((log.last_index(), log.last_term(), log.persisted()), (LogIndex(3), Term(2), LogIndex(3)));
    }

    #[test]
    fn up_to_date_compares_term_first_then_length() {
        let log = Log::recover(SnapshotMeta::default(), Vec::new(), entries(&[1, 2, 2])).unwrap();
        assert!(log.is_up_to_date(LogIndex(1), Term(3)));
        assert!(log.is_up_to_date(LogIndex(3), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(2), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(9), Term(1)));
    }

    #[test]
    fn first_new_skips_matching_prefix() {
        let log = Log::recover(SnapshotMeta::default(), Vec::new(), entries(&[1, 1, 2])).unwrap();
        let incoming = entries(&[1, 1, 3, 3]);
        assert_eq!(log.first_new(&incoming[1..]), Some(1));
        assert_eq!(log.first_new(&incoming[..2]), None);
    }

    #[test]
    fn truncate_pulls_back_persisted_and_stale_reports_are_ignored() {
        let mut log = Log::recover(SnapshotMeta::default(), Vec::new(), entries(&[1, 1, 2])).unwrap();
        log.truncate_from(LogIndex(2));
        assert_eq!((log.last_index(), log.persisted()), (LogIndex(1), LogIndex(1)));
        log.append(&[Entry { index: LogIndex(2), term: Term(3), payload: Payload::Noop }]);
        assert!(!log.mark_persisted(LogIndex(2), Term(1)), "report for a replaced entry");
        assert!(log.mark_persisted(LogIndex(2), Term(3)));
        log.check();
    }

    #[test]
    fn term_runs_for_conflict_hints() {
        let log = Log::recover(SnapshotMeta::default(), Vec::new(), entries(&[1, 1, 2, 2, 2, 4])).unwrap();
        assert_eq!(log.first_index_of_term(LogIndex(5), LogIndex(0)), LogIndex(3));
        assert_eq!(log.first_index_of_term(LogIndex(5), LogIndex(4)), LogIndex(4));
        assert_eq!(log.last_index_of_term(Term(2), LogIndex(6)), Some(LogIndex(5)));
        assert_eq!(log.last_index_of_term(Term(3), LogIndex(6)), None);
    }

    #[test]
    fn slice_respects_count_and_bytes_but_always_moves_one() {
        let log = Log::recover(SnapshotMeta::default(), Vec::new(), entries(&[1; 10])).unwrap();
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
        let log = Log::recover(meta(10, 2), Vec::new(), entries(11, &[2, 3])).unwrap();
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
        let empty = Log::recover(meta(10, 2), Vec::new(), Vec::new()).unwrap();
        assert_eq!(
            (empty.last_index(), empty.last_term(), empty.persisted()),
            (LogIndex(10), Term(2), LogIndex(10))
        );
        assert_eq!(
            Log::recover(meta(10, 2), Vec::new(), entries(12, &[2])).unwrap_err(),
            LogError::Gap { position: 0, index: LogIndex(12) }
        );
        assert_eq!(
            Log::recover(meta(10, 2), Vec::new(), entries(11, &[1])).unwrap_err(),
            LogError::TermDecreases { index: LogIndex(11) }
        );
    }

    #[test]
    fn compaction_drops_a_prefix_and_keeps_the_rest() {
        let mut log =
            Log::recover(SnapshotMeta::default(), Vec::new(), entries(1, &[1, 1, 2, 2, 3])).unwrap();
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
        let mut log = Log::recover(SnapshotMeta::default(), Vec::new(), entries(1, &[1, 1, 2, 2])).unwrap();
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
        let mut log = Log::recover(meta(5, 1), Vec::new(), entries(6, &[1])).unwrap();
        log.truncate_from(LogIndex(5));
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use crate::types::{Bytes, Payload};

    fn commands(from: u64, terms: &[u64]) -> Vec<Entry> {
        terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry {
                index: LogIndex(from + i as u64),
                term: Term(t),
                payload: Payload::Command(Bytes::from("0123456789")),
            })
            .collect()
    }

    #[test]
    fn evicted_entries_keep_their_terms_and_are_no_longer_in_memory() {
        let mut log =
            Log::recover(SnapshotMeta::default(), Vec::new(), commands(1, &[1, 1, 2, 2, 2, 3])).unwrap();
        let each = log.entry(LogIndex(1)).unwrap().size_bytes();
        // Only applied entries go, and only past the budget.
        log.evict(LogIndex(4), 3 * each);
        assert_eq!(log.cached_from(), LogIndex(4));
        assert_eq!(log.cache_bytes(), 3 * each);
        log.evict(LogIndex(4), 0);
        assert_eq!(log.cached_from(), LogIndex(5), "never past the applied index");
        assert!(log.entry(LogIndex(3)).is_none());
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(1)), Some(Term(1)));
        assert_eq!(log.last_index_of_term(Term(2), LogIndex(6)), Some(LogIndex(5)));
        assert_eq!(log.last_index_of_term(Term(1), LogIndex(6)), Some(LogIndex(2)));
        assert_eq!(log.first_index_of_term(LogIndex(5), LogIndex(0)), LogIndex(3));
        assert_eq!(log.first_index_of_term(LogIndex(5), LogIndex(4)), LogIndex(4));
        assert!(log.matches(LogIndex(2), Term(1)));
        log.check();
    }

    #[test]
    fn a_log_recovers_from_term_runs_and_its_newest_entries() {
        let runs = vec![(LogIndex(11), Term(2)), (LogIndex(15), Term(4))];
        let log = Log::recover(
            SnapshotMeta { index: LogIndex(10), term: Term(1) },
            runs.clone(),
            commands(16, &[4, 4]),
        )
        .unwrap();
        assert_eq!(
            (log.last_index(), log.last_term(), log.cached_from()),
            (LogIndex(17), Term(4), LogIndex(16))
        );
        assert_eq!(log.term_at(LogIndex(14)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(15)), Some(Term(4)));
        log.check();
        // Runs that disagree with the entries, or do not start after the snapshot, are refused.
        let base = SnapshotMeta { index: LogIndex(10), term: Term(1) };
        assert!(Log::recover(base, runs.clone(), commands(16, &[3, 3])).is_err());
        assert!(Log::recover(base, vec![(LogIndex(12), Term(2))], commands(16, &[2])).is_err());
        assert!(Log::recover(base, runs.clone(), Vec::new()).is_err(), "the newest entry is always held");
        let past_the_end = vec![(LogIndex(11), Term(2)), (LogIndex(18), Term(4))];
        assert!(Log::recover(base, past_the_end, commands(16, &[2, 2])).is_err(), "a run with no entry");
    }

    #[test]
    fn truncation_and_compaction_keep_runs_exact() {
        let mut log =
            Log::recover(SnapshotMeta::default(), Vec::new(), commands(1, &[1, 1, 2, 2, 3])).unwrap();
        log.truncate_from(LogIndex(4));
        assert_eq!((log.last_index(), log.last_term()), (LogIndex(3), Term(2)));
        log.append(&commands(4, &[5]));
        log.compact(SnapshotMeta { index: LogIndex(2), term: Term(1) });
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(2)), Some(Term(1)), "the snapshot's own term");
        log.check();
        log.compact(SnapshotMeta { index: LogIndex(3), term: Term(2) });
        assert_eq!((log.first_index(), log.term_at(LogIndex(4))), (LogIndex(4), Some(Term(5))));
        log.check();
        log.compact(SnapshotMeta { index: LogIndex(4), term: Term(5) });
        assert_eq!((log.last_index(), log.last_term()), (LogIndex(4), Term(5)));
        log.check();
    }
}
