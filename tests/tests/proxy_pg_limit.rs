//! The proxy's connection limit with real sessions: 1,000 clients logged in
//! at once through the agent's socket (the default `--max-connections`),
//! then the 1,001st gets "too many connections" while the others go on, and
//! a client gets in again once one leaves.
//!
//! The agent starts with a soft open-file limit of 1,024 (as many container
//! runtimes give): 1,000 sessions need two descriptors each, so it must raise
//! its limit to the hard one. The upstream is a TLS-only PostgreSQL with
//! `trust` and room for 1,100 sessions (the RDS-like server's PAM verifier
//! takes about 200 ms per login, and the limit is the proxy's, not the
//! token's). Its own binary, so it runs beside the other proxy tests.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rds_iam_e2e::localdb::{TcpAuth, TrustPg};
use rds_iam_e2e::pgwire;
use rds_iam_e2e::proxyagent::{local_proxy_spec, psql, raise_own_fd_limit, ProxyAgent, DEFAULT_DB};
use rds_iam_e2e::stubs::IssuedCreds;

const USER: &str = "app_user";
/// The agent's default `--max-connections`.
const LIMIT: usize = 1000;

#[test]
fn the_1001st_client_gets_too_many_connections_and_the_agent_goes_on() -> Result<()> {
    let hard = raise_own_fd_limit()?;
    assert!(
        hard >= 2 * LIMIT as u64,
        "the test needs {} descriptors, the hard limit is {hard}",
        2 * LIMIT
    );
    let pg = TrustPg::start_with(&[USER], TcpAuth::TlsTrust, 1100)?;
    let agent = ProxyAgent::builder()
        .db(local_proxy_spec(pg.port(), USER))
        .creds(&IssuedCreds::random(0))
        .nofile(1024, 4096)
        .start()?;
    let addr = agent.socket(DEFAULT_DB);
    let started = Instant::now();
    let mut sessions = Vec::with_capacity(LIMIT);
    for i in 0..LIMIT {
        match pgwire::login(&addr, USER, USER)? {
            Ok(s) => sessions.push(s),
            Err(e) => bail!(
                "session {} refused: {e}\nagent log:\n{}",
                i + 1,
                agent.log()
            ),
        }
    }
    eprintln!("{LIMIT} sessions in {:?}", started.elapsed());
    let active = "rds_iam_proxy_connections_active{db=\"default\"}";
    assert_eq!(agent.metric(active)?, LIMIT as u64);

    // The 1,001st: a real client and the raw protocol see the error.
    let out = psql(&agent.env(DEFAULT_DB, USER, USER), "select 1")?;
    assert!(!out.success());
    assert!(
        out.stderr
            .contains("too many connections to the rds-iam proxy"),
        "{}",
        out.stderr
    );
    let e = match pgwire::login(&addr, USER, USER)? {
        Ok(_) => bail!("the 1,001st session was let in"),
        Err(e) => e,
    };
    assert_eq!(e.code, "53300", "{e}");
    assert!(
        e.hint
            .as_deref()
            .unwrap_or_default()
            .contains("--max-connections"),
        "{e}"
    );
    assert_eq!(agent.failures(DEFAULT_DB, "connection_limit")?, 2);

    // The open sessions go on.
    for i in [0, LIMIT / 2] {
        let s = &mut sessions[i];
        assert_eq!(s.value("select pg_backend_pid()")?, s.pid.to_string());
    }
    let last = sessions.len() - 1;
    assert_eq!(sessions[last].value("select 7 * 6")?, "42");

    // One leaves, another gets in.
    if let Some(s) = sessions.pop() {
        s.terminate();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.metric(active)? != (LIMIT - 1) as u64 {
        if Instant::now() > deadline {
            bail!("the closed session still counts as active");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = psql(&agent.env(DEFAULT_DB, USER, USER), "select current_user")?;
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), USER);
    assert!(
        !agent.log().contains("accept failed"),
        "no accept ever failed:\n{}",
        agent.log()
    );
    for s in sessions {
        s.terminate();
    }
    Ok(())
}
