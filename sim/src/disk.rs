//! A node's simulated disk: writes sit in a volatile buffer until synced. A crash keeps the
//! synced part, plus any prefix of the unsynced writes (the OS may have flushed some), and the
//! first write it loses may be torn: part of an append's entries reach the platter.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use replog_core::{Action, Entry, HardState, LogIndex, Recovered};

#[derive(Debug, Default)]
pub struct Disk {
    hard_state: HardState,
    log: Vec<Entry>,
    /// Storage actions not yet durable, in order.
    pending: Vec<Action>,
}

/// What a crash did to the unsynced writes.
#[derive(Debug, PartialEq, Eq)]
pub struct CrashLoss {
    pub kept: usize,
    pub lost: usize,
    pub torn: bool,
}

impl Disk {
    pub fn write(&mut self, action: Action) {
        debug_assert!(matches!(
            action,
            Action::SaveHardState(_) | Action::TruncateLog { .. } | Action::AppendLog { .. }
        ));
        self.pending.push(action);
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Makes every pending write durable. Returns the durable commit before and after.
    pub fn sync(&mut self) -> (LogIndex, LogIndex) {
        let before = self.hard_state.commit;
        for action in std::mem::take(&mut self.pending) {
            self.apply(action);
        }
        (before, self.hard_state.commit)
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::SaveHardState(hard_state) => self.hard_state = hard_state,
            Action::TruncateLog { from } => self.log.truncate(from.0 as usize - 1),
            Action::AppendLog { entries } => self.log.extend(entries),
            _ => unreachable!("not a storage action"),
        }
    }

    /// Loses the unsynced writes, except a random prefix; the first lost one may be torn.
    pub fn crash(&mut self, rng: &mut ChaCha8Rng, torn_rate: f64) -> CrashLoss {
        let pending = std::mem::take(&mut self.pending);
        let kept = rng.random_range(0..=pending.len());
        let lost = pending.len() - kept;
        let mut rest = pending.into_iter();
        for action in rest.by_ref().take(kept) {
            self.apply(action);
        }
        let mut torn = false;
        if let Some(Action::AppendLog { entries }) = rest.next() {
            if entries.len() > 1 && torn_rate > 0.0 && rng.random_bool(torn_rate) {
                // Whole records before the tear survive; the torn record is cut at recovery.
                let survive = rng.random_range(1..entries.len());
                self.log.extend(entries.into_iter().take(survive));
                torn = true;
            }
        }
        CrashLoss { kept, lost, torn }
    }

    pub fn recover(&self) -> Recovered {
        Recovered { hard_state: self.hard_state, entries: self.log.clone(), applied: LogIndex::ZERO }
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn log(&self) -> &[Entry] {
        &self.log
    }

    pub fn last(&self) -> Option<&Entry> {
        self.log.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use replog_core::{Payload, Term};

    fn entries(from: u64, count: u64) -> Vec<Entry> {
        (from..from + count)
            .map(|i| Entry { index: LogIndex(i), term: Term(1), payload: Payload::Noop })
            .collect()
    }

    #[test]
    fn sync_makes_writes_durable_and_crash_keeps_a_prefix() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let mut disk = Disk::default();
            disk.write(Action::AppendLog { entries: entries(1, 2) });
            disk.sync();
            disk.write(Action::AppendLog { entries: entries(3, 3) });
            disk.write(Action::AppendLog { entries: entries(6, 1) });
            let loss = disk.crash(&mut rng, 1.0);
            assert_eq!(loss.kept + loss.lost, 2);
            let len = disk.log().len();
            assert!(len >= 2, "synced entries survive");
            for (i, entry) in disk.log().iter().enumerate() {
                assert_eq!(entry.index, LogIndex(i as u64 + 1), "a prefix, never a hole");
            }
        }
    }
}
