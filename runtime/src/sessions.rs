//! Client sessions: exactly-once appends (dissertation §6.3).
//!
//! A client numbers its requests in a session it names (a random [`ClientId`]); a retry of a
//! request carries the same number. The state machine keeps, per session, the outcome of its
//! recent requests ([`SessionTable`]), built deterministically from the committed log and
//! carried in snapshots, so every node and every restart agrees on it.
//!
//! The leader decides whether a request is new when it proposes it, never at apply: a
//! duplicate never enters the log, so command IDs stay a plain count of the log's commands.
//! That is sound once the leader has committed an entry of its own term (the same barrier as
//! membership changes, dissertation §4.1/§6.4): from then on no entry outside its log can ever
//! commit (a later leader holds the committed entry of this term, and so no entry of an
//! earlier term past it), so the table at its applied index plus the requests in its log after
//! it are every request that is or may become committed. The driver checks both
//! (`Driver::admit`); this module is the table and its rules.
//!
//! Bounds: a session keeps the outcomes of its last [`SessionLimits::window`] requests; the
//! table keeps at most [`SessionLimits::sessions_max`] sessions, dropping the least recently
//! active first, and drops a session idle for [`SessionLimits::idle_entries`] log entries. A
//! dropped session's next request is refused ([`SessionRefusal::UnknownSession`]), never
//! appended blindly. The one request that cannot say whether its session was dropped is a
//! session's first: it carries `since`, the commit index its client saw before sending it
//! first, and is refused ([`SessionRefusal::SessionsDropped`]) if any session active after
//! that point was dropped since; the client then knows nothing was appended.

use replog_core::{ClientId, Entry, LogIndex, Payload, Term};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How much the table remembers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Sessions kept; the least recently active goes first.
    pub sessions_max: usize,
    /// Outcomes kept per session: the last this many sequence numbers. A request older than
    /// that is refused ([`SessionRefusal::Forgotten`]); one further ahead of the newest than
    /// that too ([`SessionRefusal::TooFarAhead`]).
    pub window: u64,
    /// A session with no request in this many log entries is dropped.
    pub idle_entries: u64,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        SessionLimits { sessions_max: 16_384, window: 8, idle_entries: 10_000_000 }
    }
}

/// What a committed request came to: what a retry of it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Outcome {
    /// Its entry.
    pub index: LogIndex,
    /// The entry's term.
    pub term: Term,
    /// The ID of its first command.
    pub first_id: u64,
    /// How many commands it held.
    pub count: u64,
}

/// Why a session's request was refused. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionRefusal {
    /// The session is not in the table: it expired (idle, or pushed out by newer sessions), or
    /// never existed. A request that was sent before may or may not have committed.
    UnknownSession,
    /// A session's first request, but sessions active since `since` were dropped: if an earlier
    /// attempt of it committed, its session may be among them. Retry with `since` = `commit`
    /// if no earlier attempt may have been appended.
    SessionsDropped {
        /// The leader's commit index: a valid `since` for a request not sent before.
        commit: u64,
    },
    /// Its outcome is no longer kept (it is older than the session's window).
    Forgotten {
        /// The oldest sequence number still remembered.
        oldest: u64,
    },
    /// Further ahead of the session's newest request than its window.
    TooFarAhead {
        /// The session's newest sequence number.
        newest: u64,
        /// The window.
        window: u64,
    },
    /// A conditional append whose condition does not hold: the log's last command ID is
    /// `last_id` (0: no command yet).
    ConditionFailed {
        /// The last command ID in the leader's log.
        last_id: u64,
    },
    /// The leader has not yet committed an entry of its term, so it cannot tell a retry from
    /// a new request: retry in a moment.
    NotReady,
}

impl std::fmt::Display for SessionRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionRefusal::UnknownSession => {
                f.write_str("unknown or expired session (sessions idle too long, or pushed out by newer ones, are forgotten)")
            }
            SessionRefusal::SessionsDropped { commit } => write!(
                f,
                "sessions were dropped since this session's first request may have been sent; \
                 a first attempt may have committed (leader's commit index {commit})"
            ),
            SessionRefusal::Forgotten { oldest } => {
                write!(f, "this request's outcome is forgotten (the session remembers from sequence number {oldest})")
            }
            SessionRefusal::TooFarAhead { newest, window } => write!(
                f,
                "sequence number too far ahead of the session's newest ({newest}; at most {window} ahead)"
            ),
            SessionRefusal::ConditionFailed { last_id } => {
                write!(f, "condition failed: the last command ID is {last_id}")
            }
            SessionRefusal::NotReady => f.write_str("the leader is not ready yet (new in its term); retry"),
        }
    }
}

/// What the table says of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not committed and not refused: append it (unless it is in the log already).
    New,
    /// Committed already: answer this.
    Committed(Outcome),
    /// Refused.
    Refused(SessionRefusal),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The highest sequence number committed.
    newest: u64,
    /// The index of its latest committed request.
    active: LogIndex,
    /// Outcomes of its last `window` sequence numbers.
    outcomes: BTreeMap<u64, Outcome>,
    /// Sequence numbers below this were forgotten (pruned): never judged new again, whatever
    /// the window is later.
    floor: u64,
}

/// The sessions and their recent outcomes, as of some applied index. Deterministic: the same
/// committed entries give the same table on every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionTable {
    limits: SessionLimits,
    sessions: BTreeMap<ClientId, Session>,
    /// (latest activity, session): the order sessions are dropped in.
    by_activity: BTreeSet<(LogIndex, ClientId)>,
    /// The latest activity of any dropped session (0: none dropped).
    dropped_through: LogIndex,
}

/// An outcome in a snapshot: [seq, index, term, first_id, count].
type WireOutcome = (u64, u64, u64, u64, u64);

/// The table's snapshot encoding (inside the state machine's image).
#[derive(Serialize, Deserialize)]
struct Wire {
    dropped_through: u64,
    /// (client as 16 hex digits, newest, active, floor, outcomes).
    sessions: Vec<(String, u64, u64, u64, Vec<WireOutcome>)>,
}

impl SessionTable {
    /// An empty table.
    pub fn new(limits: SessionLimits) -> SessionTable {
        assert!(limits.window >= 1 && limits.sessions_max >= 1, "a session table keeps something");
        SessionTable {
            limits,
            sessions: BTreeMap::new(),
            by_activity: BTreeSet::new(),
            dropped_through: LogIndex::ZERO,
        }
    }

    /// The limits it keeps.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Keeps these limits from the next applied request on.
    pub fn set_limits(&mut self, limits: SessionLimits) {
        assert!(limits.window >= 1 && limits.sessions_max >= 1, "a session table keeps something");
        self.limits = limits;
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether it holds no session and never dropped one: an empty table's encoding can be
    /// left out.
    pub fn is_pristine(&self) -> bool {
        self.sessions.is_empty() && self.dropped_through == LogIndex::ZERO
    }

    /// Whether it holds no session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// What to do with request `seq` of `client`, first sent after the client saw commit index
    /// `since`. `keyed_on_seq_alone` is a planted bug (the simulator's evidence): the outcome
    /// of any session's request with that number is taken for this one's.
    pub fn check(&self, client: ClientId, seq: u64, since: LogIndex, keyed_on_seq_alone: bool) -> Verdict {
        if keyed_on_seq_alone {
            if let Some(outcome) = self.sessions.values().find_map(|session| session.outcomes.get(&seq)) {
                return Verdict::Committed(*outcome);
            }
        }
        let window = self.limits.window;
        let Some(session) = self.sessions.get(&client) else {
            if seq > 1 {
                return Verdict::Refused(SessionRefusal::UnknownSession);
            }
            // A first request: if an attempt of it committed at some index > since and its session
            // was dropped since, then `dropped_through` >= that index > since.
            if self.dropped_through > since {
                return Verdict::Refused(SessionRefusal::SessionsDropped { commit: 0 });
            }
            return Verdict::New;
        };
        if let Some(outcome) = session.outcomes.get(&seq) {
            return Verdict::Committed(*outcome);
        }
        let oldest = session.floor.max(1);
        if seq < oldest {
            return Verdict::Refused(SessionRefusal::Forgotten { oldest });
        }
        if seq > session.newest.saturating_add(window) {
            return Verdict::Refused(SessionRefusal::TooFarAhead { newest: session.newest, window });
        }
        Verdict::New
    }

    /// Records a committed entry whose first command has ID `first_id` (a session's request;
    /// other entries change nothing). Returns false if the request was committed already (a
    /// duplicate in the log: a bug the simulator reports).
    pub fn apply(&mut self, entry: &Entry, first_id: u64) -> bool {
        let Payload::Request(request) = &entry.payload else {
            return true;
        };
        let outcome =
            Outcome { index: entry.index, term: entry.term, first_id, count: request.commands.len() as u64 };
        let window = self.limits.window;
        // A session created here starts at this request: if it was dropped between this
        // request's admission and now, its earlier requests are forgotten, never new again
        // (a late retry of one would otherwise be appended a second time).
        let session = self.sessions.entry(request.client).or_insert_with(|| Session {
            newest: 0,
            active: LogIndex::ZERO,
            outcomes: BTreeMap::new(),
            floor: request.seq,
        });
        let fresh = !session.outcomes.contains_key(&request.seq);
        if fresh {
            session.outcomes.insert(request.seq, outcome);
        }
        session.newest = session.newest.max(request.seq);
        session.floor = session.floor.max(session.newest.saturating_sub(window - 1));
        let floor = session.floor;
        session.outcomes.retain(|&seq, _| seq >= floor);
        self.by_activity.remove(&(session.active, request.client));
        session.active = entry.index;
        self.by_activity.insert((entry.index, request.client));
        self.expire(entry.index);
        fresh
    }

    /// Drops sessions idle too long, then the least recently active past the cap.
    fn expire(&mut self, now: LogIndex) {
        while let Some(&(active, client)) = self.by_activity.first() {
            let idle = now.0.saturating_sub(active.0) > self.limits.idle_entries;
            if !idle && self.sessions.len() <= self.limits.sessions_max {
                break;
            }
            self.by_activity.pop_first();
            self.sessions.remove(&client);
            self.dropped_through = self.dropped_through.max(active);
        }
    }

    /// The table as JSON, for a snapshot's image.
    pub fn encode(&self) -> serde_json::Value {
        let sessions = self
            .sessions
            .iter()
            .map(|(client, session)| {
                let outcomes = session
                    .outcomes
                    .iter()
                    .map(|(&seq, o)| (seq, o.index.0, o.term.0, o.first_id, o.count))
                    .collect();
                (format!("{:016x}", client.0), session.newest, session.active.0, session.floor, outcomes)
            })
            .collect();
        serde_json::to_value(Wire { dropped_through: self.dropped_through.0, sessions })
            .expect("a session table serializes")
    }

    /// A table from [`SessionTable::encode`]'s JSON.
    pub fn decode(value: serde_json::Value, limits: SessionLimits) -> Result<SessionTable, String> {
        let wire: Wire =
            serde_json::from_value(value).map_err(|e| format!("unreadable session table: {e}"))?;
        let mut table = SessionTable::new(limits);
        table.dropped_through = LogIndex(wire.dropped_through);
        for (client, newest, active, floor, outcomes) in wire.sessions {
            let client = u64::from_str_radix(&client, 16)
                .map(ClientId)
                .map_err(|_| format!("session id {client:?} is not hex"))?;
            let outcomes = outcomes
                .into_iter()
                .map(|(seq, index, term, first_id, count)| {
                    (seq, Outcome { index: LogIndex(index), term: Term(term), first_id, count })
                })
                .collect();
            if !table.by_activity.insert((LogIndex(active), client))
                || table
                    .sessions
                    .insert(client, Session { newest, active: LogIndex(active), outcomes, floor })
                    .is_some()
            {
                return Err(format!("session {client} appears twice, or two sessions share an activity"));
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_core::{Bytes, ClientRequest};

    fn request(index: u64, client: u64, seq: u64, commands: usize) -> Entry {
        let commands = (0..commands).map(|i| Bytes::from(format!("c{client}-{seq}-{i}").as_str())).collect();
        Entry {
            index: LogIndex(index),
            term: Term(1),
            payload: Payload::Request(ClientRequest { client: ClientId(client), seq, commands }),
        }
    }

    fn limits(sessions_max: usize, window: u64, idle_entries: u64) -> SessionLimits {
        SessionLimits { sessions_max, window, idle_entries }
    }

    #[test]
    fn a_committed_request_is_answered_with_its_outcome_and_others_are_new() {
        let mut table = SessionTable::new(SessionLimits::default());
        let c = ClientId(7);
        assert_eq!(table.check(c, 1, LogIndex::ZERO, false), Verdict::New);
        assert!(table.apply(&request(3, 7, 1, 2), 10));
        let outcome = Outcome { index: LogIndex(3), term: Term(1), first_id: 10, count: 2 };
        assert_eq!(table.check(c, 1, LogIndex::ZERO, false), Verdict::Committed(outcome));
        assert_eq!(table.check(c, 2, LogIndex::ZERO, false), Verdict::New);
        // Another session's request with the same number is its own.
        assert_eq!(table.check(ClientId(8), 1, LogIndex::ZERO, false), Verdict::New);
        // ... unless dedup is keyed on the number alone (the planted bug).
        assert_eq!(table.check(ClientId(8), 1, LogIndex::ZERO, true), Verdict::Committed(outcome));
        // A duplicate reaching the table is reported.
        assert!(!table.apply(&request(4, 7, 1, 2), 12));
    }

    #[test]
    fn the_window_bounds_what_a_session_remembers_and_accepts() {
        let mut table = SessionTable::new(limits(100, 4, 1000));
        let c = ClientId(1);
        for seq in 1..=10 {
            table.apply(&request(seq, 1, seq, 1), seq);
        }
        assert_eq!(
            table.check(c, 6, LogIndex::ZERO, false),
            Verdict::Refused(SessionRefusal::Forgotten { oldest: 7 })
        );
        assert!(matches!(table.check(c, 7, LogIndex::ZERO, false), Verdict::Committed(_)));
        assert_eq!(table.check(c, 14, LogIndex::ZERO, false), Verdict::New);
        assert_eq!(
            table.check(c, 15, LogIndex::ZERO, false),
            Verdict::Refused(SessionRefusal::TooFarAhead { newest: 10, window: 4 })
        );
        // An unknown session may only start at 1.
        assert_eq!(
            table.check(ClientId(2), 2, LogIndex::ZERO, false),
            Verdict::Refused(SessionRefusal::UnknownSession)
        );
    }

    #[test]
    fn what_a_session_forgot_stays_forgotten_when_the_window_grows() {
        let small = limits(100, 2, 1000);
        let mut table = SessionTable::new(small);
        for seq in 1..=5 {
            table.apply(&request(seq, 1, seq, 1), seq);
        }
        table.set_limits(SessionLimits { window: 8, ..small });
        assert_eq!(
            table.check(ClientId(1), 2, LogIndex::ZERO, false),
            Verdict::Refused(SessionRefusal::Forgotten { oldest: 4 })
        );
        let decoded = SessionTable::decode(table.encode(), SessionLimits::default()).unwrap();
        assert!(matches!(decoded.check(ClientId(1), 3, LogIndex::ZERO, false), Verdict::Refused(_)));
    }

    #[test]
    fn a_session_dropped_before_its_request_applies_forgets_what_came_before() {
        // Session 1's request 3 was admitted while the session was known; the session was
        // dropped before it applied: the table must not take request 2 for new.
        let mut table = SessionTable::new(limits(1, 8, 1000));
        table.apply(&request(1, 1, 1, 1), 1);
        table.apply(&request(2, 1, 2, 1), 2);
        table.apply(&request(3, 2, 1, 1), 3); // session 1 pushed out
        table.apply(&request(4, 1, 3, 1), 4); // its request 3, admitted earlier, applies
        assert_eq!(
            table.check(ClientId(1), 2, LogIndex::ZERO, false),
            Verdict::Refused(SessionRefusal::Forgotten { oldest: 3 })
        );
    }

    #[test]
    fn dropped_sessions_refuse_rather_than_duplicate() {
        let mut table = SessionTable::new(limits(2, 4, 1000));
        table.apply(&request(1, 1, 1, 1), 1);
        table.apply(&request(2, 2, 1, 1), 2);
        table.apply(&request(3, 3, 1, 1), 3); // session 1, least recently active, goes
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.check(ClientId(1), 2, LogIndex::ZERO, false),
            Verdict::Refused(SessionRefusal::UnknownSession)
        );
        // Session 1's first request retried: its client saw commit 0 before sending it first.
        assert!(matches!(
            table.check(ClientId(1), 1, LogIndex::ZERO, false),
            Verdict::Refused(SessionRefusal::SessionsDropped { .. })
        ));
        // A session whose client saw commit 3 first cannot have been active before: new.
        assert_eq!(table.check(ClientId(4), 1, LogIndex(3), false), Verdict::New);
        // Idle sessions expire.
        table.apply(&request(2000, 3, 2, 1), 4);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_table_round_trips_through_its_encoding() {
        let mut table = SessionTable::new(limits(2, 4, 1000));
        for (index, client) in [(1, 1), (2, 2), (3, 3), (4, 2)] {
            table.apply(&request(index, client, index, 1), index);
        }
        let decoded = SessionTable::decode(table.encode(), table.limits()).unwrap();
        assert_eq!(decoded, table);
        assert!(SessionTable::decode(serde_json::json!({"x": 1}), table.limits()).is_err());
    }
}
