//! A client session: exactly-once appends to a replog cluster, from a program.
//!
//! [`Session`] is what `replog append` uses, and what a program embeds. It numbers its appends
//! (dissertation §6.3): a retry of an append carries the same session id and sequence number,
//! and the leader answers a retry of a committed append with the original command IDs instead
//! of appending it again. So it can retry whenever an answer is lost (a connection that broke,
//! a leader that changed) until its deadline, and reports an unknown outcome only when the
//! deadline passes without an answer.
//!
//! It finds the leader by itself ([`Router`]): it follows redirects, learns the cluster's
//! members from any node that answers, and when a node knows no leader or does not answer it
//! tries the others instead of waiting on one.
//!
//! ```no_run
//! use replog_runtime::session::Session;
//! use std::time::Duration;
//!
//! let mut session = Session::connect(&["127.0.0.1:8080", "127.0.0.1:8081"]).unwrap();
//! let appended = session.append(&[b"user_login:alice".as_slice()], Duration::from_secs(5)).unwrap();
//! println!("committed as ID {}", appended.first_id);
//! // Optimistic concurrency: append only if nobody appended since.
//! match session.append_if(appended.last_id(), &[b"next".as_slice()], Duration::from_secs(5)) {
//!     Ok(next) => println!("appended as ID {}", next.first_id),
//!     Err(error) => eprintln!("{error}"),
//! }
//! ```
//!
//! One session is one sequence: use it from one thread, one append at a time (a program with
//! several writers opens a session each).

use crate::address;
use crate::client::{ClientError, Link, Uncertain};
use crate::codec::{request_extra_bytes, AppendResult, Frame};
use crate::limits::{COMMAND_BYTES_MAX, REQUEST_COMMANDS_MAX};
use crate::sessions::SessionRefusal;
use std::net::SocketAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The longest one attempt waits for an answer before trying elsewhere. A leader cut off from
/// its peers answers (its entries may or may not commit) once it steps down, within an election
/// timeout; this bounds a node that does not answer at all (stopped, or a dead link).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);
/// The pause before going round the members again when none could serve.
const ROUND_PAUSE: Duration = Duration::from_millis(20);
/// The pause before retrying a leader that is not ready (new in its term: a round trip away).
const NOT_READY_PAUSE: Duration = Duration::from_millis(2);

/// Where a session's append landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The ID of its first command (IDs run on: `first_id..first_id + count`).
    pub first_id: u64,
    /// How many commands it held.
    pub count: u64,
    /// Its Raft log index (all its commands share the entry).
    pub index: u64,
    /// The term it was appended in.
    pub term: u64,
    /// The node that answered.
    pub leader: SocketAddr,
    /// True if the leader recognised this as a repeat of an append it had committed or held
    /// already (an earlier attempt whose answer was lost), and answered with its outcome.
    pub recognised: bool,
}

impl Appended {
    /// The ID of its last command.
    pub fn last_id(&self) -> u64 {
        self.first_id + self.count - 1
    }
}

/// The members of a cluster as a client knows them, and which one leads.
#[derive(Debug)]
pub struct Router {
    /// Every address learned, in the order learned (the targets first).
    members: Vec<SocketAddr>,
    /// The leader, when a node named it (or it answered as leader).
    leader: Option<SocketAddr>,
    /// Where the next guess starts when no leader is known.
    next: usize,
    /// Members already asked for the member list, so a dead one is not asked twice in a row.
    learned_from: Option<SocketAddr>,
    /// An open connection, to the node last talked to.
    link: Option<Link>,
}

impl Router {
    /// A router that starts from these addresses (at least one).
    pub fn new(targets: &[&str]) -> Result<Router, ClientError> {
        let mut members = Vec::new();
        for target in targets {
            let address = address::parse(target)?;
            if !members.contains(&address) {
                members.push(address);
            }
        }
        assert!(!members.is_empty(), "a router needs an address to start from");
        Ok(Router { members, leader: None, next: 0, learned_from: None, link: None })
    }

    /// The members known so far.
    pub fn members(&self) -> &[SocketAddr] {
        &self.members
    }

    /// The node to try next: the leader if known, else the members in turn.
    fn pick(&mut self) -> SocketAddr {
        if let Some(leader) = self.leader {
            return leader;
        }
        let address = self.members[self.next % self.members.len()];
        self.next = (self.next + 1) % self.members.len();
        address
    }

    /// A node named `leader` as the leader.
    fn follow(&mut self, leader: &str) {
        if let Ok(leader) = leader.parse::<SocketAddr>() {
            self.learn(leader);
            self.leader = Some(leader);
        }
    }

    /// `address` could not serve (down, no leader known, or not the leader it was said to be):
    /// guess elsewhere next, starting after it.
    fn passed_over(&mut self, address: SocketAddr) {
        if self.leader == Some(address) {
            self.leader = None;
        }
        if let Some(at) = self.members.iter().position(|&member| member == address) {
            self.next = (at + 1) % self.members.len();
        }
        if self.link.as_ref().is_some_and(|link| link.address() == address) {
            self.link = None;
        }
    }

    fn learn(&mut self, address: SocketAddr) {
        if !self.members.contains(&address) {
            self.members.push(address);
        }
    }

    /// Asks `address` for the cluster's members (once per node in a row), so a client started
    /// with one address can go round the others.
    fn learn_members(&mut self, address: SocketAddr, timeout: Duration) {
        if self.learned_from == Some(address) {
            return;
        }
        self.learned_from = Some(address);
        let Ok(mut link) = Link::open(address, timeout) else {
            return;
        };
        if let Ok(Frame::StatusResult(report)) = link.call(&Frame::Status) {
            for member in &report.members {
                if let Ok(member) = member.address.parse() {
                    self.learn(member);
                }
            }
            if let Some(leader) = report.leader {
                self.learn(leader);
                self.leader = Some(leader);
            }
        }
    }

    /// A connection to `address`: the open one if it goes there.
    fn link(&mut self, address: SocketAddr, timeout: Duration) -> Result<&mut Link, ClientError> {
        if self.link.as_ref().is_none_or(|link| link.address() != address) {
            self.link = Some(Link::open(address, timeout)?);
        }
        let link = self.link.as_mut().expect("just opened");
        link.set_timeout(timeout).map_err(|error| ClientError::Io {
            doing: "configuring",
            address,
            error,
        })?;
        Ok(link)
    }
}

/// A client session (see the module docs).
#[derive(Debug)]
pub struct Session {
    router: Router,
    client: u64,
    /// The number of the next append.
    seq: u64,
    /// A commit index seen before this session's first append was first sent.
    since: u64,
    /// Resumed at a sequence number an earlier process may have sent: until that append is
    /// answered, a refusal that cannot tell whether it was appended is an unknown outcome.
    resumed: bool,
    /// `since` was learned (a fresh session learns it before its first append is sent; a
    /// resumed one cannot know it).
    since_known: bool,
}

impl Session {
    /// A new session (a random id) with a cluster reached through any of `targets`.
    pub fn connect(targets: &[&str]) -> Result<Session, ClientError> {
        let mut session = Session::resume(targets, fresh_client_id(), 1)?;
        session.resumed = false;
        session.since_known = false;
        Ok(session)
    }

    /// Goes on with session `client` at sequence number `seq` (a program that stored where its
    /// session was, or a script retrying an append it did not see answered: the same
    /// `client` and `seq` are recognised, within the session's window).
    pub fn resume(targets: &[&str], client: u64, seq: u64) -> Result<Session, ClientError> {
        Ok(Session {
            router: Router::new(targets)?,
            client,
            seq: seq.max(1),
            since: 0,
            resumed: true,
            since_known: true,
        })
    }

    /// The session's id.
    pub fn client_id(&self) -> u64 {
        self.client
    }

    /// The sequence number the next append takes.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The cluster as this session knows it.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Appends `commands` (at least one) as one entry, all or nothing, in order, exactly once:
    /// retried through lost answers and leader changes until `deadline`.
    pub fn append(&mut self, commands: &[&[u8]], deadline: Duration) -> Result<Appended, ClientError> {
        self.send(commands, None, deadline)
    }

    /// As [`Session::append`], committed only if the log's last command ID is `expect_last` at
    /// that point (0: the log holds no command); otherwise [`ClientError::ConditionFailed`]
    /// with the last ID, and nothing appended.
    pub fn append_if(
        &mut self,
        expect_last: u64,
        commands: &[&[u8]],
        deadline: Duration,
    ) -> Result<Appended, ClientError> {
        self.send(commands, Some(expect_last), deadline)
    }

    fn send(
        &mut self,
        commands: &[&[u8]],
        expect_last: Option<u64>,
        deadline: Duration,
    ) -> Result<Appended, ClientError> {
        let mut maybe_appended = self.resumed;
        let result = self.attempt(commands, expect_last, deadline, &mut maybe_appended);
        if result.is_err() && maybe_appended {
            // The number may be taken by the append whose outcome is unknown: the next append
            // (other commands) must not be taken for a retry of it.
            self.seq += 1;
            self.resumed = false;
        }
        result
    }

    /// Tries until answered or `deadline`; sets `maybe_appended` once an attempt may have been
    /// appended (from then on only this session's dedup can tell).
    fn attempt(
        &mut self,
        commands: &[&[u8]],
        expect_last: Option<u64>,
        deadline: Duration,
        maybe_appended: &mut bool,
    ) -> Result<Appended, ClientError> {
        let bytes = request_extra_bytes(commands) as u64;
        if bytes > COMMAND_BYTES_MAX as u64 {
            return Err(ClientError::CommandTooLarge { bytes, limit: COMMAND_BYTES_MAX as u64 });
        }
        if commands.is_empty() {
            return Err(ClientError::Rejected { reason: "nothing to append".into() });
        }
        if commands.len() > REQUEST_COMMANDS_MAX {
            let reason = format!("{} commands in one append; at most {REQUEST_COMMANDS_MAX}", commands.len());
            return Err(ClientError::Rejected { reason });
        }
        let started = Instant::now();
        let mut last: Option<ClientError> = None;
        let mut request = 0u64;
        // Nodes that could not serve in a row: a pause after every member's turn, so a
        // redirect to a dead leader, or two nodes naming each other, never spin.
        let mut misses = 0;
        loop {
            let remaining = deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                let waited = deadline;
                return Err(match (*maybe_appended, last) {
                    (true, last) => ClientError::OutcomeUnknown(Uncertain::Deadline {
                        waited,
                        last: last.map(|error| error.to_string()),
                    }),
                    (false, last) => ClientError::NoLeader {
                        target: self.router.members[0].to_string(),
                        waited,
                        last: last.map(Box::new),
                    },
                });
            }
            let address = self.router.pick();
            let timeout = remaining.min(ATTEMPT_TIMEOUT).max(Duration::from_millis(10));
            let link = match self.router.link(address, timeout) {
                Ok(link) => link,
                Err(error) => {
                    self.router.passed_over(address);
                    self.missed(&mut misses, &mut last, error);
                    continue;
                }
            };
            if !self.since_known {
                // Before a session's first append is first sent: a commit index it cannot
                // precede, so the leader can tell it apart from an append of a dropped session.
                match link.call(&Frame::Status) {
                    Ok(Frame::StatusResult(report)) => {
                        self.since = report.commit.0;
                        self.since_known = true;
                    }
                    Ok(other) => return Err(ClientError::UnexpectedAnswer { address, frame: other.name() }),
                    Err(error) => {
                        self.router.passed_over(address);
                        let doing = "asking the commit index of";
                        self.missed(&mut misses, &mut last, ClientError::Io { doing, address, error });
                        continue;
                    }
                }
            }
            let Ok(link) = self.router.link(address, timeout) else {
                self.router.passed_over(address);
                continue;
            };
            request += 1;
            let frame = Frame::SessionAppend {
                request,
                client: self.client,
                seq: self.seq,
                since: self.since,
                expect_last,
                commands: commands.iter().map(|command| command.to_vec()).collect(),
            };
            let answer = match link.call(&frame) {
                Ok(Frame::AppendResult { result, .. }) => result,
                Ok(other) => return Err(ClientError::UnexpectedAnswer { address, frame: other.name() }),
                Err(error) => {
                    // Sent, perhaps received: the retry is recognised if it was appended.
                    *maybe_appended = true;
                    self.router.passed_over(address);
                    last = Some(ClientError::OutcomeUnknown(Uncertain::ConnectionLost { address, error }));
                    continue;
                }
            };
            match answer {
                AppendResult::Committed { index, term, id, count, recognised } => {
                    self.seq += 1;
                    self.resumed = false;
                    self.router.leader = Some(address);
                    return Ok(Appended { first_id: id, count, index, term, leader: address, recognised });
                }
                AppendResult::NotLeader { leader: Some(leader) } if leader.parse() != Ok(address) => {
                    self.router.follow(&leader);
                    self.missed(
                        &mut misses,
                        &mut last,
                        ClientError::NotLeader { address, leader: Some(leader) },
                    );
                }
                AppendResult::NotLeader { leader } => {
                    // It knows no leader: ask the others rather than wait on it.
                    self.router.passed_over(address);
                    self.router.learn_members(address, timeout);
                    self.missed(&mut misses, &mut last, ClientError::NotLeader { address, leader });
                }
                AppendResult::Failed { reason, retry } => {
                    // retry: nothing appended (the leader pushed back, or is handing over).
                    // Otherwise leadership changed after it appended: the retry finds out.
                    *maybe_appended |= !retry;
                    self.router.passed_over(address);
                    sleep(ROUND_PAUSE.min(remaining));
                    last = Some(ClientError::Rejected { reason });
                }
                AppendResult::TooLarge { bytes, limit } => {
                    return Err(ClientError::CommandTooLarge { bytes, limit })
                }
                AppendResult::Refused(refusal) => {
                    if let Some(error) = self.on_refusal(refusal, *maybe_appended) {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// What a refusal means: `None` to retry (the session was put right), else the error.
    fn on_refusal(&mut self, refusal: SessionRefusal, maybe_appended: bool) -> Option<ClientError> {
        match refusal {
            SessionRefusal::NotReady => {
                sleep(NOT_READY_PAUSE);
                None
            }
            // No attempt can have been appended: any commit index since is a valid `since`.
            SessionRefusal::SessionsDropped { commit } if !maybe_appended => {
                self.since = commit;
                None
            }
            // The session expired, or ran too far ahead of what it committed (appends whose
            // outcome was unknown skip their numbers), before this append was ever appended: a
            // new session is safe.
            SessionRefusal::UnknownSession | SessionRefusal::TooFarAhead { .. } if !maybe_appended => {
                self.client = fresh_client_id();
                self.seq = 1;
                self.since = 0;
                self.since_known = false;
                None
            }
            // Definite only if no earlier attempt is about: one still on its way (a paused node
            // reads it later) could be admitted once the log's end is `expect_last` again.
            SessionRefusal::ConditionFailed { last_id } if !maybe_appended => {
                Some(ClientError::ConditionFailed { last_id })
            }
            SessionRefusal::ConditionFailed { last_id } => Some(ClientError::OutcomeUnknown(Uncertain::Reported(
                format!(
                    "condition failed now (the last command ID is {last_id}), but an earlier attempt may still \
                     be delivered and appended"
                ),
            ))),
            SessionRefusal::UnknownSession if self.resumed => {
                Some(ClientError::OutcomeUnknown(Uncertain::Reported(format!(
                    "session {:016x} is unknown to the cluster (expired, or never started: a session starts at sequence \
                     number 1); if an earlier run sent this append, it may or may not be in the log",
                    self.client
                ))))
            }
            SessionRefusal::SessionsDropped { .. } if self.resumed => {
                Some(ClientError::OutcomeUnknown(Uncertain::Reported(format!(
                    "session {:016x} is new to the cluster, but the cluster has dropped sessions since (expired, or \
                     pushed out by newer ones), so it cannot tell whether an earlier run of this append committed: \
                     check the log (replog query --last N), and name a new session",
                    self.client
                ))))
            }
            refusal @ (SessionRefusal::SessionsDropped { .. } | SessionRefusal::UnknownSession) => {
                Some(ClientError::OutcomeUnknown(Uncertain::Reported(format!(
                    "{refusal}: an earlier attempt may have been appended"
                ))))
            }
            refusal => Some(ClientError::Rejected { reason: refusal.to_string() }),
        }
    }

    /// A node could not serve: once as many in a row as there are members, pause a little.
    fn missed(&mut self, misses: &mut usize, last: &mut Option<ClientError>, error: ClientError) {
        *last = Some(error);
        *misses += 1;
        if *misses >= self.router.members.len() {
            *misses = 0;
            sleep(ROUND_PAUSE);
        }
    }
}

/// A random session id (never 0), from the OS's randomness.
pub fn fresh_client_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}
