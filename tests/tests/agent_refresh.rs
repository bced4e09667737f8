//! The agent over several refresh cycles (library API, 1 s interval): a
//! reader hammering the files never sees a partial or missing file, and a
//! client connecting at any moment always logs in.

use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use rds_iam_e2e::agentproc::{library_agent, wait_for_file};
use rds_iam_e2e::pgrds::{Client, PgRds, HOST, REGION};
use rds_iam_e2e::stubs::IssuedCreds;
use rds_iam_tokenagent::creds::CredentialSource;
use rds_iam_tokenagent::pgpass;

const USER: &str = "app_user";

/// A complete token ends with a 64-hex signature (or, with a session token,
/// carries the whole of it after the signature).
fn complete(token: &str, session_token: &str) -> bool {
    let sig = token
        .split('&')
        .find_map(|kv| kv.strip_prefix("X-Amz-Signature="))
        .unwrap_or("");
    sig.len() == 64
        && sig.bytes().all(|b| b.is_ascii_hexdigit())
        && token.ends_with(&rds_iam_tokenagent::signer::uri_encode(session_token))
}

#[test]
fn refresh_cycles_never_break_readers_or_logins() -> Result<()> {
    let pg = PgRds::start(&[USER])?;
    let c = IssuedCreds::random(1200);
    pg.add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let dir = tempfile::tempdir()?;
    let provider = SharedCredentialsProvider::new(Credentials::new(
        &c.akid,
        &c.secret,
        Some(c.session_token.clone()),
        None,
        "test",
    ));
    let agent = library_agent(
        HOST,
        pg.port(),
        USER,
        REGION,
        dir.path(),
        CredentialSource::new(provider),
    );
    let status = agent.status();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(async move {
        agent
            .run(Duration::from_secs(1), async {
                let _ = stop_rx.await;
            })
            .await
    });
    wait_for_file(&dir.path().join("pgpass"), Duration::from_secs(10))?;

    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let distinct = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let reader = {
        let (done, reads, distinct) = (done.clone(), reads.clone(), distinct.clone());
        let dir = dir.path().to_owned();
        let st = c.session_token.clone();
        std::thread::spawn(move || -> Result<()> {
            while !done.load(Ordering::Relaxed) {
                let line = fs::read_to_string(dir.join("pgpass"))?;
                let f = pgpass::parse_line(&line)
                    .ok_or_else(|| anyhow::anyhow!("partial pgpass: {line:?}"))?;
                anyhow::ensure!(
                    line.ends_with('\n') && line.lines().count() == 1,
                    "pgpass is not one full line"
                );
                anyhow::ensure!(complete(&f[4], &st), "partial password in pgpass");
                let token = fs::read_to_string(dir.join("token"))?;
                anyhow::ensure!(complete(&token, &st), "partial token file");
                distinct
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(token);
                reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };

    // Connect over and over for more than three refresh cycles.
    let env = pg.libpq_env(USER, &dir.path().join("pgpass"));
    let mut logins = 0;
    let run_for = Duration::from_millis(4500);
    let t0 = Instant::now();
    while t0.elapsed() < run_for {
        let who = pg.run_client(Client::Psql, &env)?;
        assert_eq!(who, USER);
        logins += 1;
    }
    done.store(true, Ordering::Relaxed);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let _ = stop_tx.send(());
    rt.block_on(task)?;

    let refreshes = status.dbs[0].refresh_success.load(Ordering::Relaxed);
    let distinct = distinct.lock().unwrap_or_else(|e| e.into_inner()).len();
    eprintln!(
        "refreshes={refreshes} logins={logins} reads={} distinct tokens={distinct}",
        reads.load(Ordering::Relaxed)
    );
    assert!(
        refreshes >= 4,
        "at least three refresh cycles after the first: {refreshes}"
    );
    assert!(distinct >= 3, "the reader saw the token change: {distinct}");
    assert!(logins >= 10, "{logins}");
    assert!(reads.load(Ordering::Relaxed) > 1000);
    assert_eq!(status.dbs[0].refresh_error.load(Ordering::Relaxed), 0);
    // Clients other than psql use the same files after the refreshes.
    for kind in [Client::Psycopg, Client::Node, Client::Jdbc] {
        assert_eq!(pg.run_client(kind, &env)?, USER, "{kind:?}");
    }
    Ok(())
}
