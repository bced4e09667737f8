//! The open-file limit of a proxy: each proxied session holds two
//! descriptors (the client's socket and the upstream's), so 1,000 sessions
//! need more than the 1,024 that many container runtimes give as the soft
//! limit. The agent raises its soft limit to the hard one at start, as the Go
//! runtime does for every program, and serves no more sessions than the
//! limit allows, so a client beyond it gets the "too many connections" error
//! rather than waiting in the listen backlog while `accept` fails.

use super::listener::MAX_REFUSALS;

/// Descriptors kept for everything but the sessions: the runtime, the
/// listeners, the health server, credential requests and file writes.
pub const RESERVE: u64 = 64;

/// The most sessions that fit in an open-file limit of `nofile`, at most
/// `wanted`: two descriptors each, after the reserve and the refusals.
pub fn sessions_that_fit(wanted: usize, nofile: u64) -> usize {
    let room = nofile.saturating_sub(RESERVE + MAX_REFUSALS as u64) / 2;
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(1, wanted.max(1))
}

/// Raises the soft open-file limit to the hard one and returns the limit in
/// force afterwards (`u64::MAX` when unlimited). A refusal by the kernel
/// leaves the soft limit, which is returned.
pub fn raise() -> u64 {
    if let Err(e) = rds_iam_common::process::raise_fd_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit to the hard limit");
    }
    rds_iam_common::process::fd_limit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptors_per_session_after_the_reserve() {
        assert_eq!(sessions_that_fit(1000, 1_048_576), 1000);
        assert_eq!(sessions_that_fit(1000, u64::MAX), 1000);
        // 1,024 - 64 reserved - 64 refusals = 896 descriptors: 448 sessions.
        assert_eq!(sessions_that_fit(1000, 1024), 448);
        assert_eq!(sessions_that_fit(1000, 2128), 1000);
        assert_eq!(sessions_that_fit(1000, 2127), 999);
        assert_eq!(sessions_that_fit(1000, 10), 1, "never zero");
        assert_eq!(sessions_that_fit(0, 4096), 1);
    }
}
