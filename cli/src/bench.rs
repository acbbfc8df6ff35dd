//! `replog bench`: closed-loop clients (each waits for its commit before the next append),
//! reporting throughput and latency percentiles (hdrhistogram).

use hdrhistogram::Histogram;
use replog_runtime::client::Connection;
use replog_runtime::codec::{AppendResult, Frame};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const LATENCY_MAX_US: u64 = 60_000_000;

pub fn run(target: &str, clients: u32, duration: f64, size: usize, json: bool) -> Result<(), String> {
    if clients == 0 || !(0.1..=3600.0).contains(&duration) || size == 0 || size > 1 << 20 {
        return Err("need --clients >= 1, --duration in 0.1..=3600 seconds, --size in 1..=1048576".into());
    }
    let home: SocketAddr = target
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("bad --target {target:?}"))?;
    let leader = find_leader(home)?;
    let run_for = Duration::from_secs_f64(duration);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|client| {
            let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
            std::thread::spawn(move || worker(client, leader, size, started + run_for, &done, &stop))
        })
        .collect();
    let mut last = 0;
    while started.elapsed() < run_for {
        std::thread::sleep(Duration::from_secs(1).min(run_for.saturating_sub(started.elapsed())));
        let now = done.load(Ordering::Relaxed);
        if !json {
            eprint!("\r{:>5.1}s  {now:>9} appends  {:>8} /s   ", started.elapsed().as_secs_f64(), now - last);
        }
        last = now;
    }
    stop.store(true, Ordering::Relaxed);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds");
    let mut errors = Vec::new();
    for worker in workers {
        match worker.join().map_err(|_| "a bench client panicked".to_string())? {
            Ok(h) => histogram.add(h).map_err(|e| e.to_string())?,
            Err(e) => errors.push(e),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if !json {
        eprintln!();
    }
    if let Some(error) = errors.first() {
        return Err(format!("{} client(s) failed; first: {error}", errors.len()));
    }
    let count = histogram.len();
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    if json {
        let value = serde_json::json!({
            "target": leader.to_string(), "clients": clients, "size_bytes": size, "seconds": seconds,
            "appends": count, "appends_per_second": count as f64 / seconds,
            "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999), "max": histogram.max() as f64 / 1000.0 },
        });
        println!("{value}");
    } else {
        println!(
            "{count} appends in {seconds:.1}s from {clients} client(s) of {size} bytes via leader {leader}: {:.0} appends/s",
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
    Ok(())
}

/// Asks the target who leads (following one redirect), waiting up to a few seconds.
fn find_leader(home: SocketAddr) -> Result<SocketAddr, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(json) = replog_runtime::client::status(&home.to_string(), CALL_TIMEOUT) {
            let status: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
            if let Some(leader) = status["leader"].as_str().and_then(|a| a.parse().ok()) {
                return Ok(leader);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("no leader known to {home} within 5s"))
}

fn worker(
    client: u32,
    leader: SocketAddr,
    size: usize,
    until: Instant,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> Result<Histogram<u64>, String> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds");
    let mut connection =
        Connection::open(leader, CALL_TIMEOUT).map_err(|e| format!("connecting to {leader}: {e}"))?;
    let mut sequence = 0u64;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let mut command = format!("bench-{client}-{sequence}-").into_bytes();
        command.resize(size, b'x');
        sequence += 1;
        let began = Instant::now();
        match connection.call(&Frame::Append { request: sequence, command }) {
            Ok(Frame::AppendResult { result: AppendResult::Committed { .. }, .. }) => {
                let micros = began.elapsed().as_micros().clamp(1, u128::from(LATENCY_MAX_US)) as u64;
                histogram.record(micros).expect("within bounds");
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Frame::AppendResult { result, .. }) => return Err(format!("append refused: {result:?}")),
            Ok(other) => return Err(format!("unexpected answer {other:?}")),
            Err(error) => return Err(format!("append: {error}")),
        }
    }
    Ok(histogram)
}
