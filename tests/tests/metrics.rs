//! Metrics and health on real processes: a 3-node cluster started with `--metrics-addr` takes
//! a short load through client sessions, and the leader's `/metrics` (scraped with a plain
//! HTTP/1.0 GET) shows the named series with plausible values; a follower's shows it follows.
//! `replog health` and `/health` say healthy, then, once both followers are killed and the
//! leader has lost its quorum, unhealthy with the reason in one line. `replog status --cluster`
//! lists one row per member and marks a killed one unreachable. Every log line carries its
//! node's name. Only processes started here are signalled, and every wait is bounded.

use replog_runtime::session::Session;
use replog_tests::{free_ports, serial, TestCluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

const SECOND: Duration = Duration::from_secs(1);

/// A cluster of three whose node `k` serves metrics at `metrics[k]`.
fn cluster_with_metrics(name: &str) -> (TestCluster, Vec<SocketAddr>) {
    let metrics: Vec<SocketAddr> =
        free_ports(3).into_iter().map(|port| SocketAddr::from(([127, 0, 0, 1], port))).collect();
    let flags = |k: usize| vec!["--metrics-addr".to_string(), metrics[k].to_string()];
    let cluster = TestCluster::start_with(name, 3, flags);
    (cluster, metrics)
}

/// `GET path` over HTTP/1.0: (status code, content type, body).
fn http_get(address: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&address, SECOND).expect("connecting to the metrics address");
    stream.set_read_timeout(Some(5 * SECOND)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").expect("sending the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reading the response");
    let (head, body) =
        response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("a status code");
    let content_type = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Type: ").or_else(|| line.strip_prefix("content-type: ")))
        .unwrap_or_default()
        .to_string();
    (status, content_type, body.to_string())
}

/// Every sample of a scrape, by its series as printed (`name{labels}`).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
            (series.to_string(), value.parse().unwrap_or_else(|_| panic!("no number in {line:?}")))
        })
        .collect()
}

/// The value of `series`, which must be present.
fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no series {series} in {samples:#?}"))
}

fn scrape(address: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let (status, content_type, body) = http_get(address, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let parsed = samples(&body);
    (body, parsed)
}

#[test]
fn the_leaders_metrics_under_load_name_every_series_with_plausible_values() {
    let _serial = serial();
    let (cluster, metrics) = cluster_with_metrics("metrics-load");
    let leader = cluster.wait_leader(10 * SECOND).expect("a leader");
    let targets: Vec<String> = (0..3).map(|k| cluster.address(k)).collect();
    // A short load: four sessions appending for a second and a half.
    let until = Instant::now() + Duration::from_millis(1500);
    let (appended, during) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let targets = &targets;
                scope.spawn(move || {
                    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
                    let mut session = Session::connect(&targets).expect("a session");
                    let mut count = 0;
                    while Instant::now() < until {
                        let command = format!("client{client}:{count}");
                        session.append(&[command.as_bytes()], 5 * SECOND).expect("an append under load");
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        // Halfway through: the followers' lag is there while entries stream.
        sleep(Duration::from_millis(750));
        let during = scrape(metrics[leader]);
        let appended: usize = clients.into_iter().map(|client| client.join().expect("a client")).sum();
        (appended, during)
    });
    let (text, samples) = during;
    // (Unless leadership moved meanwhile, as a loaded machine may make it: then there is no lag
    // to see there, and the checks below ask the leader there is now.)
    let still_leading = value(&samples, "replog_is_leader") == 1.0;
    for k in (0..3).filter(|&k| k != leader && still_leading) {
        let peer = cluster.address(k);
        let lag = value(&samples, &format!("replog_follower_lag_seconds{{peer=\"{peer}\"}}"));
        assert!((0.0..5.0).contains(&lag), "lag of {peer} under load: {text}");
    }
    let excerpt: Vec<&str> =
        text.lines().filter(|line| !line.starts_with('#') && !line.contains("_bucket")).collect();
    eprintln!("/metrics of the leader under load:\n{}", excerpt.join("\n"));
    assert!(appended > 0);
    // Garbage on the node's port: refused as a protocol violation.
    let mut garbage = TcpStream::connect(cluster.address(leader)).unwrap();
    garbage.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    garbage.set_read_timeout(Some(5 * SECOND)).unwrap();
    let _ = garbage.read_to_end(&mut rest); // the node closes it
    sleep(Duration::from_millis(100)); // a few ticks: the gauges and lags are published

    let leader = cluster.wait_leader(10 * SECOND).expect("a leader after the load");
    let (text, leader_samples) = scrape(metrics[leader]);
    let at = |series: &str| value(&leader_samples, series);
    assert_eq!(at("replog_is_leader"), 1.0);
    assert_eq!(at("replog_has_leader"), 1.0);
    assert!(at("replog_term") >= 1.0);
    assert!(at("replog_leader_changes_total") >= 1.0);
    let commit = at("replog_commit_index");
    assert!(commit > 0.0 && commit <= at("replog_last_index"), "{text}");
    assert!(at("replog_applied_index") <= commit && at("replog_durable_index") > 0.0, "{text}");
    let committed = at("replog_proposals_committed_total");
    if still_leading {
        assert!(committed >= appended as f64, "{committed} committed, {appended} appended: {text}");
    }
    assert!(committed > 0.0 && commit >= committed, "each committed append is an entry: {text}");
    assert!(at("replog_sessions") >= 4.0, "{text}");
    assert_eq!(at("replog_append_latency_seconds_count"), committed, "{text}");
    assert!(at("replog_append_latency_seconds_sum") > 0.0, "{text}");
    assert!(at("replog_fsync_latency_seconds_count") > 0.0, "{text}");
    assert_eq!(
        at("replog_fsync_latency_seconds_bucket{le=\"+Inf\"}"),
        at("replog_fsync_latency_seconds_count")
    );
    assert!(at("replog_proposals_failed_total{reason=\"not_leader\"}") >= 0.0);
    assert_eq!(at("replog_snapshot_sends_total"), 0.0);
    assert!(at("replog_connections_refused_total{reason=\"undecodable\"}") >= 1.0, "{text}");
    for k in (0..3).filter(|&k| k != leader) {
        let peer = cluster.address(k);
        for series in ["replog_peer_sent_bytes_total", "replog_peer_received_bytes_total"] {
            assert!(at(&format!("{series}{{peer=\"{peer}\"}}")) > 1000.0, "{series} of {peer}: {text}");
        }
        for series in ["replog_peer_sent_messages_total", "replog_peer_received_messages_total"] {
            assert!(at(&format!("{series}{{peer=\"{peer}\"}}")) > 10.0, "{series} of {peer}: {text}");
        }
        let name = &cluster.nodes[k].name;
        assert_eq!(at(&format!("replog_peer_info{{peer=\"{peer}\",name=\"{name}\"}}")), 1.0, "{text}");
        let lag_entries = at(&format!("replog_follower_lag_entries{{peer=\"{peer}\"}}"));
        let lag_seconds = at(&format!("replog_follower_lag_seconds{{peer=\"{peer}\"}}"));
        assert!(lag_entries < 1000.0 && (0.0..5.0).contains(&lag_seconds), "lag of {peer}: {text}");
    }
    // What the report shows of a scrape under load.
    let excerpt: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.contains("_bucket") && !line.ends_with(" 0"))
        .collect();
    eprintln!("/metrics of the leader after the load:\n{}", excerpt.join("\n"));

    // A follower follows: no lag series (the leader's alone), a leader known, syncs of its own.
    let follower = (0..3).find(|&k| k != leader).unwrap();
    let (text, follower_samples) = scrape(metrics[follower]);
    assert_eq!(value(&follower_samples, "replog_is_leader"), 0.0);
    assert_eq!(value(&follower_samples, "replog_has_leader"), 1.0);
    assert!(value(&follower_samples, "replog_fsync_latency_seconds_count") > 0.0);
    assert!(!text.contains("replog_follower_lag_entries{"), "{text}");
    let (status, _, body) = http_get(metrics[follower], "/nothing");
    assert_eq!(status, 404, "{body}");
    // Every log line starts with its node's name (`replog cluster` interleaves them).
    for (k, node) in cluster.nodes.iter().enumerate() {
        let log = cluster.log_text(k);
        assert!(log.lines().count() > 3, "{log}");
        let prefix = format!("{} ", node.name);
        assert!(log.lines().all(|line| line.starts_with(&prefix)), "{log}");
    }
}

/// `replog health -t ADDR`: (exit code, the line it printed).
fn health(cluster: &TestCluster, k: usize) -> (i32, String) {
    let (code, out, err) = cluster.cli(&["health", "-t", &cluster.address(k), "--timeout", "2"]);
    (code, format!("{out}{err}").trim().to_string())
}

/// Waits (5 s at most) for `replog health` to say node `k` is healthy: a loaded machine may
/// delay an answer past the election timeout now and then.
fn wait_healthy(cluster: &TestCluster, k: usize, why: &str) {
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let (code, line) = health(cluster, k);
        if code == 0 {
            assert!(line.ends_with("is healthy"), "{line}");
            return;
        }
        assert!(Instant::now() < deadline, "{why}: {line}");
        sleep(Duration::from_millis(100));
    }
}

/// `replog status --cluster` against node `k`: (exit code, table rows, JSON rows).
fn cluster_status(cluster: &TestCluster, k: usize) -> (i32, Vec<String>, Vec<Value>) {
    let target = cluster.address(k);
    let (code, out, err) = cluster.cli(&["status", "-t", &target, "--cluster"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("NAME") && header.contains("LAG") && header.contains("DURABLE"), "{out}{err}");
    let rows: Vec<String> = lines.map(str::to_string).collect();
    let (json_code, json, err) = cluster.cli(&["status", "-t", &target, "--cluster", "--json"]);
    assert_eq!(json_code, code, "{json}{err}");
    let Value::Array(objects) = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{json}: {e}"))
    else {
        panic!("not an array: {json}");
    };
    (code, rows, objects)
}

#[test]
fn health_and_the_cluster_status_follow_the_members_going_down() {
    let _serial = serial();
    let (mut cluster, metrics) = cluster_with_metrics("metrics-health");
    let leader = cluster.wait_leader(10 * SECOND).expect("a leader");
    wait_healthy(&cluster, leader, "a new cluster");
    let follower = (0..3).find(|&k| k != leader).unwrap();
    wait_healthy(&cluster, follower, "a follower of a new cluster");
    assert_eq!(
        http_get(metrics[leader], "/health"),
        (200, "text/plain; charset=utf-8".into(), "ok\n".into())
    );

    // Every member answers: one row each, one of them the leader.
    let (code, rows, objects) = cluster_status(&cluster, follower);
    assert_eq!(code, 0, "{rows:#?}");
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for k in 0..3 {
        let row = rows.iter().find(|row| row.contains(&cluster.address(k))).expect("a row per member");
        assert!(row.starts_with(&cluster.nodes[k].name), "{row}");
        assert!(row.contains(if k == leader { "leader" } else { "follower" }), "{row}");
    }
    assert_eq!(objects.len(), 3);
    assert!(objects.iter().all(|object| object["reachable"] == true && object["term"].as_u64() >= Some(1)));
    assert_eq!(objects.iter().filter(|object| object["role"] == "leader").count(), 1, "{objects:#?}");

    // One follower down: its row says so; the other two still commit.
    let (first, second) = {
        let followers: Vec<usize> = (0..3).filter(|&k| k != leader).collect();
        (followers[0], followers[1])
    };
    cluster.kill(first);
    let (code, rows, objects) = cluster_status(&cluster, leader);
    assert_eq!(code, 1, "a member did not answer: {rows:#?}");
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let down = rows.iter().find(|row| row.contains(&cluster.address(first))).unwrap();
    assert!(down.contains("unreachable"), "{down}");
    assert!(rows.iter().filter(|row| row.contains("unreachable")).count() == 1, "{rows:#?}");
    let down = objects.iter().find(|object| object["address"] == cluster.address(first).as_str()).unwrap();
    assert_eq!(down["reachable"], false, "{down}");
    assert!(down["error"].as_str().is_some_and(|error| !error.is_empty()), "{down}");
    wait_healthy(&cluster, leader, "two of three still make a quorum");

    // Both down: the leader loses its quorum, and says so within a few seconds.
    cluster.kill(second);
    let deadline = Instant::now() + 5 * SECOND;
    let (code, line) = loop {
        let (code, line) = health(&cluster, leader);
        if code != 0 || Instant::now() > deadline {
            break (code, line);
        }
        sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 1, "{line}");
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    assert!(
        line.contains("no leader known for") || line.contains("leader not confirmed by a quorum for"),
        "{line}"
    );
    let (status, _, body) = http_get(metrics[leader], "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no leader known for") || body.contains("not confirmed by a quorum"), "{body}");
    // Once it stepped down (check-quorum), its gauges say so.
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        let (_, samples) = scrape(metrics[leader]);
        if value(&samples, "replog_has_leader") == 0.0 {
            assert_eq!(value(&samples, "replog_is_leader"), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "still a leader: {samples:#?}");
        sleep(Duration::from_millis(50));
    }
    let (code, line) = health(&cluster, leader);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("no leader known for"), "{line}");
}

/// Callers that say hello and leave (a plain port takes anyone's hello) leave nothing behind:
/// within a couple of seconds their links, names and `replog_peer_*` series are gone, while the
/// members' stay. Without this every caller ever seen kept five series and a redialled link.
#[test]
fn hellos_from_callers_that_left_leave_no_series_or_links_behind() {
    let _serial = serial();
    let (cluster, metrics) = cluster_with_metrics("metrics-strangers");
    let leader = cluster.wait_leader(10 * SECOND).expect("a leader");
    let target = cluster.nodes[leader].address;
    let mut callers = Vec::new();
    for k in 0..5u16 {
        let hello = replog_runtime::codec::Frame::Hello {
            address: format!("127.0.0.1:{}", 1000 + k),
            name: format!("stranger{k}"),
            id: replog_core::NodeId(0x5700 + u64::from(k)),
            bootstrap: None,
            cluster: Vec::new(),
        };
        let mut wire = Vec::new();
        replog_runtime::frame::encode_with(&mut wire, |out| replog_runtime::codec::encode(&hello, out));
        let mut stream = TcpStream::connect(target).expect("connect");
        stream.write_all(&wire).expect("hello");
        callers.push(stream);
    }
    sleep(Duration::from_millis(300));
    let (text, _) = scrape(metrics[leader]);
    assert!(text.contains("stranger0"), "the hellos were not taken:\n{text}");
    drop(callers);
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let (text, _) = scrape(metrics[leader]);
        let strangers = text.lines().filter(|line| line.contains("127.0.0.1:100")).count();
        if strangers == 0 {
            let members = cluster
                .nodes
                .iter()
                .filter(|node| text.contains(&format!("peer=\"{}\"", node.address)))
                .count();
            assert_eq!(members, 2, "the members' series went too:\n{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{strangers} series of callers that left remain:\n{text}");
        sleep(Duration::from_millis(200));
    }
    let (code, out, err) = cluster.cli(&["status", "-t", &target.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("127.0.0.1:100"), "status still lists a caller that left:\n{out}");
}
