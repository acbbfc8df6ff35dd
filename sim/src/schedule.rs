//! The fault schedule of a run: what happens to nodes and links, and when. A seed generates one;
//! a file can replay one; the shrinker removes faults from one while the run still fails.

use crate::options::{Options, TICK};
use rand::RngExt;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::fmt;

/// Which node a fault hits, resolved when it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Node(u64),
    /// The current leader (a random running node when there is none).
    Leader,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Stop the node; it keeps only what it synced (and maybe part of the rest).
    Crash(Target),
    /// Crash the next node that wins an election, this many units after it wins: leaders die
    /// most interestingly while they are still catching followers up.
    Ambush(u64),
    /// Start every crashed node again from its disk.
    Restart,
    /// No ticks, no IO until resumed: it comes back as a stale leader or follower.
    Pause(Target),
    Resume,
    /// Cut every link between the target and the rest, both ways.
    Isolate(Target),
    /// Cut these directed links (majority/minority splits, bridges, one-way cuts).
    Cut(Vec<(u64, u64)>),
    Heal,
    /// Change a node's tick period (clock drift), in units per tick.
    Drift(u64, u64),
    /// A storage fault on data the node synced (it is stopped first): see `Damage`.
    Damage(u64, Damage),
    /// The leader (if any) is asked to hand leadership to this node (dissertation §3.10).
    Transfer(u64),
    /// An operator asks for a membership change (dissertation §4.1): see `MemberOp`.
    Member(MemberOp),
}

/// The kind of single-server change an operator asks for. Which member it names is decided
/// when it is sent, from the configuration the asked node holds (an operator reads
/// `replog members` first), so a schedule stays meaningful when faults are shrunk away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberKind {
    /// Add a spare as a learner.
    Add,
    /// Add a spare as a learner the leader promotes once it has caught up.
    AddPromote,
    /// Make a learner a voter.
    Promote,
    /// Remove a voter other than the leader.
    RemoveVoter,
    /// Remove the leader itself: it steps down once the removal commits.
    RemoveLeader,
    /// Remove a learner.
    RemoveLearner,
}

impl MemberKind {
    pub const ALL: [MemberKind; 6] = [
        MemberKind::Add,
        MemberKind::AddPromote,
        MemberKind::Promote,
        MemberKind::RemoveVoter,
        MemberKind::RemoveLeader,
        MemberKind::RemoveLearner,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MemberKind::Add => "add",
            MemberKind::AddPromote => "add-promote",
            MemberKind::Promote => "promote",
            MemberKind::RemoveVoter => "remove-voter",
            MemberKind::RemoveLeader => "remove-leader",
            MemberKind::RemoveLearner => "remove-learner",
        }
    }
}

/// One operator's membership change request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberOp {
    pub kind: MemberKind,
    /// Whom it is sent to: the leader, or any node (a follower answers NotLeader and the
    /// operator follows its hint).
    pub to: Target,
    /// Skip the leader's live-quorum check.
    pub force: bool,
    /// Held until a node wins an election, then sent to it at once: an operator's retry loop
    /// meeting a new leader before it has committed anything.
    pub on_election: bool,
}

/// What a storage fault does to a node's synced log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The last this many records are gone (a disk that lied about syncs, a cut file).
    LoseTail(u64),
    /// A bit flips in the record this many from the end (bit rot); 1 is the last.
    Flip(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timed {
    pub at: u64,
    pub fault: Fault,
}

/// The realized fault schedule of a run, in time order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    pub faults: Vec<Timed>,
}

impl Schedule {
    /// Draws a schedule for the fault phase from the seed (its own random stream).
    pub fn generate(options: &Options) -> Schedule {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x6661_756c_7473_2121);
        let end = options.ticks * TICK;
        // Spares are nodes like the others: faults hit them too.
        let n = options.ids();
        let mut faults = Vec::new();
        let mut push = |at: u64, fault: Fault| {
            if at < end {
                faults.push(Timed { at, fault })
            }
        };
        let gap =
            |rng: &mut ChaCha8Rng, every: u64| rng.random_range(every / 2..=every * 3 / 2).max(1) * TICK;
        let target = |rng: &mut ChaCha8Rng| {
            if rng.random_bool(0.3) {
                Target::Leader
            } else {
                Target::Node(rng.random_range(1..=n))
            }
        };

        if options.crash_every_ticks > 0 {
            let mut at = gap(&mut rng, options.crash_every_ticks);
            while at < end {
                if rng.random_bool(0.5) {
                    // Within a few round trips of winning: mid catch-up.
                    push(at, Fault::Ambush(rng.random_range(0..=4 * options.latency_max)));
                } else {
                    let who = target(&mut rng);
                    push(at, Fault::Crash(who));
                }
                // Restart after a while; which node is decided when the crash happens, so the
                // restart brings back every crashed node.
                let down = rng.random_range(20..=600) * TICK;
                push(at + down, Fault::Restart);
                at += gap(&mut rng, options.crash_every_ticks);
            }
        }
        if options.pause_every_ticks > 0 {
            let mut at = gap(&mut rng, options.pause_every_ticks);
            while at < end {
                push(at, Fault::Pause(target(&mut rng)));
                push(at + rng.random_range(10..=200) * TICK, Fault::Resume);
                at += gap(&mut rng, options.pause_every_ticks);
            }
        }
        if options.partition_every_ticks > 0 {
            let mut at = gap(&mut rng, options.partition_every_ticks);
            while at < end {
                let flaps = if rng.random_bool(0.15) { rng.random_range(2..=6) } else { 1 };
                let kind = rng.random_range(0..6u32);
                for _ in 0..flaps {
                    let fault = match kind {
                        0 => Fault::Isolate(Target::Node(rng.random_range(1..=n))),
                        1 => Fault::Isolate(Target::Leader),
                        2 => Fault::Cut(split(&mut rng, n)),
                        3 => Fault::Cut(bridge(&mut rng, n)),
                        4 => Fault::Cut(one_way(&mut rng, n)),
                        _ => Fault::Cut(random_links(&mut rng, n)),
                    };
                    push(at, fault);
                    let length =
                        if flaps > 1 { rng.random_range(5..=40) } else { rng.random_range(30..=700) };
                    at += length * TICK;
                    push(at, Fault::Heal);
                    at += rng.random_range(5..=60) * TICK;
                }
                at += gap(&mut rng, options.partition_every_ticks);
            }
        }
        if options.clock_drift_pct > 0 && rng.random_bool(0.3) {
            let at = rng.random_range(0..end.max(1));
            let spread = TICK * options.clock_drift_pct / 100;
            push(at, Fault::Drift(rng.random_range(1..=n), rng.random_range(TICK - spread..=TICK + spread)));
        }
        // Drawn last, so the faults above stay the same for every seed.
        if options.damage_every_ticks > 0 {
            let mut at = gap(&mut rng, options.damage_every_ticks);
            while at < end {
                let damage = if rng.random_bool(0.5) {
                    Damage::LoseTail(rng.random_range(1..=8))
                } else {
                    Damage::Flip(rng.random_range(1..=8))
                };
                push(at, Fault::Damage(rng.random_range(1..=n), damage));
                push(at + rng.random_range(20..=300) * TICK, Fault::Restart);
                at += gap(&mut rng, options.damage_every_ticks);
            }
        }
        // Drawn after the others, which keep their draws.
        if options.transfer_every_ticks > 0 {
            let mut at = gap(&mut rng, options.transfer_every_ticks);
            while at < end {
                push(at, Fault::Transfer(rng.random_range(1..=n)));
                at += gap(&mut rng, options.transfer_every_ticks);
            }
        }
        // Drawn after the others, which keep their draws.
        if options.member_every_ticks > 0 {
            let op = |rng: &mut ChaCha8Rng, on_election: bool| {
                // Adds and removals of voters are what move quorums; learners come and go too.
                let kind = MemberKind::ALL[[0, 0, 1, 1, 2, 3, 3, 4, 5][rng.random_range(0..9usize)]];
                let to = if rng.random_bool(0.85) {
                    Target::Leader
                } else {
                    Target::Node(rng.random_range(1..=n))
                };
                MemberOp { kind, to, force: rng.random_bool(0.1), on_election }
            };
            let mut at = gap(&mut rng, options.member_every_ticks);
            while at < end {
                push(at, Fault::Member(op(&mut rng, false)));
                if rng.random_bool(0.35) {
                    // The leader is cut off as it appends the change (its AppendEntries are
                    // lost), and the operator, retrying, meets the next leader as it wins: two
                    // changes from leaders of different terms, the first uncommitted.
                    let cut = if rng.random_bool(0.7) {
                        Fault::Isolate(Target::Leader)
                    } else {
                        Fault::Cut(random_links(&mut rng, n))
                    };
                    push(at, cut);
                    push(at, Fault::Member(op(&mut rng, true)));
                    push(at + rng.random_range(10..=80) * TICK, Fault::Heal);
                }
                at += gap(&mut rng, options.member_every_ticks);
            }
        }
        faults.sort_by_key(|timed| timed.at); // stable: equal times keep generation order
        Schedule { faults }
    }

    /// The file format: one `at TIME FAULT` a line; `#` comments.
    pub fn parse(text: &str) -> Result<(Options, Schedule), String> {
        let mut options = None;
        let mut faults = Vec::new();
        for (number, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fail = |why: &str| format!("schedule line {}: {why}: {raw}", number + 1);
            if let Some(rest) = line.strip_prefix("options ") {
                let mut parsed = Options::from_seed(0);
                parsed.apply(rest).map_err(|why| fail(&why))?;
                options = Some(parsed);
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() < 3 || words[0] != "at" {
                return Err(fail("expected `at TIME FAULT`"));
            }
            let at = words[1].parse().map_err(|_| fail("bad time"))?;
            let node = |word: &str| -> Result<u64, String> {
                word.strip_prefix('n').and_then(|n| n.parse().ok()).ok_or_else(|| fail("bad node"))
            };
            let target =
                |word: &str| if word == "leader" { Ok(Target::Leader) } else { node(word).map(Target::Node) };
            let arg = words.get(3).copied().unwrap_or("");
            let fault = match words[2] {
                "crash" => Fault::Crash(target(arg)?),
                "restart" => Fault::Restart,
                "ambush" => Fault::Ambush(arg.parse().map_err(|_| fail("bad delay"))?),
                "pause" => Fault::Pause(target(arg)?),
                "resume" => Fault::Resume,
                "isolate" => Fault::Isolate(target(arg)?),
                "heal" => Fault::Heal,
                "drift" => {
                    let period =
                        words.get(4).and_then(|p| p.parse().ok()).ok_or_else(|| fail("bad period"))?;
                    Fault::Drift(node(arg)?, period)
                }
                "damage" => {
                    let count: u64 =
                        words.get(5).and_then(|c| c.parse().ok()).ok_or_else(|| fail("bad record count"))?;
                    let damage = match words.get(4).copied() {
                        Some("lose") => Damage::LoseTail(count),
                        Some("flip") => Damage::Flip(count),
                        _ => return Err(fail("damage is `lose N` or `flip N`")),
                    };
                    Fault::Damage(node(arg)?, damage)
                }
                "transfer" => Fault::Transfer(node(arg)?),
                "member" => {
                    let kind = MemberKind::ALL
                        .into_iter()
                        .find(|kind| kind.name() == arg)
                        .ok_or_else(|| fail("unknown membership change"))?;
                    let to = target(words.get(4).copied().unwrap_or(""))?;
                    let flags = &words[5.min(words.len())..];
                    if let Some(flag) = flags.iter().find(|f| !["force", "on-election"].contains(f)) {
                        return Err(fail(&format!("unknown flag {flag:?}")));
                    }
                    let force = flags.contains(&"force");
                    let on_election = flags.contains(&"on-election");
                    Fault::Member(MemberOp { kind, to, force, on_election })
                }
                "cut" => {
                    let mut links = Vec::new();
                    for link in &words[3..] {
                        let (a, b) = link.split_once('>').ok_or_else(|| fail("links look like n1>n2"))?;
                        links.push((node(a)?, node(b)?));
                    }
                    Fault::Cut(links)
                }
                other => return Err(fail(&format!("unknown fault {other:?}"))),
            };
            faults.push(Timed { at, fault });
        }
        let options = options.ok_or("schedule has no `options` line")?;
        faults.sort_by_key(|timed| timed.at);
        Ok((options, Schedule { faults }))
    }

    pub fn render(&self, options: &Options) -> String {
        let mut out =
            String::from("# replog sim schedule: replay with `cargo run -p sim -- --schedule FILE`\n");
        out.push_str(&format!("options {options}\n"));
        for timed in &self.faults {
            out.push_str(&format!("at {} {}\n", timed.at, timed.fault));
        }
        out
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node(id) => write!(f, "n{id}"),
            Target::Leader => write!(f, "leader"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash(target) => write!(f, "crash {target}"),
            Fault::Restart => write!(f, "restart"),
            Fault::Ambush(delay) => write!(f, "ambush {delay}"),
            Fault::Pause(target) => write!(f, "pause {target}"),
            Fault::Resume => write!(f, "resume"),
            Fault::Isolate(target) => write!(f, "isolate {target}"),
            Fault::Cut(links) => {
                write!(f, "cut")?;
                for (a, b) in links {
                    write!(f, " n{a}>n{b}")?;
                }
                Ok(())
            }
            Fault::Heal => write!(f, "heal"),
            Fault::Drift(node, period) => write!(f, "drift n{node} {period}"),
            Fault::Damage(node, Damage::LoseTail(count)) => write!(f, "damage n{node} lose {count}"),
            Fault::Damage(node, Damage::Flip(count)) => write!(f, "damage n{node} flip {count}"),
            Fault::Transfer(node) => write!(f, "transfer n{node}"),
            Fault::Member(op) => {
                write!(f, "member {} {}", op.kind.name(), op.to)?;
                if op.force {
                    write!(f, " force")?;
                }
                if op.on_election {
                    write!(f, " on-election")?;
                }
                Ok(())
            }
        }
    }
}

fn shuffled(rng: &mut ChaCha8Rng, n: u64) -> Vec<u64> {
    let mut ids: Vec<u64> = (1..=n).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.random_range(0..=i));
    }
    ids
}

/// Both directions of every link between the two groups.
fn between(a: &[u64], b: &[u64]) -> Vec<(u64, u64)> {
    let mut links = Vec::new();
    for &x in a {
        for &y in b {
            links.push((x, y));
            links.push((y, x));
        }
    }
    links
}

/// A random majority/minority split.
fn split(rng: &mut ChaCha8Rng, n: u64) -> Vec<(u64, u64)> {
    let ids = shuffled(rng, n);
    let cut = rng.random_range(1..=(n as usize / 2).max(1));
    between(&ids[..cut], &ids[cut..])
}

/// Two overlapping majorities: one node sees both sides, the sides do not see each other.
fn bridge(rng: &mut ChaCha8Rng, n: u64) -> Vec<(u64, u64)> {
    let ids = shuffled(rng, n);
    let rest = &ids[1..];
    let half = rest.len() / 2;
    between(&rest[..half], &rest[half..])
}

/// One node can send but not receive (or the reverse).
fn one_way(rng: &mut ChaCha8Rng, n: u64) -> Vec<(u64, u64)> {
    let node = rng.random_range(1..=n);
    let inbound = rng.random_bool(0.5);
    (1..=n)
        .filter(|&other| other != node)
        .map(|other| if inbound { (other, node) } else { (node, other) })
        .collect()
}

/// Each directed link cut with probability one half.
fn random_links(rng: &mut ChaCha8Rng, n: u64) -> Vec<(u64, u64)> {
    let mut links = Vec::new();
    for a in 1..=n {
        for b in 1..=n {
            if a != b && rng.random_bool(0.5) {
                links.push((a, b));
            }
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_then_parse_gives_the_same_schedule() {
        let options = Options::from_seed(11);
        let schedule = Schedule::generate(&options);
        assert!(!schedule.faults.is_empty());
        let (parsed_options, parsed) = Schedule::parse(&schedule.render(&options)).unwrap();
        assert_eq!(parsed_options, options);
        assert_eq!(parsed, schedule);
    }

    #[test]
    fn membership_changes_parse_with_their_flags() {
        let text = "options seed=1\nat 5 member remove-leader leader force on-election\nat 9 member add-promote n4\n";
        let (_, schedule) = Schedule::parse(text).unwrap();
        let op = |kind, to, force, on_election| Fault::Member(MemberOp { kind, to, force, on_election });
        assert_eq!(schedule.faults[0].fault, op(MemberKind::RemoveLeader, Target::Leader, true, true));
        assert_eq!(schedule.faults[1].fault, op(MemberKind::AddPromote, Target::Node(4), false, false));
        assert_eq!(schedule.faults[0].fault.to_string(), "member remove-leader leader force on-election");
        assert!(Schedule::parse("options seed=1\nat 5 member add leader now\n").is_err());
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let error = Schedule::parse("options seed=1\nat 5 explode n1\n").unwrap_err();
        assert!(error.contains("line 2"), "{error}");
    }
}
