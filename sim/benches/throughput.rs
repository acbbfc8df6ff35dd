//! Simulator speed: simulated ticks per second and seeds per second for a fixed configuration
//! (5 nodes, 10,000 fault ticks, each seed's own default fault mix), median of several rounds.
//! `cargo bench -p sim`.

use sim::{run, Options, Schedule, Trace};
use std::time::Instant;

const ROUNDS: usize = 5;
const SEEDS_PER_ROUND: u64 = 8;

fn main() {
    let mut ticks_per_second = Vec::new();
    let mut seeds_per_second = Vec::new();
    for round in 0..ROUNDS {
        let began = Instant::now();
        let mut ticks = 0;
        for seed in 0..SEEDS_PER_ROUND {
            let mut options = Options::from_seed(1000 + seed);
            options.apply("nodes=5 ticks=10000").expect("valid options");
            let schedule = Schedule::generate(&options);
            let result = run(&options, &schedule, Trace::Off);
            assert!(result.violation.is_none(), "seed {}: {:?}", 1000 + seed, result.violation);
            // Simulated ticks across all nodes.
            ticks += result.summary.ticks * options.nodes;
        }
        let seconds = began.elapsed().as_secs_f64();
        ticks_per_second.push(ticks as f64 / seconds);
        seeds_per_second.push(SEEDS_PER_ROUND as f64 / seconds);
        eprintln!(
            "round {round}: {:.0} node-ticks/s, {:.1} seeds/s",
            ticks as f64 / seconds,
            SEEDS_PER_ROUND as f64 / seconds
        );
    }
    println!(
        "sim 5 nodes x 10000 ticks: median {:.0} node-ticks/s, {:.2} seeds/s per core ({ROUNDS} rounds of {SEEDS_PER_ROUND} seeds)",
        median(&mut ticks_per_second),
        median(&mut seeds_per_second)
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
