//! The run's virtual clock and its queue of events to come, and the record of what happened:
//! the trace and the digest of every core step. Every part of the world schedules its events
//! here and notes here what it did.

use crate::checker::{Broken, Kind, Violation};
use crate::digest::Fnv;
use crate::frontend::{Answer, Arrival, Attempt};
use crate::options::TICK;
use crate::trace::{describe, Trace};
use replog_core::{Action, Event, Message, NodeId, RequestId};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;

/// Everything that can happen in a run, each handled by the part that scheduled it.
pub(crate) enum SimEvent {
    // The cluster.
    Tick {
        node: usize,
        life: u64,
    },
    /// A message arrives; true if the network replayed an old one.
    Deliver(Message, bool),
    /// The disk's background syncs asked for up to `upto` complete.
    SyncDone {
        node: usize,
        life: u64,
        upto: u64,
    },
    // The workload.
    /// A client's attempt reaches a node.
    ClientArrive {
        node: usize,
        attempt: Attempt,
        arrival: Arrival,
    },
    /// The round in which appends arrived at the node ends: they are proposed together.
    ClientFlush {
        node: usize,
        life: u64,
    },
    /// A node's answer reaches the client.
    ClientReply {
        attempt: Attempt,
        answer: Answer,
    },
    ClientTimeout {
        client: usize,
        attempt: Attempt,
    },
    /// An acknowledged append sent again got no answer in time.
    ResendTimeout {
        attempt: Attempt,
    },
    /// The client starts its next operation.
    ClientNext {
        client: usize,
    },
    /// The client sends its operation `op` again (a new attempt), if it still waits for it.
    ClientRetry {
        client: usize,
        op: usize,
    },
    /// A follow reader asks for the next page.
    FollowRead {
        reader: usize,
    },
    // The faults.
    Fault(usize),
    /// An ambush fires: crash this life of the node.
    CrashNode {
        node: usize,
        life: u64,
    },
    Heal,
    // The operator's membership changes.
    /// A change request reaches a node.
    OperatorArrive {
        node: usize,
        request: RequestId,
    },
    /// The operator gives up waiting for an answer to a request.
    OperatorTimeout {
        request: RequestId,
    },
    // The checks after the heal.
    LivenessCheck,
    /// Availability: a leader must hold office now, and keep it while the network is healthy.
    Settled,
    /// Availability: a cut-off follower rejoins.
    Rejoin,
    /// Availability: the settled leader crashes; another must settle in time.
    Failover,
    /// Start this node again (the crashed leader of a failover).
    RestartNode(usize),
    /// The health checks sample every node.
    HealthSample,
    End,
}

struct Scheduled {
    at: u64,
    /// Breaks ties: events due at the same time happen in the order they were scheduled.
    seq: u64,
    event: SimEvent,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub(crate) struct Timeline {
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    pub(crate) trace: Trace,
    /// Fingerprint of every core step, in order.
    pub(crate) digest: Fnv,
}

impl Timeline {
    pub(crate) fn new(trace: Trace) -> Timeline {
        Timeline { now: 0, seq: 0, queue: BinaryHeap::new(), trace, digest: Fnv::default() }
    }

    /// The virtual time, in units (`TICK` to a nominal tick).
    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    pub(crate) fn schedule(&mut self, delay: u64, event: SimEvent) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { at: self.now + delay, seq: self.seq, event }));
    }

    /// The next event, with the clock moved to its time.
    pub(crate) fn next_event(&mut self) -> Option<SimEvent> {
        let Reverse(next) = self.queue.pop()?;
        self.now = next.at;
        Some(next.event)
    }

    /// A trace line stamped with the time; `text` runs only when tracing.
    pub(crate) fn note(&mut self, text: impl FnOnce() -> String) {
        if self.trace.on() {
            let line = format!("{:>6}.{:03} {}", self.now / TICK, self.now % TICK, text());
            self.trace.line(line);
        }
    }

    /// Fingerprints and traces one core step of node `id`.
    pub(crate) fn record_step(&mut self, id: NodeId, event: &Event, actions: &[Action]) {
        (self.now, id.0, event).hash(&mut self.digest);
        actions.hash(&mut self.digest);
        if self.trace.on() {
            let text = describe(event);
            self.note(|| format!("{id} {text}"));
            for action in actions {
                self.trace.line(format!("         {action}"));
            }
        }
    }

    pub(crate) fn violation(
        &self,
        kind: Kind,
        node: Option<NodeId>,
        (property, detail): Broken,
    ) -> Violation {
        Violation { kind, property: property.to_string(), at: self.now, node, detail }
    }

    /// A broken safety property, found at node `id` now (for `map_err`).
    pub(crate) fn unsafe_at(&self, id: NodeId) -> impl Fn(Broken) -> Violation + '_ {
        move |broken| self.violation(Kind::Safety, Some(id), broken)
    }
}
