//! Reduces a failing run's schedule to a locally minimal one that still fails the same way:
//! no single fault can be removed, and no fault rate zeroed, without the failure going away.

use crate::options::{Options, TICK};
use crate::schedule::Schedule;
use crate::world::{run, Trace};
use crate::Violation;

/// The same failure: same kind and same property.
fn same(a: &Violation, b: &Violation) -> bool {
    a.kind == b.kind && a.property == b.property
}

fn fails(options: &Options, schedule: &Schedule, target: &Violation) -> bool {
    run(options, schedule, Trace::Off).violation.is_some_and(|v| same(&v, target))
}

/// Returns the reduced options and schedule, and how many runs it took.
pub fn shrink(
    options: &Options,
    schedule: &Schedule,
    target: &Violation,
    mut progress: impl FnMut(usize, usize),
) -> (Options, Schedule, usize) {
    let mut options = options.clone();
    let mut schedule = schedule.clone();
    let mut runs = 0;
    // A failure inside the fault phase does not depend on anything after it: end the phase
    // right after the failure and drop the faults that would never fire (same run, shorter).
    let fault_phase_end = options.ticks * TICK;
    if target.at < fault_phase_end {
        let mut candidate_options = options.clone();
        candidate_options.ticks = target.at / TICK + 1;
        let candidate =
            Schedule { faults: schedule.faults.iter().filter(|t| t.at <= target.at).cloned().collect() };
        runs += 1;
        if fails(&candidate_options, &candidate, target) {
            options = candidate_options;
            schedule = candidate;
        }
    }
    loop {
        let mut changed = false;
        // Remove chunks of faults, halving the chunk size down to single faults (ddmin style).
        let mut chunk = schedule.faults.len().div_ceil(2).max(1);
        while chunk >= 1 && !schedule.faults.is_empty() {
            let mut start = 0;
            while start < schedule.faults.len() {
                let mut candidate = schedule.clone();
                let end = (start + chunk).min(candidate.faults.len());
                candidate.faults.drain(start..end);
                runs += 1;
                progress(runs, schedule.faults.len());
                if fails(&options, &candidate, target) {
                    schedule = candidate;
                    changed = true;
                } else {
                    start += chunk;
                }
            }
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
        // Switch off whole fault classes.
        let zeroings: [fn(&mut Options); 8] = [
            |o| o.drop_rate = 0.0,
            |o| o.dup_rate = 0.0,
            |o| o.delay_rate = 0.0,
            |o| o.replay_rate = 0.0,
            |o| o.torn_write_rate = 0.0,
            |o| o.fsync_fail_rate = 0.0,
            |o| o.clock_drift_pct = 0,
            |o| o.clients = o.clients.min(1),
        ];
        for zero in zeroings {
            let mut candidate = options.clone();
            zero(&mut candidate);
            if candidate == options {
                continue;
            }
            runs += 1;
            progress(runs, schedule.faults.len());
            if fails(&candidate, &schedule, target) {
                options = candidate;
                changed = true;
            }
        }
        if !changed {
            return (options, schedule, runs);
        }
    }
}
