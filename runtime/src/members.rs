//! Who is in the cluster: this node and its configured peers, fixed at start. A node's Raft id
//! is derived from its address, so every node knows every member's id from its flags and
//! membership needs no extra exchange.

use replog_core::NodeId;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// The Raft id of the node listening at `address`: FNV-1a of the address text, stable on every
/// machine and Rust version (std's hasher promises neither).
pub fn node_id(address: &SocketAddr) -> NodeId {
    NodeId(crate::fnv::of_bytes(address.to_string().as_bytes()))
}

/// This node and its peers, by id.
#[derive(Clone, Debug)]
pub struct Members {
    id: NodeId,
    address: SocketAddr,
    peers: BTreeMap<NodeId, SocketAddr>,
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

impl Members {
    /// The node at `address` with `peers`.
    pub fn new(address: SocketAddr, peers: &[SocketAddr]) -> Result<Members, MembersError> {
        let mut by_id = BTreeMap::new();
        for &peer in peers {
            if peer == address {
                return Err(MembersError::OwnAddress(peer));
            }
            if by_id.insert(node_id(&peer), peer).is_some() {
                return Err(MembersError::Duplicate(peer));
            }
        }
        Ok(Members { id: node_id(&address), address, peers: by_id })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's address: where peers and clients reach it.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The peers, in id order.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.peers.iter().map(|(&id, &address)| (id, address))
    }

    /// Whether `id` is one of the peers.
    pub fn is_peer(&self, id: NodeId) -> bool {
        self.peers.contains_key(&id)
    }

    /// The address of a member (this node included), if `id` is one.
    pub fn address_of(&self, id: NodeId) -> Option<SocketAddr> {
        if id == self.id {
            return Some(self.address);
        }
        self.peers.get(&id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn ids_are_fnv1a_of_the_address_text() {
        // Pinned: every node of a cluster must derive the same ids, across versions.
        assert_eq!(node_id(&address(8080)), NodeId(0x1cf0_caae_52b4_57cc));
        assert_ne!(node_id(&address(8080)), node_id(&address(8081)));
    }

    #[test]
    fn members_refuse_self_and_duplicates_and_resolve_addresses() {
        let me = address(1);
        assert_eq!(Members::new(me, &[address(2), me]).unwrap_err(), MembersError::OwnAddress(me));
        assert_eq!(
            Members::new(me, &[address(2), address(2)]).unwrap_err(),
            MembersError::Duplicate(address(2))
        );
        let members = Members::new(me, &[address(2), address(3)]).unwrap();
        assert_eq!(members.address_of(members.id()), Some(me));
        assert_eq!(members.address_of(node_id(&address(3))), Some(address(3)));
        assert_eq!(members.address_of(node_id(&address(4))), None);
        assert!(members.is_peer(node_id(&address(2))) && !members.is_peer(members.id()));
        assert_eq!(members.peers().count(), 2);
    }
}
