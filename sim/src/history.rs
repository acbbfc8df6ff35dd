//! The clients' history and its linearizability check.
//!
//! For an append-only log the committed log fixes every append's position, so no search is
//! needed (a WGL search would explore orders that the log already decides): the history is
//! linearizable iff every acknowledged append sits where it was acknowledged, nothing reported
//! as failed or never proposed is in the log, and ordering every operation by its position
//! (an append at p as p, a read of length L just after L) respects real time: if x finished
//! before y started, x's position is not after y's.

use replog_core::{Entry, LogIndex, Payload};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Append { value: Vec<u8> },
    Read,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    AppendOk {
        index: LogIndex,
    },
    /// Definitely not done (not leader, rejected).
    Failed,
    /// May or may not have been done (timeout, leadership lost).
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
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub acked: u64,
    pub failed: u64,
    pub indeterminate: u64,
    pub reads: u64,
}

impl History {
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for op in &self.ops {
            match op.outcome {
                Outcome::AppendOk { .. } => tally.acked += 1,
                Outcome::Failed => tally.failed += 1,
                Outcome::Indeterminate | Outcome::Pending => tally.indeterminate += 1,
                Outcome::ReadOk { .. } => tally.reads += 1,
            }
        }
        tally
    }

    /// Checks the history against the final committed log.
    pub fn check(&self, committed: &[Entry]) -> Result<(), String> {
        let mut position: BTreeMap<&[u8], u64> = BTreeMap::new();
        for entry in committed {
            if let Payload::Command(data) = &entry.payload {
                if position.insert(data.as_slice(), entry.index.0).is_some() {
                    return Err(format!(
                        "command {:?} committed twice",
                        String::from_utf8_lossy(data.as_slice())
                    ));
                }
            }
        }
        let mut proposed = 0usize;
        let mut placed: Vec<Placed> = Vec::new();
        for (number, op) in self.ops.iter().enumerate() {
            let found = match &op.kind {
                OpKind::Append { value } => {
                    proposed += 1;
                    position.get(value.as_slice()).copied()
                }
                OpKind::Read => None,
            };
            let describe = || format!("op {number} of client {} ({:?})", op.client, op.kind_name());
            match (&op.outcome, found) {
                (Outcome::AppendOk { index }, Some(at)) if at == index.0 => {
                    placed.push(Placed { invoke: op.invoke, response: op.response, key: (at, 0), op: number })
                }
                (Outcome::AppendOk { index }, Some(at)) => {
                    return Err(format!("{} acknowledged at {index} but committed at {at}", describe()))
                }
                (Outcome::AppendOk { index }, None) => {
                    return Err(format!(
                        "{} acknowledged at {index} is not in the committed log: lost write",
                        describe()
                    ))
                }
                (Outcome::Failed, Some(at)) => {
                    return Err(format!("{} was reported failed but committed at {at}", describe()))
                }
                (Outcome::Indeterminate | Outcome::Pending, Some(at)) => {
                    placed.push(Placed { invoke: op.invoke, response: None, key: (at, 0), op: number })
                }
                (Outcome::ReadOk { len }, _) => {
                    if *len > committed.len() as u64 {
                        return Err(format!(
                            "{} read {len} entries, only {} committed",
                            describe(),
                            committed.len()
                        ));
                    }
                    placed.push(Placed {
                        invoke: op.invoke,
                        response: op.response,
                        key: (*len, 1),
                        op: number,
                    });
                }
                _ => {}
            }
        }
        if position.len() > proposed {
            return Err(format!("{} commands committed but only {proposed} proposed", position.len()));
        }
        // Real-time order: sweep operations by start time, tracking the latest position among
        // those already finished.
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
}

impl Op {
    fn kind_name(&self) -> String {
        match &self.kind {
            OpKind::Append { value } => format!("append {}", String::from_utf8_lossy(value)),
            OpKind::Read => "read".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_core::{Bytes, Term};

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

    fn append(value: &str, invoke: u64, response: Option<u64>, outcome: Outcome) -> Op {
        Op { client: 0, kind: OpKind::Append { value: value.as_bytes().to_vec() }, invoke, response, outcome }
    }

    #[test]
    fn accepts_a_sequential_history() {
        let history = History {
            ops: vec![
                append("a", 0, Some(5), Outcome::AppendOk { index: LogIndex(1) }),
                append("b", 6, Some(9), Outcome::AppendOk { index: LogIndex(2) }),
                Op {
                    client: 1,
                    kind: OpKind::Read,
                    invoke: 10,
                    response: Some(12),
                    outcome: Outcome::ReadOk { len: 2 },
                },
            ],
        };
        history.check(&log(&["a", "b"])).unwrap();
    }

    #[test]
    fn rejects_lost_write_reordering_stale_read_and_failed_but_done() {
        let lost = History { ops: vec![append("a", 0, Some(5), Outcome::AppendOk { index: LogIndex(1) })] };
        assert!(lost.check(&log(&[])).unwrap_err().contains("lost write"));

        let reordered = History {
            ops: vec![
                append("a", 0, Some(5), Outcome::AppendOk { index: LogIndex(2) }),
                append("b", 6, Some(9), Outcome::AppendOk { index: LogIndex(1) }),
            ],
        };
        assert!(reordered.check(&log(&["b", "a"])).unwrap_err().contains("not linearizable"));

        let stale_read = History {
            ops: vec![
                append("a", 0, Some(5), Outcome::AppendOk { index: LogIndex(1) }),
                Op {
                    client: 1,
                    kind: OpKind::Read,
                    invoke: 6,
                    response: Some(7),
                    outcome: Outcome::ReadOk { len: 0 },
                },
            ],
        };
        assert!(stale_read.check(&log(&["a"])).unwrap_err().contains("not linearizable"));

        let failed_but_done = History { ops: vec![append("a", 0, Some(5), Outcome::Failed)] };
        assert!(failed_but_done.check(&log(&["a"])).is_err());
    }

    #[test]
    fn indeterminate_may_or_may_not_land_but_respects_order() {
        let maybe = History {
            ops: vec![
                append("a", 0, None, Outcome::Indeterminate),
                append("b", 1, None, Outcome::Indeterminate),
            ],
        };
        maybe.check(&log(&["b"])).unwrap();
        maybe.check(&log(&[])).unwrap();
        let late = History {
            ops: vec![
                append("a", 0, Some(3), Outcome::AppendOk { index: LogIndex(2) }),
                append("b", 4, None, Outcome::Indeterminate),
            ],
        };
        assert!(late.check(&log(&["b", "a"])).is_err(), "b started after a finished, so b cannot precede a");
    }
}
