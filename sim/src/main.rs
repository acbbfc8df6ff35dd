//! `cargo run -p sim -- --seed N` runs one seed; `--seeds A..B` sweeps a range on every core.
//! Exit codes: 0 every check held, 3 a safety violation, 4 a liveness failure, 1 other errors.

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use sim::world::render_summary;
use sim::{run, shrink::shrink, Kind, Options, Planted, Schedule, Summary, Trace, Violation};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "sim", about = "replog's deterministic simulator: one seed, one exact run")]
struct Args {
    /// Run one seed.
    #[arg(long, conflicts_with_all = ["seeds", "schedule"])]
    seed: Option<u64>,
    /// Sweep seeds A..B (B excluded) on every core.
    #[arg(long, value_parser = parse_range)]
    seeds: Option<(u64, u64)>,
    /// Replay a schedule file (its options line says which seed and rates).
    #[arg(long)]
    schedule: Option<PathBuf>,
    /// On failure, shrink the fault schedule and write the minimal one here.
    #[arg(long)]
    schedule_out: Option<PathBuf>,
    /// Print the full event/action trace.
    #[arg(long)]
    trace: bool,
    /// In a sweep, go on after a failure.
    #[arg(long)]
    keep_going: bool,
    /// Run every seed twice and require identical trace digests.
    #[arg(long)]
    check_determinism: bool,
    /// Override drawn options, e.g. "nodes=5 ticks=10000".
    #[arg(long)]
    set: Option<String>,
    /// Plant a deliberate core, driver or health-check bug (builds with --features bugs).
    #[arg(long, value_parser = Planted::parse)]
    bug: Option<Planted>,
    /// Worker threads for a sweep (default: every core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Seeds-to-detection of every planted bug (or only --bug's), from each of these seed
    /// offsets (e.g. "0,10000,20000"); builds with the bugs feature.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["seed", "seeds", "schedule"])]
    bug_table: Option<Vec<u64>>,
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text.split_once("..").ok_or("expected A..B")?;
    let a: u64 = a.parse().map_err(|_| "bad start")?;
    let b: u64 = b.parse().map_err(|_| "bad end")?;
    if b <= a {
        return Err("empty range".into());
    }
    Ok((a, b))
}

fn main() {
    let args = Args::parse();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var("SIM_PANICS").is_ok() || !sim::world::in_core_step() {
            default_hook(info);
        }
    }));
    if args.bug.is_some() && !cfg!(feature = "bugs") {
        fail("--bug needs a build with the bugs feature: cargo run -p sim --features bugs -- ...");
    }
    let code = if let Some(offsets) = &args.bug_table {
        if !cfg!(feature = "bugs") {
            fail("--bug-table needs a build with the bugs feature: cargo run -p sim --features bugs -- ...");
        }
        bug_table(&args, offsets)
    } else if let Some((start, end)) = args.seeds {
        sweep(&args, start, end)
    } else if let Some(path) = &args.schedule {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display())));
        let (options, schedule) =
            Schedule::parse(&text).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
        if let Some(bug) = options.bug.filter(|_| !cfg!(feature = "bugs")) {
            fail(&format!(
                "the schedule switches on bug {bug}: replay it with cargo run -p sim --features bugs"
            ));
        }
        single(&args, options, schedule, format!("cargo run -p sim -- --schedule {}", path.display()))
    } else {
        let seed = args.seed.unwrap_or_else(|| fail("give --seed N, --seeds A..B or --schedule FILE"));
        let options = options_for(&args, seed);
        let schedule = Schedule::generate(&options);
        single(&args, options, schedule, replay_command(&args, seed))
    };
    std::process::exit(code);
}

fn fail(message: &str) -> ! {
    eprintln!("sim: {message}");
    std::process::exit(1);
}

fn options_for(args: &Args, seed: u64) -> Options {
    let mut options = Options::from_seed(seed);
    if let Some(pairs) = &args.set {
        options.apply(pairs).unwrap_or_else(|e| fail(&e));
    }
    options.bug = args.bug;
    options
}

fn replay_command(args: &Args, seed: u64) -> String {
    let mut command = String::from("cargo run -p sim");
    if args.bug.is_some() {
        command.push_str(" --features bugs");
    }
    command.push_str(&format!(" -- --seed {seed}"));
    if let Some(set) = &args.set {
        command.push_str(&format!(" --set \"{set}\""));
    }
    if let Some(bug) = &args.bug {
        command.push_str(&format!(" --bug {bug}"));
    }
    command
}

fn exit_code(violation: &Violation) -> i32 {
    match violation.kind {
        Kind::Safety => 3,
        Kind::Liveness => 4,
    }
}

fn single(args: &Args, options: Options, schedule: Schedule, replay: String) -> i32 {
    println!("seed {}: {options} faults={}", options.seed, schedule.faults.len());
    let trace = if args.trace {
        Trace::Stream(Box::new(std::io::BufWriter::new(std::io::stdout())))
    } else {
        Trace::Off
    };
    let result = run(&options, &schedule, trace);
    drop(result.trace);
    if args.check_determinism {
        let again = run(&options, &schedule, Trace::Off);
        if again.summary.digest != result.summary.digest {
            println!(
                "NONDETERMINISM: digests {:016x} and {:016x} differ",
                result.summary.digest, again.summary.digest
            );
            return 3;
        }
    }
    println!("{}", render_summary(&result.summary));
    let Some(violation) = result.violation else {
        println!("ok: every check held");
        return 0;
    };
    println!("{violation}");
    if !args.trace {
        let tail = run(&options, &schedule, Trace::Tail(Default::default()));
        if let Trace::Tail(lines) = tail.trace {
            println!("last trace lines:");
            for line in lines {
                println!("  {line}");
            }
        }
    }
    println!("replay: {replay}");
    if let Some(path) = &args.schedule_out {
        let bar = ProgressBar::new_spinner();
        let (small_options, small, runs) = shrink(&options, &schedule, &violation, |runs, faults| {
            bar.set_message(format!("shrinking: {runs} runs, {faults} faults left"));
            bar.tick();
        });
        bar.finish_and_clear();
        std::fs::write(path, small.render(&small_options))
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
        println!(
            "shrunk {} faults to {} in {runs} runs; minimal schedule in {}: cargo run -p sim{} -- --schedule {}",
            schedule.faults.len(),
            small.faults.len(),
            path.display(),
            if options.bug.is_some() { " --features bugs" } else { "" },
            path.display()
        );
    }
    exit_code(&violation)
}

struct SeedOutcome {
    seed: u64,
    summary: Summary,
    violation: Option<Violation>,
    nondeterministic: bool,
}

/// Seeds run until each planted bug is caught, from each offset (at most `BUG_TABLE_SEEDS_MAX`).
fn bug_table(args: &Args, offsets: &[u64]) -> i32 {
    const BUG_TABLE_SEEDS_MAX: u64 = 2000;
    let jobs =
        args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
    let cases: Vec<(Planted, u64)> = Planted::all()
        .into_iter()
        .filter(|bug| args.bug.is_none_or(|only| only == *bug))
        .flat_map(|bug| offsets.iter().map(move |&offset| (bug, offset)))
        .collect();
    let next = AtomicU64::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let case = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&(bug, offset)) = cases.get(case) else {
                    return;
                };
                let found = (offset..offset + BUG_TABLE_SEEDS_MAX).find_map(|seed| {
                    let (_, _, result) = sim::run_seed(seed, Some(bug), Trace::Off);
                    result.violation.map(|violation| (seed - offset + 1, violation.property))
                });
                results.lock().expect("no panics while held").push((case, found));
            });
        }
    });
    let mut results = results.into_inner().expect("threads done");
    results.sort_by_key(|(case, _)| *case);
    let mut counts = Vec::new();
    let mut missed = 0;
    println!(
        "{:<30} {}",
        "bug",
        offsets.iter().map(|o| format!("from {o:>6}")).collect::<Vec<_>>().join("  ")
    );
    for row in results.chunks(offsets.len()) {
        let bug = cases[row[0].0].0;
        let cells: Vec<String> = row
            .iter()
            .map(|(_, found)| match found {
                Some((seeds, property)) => {
                    counts.push(*seeds);
                    format!("{seeds:>5} ({property})")
                }
                None => {
                    missed += 1;
                    format!("missed in {BUG_TABLE_SEEDS_MAX}")
                }
            })
            .collect();
        println!("{:<30} {}", bug.name(), cells.join("  "));
    }
    counts.sort_unstable();
    let at =
        |q: f64| counts.get(((counts.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or(0);
    println!(
        "seeds to detection over {} runs: median {}, p90 {}, max {}, missed {missed}",
        counts.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
    i32::from(missed > 0)
}

fn sweep(args: &Args, start: u64, end: u64) -> i32 {
    let jobs =
        args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
    let total = end - start;
    let next = AtomicU64::new(start);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<SeedOutcome>();
    let began = Instant::now();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {per_sec} eta {eta} {msg}")
            .expect("valid template"),
    );
    let plain_progress = bar.is_hidden();
    let mut outcomes = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    return;
                }
                let options = options_for(args, seed);
                let schedule = Schedule::generate(&options);
                // A panic in the simulator itself is reported against its seed, not lost.
                let outcome = std::panic::catch_unwind(|| {
                    let result = run(&options, &schedule, Trace::Off);
                    let nondeterministic = args.check_determinism
                        && run(&options, &schedule, Trace::Off).summary.digest != result.summary.digest;
                    SeedOutcome {
                        seed,
                        summary: result.summary,
                        violation: result.violation,
                        nondeterministic,
                    }
                })
                .unwrap_or_else(|_| SeedOutcome {
                    seed,
                    summary: Summary::default(),
                    violation: Some(Violation {
                        kind: Kind::Safety,
                        property: "simulator panic".into(),
                        at: 0,
                        node: None,
                        detail: "the simulator itself panicked (message above): a bug in sim/".into(),
                    }),
                    nondeterministic: false,
                });
                if tx.send(outcome).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for outcome in rx {
            bar.inc(1);
            let failed = outcome.violation.is_some() || outcome.nondeterministic;
            if failed {
                bar.set_message(format!("failure at seed {}", outcome.seed));
                if !args.keep_going {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            let done = outcomes.len() as u64 + 1;
            if plain_progress && (done % 250 == 0 || failed) {
                eprintln!("sim: {done}/{total} seeds, {:.1}s", began.elapsed().as_secs_f64());
            }
            outcomes.push(outcome);
        }
    });
    bar.finish_and_clear();
    outcomes.sort_by_key(|o| o.seed);
    let elapsed = began.elapsed().as_secs_f64();
    let failures: Vec<&SeedOutcome> =
        outcomes.iter().filter(|o| o.violation.is_some() || o.nondeterministic).collect();
    println!("{}", coverage_report(&outcomes));
    for failure in failures.iter().take(if args.keep_going { usize::MAX } else { 1 }) {
        match &failure.violation {
            Some(violation) => println!("seed {}: {violation}", failure.seed),
            None => println!("seed {}: NONDETERMINISM: two runs gave different digests", failure.seed),
        }
        println!("  replay: {}", replay_command(args, failure.seed));
    }
    println!(
        "seeds {start}..{end}: {} run, {} failed, {:.1} seeds/s ({jobs} threads, {elapsed:.1}s)",
        outcomes.len(),
        failures.len(),
        outcomes.len() as f64 / elapsed.max(1e-9)
    );
    match failures.first() {
        None => 0,
        Some(first) => first.violation.as_ref().map_or(3, exit_code),
    }
}

fn coverage_report(outcomes: &[SeedOutcome]) -> String {
    type Metric = fn(&Summary) -> u64;
    let count = |f: Metric| -> (usize, u64) {
        let seeds = outcomes.iter().filter(|o| f(&o.summary) > 0).count();
        let total = outcomes.iter().map(|o| f(&o.summary)).sum();
        (seeds, total)
    };
    let rows: [(&str, Metric); 71] = [
        ("crash", |s| s.crashes),
        ("restart", |s| s.restarts),
        ("pause", |s| s.pauses),
        ("partition", |s| s.partitions),
        ("message dropped", |s| s.network.dropped),
        ("message duplicated", |s| s.network.duplicated),
        ("message delayed", |s| s.network.delayed),
        ("stale message replayed", |s| s.network.replayed),
        ("torn write", |s| s.coverage.torn_writes),
        ("fsync failure", |s| s.coverage.fsync_failures),
        ("split vote", |s| s.coverage.split_votes),
        ("log truncation", |s| s.coverage.truncations),
        ("stale-term message", |s| s.coverage.stale_term_messages),
        ("leader step-down", |s| s.coverage.leader_stepdowns),
        ("pre-vote rejected", |s| s.coverage.prevote_rejections),
        ("vote ignored by lease", |s| s.coverage.votes_ignored_by_lease),
        ("storage fault (synced data)", |s| s.coverage.storage_faults),
        ("lost entries detected", |s| s.coverage.lost_entries_detected),
        ("vote refused while repairing", |s| s.coverage.repair_refusals),
        ("log compaction", |s| s.coverage.compactions),
        ("snapshot transfer", |s| s.coverage.snapshot_transfers),
        ("snapshot chunk sent", |s| s.coverage.snapshot_chunks_sent),
        ("snapshot transfer resumed", |s| s.coverage.snapshot_resumes),
        ("snapshot installed", |s| s.coverage.snapshots_installed),
        ("stale snapshot ignored", |s| s.coverage.snapshots_stale),
        ("entries read from disk", |s| s.coverage.log_reads),
        ("leadership transfer", |s| s.coverage.transfers_started),
        ("election on TimeoutNow", |s| s.coverage.transfer_elections),
        ("transfer given up", |s| s.coverage.transfers_aborted),
        ("membership change requested", |s| s.operator.requests),
        ("  forced", |s| s.operator.forced),
        ("  asked of a non-leader", |s| s.operator.not_leader),
        ("  unanswered (retried)", |s| s.operator.unanswered),
        ("membership change appended", |s| s.coverage.membership_changes),
        ("  learner promoted (auto)", |s| s.coverage.promotions),
        ("membership change committed", |s| s.changes_committed),
        ("membership change refused", |s| s.coverage.changes_refused),
        ("  refused: change pending", |s| s.operator.refused_pending),
        ("  refused: no own-term commit", |s| s.operator.refused_not_ready),
        ("  refused: unsafe (no force)", |s| s.operator.refused_unsafe),
        ("  refused: transferring", |s| s.operator.refused_transferring),
        ("  refused: invalid change", |s| s.operator.refused_invalid),
        ("removed leader stepped down", |s| s.coverage.removed_stepdowns),
        ("vote request from non-voter", |s| s.coverage.votes_from_non_voters),
        ("campaign skipped: non-voter", |s| s.coverage.campaigns_as_non_voter),
        ("client session started", |s| s.sessions.sessions),
        ("  session append retried", |s| s.sessions.retries),
        ("  acked after a retry", |s| s.sessions.acked_after_retry),
        ("  acked: a recognised repeat", |s| s.sessions.recognised),
        ("  batch (2-4 commands) acked", |s| s.sessions.batches_acked),
        ("  conditional append sent", |s| s.sessions.conditional),
        ("  sent twice at once", |s| s.sessions.hedged),
        ("  acked append sent again", |s| s.sessions.resends),
        ("    answered: original IDs", |s| s.sessions.resends_committed),
        ("  outcome unknown", |s| s.sessions.unknown_outcomes),
        ("  given up (deadline)", |s| s.sessions.given_up),
        ("admitted: answered from table", |s| s.admissions.committed),
        ("admitted: waits in the log", |s| s.admissions.in_log),
        ("admitted: same in one round", |s| s.admissions.same_as),
        ("proposal of several payloads", |s| s.admissions.group_proposals),
        ("refused: leader not ready", |s| s.sessions.not_ready),
        ("refused: condition failed", |s| s.sessions.condition_failed),
        ("refused: unknown session", |s| s.sessions.unknown_session),
        ("refused: sessions dropped", |s| s.sessions.sessions_dropped),
        ("refused: outcome forgotten", |s| s.sessions.forgotten),
        ("refused: too far ahead", |s| s.sessions.too_far_ahead),
        ("follow read", |s| s.follow.reads),
        ("  commands read", |s| s.follow.commands),
        ("  moved to another node", |s| s.follow.switches),
        ("  trimmed on the node", |s| s.follow.trimmed),
        ("  new stream (trimmed)", |s| s.follow.restarts),
    ];
    let mut out = String::from("coverage (seeds where it happened / total occurrences):");
    for (name, f) in rows {
        let (seeds, total) = count(f);
        out.push_str(&format!("\n  {name:<28} {seeds:>6} seeds {total:>10}"));
    }
    out
}
