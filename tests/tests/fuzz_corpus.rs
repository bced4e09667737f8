//! The smoke run of the coverage-guided fuzzing: every committed seed file
//! (`fuzz/seeds/TARGET/*`, picked from the long runs' corpora by
//! `fuzz/run.sh`) goes through the check its fuzz target runs
//! (`fuzz/src/TARGET.rs`), without libFuzzer. The long runs (10 million
//! executions a target) are in BENCHMARKS.md.

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The most seed files a target keeps: the seeds are a smoke test, the
/// long runs grow their own corpus outside git.
const MAX_SEEDS: usize = 64;

/// Runs `target`'s check on each of its seed files; fails naming every
/// file whose check panics.
fn replay(target: &str) {
    let (_, check) = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let dir = fuzz_dir().join("seeds").join(target);
    let advice = format!("pick seeds with `fuzz/run.sh {target}` (docs/fuzzing.md)");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; {advice}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(
        (5..=MAX_SEEDS).contains(&files.len()),
        "{}: {} files, want 5 to {MAX_SEEDS}; {advice}",
        dir.display(),
        files.len()
    );
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} seed files fail their check (reproduce with `cargo fuzz run -s none {target} FILE`): {failed:#?}",
        failed.len(),
        files.len()
    );
    println!("{target}: {} seed files replayed", files.len());
}

#[test]
fn admission() {
    replay("admission");
}

#[test]
fn annotations() {
    replay("annotations");
}

#[test]
fn credentials() {
    replay("credentials");
}

#[test]
fn db_spec() {
    replay("db_spec");
}

#[test]
fn mysql_handshake() {
    replay("mysql_handshake");
}

#[test]
fn pg_startup() {
    replay("pg_startup");
}

#[test]
fn pgpass() {
    replay("pgpass");
}

/// Every target has a libFuzzer entry point, a `[[bin]]` and seeds, and
/// every seed directory belongs to a target.
#[test]
fn targets_are_wired() {
    let fuzz = fuzz_dir();
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut names: Vec<&str> = checks::TARGETS.iter().map(|(n, _)| *n).collect();
    for name in &names {
        let entry = std::fs::read_to_string(fuzz.join(format!("fuzz_targets/{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz_targets/{name}.rs: {e}"));
        assert!(
            entry.contains(&format!("rds_iam_fuzz::{name}::check(data)")),
            "fuzz_targets/{name}.rs does not run {name}::check"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
    let mut seeds: Vec<String> = std::fs::read_dir(fuzz.join("seeds"))
        .expect("fuzz/seeds")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    seeds.sort();
    names.sort();
    assert_eq!(seeds, names, "one seed directory per target");
}
