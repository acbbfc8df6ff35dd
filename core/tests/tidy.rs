//! The core stays pure: no clock, file, socket, thread, process, global randomness or stdout.

use std::path::Path;

#[test]
fn core_names_no_io_clock_thread_or_global_randomness() {
    const FORBIDDEN: [&str; 9] = [
        "std::time",
        "std::fs",
        "std::net",
        "std::thread",
        "std::process",
        "Instant::now",
        "SystemTime",
        "thread_rng",
        "println!",
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        for (number, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN {
                assert!(!code.contains(word), "{}:{}: core must not use {word}", path.display(), number + 1);
            }
            assert!(
                !code.contains("HashMap") && !code.contains("HashSet"),
                "{}:{}: use BTreeMap/BTreeSet, hash order is not deterministic",
                path.display(),
                number + 1
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "expected the core's source files, found {checked}");
}
