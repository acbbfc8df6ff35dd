//! `replog bench`: closed-loop clients (each waits for its commit before the next append),
//! reporting throughput and latency percentiles (hdrhistogram). All clients run on one mio
//! event loop, so the load generator itself costs little CPU: on a 2-core machine it shares
//! the cores with the nodes it measures.

use hdrhistogram::Histogram;
use mio::{Events, Poll, Token};
use replog_runtime::client::{Link, Pipelined};
use replog_runtime::codec::{AppendResult, Frame};
use replog_runtime::session::fresh_client_id;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const LATENCY_MAX_US: u64 = 60_000_000;

/// One closed-loop client: at most one append in flight.
struct Client {
    link: Pipelined,
    sent_at: Instant,
    sequence: u64,
    /// Its session id, when appends go through sessions (exactly once).
    session: Option<u64>,
}

pub fn run(
    target: &str,
    clients: u32,
    duration: f64,
    size: usize,
    sessions: bool,
    json: bool,
) -> Result<(), String> {
    if clients == 0 || clients > 4096 || !(0.1..=3600.0).contains(&duration) || size == 0 || size > 1 << 20 {
        return Err(
            "need --clients in 1..=4096, --duration in 0.1..=3600 seconds, --size in 1..=1048576".into()
        );
    }
    let home = crate::parse_address("--target", target)?;
    let leader = find_leader(home)?;
    let run_for = Duration::from_secs_f64(duration);
    if clients == 1 {
        // One client blocks on its socket: a direct wake-up, no poller in the measured path.
        let (histogram, seconds) = single_client(leader, size, run_for, sessions, json)?;
        report(&histogram, leader, clients, size, sessions, seconds, json);
        return Ok(());
    }
    let mut poll = Poll::new().map_err(|e| format!("creating the poller: {e}"))?;
    let mut connections = Vec::with_capacity(clients as usize);
    for client in 0..clients as usize {
        let link = Pipelined::connect(leader, CALL_TIMEOUT, poll.registry(), Token(client))
            .map_err(|e| e.to_string())?;
        let session = sessions.then(fresh_client_id);
        connections.push(Client { link, sent_at: Instant::now(), sequence: 0, session });
    }
    let started = Instant::now();
    for (client, state) in connections.iter_mut().enumerate() {
        send_next(client, state, size)?;
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds");
    let mut events = Events::with_capacity(1024);
    let (mut last_report, mut reported) = (Instant::now(), 0);
    while started.elapsed() < run_for {
        poll.poll(&mut events, Some(Duration::from_millis(100))).map_err(|e| format!("polling: {e}"))?;
        for event in events.iter() {
            let client = event.token().0;
            let state = &mut connections[client];
            state.link.receive().map_err(|e| format!("client {client}: {e}"))?;
            while state.link.next_answer().map_err(|e| format!("client {client}: append: {e}"))?.is_some() {
                let micros = state.sent_at.elapsed().as_micros().clamp(1, u128::from(LATENCY_MAX_US)) as u64;
                histogram.record(micros).expect("within bounds");
                if started.elapsed() < run_for {
                    send_next(client, state, size)?;
                }
            }
            state.link.flush().map_err(|e| format!("client {client}: {e}"))?;
        }
        if !json && last_report.elapsed() >= Duration::from_secs(1) {
            let now = histogram.len();
            eprint!(
                "\r{:>5.1}s  {now:>9} appends  {:>8} /s   ",
                started.elapsed().as_secs_f64(),
                now - reported
            );
            (last_report, reported) = (Instant::now(), now);
        }
    }
    if !json {
        eprintln!();
    }
    report(&histogram, leader, clients, size, sessions, started.elapsed().as_secs_f64(), json);
    Ok(())
}

fn single_client(
    leader: SocketAddr,
    size: usize,
    run_for: Duration,
    sessions: bool,
    json: bool,
) -> Result<(Histogram<u64>, f64), String> {
    let client = fresh_client_id();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds");
    let mut session = Link::open(leader, CALL_TIMEOUT).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut sequence = 0u64;
    while started.elapsed() < run_for {
        let mut command = format!("bench-0-{sequence}-").into_bytes();
        command.resize(size, b'x');
        sequence += 1;
        let sent_at = Instant::now();
        if sessions {
            let request = Frame::SessionAppend {
                request: sequence,
                client,
                seq: sequence,
                since: 0,
                expect_last: None,
                commands: vec![command],
            };
            match session.call(&request).map_err(|e| format!("append: {e}"))? {
                Frame::AppendResult { result: AppendResult::Committed { .. }, .. } => {}
                other => return Err(format!("append: unexpected answer {other:?}")),
            }
        } else {
            session.append(&command).map_err(|e| format!("append: {e}"))?;
        }
        let micros = sent_at.elapsed().as_micros().clamp(1, u128::from(LATENCY_MAX_US)) as u64;
        histogram.record(micros).expect("within bounds");
        if !json && last_report.elapsed() >= Duration::from_secs(1) {
            eprint!("\r{:>5.1}s  {:>9} appends   ", started.elapsed().as_secs_f64(), histogram.len());
            last_report = Instant::now();
        }
    }
    if !json {
        eprintln!();
    }
    Ok((histogram, started.elapsed().as_secs_f64()))
}

/// Queues the client's next append and sends it at once (a closed loop: one in flight).
fn send_next(client: usize, state: &mut Client, size: usize) -> Result<(), String> {
    let mut command = format!("bench-{client}-{}-", state.sequence).into_bytes();
    command.resize(size, b'x');
    state.sequence += 1;
    state.sent_at = Instant::now();
    match state.session {
        Some(id) => state.link.queue_session_append(id, state.sequence, command),
        None => state.link.queue_append(command),
    }
    .map_err(|e| format!("client {client}: {e}"))?;
    // A failed write shows again, with its reason, at the connection's next event.
    let _ = state.link.flush();
    Ok(())
}

fn report(
    histogram: &Histogram<u64>,
    leader: SocketAddr,
    clients: u32,
    size: usize,
    sessions: bool,
    seconds: f64,
    json: bool,
) {
    let count = histogram.len();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    if json {
        let value = serde_json::json!({
            "target": leader.to_string(), "clients": clients, "size_bytes": size, "sessions": sessions, "seconds": seconds,
            "appends": count, "appends_per_second": count as f64 / seconds,
            "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999), "max": histogram.max() as f64 / 1000.0 },
        });
        println!("{value}");
        return;
    }
    println!(
        "{count} appends in {seconds:.1}s from {clients} client(s){} of {size} bytes via leader {leader}: {:.0} appends/s",
        if sessions { " with sessions" } else { "" },
        count as f64 / seconds
    );
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p999 {:.3}  max {:.3}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    );
}

/// Asks the target who leads, waiting up to a few seconds.
fn find_leader(home: SocketAddr) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(status) = replog_runtime::client::status(&home.to_string(), CALL_TIMEOUT) {
            if let Some(leader) = status.leader {
                return Ok(leader);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("no leader known to {home} within 5s"))
}
