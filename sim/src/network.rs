//! The simulated network: latency (so reordering), loss, duplication, long delays, stale
//! replays, and partitions as sets of cut directed links.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use replog_core::Message;
use std::collections::BTreeSet;

/// Old messages kept for replaying much later.
const REPLAY_POOL_MAX: usize = 64;

#[derive(Debug, Default, Clone, Copy)]
pub struct NetworkStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub replayed: u64,
}

#[derive(Debug)]
pub struct Network {
    cut: BTreeSet<(u64, u64)>,
    pub drop_rate: f64,
    pub dup_rate: f64,
    pub delay_rate: f64,
    pub replay_rate: f64,
    pub latency_max: u64,
    replay_pool: Vec<Message>,
    pub stats: NetworkStats,
    /// Bumped at every change of the cut links (the health checks' view of isolation).
    pub changes: u64,
}

impl Network {
    pub fn new(
        drop_rate: f64,
        dup_rate: f64,
        delay_rate: f64,
        replay_rate: f64,
        latency_max: u64,
    ) -> Network {
        Network {
            cut: BTreeSet::new(),
            drop_rate,
            dup_rate,
            delay_rate,
            replay_rate,
            latency_max,
            replay_pool: Vec::new(),
            stats: NetworkStats::default(),
            changes: 0,
        }
    }

    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.contains(&(from, to))
    }

    pub fn cut(&mut self, links: impl IntoIterator<Item = (u64, u64)>) {
        self.changes += 1;
        self.cut.extend(links);
    }

    /// Cuts every link between `node` and the other nodes of `1..=nodes`, both ways.
    pub fn isolate(&mut self, node: u64, nodes: u64) {
        let others: Vec<u64> = (1..=nodes).filter(|&other| other != node).collect();
        self.cut(others.iter().flat_map(|&other| [(node, other), (other, node)]));
    }

    pub fn heal(&mut self) {
        self.changes += 1;
        self.cut.clear();
    }

    /// No more faults: the liveness phase.
    pub fn calm(&mut self) {
        self.heal();
        self.drop_rate = 0.0;
        self.dup_rate = 0.0;
        self.delay_rate = 0.0;
        self.replay_rate = 0.0;
    }

    pub fn latency(&self, rng: &mut ChaCha8Rng) -> u64 {
        rng.random_range(1..=self.latency_max)
    }

    /// Decides when (and how often) a message arrives: one (delay, message, replayed) per
    /// delivery, none if lost; `replayed` marks an old message sent again. Partitions are
    /// checked again at delivery, so a message in flight when a partition starts is lost too.
    pub fn send(&mut self, rng: &mut ChaCha8Rng, message: Message) -> Vec<(u64, Message, bool)> {
        self.stats.sent += 1;
        let mut deliveries = Vec::new();
        if self.is_cut(message.from.0, message.to.0) || rng.random_bool(self.drop_rate) {
            self.stats.dropped += 1;
        } else {
            let mut delay = self.latency(rng);
            if rng.random_bool(self.delay_rate) {
                self.stats.delayed += 1;
                delay += rng.random_range(1_000..=30_000);
            }
            if rng.random_bool(self.dup_rate) {
                self.stats.duplicated += 1;
                deliveries.push((self.latency(rng), message.clone(), false));
            }
            deliveries.push((delay, message.clone(), false));
        }
        if self.replay_rate > 0.0 {
            if rng.random_bool(self.replay_rate) && !self.replay_pool.is_empty() {
                let old = self.replay_pool[rng.random_range(0..self.replay_pool.len())].clone();
                self.stats.replayed += 1;
                deliveries.push((self.latency(rng), old, true));
            }
            if self.replay_pool.len() < REPLAY_POOL_MAX {
                self.replay_pool.push(message);
            } else if rng.random_bool(0.1) {
                let slot = rng.random_range(0..REPLAY_POOL_MAX);
                self.replay_pool[slot] = message;
            }
        }
        deliveries
    }
}
