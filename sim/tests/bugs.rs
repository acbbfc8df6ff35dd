//! Evidence that the simulator finds bugs: each classic Raft bug planted in the core, and each
//! ordering bug planted in the runtime's driver, must be caught within the first 1,000 seeds of
//! the default sweep. Run in release by CI:
//! `cargo test --release -p sim --features bugs --test bugs`.

#![cfg(feature = "bugs")]

use replog_core::Bug;
use sim::{run_seed, Kind, Planted, Trace};

const SEEDS_MAX: u64 = 1000;

#[test]
fn every_classic_bug_is_caught_within_a_thousand_seeds() {
    let mut report = Vec::new();
    for bug in Planted::all() {
        let caught = (0..SEEDS_MAX).find_map(|seed| {
            let (_, _, result) = run_seed(seed, Some(bug), Trace::Off);
            result.violation.map(|violation| (seed, violation))
        });
        let (seed, violation) =
            caught.unwrap_or_else(|| panic!("{} not caught in {SEEDS_MAX} seeds", bug.name()));
        let expected = if bug.is_availability() { Kind::Liveness } else { Kind::Safety };
        assert_eq!(violation.kind, expected, "{}: {violation}", bug.name());
        report.push(format!(
            "{:<34} seeds run {:>4}  caught by {}",
            bug.name(),
            seed + 1,
            violation.property
        ));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn shrunk_schedules_still_fail_the_same_way() {
    let (options, schedule, result) = run_seed(3, Some(Planted::Core(Bug::VoteWithoutLogCheck)), Trace::Off);
    let violation = result.violation.expect("seed 3 catches vote-without-log-check");
    let (small_options, small, runs) = sim::shrink::shrink(&options, &schedule, &violation, |_, _| {});
    assert!(runs > 0 && small.faults.len() <= schedule.faults.len());
    let replayed = sim::run(&small_options, &small, Trace::Off).violation.expect("still fails");
    assert_eq!((replayed.kind, replayed.property), (violation.kind, violation.property));
    // Parsing the written file gives the same failing run.
    let (parsed_options, parsed) = sim::Schedule::parse(&small.render(&small_options)).unwrap();
    assert!(sim::run(&parsed_options, &parsed, Trace::Off).violation.is_some());
}
