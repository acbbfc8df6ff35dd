//! Who is in the cluster, and how that changes: configurations carried in the log
//! (dissertation chapter 4).
//!
//! ## Single-server changes, not joint consensus
//!
//! A change adds or removes **one voter at a time** (dissertation §4.1). Any two majorities of
//! configurations that differ by one voter overlap, so the old and the new configuration can
//! never elect two leaders in one term or commit conflicting entries, and no intermediate joint
//! configuration is needed. Joint consensus (§4.3) buys arbitrary changes in one step at the
//! cost of a second log entry and a two-majority rule in every quorum; every workflow an
//! operator needs here (grow, shrink, replace a dead machine) is a sequence of single-server
//! steps, so we keep the simpler, more testable rule. Its two conditions:
//!
//! 1. **One change at a time.** A leader refuses a new change while the latest configuration
//!    in its log is not committed (§4.1).
//! 2. **The first-commit barrier.** A leader refuses a change until it has committed an entry
//!    of its own term (the no-op it appends on election). Without it, a change begun by a
//!    leader of an older term that never committed can be overwritten by a new leader's
//!    change, and the two configurations differ by two servers: Ongaro's 2015 single-server
//!    change bug (raft-dev, "bug in single-server membership changes").
//!
//! Each server uses the **latest configuration in its log, committed or not** (§4.1), from the
//! moment the entry is appended; a truncated configuration entry takes its configuration with
//! it. A leader that is not a voter of its latest configuration replicates but does not count
//! itself (§4.2.2), and steps down once that configuration commits.
//!
//! ## Learners (non-voters)
//!
//! A new server joins as a **learner** (§4.2.1, "catching up new servers"): it receives the log
//! but never votes, never campaigns and never counts in a quorum. A learner marked
//! [`MemberRole::Joining`] is promoted to voter by the leader once its log is within
//! `Config::promote_lag_entries_max` of the commit index, so adding a voter never makes the
//! cluster wait for a server that has the whole log still to copy.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a member does in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberRole {
    /// Votes, may lead, counts in every quorum.
    Voter,
    /// Receives the log and nothing more, until promoted by an operator.
    Learner,
    /// A learner the leader promotes to voter once it has caught up.
    Joining,
}

impl MemberRole {
    /// `"voter"`, `"learner"` or `"joining"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
            MemberRole::Joining => "joining",
        }
    }
}

impl fmt::Display for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// One member of a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Where the driver reaches it. The core never reads it; it only refuses two members with
    /// the same (non-empty) address.
    pub address: String,
    /// Voter or learner.
    pub role: MemberRole,
}

/// A configuration: every member by id, in id order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// The members.
    pub members: BTreeMap<NodeId, Member>,
}

/// One single-server change (§4.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MembershipChange {
    /// Add a new member as a learner; `promote`: as [`MemberRole::Joining`], made a voter by
    /// the leader once caught up.
    Add {
        /// Its id.
        id: NodeId,
        /// Its address.
        address: String,
        /// Promote it once caught up.
        promote: bool,
    },
    /// Make a learner a voter now.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Remove a member (voter or learner).
    Remove {
        /// The member.
        id: NodeId,
    },
}

/// Why a leader refused a membership change; nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeRefusal {
    /// The latest configuration is not committed yet: one change at a time (§4.1).
    Pending,
    /// The leader has not committed an entry of its term yet (the first-commit barrier).
    NotReady,
    /// The id is already a member.
    AlreadyMember(NodeId),
    /// Another member already has this address.
    AddressInUse(NodeId),
    /// No member has this id.
    UnknownMember(NodeId),
    /// The member is already a voter.
    AlreadyVoter(NodeId),
    /// Removing the only voter would leave nobody to decide anything.
    LastVoter,
    /// The learner does not hold the configuration that made it a member yet: as a voter it
    /// would know no configuration, and neither vote nor campaign. Refused unless forced.
    NotCaughtUp(NodeId),
    /// The new configuration would have fewer live voters than its quorum: the cluster could
    /// not commit after the change. Refused unless forced.
    Unsafe {
        /// Voters of the new configuration heard from within an election timeout.
        live: u32,
        /// Its quorum.
        needed: u32,
    },
}

impl fmt::Display for ChangeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangeRefusal::Pending => write!(f, "another membership change is not committed yet; retry"),
            ChangeRefusal::NotReady => {
                write!(f, "the new leader has not committed an entry of its term yet; retry")
            }
            ChangeRefusal::AlreadyMember(id) => write!(f, "{id} is already a member"),
            ChangeRefusal::AddressInUse(id) => write!(f, "the address is already used by member {id}"),
            ChangeRefusal::UnknownMember(id) => write!(f, "{id} is not a member"),
            ChangeRefusal::AlreadyVoter(id) => write!(f, "{id} is already a voter"),
            ChangeRefusal::LastVoter => write!(f, "cannot remove the last voter"),
            ChangeRefusal::NotCaughtUp(id) => {
                write!(f, "{id} has not received the configuration that added it yet; retry")
            }
            ChangeRefusal::Unsafe { live, needed } => write!(
                f,
                "after the change only {live} voter(s) would be reachable and {needed} are needed to commit \
                 (use --force to change anyway)"
            ),
        }
    }
}

impl Membership {
    /// A configuration of voters only, with no addresses (tests, and bootstraps whose driver
    /// keeps addresses elsewhere).
    #[must_use]
    pub fn voters_only(ids: impl IntoIterator<Item = NodeId>) -> Membership {
        let members =
            ids.into_iter().map(|id| (id, Member { address: String::new(), role: MemberRole::Voter }));
        Membership { members: members.collect() }
    }

    /// Whether `id` votes in this configuration.
    #[must_use]
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|member| member.role == MemberRole::Voter)
    }

    /// Whether `id` is a member at all (voter or learner).
    #[must_use]
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// The voters, in id order.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().filter(|(_, member)| member.role == MemberRole::Voter).map(|(&id, _)| id)
    }

    /// How many voters.
    #[must_use]
    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }

    /// Every member but `id`, in id order: whom a leader replicates to.
    pub fn others(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.members.keys().copied().filter(move |&member| member != id)
    }

    /// The configuration after `change`, or why the change makes no sense here. (Whether it is
    /// safe and allowed now is the leader's to decide.)
    pub fn apply(&self, change: &MembershipChange) -> Result<Membership, ChangeRefusal> {
        let mut next = self.clone();
        match change {
            MembershipChange::Add { id, address, promote } => {
                if self.contains(*id) {
                    return Err(ChangeRefusal::AlreadyMember(*id));
                }
                if let Some((&holder, _)) =
                    self.members.iter().find(|(_, member)| !address.is_empty() && member.address == *address)
                {
                    return Err(ChangeRefusal::AddressInUse(holder));
                }
                let role = if *promote { MemberRole::Joining } else { MemberRole::Learner };
                next.members.insert(*id, Member { address: address.clone(), role });
            }
            MembershipChange::Promote { id } => match next.members.get_mut(id) {
                None => return Err(ChangeRefusal::UnknownMember(*id)),
                Some(member) if member.role == MemberRole::Voter => {
                    return Err(ChangeRefusal::AlreadyVoter(*id))
                }
                Some(member) => member.role = MemberRole::Voter,
            },
            MembershipChange::Remove { id } => {
                if next.members.remove(id).is_none() {
                    return Err(ChangeRefusal::UnknownMember(*id));
                }
                if next.voter_count() == 0 {
                    return Err(ChangeRefusal::LastVoter);
                }
            }
        }
        debug_assert!(
            self.voters().filter(|&id| !next.is_voter(id)).count()
                + next.voters().filter(|&id| !self.is_voter(id)).count()
                <= 1,
            "a single-server change moves one voter at most"
        );
        Ok(next)
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        write!(f, "{{")?;
        for (id, member) in &self.members {
            if !first {
                write!(f, " ")?;
            }
            first = false;
            match member.role {
                MemberRole::Voter => write!(f, "{id}")?,
                MemberRole::Learner => write!(f, "{id}/learner")?,
                MemberRole::Joining => write!(f, "{id}/joining")?,
            }
        }
        write!(f, "}}")
    }
}

/// The configurations a node's log holds: the one in force at the log's start (from the
/// snapshot, or the bootstrap) and every configuration entry after it, in log order. The
/// latest is the one in force (§4.1).
#[derive(Clone, Debug, Default)]
pub(crate) struct Configurations {
    base: Membership,
    /// `base` is held by a snapshot (or came from one); false while it is only the bootstrap
    /// every node was started with.
    base_recorded: bool,
    entries: Vec<(crate::types::LogIndex, Membership)>,
}

impl Configurations {
    pub fn new(
        base: Membership,
        base_recorded: bool,
        entries: Vec<(crate::types::LogIndex, Membership)>,
    ) -> Configurations {
        debug_assert!(entries.windows(2).all(|pair| pair[0].0 < pair[1].0));
        Configurations { base, base_recorded, entries }
    }

    /// The configuration in force is only the bootstrap's: no log entry or snapshot holds it.
    pub fn only_bootstrapped(&self) -> bool {
        self.entries.is_empty() && !self.base_recorded
    }

    /// The configuration in force: the latest in the log, committed or not.
    pub fn latest(&self) -> &Membership {
        self.entries.last().map_or(&self.base, |(_, membership)| membership)
    }

    /// The index of the latest configuration entry; 0 if the configuration in force predates
    /// the log (bootstrap or snapshot).
    pub fn latest_index(&self) -> crate::types::LogIndex {
        self.entries.last().map_or(crate::types::LogIndex::ZERO, |&(index, _)| index)
    }

    /// The configuration in force once the log ends at `index`.
    pub fn at(&self, index: crate::types::LogIndex) -> &Membership {
        self.entries
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map_or(&self.base, |(_, membership)| membership)
    }

    /// A configuration entry was appended at `index`.
    pub fn appended(&mut self, index: crate::types::LogIndex, membership: Membership) {
        debug_assert!(self.entries.last().is_none_or(|&(last, _)| last < index));
        self.entries.push((index, membership));
    }

    /// The log lost every entry from `from` on: their configurations go with them.
    pub fn truncated(&mut self, from: crate::types::LogIndex) {
        self.entries.retain(|&(index, _)| index < from);
    }

    /// The log now starts after `index` (a compaction): the configuration in force there
    /// becomes the base.
    pub fn compacted(&mut self, index: crate::types::LogIndex) {
        self.base = self.at(index).clone();
        self.base_recorded = true;
        self.entries.retain(|&(at, _)| at > index);
    }

    /// A snapshot replaced the log through `index`; entries after it are kept only if the log
    /// kept them (`log_kept`).
    pub fn installed(&mut self, index: crate::types::LogIndex, membership: Membership, log_kept: bool) {
        self.base = membership;
        self.base_recorded = true;
        if log_kept {
            self.entries.retain(|&(at, _)| at > index);
        } else {
            self.entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogIndex;

    fn three() -> Membership {
        Membership::voters_only([NodeId(1), NodeId(2), NodeId(3)])
    }

    #[test]
    fn changes_are_single_server_and_checked() {
        let add = MembershipChange::Add { id: NodeId(4), address: "a4".into(), promote: true };
        let four = three().apply(&add).unwrap();
        assert_eq!(four.voter_count(), 3, "a new member starts as a learner");
        assert_eq!(four.members[&NodeId(4)].role, MemberRole::Joining);
        assert_eq!(four.apply(&add), Err(ChangeRefusal::AlreadyMember(NodeId(4))));
        let same_address = MembershipChange::Add { id: NodeId(5), address: "a4".into(), promote: false };
        assert_eq!(four.apply(&same_address), Err(ChangeRefusal::AddressInUse(NodeId(4))));
        let promoted = four.apply(&MembershipChange::Promote { id: NodeId(4) }).unwrap();
        assert!(promoted.is_voter(NodeId(4)));
        assert_eq!(
            promoted.apply(&MembershipChange::Promote { id: NodeId(4) }),
            Err(ChangeRefusal::AlreadyVoter(NodeId(4)))
        );
        assert_eq!(
            promoted.apply(&MembershipChange::Promote { id: NodeId(9) }),
            Err(ChangeRefusal::UnknownMember(NodeId(9)))
        );
        let one = Membership::voters_only([NodeId(1)]);
        assert_eq!(one.apply(&MembershipChange::Remove { id: NodeId(1) }), Err(ChangeRefusal::LastVoter));
        assert_eq!(
            one.apply(&MembershipChange::Remove { id: NodeId(2) }),
            Err(ChangeRefusal::UnknownMember(NodeId(2)))
        );
    }

    #[test]
    fn latest_configuration_follows_the_log() {
        let mut configs = Configurations::new(three(), false, Vec::new());
        assert!(configs.only_bootstrapped());
        let four = three()
            .apply(&MembershipChange::Add { id: NodeId(4), address: String::new(), promote: false })
            .unwrap();
        let two = three().apply(&MembershipChange::Remove { id: NodeId(3) }).unwrap();
        configs.appended(LogIndex(5), four.clone());
        configs.appended(LogIndex(9), two.clone());
        assert_eq!(configs.latest(), &two);
        assert_eq!(configs.at(LogIndex(4)), &three());
        assert_eq!(configs.at(LogIndex(8)), &four);
        configs.truncated(LogIndex(9));
        assert_eq!(configs.latest(), &four, "a truncated entry takes its configuration with it");
        configs.compacted(LogIndex(6));
        assert_eq!((configs.latest(), configs.latest_index()), (&four, LogIndex::ZERO));
        configs.appended(LogIndex(10), two.clone());
        configs.installed(LogIndex(12), three(), false);
        assert_eq!(configs.latest(), &three());
    }
}
