//! `replog cluster`: a local cluster of N nodes as child processes, for newcomers and demos.

use crate::certs;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

const STOP_GRACE: Duration = Duration::from_secs(5);

/// With `tls`, the nodes run with certificates from a throwaway CA made under
/// `data_dir/tls/`.
pub fn run(nodes: u16, base_port: u16, data_dir: &Path, tls: bool) -> Result<(), String> {
    if nodes == 0 || u32::from(base_port) + u32::from(nodes) > 65_536 {
        return Err(format!("--nodes {nodes} from --base-port {base_port} does not fit in the port range"));
    }
    let addresses: Vec<String> = (0..nodes).map(|k| format!("127.0.0.1:{}", base_port + k)).collect();
    let exe = std::env::current_exe().map_err(|e| format!("finding the replog binary: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("installing signal handlers: {e}"))?;
    }
    let certificates = if tls { Some(certs::make(&data_dir.join("tls"), nodes)?) } else { None };
    let mut children: Vec<(String, Child)> = Vec::new();
    for (k, address) in addresses.iter().enumerate() {
        let name = format!("node{}", k + 1);
        let peers: Vec<&str> = addresses.iter().filter(|a| *a != address).map(String::as_str).collect();
        let mut command = Command::new(&exe);
        command.args(["start", "-i", &name, "-a", address, "--data-dir"]).arg(data_dir);
        if !peers.is_empty() {
            command.args(["-p", &peers.join(",")]);
        }
        if k == 0 {
            command.arg("--leader");
        }
        if let Some(certificates) = &certificates {
            let node = &certificates.nodes[k];
            command.arg("--tls-cert").arg(&node.cert).arg("--tls-key").arg(&node.key);
            command.arg("--tls-ca").arg(&certificates.ca);
        }
        for variable in ["REPLOG_TLS_CERT", "REPLOG_TLS_KEY", "REPLOG_TLS_CA"] {
            command.env_remove(variable); // the flags above (or none) decide
        }
        match command.spawn() {
            Ok(child) => children.push((name, child)),
            Err(error) => {
                stop_all(&mut children);
                return Err(format!("starting {name}: {error}"));
            }
        }
    }
    println!(
        "replog cluster of {nodes} node(s) on {} (data in {}/)",
        addresses.join(", "),
        data_dir.display()
    );
    println!("  append:  replog append -t {} -c \"user_login:alice\"", addresses[0]);
    println!("  query:   replog query -t {}", addresses[0]);
    println!("  status:  replog status -t {} [--cluster]", addresses[0]);
    println!("  health:  replog health -t {}", addresses[0]);
    println!("  members: replog member list -t {}", addresses[0]);
    println!("  (with cargo: cargo run -- append ...)   Ctrl-C stops the cluster.");
    if let Some(certificates) = &certificates {
        println!("TLS on (a throwaway CA); for the commands above, first:");
        println!("  export REPLOG_TLS_CERT={}", absolute(&certificates.cli.cert));
        println!("  export REPLOG_TLS_KEY={}", absolute(&certificates.cli.key));
        println!("  export REPLOG_TLS_CA={}", absolute(&certificates.ca));
    }
    let mut exited = None;
    while !stop.load(Ordering::Relaxed) && exited.is_none() {
        sleep(Duration::from_millis(100));
        for (name, child) in &mut children {
            if let Ok(Some(code)) = child.try_wait() {
                exited = Some(format!("{name} exited ({code}); stopping the cluster"));
            }
        }
    }
    if let Some(why) = &exited {
        eprintln!("replog: {why}");
    }
    stop_all(&mut children);
    exited.map_or(Ok(()), Err)
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string()
}

/// SIGTERM (a clean shutdown), then SIGKILL for any node still running after the grace period.
fn stop_all(children: &mut [(String, Child)]) {
    for (_, child) in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (name, child) in children.iter_mut() {
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        if matches!(child.try_wait(), Ok(None)) {
            eprintln!("replog: {name} did not stop in time; killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
