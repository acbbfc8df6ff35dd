//! replog's deterministic simulator: the second driver of `replog_core::Node`. One seed gives
//! one exact run of a faulty cluster, checked for Raft's safety properties at every step, for
//! liveness after the faults stop, and for linearizability at the end.

#![forbid(unsafe_code)]

mod availability;
pub mod bugs;
pub mod checker;
mod cluster;
pub mod digest;
pub mod disk;
mod faults;
mod follow;
mod frontend;
mod health;
pub mod history;
pub mod network;
mod node;
pub mod operator;
pub mod options;
pub mod provenance;
mod safety;
pub mod schedule;
pub mod shrink;
mod summary;
mod timeline;
mod trace;
mod workload;
pub mod world;

pub use bugs::Planted;
pub use checker::{Kind, Violation};
pub use options::Options;
pub use schedule::Schedule;
pub use world::{run, RunResult, Summary, Trace};

/// Runs a seed with its own generated schedule.
pub fn run_seed(seed: u64, bug: Option<Planted>, trace: Trace) -> (Options, Schedule, RunResult) {
    let mut options = Options::from_seed(seed);
    options.bug = bug;
    let schedule = Schedule::generate(&options);
    let result = run(&options, &schedule, trace);
    (options, schedule, result)
}
