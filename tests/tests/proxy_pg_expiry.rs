//! Across token refreshes, with the shortest `--interval` (1 minute): one
//! proxied session stays open for more than 3 minutes and runs a query every
//! 5 seconds; after each refresh a new client logs in, and the RDS-like
//! server sees it use the new token. A session is authenticated once, at its
//! login, so its token's later replacement (or expiry) never ends it.
//!
//! It takes 3+ minutes of wall time, mostly asleep: its own binary, so it
//! runs beside the other tests.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rds_iam_e2e::pgrds::{run_client, Client, PgRds};
use rds_iam_e2e::pgwire;
use rds_iam_e2e::proxyagent::{local_proxy_spec, token_fingerprint, ProxyAgent, DEFAULT_DB};
use rds_iam_e2e::stubs::IssuedCreds;

const USER: &str = "app_user";
const SESSION: Duration = Duration::from_secs(185);
const QUERY_EVERY: Duration = Duration::from_secs(5);

/// The fingerprints of the lab's accepted logins with `akid`, in order.
fn accepted(pg: &PgRds, akid: &str) -> Result<Vec<String>> {
    Ok(pg
        .auth_log()?
        .lines()
        .filter(|l| l.contains(&format!(" akid={akid} ACCEPT: ")))
        .filter_map(|l| l.split(" fp=").nth(1)?.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

#[test]
fn a_session_outlives_three_refreshes_and_each_new_client_uses_the_new_token() -> Result<()> {
    let pg = PgRds::start(&[USER])?;
    let c = IssuedCreds::random(600);
    pg.add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let agent = ProxyAgent::builder()
        .db(local_proxy_spec(pg.port(), USER))
        .creds(&c)
        .arg("--interval", "1m")
        .start()?;
    let env = agent.env(DEFAULT_DB, USER, USER);
    let mut session = match pgwire::login(&agent.socket(DEFAULT_DB), USER, USER)? {
        Ok(s) => s,
        Err(e) => bail!("login refused: {e}"),
    };
    let pid = session.pid.to_string();
    let mut tokens = vec![agent.token(DEFAULT_DB)?];
    let opened = Instant::now();
    let mut queries = 0;
    let mut next_query = opened;
    while opened.elapsed() < SESSION {
        if Instant::now() >= next_query {
            // The same backend answers throughout.
            let got = session
                .value("select pg_backend_pid()")
                .with_context(|| format!("after {:?}", opened.elapsed()))?;
            assert_eq!(got, pid, "after {:?}", opened.elapsed());
            queries += 1;
            next_query += QUERY_EVERY;
        }
        let now = agent.token(DEFAULT_DB)?;
        if tokens.last() != Some(&now) {
            tokens.push(now);
            let who = run_client(Client::Psql, &env)
                .with_context(|| format!("a new client after refresh {}", tokens.len() - 1))?;
            assert_eq!(who, USER);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        queries >= SESSION.as_secs() / QUERY_EVERY.as_secs(),
        "{queries} queries"
    );
    assert!(
        tokens.len() >= 4,
        "{} tokens in {SESSION:?} with a 1-minute interval",
        tokens.len()
    );
    // The session logged in with the first token, each new client with the
    // token of its refresh.
    let want: Vec<String> = tokens
        .iter()
        .map(|t| token_fingerprint(t))
        .collect::<Result<_>>()?;
    assert_eq!(accepted(&pg, &c.akid)?, want);
    assert_eq!(session.value("select 1")?, "1");
    session.terminate();
    Ok(())
}
