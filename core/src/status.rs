//! What a node reports about itself: its role as a plain value and a status snapshot for
//! operators (`replog status`). Both serialize, so drivers pass them on without string keys.

use crate::types::{LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which role a node plays, without the role's data: what [`Node::role`](crate::Node::role)
/// and [`Status::role`] report. `Display` and serde both use its [`name`](RoleKind::name)
/// (`"pre-candidate"`, ...), the string [`Node::role_name`](crate::Node::role_name) gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleKind {
    /// Follows the leader of its term, if it knows one (§5.2).
    Follower,
    /// Asks whether it could win before raising its term (pre-vote, dissertation §9.6).
    PreCandidate,
    /// Raised its term, voted for itself and asks for votes (§5.2).
    Candidate,
    /// Won the election of its term (§5.2).
    Leader,
}

impl RoleKind {
    /// `"follower"`, `"pre-candidate"`, `"candidate"` or `"leader"`: the role in logs, traces
    /// and `replog status`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            RoleKind::Follower => "follower",
            RoleKind::PreCandidate => "pre-candidate",
            RoleKind::Candidate => "candidate",
            RoleKind::Leader => "leader",
        }
    }
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// What [`Node::status`](crate::Node::status) reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The node's id.
    pub id: NodeId,
    /// Its role now.
    pub role: RoleKind,
    /// Its current term.
    pub term: Term,
    /// The leader of the current term as far as it knows (itself, when leading).
    pub leader: Option<NodeId>,
    /// The highest index it knows committed.
    pub commit: LogIndex,
    /// The highest index handed to the state machine (`Action::Apply`).
    pub applied: LogIndex,
    /// The index of its last log entry.
    pub last_index: LogIndex,
    /// How far its log is durable, as reported by the driver.
    pub persisted: LogIndex,
    /// Replication progress per peer; filled on the leader only.
    pub peers: Vec<PeerStatus>,
    /// On a leader handing leadership over (§3.10): to whom.
    pub transferring_to: Option<NodeId>,
}

/// What the leader knows of one follower's replication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The follower.
    pub id: NodeId,
    /// The highest index known durably stored on it.
    pub match_index: LogIndex,
    /// The next index the leader will send it.
    pub next_index: LogIndex,
    /// Entries are streamed within the inflight window (not probing for the match point).
    pub replicating: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Answered within the last election timeout (unlike `recent_active`, not cleared by each
    /// check-quorum round): what "live" means for a membership change or a transfer target.
    #[serde(default)]
    pub answering: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Event, Node, Recovered};

    #[test]
    fn role_kind_names_match_display_and_serde() {
        let kinds = [RoleKind::Follower, RoleKind::PreCandidate, RoleKind::Candidate, RoleKind::Leader];
        let names = kinds.map(RoleKind::name);
        assert_eq!(names, ["follower", "pre-candidate", "candidate", "leader"]);
        for kind in kinds {
            assert_eq!(kind.to_string(), kind.name());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()), "status JSON shows the same string");
            assert_eq!(serde_json::from_str::<RoleKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn role_follows_the_campaign() {
        let config = Config::new(NodeId(1), vec![NodeId(2)]);
        let mut node = Node::new(config, Recovered::default()).unwrap();
        assert_eq!((node.role(), node.role_name()), (RoleKind::Follower, "follower"));
        let _ = node.step(Event::Campaign);
        assert_eq!((node.role(), node.status().role), (RoleKind::PreCandidate, RoleKind::PreCandidate));
    }
}
