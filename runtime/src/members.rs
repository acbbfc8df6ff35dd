//! Who is who: this node's id and address, and the address of every other node it knows of,
//! from the configurations in its log and from peers' hellos. Ids are drawn at random at a
//! node's first start and kept in its `metadata.json`; a folder of an older version keeps the
//! id it had, derived from its address (`legacy_id`).

use crate::storage::id_text;
use replog_core::{ChangeRefusal, MemberRole, Membership, MembershipChange, NodeId};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// The id a node of a version before random ids had: FNV-1a of its address text. Kept for
/// folders written then, so an upgraded cluster keeps its identities.
pub fn legacy_id(address: &SocketAddr) -> NodeId {
    NodeId(crate::fnv::of_bytes(address.to_string().as_bytes()))
}

/// This node and the other nodes it knows, by id.
#[derive(Clone, Debug)]
pub struct Members {
    id: NodeId,
    address: SocketAddr,
    known: BTreeMap<NodeId, SocketAddr>,
}

/// Why a list of peers makes no cluster.
#[derive(Debug, PartialEq, Eq)]
pub enum MembersError {
    /// The peers include this node's own address.
    OwnAddress(SocketAddr),
    /// An address is listed twice.
    Duplicate(SocketAddr),
}

impl fmt::Display for MembersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembersError::OwnAddress(address) => write!(f, "--peers lists this node's own address {address}"),
            MembersError::Duplicate(address) => write!(f, "--peers lists {address} twice"),
        }
    }
}

impl std::error::Error for MembersError {}

/// Checks a `--peers` list: distinct addresses, none of them this node's.
pub fn check_peers(address: SocketAddr, peers: &[SocketAddr]) -> Result<(), MembersError> {
    let mut seen = std::collections::BTreeSet::new();
    for &peer in peers {
        if peer == address {
            return Err(MembersError::OwnAddress(peer));
        }
        if !seen.insert(peer) {
            return Err(MembersError::Duplicate(peer));
        }
    }
    Ok(())
}

impl Members {
    /// The node `id` at `address`, knowing nobody else yet.
    pub fn new(id: NodeId, address: SocketAddr) -> Members {
        Members { id, address, known: BTreeMap::new() }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's address: where peers and clients reach it.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `id` is reached at `address`, as a configuration says (it wins over a hello). A node
    /// that came back with a new id at an old address leaves the old id pointing there too,
    /// harmlessly: messages for the old id are dropped by the new node.
    pub fn learn(&mut self, id: NodeId, address: SocketAddr) {
        if id != self.id {
            self.known.insert(id, address);
        }
    }

    /// `id` says in its hello that it is at `address`: believed for a node not known yet (a new
    /// node being added, a leader calling a node that has no configuration), never over what
    /// is known, so a hello cannot re-point a member.
    pub fn learn_from_hello(&mut self, id: NodeId, address: SocketAddr) {
        if id != self.id {
            self.known.entry(id).or_insert(address);
        }
    }

    /// Learns every member's address from a configuration (members without a parseable
    /// address are skipped).
    pub fn learn_all(&mut self, membership: &Membership) {
        for (&id, member) in &membership.members {
            if let Ok(address) = member.address.parse() {
                self.learn(id, address);
            }
        }
    }

    /// The address of a node (this one included), if known.
    pub fn address_of(&self, id: NodeId) -> Option<SocketAddr> {
        if id == self.id {
            return Some(self.address);
        }
        self.known.get(&id).copied()
    }

    /// The ids known at `address` (several if a node there came back under a new id), in id
    /// order.
    pub fn ids_at(&self, address: SocketAddr) -> impl Iterator<Item = NodeId> + '_ {
        self.known.iter().filter(move |(_, &at)| at == address).map(|(&id, _)| id)
    }

    /// Forgets the nodes `keep` refuses (callers that were never members, members that left).
    pub fn retain(&mut self, keep: impl Fn(NodeId) -> bool) {
        self.known.retain(|&id, _| keep(id));
    }

    /// Whether `id` is another node this one knows.
    pub fn is_peer(&self, id: NodeId) -> bool {
        self.known.contains_key(&id)
    }
}

/// `{address (id) role, ...}` for the log.
pub(crate) fn describe_membership(membership: &Membership) -> String {
    let members: Vec<String> = membership
        .members
        .iter()
        .map(|(&id, member)| match member.role {
            MemberRole::Voter => format!("{} ({})", member.address, id_text(id)),
            role => format!("{} ({}) {role}", member.address, id_text(id)),
        })
        .collect();
    format!("[{}]", members.join(", "))
}

pub(crate) fn describe_change(change: &MembershipChange, members: &Members) -> String {
    let at = |id: NodeId| members.address_of(id).map_or_else(|| id_text(id), |address| address.to_string());
    match change {
        MembershipChange::Add { id, address, promote: true } => format!("add {address} ({})", id_text(*id)),
        MembershipChange::Add { id, address, promote: false } => {
            format!("add {address} ({}) as a learner", id_text(*id))
        }
        MembershipChange::Promote { id } => format!("promote {}", at(*id)),
        MembershipChange::Remove { id } => format!("remove {}", at(*id)),
    }
}

/// A refusal in the operator's terms (members by address).
pub(crate) fn describe_refusal(refusal: ChangeRefusal, members: &Members) -> String {
    let at = |id: NodeId| members.address_of(id).map_or_else(|| id_text(id), |address| address.to_string());
    match refusal {
        ChangeRefusal::AlreadyMember(id) => format!("that node ({}) is already a member", id_text(id)),
        ChangeRefusal::AddressInUse(id) => {
            format!("the address is already used by member {} ({}): remove it first", at(id), id_text(id))
        }
        ChangeRefusal::UnknownMember(id) => format!("{} is not a member", at(id)),
        ChangeRefusal::AlreadyVoter(id) => format!("{} is already a voter", at(id)),
        ChangeRefusal::NotCaughtUp(id) => {
            format!("{} has not received the configuration that added it yet; retry", at(id))
        }
        refusal => refusal.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn legacy_ids_are_fnv1a_of_the_address_text() {
        // Pinned: folders of earlier versions keep these ids.
        assert_eq!(legacy_id(&address(8080)), NodeId(0x1cf0_caae_52b4_57cc));
        assert_ne!(legacy_id(&address(8080)), legacy_id(&address(8081)));
    }

    #[test]
    fn peers_lists_are_checked_and_addresses_learned() {
        let me = address(1);
        assert_eq!(check_peers(me, &[address(2), me]).unwrap_err(), MembersError::OwnAddress(me));
        assert_eq!(
            check_peers(me, &[address(2), address(2)]).unwrap_err(),
            MembersError::Duplicate(address(2))
        );
        let mut members = Members::new(NodeId(1), me);
        members.learn(NodeId(3), address(3));
        members.learn(NodeId(1), address(9));
        assert_eq!(members.address_of(NodeId(1)), Some(me), "this node's own address never changes");
        assert_eq!(members.address_of(NodeId(3)), Some(address(3)));
        assert!(members.is_peer(NodeId(3)) && !members.is_peer(NodeId(4)));
        members.learn_from_hello(NodeId(3), address(7));
        assert_eq!(members.address_of(NodeId(3)), Some(address(3)), "a hello re-points no one");
        let mut membership = Membership::voters_only([NodeId(5)]);
        membership.members.get_mut(&NodeId(5)).unwrap().address = address(5).to_string();
        members.learn_all(&membership);
        assert_eq!(members.address_of(NodeId(5)), Some(address(5)));
    }
}
