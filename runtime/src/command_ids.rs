//! Command IDs: the number `query` shows as `ID:`, a command's position among client commands
//! since the log began. An entry holds no command (a no-op, a configuration), one (a plain
//! append or a session's single command) or several (a session's batch), so an entry's first
//! ID is the commands a snapshot covers plus those of the entries between it and the snapshot.
//! Only the entries that do not hold exactly one command are remembered, with a running sum,
//! so every lookup is a binary search.

use replog_core::{Entry, LogIndex};

/// The IDs of the log after a snapshot.
#[derive(Clone, Debug, Default)]
pub(crate) struct CommandIds {
    /// The snapshot's last index.
    base: LogIndex,
    /// The commands the snapshot covers.
    base_commands: u64,
    /// Entries after the snapshot holding other than one command: (index, commands, the sum of
    /// `commands - 1` over this entry and those before it), ascending.
    uneven: Vec<(LogIndex, u64, i64)>,
}

impl CommandIds {
    /// The IDs after a snapshot through `base` covering `base_commands` commands, whose log
    /// holds no command in the entries `noops` and several in `batches` (index, how many).
    pub(crate) fn new(
        base: LogIndex,
        base_commands: u64,
        noops: &[LogIndex],
        batches: &[(LogIndex, u64)],
    ) -> CommandIds {
        let mut uneven: Vec<(LogIndex, u64)> = noops.iter().map(|&index| (index, 0)).collect();
        uneven.extend(batches.iter().copied());
        uneven.sort_unstable();
        let mut ids = CommandIds { base, base_commands, uneven: Vec::with_capacity(uneven.len()) };
        for (index, count) in uneven.into_iter().filter(|&(index, _)| index > base) {
            ids.push(index, count);
        }
        ids
    }

    fn push(&mut self, index: LogIndex, count: u64) {
        debug_assert!(self.uneven.last().is_none_or(|&(last, _, _)| last < index), "entries ascend");
        let before = self.uneven.last().map_or(0, |&(_, _, sum)| sum);
        self.uneven.push((index, count, before + count as i64 - 1));
    }

    /// The sum of `commands - 1` over the remembered entries before `index`.
    fn excess_before(&self, index: LogIndex) -> i64 {
        let at = self.uneven.partition_point(|&(uneven, _, _)| uneven < index);
        at.checked_sub(1).map_or(0, |k| self.uneven[k].2)
    }

    /// The commands a snapshot covers: IDs up to this one were trimmed.
    pub(crate) fn base_commands(&self) -> u64 {
        self.base_commands
    }

    /// The ID of the first command of entry `index` (after the snapshot); for an entry with no
    /// command, the ID the next command gets.
    pub(crate) fn first_id(&self, index: LogIndex) -> u64 {
        debug_assert!(index > self.base, "no ID for an entry a snapshot covers");
        let before = (index.0 - self.base.0 - 1) as i64 + self.excess_before(index);
        self.base_commands + 1 + u64::try_from(before).expect("an entry holds at least no command")
    }

    /// The index of the entry holding command `id`: `last.next()` if it is past the log's last
    /// entry `last`, the snapshot's index if it was trimmed.
    pub(crate) fn index_of(&self, id: u64, last: LogIndex) -> LogIndex {
        if id <= self.base_commands {
            return self.base;
        }
        // The first entry whose successor's first ID is past `id` holds it.
        let (mut low, mut high) = (self.base.0 + 1, last.0 + 1);
        while low < high {
            let mid = low + (high - low) / 2;
            if self.first_id(LogIndex(mid + 1)) > id {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        LogIndex(low)
    }

    /// Entries appended at the end of the log.
    pub(crate) fn appended(&mut self, entries: &[Entry]) {
        for entry in entries {
            let count = entry.payload.commands().len() as u64;
            if count != 1 {
                self.push(entry.index, count);
            }
        }
    }

    /// The log lost its entries from `from` on.
    pub(crate) fn truncated(&mut self, from: LogIndex) {
        let keep = self.uneven.partition_point(|&(index, _, _)| index < from);
        self.uneven.truncate(keep);
    }

    /// A snapshot through `through` now covers `commands` commands; the log may also have been
    /// cut back to `last` (a snapshot installed over a log that did not hold its last entry).
    pub(crate) fn compacted(&mut self, through: LogIndex, commands: u64, last: LogIndex) {
        let kept: Vec<(LogIndex, u64)> = self
            .uneven
            .iter()
            .filter(|&&(index, _, _)| index > through && index <= last)
            .map(|&(index, count, _)| (index, count))
            .collect();
        *self = CommandIds { base: through, base_commands: commands, uneven: Vec::new() };
        for (index, count) in kept {
            self.push(index, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_core::{Bytes, ClientId, ClientRequest, Payload, Term};

    fn entry(index: u64, commands: usize) -> Entry {
        let payload = match commands {
            0 => Payload::Noop,
            1 => Payload::Command(Bytes::from("x")),
            n => Payload::Request(ClientRequest {
                client: ClientId(1),
                seq: index,
                commands: (0..n).map(|_| Bytes::from("y")).collect(),
            }),
        };
        Entry { index: LogIndex(index), term: Term(1), payload }
    }

    #[test]
    fn ids_count_commands_across_noops_batches_truncation_and_compaction() {
        let mut ids = CommandIds::new(LogIndex(10), 7, &[], &[]);
        // Entries 11..=16 hold 0, 1, 3, 1, 0, 2 commands: IDs 8, 9-11, 12, 13-14.
        let counts = [0, 1, 3, 1, 0, 2];
        let entries: Vec<Entry> = counts.iter().enumerate().map(|(i, &n)| entry(11 + i as u64, n)).collect();
        ids.appended(&entries);
        let firsts: Vec<u64> = (11..=17).map(|i| ids.first_id(LogIndex(i))).collect();
        assert_eq!(firsts, vec![8, 8, 9, 12, 13, 13, 15]);
        let last = LogIndex(16);
        let holders: Vec<u64> = (6..=15).map(|id| ids.index_of(id, last).0).collect();
        assert_eq!(holders, vec![10, 10, 12, 13, 13, 13, 14, 16, 16, 17]);
        ids.truncated(LogIndex(13));
        assert_eq!(ids.first_id(LogIndex(13)), 9);
        ids.appended(&[entry(13, 2)]);
        assert_eq!(ids.first_id(LogIndex(14)), 11);
        ids.compacted(LogIndex(12), 8, LogIndex(13));
        assert_eq!((ids.first_id(LogIndex(13)), ids.first_id(LogIndex(14))), (9, 11));
        // The same from what recovery reports.
        let recovered = CommandIds::new(LogIndex(10), 7, &[LogIndex(11)], &[(LogIndex(13), 2)]);
        assert_eq!(recovered.first_id(LogIndex(14)), 11);
    }
}
