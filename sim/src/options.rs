//! Every parameter of a run, drawn from its seed, so seeds explore different fault mixes.

use crate::bugs::Planted;
use rand::RngExt;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use replog_runtime::sessions::SessionLimits;
use replog_runtime::storage::SEGMENT_BYTES_MAX_DEFAULT;
use std::fmt;

/// Simulated time units per nominal tick (a node with no clock drift ticks every `TICK` units).
pub const TICK: u64 = 1000;

/// After the fault phase everything heals; within this many ticks a leader must be elected and
/// every client must get a fresh append acknowledged (the liveness bound).
pub const LIVENESS_TICKS: u64 = 1500;

/// Availability: after the heal a leader must hold office, in the highest term, within this
/// many election timeouts (of the core's default `election_ticks_max`); from then on, with the
/// network healthy, no term may grow and no other node may lead.
pub const SETTLE_ELECTION_TIMEOUTS: u64 = 6;

/// Availability: once settled, a follower is cut off for this many election timeouts and
/// rejoins (with pre-vote and check-quorum on); it must not depose the healthy leader.
pub const REJOIN_ELECTION_TIMEOUTS: u64 = 3;

/// Availability: this many election timeouts after settling, the leader crashes (it restarts
/// once the others settled); a new leader must settle within `SETTLE_ELECTION_TIMEOUTS`, using
/// at most `FAILOVER_TERMS_MAX` terms. `FAILOVERS` times in a row.
pub const FAILOVER_ELECTION_TIMEOUTS: u64 = 4;
pub const FAILOVER_TERMS_MAX: u64 = 4;
pub const FAILOVERS: u32 = 4;

/// After the liveness checks clients stop; within this many more ticks every node must hold the
/// same committed log.
pub const CONVERGENCE_TICKS: u64 = 500;

/// The smallest snapshot chunk a run with client sessions draws (see `Options::from_seed`).
const SESSION_CHUNK_BYTES_MIN: u64 = 16;

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub seed: u64,
    pub nodes: u64,
    pub clients: u32,
    /// Length of the fault phase, in ticks.
    pub ticks: u64,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Per message: lost / delivered twice / held back for long / replayed much later.
    pub drop_rate: f64,
    pub dup_rate: f64,
    pub delay_rate: f64,
    pub replay_rate: f64,
    /// Normal one-way latency is uniform in `[1, latency_max]` units.
    pub latency_max: u64,
    /// Mean ticks between node faults (crash or pause) and between partitions; 0 disables.
    pub crash_every_ticks: u64,
    pub pause_every_ticks: u64,
    pub partition_every_ticks: u64,
    /// At a crash, the chance that the first lost write is torn (partly on disk).
    pub torn_write_rate: f64,
    /// The chance that one fsync fails, which stops the node.
    pub fsync_fail_rate: f64,
    /// Each node's tick period is `TICK` ± up to this many percent.
    pub clock_drift_pct: u64,
    /// Background sync latency, uniform in `[1, sync_latency_max]` units.
    pub sync_latency_max: u64,
    /// Flow-control limits handed to the nodes: small ones split catch-up into many messages.
    pub entries_per_message_max: u32,
    pub inflight_messages_max: u32,
    /// Mean ticks between storage faults on synced data (lost records, flipped bits); 0
    /// disables.
    pub damage_every_ticks: u64,
    /// Each node's log segments roll past this size (the storage's default unless set: small
    /// values make every node roll, truncate into and recover many segments).
    pub segment_bytes_max: u64,
    /// Retention (`--retain-entries`): each node snapshots and trims its log to keep this many
    /// applied entries; 0 keeps everything.
    pub retain_entries: u64,
    /// Snapshot bytes per InstallSnapshot chunk: small ones split a transfer into many.
    pub snapshot_chunk_bytes: u64,
    /// Bytes of log entries each node keeps in memory (`Config::log_cache_bytes_max`): small
    /// ones make leaders read lagging followers' entries back from disk.
    pub log_cache_bytes: u64,
    /// Mean ticks between leadership transfers asked of the leader (§3.10); 0 disables.
    pub transfer_every_ticks: u64,
    /// Nodes started with no configuration (`Config::joining`), ids after the bootstrap
    /// voters', that an operator may add; removed ids are never added again.
    pub spares: u64,
    /// Mean ticks between membership changes asked of the cluster (dissertation §4.1); 0
    /// disables.
    pub member_every_ticks: u64,
    /// Entry bytes each node's driver reads from disk for its core per round
    /// (`Driver::set_read_budget`); 0 keeps the runtime's default. Small ones leave reads for
    /// later rounds often.
    pub read_budget: u64,
    /// Percent of the clients that append through client sessions (exactly-once, retried);
    /// the others append plain commands and never retry.
    pub sessions_pct: u64,
    /// The session table's limits handed to every node (`Driver::set_session_limits`); 0
    /// keeps the runtime's default. Small ones make sessions expire, get pushed out and forget
    /// old outcomes.
    pub session_cap: u64,
    pub session_window: u64,
    pub session_idle: u64,
    /// Readers that follow the committed log (`replog follow`), each from a node it switches.
    pub followers: u64,
    /// A deliberate core or driver bug (planted in builds with the `bugs` feature only).
    pub bug: Option<Planted>,
}

impl Options {
    /// The bug to plant: none in builds without the `bugs` feature.
    pub fn planted(&self) -> Option<Planted> {
        self.bug.filter(|_| cfg!(feature = "bugs"))
    }

    /// The session limits every node keeps: the runtime's defaults where none is drawn.
    pub fn session_limits(&self) -> SessionLimits {
        let default = SessionLimits::default();
        let or = |drawn: u64, default: u64| if drawn == 0 { default } else { drawn };
        SessionLimits {
            sessions_max: or(self.session_cap, default.sessions_max as u64) as usize,
            window: or(self.session_window, default.window),
            idle_entries: or(self.session_idle, default.idle_entries),
        }
    }

    /// Whether client `client` (of `clients`) appends through a session.
    pub fn uses_session(&self, client: u32) -> bool {
        u64::from(client) * 100 < self.sessions_pct * u64::from(self.clients)
    }

    /// Every node id of the run: the bootstrap voters `1..=nodes`, then the spares.
    pub fn ids(&self) -> u64 {
        self.nodes + self.spares
    }

    pub fn from_seed(seed: u64) -> Options {
        // A stream of its own, so options never shift when the run's other draws change.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6f70_7469_6f6e_7321);
        let rate = |rng: &mut ChaCha8Rng, max: f64| (rng.random_range(0.0..max) * 1000.0).round() / 1000.0;
        let mut options = Options {
            seed,
            nodes: [3, 3, 4, 5, 5][rng.random_range(0..5usize)],
            clients: rng.random_range(1..=4),
            ticks: rng.random_range(1000..=3000),
            pre_vote: rng.random_bool(0.8),
            check_quorum: rng.random_bool(0.8),
            drop_rate: rate(&mut rng, 0.15),
            dup_rate: rate(&mut rng, 0.05),
            delay_rate: rate(&mut rng, 0.05),
            replay_rate: rate(&mut rng, 0.01),
            latency_max: rng.random_range(20..=400),
            crash_every_ticks: rng.random_range(150..=1500),
            pause_every_ticks: rng.random_range(300..=3000),
            partition_every_ticks: rng.random_range(150..=1500),
            torn_write_rate: rate(&mut rng, 0.5),
            fsync_fail_rate: rate(&mut rng, 0.002),
            clock_drift_pct: rng.random_range(0..=10),
            sync_latency_max: rng.random_range(10..=500),
            entries_per_message_max: [1, 2, 3, 8, 64][rng.random_range(0..5usize)],
            inflight_messages_max: [1, 2, 8, 64][rng.random_range(0..4usize)],
            // Drawn last: the options above keep their values for every seed.
            damage_every_ticks: [0, 300, 600, 1200][rng.random_range(0..4usize)],
            // Drawn after: the options above keep their values for every seed.
            retain_entries: [0, 3, 10, 40, 200][rng.random_range(0..5usize)],
            snapshot_chunk_bytes: [3, 16, 64, 1024][rng.random_range(0..4usize)],
            segment_bytes_max: [SEGMENT_BYTES_MAX_DEFAULT, SEGMENT_BYTES_MAX_DEFAULT, 4096, 512]
                [rng.random_range(0..4usize)],
            log_cache_bytes: [0, 0, 200, 2000][rng.random_range(0..4usize)],
            transfer_every_ticks: [0, 150, 500][rng.random_range(0..3usize)],
            // Drawn after: the options above keep their values for every seed.
            spares: [0, 1, 2, 2][rng.random_range(0..4usize)],
            member_every_ticks: [0, 100, 200, 400][rng.random_range(0..4usize)],
            // Drawn after: the options above keep their values for every seed.
            read_budget: [0, 0, 1, 300][rng.random_range(0..4usize)],
            // Drawn after: the options above keep their values for every seed.
            sessions_pct: [0, 50, 100, 100][rng.random_range(0..4usize)],
            session_cap: [0, 0, 2, 3, 4][rng.random_range(0..5usize)],
            session_window: [0, 0, 2, 3, 4][rng.random_range(0..5usize)],
            session_idle: [0, 0, 10, 40, 200][rng.random_range(0..5usize)],
            followers: [0, 1, 1, 2][rng.random_range(0..4usize)],
            bug: None,
        };
        if options.sessions_pct > 0 {
            // A snapshot's image then carries the session table (kilobytes, not tens of bytes):
            // 3-byte chunks would make one transfer hundreds of round trips, longer than the
            // convergence bound.
            options.snapshot_chunk_bytes = options.snapshot_chunk_bytes.max(SESSION_CHUNK_BYTES_MIN);
        }
        options
    }

    /// Parses `key=value` pairs (as `Display` prints them) over these options.
    pub fn apply(&mut self, pairs: &str) -> Result<(), String> {
        for pair in pairs.split_whitespace() {
            let (key, value) =
                pair.split_once('=').ok_or_else(|| format!("expected key=value, got {pair:?}"))?;
            let bad = || format!("bad value for {key}: {value:?}");
            let int = || value.parse::<u64>().map_err(|_| bad());
            let real = || {
                value.parse::<f64>().map_err(|_| bad()).and_then(|v| {
                    if (0.0..=1.0).contains(&v) {
                        Ok(v)
                    } else {
                        Err(bad())
                    }
                })
            };
            let flag = || value.parse::<bool>().map_err(|_| bad());
            match key {
                "seed" => self.seed = int()?,
                "nodes" => self.nodes = int()?.clamp(1, 9),
                "clients" => self.clients = int()?.clamp(0, 64) as u32,
                "ticks" => self.ticks = int()?,
                "pre_vote" => self.pre_vote = flag()?,
                "check_quorum" => self.check_quorum = flag()?,
                "drop" => self.drop_rate = real()?,
                "dup" => self.dup_rate = real()?,
                "delay" => self.delay_rate = real()?,
                "replay" => self.replay_rate = real()?,
                "latency_max" => self.latency_max = int()?.max(1),
                "crash_every" => self.crash_every_ticks = int()?,
                "pause_every" => self.pause_every_ticks = int()?,
                "partition_every" => self.partition_every_ticks = int()?,
                "torn" => self.torn_write_rate = real()?,
                "fsync_fail" => self.fsync_fail_rate = real()?,
                "drift_pct" => self.clock_drift_pct = int()?.min(50),
                "sync_latency_max" => self.sync_latency_max = int()?.max(1),
                "entries_per_message_max" => self.entries_per_message_max = int()?.clamp(1, 1 << 20) as u32,
                "inflight_messages_max" => self.inflight_messages_max = int()?.clamp(1, 1 << 20) as u32,
                "damage_every" => self.damage_every_ticks = int()?,
                "segment_bytes_max" => self.segment_bytes_max = int()?.max(1),
                "retain" => self.retain_entries = int()?,
                "chunk" => self.snapshot_chunk_bytes = int()?.max(1),
                "log_cache" => self.log_cache_bytes = int()?,
                "transfer_every" => self.transfer_every_ticks = int()?,
                "spares" => self.spares = int()?.min(4),
                "member_every" => self.member_every_ticks = int()?,
                "read_budget" => self.read_budget = int()?,
                "sessions" => self.sessions_pct = int()?.min(100),
                "session_cap" => self.session_cap = int()?,
                "session_window" => self.session_window = int()?,
                "session_idle" => self.session_idle = int()?,
                "followers" => self.followers = int()?.min(8),
                "bug" => self.bug = if value == "none" { None } else { Some(Planted::parse(value)?) },
                _ => return Err(format!("unknown option {key:?}")),
            }
        }
        Ok(())
    }
}

impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={} nodes={} clients={} ticks={} pre_vote={} check_quorum={} drop={} dup={} delay={} replay={} \
             latency_max={} crash_every={} pause_every={} partition_every={} torn={} fsync_fail={} drift_pct={} \
             sync_latency_max={} entries_per_message_max={} inflight_messages_max={} damage_every={} retain={} chunk={}",
            self.seed,
            self.nodes,
            self.clients,
            self.ticks,
            self.pre_vote,
            self.check_quorum,
            self.drop_rate,
            self.dup_rate,
            self.delay_rate,
            self.replay_rate,
            self.latency_max,
            self.crash_every_ticks,
            self.pause_every_ticks,
            self.partition_every_ticks,
            self.torn_write_rate,
            self.fsync_fail_rate,
            self.clock_drift_pct,
            self.sync_latency_max,
            self.entries_per_message_max,
            self.inflight_messages_max,
            self.damage_every_ticks,
            self.retain_entries,
            self.snapshot_chunk_bytes,
        )?;
        write!(
            f,
            " segment_bytes_max={} log_cache={} transfer_every={} spares={} member_every={} read_budget={}",
            self.segment_bytes_max,
            self.log_cache_bytes,
            self.transfer_every_ticks,
            self.spares,
            self.member_every_ticks,
            self.read_budget
        )?;
        write!(
            f,
            " sessions={} session_cap={} session_window={} session_idle={} followers={}",
            self.sessions_pct, self.session_cap, self.session_window, self.session_idle, self.followers
        )?;
        if let Some(bug) = &self.bug {
            write!(f, " bug={bug}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_round_trips_through_apply() {
        let mut options = Options::from_seed(7);
        options.bug = Some(Planted::parse("quorum-of-half").unwrap());
        options.segment_bytes_max = 4096;
        let mut parsed = Options::from_seed(0);
        parsed.apply(&options.to_string()).unwrap();
        assert_eq!(parsed, options);
    }

    #[test]
    fn seeds_draw_different_mixes() {
        let a = Options::from_seed(1);
        let b = Options::from_seed(2);
        assert_ne!(a, b);
        assert_eq!(a, Options::from_seed(1));
    }
}
