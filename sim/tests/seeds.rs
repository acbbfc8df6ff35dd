//! The simulator on fixed seeds: golden traces, determinism, and regression seeds.

use sim::{run, run_seed, Options, Schedule, Trace};
use std::path::Path;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn short(seed: u64) -> Options {
    let mut options = Options::from_seed(seed);
    options.apply("ticks=150").unwrap();
    options
}

fn traced(options: &Options) -> (String, sim::RunResult) {
    let schedule = Schedule::generate(options);
    let mut result = run(options, &schedule, Trace::Collect(String::new()));
    let trace = match std::mem::replace(&mut result.trace, Trace::Off) {
        Trace::Collect(all) => all,
        _ => unreachable!(),
    };
    (trace, result)
}

/// The opening of a few short runs, and their summaries (whose digest covers every step), as
/// golden snapshots: a behaviour change in the core or the simulator shows as a diff.
#[test]
fn golden_traces_of_short_seeds() {
    for seed in [1, 2, 3] {
        let options = short(seed);
        let (trace, result) = traced(&options);
        assert!(result.violation.is_none(), "seed {seed}: {:?}", result.violation);
        let head: Vec<&str> = trace.lines().take(200).collect();
        let text =
            format!("{options}\n{}\n\n{}\n", sim::world::render_summary(&result.summary), head.join("\n"));
        insta::with_settings!({ snapshot_path => "../../fixtures/snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(format!("sim_seed_{seed}"), text);
        });
    }
}

#[test]
fn same_seed_same_trace_byte_for_byte() {
    let options = short(42);
    let (first, a) = traced(&options);
    let (second, b) = traced(&options);
    assert_eq!(a.summary.digest, b.summary.digest);
    assert!(first == second, "traces differ");
    let (_, _, untraced) = run_seed(42, None, Trace::Off);
    let (_, _, again) = run_seed(42, None, Trace::Off);
    assert_eq!(untraced.summary.digest, again.summary.digest, "tracing must not change the run");
}

#[test]
fn regression_seeds_pass() {
    let list = std::fs::read_to_string(fixtures().join("regression-seeds.txt")).unwrap();
    // `SEED [key=value ...] # why`: the overrides pin a run that later option draws would change.
    let runs: Vec<(u64, String)> = list
        .lines()
        .filter_map(|line| {
            let mut words = line.split('#').next()?.split_whitespace();
            let seed = words.next()?.parse().ok()?;
            Some((seed, words.collect::<Vec<_>>().join(" ")))
        })
        .collect();
    assert!(runs.len() >= 3, "regression seeds: {runs:?}");
    for (seed, overrides) in runs {
        let mut options = Options::from_seed(seed);
        options.apply(&overrides).unwrap();
        let result = run(&options, &Schedule::generate(&options), Trace::Off);
        assert!(result.violation.is_none(), "seed {seed} ({options}): {}", result.violation.unwrap());
    }
}

#[test]
fn a_small_sweep_passes_and_makes_progress() {
    for seed in 100..140 {
        let (_, _, result) = run_seed(seed, None, Trace::Off);
        assert!(result.violation.is_none(), "seed {seed}: {}", result.violation.unwrap());
        assert!(result.summary.committed > 0, "seed {seed} committed nothing");
    }
}

#[test]
fn schedule_files_replay_exactly() {
    let (options, schedule, result) = run_seed(7, None, Trace::Off);
    let (parsed_options, parsed) = Schedule::parse(&schedule.render(&options)).unwrap();
    let replayed = run(&parsed_options, &parsed, Trace::Off);
    assert_eq!(replayed.summary.digest, result.summary.digest);
}
