//! When a node snapshots its state and trims its log: the operator's retention policy
//! (`start --retain-entries N --retain-bytes B`), decided from what the node has applied.
//!
//! A node keeps at least the newest `N` applied entries and at least the newest `B` bytes of
//! them (whichever keeps more), so followers that lag by less than that catch up from the log
//! rather than by a snapshot. It trims in steps: only once the entries it could drop reach a
//! quarter of those it keeps (at least one), so a busy node does not snapshot after every append.
//! Committed entries are never a problem to drop (a lagging follower gets the snapshot);
//! uncommitted ones are never dropped (the point is at most the applied index).

use replog_core::LogIndex;

/// The operator's retention settings; `None` keeps everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at least this many of the newest applied entries.
    pub entries: Option<u64>,
    /// Keep at least this many bytes (`Entry::size_bytes`) of the newest applied entries.
    pub bytes: Option<u64>,
}

impl Retention {
    /// Whether any trimming is configured.
    pub fn trims(&self) -> bool {
        self.entries.is_some() || self.bytes.is_some()
    }

    /// As [`Retention::point`] for a policy by count alone, from the snapshot's index and the
    /// applied index: nothing needs reading.
    pub fn point_by_count(&self, base: LogIndex, applied: LogIndex) -> Option<LogIndex> {
        let keep = self.entries?;
        let held = applied.0.saturating_sub(base.0);
        let drop = held.saturating_sub(keep);
        let kept = held - drop;
        (drop > 0 && drop >= (kept / 4).max(1)).then(|| base.plus(drop))
    }

    /// The index to snapshot and trim through, if it is time: `held` are the applied entries
    /// the log still holds (after the last snapshot, up to the applied index), oldest first, as
    /// (index, `Entry::size_bytes`).
    pub fn point(&self, held: &[(LogIndex, u64)]) -> Option<LogIndex> {
        if !self.trims() || held.is_empty() {
            return None;
        }
        // How many of the oldest entries each limit lets go.
        let by_count = match self.entries {
            Some(keep) => held.len().saturating_sub(keep as usize),
            None => held.len(),
        };
        let by_bytes = match self.bytes {
            Some(keep) => {
                let mut kept = 0u64;
                let newest_kept = held.iter().rev().take_while(|&&(_, size)| {
                    let take = kept < keep;
                    kept += size;
                    take
                });
                held.len() - newest_kept.count()
            }
            None => held.len(),
        };
        let drop = by_count.min(by_bytes);
        let kept = held.len() - drop;
        if drop == 0 || drop < (kept / 4).max(1) {
            return None;
        }
        Some(held[drop - 1].0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries `from..from + count` of `bytes`-byte commands (24 bytes of overhead each).
    fn held(from: u64, count: u64, bytes: u64) -> Vec<(LogIndex, u64)> {
        (from..from + count).map(|index| (LogIndex(index), 24 + bytes)).collect()
    }

    #[test]
    fn keeps_the_newest_entries_and_trims_in_steps() {
        let policy = Retention { entries: Some(100), bytes: None };
        assert_eq!(policy.point(&held(1, 100, 10)), None, "nothing beyond the window");
        assert_eq!(policy.point(&held(1, 124, 10)), None, "less than a quarter beyond");
        assert_eq!(policy.point(&held(1, 125, 10)), Some(LogIndex(25)));
        assert_eq!(policy.point(&held(26, 125, 10)), Some(LogIndex(50)), "indexes, not positions");
        assert_eq!(Retention::default().point(&held(1, 1000, 10)), None, "no policy, no trim");
        // The same decisions without reading the entries.
        for (from, count) in [(1, 100), (1, 124), (1, 125), (26, 125)] {
            let (base, applied) = (LogIndex(from - 1), LogIndex(from + count - 1));
            assert_eq!(policy.point_by_count(base, applied), policy.point(&held(from, count, 10)));
        }
    }

    #[test]
    fn a_byte_window_keeps_enough_newest_entries_to_cover_it() {
        // Each entry counts 24 + 76 = 100 bytes.
        let policy = Retention { entries: None, bytes: Some(1000) };
        assert_eq!(policy.point(&held(1, 12, 76)), Some(LogIndex(2)), "ten kept cover 1000 bytes");
        // With both limits, whichever keeps more wins.
        let both = Retention { entries: Some(4), bytes: Some(1000) };
        assert_eq!(both.point(&held(1, 12, 76)), Some(LogIndex(2)), "the byte window keeps ten");
        assert_eq!(both.point(&held(1, 11, 76)), None, "one beyond ten kept: less than a step");
    }
}
