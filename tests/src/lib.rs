//! A harness for end-to-end tests: real `replog` processes on loopback, each cluster in its own
//! temporary folder. Only processes it started are ever signalled, by PID, and every wait is
//! bounded.

pub mod netns;

use replog_core::RoleKind;
use replog_runtime::client;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// One test cluster at a time: timing assertions stay meaningful on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `replog` binary, built once per test run (same profile as the tests).
pub fn replog_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // The test runs from target/<profile>/deps/; the binary belongs in target/<profile>/.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let target = profile_dir.parent().expect("target dir");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "--quiet", "-p", "replog", "--bin", "replog"]).env("CARGO_TARGET_DIR", target);
        // The variables cargo sets for this test (its package's name, folder...) would make
        // build scripts that watch them (ring's) run again, and everything after them rebuild,
        // here and in each later outer `cargo` command.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
                || name == "CARGO_TARGET_TMPDIR"
            {
                build.env_remove(name.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building replog failed");
        profile_dir.join("replog")
    })
}

/// The arguments of `replog start` for a node (without `--leader` or extra flags); no `-p` when
/// it has no peers (a cluster of one, a node that joins, or a restart that reads its
/// configuration from its log).
pub fn start_args(
    name: &str,
    address: SocketAddr,
    peers: &[SocketAddr],
    data: &Path,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        ["start", "-i", name, "-a", &address.to_string()].iter().map(Into::into).collect();
    if !peers.is_empty() {
        let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        args.extend(["-p".into(), peers.join(",").into()]);
    }
    args.push("--data-dir".into());
    args.push(data.into());
    args
}

/// Free loopback ports (bound and released; the OS does not hand them out again at once).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

#[derive(Debug)]
pub struct NodeProcess {
    pub name: String,
    pub address: SocketAddr,
    pub peers: Vec<SocketAddr>,
    child: Option<Child>,
    log: PathBuf,
}

impl NodeProcess {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

#[derive(Debug)]
pub struct TestCluster {
    pub dir: PathBuf,
    pub nodes: Vec<NodeProcess>,
}

impl TestCluster {
    /// Starts `size` nodes; node1 with `--leader`.
    pub fn start(name: &str, size: usize) -> TestCluster {
        TestCluster::start_with(name, size, |_| Vec::new())
    }

    /// Starts `size` nodes as [`TestCluster::start`] does, node `k` with the extra `start`
    /// flags `extra(k)` (`--metrics-addr 127.0.0.1:PORT`, say).
    pub fn start_with(name: &str, size: usize, extra: impl Fn(usize) -> Vec<String>) -> TestCluster {
        let dir = std::env::temp_dir().join(format!("replog-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let addresses: Vec<SocketAddr> = free_ports(size)
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}").parse().expect("address"))
            .collect();
        let nodes = (0..size)
            .map(|k| NodeProcess {
                name: format!("node{}", k + 1),
                address: addresses[k],
                peers: addresses.iter().copied().filter(|a| *a != addresses[k]).collect(),
                child: None,
                log: dir.join(format!("node{}.log", k + 1)),
            })
            .collect();
        let mut cluster = TestCluster { dir, nodes };
        for k in 0..size {
            let flags = extra(k);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            cluster.start_node_with(k, k == 0, &flags);
        }
        cluster
    }

    /// A slot for one more node (`node<N+1>` on a free port, no peers), not started: start it
    /// with `start_node_with(k, false, &["--join", MEMBER])` to add it to the cluster.
    pub fn add_slot(&mut self) -> usize {
        let k = self.nodes.len();
        let port = free_ports(1)[0];
        self.nodes.push(NodeProcess {
            name: format!("node{}", k + 1),
            address: format!("127.0.0.1:{port}").parse().expect("address"),
            peers: Vec::new(),
            child: None,
            log: self.dir.join(format!("node{}.log", k + 1)),
        });
        k
    }

    /// Deletes a stopped node's data folder: it comes back as a new node (a new random id).
    pub fn wipe(&mut self, k: usize) {
        assert!(self.nodes[k].child.is_none(), "{} still running", self.nodes[k].name);
        match std::fs::remove_dir_all(self.data_dir(k)) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("wiping {}: {error}", self.data_dir(k).display()),
        }
    }

    /// Whether node `k`'s process was started and not stopped or killed since.
    pub fn is_running(&self, k: usize) -> bool {
        self.nodes[k].child.is_some()
    }

    pub fn data_dir(&self, k: usize) -> PathBuf {
        self.dir.join("data").join(&self.nodes[k].name)
    }

    pub fn start_node(&mut self, k: usize, leader: bool) {
        self.start_node_with(k, leader, &[]);
    }

    /// Starts node `k` with extra `start` flags (e.g. `--repair`).
    pub fn start_node_with(&mut self, k: usize, leader: bool, extra: &[&str]) {
        let node = &mut self.nodes[k];
        assert!(node.child.is_none(), "{} already running", node.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("log file");
        let mut command = Command::new(replog_binary());
        command
            .args(start_args(&node.name, node.address, &node.peers, &self.dir.join("data")))
            .stdout(Stdio::null())
            .stderr(log);
        if leader {
            command.arg("--leader");
        }
        command.args(extra);
        node.child = Some(command.spawn().expect("spawning replog start"));
    }

    /// kill -9: no clean shutdown, unsynced data is lost.
    pub fn kill(&mut self, k: usize) {
        if let Some(mut child) = self.nodes[k].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns whether it exited in time.
    pub fn stop(&mut self, k: usize) -> bool {
        let Some(mut child) = self.nodes[k].child.take() else {
            return true;
        };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Waits (bounded) for a running node to exit by itself; its exit code.
    pub fn wait_exit(&mut self, k: usize, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.nodes[k].child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.nodes[k].child = None;
                    return status.code();
                }
            }
            sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self, k: usize) -> String {
        std::fs::read_to_string(&self.nodes[k].log).unwrap_or_default()
    }

    pub fn address(&self, k: usize) -> String {
        self.nodes[k].address.to_string()
    }

    /// The leader's index as seen by the running nodes, waiting up to `within`.
    pub fn wait_leader(&self, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            for (k, node) in self.nodes.iter().enumerate() {
                if node.child.is_none() {
                    continue;
                }
                if let Ok(status) = client::status(&node.address.to_string(), Duration::from_millis(500)) {
                    if status.role == RoleKind::Leader {
                        return Some(k);
                    }
                }
            }
            sleep(Duration::from_millis(20));
        }
        None
    }

    /// Builds stopped node `k`'s data folder with `count` committed commands of
    /// `command_bytes` bytes in term 1, through the storage API (fast; the segment files are what
    /// a node writes). A folder written this way has no id recorded: the node takes the id
    /// derived from its address, as a folder of an older version does.
    pub fn build_log(&self, k: usize, count: u64, command_bytes: usize) {
        use replog_core::{Bytes, Entry, HardState, LogIndex, Payload, Term};
        use replog_runtime::fs::RealFs;
        use replog_runtime::storage::{Identity, Storage};
        assert!(self.nodes[k].child.is_none(), "{} still running", self.nodes[k].name);
        let identity = Identity { name: self.nodes[k].name.clone(), address: self.address(k) };
        let (mut storage, _) =
            Storage::open(RealFs::new(), &self.data_dir(k), identity).expect("opening storage");
        // Whose folder it is, as a node records at its first start: an id (derived from the
        // address here, so every built folder of a cluster agrees) and the bootstrap of it and
        // its peers.
        let id_of = |address: &SocketAddr| replog_runtime::legacy_id(address);
        let node = &self.nodes[k];
        let mut bootstrap =
            replog_core::Membership::voters_only(node.peers.iter().chain([&node.address]).map(id_of));
        for address in node.peers.iter().chain([&node.address]) {
            bootstrap.members.get_mut(&id_of(address)).expect("a voter").address = address.to_string();
        }
        storage.record_identity(id_of(&node.address), Some(bootstrap)).expect("identity");
        storage
            .save_hard_state(HardState { term: Term(1), voted_for: None, commit: LogIndex(0) })
            .expect("hard state");
        let data = Bytes::from(vec![b'x'; command_bytes]);
        let mut next = 1;
        while next <= count {
            let last = (next + 9_999).min(count);
            let batch: Vec<Entry> = (next..=last)
                .map(|index| Entry {
                    index: LogIndex(index),
                    term: Term(1),
                    payload: Payload::Command(data.clone()),
                })
                .collect();
            storage.append(&batch).expect("append");
            storage.request_sync(true).expect("sync");
            next = last + 1;
        }
        storage
            .save_hard_state(HardState { term: Term(1), voted_for: None, commit: LogIndex(count) })
            .expect("hard state");
        storage.close().expect("close");
    }

    /// Runs the CLI itself: `replog ARGS`, returning (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(replog_binary()).args(args).output().expect("running replog");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// (commit, commands) of a node's log, commands as text.
    pub fn log_of(&self, k: usize) -> (u64, Vec<(u64, String)>) {
        let (commit, entries) =
            client::query(&self.address(k), Duration::from_secs(5), false).expect("query");
        let commands = entries
            .into_iter()
            .map(|queried| queried.entry)
            .flat_map(|e| {
                let index = e.index.0;
                e.payload
                    .commands()
                    .iter()
                    .map(|data| (index, String::from_utf8_lossy(data.as_slice()).into_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        (commit, commands)
    }

    /// Waits until every running node has committed its whole log and the logs are equal.
    pub fn wait_converged(&self, within: Duration) -> Vec<(u64, String)> {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&k| self.is_running(k)).collect();
        self.wait_converged_among(&running, within)
    }

    /// Waits until nodes `among` (running) have each committed their whole log and the logs
    /// are equal (a removed node that keeps running is left out this way).
    pub fn wait_converged_among(&self, among: &[usize], within: Duration) -> Vec<(u64, String)> {
        let first = *among.first().expect("a node to compare");
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<_> = among
                .iter()
                .map(|&k| client::query(&self.address(k), Duration::from_secs(2), false))
                .collect();
            if let Some(Ok((commit, entries))) = views.first() {
                let all_same = views.iter().all(|v| matches!(v, Ok((c, e)) if c == commit && e == entries));
                if all_same && *commit == entries.len() as u64 {
                    return self.log_of(first).1;
                }
            }
            assert!(Instant::now() < deadline, "logs of nodes {among:?} did not converge within {within:?}");
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for k in 0..self.nodes.len() {
            self.kill(k);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `replog ARGS` with `input` on its standard input: (exit code, stdout, stderr).
pub fn cli_with_stdin(args: &[&str], input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(replog_binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running replog");
    // Written from a thread: a child that does not read its input cannot block the test.
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let output = child.wait_with_output().expect("waiting for replog");
    let _ = writer.join();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

impl TestCluster {
    /// Node `k`'s log with each command's ID (as [`netns::commands`]), and the first ID it
    /// still holds (earlier ones were trimmed).
    pub fn commands_of(&self, k: usize) -> (u64, Vec<netns::LogEntry>) {
        let log = client::query_log(&self.address(k), Duration::from_secs(5), false).expect("query");
        (log.first_id, netns::commands(&log.entries))
    }
}
