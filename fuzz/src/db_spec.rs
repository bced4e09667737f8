//! The agent's database spec (`--db`, `RDS_IAM_DATABASES`),
//! `rds_iam_common::Endpoint::parse_spec`, with no region in the environment.
//!
//! Invariants: nothing panics; an accepted spec is written back by
//! `to_spec` as one token (no whitespace, control character or `$`, which
//! the kubelet would expand in an env value) that parses to the same
//! database, and writing that again gives the same text.

use rds_iam_common::Endpoint;

pub fn check(data: &[u8]) {
    let spec = String::from_utf8_lossy(data);
    let Ok((endpoint, _)) = Endpoint::parse_spec(&spec, |_| None) else {
        return;
    };
    let written = endpoint.to_spec();
    assert!(
        !written.contains(|c: char| c.is_whitespace() || c.is_control() || c == '$'),
        "{written:?}"
    );
    let (again, _) = Endpoint::parse_spec(&written, |_| None)
        .unwrap_or_else(|e| panic!("{written:?} does not parse: {e}"));
    assert_eq!(again, endpoint, "{written:?}");
    assert_eq!(again.to_spec(), written);
}
