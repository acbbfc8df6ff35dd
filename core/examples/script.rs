//! Runs one golden script and prints its trace: `cargo run -p replog-core --example script FILE`.

fn main() {
    let path = std::env::args().nth(1).expect("usage: script FILE");
    let script = std::fs::read_to_string(&path).expect("readable script");
    match replog_core::testkit::Cluster::run_script(&script) {
        Ok(trace) => print!("{trace}"),
        Err(why) => {
            eprintln!("{path}: {why}");
            std::process::exit(1);
        }
    }
}
