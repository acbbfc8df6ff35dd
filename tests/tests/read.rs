//! Reading the log by command ID on real processes: `replog query --from/--to/--last/--json`
//! and `replog follow` across a leader's kill and restart. Every wait is bounded; only
//! processes started here are signalled, by PID.

use replog_core::Payload;
use replog_runtime::client;
use replog_tests::{replog_binary, serial, TestCluster};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// (id, index, term, data) of every command in node `k`'s log, as `query` sees it.
fn commands_of(cluster: &TestCluster, k: usize) -> Vec<(u64, u64, u64, String)> {
    let (_, entries) = client::query(&cluster.address(k), 5 * SECOND, false).expect("query");
    entries
        .into_iter()
        .filter_map(|queried| match (&queried.entry.payload, queried.id) {
            (Payload::Command(data), Some(id)) => Some((
                id,
                queried.entry.index.0,
                queried.entry.term.0,
                String::from_utf8_lossy(data.as_slice()).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

/// The seed's lines for `commands`, numbered from 1.
fn seed_lines(commands: &[(u64, u64, u64, String)]) -> String {
    commands
        .iter()
        .enumerate()
        .map(|(k, (id, _, term, data))| {
            format!(
                "  {}. ID:{id} Term:{term} Committed:true Command:Operation {{ data: {data:?} }}\n",
                k + 1
            )
        })
        .collect()
}

fn json_lines(commands: &[(u64, u64, u64, String)]) -> String {
    commands
        .iter()
        .map(|(id, index, term, data)| {
            format!("{{\"id\":{id},\"index\":{index},\"term\":{term},\"data\":{data:?}}}\n")
        })
        .collect()
}

/// A cluster of `size` nodes holding `count` committed commands `cmd-1`, `cmd-2`, ... on
/// every node.
fn cluster_with_commands(name: &str, size: usize, count: usize) -> TestCluster {
    let cluster = TestCluster::start(name, size);
    let leader = cluster.wait_leader(10 * SECOND).expect("a leader");
    for i in 1..=count {
        client::append(&cluster.address(leader), format!("cmd-{i}").as_bytes(), 5 * SECOND).expect("append");
    }
    let log = cluster.wait_converged(10 * SECOND);
    assert_eq!(log.len(), count);
    cluster
}

#[test]
fn query_by_id_prints_ranges_in_the_seeds_format_or_as_json() {
    let _serial = serial();
    let cluster = cluster_with_commands("read-ranges", 3, 20);
    let follower = cluster.address(1);
    let all = commands_of(&cluster, 1);
    assert_eq!(all.iter().map(|c| c.0).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
    assert_eq!(all[4].3, "cmd-5");
    let run = |args: &[&str]| {
        let mut full = vec!["query", "-t", &follower];
        full.extend_from_slice(args);
        let (code, out, err) = cluster.cli(&full);
        assert_eq!(code, 0, "query {args:?}: {out}{err}");
        out
    };

    // Without range flags: exactly as before. With `--from 1`: the same lines, no header.
    let plain = run(&[]);
    assert_eq!(plain, format!("📋 Log entries (20 total):\n{}", seed_lines(&all)));
    assert_eq!(run(&["--from", "1"]), seed_lines(&all));

    assert_eq!(run(&["--from", "5", "--to", "8"]), seed_lines(&all[4..8]));
    assert_eq!(
        run(&["--from", "5", "--to", "6"]),
        "  1. ID:5 Term:1 Committed:true Command:Operation { data: \"cmd-5\" }\n  \
         2. ID:6 Term:1 Committed:true Command:Operation { data: \"cmd-6\" }\n"
    );
    assert_eq!(run(&["--from", "19"]), seed_lines(&all[18..]));
    assert_eq!(run(&["--from", "20", "--to", "500"]), seed_lines(&all[19..]));
    assert_eq!(run(&["--last", "3"]), seed_lines(&all[17..]));
    assert_eq!(run(&["--last", "50"]), seed_lines(&all));
    assert_eq!(run(&["--from", "18", "--last", "10"]), seed_lines(&all[17..]));
    assert_eq!(run(&["--to", "2"]), seed_lines(&all[..2]));

    assert_eq!(run(&["--from", "2", "--to", "3", "--json"]), json_lines(&all[1..3]));
    assert_eq!(run(&["--last", "1", "--json"]), json_lines(&all[19..]));
    assert_eq!(run(&["--json"]), json_lines(&all), "--json alone: every command");
    for line in run(&["--from", "1", "--to", "3", "--json"]).lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        assert!(value["data"].as_str().unwrap().starts_with("cmd-"), "{line}");
    }
    // Linearizable, through a follower: redirected to the leader.
    assert_eq!(run(&["--linearizable", "--from", "20"]), seed_lines(&all[19..]));
}

#[test]
fn query_by_id_refuses_bad_ranges_and_says_when_nothing_is_there_yet() {
    let _serial = serial();
    let cluster = cluster_with_commands("read-errors", 1, 20);
    let node = cluster.address(0);
    let query = |args: &[&str]| {
        let mut full = vec!["query", "-t", &node];
        full.extend_from_slice(args);
        cluster.cli(&full)
    };

    let (code, out, err) = query(&["--from", "100"]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("no committed command at or after ID 100 yet (last is 20)"), "{err}");

    for bad in
        [&["--from", "abc"][..], &["--from", "0"], &["--from", "-3"], &["--last", "x"], &["--to", "1.5"]]
    {
        let (code, out, err) = query(bad);
        assert_eq!((code, out.as_str()), (2, ""), "{bad:?}: {err}");
        assert!(err.starts_with("error: "), "{bad:?}: {err}");
    }
    let (code, out, err) = query(&["--to", "5", "--last", "2"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, out, err) = query(&["--from", "8", "--to", "5"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(err, "replog: --to 5 is before --from 8: give --to at or after --from\n");

    // Trimmed IDs are refused by name, never skipped; `--last` shows what is left, and says so.
    let (code, out, err) = cluster.cli(&["trim", "-t", &node, "--before", "10"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = query(&["--from", "3", "--to", "12"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("no longer holds ID 3: IDs before 10 were trimmed"), "{err}");
    let (code, out, err) = query(&["--last", "15"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, seed_lines(&commands_of(&cluster, 0)));
    assert!(out.starts_with("  1. ID:10 "), "{out}");
    assert!(err.contains("commands before ID:10 were trimmed"), "{err}");
    let (code, out, _) = query(&["--from", "10", "--to", "11"]);
    assert_eq!((code, out.lines().count()), (0, 2));

    // `follow` from a trimmed ID stops with the reason instead of skipping.
    let (code, out, err) = cluster.cli(&["follow", "-t", &node, "--from", "2"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("no longer holds ID 2: IDs before 10 were trimmed"), "{err}");

    // Without --from, `follow` prints only what commits after it started.
    let follower = Follower::start(&cluster, &["-t", &node]);
    let deadline = Instant::now() + 10 * SECOND;
    let mut appended = 0;
    while follower.count() == 0 && Instant::now() < deadline {
        appended += 1;
        client::append(&node, format!("new-{appended}").as_bytes(), 5 * SECOND).expect("append");
        sleep(Duration::from_millis(200));
    }
    // Wait (bounded) for the last append to show.
    let last = format!("\"new-{appended}\"");
    let deadline = Instant::now() + 5 * SECOND;
    while !follower.lines.lock().unwrap().last().is_some_and(|line| line.contains(&last)) {
        assert!(Instant::now() < deadline, "follow printed {:?}", follower.lines.lock().unwrap());
        sleep(Duration::from_millis(20));
    }
    let lines = follower.stop();
    let first_new = lines[0].split("ID:").nth(1).and_then(|rest| rest.split(' ').next()).expect("an ID");
    let first_new: usize = first_new.parse().expect("a number");
    assert!(first_new > 20, "{lines:?}");
    let expected: Vec<String> = (first_new..=20 + appended)
        .enumerate()
        .map(|(k, id)| {
            format!(
                "  {}. ID:{id} Term:1 Committed:true Command:Operation {{ data: \"new-{}\" }}",
                k + 1,
                id - 20
            )
        })
        .collect();
    assert_eq!(lines, expected);
}

#[test]
fn follow_keeps_trying_while_no_member_answers_and_says_so() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("replog-e2e-read-unreachable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("test dir");
    let port = replog_tests::free_ports(1)[0];
    let stderr = std::fs::File::create(dir.join("follow.log")).expect("follow log");
    let mut child = Command::new(replog_binary())
        .args(["follow", "-t", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawning replog follow");
    let deadline = Instant::now() + 15 * SECOND;
    let mut notes = String::new();
    while Instant::now() < deadline && !notes.contains("still trying") {
        sleep(Duration::from_millis(100));
        notes = std::fs::read_to_string(dir.join("follow.log")).unwrap_or_default();
    }
    let running = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(notes.contains("no member answered within"), "{notes}");
    assert!(notes.contains("still trying (resuming at the end; Ctrl-C to stop)"), "{notes}");
    assert!(running, "follow gave up: {notes}");
}

/// A `replog follow` child, killed by its PID when dropped; its stdout lines are gathered by a
/// thread.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Follower {
    fn start(cluster: &TestCluster, args: &[&str]) -> Follower {
        let stderr = std::fs::File::create(cluster.dir.join("follow.log")).expect("follow log");
        let mut child = Command::new(replog_binary())
            .arg("follow")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning replog follow");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let gathered = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                gathered.lock().unwrap().push(line);
            }
        });
        Follower { child, lines, reader: Some(reader) }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits (bounded) until it printed at least `count` lines; whether it did.
    fn wait_for(&self, count: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.count() < count {
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(20));
        }
        true
    }

    /// Kills it (by PID) and returns every line it printed.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join(); // the pipe closed with the process
        }
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_prints_every_committed_command_once_across_a_leader_kill_and_restart() {
    let _serial = serial();
    let mut cluster = TestCluster::start("read-follow", 3);
    let leader = cluster.wait_leader(10 * SECOND).expect("a leader");
    // It starts at the leader, and must learn the other members from it.
    let follower = Follower::start(&cluster, &["-t", &cluster.address(leader), "--from", "1", "--json"]);
    let appender = cluster.address((leader + 1) % 3);
    let append = |i: usize| {
        // A failure (outcome unknown across the kill) is fine: the converged log is the truth.
        let _ = client::append(&appender, format!("cmd-{i}").as_bytes(), 5 * SECOND);
    };
    for i in 1..=20 {
        append(i);
    }
    assert!(follower.wait_for(20, 10 * SECOND), "follow printed {} of 20 lines", follower.count());
    for i in 21..=200 {
        if i == 100 {
            cluster.kill(leader);
        }
        if i == 150 {
            cluster.start_node(leader, false);
        }
        append(i);
    }
    let log = cluster.wait_converged(15 * SECOND);
    assert!(log.len() >= 190, "only {} of 200 appends committed", log.len());
    let reached = follower.wait_for(log.len(), 15 * SECOND);
    sleep(Duration::from_millis(300)); // a duplicate past the end would show by now
    let lines = follower.stop();
    let notes = std::fs::read_to_string(cluster.dir.join("follow.log")).unwrap_or_default();
    assert!(notes.contains("trying the other members"), "follow never moved off the killed leader: {notes}");
    assert!(
        reached,
        "follow printed {} of {} commands; see {}",
        lines.len(),
        log.len(),
        cluster.dir.display()
    );
    let printed: Vec<(u64, u64, String)> = lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
            let number = |key: &str| value[key].as_u64().unwrap_or_else(|| panic!("{key} in {line}"));
            (number("id"), number("index"), value["data"].as_str().expect("data").to_string())
        })
        .collect();
    let expected: Vec<(u64, u64, String)> =
        log.iter().enumerate().map(|(k, (index, data))| (k as u64 + 1, *index, data.clone())).collect();
    assert_eq!(printed.len(), expected.len(), "no gap, no duplicate");
    for (printed, expected) in printed.iter().zip(&expected) {
        assert_eq!(printed, expected);
    }
}
