//! Jepsen-style tests on real processes. Each node runs in its own network namespace
//! (`replog_tests::netns`: veth pairs to a bridge in a hub namespace; a cut drops one direction
//! with a `tc` filter, or a blackhole route where cls_bpf is missing). Concurrent clients append
//! distinct values and take linearizable reads through `replog_runtime::client`, from the root
//! namespace, while a nemesis isolates the leader, splits a majority from a minority, cuts links
//! one way, or kills (-9) and pauses (SIGSTOP) nodes; then everything heals, appends must succeed
//! again, the logs must converge, and the history is checked ([`check`]):
//!
//! - every acknowledged append is in the final log exactly once, at the ID, index and term its
//!   acknowledgement gave; no value appears twice; no value appears that nobody appended;
//! - an append that failed definitely (no leader ever took it) is absent;
//! - an append acknowledged before another was invoked precedes it in the log;
//! - every linearizable read is a prefix of the final log that holds every append acknowledged
//!   before the read began and nothing invoked after it ended, and is no shorter than any read
//!   that ended before it began.
//!
//! Without root or `ip netns`, each test prints one SKIP line and passes. The random choices
//! (victims, moments) come from a seed printed at the start: REPLOG_JEPSEN_SEED=N replays them
//! (the timing still varies).

use replog_core::RoleKind;
use replog_runtime::client::{self, ClientError};
use replog_tests::netns::{self, LogEntry, NsCluster};
use replog_tests::serial;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const APPEND_DEADLINE: Duration = Duration::from_millis(1500);
const READ_TIMEOUT: Duration = Duration::from_secs(1);
const APPENDERS: usize = 5;
const READERS: usize = 2;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// splitmix64: the tests' only randomness, from the seed.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn between(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        ms(low_ms + self.below(high_ms - low_ms + 1))
    }

    fn pick(&mut self, from: &[usize]) -> usize {
        from[self.below(from.len() as u64) as usize]
    }
}

/// REPLOG_JEPSEN_SEED, or one from the clock; the same for every test of this run.
fn base_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| match std::env::var("REPLOG_JEPSEN_SEED") {
        Ok(text) => text.trim().parse().expect("REPLOG_JEPSEN_SEED must be a number"),
        Err(_) => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            (nanos ^ (u64::from(std::process::id()) << 32)) % 1_000_000_000
        }
    })
}

fn secs(at: Duration) -> f64 {
    at.as_secs_f64()
}

#[derive(Clone, Debug)]
enum Outcome {
    Acked {
        id: u64,
        index: u64,
        term: u64,
        leader: SocketAddr,
    },
    /// Definitely not appended: no leader took it.
    Failed(String),
    /// May or may not be in the log.
    Unknown(String),
}

/// One append: its value, when it was invoked and completed (since the run began), how it ended.
#[derive(Clone, Debug)]
struct Op {
    client: usize,
    value: String,
    target: String,
    invoke: Duration,
    complete: Duration,
    outcome: Outcome,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "append {:?} by client {} via {} [{:.3}s..{:.3}s]: ",
            self.value,
            self.client,
            self.target,
            secs(self.invoke),
            secs(self.complete)
        )?;
        match &self.outcome {
            Outcome::Acked { id, index, term, leader } => {
                write!(f, "acknowledged by {leader} as ID {id}, index {index}, term {term}")
            }
            Outcome::Failed(why) => write!(f, "failed definitely: {why}"),
            Outcome::Unknown(why) => write!(f, "{why}"), // says "outcome unknown"
        }
    }
}

/// One linearizable read: the committed commands it returned.
#[derive(Clone, Debug)]
struct Read {
    reader: usize,
    target: String,
    invoke: Duration,
    complete: Duration,
    result: Result<Vec<String>, String>,
}

impl fmt::Display for Read {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "linearizable read by reader {} via {} [{:.3}s..{:.3}s]: ",
            self.reader,
            self.target,
            secs(self.invoke),
            secs(self.complete)
        )?;
        match &self.result {
            Ok(values) => write!(f, "{} committed commands, last {:?}", values.len(), values.last()),
            Err(why) => write!(f, "failed: {why}"),
        }
    }
}

/// Whether a failed append may still be in the log. `client::append` retries only failures
/// that left nothing behind (no leader, a redirect, a push-back, a request that never left),
/// and returns at once when the outcome is unknown; so running out of time is definite.
fn classify(error: &ClientError) -> Outcome {
    match error {
        ClientError::NoLeader { .. }
        | ClientError::Address(_)
        | ClientError::CommandTooLarge { .. }
        | ClientError::NotLeader { .. }
        | ClientError::Rejected { .. }
        | ClientError::Io { .. } => Outcome::Failed(error.to_string()),
        _ => Outcome::Unknown(error.to_string()),
    }
}

#[derive(Debug, Default)]
struct History {
    ops: Mutex<Vec<Op>>,
    reads: Mutex<Vec<Read>>,
}

/// Checks a history against the converged log; one line per violation.
fn check(ops: &[Op], reads: &[Read], log: &[LogEntry]) -> Vec<String> {
    let mut bad = Vec::new();
    let by_value: HashMap<&str, &Op> = ops.iter().map(|op| (op.value.as_str(), op)).collect();
    // Position among client commands, from 1 (what an acknowledgement's ID names).
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (i, entry) in log.iter().enumerate() {
        let at = i + 1;
        if let Some(first) = position.insert(entry.value.as_str(), at) {
            bad.push(format!("{:?} appears twice in the log: commands {first} and {at}", entry.value));
        }
        if entry.id != Some(at as u64) {
            bad.push(format!(
                "command {at} ({:?}, index {}) has ID {:?}",
                entry.value, entry.index, entry.id
            ));
        }
        match by_value.get(entry.value.as_str()) {
            None => bad.push(format!("command {at} ({:?}) was never appended by a client", entry.value)),
            Some(op) if matches!(op.outcome, Outcome::Failed(_)) => {
                bad.push(format!("in the log as command {at} though it failed definitely: {op}"))
            }
            Some(_) => {}
        }
    }
    for op in ops {
        let Outcome::Acked { id, index, term, .. } = op.outcome else {
            continue;
        };
        match position.get(op.value.as_str()) {
            None => bad.push(format!("lost: {op}")),
            Some(&at) => {
                let entry = &log[at - 1];
                if (id, index, term) != (at as u64, entry.index, entry.term) {
                    bad.push(format!(
                        "in the log as command {at} at index {}, term {}, not where acknowledged: {op}",
                        entry.index, entry.term
                    ));
                }
            }
        }
    }

    // Acknowledged appends by completion time, with the furthest position reached so far: the
    // furthest acknowledged append that completed before a given moment.
    let mut acked: Vec<(Duration, usize, &Op)> = ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Acked { .. }))
        .filter_map(|op| position.get(op.value.as_str()).map(|&at| (op.complete, at, op)))
        .collect();
    acked.sort_by_key(|&(complete, ..)| complete);
    let mut furthest: Vec<(usize, &Op)> = Vec::with_capacity(acked.len());
    let mut best: Option<(usize, &Op)> = None;
    for &(_, at, op) in &acked {
        if best.is_none_or(|(furthest_yet, _)| at > furthest_yet) {
            best = Some((at, op));
        }
        furthest.extend(best);
    }
    let furthest_before = |moment: Duration| -> Option<(usize, &Op)> {
        let count = acked.partition_point(|&(complete, ..)| complete < moment);
        count.checked_sub(1).map(|i| furthest[i])
    };

    // Real-time order: an append acknowledged before another was invoked precedes it.
    for op in ops {
        let Some(&at) = position.get(op.value.as_str()) else {
            continue;
        };
        if let Some((before, earlier)) = furthest_before(op.invoke) {
            if before > at {
                bad.push(format!(
                    "out of real-time order: command {at} is {op}, but command {before} is {earlier}, acknowledged before it was invoked"
                ));
            }
        }
    }

    // Linearizable reads.
    let mut done: Vec<(Duration, usize, &Read)> = Vec::new();
    for read in reads {
        let Ok(values) = &read.result else {
            continue;
        };
        if let Some(i) = (0..values.len()).find(|&i| log.get(i).is_none_or(|entry| entry.value != values[i]))
        {
            bad.push(format!(
                "not a prefix of the final log: command {} is {:?} in {read}, {:?} in the log",
                i + 1,
                values[i],
                log.get(i).map(|entry| &entry.value)
            ));
            continue;
        }
        if let Some((at, op)) = furthest_before(read.invoke) {
            if at > values.len() {
                bad.push(format!(
                    "stale: {read} misses command {at}, {op}, acknowledged before the read began"
                ));
            }
        }
        if let Some(value) =
            values.iter().find(|v| by_value.get(v.as_str()).is_none_or(|op| op.invoke >= read.complete))
        {
            bad.push(format!("from the future: {read} holds {value:?}, appended after the read ended"));
        }
        done.push((read.complete, values.len(), read));
    }
    done.sort_by_key(|&(complete, ..)| complete);
    for &(_, length, read) in &done {
        let before = done.partition_point(|&(complete, ..)| complete < read.invoke);
        if let Some(&(_, longer, earlier)) = done[..before].iter().max_by_key(|&&(_, length, _)| length) {
            if longer > length {
                bad.push(format!("went back: {read}, though {earlier} ended before it began"));
            }
        }
    }
    bad
}

/// One scenario: the cluster, the clients, the nemesis' timeline and the history.
struct Run {
    name: &'static str,
    seed: u64,
    rng: Rng,
    origin: Instant,
    cluster: NsCluster,
    timeline: Vec<String>,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

impl Run {
    /// Starts the cluster and the clients once a leader is known; `None` (after a SKIP line)
    /// where network namespaces cannot be used.
    fn start(name: &'static str, tag: &str, nodes: usize) -> Option<Run> {
        if let Some(reason) = netns::unavailable() {
            println!("SKIP jepsen {name}: {reason}");
            return None;
        }
        let cluster = match NsCluster::start(tag, nodes) {
            Ok(cluster) => cluster,
            Err(reason) => {
                println!("SKIP jepsen {name}: {reason}");
                return None;
            }
        };
        let seed = base_seed();
        let name_hash = name
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        println!(
            "jepsen {name}: {nodes} nodes in network namespaces, cuts by {:?}, seed {seed} (REPLOG_JEPSEN_SEED={seed} replays the choices)",
            cluster.net.mechanism()
        );
        let mut run = Run {
            name,
            seed,
            rng: Rng(seed ^ name_hash),
            origin: Instant::now(),
            cluster,
            timeline: Vec::new(),
            history: Arc::default(),
            stop: Arc::default(),
            clients: Vec::new(),
        };
        let leader = run.leader();
        run.note(format!(
            "node{} leads; {APPENDERS} appenders and {READERS} linearizable readers start",
            leader + 1
        ));
        run.spawn_clients();
        Some(run)
    }

    fn spawn_clients(&mut self) {
        let targets = self.cluster.addresses();
        for client in 0..APPENDERS {
            let (targets, history, stop) =
                (targets.clone(), Arc::clone(&self.history), Arc::clone(&self.stop));
            let (origin, mut rng) = (self.origin, Rng(self.rng.next()));
            self.clients.push(std::thread::spawn(move || {
                let mut target = client % targets.len();
                let mut sequence = 0;
                while !stop.load(Ordering::Relaxed) {
                    let value = format!("c{client}-{sequence}");
                    sequence += 1;
                    let invoke = origin.elapsed();
                    let result = client::append(&targets[target], value.as_bytes(), APPEND_DEADLINE);
                    let complete = origin.elapsed();
                    let outcome = match result {
                        Ok(a) => Outcome::Acked { id: a.id, index: a.index, term: a.term, leader: a.leader },
                        Err(error) => classify(&error),
                    };
                    let failed = !matches!(outcome, Outcome::Acked { .. });
                    let op = Op { client, value, target: targets[target].clone(), invoke, complete, outcome };
                    history.ops.lock().unwrap().push(op);
                    if failed {
                        target = (target + 1) % targets.len();
                    }
                    sleep(rng.between(2, 10));
                }
            }));
        }
        for reader in 0..READERS {
            let (targets, history, stop) =
                (targets.clone(), Arc::clone(&self.history), Arc::clone(&self.stop));
            let (origin, mut rng) = (self.origin, Rng(self.rng.next()));
            self.clients.push(std::thread::spawn(move || {
                let mut target = reader % targets.len();
                while !stop.load(Ordering::Relaxed) {
                    let invoke = origin.elapsed();
                    let result = client::query(&targets[target], READ_TIMEOUT, true);
                    let complete = origin.elapsed();
                    let result = result
                        .map(|(commit, entries)| {
                            netns::commands(&entries)
                                .into_iter()
                                .filter(|entry| entry.index <= commit)
                                .map(|entry| entry.value)
                                .collect()
                        })
                        .map_err(|error| error.to_string());
                    let failed = result.is_err();
                    history.reads.lock().unwrap().push(Read {
                        reader,
                        target: targets[target].clone(),
                        invoke,
                        complete,
                        result,
                    });
                    if failed {
                        target = (target + 1) % targets.len();
                    }
                    sleep(rng.between(20, 80));
                }
            }));
        }
    }

    fn stop_clients(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients.drain(..) {
            let _ = client.join();
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn note(&mut self, what: String) {
        let line = format!("[{:6.2}s] {what}", secs(self.now()));
        println!("  {line}");
        self.timeline.push(line);
    }

    /// The current leader (waiting up to 10 s).
    fn leader(&self) -> usize {
        match self.cluster.wait_leader(Duration::from_secs(10)) {
            Some(k) => k,
            None => self.fail("no leader within 10 s"),
        }
    }

    /// Every node but `but`.
    fn others(&self, but: &[usize]) -> Vec<usize> {
        (0..self.cluster.len()).filter(|k| !but.contains(k)).collect()
    }

    /// Heals every cut, resumes paused nodes and restarts killed ones; when that was.
    fn heal_everything(&mut self) -> Duration {
        let cuts = self.cluster.net.describe_cuts();
        self.cluster.net.heal_all();
        let mut done = vec![format!("heal cuts ({cuts})")];
        for k in 0..self.cluster.len() {
            if self.cluster.is_paused(k) {
                self.cluster.resume(k);
                done.push(format!("SIGCONT node{}", k + 1));
            }
            if !self.cluster.is_up(k) {
                self.cluster.start_node(k, false);
                done.push(format!("restart node{}", k + 1));
            }
        }
        self.note(done.join(", "));
        self.now()
    }

    fn acked(&self, mut wanted: impl FnMut(&Op, SocketAddr) -> bool) -> usize {
        let ops = self.history.ops.lock().unwrap();
        ops.iter()
            .filter(|op| matches!(op.outcome, Outcome::Acked { leader, .. } if wanted(op, leader)))
            .count()
    }

    /// Fails unless an append invoked at or after `from` and acknowledged by (a leader among)
    /// `by` completed before `to`.
    fn expect_available(&self, from: Duration, to: Duration, by: &[usize], during: &str) {
        let leaders: Vec<SocketAddr> = by.iter().map(|&k| self.cluster.nodes[k].address).collect();
        let count =
            self.acked(|op, leader| op.invoke >= from && op.complete <= to && leaders.contains(&leader));
        if count == 0 {
            let names: Vec<String> = by.iter().map(|k| format!("node{}", k + 1)).collect();
            self.fail(&format!(
                "no append was acknowledged by {} {during} ({:.2}s..{:.2}s)",
                names.join("/"),
                secs(from),
                secs(to)
            ));
        }
        println!("  {count} appends acknowledged {during}");
    }

    /// Checks that a cut works: `probe` reads the same value twice, 0.6 s apart, while appends
    /// are acknowledged (when either reading is missing, e.g. leadership moved, it checks nothing).
    fn expect_frozen(&self, what: &str, probe: impl Fn(&NsCluster) -> Option<u64>) {
        let acked_before = self.acked(|_, _| true);
        let before = probe(&self.cluster);
        sleep(ms(600));
        let after = probe(&self.cluster);
        let acked = self.acked(|_, _| true) - acked_before;
        match (before, after) {
            (Some(before), Some(after)) if acked > 0 && before != after => self.fail(&format!(
                "the cut does not hold: {what} moved from {before} to {after} while {acked} appends were acknowledged"
            )),
            (Some(before), Some(_)) => println!("  {what} stayed at {before} while {acked} appends were acknowledged"),
            _ => println!("  {what}: not checked (no reading)"),
        }
    }

    /// After the last heal: appends must succeed again; then the clients stop, the logs must
    /// converge, and the history must check.
    fn finish(mut self, healed: Duration) {
        let deadline = healed + Duration::from_secs(10);
        loop {
            let now = self.now();
            if now >= healed + ms(1500) && self.acked(|op, _| op.invoke >= healed) > 0 {
                break;
            }
            if now >= deadline {
                self.fail("no append invoked after the heal was acknowledged within 10 s");
            }
            sleep(ms(100));
        }
        self.stop_clients();
        self.note("clients stopped".into());
        for k in 0..self.cluster.len() {
            if let Some(status) = self.cluster.exited(k) {
                self.fail(&format!("node{} exited by itself ({status})", k + 1));
            }
        }
        let log = match self.cluster.wait_converged(Duration::from_secs(20)) {
            Ok(log) => log,
            Err(why) => self.fail(&why),
        };
        self.note(format!("all {} logs equal and committed: {} commands", self.cluster.len(), log.len()));
        let ops = self.history.ops.lock().unwrap().clone();
        let reads = self.history.reads.lock().unwrap().clone();
        let count = |f: fn(&Outcome) -> bool| ops.iter().filter(|op| f(&op.outcome)).count();
        let acked = count(|o| matches!(o, Outcome::Acked { .. }));
        let failed = count(|o| matches!(o, Outcome::Failed(_)));
        let unknown: Vec<&Op> = ops.iter().filter(|op| matches!(op.outcome, Outcome::Unknown(_))).collect();
        let unknown_in = unknown.iter().filter(|op| log.iter().any(|e| e.value == op.value)).count();
        let reads_ok = reads.iter().filter(|r| r.result.is_ok()).count();
        println!(
            "jepsen {}: {} appends ({acked} acknowledged, {failed} failed definitely, {} unknown of which {unknown_in} landed), \
             {reads_ok}/{} linearizable reads answered, final log {} commands, {:.1}s",
            self.name,
            ops.len(),
            unknown.len(),
            reads.len(),
            log.len(),
            secs(self.now())
        );
        let failed_examples = ops.iter().filter(|op| !matches!(op.outcome, Outcome::Acked { .. })).take(3);
        for op in failed_examples {
            println!("  e.g. {op}");
        }
        let violations = check(&ops, &reads, &log);
        if !violations.is_empty() {
            let shown: Vec<&str> = violations.iter().take(20).map(String::as_str).collect();
            self.fail(&format!(
                "{} history violations (first {}):\n  {}",
                violations.len(),
                shown.len(),
                shown.join("\n  ")
            ));
        }
        if acked < 50 || reads_ok < 5 {
            self.fail(&format!(
                "too little happened to check: {acked} appends acknowledged, {reads_ok} reads"
            ));
        }
    }

    /// Prints what is needed to debug (timeline, node logs' tails, where the data is) and panics.
    fn fail(&self, what: &str) -> ! {
        eprintln!("\njepsen {} FAILED (REPLOG_JEPSEN_SEED={}): {what}", self.name, self.seed);
        eprintln!("timeline:\n  {}", self.timeline.join("\n  "));
        eprintln!("{}", self.cluster.log_tails(30));
        eprintln!("data and full node logs kept in {}", self.cluster.dir.display());
        panic!("jepsen {}: {what}", self.name);
    }
}

impl Drop for Run {
    /// Clients end within their deadlines, before the cluster is torn down.
    fn drop(&mut self) {
        self.stop_clients();
    }
}

#[test]
fn isolated_leader_is_replaced_and_rejoins() {
    let _serial = serial();
    let Some(mut run) = Run::start("isolated-leader", "il", 3) else {
        return;
    };
    sleep(ms(1500));
    let leader = run.leader();
    run.cluster.net.isolate(leader);
    let cut = run.now();
    run.note(format!(
        "isolate node{} (the leader) both ways: {}",
        leader + 1,
        run.cluster.net.describe_cuts()
    ));
    sleep(run.rng.between(2500, 3500));
    let healed = run.heal_everything();
    run.expect_available(cut, healed, &run.others(&[leader]), "while the old leader was isolated");
    run.finish(healed);
}

#[test]
fn majority_and_minority_split_five_nodes() {
    let _serial = serial();
    let Some(mut run) = Run::start("majority-minority", "mm", 5) else {
        return;
    };
    sleep(ms(1500));
    let leader = run.leader();
    let minority = [leader, run.rng.pick(&run.others(&[leader]))];
    run.cluster.net.split(&minority);
    let cut = run.now();
    run.note(format!(
        "split node{} (the leader) and node{} from the other three",
        minority[0] + 1,
        minority[1] + 1
    ));
    sleep(run.rng.between(2500, 3500));
    let healed = run.heal_everything();
    run.expect_available(cut, healed, &run.others(&minority), "by the majority while split");
    run.finish(healed);
}

#[test]
fn one_way_cuts_between_leader_and_follower() {
    let _serial = serial();
    let Some(mut run) = Run::start("one-way", "ow", 3) else {
        return;
    };
    sleep(ms(1000));
    let leader = run.leader();
    let follower = run.rng.pick(&run.others(&[leader]));
    run.cluster.net.cut(leader, follower);
    let cut = run.now();
    run.note(format!("node{} (the leader) can no longer send to node{}", leader + 1, follower + 1));
    let window = run.rng.between(2000, 3000);
    sleep(ms(800));
    // Nothing reaches the follower: its commit index stands still while appends commit.
    run.expect_frozen(&format!("node{}'s commit index", follower + 1), |cluster| {
        cluster.status(follower, ms(300)).ok().map(|status| status.commit.0)
    });
    sleep(window.saturating_sub(ms(1400)));
    run.cluster.net.heal(leader, follower);
    let healed = run.now();
    run.note("healed".into());
    run.expect_available(cut, healed, &[0, 1, 2], "while the leader could not send to a follower");
    sleep(ms(1500));
    let leader = run.leader();
    let follower = run.rng.pick(&run.others(&[leader]));
    run.cluster.net.cut(follower, leader);
    let cut = run.now();
    run.note(format!("node{} can no longer send to node{} (the leader)", follower + 1, leader + 1));
    let window = run.rng.between(2000, 3000);
    sleep(ms(800));
    // The leader hears nothing from the follower: its match index there stands still.
    let follower_address = run.cluster.nodes[follower].address;
    run.expect_frozen(&format!("node{}'s match index for node{}", leader + 1, follower + 1), |cluster| {
        let status = cluster.status(leader, ms(300)).ok().filter(|s| s.role == RoleKind::Leader)?;
        let peer = status.peers.iter().find(|peer| peer.address == follower_address)?;
        peer.replication.as_ref().map(|replication| replication.match_index.0)
    });
    sleep(window.saturating_sub(ms(1400)));
    let healed = run.heal_everything();
    run.expect_available(cut, healed, &[0, 1, 2], "while a follower could not send to the leader");
    run.finish(healed);
}

#[test]
fn kill_9_and_pause_at_random_moments() {
    let _serial = serial();
    let Some(mut run) = Run::start("kill-and-pause", "kp", 3) else {
        return;
    };
    sleep(ms(1000));
    for _round in 0..2 {
        sleep(run.rng.between(300, 1200));
        // Half the time the victim is the leader (when one answers), else any node.
        let leader = run.cluster.leader();
        let victim = match leader {
            Some(leader) if run.rng.below(2) == 0 => leader,
            _ => run.rng.pick(&run.others(&[])),
        };
        run.cluster.kill(victim);
        run.note(format!(
            "kill -9 node{}{}",
            victim + 1,
            if leader == Some(victim) { " (the leader)" } else { "" }
        ));
        sleep(run.rng.between(200, 1000));
        let leader = run.cluster.leader();
        let paused = match leader {
            Some(leader) if run.rng.below(2) == 0 => leader,
            _ => run.rng.pick(&run.others(&[victim])),
        };
        run.cluster.pause(paused);
        run.note(format!(
            "SIGSTOP node{}{}",
            paused + 1,
            if leader == Some(paused) { " (the leader)" } else { "" }
        ));
        let restart_first = run.rng.below(2) == 0;
        for step in 0..2 {
            sleep(run.rng.between(400, 1400));
            if (step == 0) == restart_first {
                run.cluster.start_node(victim, false);
                run.note(format!("restart node{}", victim + 1));
            } else {
                run.cluster.resume(paused);
                run.note(format!("SIGCONT node{}", paused + 1));
            }
        }
    }
    sleep(ms(500));
    let healed = run.heal_everything();
    run.finish(healed);
}

/// The checker itself, on made-up histories: it must catch what it claims to.
#[test]
fn history_checker_catches_lost_duplicate_failed_reordered_and_stale() {
    let at = |millis: u64| ms(millis);
    let op = |value: &str, invoke: u64, complete: u64, outcome: Outcome| Op {
        client: 0,
        value: value.into(),
        target: "t".into(),
        invoke: at(invoke),
        complete: at(complete),
        outcome,
    };
    let leader: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let acked = |id: u64| Outcome::Acked { id, index: id + 1, term: 1, leader };
    let ops = vec![
        op("a", 0, 10, acked(1)),
        op("b", 20, 30, acked(2)),
        op("c", 40, 50, Outcome::Failed("no leader".into())),
        op("d", 40, 60, Outcome::Unknown("lost".into())),
    ];
    let entry = |id: u64, value: &str| LogEntry { index: id + 1, term: 1, id: Some(id), value: value.into() };
    let log = vec![entry(1, "a"), entry(2, "b")];
    let read = |invoke: u64, complete: u64, values: &[&str]| Read {
        reader: 0,
        target: "t".into(),
        invoke: at(invoke),
        complete: at(complete),
        result: Ok(values.iter().map(|v| v.to_string()).collect()),
    };
    let good_reads = vec![read(5, 15, &[]), read(12, 18, &["a"]), read(35, 45, &["a", "b"])];
    assert_eq!(check(&ops, &good_reads, &log), Vec::<String>::new());
    let with_unknown = vec![entry(1, "a"), entry(2, "b"), entry(3, "d")];
    assert_eq!(check(&ops, &good_reads, &with_unknown), Vec::<String>::new());

    let expect = |log: &[LogEntry], reads: &[Read], needle: &str| {
        let found = check(&ops, reads, log);
        assert!(found.iter().any(|v| v.contains(needle)), "expected {needle:?} among {found:#?}");
    };
    expect(&[entry(1, "a")], &[], "lost");
    expect(&[entry(1, "a"), entry(2, "b"), entry(3, "b")], &[], "twice");
    expect(&[entry(1, "a"), entry(2, "b"), entry(3, "c")], &[], "failed definitely");
    expect(&[entry(1, "a"), entry(2, "b"), entry(3, "zz")], &[], "never appended");
    expect(&[entry(1, "b"), entry(2, "a")], &[], "not where acknowledged");
    let swapped_ops = vec![op("a", 0, 10, acked(2)), op("b", 20, 30, acked(1))];
    let found = check(&swapped_ops, &[], &[entry(1, "b"), entry(2, "a")]);
    assert!(found.iter().any(|v| v.contains("real-time order")), "{found:#?}");
    expect(&log, &[read(35, 45, &["a"])], "stale");
    expect(&log, &[read(35, 45, &["b"])], "not a prefix");
    expect(&log, &[read(12, 15, &["a", "b"])], "from the future");
    expect(&log, &[read(12, 18, &["a"]), read(19, 25, &[])], "went back");
}
