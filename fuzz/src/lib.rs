//! The checks the fuzz targets run, one module per target. Each `check`
//! takes the fuzzer's bytes, runs the project's code on them and panics when
//! an invariant breaks.
//!
//! Two callers share them: the libFuzzer targets in `fuzz_targets/`
//! (`cargo fuzz run -s none TARGET`), and the seed replay test
//! (`tests/tests/fuzz_corpus.rs`, part of `make test`), which runs every
//! committed file under `fuzz/seeds/TARGET/` through the same check. The
//! modules refer to each other only through `super::`, so the replay test
//! can include this file as a module.

pub mod admission;
pub mod annotations;
pub mod credentials;
pub mod db_spec;
pub mod mysql_handshake;
pub mod pg_startup;
pub mod pgpass;

/// A target's check: panics when an invariant breaks on these bytes.
pub type Check = fn(&[u8]);

/// Every target: its name (also its seed directory) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("admission", admission::check),
    ("annotations", annotations::check),
    ("credentials", credentials::check),
    ("db_spec", db_spec::check),
    ("mysql_handshake", mysql_handshake::check),
    ("pg_startup", pg_startup::check),
    ("pgpass", pgpass::check),
];

/// Splits `data` at every 0xFF byte (never part of UTF-8 text, so a clean
/// separator for the text fields of a structured input) into `N` parts;
/// missing parts are empty, and the last part takes the rest.
fn split_fields<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut rest = data;
    for (i, slot) in out.iter_mut().enumerate() {
        if i + 1 == N {
            *slot = rest;
            break;
        }
        match rest.iter().position(|&b| b == 0xff) {
            Some(at) => {
                *slot = &rest[..at];
                rest = &rest[at + 1..];
            }
            None => {
                *slot = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    out
}
