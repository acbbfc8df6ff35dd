//! Accepted connections: peers' inbound links and clients, told apart by their first frame.
//! A peer's Raft messages become events for the loop to step. Clients are served here: appends
//! gathered into one batch a round, proposals and linearizable reads waiting for the core's
//! replies, query pages and status answers.

use crate::codec::{request_extra_bytes, AppendResult, Frame, MemberRequest, QueriedEntry};
use crate::connection::{Caller, Closed, Connection, TakenIdentity, Violation};
use crate::driver::{Admission, Driver, SessionAppend};
use crate::fs::RealFs;
use crate::limits::{COMMAND_BYTES_MAX, QUERY_ENTRIES_MAX, QUERY_PAGE_BYTES_MAX};
use crate::members::Members;
use crate::metrics::{refusal_label, AppendFailure, Metrics, PeerTraffic, REFUSED_LIMIT};
use crate::reading::{self, ReadKind};
use crate::sessions::Outcome;
use crate::status::StatusReport;
use crate::storage::StorageError;
use crate::tls::{self, Tls};
use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use replog_core::{
    Bytes, ClientId, Entry, Event, LogIndex, Membership, NodeId, Payload, RejectReason, Reply, RequestId,
};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Accepted connections (peers' inbound links and clients) beyond this are refused at once.
const CONNECTIONS_MAX: usize = 4096;
/// How long a connection may go without sending a byte before its first frame is complete
/// (with TLS: a finished handshake and a first frame) before it is closed: silent connections
/// would otherwise hold the `CONNECTIONS_MAX` slots for good and lock out clients and peers.
pub const IDENTIFY_WITHIN: Duration = Duration::from_secs(10);
/// How long a first frame may take in all, however it trickles in (a first append of
/// `COMMAND_BYTES_MAX` at 64 KiB/s).
pub const FIRST_FRAME_WITHIN: Duration = Duration::from_secs(120);

/// What a connection's frames ask of the loop, in the order they arrived.
#[derive(Debug)]
pub enum Inbound {
    /// Step this event: a peer's Raft message, or a linearizable read to confirm.
    Step(Event),
    /// A peer said hello.
    Hello {
        /// The peer.
        peer: NodeId,
        /// The name it gave.
        name: String,
        /// Where it listens.
        address: SocketAddr,
        /// The configuration it bootstrapped with, if it has.
        bootstrap: Option<Membership>,
        /// The new cluster's addresses as it was told them (empty: none).
        cluster: Vec<String>,
    },
    /// A client asked for a membership change: answered when the core replies (`on_reply`,
    /// after `track_change`) or at once by the loop.
    ChangeMembership {
        /// The connection that asked.
        token: Token,
        /// What it asked.
        request: MemberRequest,
    },
    /// A client asked for the node's status: answer with [`Clients::answer_status`].
    Status(Token),
    /// A client asked whether the node is healthy: answer with [`Clients::answer`].
    Health(Token),
    /// A client asked the leader to hand leadership to `to` (empty: the best follower).
    TransferLeader {
        /// The connection that asked.
        token: Token,
        /// The member's address, as the client gave it.
        to: String,
    },
    /// A client asked to trim the log before this command ID: answer with
    /// [`Clients::answer_trim`].
    Trim {
        /// The connection that asked.
        token: Token,
        /// Drop the entries before this command ID.
        before_id: u64,
    },
}

#[derive(Debug)]
struct Accepted {
    connection: Connection,
    caller: Caller,
    /// When it was accepted: a caller that has not said who it is within
    /// `FIRST_FRAME_WITHIN` is closed.
    opened: Instant,
    /// When bytes last arrived before its first frame: one silent for `IDENTIFY_WITHIN` is
    /// closed.
    progress: Instant,
    /// A peer's traffic counters, once it said hello.
    traffic: Option<PeerTraffic>,
    /// The address a peer's hello gave.
    peer_address: Option<SocketAddr>,
}

/// Clients waiting on one proposal: for each of its entries, in order, who waits for it: one,
/// or more when a session's request came again in the same round.
type Waiting = Vec<Vec<Waiter>>;

/// A client waiting for a proposal's entry.
#[derive(Debug)]
struct Waiter {
    token: Token,
    /// The client's request id.
    client_request: u64,
    /// It repeats the request that was proposed (a session's retry in the same round).
    repeat: bool,
    /// When its append arrived.
    arrived: Instant,
}

/// A client waiting for a session's request that is in the log to be applied.
#[derive(Debug)]
struct InLogWait {
    token: Token,
    client_request: u64,
    client: ClientId,
    seq: u64,
    arrived: Instant,
}

/// A linearizable query waiting for its read to be confirmed.
#[derive(Debug)]
struct PendingRead {
    token: Token,
    from: u64,
    max: u32,
    /// `from` is an index (`Query`) or a command ID (`ReadCommands`).
    kind: ReadKind,
}

/// The listener and everything it accepted.
#[derive(Debug)]
pub struct Clients {
    listener: TcpListener,
    accepted: BTreeMap<Token, Accepted>,
    next_token: usize,
    /// Appends received this round, proposed together at its end (group commit): the
    /// connection, the client's request id, the command, when it arrived.
    batch: Vec<(Token, u64, Bytes, Instant)>,
    /// Session appends received this round, screened and proposed with them.
    session_batch: Vec<(Token, u64, SessionAppend, Instant)>,
    /// Session requests found in the log, by index: answered when it is applied.
    in_log: BTreeMap<LogIndex, Vec<InLogWait>>,
    proposals: BTreeMap<RequestId, Waiting>,
    /// Membership changes waiting for the core's reply: the connection that asked.
    changes: BTreeMap<RequestId, Token>,
    reads: BTreeMap<RequestId, PendingRead>,
    next_request: u64,
    metrics: Arc<Metrics>,
    /// With TLS, every accepted connection is a TLS session from these configurations.
    tls: Option<Arc<Tls>>,
    /// When `close_silent` looks next.
    next_silent_check: Instant,
}

impl Clients {
    /// Serves connections accepted on `listener` (already registered by the loop), giving
    /// them tokens from `first_token` on; appends, refusals and peer traffic are counted in
    /// `metrics`. With `tls`, every connection must be TLS with a certificate from its CA.
    pub fn new(
        listener: TcpListener,
        first_token: Token,
        metrics: Arc<Metrics>,
        tls: Option<Arc<Tls>>,
    ) -> Clients {
        Clients {
            listener,
            accepted: BTreeMap::new(),
            next_token: first_token.0,
            batch: Vec::new(),
            session_batch: Vec::new(),
            in_log: BTreeMap::new(),
            proposals: BTreeMap::new(),
            changes: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_request: 1,
            metrics,
            tls,
            next_silent_check: Instant::now(),
        }
    }

    /// Accepts every waiting connection, up to the limit.
    pub fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, from)) => {
                    if self.accepted.len() >= CONNECTIONS_MAX {
                        warn!("refusing a connection from {from}: {CONNECTIONS_MAX} connections are open");
                        self.metrics.connection_refused(REFUSED_LIMIT);
                        continue; // dropping the stream closes it
                    }
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE).is_ok()
                    {
                        let connection = match &self.tls {
                            Some(tls) => Connection::with_tls(stream, tls::accept(&tls.configs())),
                            None => Connection::new(stream),
                        };
                        let accepted = Accepted {
                            connection,
                            caller: Caller::Unknown,
                            opened: Instant::now(),
                            progress: Instant::now(),
                            traffic: None,
                            peer_address: None,
                        };
                        self.accepted.insert(token, accepted);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    warn!("accept: {error}");
                    return;
                }
            }
        }
    }

    /// Reads one round from the connection (at most `connection::READ_ROUND_BYTES`) and
    /// handles its frames: client requests are served or batched here; what the loop must do
    /// is pushed to `inbound`, in order. Returns true if more may be waiting: readiness is
    /// edge-triggered, so the loop calls again once it has done what `inbound` asked. A broken
    /// connection is closed after the complete frames before the break are handled.
    pub fn on_ready(
        &mut self,
        token: Token,
        registry: &Registry,
        members: &Members,
        driver: &mut Driver<RealFs>,
        inbound: &mut Vec<Inbound>,
    ) -> bool {
        let Some(accepted) = self.accepted.get_mut(&token) else {
            return false;
        };
        let read = accepted.connection.read();
        if accepted.caller == Caller::Unknown {
            accepted.progress = Instant::now();
        }
        // Act on the complete frames even when the read ended in a close.
        let handled = self.handle_frames(token, members, driver, inbound);
        let accepted = self.accepted.get_mut(&token).expect("present");
        let outcome = match (read, handled) {
            (Err(closed), _) | (Ok(_), Err(closed)) => Err(closed),
            (Ok(true), Ok(())) => Ok(true),
            (Ok(false), Ok(())) => accepted.connection.flush().map(|()| false),
        };
        outcome.unwrap_or_else(|closed| {
            self.close(token, registry, &closed);
            false
        })
    }

    /// The appends gathered this round as one proposal, if there were any. Session appends
    /// are screened first (`Driver::admit`): those committed already, in the log already, or
    /// refused are answered (or wait) without being proposed again.
    pub fn take_proposal(&mut self, driver: &Driver<RealFs>) -> Option<Event> {
        if self.batch.is_empty() && self.session_batch.is_empty() {
            return None;
        }
        let mut waiting: Waiting = Vec::with_capacity(self.batch.len() + self.session_batch.len());
        let mut payloads = Vec::with_capacity(waiting.capacity());
        // The session appends first: a condition was checked against the log's end, so nothing
        // may come between it and the admitted entries.
        let sessions = std::mem::take(&mut self.session_batch);
        let appends: Vec<SessionAppend> = sessions.iter().map(|(_, _, append, _)| append.clone()).collect();
        // Where each admitted append's entry sits in the proposal.
        let mut slot_of: Vec<Option<usize>> = Vec::with_capacity(appends.len());
        for ((token, client_request, append, arrived), admission) in
            sessions.into_iter().zip(driver.admit(&appends))
        {
            let mut slot = None;
            let waiter = |repeat| Waiter { token, client_request, repeat, arrived };
            match admission {
                Admission::Propose(payload) => {
                    slot = Some(payloads.len());
                    waiting.push(vec![waiter(false)]);
                    payloads.push(payload);
                }
                Admission::SameAs(earlier) => {
                    slot = slot_of[earlier];
                    let slot = slot.expect("an append is the same as an earlier one that was proposed");
                    waiting[slot].push(waiter(true));
                }
                Admission::Committed(outcome) => self.queue(token, &committed(client_request, outcome)),
                Admission::InLog(index) => {
                    let wait =
                        InLogWait { token, client_request, client: append.client, seq: append.seq, arrived };
                    self.in_log.entry(index).or_default().push(wait);
                }
                Admission::Refused(refusal) => {
                    self.metrics.append_failed(AppendFailure::SessionRefused);
                    let result = AppendResult::Refused(refusal);
                    self.queue(token, &Frame::AppendResult { request: client_request, result });
                }
            }
            slot_of.push(slot);
        }
        for (token, client_request, command, arrived) in self.batch.drain(..) {
            waiting.push(vec![Waiter { token, client_request, repeat: false, arrived }]);
            payloads.push(Payload::Command(command));
        }
        if payloads.is_empty() {
            return None;
        }
        let request = self.new_request();
        self.proposals.insert(request, waiting);
        Some(Event::Propose { request, payloads })
    }

    /// Lets go of clients waiting for entries this node will not apply as leader: all of them
    /// once it no longer leads (its log may lose them; the retry asks the new leader), and those
    /// a snapshot now covers. Each is told to retry, which the leader's table answers.
    pub fn release_waiters(&mut self, driver: &Driver<RealFs>) {
        if self.in_log.is_empty() {
            return;
        }
        let kept = if driver.node().is_leader() {
            self.in_log.split_off(&driver.node().snapshot_meta().index.next())
        } else {
            BTreeMap::new()
        };
        for wait in std::mem::replace(&mut self.in_log, kept).into_values().flatten() {
            self.metrics.append_failed(AppendFailure::LostTrack);
            let result = retry_to_learn();
            self.queue(wait.token, &Frame::AppendResult { request: wait.client_request, result });
        }
    }

    /// Answers the clients waiting for session requests among these applied entries: with the
    /// entry's outcome if it is their request, else (a new leader replaced it) with a retry.
    pub fn on_applied(&mut self, entries: &[Entry], driver: &Driver<RealFs>) {
        if self.in_log.is_empty() {
            return;
        }
        for entry in entries {
            let Some(waits) = self.in_log.remove(&entry.index) else {
                continue;
            };
            for wait in waits {
                let id = driver.command_id_after_snapshot(entry.index);
                let result = match (&entry.payload, id) {
                    (Payload::Request(request), Some(id))
                        if (request.client, request.seq) == (wait.client, wait.seq) =>
                    {
                        self.metrics.append_committed(wait.arrived.elapsed());
                        AppendResult::Committed {
                            index: entry.index.0,
                            term: entry.term.0,
                            id,
                            count: request.commands.len() as u64,
                            recognised: true,
                        }
                    }
                    // Replaced by a new leader, or covered by a snapshot since: the retry asks
                    // the leader's table.
                    _ => {
                        self.metrics.append_failed(AppendFailure::LostTrack);
                        retry_to_learn()
                    }
                };
                self.queue(wait.token, &Frame::AppendResult { request: wait.client_request, result });
            }
        }
    }

    /// A request id for a membership change the connection `token` asked for; its answer goes
    /// there when the core replies.
    pub fn track_change(&mut self, token: Token) -> RequestId {
        let request = self.new_request();
        self.changes.insert(request, token);
        request
    }

    /// Answers the clients waiting on a reply of the core.
    pub fn on_reply(&mut self, reply: Reply, members: &Members, driver: &mut Driver<RealFs>) {
        let leader_address =
            |leader: Option<NodeId>| leader.and_then(|id| members.address_of(id)).map(|a| a.to_string());
        if let Some(token) = self.changes.remove(&reply.request()) {
            let answer = match reply {
                Reply::Committed { last, .. } => Frame::MembershipChanged { index: last.0 },
                Reply::NotLeader { leader, .. } => Frame::Redirect { leader: leader_address(leader) },
                Reply::Rejected { reason: RejectReason::Change(refusal), .. } => {
                    Frame::Failed { reason: crate::members::describe_refusal(refusal, members) }
                }
                Reply::Rejected { reason, .. } => {
                    Frame::Failed { reason: format!("refused by the leader ({reason:?}); retry") }
                }
                Reply::Indeterminate { .. } | Reply::ReadReady { .. } => Frame::Failed {
                    reason:
                        "leadership changed before the change committed: it may or may not have happened; \
                             check with `replog member list`"
                            .into(),
                },
            };
            self.queue(token, &answer);
            return;
        }
        if let Some(read) = self.reads.remove(&reply.request()) {
            let answer = match reply {
                // The node has applied through `index` (the core applies before it replies).
                Reply::ReadReady { .. } => match read.kind {
                    ReadKind::Log => query_page(driver, read.from, read.max),
                    ReadKind::Commands => reading::commands_page(driver, read.from, read.max),
                },
                Reply::NotLeader { leader, .. } => Frame::Redirect { leader: leader_address(leader) },
                // Never dropped silently: the client hears why.
                Reply::Rejected { reason, .. } => Frame::Failed {
                    reason: format!("the leader refused the linearizable read ({reason:?}: too many reads waiting); retry"),
                },
                Reply::Committed { .. } | Reply::Indeterminate { .. } => {
                    unreachable!("a read is answered ReadReady, NotLeader or Rejected")
                }
            };
            self.queue(read.token, &answer);
            return;
        }
        let Some(waiting) = self.proposals.remove(&reply.request()) else {
            return;
        };
        let now = Instant::now();
        for (position, waiters) in waiting.into_iter().enumerate() {
            let result = match &reply {
                Reply::Committed { first, term, .. } => {
                    let index = first.plus(position as u64);
                    match driver.command_id_after_snapshot(index) {
                        Some(id) => {
                            let count = driver.command_id(index.next()) - id;
                            AppendResult::Committed { index: index.0, term: term.0, id, count, recognised: false }
                        }
                        // A snapshot installed since (this node stepped down meanwhile).
                        None => retry_to_learn(),
                    }
                }
                Reply::NotLeader { leader, .. } => AppendResult::NotLeader { leader: leader_address(*leader) },
                Reply::Rejected { reason, .. } => AppendResult::Failed {
                    reason: format!("rejected by the leader: {reason:?}; retry later"),
                    retry: true,
                },
                Reply::Indeterminate { .. } => AppendResult::Failed {
                    reason: "leadership changed before the entry committed: it may or may not be in the log; query to check"
                        .into(),
                    retry: false,
                },
                Reply::ReadReady { .. } => continue,
            };
            let failure = match &reply {
                Reply::Committed { .. } if matches!(result, AppendResult::Committed { .. }) => None,
                Reply::Committed { .. } => Some(AppendFailure::LostTrack),
                Reply::NotLeader { .. } => Some(AppendFailure::NotLeader),
                Reply::Rejected { reason, .. } => Some(AppendFailure::of_rejection(reason)),
                Reply::Indeterminate { .. } => Some(AppendFailure::LeadershipLost),
                Reply::ReadReady { .. } => continue,
            };
            for Waiter { token, client_request, repeat, arrived } in waiters {
                match failure {
                    None => self.metrics.append_committed(now.saturating_duration_since(arrived)),
                    Some(failure) => self.metrics.append_failed(failure),
                }
                let mut result = result.clone();
                if let AppendResult::Committed { recognised, .. } = &mut result {
                    *recognised = repeat;
                }
                self.queue(token, &Frame::AppendResult { request: client_request, result });
            }
        }
    }

    /// Answers a status request.
    pub fn answer_status(&mut self, token: Token, report: StatusReport) {
        self.queue(token, &Frame::StatusResult(report));
    }

    /// Whether the peer's own link to this node is up (it said hello here).
    /// Answers a client's request with `frame`.
    pub fn answer(&mut self, token: Token, frame: &Frame) {
        self.queue(token, frame);
    }

    /// Tells the client that asked for a trim where the log now starts.
    pub fn answer_trim(&mut self, token: Token, driver: &Driver<RealFs>) {
        let first = driver.node().first_index().0;
        let first_id = driver.first_command_id();
        self.queue(token, &Frame::TrimResult { first, first_id });
    }

    pub fn has_peer(&self, id: NodeId) -> bool {
        self.accepted.values().any(|accepted| accepted.caller == Caller::Peer(id))
    }

    /// The peers connected to this node now: their ids and the addresses their hellos gave.
    pub fn peer_callers(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.accepted.values().filter_map(|accepted| match (accepted.caller, accepted.peer_address) {
            (Caller::Peer(id), Some(address)) => Some((id, address)),
            _ => None,
        })
    }

    /// Closes the connections that have not said who they are within `IDENTIFY_WITHIN`; looks
    /// at most once a second.
    pub fn close_silent(&mut self, registry: &Registry, now: Instant) {
        if now < self.next_silent_check {
            return;
        }
        self.next_silent_check = now + Duration::from_secs(1);
        let silent: Vec<Token> = self
            .accepted
            .iter()
            .filter(|(_, accepted)| {
                accepted.caller == Caller::Unknown
                    && (now.duration_since(accepted.progress) >= IDENTIFY_WITHIN
                        || now.duration_since(accepted.opened) >= FIRST_FRAME_WITHIN)
            })
            .map(|(&token, _)| token)
            .collect();
        for token in silent {
            self.close(token, registry, &Closed::Protocol(Violation::Silent));
        }
    }

    /// Writes what every connection has queued, as far as the sockets take it.
    pub fn flush(&mut self, registry: &Registry) {
        let mut failed = Vec::new();
        for (&token, accepted) in self.accepted.iter_mut() {
            if accepted.connection.has_outbound() {
                if let Err(closed) = accepted.connection.flush() {
                    failed.push((token, closed));
                }
            }
        }
        for (token, closed) in failed {
            self.close(token, registry, &closed);
        }
    }

    fn handle_frames(
        &mut self,
        token: Token,
        members: &Members,
        driver: &mut Driver<RealFs>,
        inbound: &mut Vec<Inbound>,
    ) -> Result<(), Closed> {
        loop {
            let accepted = self.accepted.get_mut(&token).expect("present");
            let Some(frame) = accepted.connection.next_frame()? else {
                return Ok(());
            };
            self.on_frame(token, frame, members, driver, inbound).map_err(Closed::Protocol)?;
        }
    }

    /// Handles one frame; a violation closes the connection.
    fn on_frame(
        &mut self,
        token: Token,
        frame: Frame,
        members: &Members,
        driver: &mut Driver<RealFs>,
        inbound: &mut Vec<Inbound>,
    ) -> Result<(), Violation> {
        let accepted = self.accepted.get_mut(&token).expect("present");
        match (accepted.caller, frame) {
            (Caller::Unknown, Frame::Hello { address, name, id, bootstrap, cluster }) => {
                let Ok(address) = address.parse::<SocketAddr>() else {
                    return Err(Violation::BadHelloAddress(address));
                };
                if id == members.id() || address == members.address() {
                    return Err(Violation::Impostor { name, address });
                }
                // With TLS a peer must prove the address it claims: its certificate names it.
                if accepted.connection.is_tls()
                    && !accepted
                        .connection
                        .peer_certificate()
                        .is_some_and(|certificate| tls::certificate_names(certificate, address))
                {
                    return Err(Violation::CertificateMismatch { name, address });
                }
                // A known node's id from another address: an impostor taking over a member's
                // identity (its Raft messages would count as that member's), never a member that
                // moved (a member's address changes only through the configuration).
                if let Some(known) = members.address_of(id).filter(|&known| known != address) {
                    return Err(Violation::IdentityTaken(Box::new(TakenIdentity {
                        name,
                        id,
                        address,
                        known,
                    })));
                }
                // Any node may call: a new one being added, or one this node's configuration
                // does not list yet. The core decides what its messages count for (§4.1).
                info!("peer {name} ({address}, id {}) connected", crate::storage::id_text(id));
                accepted.caller = Caller::Peer(id);
                accepted.traffic = Some(self.metrics.peer_traffic(address));
                accepted.peer_address = Some(address);
                inbound.push(Inbound::Hello { peer: id, name, address, bootstrap, cluster });
            }
            (Caller::Peer(link), Frame::Raft(message)) => {
                if let Some(traffic) = &accepted.traffic {
                    traffic.received(accepted.connection.last_frame_bytes());
                }
                if message.from != link {
                    return Err(Violation::Misaddressed { from: message.from, to: message.to, link });
                }
                if message.to != members.id() {
                    // For an id this address had before (a node whose folder was wiped came back
                    // under a new id): not ours, and not the sender's fault.
                    debug!("dropped a message for {} from {}", message.to, message.from);
                    return Ok(());
                }
                inbound.push(Inbound::Step(Event::Receive(message)));
            }
            (Caller::Unknown | Caller::Client, Frame::ChangeMembership(request)) => {
                accepted.caller = Caller::Client;
                inbound.push(Inbound::ChangeMembership { token, request });
            }
            (Caller::Unknown | Caller::Client, Frame::Append { request, command }) => {
                accepted.caller = Caller::Client;
                if command.len() > COMMAND_BYTES_MAX {
                    self.metrics.append_failed(AppendFailure::TooLarge);
                    // No AppendEntries frame could carry it to the followers.
                    let result = AppendResult::TooLarge {
                        bytes: command.len() as u64,
                        limit: COMMAND_BYTES_MAX as u64,
                    };
                    accepted.connection.queue(&Frame::AppendResult { request, result });
                } else {
                    self.batch.push((token, request, Bytes::from(command), Instant::now()));
                }
            }
            (
                Caller::Unknown | Caller::Client,
                Frame::SessionAppend { request, client, seq, since, expect_last, commands },
            ) => {
                accepted.caller = Caller::Client;
                let bytes = request_extra_bytes(&commands) as u64;
                if bytes > COMMAND_BYTES_MAX as u64 {
                    self.metrics.append_failed(AppendFailure::TooLarge);
                    let result = AppendResult::TooLarge { bytes, limit: COMMAND_BYTES_MAX as u64 };
                    accepted.connection.queue(&Frame::AppendResult { request, result });
                } else if commands.is_empty() || seq == 0 {
                    self.metrics.append_failed(AppendFailure::Invalid);
                    let result = AppendResult::Failed {
                        reason: "a session's request needs a sequence number from 1 and at least one command"
                            .into(),
                        retry: false,
                    };
                    accepted.connection.queue(&Frame::AppendResult { request, result });
                } else {
                    let append = SessionAppend {
                        client: ClientId(client),
                        seq,
                        since: LogIndex(since),
                        expect_last,
                        commands: commands.into_iter().map(Bytes::from).collect(),
                    };
                    self.session_batch.push((token, request, append, Instant::now()));
                }
            }
            (Caller::Unknown | Caller::Client, Frame::Query { from, max, linearizable }) => {
                accepted.caller = Caller::Client;
                if linearizable {
                    // ReadIndex (dissertation §6.4): answered once leadership is confirmed.
                    let request = self.new_request();
                    self.reads.insert(request, PendingRead { token, from, max, kind: ReadKind::Log });
                    inbound.push(Inbound::Step(Event::Read { request }));
                } else {
                    accepted.connection.queue(&query_page(driver, from, max));
                }
            }
            (Caller::Unknown | Caller::Client, Frame::Status) => {
                accepted.caller = Caller::Client;
                inbound.push(Inbound::Status(token));
            }
            (Caller::Unknown | Caller::Client, Frame::Health) => {
                accepted.caller = Caller::Client;
                inbound.push(Inbound::Health(token));
            }
            (Caller::Unknown | Caller::Client, Frame::TransferLeader { to }) => {
                accepted.caller = Caller::Client;
                inbound.push(Inbound::TransferLeader { token, to });
            }
            (Caller::Unknown | Caller::Client, Frame::Trim { before_id }) => {
                accepted.caller = Caller::Client;
                inbound.push(Inbound::Trim { token, before_id });
            }
            (Caller::Unknown | Caller::Client, Frame::ReadCommands { from_id, max, linearizable }) => {
                accepted.caller = Caller::Client;
                if linearizable {
                    // ReadIndex (dissertation §6.4), as for a linearizable `Query`.
                    let request = self.new_request();
                    let read = PendingRead { token, from: from_id, max, kind: ReadKind::Commands };
                    self.reads.insert(request, read);
                    inbound.push(Inbound::Step(Event::Read { request }));
                } else {
                    accepted.connection.queue(&reading::commands_page(driver, from_id, max));
                }
            }
            (caller, frame) => return Err(Violation::UnexpectedFrame { frame: frame.name(), caller }),
        }
        Ok(())
    }

    fn new_request(&mut self) -> RequestId {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        request
    }

    fn queue(&mut self, token: Token, frame: &Frame) {
        if let Some(accepted) = self.accepted.get_mut(&token) {
            accepted.connection.queue(frame);
        }
    }

    fn close(&mut self, token: Token, registry: &Registry, why: &Closed) {
        let Some(mut accepted) = self.accepted.remove(&token) else {
            return;
        };
        let _ = registry.deregister(&mut accepted.connection.stream);
        let who = accepted.connection.stream.peer_addr().map_or("?".into(), |a| a.to_string());
        match why {
            Closed::Protocol(violation) => {
                self.metrics.connection_refused(refusal_label(violation));
                warn!("closing connection from {who}: {violation}")
            }
            _ if matches!(accepted.caller, Caller::Peer(_)) => {
                info!("peer connection from {who} closed: {why}")
            }
            _ => debug!("connection from {who} closed: {why}"),
        }
    }
}

/// A page of the log from `from` on (see [`page`]), with the commit index and the last index,
/// each command with its ID; the reason if it could not be read (damaged data on disk).
fn query_page(driver: &mut Driver<RealFs>, from: u64, max: u32) -> Frame {
    // What was trimmed is gone: the page starts where the log does, and says so.
    let from = LogIndex(from).max(driver.node().first_index());
    let entries = match page(driver, from, max) {
        Ok(entries) => entries,
        Err(error) => {
            warn!("query from {from}: {error}");
            return Frame::Failed { reason: error.to_string() };
        }
    };
    let entries = entries
        .into_iter()
        .map(|entry| {
            let id = (!entry.payload.commands().is_empty()).then(|| driver.command_id(entry.index));
            QueriedEntry { entry, id }
        })
        .collect();
    let node = driver.node();
    Frame::QueryResult {
        commit: node.commit().0,
        first: node.first_index().0,
        first_id: driver.first_command_id(),
        last_index: node.last_index().0,
        entries,
    }
}

/// Entries from `from` on (from memory, or from disk once evicted): at most `max` (and
/// `QUERY_ENTRIES_MAX`) of them, encoding to at most `QUERY_PAGE_BYTES_MAX` so the answer fits
/// a frame, and at least one while the log reaches `from`, so a client paging through always
/// moves on.
fn page(driver: &mut Driver<RealFs>, from: LogIndex, max: u32) -> Result<Vec<Entry>, StorageError> {
    let last = from.plus(u64::from(max.clamp(1, QUERY_ENTRIES_MAX)) - 1);
    // Entry::size_bytes never exceeds an entry's encoded size, so this reads enough; the
    // encoded sizes then decide where the page ends.
    let mut entries = driver.read_entries(from, last, QUERY_PAGE_BYTES_MAX as u64)?;
    let mut bytes = 0;
    let keep = entries
        .iter()
        .position(|entry| {
            bytes += QueriedEntry::encoded_bytes(entry);
            bytes > QUERY_PAGE_BYTES_MAX
        })
        .unwrap_or(entries.len())
        .max(1);
    entries.truncate(keep);
    Ok(entries)
}

/// The answer to a client whose append's outcome this node cannot name (its entry was
/// replaced, or is covered by a snapshot installed since): it may be in the log; a session's
/// retry learns which from the leader.
fn retry_to_learn() -> AppendResult {
    AppendResult::Failed {
        reason: "this node lost track of the entry (a new leader replaced it, or a snapshot covers it): \
                 it may or may not be in the log; a session's retry finds out"
            .into(),
        retry: false,
    }
}

/// The answer to a session's request that committed before.
fn committed(client_request: u64, outcome: Outcome) -> Frame {
    let Outcome { index, term, first_id, count } = outcome;
    let result =
        AppendResult::Committed { index: index.0, term: term.0, id: first_id, count, recognised: true };
    Frame::AppendResult { request: client_request, result }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::limits::FRAME_BYTES_MAX;
    use crate::storage::Identity;
    use replog_core::Config;

    /// A single-node driver (in a fresh folder) that committed one command of each size, after
    /// its leader's no-op at index 1.
    fn driver_with_commands(name: &str, sizes: &[usize]) -> Driver<RealFs> {
        let dir = std::env::temp_dir().join(format!("replog-clients-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let identity = Identity { name: "n1".into(), address: "127.0.0.1:1".into() };
        let (mut driver, _) = Driver::open(Config::new(NodeId(1), Vec::new()), RealFs::new(), &dir, identity)
            .expect("a fresh folder opens");
        driver.step(Event::Campaign).unwrap();
        for (i, &size) in sizes.iter().enumerate() {
            let payloads = vec![Payload::Command(Bytes::from(vec![b'x'; size]))];
            driver.step(Event::Propose { request: RequestId(i as u64), payloads }).unwrap();
            driver.end_round(true).unwrap();
            driver.on_synced().unwrap();
        }
        assert_eq!(driver.node().commit(), LogIndex(sizes.len() as u64 + 1));
        driver
    }

    /// Pages through the commands as the client does, checking each answer fits a frame.
    fn page_through(driver: &mut Driver<RealFs>, max: u32) -> Vec<usize> {
        let mut sizes = Vec::new();
        let mut from = LogIndex(2);
        while from <= driver.node().last_index() {
            let entries = page(driver, from, max).unwrap();
            assert!(!entries.is_empty(), "a page always moves on");
            assert_eq!(entries[0].index, from);
            let queried =
                entries.iter().map(|entry| QueriedEntry { entry: entry.clone(), id: Some(1) }).collect();
            let mut payload = Vec::new();
            let frame =
                Frame::QueryResult { commit: 0, first: 1, first_id: 1, last_index: 0, entries: queried };
            codec::encode(&frame, &mut payload);
            assert!(payload.len() <= FRAME_BYTES_MAX, "a page of {} bytes", payload.len());
            from = from.plus(entries.len() as u64);
            sizes.push(entries.len());
        }
        sizes
    }

    #[test]
    fn pages_are_cut_by_bytes_to_fit_a_frame() {
        // 40 MiB of commands: more than the core keeps in memory, so pages come from disk too.
        let mut driver = driver_with_commands("bytes", &[1024 * 1024; 40]);
        assert!(driver.node().cached_from() > LogIndex(2), "old entries left memory");
        assert_eq!(page_through(&mut driver, QUERY_ENTRIES_MAX), [15, 15, 10]);
    }

    #[test]
    fn pages_are_cut_by_count_and_the_largest_command_goes_alone() {
        assert_eq!(page_through(&mut driver_with_commands("count", &[10; 7]), 3), [3, 3, 1]);
        let mut driver = driver_with_commands("largest", &[10, COMMAND_BYTES_MAX, 10]);
        assert_eq!(page_through(&mut driver, QUERY_ENTRIES_MAX), [1, 1, 1]);
        assert!(page(&mut driver, LogIndex(5), 10).unwrap().is_empty(), "nothing past the log");
    }
}
