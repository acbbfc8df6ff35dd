//! Where a run's trace lines go, and how a core event reads in them.

use replog_core::{fmt_payloads, Event};
use std::collections::VecDeque;
use std::io::Write as _;

/// Lines kept for a failure report.
const TRACE_TAIL_LINES: usize = 40;

/// Where trace lines go.
pub enum Trace {
    Off,
    /// Keep the last lines only (failure reports).
    Tail(VecDeque<String>),
    /// Keep everything (tests).
    Collect(String),
    /// Stream to a writer (`--trace`).
    Stream(Box<dyn std::io::Write>),
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trace::Off => write!(f, "Trace::Off"),
            Trace::Tail(lines) => write!(f, "Trace::Tail({} lines)", lines.len()),
            Trace::Collect(all) => write!(f, "Trace::Collect({} bytes)", all.len()),
            Trace::Stream(_) => write!(f, "Trace::Stream"),
        }
    }
}

impl Trace {
    pub(crate) fn on(&self) -> bool {
        !matches!(self, Trace::Off)
    }

    pub(crate) fn line(&mut self, line: String) {
        match self {
            Trace::Off => {}
            Trace::Tail(lines) => {
                if lines.len() == TRACE_TAIL_LINES {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
            Trace::Collect(all) => {
                all.push_str(&line);
                all.push('\n');
            }
            Trace::Stream(out) => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
}

pub(crate) fn describe(event: &Event) -> String {
    match event {
        Event::Tick => "tick".into(),
        Event::Receive(message) => format!("recv {message}"),
        Event::Propose { request, payloads } => format!("propose {request} {}", fmt_payloads(payloads)),
        Event::Read { request } => format!("read {request}"),
        Event::LogPersisted { index, term } => format!("persisted {index}/{term}"),
        Event::Campaign => "campaign".into(),
        Event::LogRead { peer, entries } => match (entries.first(), entries.last()) {
            (Some(first), Some(last)) => format!("log-read for {peer} {}..={}", first.index, last.index),
            _ => format!("log-read for {peer} nothing"),
        },
        Event::TransferLeadership { to } => format!("transfer-leadership to {to}"),
        Event::ChangeMembership { request, change, force } => {
            format!("change-membership {request} {change:?}{}", if *force { " forced" } else { "" })
        }
        Event::Compact { snapshot } => {
            format!("compact {}/{} {:?}", snapshot.meta.index, snapshot.meta.term, snapshot.data)
        }
    }
}
