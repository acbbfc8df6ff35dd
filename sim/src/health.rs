//! The node health check (`replog health`, `GET /health`) under the simulator. Every node runs
//! the runtime's own `Monitor`, fed as its server feeds it (each Raft message stepped, each
//! leadership seen, a publish every tick), and dies with the process. Its claim, "healthy means a
//! leader confirmed by a quorum within the last election timeout exists and the commit index
//! moves or has nothing to do", is checked both ways at a sampled cadence:
//!
//! - **soundness** (a safety property of the check): a node cut off from every majority of the
//!   voters of its configuration must not report healthy, by either verdict, once the cut is
//!   older than the bound below;
//! - **completeness** (liveness): once the run's last failover settled, every running voter of
//!   the leader's configuration reports healthy within `COMPLETE_ELECTION_TIMEOUTS` election
//!   timeouts, and stays so to the end.
//!
//! Time: the runtime reads `Instant`s; a node here reads `base + virtual time` (`UNIT` per
//! simulated unit, so `options::TICK` is the server's 10 ms tick), `base` taken once per run.
//! Verdicts depend only on differences, so they are deterministic; no `Instant` is printed.

use crate::checker::{majority, Kind, Violation};
use crate::cluster::Cluster;
use crate::disk::SimFs;
use crate::network::Network;
use crate::options::{Options, TICK};
use crate::timeline::{SimEvent, Timeline};
use replog_core::{Config, Node, NodeId, Term};
use replog_runtime::driver::Driver;
use replog_runtime::members::Members;
use replog_runtime::metrics::{Metrics, Monitor, MonitorBug, Observed};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ticks between two health samples.
pub(crate) const SAMPLE_TICKS: u64 = 5;

/// Completeness: election timeouts after the last settle by which every voter is healthy.
pub(crate) const COMPLETE_ELECTION_TIMEOUTS: u64 = 3;

/// The longest a message is held back by the network (`Network::send`: a long delay of up to
/// 30 ticks on top of the latency).
const LONG_DELAY_MAX: u64 = 30 * TICK;

/// The real time one simulated unit stands for: the server's tick per simulated tick.
fn unit() -> Duration {
    replog_runtime::server::TICK / TICK as u32
}

/// The run's clock as the nodes' `Instant`s.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock { base: Instant::now() }
    }

    pub(crate) fn at(self, units: u64) -> Instant {
        self.base + unit() * u32::try_from(units).unwrap_or(u32::MAX)
    }
}

/// How long a confirmation holds, as the server sets it: an election timeout (its upper bound).
fn confirm_within(config: &Config) -> Duration {
    replog_runtime::server::TICK * config.election_ticks_max
}

/// One node's monitor, as its server holds it: it lives and dies with the process.
pub(crate) struct NodeMonitor {
    monitor: Monitor,
    members: Members,
}

impl NodeMonitor {
    pub(crate) fn new(id: NodeId, config: &Config, now: Instant, bug: Option<MonitorBug>) -> NodeMonitor {
        let metrics = Arc::new(Metrics::new());
        #[allow(unused_mut)]
        let mut monitor = Monitor::new(metrics, confirm_within(config), now);
        #[cfg(feature = "bugs")]
        if let Some(bug) = bug {
            monitor.plant(bug);
        }
        #[cfg(not(feature = "bugs"))]
        let _ = bug;
        let port = u16::try_from(id.0).unwrap_or(u16::MAX);
        let members = Members::new(id, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        NodeMonitor { monitor, members }
    }

    /// A message of `term` from `from` was stepped (the server's `on_inbound`).
    pub(crate) fn heard(&mut self, node: &Node, from: NodeId, term: Term, now: Instant) {
        self.monitor.heard(node, from, term, now);
    }

    /// After a round (the server's `log_leadership`, after every dispatch).
    pub(crate) fn leadership(&mut self, node: &Node) {
        self.monitor.leadership(node.term(), node.leader());
    }

    /// Every tick.
    pub(crate) fn publish(&mut self, driver: &Driver<SimFs>, now: Instant) {
        self.monitor.publish(&Observed::of(driver, &self.members), now);
    }

    /// The two verdicts at `now`: `GET /health`'s (the facts last published, judged by the HTTP
    /// server's clock) and `replog health`'s (the event loop publishes fresh facts first).
    pub(crate) fn verdicts(
        &mut self,
        driver: &Driver<SimFs>,
        now: Instant,
    ) -> [(&'static str, Result<(), String>); 2] {
        let http = self.monitor.metrics().assess(now);
        let cli = self.monitor.assess(&Observed::of(driver, &self.members), now);
        [("GET /health", http), ("replog health", cli)]
    }
}

/// Why a node's verdict must turn unhealthy: its leadership cannot be confirmed by a quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doubt {
    /// It leads, and fewer than a majority of its voters (itself included) can reach it.
    Leading,
    /// It follows a leader whose messages cannot reach it.
    LeaderUnheard(NodeId),
    /// It follows a leader it hears, and that leader is down or paused (in this life).
    LeaderStopped(NodeId, u64),
    /// It follows a leader it hears, and fewer than a majority of the leader's voters can
    /// reach the leader.
    LeaderCutOff(NodeId, u64),
}

/// A node's doubt, as last sampled, with what it was judged on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sampled {
    network_changes: u64,
    life: u64,
    voters: Vec<NodeId>,
    doubt: Option<Doubt>,
    /// The doubt has held since this sample.
    since: u64,
}

/// The health checks of a run.
pub(crate) struct Health {
    sampled: Vec<Sampled>,
    /// When each node last stepped a message the network replayed (an old one sent again).
    replayed: Vec<u64>,
    /// Soundness bounds, in units: a node that leads or follows a leader it cannot hear; a
    /// follower of a stopped leader it hears; of a cut-off leader it hears (None: not checked,
    /// see `new`).
    bound: u64,
    bound_stopped: u64,
    bound_via_leader: Option<u64>,
    /// The slowest tick period any node may have.
    period_max: u64,
    /// Completeness: when the last settle happened, and from when every voter must be healthy.
    complete: Option<(u64, u64)>,
}

impl Health {
    pub(crate) fn new(options: &Options) -> Health {
        let config = Config::new(NodeId(1), vec![]);
        let period_max = TICK + TICK * options.clock_drift_pct / 100;
        let confirm = TICK * u64::from(config.election_ticks_max);
        // The monitor publishes once a tick: its facts are up to a tick old, and a leader is
        // known from the publish after it was learned.
        let bound = confirm + 2 * period_max;
        // A follower's verdict trusts its leader, whose own verdict it cannot see. What a leader
        // sent before it stopped may arrive up to the longest delay later. A leader in the
        // same minority goes on heartbeating it until check-quorum deposes it (two checks,
        // `election_ticks_min` ticks apart: the first may count contact from before the cut);
        // without check-quorum (always on in the runtime; off in some seeds, for the core)
        // such a leader never steps down: then the case is not checked.
        let in_flight = LONG_DELAY_MAX + options.latency_max;
        let deposed = (2 * u64::from(config.election_ticks_min) + 1) * period_max;
        let bound_via_leader = options.check_quorum.then_some(bound + deposed + in_flight);
        Health {
            sampled: vec![Sampled::default(); options.ids() as usize],
            replayed: vec![0; options.ids() as usize],
            bound,
            bound_stopped: bound + in_flight,
            bound_via_leader,
            period_max,
            complete: None,
        }
    }

    pub(crate) fn start(&self, t: &mut Timeline) {
        t.schedule(SAMPLE_TICKS * TICK, SimEvent::HealthSample);
    }

    /// Node `index` stepped a message the network replayed.
    pub(crate) fn on_replayed(&mut self, index: usize, now: u64) {
        self.replayed[index] = now;
    }

    /// The last failover settled: completeness is due `COMPLETE_ELECTION_TIMEOUTS` later.
    pub(crate) fn on_final_settle(&mut self, now: u64) {
        let timeout = TICK * u64::from(Config::new(NodeId(1), vec![]).election_ticks_max);
        self.complete = Some((now, now + COMPLETE_ELECTION_TIMEOUTS * timeout + self.period_max));
    }

    /// A sample: both checks on every running node, and the next sample.
    pub(crate) fn sample(
        &mut self,
        cluster: &mut Cluster,
        network: &Network,
        t: &mut Timeline,
    ) -> Result<(), Violation> {
        t.schedule(SAMPLE_TICKS * TICK, SimEvent::HealthSample);
        let now = t.now();
        self.check_sound(cluster, network, t)?;
        let Some((settled, from)) = self.complete.filter(|&(_, from)| now >= from) else {
            return Ok(());
        };
        let (_, Some(leader)) = cluster.leader() else {
            return Ok(()); // the availability checks say what is wrong
        };
        let leader_id = leader.id();
        let voters: Vec<NodeId> = leader.membership().voters().collect();
        for id in voters {
            let index = id.0 as usize - 1;
            if index >= cluster.len() || !cluster.is_up(index) || cluster.nodes()[index].is_paused() {
                continue;
            }
            for (which, verdict) in cluster.health_verdicts(index, now) {
                if let Err(reason) = verdict {
                    let broken = (
                        "health completeness",
                        format!(
                            "{id}, a voter of leader {leader_id}'s configuration, is unhealthy by {which} at tick {} (the last failover settled at tick {}, every voter must be healthy from tick {} on): {reason}",
                            now / TICK,
                            settled / TICK,
                            from / TICK
                        ),
                    );
                    return Err(t.violation(Kind::Liveness, Some(id), broken));
                }
            }
        }
        Ok(())
    }

    /// Soundness: a node whose leadership cannot be confirmed by a quorum, for longer than the
    /// bound, does not report healthy.
    fn check_sound(
        &mut self,
        cluster: &mut Cluster,
        network: &Network,
        t: &Timeline,
    ) -> Result<(), Violation> {
        let now = t.now();
        for index in 0..cluster.len() {
            let doubt = doubt(cluster, network, index);
            let sim = &cluster.nodes()[index];
            let (Some(node), Some((doubt, reason))) = (sim.node(), doubt) else {
                self.sampled[index] = Sampled::default();
                continue;
            };
            let id = node.id();
            let seen = Sampled {
                network_changes: network.changes,
                life: sim.life(),
                voters: node.membership().voters().collect(),
                doubt: Some(doubt),
                since: self.sampled[index].since,
            };
            // Between two samples the links, the node's life or its configuration may have
            // changed and changed back: a doubt counts from a sample at which nothing changed
            // since the one before, so never for longer than it surely held.
            let since = if seen == self.sampled[index] { seen.since } else { now };
            self.sampled[index] = Sampled { since, ..seen };
            // Across a cut nothing arrives, replays included (the network checks the cut at
            // delivery, also of what a paused node held). Over a link that is up, the network
            // may replay an old heartbeat of the leader's term at any time, which the node (its
            // core too) takes for a fresh one: a doubt that rests on the leader's state counts
            // from the last replay the node stepped.
            let (bound, since) = match doubt {
                Doubt::Leading | Doubt::LeaderUnheard(_) => (self.bound, since),
                Doubt::LeaderStopped(..) => (self.bound_stopped, since.max(self.replayed[index])),
                Doubt::LeaderCutOff(..) => match self.bound_via_leader {
                    Some(bound) => (bound, since.max(self.replayed[index])),
                    None => continue,
                },
            };
            if now - since <= bound {
                continue;
            }
            let role = node.role();
            for (which, verdict) in cluster.health_verdicts(index, now) {
                if verdict.is_ok() {
                    let broken = (
                        "health soundness",
                        format!(
                            "{id} ({role}) reports healthy by {which} at tick {} though {reason} since tick {} (the bound is {} ticks)",
                            now / TICK,
                            since / TICK,
                            bound / TICK
                        ),
                    );
                    return Err(t.violation(Kind::Safety, Some(id), broken));
                }
            }
        }
        Ok(())
    }
}

/// Whether node `index`, running, may not report healthy, and why in words.
fn doubt(cluster: &Cluster, network: &Network, index: usize) -> Option<(Doubt, String)> {
    let sim = &cluster.nodes()[index];
    let node = sim.node().filter(|_| !sim.is_paused())?;
    let id = node.id();
    let names = |ids: &[NodeId]| ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(",");
    // The voters of `node`'s configuration that reach it (itself included), if not a majority.
    let unconfirmed = |node: &Node| -> Option<String> {
        let voters: Vec<NodeId> = node.membership().voters().collect();
        let reach: Vec<NodeId> =
            voters.iter().copied().filter(|&v| v == node.id() || !network.is_cut(v.0, node.id().0)).collect();
        (!voters.is_empty() && reach.len() < majority(voters.len()))
            .then(|| format!("only {{{}}} of its voters {{{}}} reach it", names(&reach), names(&voters)))
    };
    let leader = node.leader()?;
    if leader == id {
        return unconfirmed(node).map(|why| (Doubt::Leading, why));
    }
    if network.is_cut(leader.0, id.0) {
        return Some((Doubt::LeaderUnheard(leader), format!("its leader {leader} cannot reach it")));
    }
    let at = leader.0 as usize - 1;
    let leading = cluster.nodes().get(at)?;
    let life = leading.life();
    match leading.node().filter(|_| !leading.is_paused()) {
        None => Some((Doubt::LeaderStopped(leader, life), format!("its leader {leader} is down or paused"))),
        Some(l) => unconfirmed(l)
            .map(|why| (Doubt::LeaderCutOff(leader, life), format!("its leader {leader} is cut off: {why}"))),
    }
}
