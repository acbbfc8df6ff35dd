//! The replog command line: `start`, `append`, `query` as the seed describes them, plus
//! `status` (of a node or, `--cluster`, of every member), `health`, `cluster` (a local cluster in
//! one command), `bench` (a closed-loop load test) and the offline log tools `dump` and `verify`.

mod append;
mod bench;
mod certs;
mod cluster;
mod cluster_status;
mod member;
mod read;
mod tools;

use clap::{Parser, Subcommand};
use replog_runtime::retention::Retention;
use replog_runtime::storage::{StorageOptions, SEGMENT_BYTES_MAX_DEFAULT};
use replog_runtime::tls::{self, Tls, TlsFiles};
use replog_runtime::NodeOptions;
use replog_runtime::{address, client};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "replog",
    version,
    about = "A replicated log built on Raft",
    after_help = "Logs go to stderr; REPLOG_LOG=debug shows more (default: info)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Mutual TLS: a node serves and dials only TLS 1.3 with these; a client command connects
/// with them. All three or none.
#[derive(clap::Args, Debug, Default)]
struct TlsArgs {
    /// This side's certificate (PEM), signed by the CA; a node's names its address (IP SAN)
    #[arg(long, global = true, value_name = "FILE", env = "REPLOG_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM)
    #[arg(long, global = true, value_name = "FILE", env = "REPLOG_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The CA certificate (PEM) the other side's certificate must be signed by
    #[arg(long, global = true, value_name = "FILE", env = "REPLOG_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The three files, if given; an error if only some are.
    fn files(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                Ok(Some(TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() }))
            }
            (None, None, None) => Ok(None),
            _ => Err("--tls-cert, --tls-key and --tls-ca (REPLOG_TLS_CERT, REPLOG_TLS_KEY, REPLOG_TLS_CA) go together: give all three or none".into()),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a node (runs until Ctrl-C or SIGTERM).
    Start {
        /// Node ID: names the node and its data folder data/<ID>/
        #[arg(short, long)]
        id: String,
        /// Address to bind to (for peers and clients alike)
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        address: String,
        /// Peer addresses (comma-separated): the other nodes of a NEW cluster. Not needed once
        /// the node has bootstrapped (the configuration then lives in its log)
        #[arg(short, long, value_delimiter = ',')]
        peers: Vec<String>,
        /// Join an existing cluster through this member: a new node asks to be added, as a
        /// learner promoted to voter once caught up (see `replog member`)
        #[arg(long, value_name = "ADDR", conflicts_with = "peers")]
        join: Option<String>,
        /// With --join: stay a learner (receives the log, never votes) until promoted
        #[arg(long, requires = "join")]
        learner: bool,
        /// Start as leader: start an election at once (Raft still decides)
        #[arg(short, long)]
        leader: bool,
        /// Folder holding every node's data folder
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Cut a damaged log record (and everything after it) and fetch the lost entries from
        /// the leader, instead of refusing to start; the node votes again once repaired
        #[arg(long)]
        repair: bool,
        /// Keep at least the newest N committed entries; older ones are snapshotted and their
        /// log segments deleted (default: keep everything)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        retain_entries: Option<u64>,
        /// Keep at least the newest B bytes of committed entries; older ones are snapshotted
        /// and their log segments deleted (default: keep everything)
        #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(1..))]
        retain_bytes: Option<u64>,
        /// Start a new log segment file past this many bytes; retention deletes whole segments
        #[arg(long, value_name = "B", default_value_t = SEGMENT_BYTES_MAX_DEFAULT,
              value_parser = clap::value_parser!(u64).range(4096..))]
        segment_bytes: u64,
        /// Serve Prometheus metrics at http://ADDR/metrics and the health check at
        /// http://ADDR/health (200 "ok", or 503 and the reason)
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<String>,
    },
    /// Append a command to the log (or several, as one batch: all or nothing, in order);
    /// returns once it is committed. Exactly once: retried through lost answers and leader
    /// changes within the timeout, and never appended twice.
    Append(append::AppendArgs),
    /// Query the current log state of one node.
    Query {
        /// Target node address
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// Ask the leader, after it confirms its leadership with a majority: the answer then
        /// includes every append acknowledged before the query started
        #[arg(long)]
        linearizable: bool,
        /// Only the committed commands from this ID on, one line each (no header)
        #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
        from: Option<u64>,
        /// Up to this command ID (inclusive)
        #[arg(long, value_name = "ID", conflicts_with = "last",
              value_parser = clap::value_parser!(u64).range(1..))]
        to: Option<u64>,
        /// Only the newest N committed commands (at or after --from)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        last: Option<u64>,
        /// One JSON object per command and line: {"id","index","term","data"} ("data_hex" for
        /// a command that is not UTF-8); alone, every committed command
        #[arg(long)]
        json: bool,
    },
    /// Snapshot and drop one node's entries before a command ID (never past its commit
    /// index); query then starts at that ID. Run it against each node to trim the cluster.
    Trim {
        /// Target node address
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// Drop the entries before this command ID
        #[arg(long, value_name = "ID")]
        before: u64,
    },
    /// Hand leadership to another node (before restarting the leader, say): the leader brings
    /// it up to date, tells it to take over at once, and refuses appends meanwhile (at most an
    /// election timeout); exits 1 if it did not take over.
    TransferLeader {
        /// Any node of the cluster (followers redirect to the leader)
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// The node to lead next (default: the most up-to-date follower)
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// See or change the cluster's members (one server at a time; every command follows
    /// redirects to the leader).
    Member {
        #[command(subcommand)]
        action: member::MemberCommand,
    },
    /// Show a node's role, term, leader, commit and its peers' replication progress; with
    /// --cluster, one row per member of the cluster, each asked for its own status.
    Status {
        /// Target node address
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// Print the raw JSON (with --cluster: a JSON array, one object per member)
        #[arg(long)]
        json: bool,
        /// Ask the target for the members, then each member for its status: one row each
        /// (exit 1 if a member does not answer; its row says so)
        #[arg(long)]
        cluster: bool,
    },
    /// Exit 0 if the node sees a cluster that can commit: a leader confirmed by a quorum
    /// within the last election timeout, and a commit index that moves or has nothing to do.
    /// Otherwise exit 1 with the reason in one line.
    Health {
        /// Target node address
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Start a local cluster of N nodes as child processes; Ctrl-C stops them all.
    Cluster {
        /// Number of nodes
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// Node k listens on 127.0.0.1:<base-port + k - 1>
        #[arg(long, default_value_t = 8080)]
        base_port: u16,
        /// Folder holding every node's data folder
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Mutual TLS: make a throwaway CA and certificates for the nodes and the CLI under
        /// <data-dir>/tls/, start the nodes with them, print the variables to export
        #[arg(long)]
        tls: bool,
    },
    /// Closed-loop load: each client appends, waits for the commit, appends again.
    Bench {
        /// Any node of the cluster
        #[arg(short, long, default_value = "127.0.0.1:8080")]
        target: String,
        /// Concurrent clients
        #[arg(long, default_value_t = 1)]
        clients: u32,
        /// Seconds to run
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Command size in bytes
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Append through client sessions (exactly once), as `replog append` does
        #[arg(long)]
        sessions: bool,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print committed commands as they commit, like `tail -f` (Ctrl-C ends it), in `query`'s
    /// line format; follows the cluster across leader changes and restarts with no gap and no
    /// duplicate.
    Follow {
        /// Any node of the cluster (comma-separated for several); the other members are
        /// learned from its status
        #[arg(short, long, default_value = "127.0.0.1:8080", value_delimiter = ',')]
        target: Vec<String>,
        /// Start at this command ID (default: the next command to commit; 1 for everything)
        #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
        from: Option<u64>,
        /// One JSON object per command and line, as `query --json`
        #[arg(long)]
        json: bool,
    },
    /// Print a node's data folder, read offline (never written): metadata, snapshot, every
    /// log record with its command IDs, every checksum checked. Damage is reported with its
    /// file, line and byte offset, and the rest is read on; exit 1 if anything is damaged.
    Dump {
        /// The node's data folder (data/<node>/)
        data_dir: PathBuf,
        /// Print records from the one holding this command ID on (every record is still checked)
        #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
        from: Option<u64>,
        /// One JSON object per line; its "kind" says what it is (metadata, snapshot, partial,
        /// segment, record, damage, warning, summary)
        #[arg(long)]
        json: bool,
    },
    /// Check data folders offline: every checksum, and that the committed prefixes of several
    /// nodes' folders agree. Exit 0: all good; 1: damaged data; 2: the committed prefixes
    /// disagree; 3: bad usage or a folder that cannot be read.
    Verify {
        /// The nodes' data folders (data/<node>/)
        #[arg(required = true, value_name = "DATA_DIR")]
        data_dirs: Vec<PathBuf>,
    },
}

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|error| {
        // `verify` says what failed by its exit status: bad usage is 3 there (2 is a
        // disagreement), clap's 2 everywhere else.
        let verify = std::env::args().nth(1).is_some_and(|command| command == "verify");
        let status = if verify && error.use_stderr() { tools::EXIT_UNUSABLE } else { error.exit_code() };
        let _ = error.print();
        std::process::exit(status)
    });
    // A node's log lines carry its name: `replog cluster` interleaves several nodes' output.
    let node_name = match &cli.command {
        Command::Start { id, .. } => Some(id.clone()),
        _ => None,
    };
    init_logging(node_name);
    // Every connection this process opens as a client (commands, a joining node's requests)
    // uses the TLS files if given; a node also serves and dials its peers with them. The
    // offline tools open none: an exported certificate that expired must not turn their
    // verdict (exit 1 means damage there) into a TLS error.
    let offline = matches!(cli.command, Command::Dump { .. } | Command::Verify { .. });
    let files = if offline { Ok(None) } else { cli.tls.files() };
    let tls = match files.and_then(|files| match files {
        Some(files) => {
            let tls = Tls::load(files.clone()).map_err(|e| e.to_string())?;
            tls::set_client_config(Arc::clone(&tls.configs().client));
            Ok(Some(files))
        }
        None => Ok(None),
    }) {
        Ok(tls) => tls,
        Err(message) => {
            eprintln!("replog: {message}");
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        Command::Start {
            id,
            address,
            peers,
            join,
            learner,
            leader,
            data_dir,
            repair,
            retain_entries,
            retain_bytes,
            segment_bytes,
            metrics_addr,
        } => {
            let retention = Retention { entries: retain_entries, bytes: retain_bytes };
            let storage = StorageOptions { segment_bytes_max: segment_bytes };
            let join = Join { through: join, learner };
            let flags = NodeFlags { repair, retention, storage, metrics_addr, tls };
            start(id, address, peers, join, leader, data_dir, flags)
        }
        Command::Trim { target, before } => trim(&target, before),
        Command::TransferLeader { target, to, timeout } => transfer_leader(&target, to.as_deref(), timeout),
        Command::Append(args) => append::run(args),
        Command::Query { target, linearizable, from, to, last, json } => {
            let range = read::Range { from, to, last };
            if range.is_given() || json {
                read::query(&target, linearizable, range, json)
            } else {
                query(&target, linearizable)
            }
        }
        Command::Status { target, json, cluster: true } => cluster_status::run(&target, json),
        Command::Status { target, json, cluster: false } => status(&target, json),
        Command::Health { target, timeout } => health(&target, timeout),
        Command::Member { action } => member::run(action),
        Command::Cluster { nodes, base_port, data_dir, tls } => {
            cluster::run(nodes, base_port, &data_dir, tls)
        }
        Command::Bench { target, clients, duration, size, sessions, json } => {
            bench::run(&target, clients, duration, size, sessions, json)
        }
        Command::Follow { target, from, json } => read::follow(&target, from, json),
        Command::Dump { data_dir, from, json } => std::process::exit(tools::dump(&data_dir, from, json)),
        Command::Verify { data_dirs } => std::process::exit(tools::verify(&data_dirs)),
    };
    if let Err(message) = result {
        eprintln!("replog: {message}");
        std::process::exit(1);
    }
}

/// Logs to stderr at `REPLOG_LOG`'s level; a node's lines start with its name.
fn init_logging(node_name: Option<String>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("REPLOG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = tracing_subscriber::fmt::format().with_target(false);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .event_format(Named { name: node_name, inner: format })
        .init();
}

/// An event format that writes the node's name, then the line as `inner` formats it.
struct Named<F> {
    name: Option<String>,
    inner: F,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Named<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if let Some(name) = &self.name {
            write!(writer, "{name} ")?;
        }
        self.inner.format_event(context, writer, event)
    }
}

fn parse_address(flag: &str, text: &str) -> Result<SocketAddr, String> {
    address::parse(text).map_err(|error| format!("{flag} {error}"))
}

/// `start --join ADDR [--learner]`.
struct Join {
    through: Option<String>,
    learner: bool,
}

/// `start`'s flags that go straight to the node.
struct NodeFlags {
    repair: bool,
    retention: Retention,
    storage: StorageOptions,
    metrics_addr: Option<String>,
    tls: Option<TlsFiles>,
}

fn start(
    id: String,
    address: String,
    peers: Vec<String>,
    join: Join,
    leader: bool,
    data_dir: PathBuf,
    flags: NodeFlags,
) -> Result<(), String> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("--id {id:?} must be letters, digits, '-' or '_' (it names the data folder)"));
    }
    let address = parse_address("--address", &address)?;
    if address.ip().is_unspecified() {
        return Err(format!(
            "--address {address} is a wildcard: give the address peers and clients use to reach this node (it is the node's identity in the cluster)"
        ));
    }
    let peers = peers
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| parse_address("--peers", p))
        .collect::<Result<Vec<_>, _>>()?;
    let through = join.through.as_deref().map(|text| parse_address("--join", text)).transpose()?;
    if through == Some(address) {
        return Err(format!(
            "--join {address} is this node's own address: give a member of the cluster to join"
        ));
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown))
            .map_err(|e| format!("installing signal handlers: {e}"))?;
    }
    let NodeFlags { repair, retention, storage, metrics_addr, tls } = flags;
    let metrics_address =
        metrics_addr.as_deref().map(|text| parse_address("--metrics-addr", text)).transpose()?;
    let options = NodeOptions {
        data_dir: data_dir.join(&id),
        name: id,
        address,
        peers,
        join: through,
        learner: join.learner,
        bootstrap: leader,
        repair,
        retention,
        storage,
        metrics_address,
        tls,
    };
    replog_runtime::run(options, shutdown).map_err(|e| e.to_string())
}

fn health(target: &str, timeout: f64) -> Result<(), String> {
    let timeout = Duration::from_secs_f64(timeout.max(0.1));
    match client::health(target, timeout).map_err(|e| e.to_string())? {
        Ok(()) => {
            println!("{target} is healthy");
            Ok(())
        }
        Err(reason) => Err(format!("{target} is unhealthy: {reason}")),
    }
}

fn transfer_leader(target: &str, to: Option<&str>, timeout: f64) -> Result<(), String> {
    let timeout = Duration::from_secs_f64(timeout.max(0.1));
    let (leader, took) = client::transfer_leader(target, to, timeout).map_err(|e| e.to_string())?;
    println!("👑 {leader} leads now (handed over in {} ms)", took.as_millis());
    Ok(())
}

fn trim(target: &str, before: u64) -> Result<(), String> {
    let first_id = client::trim(target, before, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    println!("✂️  {target} now starts at ID:{first_id}");
    Ok(())
}

fn query(target: &str, linearizable: bool) -> Result<(), String> {
    let log = client::query_log(target, Duration::from_secs(5), linearizable).map_err(|e| e.to_string())?;
    let (commit, entries) = (log.commit, log.entries);
    if log.first_id > 1 {
        eprintln!(
            "note: commands before ID:{} were trimmed on this node (retention or `replog trim`)",
            log.first_id
        );
    }
    // Client commands only (the entries with an ID): the leaders' no-op entries are Raft's
    // bookkeeping.
    let commands: Vec<_> = entries
        .iter()
        .filter_map(|queried| match (&queried.entry.payload, queried.id) {
            (payload, Some(id)) => Some(
                payload
                    .commands()
                    .iter()
                    .enumerate()
                    .map(move |(k, data)| (&queried.entry, id + k as u64, data)),
            ),
            _ => None,
        })
        .flatten()
        .collect();
    println!("📋 Log entries ({} total):", commands.len());
    for (position, (entry, id, data)) in commands.iter().enumerate() {
        let text = String::from_utf8_lossy(data.as_slice());
        println!(
            "  {}. ID:{id} Term:{} Committed:{} Command:Operation {{ data: {:?} }}",
            position + 1,
            entry.term.0,
            entry.index.0 <= commit,
            text,
        );
    }
    Ok(())
}

fn status(target: &str, raw: bool) -> Result<(), String> {
    let status = client::status(target, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    if raw {
        println!("{}", status.to_json());
        return Ok(());
    }
    println!("{} at {}: {} in term {}", status.name, status.address, status.role, status.term.0);
    let voters = status.members.iter().filter(|member| member.role == "voter").count();
    let learners = status.members.len() - voters;
    println!(
        "id {}  configuration: {voters} voter(s){}{}",
        status.id,
        if learners > 0 { format!(", {learners} learner(s)") } else { String::new() },
        if status.members_committed { "" } else { " (a change not committed yet)" }
    );
    println!(
        "leader {}  commit {}  last index {}  durable {}",
        status.leader.map_or_else(|| "unknown".to_string(), |leader| leader.to_string()),
        status.commit.0,
        status.last_index.0,
        status.durable_index.0
    );
    println!(
        "log from index {} (ID {})  {:.1} MiB of entries in memory",
        status.first_index.0,
        status.first_id,
        status.cached_bytes as f64 / (1024.0 * 1024.0)
    );
    for peer in &status.peers {
        let link = match (peer.outbound_connected, peer.inbound_connected) {
            (true, true) => "connected",
            (true, false) | (false, true) => "half-connected",
            (false, false) => "disconnected",
        };
        let progress = peer.replication.map_or_else(String::new, |replication| {
            format!(
                "  match {} next {} {}",
                replication.match_index.0,
                replication.next_index.0,
                if replication.replicating { "replicating" } else { "probing" }
            )
        });
        let name = peer.name.as_ref().map_or_else(String::new, |name| format!(" ({name})"));
        println!("  peer {}{name}: {link}{progress}", peer.address);
    }
    Ok(())
}
