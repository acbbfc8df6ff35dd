//! Follow readers: clients that read the committed log as it grows, as `replog follow` would.
//! Each asks one node at a time for the committed commands from the ID after the last one it
//! saw (`Driver::index_of_command`, then the entries through the node's commit index), and
//! moves to another node when that one is down or paused, has trimmed what it needs, or has
//! shown nothing new a few times in a row (cut off by a partition, or lagging), and sometimes
//! for no reason. Whatever it reads is one stream, which the end of the run checks: gap-free,
//! each command once, exactly the committed commands from where the stream began. A reader
//! that finds what it needs trimmed everywhere begins a new stream where a node's log starts.

use crate::cluster::{Cluster, FollowPage};
use crate::history::Stream;
use crate::network::Network;
use crate::options::{Options, TICK};
use crate::timeline::{SimEvent, Timeline};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Entries a reader asks for at most in one read (a page of `query`).
const PAGE_ENTRIES_MAX: u64 = 16;
/// Reads with nothing new from one node before the reader tries another.
const IDLE_READS_MAX: u32 = 3;
/// Nodes that trimmed what the reader needs, in a row, before it begins a new stream.
const TRIMMED_MAX: u32 = 3;
/// The chance a reader moves to another node after a read anyway.
const SWITCH_RATE: f64 = 0.1;

struct Reader {
    node: usize,
    /// Its current stream, in `Followers::streams`.
    stream: usize,
    /// The ID it asks for next.
    next_id: u64,
    idle: u32,
    trimmed: u32,
}

/// What the follow readers did.
#[derive(Clone, Copy, Debug, Default)]
pub struct FollowStats {
    pub reads: u64,
    pub commands: u64,
    pub switches: u64,
    pub trimmed: u64,
    /// Streams begun after what a reader needed was trimmed everywhere it asked.
    pub restarts: u64,
}

pub(crate) struct Followers {
    readers: Vec<Reader>,
    streams: Vec<Stream>,
    nodes: usize,
    rng: ChaCha8Rng,
    pub(crate) stats: FollowStats,
}

impl Followers {
    pub(crate) fn new(options: &Options, mut rng: ChaCha8Rng) -> Followers {
        let nodes = options.ids() as usize;
        let readers = (0..options.followers as usize)
            .map(|reader| Reader {
                node: rng.random_range(0..nodes),
                stream: reader,
                next_id: 1,
                idle: 0,
                trimmed: 0,
            })
            .collect();
        let streams = (0..options.followers as usize)
            .map(|reader| Stream { reader, first_id: 1, commands: Vec::new() })
            .collect();
        Followers { readers, streams, nodes, rng, stats: FollowStats::default() }
    }

    /// Every reader starts within its first five ticks.
    pub(crate) fn start(&mut self, t: &mut Timeline) {
        for reader in 0..self.readers.len() {
            let delay = self.rng.random_range(1..=5 * TICK);
            t.schedule(delay, SimEvent::FollowRead { reader });
        }
    }

    /// A reader's next read, at the node it reads from; the next one is scheduled after a
    /// round trip and a pause.
    pub(crate) fn on_read(
        &mut self,
        reader: usize,
        cluster: &mut Cluster,
        network: &Network,
        t: &mut Timeline,
    ) {
        self.stats.reads += 1;
        let state = &mut self.readers[reader];
        let entries_max = self.rng.random_range(1..=PAGE_ENTRIES_MAX);
        let mut switch = self.rng.random_bool(SWITCH_RATE);
        match cluster.follow_read(state.node, state.next_id, entries_max) {
            FollowPage::Unavailable => switch = true,
            FollowPage::Trimmed { first_id } => {
                self.stats.trimmed += 1;
                state.trimmed += 1;
                if state.trimmed >= TRIMMED_MAX {
                    // Gone everywhere it asked: a new stream where this node's log starts.
                    self.stats.restarts += 1;
                    state.trimmed = 0;
                    state.next_id = first_id;
                    state.stream = self.streams.len();
                    self.streams.push(Stream { reader, first_id, commands: Vec::new() });
                    let node = state.node;
                    t.note(|| {
                        format!("follower {reader} begins a new stream at ID {first_id} on n{}", node + 1)
                    });
                } else {
                    switch = true;
                }
            }
            FollowPage::Commands(commands) => {
                state.trimmed = 0;
                if commands.is_empty() {
                    state.idle += 1;
                    switch |= state.idle >= IDLE_READS_MAX;
                } else {
                    state.idle = 0;
                }
                if let Some(&(last, _)) = commands.last() {
                    self.stats.commands += commands.len() as u64;
                    let node = state.node;
                    let (first, count) = (commands[0].0, commands.len());
                    t.note(|| {
                        format!("follower {reader} read IDs {first}..={last} ({count}) from n{}", node + 1)
                    });
                    state.next_id = last + 1;
                    let stream = &mut self.streams[state.stream];
                    stream
                        .commands
                        .extend(commands.into_iter().map(|(_, command)| command.as_slice().to_vec()));
                }
            }
        }
        if switch {
            self.stats.switches += 1;
            state.idle = 0;
            state.node = self.rng.random_range(0..self.nodes);
        }
        let delay = self.rng.random_range(1..=3 * TICK) + 2 * network.latency(&mut self.rng);
        t.schedule(delay, SimEvent::FollowRead { reader });
    }

    /// What every reader read.
    pub(crate) fn streams(&self) -> &[Stream] {
        &self.streams
    }
}
