//! The deterministic simulator of replog (skeleton; filled by the simulator issue).

fn main() {
    eprintln!("sim: the simulator is not built yet; see the simulator issue");
    std::process::exit(2);
}
