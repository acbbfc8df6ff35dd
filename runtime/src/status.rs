//! The node's status report: built by the server, sent to clients as JSON, and read back typed
//! by `replog status`, the benchmark (to find the leader) and the end-to-end tests.

use replog_core::{LogIndex, RoleKind, Term};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// What a node reports about itself (`replog status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node's name (`-i`).
    pub name: String,
    /// Its address, which is also its identity in the cluster.
    pub address: SocketAddr,
    /// Its role now.
    pub role: RoleKind,
    /// Its current term.
    pub term: Term,
    /// The leader's address, if it knows one (its own, when leading).
    pub leader: Option<SocketAddr>,
    /// The highest index it knows committed.
    pub commit: LogIndex,
    /// The index of its last log entry.
    pub last_index: LogIndex,
    /// How far its log is known durable on its own disk.
    pub durable_index: LogIndex,
    /// The first index its log still holds (one past its latest snapshot; 1 if none).
    #[serde(default)]
    pub first_index: LogIndex,
    /// The first command ID it still holds (earlier ones were trimmed).
    #[serde(default)]
    pub first_id: u64,
    /// Bytes of log entries it holds in memory (the rest are read from disk when needed).
    #[serde(default)]
    pub cached_bytes: u64,
    /// Every peer it has a link to, in address order.
    pub peers: Vec<PeerReport>,
    /// Its id (16 hex digits), drawn at its first start.
    #[serde(default)]
    pub id: String,
    /// The configuration in force as it sees it (the latest in its log), one row per member.
    #[serde(default)]
    pub members: Vec<MemberReport>,
    /// Whether that configuration is committed (`commit` has reached its entry).
    #[serde(default)]
    pub members_committed: bool,
}

/// One member of the configuration in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// Its id (16 hex digits).
    pub id: String,
    /// Its name, if it has called this node (a hello).
    pub name: Option<String>,
    /// Its address.
    pub address: String,
    /// `voter`, `learner` or `joining` (a learner promoted once caught up).
    pub role: String,
    /// On the leader: the highest index known stored on it (the leader's own last durable
    /// index for itself).
    pub match_index: Option<LogIndex>,
    /// On the leader: how many entries it is behind the leader's last index.
    pub lag: Option<u64>,
    /// This node's link to it is up (always true for itself).
    pub connected: bool,
}

/// One peer as the node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// The peer's address.
    pub address: SocketAddr,
    /// The name it gave in its hello, once it has called.
    pub name: Option<String>,
    /// This node's link to the peer is up.
    pub outbound_connected: bool,
    /// The peer's link to this node is up.
    pub inbound_connected: bool,
    /// Messages to the peer dropped while its link was down or full (Raft retransmits).
    pub messages_dropped: u64,
    /// The peer's replication progress; known on the leader only. Its fields sit beside the
    /// others in the JSON, absent when unknown (as the status has always shown them).
    #[serde(flatten)]
    pub replication: Option<Replication>,
}

/// What the leader knows of a follower's replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// The highest index known durably stored on it.
    pub match_index: LogIndex,
    /// The next index the leader will send it.
    pub next_index: LogIndex,
    /// Entries are streamed within the inflight window (not probing for the match point).
    pub replicating: bool,
}

impl StatusReport {
    /// The report as one line of JSON, keys in alphabetical order: the text `status --json`
    /// has always printed, whatever order the fields are declared in.
    pub fn to_json(&self) -> String {
        // A `serde_json::Value` keeps its keys sorted.
        serde_json::to_value(self).expect("a status report is plain data").to_string()
    }

    /// Reads a report written by [`StatusReport::to_json`].
    pub fn from_json(text: &str) -> Result<StatusReport, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        let peer = |port: u16, replication| PeerReport {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            name: (port == 8081).then(|| "node2".to_string()),
            outbound_connected: true,
            inbound_connected: port == 8081,
            messages_dropped: 1,
            replication,
        };
        StatusReport {
            name: "node1".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            role: RoleKind::Leader,
            term: Term(2),
            leader: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            commit: LogIndex(3),
            last_index: LogIndex(4),
            durable_index: LogIndex(4),
            first_index: LogIndex(1),
            first_id: 1,
            cached_bytes: 96,
            peers: vec![
                peer(
                    8081,
                    Some(Replication {
                        match_index: LogIndex(3),
                        next_index: LogIndex(5),
                        replicating: true,
                    }),
                ),
                peer(8082, None),
            ],
            id: "1cf0caae52b457cc".into(),
            members: vec![MemberReport {
                id: "1cf0caae52b457cc".into(),
                name: Some("node1".into()),
                address: "127.0.0.1:8080".into(),
                role: "voter".into(),
                match_index: Some(LogIndex(4)),
                lag: Some(0),
                connected: true,
            }],
            members_committed: true,
        }
    }

    #[test]
    fn json_is_the_text_status_has_always_shown_and_reads_back() {
        let json = report().to_json();
        assert_eq!(
            json,
            concat!(
                r#"{"address":"127.0.0.1:8080","cached_bytes":96,"commit":3,"durable_index":4,"#,
                r#""first_id":1,"first_index":1,"id":"1cf0caae52b457cc","last_index":4,"#,
                r#""leader":"127.0.0.1:8080","members":[{"address":"127.0.0.1:8080","connected":true,"#,
                r#""id":"1cf0caae52b457cc","lag":0,"match_index":4,"name":"node1","role":"voter"}],"#,
                r#""members_committed":true,"name":"node1","peers":[{"address":"127.0.0.1:8081","#,
                r#""inbound_connected":true,"match_index":3,"messages_dropped":1,"name":"node2","#,
                r#""next_index":5,"outbound_connected":true,"replicating":true},"#,
                r#"{"address":"127.0.0.1:8082","inbound_connected":false,"messages_dropped":1,"#,
                r#""name":null,"outbound_connected":true}],"role":"leader","term":2}"#
            )
        );
        assert_eq!(StatusReport::from_json(&json).unwrap(), report());
        // A report from a node that predates snapshots and membership changes still reads.
        let members_start = json.find(r#""members":"#).unwrap();
        let members_end = json.find(r#""name":"node1","peers""#).unwrap();
        let old = format!("{}{}", &json[..members_start], &json[members_end..])
            .replace(r#""cached_bytes":96,"#, "")
            .replace(r#""first_id":1,"first_index":1,"#, "")
            .replace(r#""id":"1cf0caae52b457cc","#, "");
        let read = StatusReport::from_json(&old).unwrap();
        assert_eq!((read.first_index, read.first_id, read.cached_bytes), (LogIndex(0), 0, 0));
        assert!(read.members.is_empty() && read.id.is_empty());
    }

    #[test]
    fn a_follower_without_a_leader_reads_back() {
        let mut follower = report();
        follower.role = RoleKind::PreCandidate;
        follower.leader = None;
        follower.peers.iter_mut().for_each(|peer| peer.replication = None);
        let json = follower.to_json();
        assert!(json.contains(r#""leader":null"#) && json.contains(r#""role":"pre-candidate""#), "{json}");
        assert_eq!(StatusReport::from_json(&json).unwrap(), follower);
    }
}
