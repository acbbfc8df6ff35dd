//! The in-memory Raft log: entries from index 1, and how far of it the driver has made durable.
//!
//! Invariants (asserted by `check`): entry `k` sits at position `k - 1`; terms never decrease
//! along the log; `persisted <= last_index`.

use crate::types::{Entry, LogIndex, Term};

#[derive(Debug, Default)]
pub struct Log {
    entries: Vec<Entry>,
    /// Every entry up to here is durable, as reported by the driver (`Event::LogPersisted`).
    persisted: LogIndex,
}

/// Why a recovered log was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogError {
    /// The entry at this position does not carry the index it should.
    Gap {
        /// The entry's position in the recovered list, from 0.
        position: u64,
        /// The index it carries instead of `position + 1`.
        index: LogIndex,
    },
    /// The term drops here, which no valid Raft log does.
    TermDecreases {
        /// The first entry whose term is below its predecessor's.
        index: LogIndex,
    },
}

impl Log {
    /// A log recovered from durable storage; all of it counts as persisted.
    pub fn recover(entries: Vec<Entry>) -> Result<Log, LogError> {
        let mut last_term = Term::ZERO;
        for (position, entry) in entries.iter().enumerate() {
            if entry.index != LogIndex(position as u64 + 1) {
                return Err(LogError::Gap { position: position as u64, index: entry.index });
            }
            if entry.term < last_term {
                return Err(LogError::TermDecreases { index: entry.index });
            }
            last_term = entry.term;
        }
        let persisted = LogIndex(entries.len() as u64);
        Ok(Log { entries, persisted })
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.last().map_or(Term::ZERO, |entry| entry.term)
    }

    pub fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// The term of the entry at `index`; index 0 has term 0; `None` past the end.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == LogIndex::ZERO {
            return Some(Term::ZERO);
        }
        self.entries.get(index.0 as usize - 1).map(|entry| entry.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index == LogIndex::ZERO {
            return None;
        }
        self.entries.get(index.0 as usize - 1)
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
    /// (the first entry is always included so an oversized one still moves).
    pub fn slice(&self, from: LogIndex, to: LogIndex, count_max: u32, bytes_max: u64) -> Vec<Entry> {
        debug_assert!(from >= LogIndex(1));
        let to = to.min(self.last_index());
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut index = from;
        while index <= to && out.len() < count_max as usize {
            let entry = &self.entries[index.0 as usize - 1];
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry.clone());
            index = index.next();
        }
        out
    }

    /// Entries `from..=to`, all of them.
    pub fn range(&self, from: LogIndex, to: LogIndex) -> Vec<Entry> {
        if from > to {
            return Vec::new();
        }
        self.entries[from.0 as usize - 1..to.0 as usize].to_vec()
    }

    /// Appends entries that continue the log exactly.
    pub fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            assert_eq!(entry.index, self.last_index().next(), "log append must be contiguous");
            assert!(entry.term >= self.last_term(), "log terms must not decrease");
            self.entries.push(entry.clone());
        }
    }

    /// Removes every entry at `from` and after.
    pub fn truncate_from(&mut self, from: LogIndex) {
        assert!(from >= LogIndex(1), "index 0 cannot be truncated");
        self.entries.truncate(from.0 as usize - 1);
        self.persisted = self.persisted.min(self.last_index());
    }

    /// The first of `entries` that the log does not already hold (missing or a different term),
    /// so a stale, shorter AppendEntries never truncates a longer matching log (§5.3).
    pub fn first_new(&self, entries: &[Entry]) -> Option<usize> {
        entries.iter().position(|entry| !self.matches(entry.index, entry.term))
    }

    /// The first index of the run of `term` that contains `index`, scanning back no further than
    /// `floor`: the follower's conflict hint (§5.3, "the follower can include the term of the
    /// conflicting entry and the first index it stores for that term").
    pub fn first_index_of_term(&self, index: LogIndex, floor: LogIndex) -> LogIndex {
        let term = self.term_at(index).expect("index within the log");
        let mut first = index;
        while first > floor.max(LogIndex(1)) && self.term_at(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// The last index holding `term`, if the log has any entry of that term.
    pub fn last_index_of_term(&self, term: Term, at_or_before: LogIndex) -> Option<LogIndex> {
        let mut index = at_or_before.min(self.last_index());
        while index > LogIndex::ZERO {
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
        let log = Log::recover(entries(&[1, 1, 1, 1])).unwrap();
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
        assert_eq!(Log::recover(bad).unwrap_err(), LogError::Gap { position: 2, index: LogIndex(4) });
        assert_eq!(
            Log::recover(entries(&[2, 1])).unwrap_err(),
            LogError::TermDecreases { index: LogIndex(2) }
        );
        let log = Log::recover(entries(&[1, 1, 2])).unwrap();
        assert_eq!((log.last_index(), log.last_term(), log.persisted()), (LogIndex(3), Term(2), LogIndex(3)));
    }

    #[test]
    fn up_to_date_compares_term_first_then_length() {
        let log = Log::recover(entries(&[1, 2, 2])).unwrap();
        assert!(log.is_up_to_date(LogIndex(1), Term(3)));
        assert!(log.is_up_to_date(LogIndex(3), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(2), Term(2)));
        assert!(!log.is_up_to_date(LogIndex(9), Term(1)));
    }

    #[test]
    fn first_new_skips_matching_prefix() {
        let log = Log::recover(entries(&[1, 1, 2])).unwrap();
        let incoming = entries(&[1, 1, 3, 3]);
        assert_eq!(log.first_new(&incoming[1..]), Some(1));
        assert_eq!(log.first_new(&incoming[..2]), None);
    }

    #[test]
    fn truncate_pulls_back_persisted_and_stale_reports_are_ignored() {
        let mut log = Log::recover(entries(&[1, 1, 2])).unwrap();
        log.truncate_from(LogIndex(2));
        assert_eq!((log.last_index(), log.persisted()), (LogIndex(1), LogIndex(1)));
        log.append(&[Entry { index: LogIndex(2), term: Term(3), payload: Payload::Noop }]);
        assert!(!log.mark_persisted(LogIndex(2), Term(1)), "report for a replaced entry");
        assert!(log.mark_persisted(LogIndex(2), Term(3)));
        log.check();
    }

    #[test]
    fn term_runs_for_conflict_hints() {
        let log = Log::recover(entries(&[1, 1, 2, 2, 2, 4])).unwrap();
        assert_eq!(log.first_index_of_term(LogIndex(5), LogIndex(0)), LogIndex(3));
        assert_eq!(log.first_index_of_term(LogIndex(5), LogIndex(4)), LogIndex(4));
        assert_eq!(log.last_index_of_term(Term(2), LogIndex(6)), Some(LogIndex(5)));
        assert_eq!(log.last_index_of_term(Term(3), LogIndex(6)), None);
    }

    #[test]
    fn slice_respects_count_and_bytes_but_always_moves_one() {
        let log = Log::recover(entries(&[1; 10])).unwrap();
        assert_eq!(log.slice(LogIndex(1), LogIndex(10), 3, u64::MAX).len(), 3);
        assert_eq!(log.slice(LogIndex(1), LogIndex(10), 100, 1).len(), 1);
        assert_eq!(log.slice(LogIndex(9), LogIndex(20), 100, u64::MAX).len(), 2);
    }
}
