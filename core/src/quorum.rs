//! Majority math, and nothing else (in the spirit of etcd's `quorum/`).

use crate::types::NodeId;
use std::collections::BTreeMap;

/// The smallest number of members that is a majority of `members` (§5.2: "a majority of the
/// servers in the full cluster").
#[must_use]
pub fn majority(members: usize) -> usize {
    debug_assert!(members > 0);
    members / 2 + 1
}

/// The largest value that `quorum` members have reached: sort descending and take the
/// quorum-th. With `values` the match indexes of every member and `quorum` a majority, this is
/// the highest index stored on a majority (§5.3).
pub fn quorum_value<T: Ord + Copy>(values: &mut [T], quorum: usize) -> T {
    assert!(quorum >= 1 && quorum <= values.len(), "a quorum of {quorum} from {} members", values.len());
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[quorum - 1]
}

/// What a candidate's tally says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A quorum granted.
    Won,
    /// Too many refused for a quorum to grant, whatever the rest answer.
    Lost,
    /// Still undecided.
    Pending,
}

/// A candidate's votes: each voter answers once, later answers from the same voter are
/// ignored (duplicated messages cannot count twice), and answers from non-voters never count.
#[derive(Clone, Debug, Default)]
pub struct VoteTally {
    voters: Vec<NodeId>,
    quorum: usize,
    answers: BTreeMap<NodeId, bool>,
}

impl VoteTally {
    /// An empty tally among `voters` that needs `quorum` votes.
    #[must_use]
    pub fn new(voters: Vec<NodeId>, quorum: usize) -> VoteTally {
        VoteTally { voters, quorum, answers: BTreeMap::new() }
    }

    /// Records `from`'s answer, unless it already answered or is no voter.
    pub fn record(&mut self, from: NodeId, granted: bool) {
        if self.voters.contains(&from) {
            self.answers.entry(from).or_insert(granted);
        }
    }

    /// How many granted.
    #[must_use]
    pub fn granted(&self) -> usize {
        self.answers.values().filter(|&&granted| granted).count()
    }

    /// Whether the election is won, lost or still open.
    #[must_use]
    pub fn result(&self) -> VoteResult {
        let granted = self.granted();
        let rejected = self.answers.len() - granted;
        let needed = self.quorum;
        if granted >= needed {
            VoteResult::Won
        } else if self.voters.len() - rejected < needed {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn majority_of_small_clusters() {
        assert_eq!([1, 2, 3, 4, 5, 6, 7].map(majority), [1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn tally_wins_loses_and_ignores_repeats() {
        let mut tally = VoteTally::new(ids(5), 3);
        tally.record(NodeId(1), true);
        tally.record(NodeId(2), true);
        tally.record(NodeId(2), true);
        assert_eq!(tally.result(), VoteResult::Pending);
        tally.record(NodeId(3), true);
        assert_eq!(tally.result(), VoteResult::Won);

        let mut tally = VoteTally::new(ids(3), 2);
        tally.record(NodeId(7), true);
        assert_eq!(tally.granted(), 0, "a non-voter's answer never counts");
        tally.record(NodeId(1), true);
        tally.record(NodeId(2), false);
        tally.record(NodeId(2), true);
        assert_eq!(tally.result(), VoteResult::Pending);
        tally.record(NodeId(3), false);
        assert_eq!(tally.result(), VoteResult::Lost);
    }

    fn ids(count: u64) -> Vec<NodeId> {
        (1..=count).map(NodeId).collect()
    }

    /// The naive definition: the largest v such that at least a majority of values are >= v.
    fn naive_majority_value(values: &[u64]) -> u64 {
        let need = values.len() / 2 + 1;
        let mut best = 0;
        for &candidate in values {
            if values.iter().filter(|&&v| v >= candidate).count() >= need {
                best = best.max(candidate);
            }
        }
        best
    }

    proptest! {
        #[test]
        fn majority_value_matches_naive(values in proptest::collection::vec(0u64..20, 1..9)) {
            let mut sorted = values.clone();
            prop_assert_eq!(quorum_value(&mut sorted, majority(values.len())), naive_majority_value(&values));
        }

        #[test]
        fn tally_matches_naive(members in 1usize..8, answers in proptest::collection::vec(any::<bool>(), 0..8)) {
            let answers = &answers[..answers.len().min(members)];
            let mut tally = VoteTally::new((0..members as u64).map(NodeId).collect(), majority(members));
            for (i, &granted) in answers.iter().enumerate() {
                tally.record(NodeId(i as u64), granted);
            }
            let yes = answers.iter().filter(|&&a| a).count();
            let no = answers.len() - yes;
            let expected = if 2 * yes > members {
                VoteResult::Won
            } else if 2 * (members - no) <= members {
                VoteResult::Lost
            } else {
                VoteResult::Pending
            };
            prop_assert_eq!(tally.result(), expected);
        }
    }
}
