//! The client workload: closed-loop clients that append and read through whichever node they
//! believe leads, give up after a timeout, and record every operation in the history that is
//! checked for linearizability at the end.

use crate::history::{History, Op, OpKind, Outcome, Tally};
use crate::network::Network;
use crate::options::{Options, TICK};
use crate::timeline::{SimEvent, Timeline};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use replog_core::{Bytes, Entry, Reply, RequestId};
use std::collections::BTreeMap;

/// A client gives up on a request after this many ticks.
const CLIENT_TIMEOUT_TICKS: u64 = 30;

struct Client {
    /// The node it sends to: the last leader it heard of.
    guess: usize,
    /// The request it waits for, and its operation in the history.
    outstanding: Option<(RequestId, usize)>,
    next_op: u64,
    acked_after_heal: bool,
}

pub(crate) struct Workload {
    clients: Vec<Client>,
    /// Every request sent: its client and its operation in the history.
    requests: BTreeMap<RequestId, (usize, usize)>,
    next_request: u64,
    history: History,
    nodes: usize,
    /// Clients start nothing new (the convergence phase).
    stopped: bool,
    /// The fault phase is over: appends invoked since then count as progress after the heal.
    healed: bool,
    fault_phase_end: u64,
    rng: ChaCha8Rng,
}

impl Workload {
    /// `rng_setup` draws each client's first guess of the leader; `rng` everything after.
    pub(crate) fn new(options: &Options, rng_setup: &mut ChaCha8Rng, rng: ChaCha8Rng) -> Workload {
        let clients = (0..options.clients)
            .map(|_| Client {
                guess: rng_setup.random_range(0..options.ids() as usize),
                outstanding: None,
                next_op: 0,
                acked_after_heal: false,
            })
            .collect();
        Workload {
            clients,
            requests: BTreeMap::new(),
            next_request: 1,
            history: History::default(),
            // Clients may ask any node, spares and removed ones too: they redirect.
            nodes: options.ids() as usize,
            stopped: false,
            healed: false,
            fault_phase_end: options.ticks * TICK,
            rng,
        }
    }

    /// Every client starts within its first five ticks.
    pub(crate) fn start(&mut self, t: &mut Timeline) {
        for client in 0..self.clients.len() {
            let delay = self.rng.random_range(1..=5 * TICK);
            t.schedule(delay, SimEvent::ClientNext { client });
        }
    }

    /// The next operation of a client that waits for nothing.
    pub(crate) fn start_op(&mut self, client: usize, network: &Network, t: &mut Timeline) {
        if self.stopped || self.clients[client].outstanding.is_some() {
            return;
        }
        let rng = &mut self.rng;
        let read = rng.random_bool(0.2);
        // Mostly follow the leader hint; sometimes ask anyone (followers, stale leaders).
        let node =
            if rng.random_bool(0.2) { rng.random_range(0..self.nodes) } else { self.clients[client].guess };
        let request = RequestId(self.next_request);
        self.next_request += 1;
        let state = &mut self.clients[client];
        let value = format!("c{client}.{}", state.next_op).into_bytes();
        state.next_op += 1;
        let kind = if read { OpKind::Read } else { OpKind::Append { value: value.clone() } };
        self.history.ops.push(Op {
            client: client as u32,
            kind,
            invoke: t.now(),
            response: None,
            outcome: Outcome::Pending,
        });
        let op = self.history.ops.len() - 1;
        self.clients[client].outstanding = Some((request, op));
        self.requests.insert(request, (client, op));
        let command = (!read).then(|| Bytes::from(value));
        t.note(|| {
            format!(
                "client {client} sends {request} {} to n{}",
                if read { "read" } else { "append" },
                node + 1
            )
        });
        let latency = network.latency(&mut self.rng);
        t.schedule(latency, SimEvent::ClientArrive { node, request, command });
        t.schedule(CLIENT_TIMEOUT_TICKS * TICK, SimEvent::ClientTimeout { client, request });
    }

    /// A node answers a request; a read saw `read_len` applied entries. The reply travels back.
    pub(crate) fn route_reply(&mut self, reply: Reply, read_len: u64, network: &Network, t: &mut Timeline) {
        let Some(&(client, _)) = self.requests.get(&reply.request()) else {
            return;
        };
        let request = reply.request();
        let latency = network.latency(&mut self.rng);
        t.schedule(latency, SimEvent::ClientReply { client, request, reply, read_len });
    }

    pub(crate) fn on_reply(
        &mut self,
        client: usize,
        request: RequestId,
        reply: Reply,
        read_len: u64,
        t: &mut Timeline,
    ) {
        let Some((outstanding, op)) = self.clients[client].outstanding else {
            return;
        };
        if outstanding != request {
            return; // an answer to a request the client gave up on
        }
        let outcome = match reply {
            Reply::Committed { first, .. } => Outcome::AppendOk { index: first },
            Reply::ReadReady { index, .. } => {
                debug_assert!(read_len >= index.0);
                Outcome::ReadOk { len: read_len }
            }
            Reply::NotLeader { leader, .. } => {
                if let Some(leader) = leader {
                    self.clients[client].guess = leader.0 as usize - 1;
                } else {
                    self.clients[client].guess = self.rng.random_range(0..self.nodes);
                }
                Outcome::Failed
            }
            Reply::Rejected { .. } => Outcome::Failed,
            Reply::Indeterminate { .. } => Outcome::Indeterminate,
        };
        if let Outcome::AppendOk { .. } = outcome {
            if self.healed && self.history.ops[op].invoke >= self.fault_phase_end {
                self.clients[client].acked_after_heal = true;
            }
        }
        t.note(|| format!("client {client} got {request}: {outcome:?}"));
        let entry = &mut self.history.ops[op];
        entry.response = Some(t.now());
        entry.outcome = outcome;
        self.clients[client].outstanding = None;
        let think = self.rng.random_range(1..=2 * TICK);
        t.schedule(think, SimEvent::ClientNext { client });
    }

    pub(crate) fn on_timeout(&mut self, client: usize, request: RequestId, t: &mut Timeline) {
        let Some((outstanding, op)) = self.clients[client].outstanding else {
            return;
        };
        if outstanding != request {
            return;
        }
        // An append's fate is unknown; a read simply did not happen.
        let entry = &mut self.history.ops[op];
        entry.outcome =
            if matches!(entry.kind, OpKind::Read) { Outcome::Failed } else { Outcome::Indeterminate };
        t.note(|| format!("client {client} timed out on {request}"));
        self.clients[client].outstanding = None;
        self.clients[client].guess = self.rng.random_range(0..self.nodes);
        t.schedule(1, SimEvent::ClientNext { client });
    }

    /// The fault phase is over.
    pub(crate) fn on_heal(&mut self) {
        self.healed = true;
    }

    /// A client that got no append acknowledged that it invoked after the heal.
    pub(crate) fn waiting_for_progress(&self) -> Option<usize> {
        self.clients.iter().position(|c| !c.acked_after_heal)
    }

    /// Clients start nothing new.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
    }

    pub(crate) fn tally(&self) -> Tally {
        self.history.tally()
    }

    /// Linearizability of the whole history against the committed log.
    pub(crate) fn check(&self, committed: &[Entry]) -> Result<(), String> {
        self.history.check(committed)
    }
}
