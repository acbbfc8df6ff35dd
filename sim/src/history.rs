//! The clients' history and its checks: exactly-once appends, and linearizability.
//!
//! Every command a client appends is unique (`c<client>.<op>[.<k>]`), so the final committed
//! log says where each landed. Exactly once (dissertation §6.3): no command is committed twice;
//! an operation's commands are committed all or none, contiguous, in order, as one entry of
//! their own (a batch is one entry); an acknowledged one is there, at the entry and command IDs
//! every acknowledgement of it named (a retry answered from the session table names the
//! original IDs); one reported failed (or refused, a condition that failed) is not; a
//! conditional append that landed has exactly `expect_last` commands before it; and nothing is
//! committed that no client appended.
//!
//! Linearizability: for an append-only log the committed log fixes every append's position, so
//! no search is needed (a WGL search would explore orders that the log already decides): the
//! history is linearizable iff the above holds and ordering every operation by its position
//! (an append at entry p as p, a read of length L just after L) respects real time: if x
//! finished before y started, x's position is not after y's.

use crate::checker::Broken;
use replog_core::{Entry, LogIndex};
use std::collections::BTreeMap;

/// The properties this module checks, as violations name them.
pub const EXACTLY_ONCE: &str = "exactly once";
pub const LINEARIZABILITY: &str = "linearizability";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A plain append of one command.
    Append {
        value: Vec<u8>,
    },
    /// A session's append of one or more commands as one entry; if `expect_last`, only where
    /// the log's last command ID is that.
    Request {
        commands: Vec<Vec<u8>>,
        expect_last: Option<u64>,
    },
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    /// Acknowledged: committed as entry `index`, its first command at ID `first_id`.
    AppendOk {
        index: LogIndex,
        first_id: u64,
    },
    /// Definitely not done (not leader, rejected, refused).
    Failed,
    /// A conditional append refused: the log's last command ID was `last_id`. Not done.
    ConditionFailed {
        last_id: u64,
    },
    /// May or may not have been done (timeout, leadership lost, a session that expired
    /// meanwhile, given up).
    Indeterminate,
    ReadOk {
        len: u64,
    },
}

#[derive(Clone, Debug)]
pub struct Op {
    pub client: u32,
    pub kind: OpKind,
    pub invoke: u64,
    pub response: Option<u64>,
    pub outcome: Outcome,
}

/// An answer naming where an operation's commands committed: to any of its attempts, late or
/// not, or to a resend after it was acknowledged.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    pub op: usize,
    pub index: LogIndex,
    pub first_id: u64,
    pub count: u64,
}

/// What a follow reader read from one starting ID on, gap-free as far as it knows.
#[derive(Clone, Debug)]
pub struct Stream {
    pub reader: usize,
    pub first_id: u64,
    pub commands: Vec<Vec<u8>>,
}

/// An operation's place in the linearization: (log position, 0 for an append / 1 for a read).
#[derive(Debug)]
struct Placed {
    invoke: u64,
    response: Option<u64>,
    key: (u64, u8),
    op: usize,
}

#[derive(Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
    pub acks: Vec<Ack>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub acked: u64,
    pub failed: u64,
    pub condition_failed: u64,
    pub indeterminate: u64,
    pub reads: u64,
}

/// Where a committed command is.
#[derive(Clone, Copy, Debug)]
struct Place {
    id: u64,
    index: LogIndex,
    /// Its position in its entry, and how many commands the entry holds.
    position: usize,
    entry_len: usize,
}

impl History {
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for op in &self.ops {
            match op.outcome {
                Outcome::AppendOk { .. } => tally.acked += 1,
                Outcome::Failed => tally.failed += 1,
                Outcome::ConditionFailed { .. } => tally.condition_failed += 1,
                Outcome::Indeterminate | Outcome::Pending => tally.indeterminate += 1,
                Outcome::ReadOk { .. } => tally.reads += 1,
            }
        }
        tally
    }

    /// Checks the history against the final committed log: exactly once first, then
    /// linearizability. What broke is named (`checker::Broken`).
    pub fn check(&self, committed: &[Entry]) -> Result<(), Broken> {
        let once = |detail: String| (EXACTLY_ONCE, detail);
        let places = places(committed).map_err(once)?;
        // Where each operation's commands are, all or none, as one entry of their own.
        let mut found_at: Vec<Option<Place>> = Vec::with_capacity(self.ops.len());
        for (number, op) in self.ops.iter().enumerate() {
            let describe = || op.describe(number);
            let found = match &op.kind {
                OpKind::Append { value } => where_committed(std::slice::from_ref(value), &places, &describe),
                OpKind::Request { commands, .. } => where_committed(commands, &places, &describe),
                OpKind::Read => Ok(None),
            }
            .map_err(once)?;
            if let (OpKind::Request { expect_last: Some(expected), .. }, Some(place)) = (&op.kind, found) {
                if place.id - 1 != *expected {
                    return Err(once(format!(
                        "{}: a conditional append expecting {expected} commands before it committed at ID {}",
                        describe(),
                        place.id
                    )));
                }
            }
            found_at.push(found);
        }
        self.check_acks(&found_at, committed)?;
        let claimed: usize = self
            .ops
            .iter()
            .zip(&found_at)
            .filter(|(_, found)| found.is_some())
            .map(|(op, _)| op.commands())
            .sum();
        if claimed != places.len() {
            return Err(once(self.stranger(&places, claimed)));
        }
        let mut placed: Vec<Placed> = Vec::new();
        for (number, (op, found)) in self.ops.iter().zip(&found_at).enumerate() {
            let describe = || op.describe(number);
            let at_response = |key| Placed { invoke: op.invoke, response: op.response, key, op: number };
            match (&op.outcome, found) {
                (Outcome::AppendOk { index, first_id }, Some(at))
                    if (at.index, at.id) == (*index, *first_id) =>
                {
                    placed.push(at_response((at.index.0, 0)))
                }
                (Outcome::AppendOk { .. }, _) => unreachable!("every acknowledgement is checked above"),
                (Outcome::Failed, Some(at)) => {
                    return Err((
                        LINEARIZABILITY,
                        format!("{} was reported failed but committed at {}", describe(), at.index),
                    ))
                }
                (Outcome::ConditionFailed { last_id }, Some(at)) => {
                    return Err(once(format!(
                        "{} was refused (condition failed, last ID {last_id}) but committed at {}",
                        describe(),
                        at.index
                    )))
                }
                (Outcome::Indeterminate | Outcome::Pending, Some(at)) => placed.push(Placed {
                    invoke: op.invoke,
                    response: None,
                    key: (at.index.0, 0),
                    op: number,
                }),
                (Outcome::ReadOk { len }, _) => {
                    if *len > committed.len() as u64 {
                        return Err((
                            LINEARIZABILITY,
                            format!("{} read {len} entries, only {} committed", describe(), committed.len()),
                        ));
                    }
                    placed.push(at_response((*len, 1)));
                }
                _ => {}
            }
        }
        real_time_order(&placed).map_err(|detail| (LINEARIZABILITY, detail))
    }

    /// Every answer that said where an operation committed (the operation's own outcome
    /// among them) names where its commands are: a retry answered from the session table
    /// names the original entry and IDs.
    fn check_acks(&self, found_at: &[Option<Place>], committed: &[Entry]) -> Result<(), Broken> {
        let acks = self.ops.iter().enumerate().filter_map(|(op, entry)| match entry.outcome {
            Outcome::AppendOk { index, first_id } => {
                Some(Ack { op, index, first_id, count: entry.commands() as u64 })
            }
            _ => None,
        });
        for ack in acks.chain(self.acks.iter().copied()) {
            let op = &self.ops[ack.op];
            let named = format!("{} (IDs {}..+{})", ack.index, ack.first_id, ack.count);
            let Some(at) = found_at[ack.op] else {
                let holds = committed.get(ack.index.0 as usize - 1).map_or_else(
                    || "nothing".to_string(),
                    |entry| replog_core::fmt_payloads(std::slice::from_ref(&entry.payload)),
                );
                let (property, why) = if holds == "nothing" {
                    (LINEARIZABILITY, "lost write".to_string())
                } else {
                    (
                        EXACTLY_ONCE,
                        format!("the entry there holds {holds}: an answer names the request's own entry"),
                    )
                };
                return Err((
                    property,
                    format!(
                        "{} was acknowledged at {named} but is not in the committed log: {why}",
                        op.describe(ack.op)
                    ),
                ));
            };
            if (at.index, at.id, op.commands() as u64) != (ack.index, ack.first_id, ack.count) {
                return Err((
                    EXACTLY_ONCE,
                    format!(
                        "{} was acknowledged at {named} but is at {} (IDs {}..+{}): an answer names the original IDs",
                        op.describe(ack.op),
                        at.index,
                        at.id,
                        op.commands()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A committed command no operation accounts for.
    fn stranger(&self, places: &BTreeMap<&[u8], Place>, claimed: usize) -> String {
        let known: std::collections::BTreeSet<&[u8]> = self
            .ops
            .iter()
            .flat_map(|op| match &op.kind {
                OpKind::Append { value } => vec![value.as_slice()],
                OpKind::Request { commands, .. } => commands.iter().map(Vec::as_slice).collect(),
                OpKind::Read => Vec::new(),
            })
            .collect();
        let stranger = places
            .keys()
            .find(|command| !known.contains(*command))
            .map_or_else(|| "?".into(), |command| String::from_utf8_lossy(command).into_owned());
        format!(
            "{} commands committed but clients account for {claimed}: {stranger:?} was never appended",
            places.len()
        )
    }
}

/// Every follow stream is gap-free and duplicate-free: the committed commands from its
/// first ID on, in order.
pub fn check_streams(streams: &[Stream], committed: &[Entry]) -> Result<(), String> {
    let all: Vec<&[u8]> = committed
        .iter()
        .flat_map(|entry| entry.payload.commands().iter().map(|command| command.as_slice()))
        .collect();
    for (number, stream) in streams.iter().enumerate() {
        let from = stream.first_id as usize - 1;
        for (k, command) in stream.commands.iter().enumerate() {
            let id = stream.first_id + k as u64;
            if all.get(from + k) != Some(&command.as_slice()) {
                return Err(format!(
                    "follow stream {number} of reader {} read {:?} as ID {id}, the committed log holds {:?} there (a stream is the committed commands, gap-free, each once)",
                    stream.reader,
                    String::from_utf8_lossy(command),
                    all.get(from + k).map(|c| String::from_utf8_lossy(c).into_owned())
                ));
            }
        }
    }
    Ok(())
}

/// Where each committed command is, by its bytes; a command committed twice is an error.
fn places(committed: &[Entry]) -> Result<BTreeMap<&[u8], Place>, String> {
    let mut places: BTreeMap<&[u8], Place> = BTreeMap::new();
    let mut id = 0;
    for entry in committed {
        let commands = entry.payload.commands();
        for (position, command) in commands.iter().enumerate() {
            id += 1;
            let place = Place { id, index: entry.index, position, entry_len: commands.len() };
            if let Some(first) = places.insert(command.as_slice(), place) {
                return Err(format!(
                    "command {:?} committed twice: ID {} at {} and ID {id} at {} (exactly once)",
                    String::from_utf8_lossy(command.as_slice()),
                    first.id,
                    first.index,
                    entry.index
                ));
            }
        }
    }
    Ok(places)
}

/// Where an operation's commands committed: all of them in one entry of their own, in order
/// (its first command's place), or none.
fn where_committed(
    commands: &[Vec<u8>],
    places: &BTreeMap<&[u8], Place>,
    describe: &dyn Fn() -> String,
) -> Result<Option<Place>, String> {
    let found: Vec<Option<&Place>> = commands.iter().map(|command| places.get(command.as_slice())).collect();
    let Some(first) = found[0] else {
        if let Some(k) = found.iter().position(Option::is_some) {
            return Err(format!(
                "{}: command {k} committed without command 0 (a batch is all or nothing)",
                describe()
            ));
        }
        return Ok(None);
    };
    for (k, place) in found.iter().enumerate() {
        let Some(place) = place else {
            return Err(format!(
                "{}: command {k} is not committed, command 0 is (a batch is all or nothing)",
                describe()
            ));
        };
        if place.index != first.index || place.position != k || place.entry_len != commands.len() {
            return Err(format!(
                "{}: command {k} is at {} position {} of {}, command 0 at {} (a batch is one entry of its own, in order)",
                describe(),
                place.index,
                place.position,
                place.entry_len,
                first.index
            ));
        }
    }
    Ok(Some(*first))
}

/// Real-time order: sweep operations by start time, tracking the latest position among those
/// already finished.
fn real_time_order(placed: &[Placed]) -> Result<(), String> {
    let mut finished: Vec<&Placed> = placed.iter().filter(|p| p.response.is_some()).collect();
    finished.sort_by_key(|p| p.response);
    let mut started: Vec<&Placed> = placed.iter().collect();
    started.sort_by_key(|p| p.invoke);
    let mut latest: Option<&Placed> = None;
    let mut next = 0;
    for op in started {
        while next < finished.len() && finished[next].response.expect("finished") < op.invoke {
            if latest.is_none() || latest.is_some_and(|l| finished[next].key > l.key) {
                latest = Some(finished[next]);
            }
            next += 1;
        }
        if let Some(before) = latest.filter(|before| before.key > op.key) {
            return Err(format!(
                "not linearizable: op {} finished before op {} started, yet is ordered after it ({:?} > {:?})",
                before.op, op.op, before.key, op.key
            ));
        }
    }
    Ok(())
}

impl Op {
    fn describe(&self, number: usize) -> String {
        format!("op {number} of client {} ({})", self.client, self.kind_name())
    }

    fn kind_name(&self) -> String {
        match &self.kind {
            OpKind::Append { value } => format!("append {}", String::from_utf8_lossy(value)),
            OpKind::Request { commands, expect_last } => {
                let commands: Vec<String> =
                    commands.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
                match expect_last {
                    Some(last) => format!("session append {} if last ID {last}", commands.join(",")),
                    None => format!("session append {}", commands.join(",")),
                }
            }
            OpKind::Read => "read".into(),
        }
    }

    /// How many commands it appends.
    fn commands(&self) -> usize {
        match &self.kind {
            OpKind::Append { .. } => 1,
            OpKind::Request { commands, .. } => commands.len(),
            OpKind::Read => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_core::{Bytes, ClientId, ClientRequest, Payload, Term};

    fn log(values: &[&str]) -> Vec<Entry> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Entry {
                index: LogIndex(i as u64 + 1),
                term: Term(1),
                payload: Payload::Command(Bytes::from(*v)),
            })
            .collect()
    }

    /// A log of entries, each a list of commands: one is a plain command, several a request.
    fn batches(entries: &[&[&str]]) -> Vec<Entry> {
        entries
            .iter()
            .enumerate()
            .map(|(i, commands)| {
                let payload = match commands {
                    [] => Payload::Noop,
                    [one] => Payload::Command(Bytes::from(*one)),
                    many => Payload::Request(ClientRequest {
                        client: ClientId(9),
                        seq: i as u64 + 1,
                        commands: many.iter().map(|c| Bytes::from(*c)).collect(),
                    }),
                };
                Entry { index: LogIndex(i as u64 + 1), term: Term(1), payload }
            })
            .collect()
    }

    fn history(ops: Vec<Op>) -> History {
        History { ops, ..History::default() }
    }

    fn ok(index: u64, first_id: u64) -> Outcome {
        Outcome::AppendOk { index: LogIndex(index), first_id }
    }

    fn append(value: &str, invoke: u64, response: Option<u64>, outcome: Outcome) -> Op {
        Op { client: 0, kind: OpKind::Append { value: value.as_bytes().to_vec() }, invoke, response, outcome }
    }

    fn request(commands: &[&str], expect_last: Option<u64>, invoke: u64, outcome: Outcome) -> Op {
        let commands = commands.iter().map(|c| c.as_bytes().to_vec()).collect();
        let response = (!matches!(outcome, Outcome::Indeterminate)).then_some(invoke + 1);
        Op { client: 1, kind: OpKind::Request { commands, expect_last }, invoke, response, outcome }
    }

    #[test]
    fn accepts_a_sequential_history() {
        let history = history(vec![
            append("a", 0, Some(5), ok(1, 1)),
            append("b", 6, Some(9), ok(2, 2)),
            Op {
                client: 1,
                kind: OpKind::Read,
                invoke: 10,
                response: Some(12),
                outcome: Outcome::ReadOk { len: 2 },
            },
        ]);
        history.check(&log(&["a", "b"])).unwrap();
    }

    #[test]
    fn rejects_lost_write_reordering_stale_read_and_failed_but_done() {
        let lost = history(vec![append("a", 0, Some(5), ok(1, 1))]);
        assert!(lost.check(&log(&[])).unwrap_err().1.contains("lost write"));

        let reordered = history(vec![append("a", 0, Some(5), ok(2, 2)), append("b", 6, Some(9), ok(1, 1))]);
        assert!(reordered.check(&log(&["b", "a"])).unwrap_err().1.contains("not linearizable"));

        let stale_read = history(vec![
            append("a", 0, Some(5), ok(1, 1)),
            Op {
                client: 1,
                kind: OpKind::Read,
                invoke: 6,
                response: Some(7),
                outcome: Outcome::ReadOk { len: 0 },
            },
        ]);
        assert!(stale_read.check(&log(&["a"])).unwrap_err().1.contains("not linearizable"));

        let failed_but_done = history(vec![append("a", 0, Some(5), Outcome::Failed)]);
        assert!(failed_but_done.check(&log(&["a"])).is_err());
    }

    #[test]
    fn indeterminate_may_or_may_not_land_but_respects_order() {
        let maybe = history(vec![
            append("a", 0, None, Outcome::Indeterminate),
            append("b", 1, None, Outcome::Indeterminate),
        ]);
        maybe.check(&log(&["b"])).unwrap();
        maybe.check(&log(&[])).unwrap();
        let late =
            history(vec![append("a", 0, Some(3), ok(2, 2)), append("b", 4, None, Outcome::Indeterminate)]);
        assert!(late.check(&log(&["b", "a"])).is_err(), "b started after a finished, so b cannot precede a");
    }

    #[test]
    fn batches_are_one_entry_of_their_own_all_or_nothing_and_ids_count_commands() {
        // IDs: a=1, (x,y,z)=2..=4, b=5 (a no-op at entry 2 holds none).
        let committed = batches(&[&["a"], &[], &["x", "y", "z"], &["b"]]);
        let good = history(vec![
            append("a", 0, Some(1), ok(1, 1)),
            request(&["x", "y", "z"], None, 2, ok(3, 2)),
            append("b", 4, Some(5), ok(4, 5)),
        ]);
        good.check(&committed).unwrap();
        let wrong_id =
            history(vec![append("a", 0, Some(1), ok(1, 1)), request(&["x", "y", "z"], None, 2, ok(3, 3))]);
        assert!(wrong_id.check(&batches(&[&["a"], &[], &["x", "y", "z"]])).unwrap_err().1.contains("IDs 3"));
        let split = history(vec![request(&["x", "y"], None, 0, Outcome::Indeterminate)]);
        assert!(split.check(&batches(&[&["x"], &["y"]])).unwrap_err().1.contains("one entry of its own"));
        let partial = history(vec![request(&["x", "y"], None, 0, Outcome::Indeterminate)]);
        assert!(partial.check(&batches(&[&["y"]])).unwrap_err().1.contains("all or nothing"));
        let reordered = history(vec![request(&["x", "y"], None, 0, Outcome::Indeterminate)]);
        assert!(reordered.check(&batches(&[&["y", "x"]])).is_err());
    }

    #[test]
    fn a_command_committed_twice_or_by_nobody_is_caught() {
        let twice = history(vec![request(&["x", "y"], None, 0, ok(1, 1))]);
        assert!(twice
            .check(&batches(&[&["x", "y"], &["x", "y"]]))
            .unwrap_err()
            .1
            .contains("committed twice"));
        let stranger = history(vec![append("a", 0, Some(1), ok(1, 1))]);
        assert!(stranger.check(&log(&["a", "zz"])).unwrap_err().1.contains("never appended"));
    }

    #[test]
    fn every_acknowledgement_names_the_original_ids() {
        let committed = batches(&[&["a"], &["x", "y"]]);
        let mut retried =
            history(vec![append("a", 0, Some(1), ok(1, 1)), request(&["x", "y"], None, 2, ok(2, 2))]);
        retried.acks.push(Ack { op: 1, index: LogIndex(2), first_id: 2, count: 2 });
        retried.check(&committed).unwrap();
        // A retry answered with another request's outcome (dedup on the number alone).
        retried.acks.push(Ack { op: 1, index: LogIndex(1), first_id: 1, count: 1 });
        assert!(retried.check(&committed).unwrap_err().1.contains("original IDs"));
        // An answer to an attempt the client gave up on counts too.
        let mut late = history(vec![request(&["x", "y"], None, 0, Outcome::Indeterminate)]);
        late.acks.push(Ack { op: 0, index: LogIndex(2), first_id: 2, count: 2 });
        assert!(late.check(&batches(&[&["a"]])).is_err());
    }

    #[test]
    fn conditional_appends_land_after_exactly_the_commands_expected_or_not_at_all() {
        let committed = batches(&[&["a"], &["x", "y"]]);
        let held =
            history(vec![append("a", 0, Some(1), ok(1, 1)), request(&["x", "y"], Some(1), 2, ok(2, 2))]);
        held.check(&committed).unwrap();
        let broken = history(vec![
            append("a", 0, Some(1), ok(1, 1)),
            request(&["x", "y"], Some(0), 2, Outcome::Indeterminate),
        ]);
        assert!(broken.check(&committed).unwrap_err().1.contains("conditional"));
        let refused_but_done = history(vec![
            append("a", 0, Some(1), ok(1, 1)),
            request(&["x", "y"], Some(1), 2, Outcome::ConditionFailed { last_id: 2 }),
        ]);
        assert!(refused_but_done.check(&committed).unwrap_err().1.contains("condition failed"));
    }

    #[test]
    fn follow_streams_are_gap_free_prefixes_from_their_start() {
        let committed = batches(&[&["a"], &[], &["x", "y"], &["b"]]);
        let ops = vec![
            append("a", 0, Some(1), ok(1, 1)),
            request(&["x", "y"], None, 2, ok(3, 2)),
            append("b", 4, Some(5), ok(4, 4)),
        ];
        let stream = |first_id: u64, commands: &[&str]| Stream {
            reader: 0,
            first_id,
            commands: commands.iter().map(|c| c.as_bytes().to_vec()).collect(),
        };
        history(ops).check(&committed).unwrap();
        let good = [stream(1, &["a", "x", "y", "b"]), stream(3, &["y"]), stream(2, &[])];
        check_streams(&good, &committed).unwrap();
        for bad in [stream(1, &["a", "y"]), stream(1, &["a", "x", "x"]), stream(4, &["b", "c"])] {
            assert!(check_streams(&[bad], &committed).unwrap_err().contains("follow stream"));
        }
    }
}
