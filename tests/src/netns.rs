//! Real `replog` nodes, each in its own Linux network namespace, for Jepsen-style tests.
//!
//! Topology: a hub namespace holds a bridge; each node's namespace has `eth0`, one end of a veth
//! pair whose other end is a port of the bridge; one more veth pair joins the root namespace
//! (where the test and its clients run) to the bridge, so clients reach every node at its own
//! address whatever is cut between the nodes. The addresses come from a /28 of 198.18.0.0/15
//! (the benchmarking range, RFC 2544) that no route of the root namespace overlaps.
//!
//! A cut drops one direction, packets *from* node a *to* node b: on a's `eth0` egress, with a
//! `tc` classic-BPF filter (a silent drop, like an iptables DROP; neither iptables nor nft is
//! needed) where the kernel has cls_bpf and clsact, else with a blackhole route in a's
//! namespace (a's connects to b then fail at once instead of timing out);
//! REPLOG_JEPSEN_CUTS=route forces the latter.
//!
//! Every name carries the test process id and a tag, so parallel or leftover runs do not
//! collide. Drop kills the nodes this cluster started (by PID), then deletes every namespace
//! (which removes the veth pairs and the bridge), on panic too; the data folder is kept on
//! panic, for the post-mortem.

use crate::replog_binary;
use replog_core::RoleKind;
use replog_runtime::client;
use replog_runtime::codec::QueriedEntry;
use replog_runtime::status::StatusReport;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Why network namespaces cannot be used here (the tests then skip), or `None`.
pub fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .map(str::to_string);
    match euid.as_deref() {
        Some("0") => {}
        Some(uid) => return Some(format!("not running as root (euid {uid})")),
        None => return Some("cannot tell the effective uid (no /proc/self/status)".into()),
    }
    if run("ip", &["netns", "list"]).is_err() {
        return Some("`ip netns` (iproute2) does not work here".into());
    }
    None
}

/// Runs a command to completion; its stdout, or an error naming the command and its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let line = || format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("`{}`: {error}", line()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            line(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// How a one-way cut is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMechanism {
    /// A `tc` classic-BPF filter on the sender's egress: a silent drop.
    TcBpf,
    /// A blackhole route in the sender's namespace.
    BlackholeRoute,
}

/// The namespaces, links and addresses of one test network, and the cuts in force.
#[derive(Debug)]
pub struct Network {
    hub: String,
    /// One namespace a node, in node order.
    namespaces: Vec<String>,
    addresses: Vec<Ipv4Addr>,
    root_link: Option<String>,
    mechanism: CutMechanism,
    /// (from, to): packets from node `from` to node `to` are dropped.
    cuts: BTreeSet<(usize, usize)>,
}

impl Network {
    /// Creates the hub, `size` node namespaces and their links. `Err` (the caller skips) when
    /// the environment cannot: no namespaces, no veth or bridge; Drop removes what was made.
    pub fn create(tag: &str, size: usize) -> Result<Network, String> {
        assert!((1..=13).contains(&size), "a /28 holds 13 nodes and the root's address");
        let pid = std::process::id();
        let root_link = format!("rlj{pid}{tag}");
        assert!(root_link.len() <= 15, "interface name {root_link} is too long: use a shorter tag");
        let prefix = format!("replog-jepsen-{pid}-{tag}");
        let hub = format!("{prefix}-hub");
        run("ip", &["netns", "add", &hub])
            .map_err(|error| format!("cannot create a network namespace: {error}"))?;
        let base = free_subnet(pid, tag);
        let mut net = Network {
            hub: hub.clone(),
            namespaces: Vec::new(),
            addresses: (0..size).map(|k| Ipv4Addr::from(base + 1 + k as u32)).collect(),
            root_link: None,
            mechanism: CutMechanism::BlackholeRoute,
            cuts: BTreeSet::new(),
        };
        let mut build = || -> Result<(), String> {
            in_ns(&hub, &["ip", "link", "set", "lo", "up"])?;
            in_ns(&hub, &["ip", "link", "add", "br0", "type", "bridge"])?;
            in_ns(&hub, &["ip", "link", "set", "br0", "up"])?;
            for k in 0..size {
                let ns = format!("{prefix}-n{}", k + 1);
                run("ip", &["netns", "add", &ns])?;
                net.namespaces.push(ns.clone());
                let port = format!("n{}", k + 1);
                run(
                    "ip",
                    &[
                        "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns",
                        &hub,
                    ],
                )?;
                in_ns(&ns, &["ip", "addr", "add", &format!("{}/28", net.addresses[k]), "dev", "eth0"])?;
                in_ns(&ns, &["ip", "link", "set", "eth0", "up"])?;
                in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
                in_ns(&hub, &["ip", "link", "set", &port, "master", "br0"])?;
                in_ns(&hub, &["ip", "link", "set", &port, "up"])?;
            }
            run("ip", &["link", "add", &root_link, "type", "veth", "peer", "name", "root", "netns", &hub])?;
            net.root_link = Some(root_link.clone());
            run("ip", &["addr", "add", &format!("{}/28", Ipv4Addr::from(base + 14)), "dev", &root_link])?;
            run("ip", &["link", "set", &root_link, "up"])?;
            in_ns(&hub, &["ip", "link", "set", "root", "master", "br0"])?;
            in_ns(&hub, &["ip", "link", "set", "root", "up"])?;
            Ok(())
        };
        build().map_err(|error| format!("cannot set up the test network: {error}"))?;
        net.mechanism = match std::env::var("REPLOG_JEPSEN_CUTS").as_deref() {
            Ok("route") => CutMechanism::BlackholeRoute,
            _ => net.probe_tc(),
        };
        Ok(net)
    }

    /// Installs clsact on every node's `eth0` and tries a filter that matches nothing; falls
    /// back to blackhole routes when any of it fails.
    fn probe_tc(&self) -> CutMechanism {
        let works = self
            .namespaces
            .iter()
            .all(|ns| in_ns(ns, &["tc", "qdisc", "add", "dev", "eth0", "clsact"]).is_ok())
            && in_ns(&self.namespaces[0], &strs(&tc_drop_filter(Ipv4Addr::UNSPECIFIED, 99))).is_ok()
            && in_ns(&self.namespaces[0], &["tc", "filter", "del", "dev", "eth0", "egress", "pref", "99"])
                .is_ok();
        if works {
            CutMechanism::TcBpf
        } else {
            CutMechanism::BlackholeRoute
        }
    }

    /// How cuts are made here.
    pub fn mechanism(&self) -> CutMechanism {
        self.mechanism
    }

    /// Node `k`'s address.
    pub fn address(&self, k: usize) -> Ipv4Addr {
        self.addresses[k]
    }

    /// Node `k`'s namespace.
    pub fn namespace(&self, k: usize) -> &str {
        &self.namespaces[k]
    }

    /// Drops every packet from node `from` to node `to` (the other direction is untouched).
    pub fn cut(&mut self, from: usize, to: usize) {
        assert_ne!(from, to);
        if !self.cuts.insert((from, to)) {
            return;
        }
        let ns = &self.namespaces[from];
        let destination = self.addresses[to];
        let result = match self.mechanism {
            CutMechanism::TcBpf => in_ns(ns, &strs(&tc_drop_filter(destination, 100 + to))),
            CutMechanism::BlackholeRoute => {
                in_ns(ns, &["ip", "route", "add", "blackhole", &format!("{destination}/32")])
            }
        };
        if let Err(error) = result {
            panic!("cutting node{} -> node{}: {error}", from + 1, to + 1);
        }
    }

    /// Lets packets from `from` to `to` through again.
    pub fn heal(&mut self, from: usize, to: usize) {
        if !self.cuts.remove(&(from, to)) {
            return;
        }
        let ns = &self.namespaces[from];
        let destination = self.addresses[to];
        let result = match self.mechanism {
            CutMechanism::TcBpf => {
                in_ns(ns, &["tc", "filter", "del", "dev", "eth0", "egress", "pref", &(100 + to).to_string()])
            }
            CutMechanism::BlackholeRoute => {
                in_ns(ns, &["ip", "route", "del", "blackhole", &format!("{destination}/32")])
            }
        };
        if let Err(error) = result {
            panic!("healing node{} -> node{}: {error}", from + 1, to + 1);
        }
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&mut self, a: usize, b: usize) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Cuts node `k` off from every other node, both ways (clients still reach it).
    pub fn isolate(&mut self, k: usize) {
        for other in 0..self.namespaces.len() {
            if other != k {
                self.cut_both(k, other);
            }
        }
    }

    /// Cuts, both ways, every link between a node of `side` and a node not in it.
    pub fn split(&mut self, side: &[usize]) {
        for &a in side {
            for b in 0..self.namespaces.len() {
                if !side.contains(&b) {
                    self.cut_both(a, b);
                }
            }
        }
    }

    /// Removes every cut.
    pub fn heal_all(&mut self) {
        let cuts: Vec<(usize, usize)> = self.cuts.iter().copied().collect();
        for (from, to) in cuts {
            self.heal(from, to);
        }
    }

    /// The cuts in force, as "node1->node2, ...".
    pub fn describe_cuts(&self) -> String {
        let cuts: Vec<String> =
            self.cuts.iter().map(|(from, to)| format!("node{}->node{}", from + 1, to + 1)).collect();
        if cuts.is_empty() {
            "none".into()
        } else {
            cuts.join(", ")
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(link) = self.root_link.take() {
            let _ = run("ip", &["link", "del", &link]);
        }
        for ns in self.namespaces.iter().chain(std::iter::once(&self.hub)) {
            if let Err(error) = run("ip", &["netns", "del", ns]) {
                eprintln!("warning: could not delete network namespace {ns}: {error}");
            }
        }
    }
}

/// `ip netns exec NS` arguments for a filter dropping IPv4 packets to `destination` on egress.
/// Classic BPF, direct action: load the destination address (network header + 16); if it is
/// `destination`, return TC_ACT_SHOT (2), else TC_ACT_UNSPEC (-1: the next filter decides).
fn tc_drop_filter(destination: Ipv4Addr, pref: usize) -> Vec<String> {
    const SKF_NET_OFF: u32 = 0xfff0_0000;
    let bytecode =
        format!("4,32 0 0 {},21 0 1 {},6 0 0 2,6 0 0 4294967295", SKF_NET_OFF + 16, u32::from(destination));
    let pref = pref.to_string();
    [
        "tc", "filter", "add", "dev", "eth0", "egress", "pref", &pref, "protocol", "ip", "bpf", "da",
        "bytecode", &bytecode,
    ]
    .map(str::to_string)
    .to_vec()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The base address of a /28 in 198.18.0.0/15 that no route of this namespace overlaps,
/// starting from one derived from the process id and tag.
fn free_subnet(pid: u32, tag: &str) -> u32 {
    const RANGE: u32 = 0xc612_0000; // 198.18.0.0/15: 8,192 blocks of 16
    let routes = run("ip", &["-4", "route", "show", "table", "all"]).unwrap_or_default();
    let taken: Vec<(u32, u32)> = routes
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mut first = words.next()?;
            if [
                "local",
                "broadcast",
                "unicast",
                "unreachable",
                "blackhole",
                "prohibit",
                "throw",
                "multicast",
                "anycast",
            ]
            .contains(&first)
            {
                first = words.next()?;
            }
            let (address, length) = first.split_once('/').unwrap_or((first, "32"));
            let address: Ipv4Addr = address.parse().ok()?;
            let length: u32 = length.parse().ok()?;
            let size = if length == 0 { u32::MAX } else { (1u32 << (32 - length.min(32))).max(1) };
            Some((u32::from(address), size))
        })
        .collect();
    let start = pid.wrapping_mul(31).wrapping_add(tag.bytes().map(u32::from).sum::<u32>());
    (0..8192)
        .map(|i| RANGE + (start.wrapping_add(i) % 8192) * 16)
        .find(|&base| {
            taken.iter().all(|&(net, size)| base + 16 <= net || net.saturating_add(size - 1) < base)
        })
        .expect("a free /28 in 198.18.0.0/15")
}

/// One node: its process (when running) and where it logs.
#[derive(Debug)]
pub struct NsNode {
    pub name: String,
    pub address: SocketAddr,
    pub peers: Vec<SocketAddr>,
    child: Option<Child>,
    paused: bool,
    log: PathBuf,
}

/// A command of the final log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The Raft index.
    pub index: u64,
    pub term: u64,
    /// The ID the node gave it (its position among client commands).
    pub id: Option<u64>,
    pub value: String,
}

/// The client commands of a queried log, in order (no-ops left out).
pub fn commands(entries: &[QueriedEntry]) -> Vec<LogEntry> {
    entries
        .iter()
        .flat_map(|queried| {
            queried.entry.payload.commands().iter().enumerate().map(|(k, data)| LogEntry {
                index: queried.entry.index.0,
                term: queried.entry.term.0,
                id: queried.id.map(|id| id + k as u64),
                value: String::from_utf8_lossy(data.as_slice()).into_owned(),
            })
        })
        .collect()
}

/// A cluster of real nodes, one namespace each.
#[derive(Debug)]
pub struct NsCluster {
    pub dir: PathBuf,
    pub nodes: Vec<NsNode>,
    /// Dropped after the nodes are killed (fields drop after `Drop::drop`).
    pub net: Network,
}

impl NsCluster {
    /// Every node listens on this port, at its own address.
    pub const PORT: u16 = 7400;

    /// Creates the network and starts `size` nodes (node1 with `--leader`). `Err`: network
    /// namespaces cannot be made here (skip).
    pub fn start(tag: &str, size: usize) -> Result<NsCluster, String> {
        let binary = replog_binary(); // built before anything needs cleaning up
        let net = Network::create(tag, size)?;
        let dir = std::env::temp_dir().join(format!("replog-jepsen-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let addresses: Vec<SocketAddr> =
            (0..size).map(|k| SocketAddr::from((net.address(k), NsCluster::PORT))).collect();
        let nodes = (0..size)
            .map(|k| NsNode {
                name: format!("node{}", k + 1),
                address: addresses[k],
                peers: addresses.iter().copied().filter(|a| *a != addresses[k]).collect(),
                child: None,
                paused: false,
                log: dir.join(format!("node{}.log", k + 1)),
            })
            .collect();
        let mut cluster = NsCluster { dir, nodes, net };
        assert!(binary.exists(), "{} was not built", binary.display());
        for k in 0..size {
            cluster.start_node(k, k == 0);
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn address(&self, k: usize) -> String {
        self.nodes[k].address.to_string()
    }

    pub fn addresses(&self) -> Vec<String> {
        (0..self.len()).map(|k| self.address(k)).collect()
    }

    /// Starts node `k` in its namespace (`ip netns exec` execs, so the child is the node).
    pub fn start_node(&mut self, k: usize, leader: bool) {
        let ns = self.net.namespace(k).to_string();
        let node = &mut self.nodes[k];
        assert!(node.child.is_none(), "{} already running", node.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("log file");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns])
            .arg(replog_binary())
            .args(crate::start_args(&node.name, node.address, &node.peers, &self.dir.join("data")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if leader {
            command.arg("--leader");
        }
        node.child = Some(command.spawn().expect("spawning ip netns exec replog start"));
        node.paused = false;
    }

    /// Whether node `k` has a process (running or paused).
    pub fn is_up(&self, k: usize) -> bool {
        self.nodes[k].child.is_some()
    }

    pub fn is_paused(&self, k: usize) -> bool {
        self.nodes[k].paused
    }

    /// kill -9 (works on a paused node too).
    pub fn kill(&mut self, k: usize) {
        if let Some(mut child) = self.nodes[k].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[k].paused = false;
    }

    /// SIGSTOP.
    pub fn pause(&mut self, k: usize) {
        if let Some(child) = &self.nodes[k].child {
            signal(child.id(), "STOP");
            self.nodes[k].paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, k: usize) {
        if let Some(child) = &self.nodes[k].child {
            if self.nodes[k].paused {
                signal(child.id(), "CONT");
            }
        }
        self.nodes[k].paused = false;
    }

    /// How node `k` exited, if its process ended without being killed here.
    pub fn exited(&mut self, k: usize) -> Option<ExitStatus> {
        self.nodes[k].child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    pub fn status(&self, k: usize, timeout: Duration) -> Result<StatusReport, client::ClientError> {
        client::status(&self.address(k), timeout)
    }

    /// The leader of the highest term among the running, unpaused nodes, if any says so.
    pub fn leader(&self) -> Option<usize> {
        (0..self.len())
            .filter(|&k| self.is_up(k) && !self.is_paused(k))
            .filter_map(|k| self.status(k, Duration::from_millis(300)).ok().map(|s| (k, s)))
            .filter(|(_, s)| s.role == RoleKind::Leader)
            .max_by_key(|(_, s)| s.term)
            .map(|(k, _)| k)
    }

    pub fn wait_leader(&self, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(k) = self.leader() {
                return Some(k);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every node runs, has committed its whole log, and all logs are equal;
    /// the commands of that log, or what differed at the deadline.
    pub fn wait_converged(&self, within: Duration) -> Result<Vec<LogEntry>, String> {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<_> = (0..self.len())
                .map(|k| client::query(&self.address(k), Duration::from_secs(2), false))
                .collect();
            if let Some(Ok((commit, first))) = views.first() {
                let all_same = views.iter().all(|v| matches!(v, Ok((c, e)) if c == commit && e == first));
                if all_same && *commit == first.len() as u64 {
                    return Ok(commands(first));
                }
            }
            if Instant::now() >= deadline {
                let mut why = format!("the logs did not converge within {within:?}:");
                for (k, view) in views.iter().enumerate() {
                    let _ = match view {
                        Ok((commit, entries)) => write!(
                            why,
                            "\n  node{}: commit {commit}, last index {}, {} commands",
                            k + 1,
                            entries.len(),
                            commands(entries).len()
                        ),
                        Err(error) => write!(why, "\n  node{}: {error}", k + 1),
                    };
                }
                return Err(why);
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// The last `lines` lines of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let _ = writeln!(
                out,
                "---- {} ({}), last {lines} lines of {}:",
                node.name,
                node.address,
                node.log.display()
            );
            for line in &all[all.len().saturating_sub(lines)..] {
                let _ = writeln!(out, "  {line}");
            }
        }
        out
    }
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid} failed");
}

impl Drop for NsCluster {
    fn drop(&mut self) {
        for k in 0..self.nodes.len() {
            self.kill(k);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
