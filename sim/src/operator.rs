//! The operator: membership changes asked of the cluster (dissertation §4.1), as a script
//! around `replog members` would ask them. Each change is decided when it first reaches a node,
//! from the configuration that node holds (the operator lists the members first): add a spare,
//! promote or remove a learner, remove a voter or the leader. A follower's NotLeader, a refusal
//! worth retrying (a change pending, a new leader's barrier, a transfer, too few live voters)
//! and a lost or unanswered request are retried, the same change, a few times; an invalid change
//! is given up.
//!
//! Two rules keep the runs meaningful. A removed id is never added again: a removed server
//! returns only wiped, under a new id, and the simulator never wipes a disk. And voters are
//! removed only while at least three would remain: the checks after the heal crash the leader,
//! and the rest must still make a majority.

use crate::cluster::Cluster;
use crate::options::{Options, TICK};
use crate::schedule::{MemberKind, MemberOp, Target};
use crate::timeline::{SimEvent, Timeline};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use replog_core::{
    ChangeRefusal, Event, MemberRole, Membership, MembershipChange, NodeId, RejectReason, Reply, RequestId,
};
use std::collections::{BTreeMap, BTreeSet};

/// The operator gives up waiting for an answer after this many ticks, and retries.
const TIMEOUT_TICKS: u64 = 40;
/// Attempts per change, the first included.
const ATTEMPTS_MAX: u32 = 6;
/// Operator request ids start here, far from the clients'.
const REQUEST_BASE: u64 = 1 << 48;
/// Voters kept at least (see the module doc).
const VOTERS_MIN: usize = 3;

/// What the operator saw of its requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct OperatorStats {
    /// Requests sent (every attempt).
    pub requests: u64,
    /// Forced requests among them.
    pub forced: u64,
    /// Changes answered `Committed`.
    pub committed: u64,
    /// Answered NotLeader (the operator asked a follower, or a deposed leader).
    pub not_leader: u64,
    /// Refusals, by reason.
    pub refused_pending: u64,
    pub refused_not_ready: u64,
    pub refused_unsafe: u64,
    pub refused_transferring: u64,
    /// Already a member, unknown member, already a voter, address in use, last voter.
    pub refused_invalid: u64,
    /// No answer in time, or the leader lost office before the change committed.
    pub unanswered: u64,
}

struct Request {
    op: MemberOp,
    /// Decided when it first reaches a node.
    change: Option<MembershipChange>,
    attempt: u32,
}

pub(crate) struct Operator {
    requests: BTreeMap<RequestId, Request>,
    /// Changes that wait for the next election.
    armed: Vec<MemberOp>,
    /// Ids named in a removal: never added again.
    retired: BTreeSet<u64>,
    spares: std::ops::RangeInclusive<u64>,
    next: u64,
    /// The fault phase is over: nothing more is asked.
    stopped: bool,
    pub(crate) stats: OperatorStats,
}

impl Operator {
    pub(crate) fn new(options: &Options) -> Operator {
        Operator {
            requests: BTreeMap::new(),
            armed: Vec::new(),
            retired: BTreeSet::new(),
            spares: options.nodes + 1..=options.ids(),
            next: REQUEST_BASE,
            stopped: false,
            stats: OperatorStats::default(),
        }
    }

    /// Whether this reply answers one of the operator's requests.
    pub(crate) fn owns(&self, request: RequestId) -> bool {
        request.0 >= REQUEST_BASE
    }

    /// A `Fault::Member` falls due: sent now to the node it names, or held for the next
    /// election. Returns the node to step and the event, if it is sent now.
    pub(crate) fn on_fault(
        &mut self,
        op: MemberOp,
        cluster: &Cluster,
        rng: &mut ChaCha8Rng,
        t: &mut Timeline,
    ) -> Option<(usize, Event)> {
        if self.stopped {
            return None;
        }
        if op.on_election {
            self.armed.push(op);
            return None;
        }
        let node = self.resolve(op.to, cluster, rng)?;
        let request = self.open(Request { op, change: None, attempt: 1 });
        self.arrive(node, request, cluster, rng, t)
    }

    /// Node `node` just won an election: a held change is sent to it, within a round trip.
    pub(crate) fn on_elected(&mut self, node: usize, rng: &mut ChaCha8Rng, t: &mut Timeline) {
        if self.armed.is_empty() || self.stopped {
            return;
        }
        let op = self.armed.remove(0);
        let request = self.open(Request { op, change: None, attempt: 1 });
        t.schedule(rng.random_range(1..=TICK / 4), SimEvent::OperatorArrive { node, request });
    }

    /// Request `request` reaches node `node`: its change is decided now if it was not yet, and
    /// checked against the node's configuration. Returns the node and the event to step.
    pub(crate) fn arrive(
        &mut self,
        node: usize,
        request: RequestId,
        cluster: &Cluster,
        rng: &mut ChaCha8Rng,
        t: &mut Timeline,
    ) -> Option<(usize, Event)> {
        if self.stopped || !self.requests.contains_key(&request) {
            return None;
        }
        t.schedule(TIMEOUT_TICKS * TICK, SimEvent::OperatorTimeout { request });
        // A node that is down or paused loses the request; the operator times out.
        let core = cluster.node(node)?;
        let view = core.membership();
        let leader = core.leader();
        let state = self.requests.get_mut(&request).expect("open");
        let change = match &state.change {
            Some(change) => change.clone(),
            None => {
                let decided = decide(state.op.kind, view, leader, &self.retired, self.spares.clone(), rng);
                let Some(change) = decided else {
                    t.note(|| {
                        format!("operator: nothing to {} in {view} on n{}", state.op.kind.name(), node + 1)
                    });
                    self.requests.remove(&request);
                    return None;
                };
                state.change = Some(change.clone());
                change
            }
        };
        if let MembershipChange::Remove { id } = change {
            // Never below the minimum, judged by the configuration the node holds now.
            if view.is_voter(id) && view.voter_count() <= VOTERS_MIN {
                t.note(|| format!("operator: {request} would leave {view} too few voters; given up"));
                self.requests.remove(&request);
                return None;
            }
            self.retired.insert(id.0);
        }
        let force = state.op.force;
        self.stats.requests += 1;
        self.stats.forced += u64::from(force);
        t.note(|| {
            format!(
                "operator sends {request} {change:?}{} to n{}",
                if force { " (forced)" } else { "" },
                node + 1
            )
        });
        Some((node, Event::ChangeMembership { request, change, force }))
    }

    /// A node answered one of the operator's requests.
    pub(crate) fn on_reply(
        &mut self,
        reply: &Reply,
        cluster: &Cluster,
        rng: &mut ChaCha8Rng,
        t: &mut Timeline,
    ) {
        let Some(state) = self.requests.remove(&reply.request()) else {
            return; // answered after the operator gave up on it
        };
        t.note(|| format!("operator got {reply:?}"));
        let hint = match reply {
            Reply::Committed { .. } => {
                self.stats.committed += 1;
                return;
            }
            Reply::NotLeader { leader, .. } => {
                self.stats.not_leader += 1;
                leader.map(|leader| leader.0 as usize - 1)
            }
            Reply::Rejected { reason, .. } => {
                let retry = match reason {
                    RejectReason::Change(ChangeRefusal::Pending) => {
                        self.stats.refused_pending += 1;
                        true
                    }
                    RejectReason::Change(ChangeRefusal::NotReady) => {
                        self.stats.refused_not_ready += 1;
                        true
                    }
                    RejectReason::Change(ChangeRefusal::Unsafe { .. }) => {
                        self.stats.refused_unsafe += 1;
                        true
                    }
                    RejectReason::Transferring => {
                        self.stats.refused_transferring += 1;
                        true
                    }
                    _ => {
                        self.stats.refused_invalid += 1;
                        false
                    }
                };
                if !retry {
                    return;
                }
                None
            }
            Reply::Indeterminate { .. } | Reply::ReadReady { .. } => {
                self.stats.unanswered += 1;
                None
            }
        };
        self.retry(state, hint, cluster, rng, t);
    }

    /// The operator waited long enough for `request`.
    pub(crate) fn on_timeout(
        &mut self,
        request: RequestId,
        cluster: &Cluster,
        rng: &mut ChaCha8Rng,
        t: &mut Timeline,
    ) {
        let Some(state) = self.requests.remove(&request) else {
            return;
        };
        self.stats.unanswered += 1;
        t.note(|| format!("operator timed out on {request}"));
        self.retry(state, None, cluster, rng, t);
    }

    /// The fault phase is over: nothing more is asked (the checks after the heal need a
    /// cluster left alone).
    pub(crate) fn on_heal(&mut self) {
        self.stopped = true;
        self.armed.clear();
        self.requests.clear();
    }

    /// The same change again after a pause, to the node named (a NotLeader's hint) or the
    /// leader as the operator finds it then.
    fn retry(
        &mut self,
        state: Request,
        to: Option<usize>,
        cluster: &Cluster,
        rng: &mut ChaCha8Rng,
        t: &mut Timeline,
    ) {
        if state.attempt >= ATTEMPTS_MAX || self.stopped {
            return;
        }
        let Some(node) = to.or_else(|| self.resolve(Target::Leader, cluster, rng)) else {
            return;
        };
        let request = self.open(Request { attempt: state.attempt + 1, ..state });
        t.schedule(rng.random_range(2..=10) * TICK, SimEvent::OperatorArrive { node, request });
    }

    fn open(&mut self, state: Request) -> RequestId {
        let request = RequestId(self.next);
        self.next += 1;
        self.requests.insert(request, state);
        request
    }

    /// The node a request goes to: the leader in the highest term, or a random running node.
    fn resolve(&self, target: Target, cluster: &Cluster, rng: &mut ChaCha8Rng) -> Option<usize> {
        match target {
            Target::Node(id) => (1..=cluster.len() as u64).contains(&id).then(|| id as usize - 1),
            Target::Leader => {
                if let Some(leader) = cluster.leader().1 {
                    return Some(leader.id().0 as usize - 1);
                }
                let up: Vec<usize> = (0..cluster.len()).filter(|&i| cluster.is_up(i)).collect();
                (!up.is_empty()).then(|| up[rng.random_range(0..up.len())])
            }
        }
    }
}

/// The change of kind `kind` in `view` (the asked node's configuration; `leader` as it knows
/// it), or, when none of that kind makes sense there, one of another kind; `None` if nothing
/// does.
fn decide(
    kind: MemberKind,
    view: &Membership,
    leader: Option<NodeId>,
    retired: &BTreeSet<u64>,
    spares: std::ops::RangeInclusive<u64>,
    rng: &mut ChaCha8Rng,
) -> Option<MembershipChange> {
    let learners: Vec<NodeId> =
        view.members.iter().filter(|(_, m)| m.role != MemberRole::Voter).map(|(&id, _)| id).collect();
    let removable = view.voter_count() > VOTERS_MIN;
    let start = MemberKind::ALL.iter().position(|&k| k == kind).expect("listed");
    for kind in MemberKind::ALL.iter().cycle().skip(start).take(MemberKind::ALL.len()) {
        let pick = |ids: Vec<NodeId>, rng: &mut ChaCha8Rng| -> Option<NodeId> {
            (!ids.is_empty()).then(|| ids[rng.random_range(0..ids.len())])
        };
        let change = match kind {
            MemberKind::Add | MemberKind::AddPromote => {
                let free = spares
                    .clone()
                    .filter(|id| !retired.contains(id) && !view.contains(NodeId(*id)))
                    .map(NodeId)
                    .collect();
                pick(free, rng).map(|id| MembershipChange::Add {
                    id,
                    address: format!("sim:{}", id.0),
                    promote: *kind == MemberKind::AddPromote,
                })
            }
            MemberKind::Promote => pick(learners.clone(), rng).map(|id| MembershipChange::Promote { id }),
            MemberKind::RemoveLearner => {
                pick(learners.clone(), rng).map(|id| MembershipChange::Remove { id })
            }
            MemberKind::RemoveVoter if removable => {
                let others = view.voters().filter(|&id| Some(id) != leader).collect();
                pick(others, rng).map(|id| MembershipChange::Remove { id })
            }
            MemberKind::RemoveLeader if removable => {
                leader.filter(|&id| view.is_voter(id)).map(|id| MembershipChange::Remove { id })
            }
            MemberKind::RemoveVoter | MemberKind::RemoveLeader => None,
        };
        if change.is_some() {
            return change;
        }
    }
    None
}
