//! The smoke run of the coverage-guided fuzzing: every committed corpus file
//! (`fuzz/corpus/TARGET/*`, minimized with `cargo fuzz cmin`) goes through
//! the check its fuzz target runs (`fuzz/src/TARGET.rs`), without libFuzzer.
//! The long runs (10 million executions a target) are in BENCHMARKS.md.

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs `target`'s check on each file of its corpus; fails naming every
/// file whose check panics.
fn replay(target: &str) {
    let (_, check) = checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: {} files; a corpus comes from `cargo fuzz run` and `cargo fuzz cmin` (see BENCHMARKS.md)",
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
        "{} of {} {target} corpus files fail their check (reproduce with `cargo fuzz run -s none {target} FILE`): {failed:#?}",
        failed.len(),
        files.len()
    );
    println!("{target}: {} corpus files replayed", files.len());
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

/// Every target has a libFuzzer entry point, a `[[bin]]` and a corpus, and
/// every corpus belongs to a target.
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
    let mut corpora: Vec<String> = std::fs::read_dir(fuzz.join("corpus"))
        .expect("fuzz/corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    corpora.sort();
    names.sort();
    assert_eq!(corpora, names, "one corpus per target");
}
