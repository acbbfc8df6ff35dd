//! Golden transcripts: each script under `fixtures/scripts/` drives an in-memory cluster and its
//! trace is snapshotted under `fixtures/snapshots/`. A behaviour change shows up as a diff to
//! review (`cargo insta review`, or INSTA_UPDATE=always then `git diff`).

use replog_core::testkit::Cluster;
use std::path::Path;

#[test]
fn golden_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scripts");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures/scripts exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 5, "expected the golden scripts, found {scripts:?}");
    for path in scripts {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let script = std::fs::read_to_string(&path).unwrap();
        let trace = Cluster::run_script(&script).unwrap_or_else(|why| panic!("{name}: {why}"));
        // Running twice gives the same bytes: the core is deterministic.
        assert_eq!(trace, Cluster::run_script(&script).unwrap(), "{name}: trace differs between runs");
        insta::with_settings!({ snapshot_path => "../../fixtures/snapshots", prepend_module_to_snapshot => false, omit_expression => true }, {
            insta::assert_snapshot!(name, trace);
        });
    }
}
