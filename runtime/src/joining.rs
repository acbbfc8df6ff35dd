//! How a node becomes a member: its random id, the bootstrap configuration of a new cluster
//! (from `-p`), and asking to be added to an existing one (`--join`).

use crate::codec::{MemberAction, MemberRequest};
use replog_core::{Membership, NodeId};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// A configuration of these voters.
pub(crate) fn voters_of(voters: &[(NodeId, SocketAddr)]) -> Membership {
    let mut membership = Membership::voters_only(voters.iter().map(|&(id, _)| id));
    for &(id, address) in voters {
        membership.members.get_mut(&id).expect("just added").address = address.to_string();
    }
    membership
}

/// A new node's id: random, so a node whose folder was wiped comes back as a new node and can
/// never vote twice in a term under its old identity.
pub(crate) fn fresh_id() -> NodeId {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return NodeId(id);
        }
    }
}

/// `start --join`: asks the cluster, in the background, to add this node; retries while the
/// cluster is busy with another change or electing a leader, for up to a minute.
pub(crate) fn spawn_joiner(join: SocketAddr, address: SocketAddr, id: NodeId, learner: bool) {
    let action = if learner { MemberAction::AddLearner } else { MemberAction::Add };
    let request = MemberRequest { action, address: address.to_string(), id, force: false };
    std::thread::spawn(move || {
        let started = Instant::now();
        loop {
            match crate::client::change_membership(&join.to_string(), &request, Duration::from_secs(10)) {
                Ok(index) => {
                    info!("joined the cluster through {join}: added at entry {index}");
                    return;
                }
                Err(error) if error.to_string().contains("already a member") => {
                    info!("already a member of the cluster of {join}");
                    return;
                }
                Err(error) if started.elapsed() < Duration::from_secs(60) => {
                    debug!("joining through {join}: {error}; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(error) => {
                    warn!("could not join through {join}: {error}; add this node by hand with `replog member add`");
                    return;
                }
            }
        }
    });
}

/// A new cluster's addresses as `-p` names them, with this node's own, sorted; empty without
/// `-p` (a node that bootstraps nothing from flags).
pub(crate) fn cluster_of(address: SocketAddr, peers: &[SocketAddr]) -> Vec<String> {
    if peers.is_empty() {
        return Vec::new();
    }
    let mut all: Vec<String> = peers.iter().chain([&address]).map(SocketAddr::to_string).collect();
    all.sort();
    all
}
