//! A credential outage longer than several refresh intervals but shorter
//! than the cached credentials' remaining life: the Pod Identity endpoint
//! returns 500s, then hangs, then comes back with new credentials. Logins
//! never fail, readiness holds, every refresh during the outage signs with
//! the cached credentials (and no token outlives them), and the agent picks
//! up the new credentials by itself. Library API with a 1 s interval and the
//! real aws-config chain (one test per binary: it sets process environment
//! variables).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use rds_iam_e2e::agentproc::{library_agent, wait_for_file};
use rds_iam_e2e::pgrds::{Client, PgRds, HOST, REGION};
use rds_iam_e2e::stubs::{IssuedCreds, Mode, Stub};
use rds_iam_tokenagent::creds::CredentialSource;

const USER: &str = "app_user";

#[test]
fn outage_keeps_logins_working_and_recovers() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ep = rt.block_on(Stub::pod_identity())?;
    // Credentials that live 5 minutes: the cache refreshes them 5 minutes
    // before they expire, so every refresh reaches the endpoint, and during
    // the outage the cached ones (still valid for almost 5 minutes) sign.
    ep.set_lifetime(Duration::from_secs(300));
    let pg = PgRds::start(&[USER])?;
    let c = ep.creds();
    pg.add_key(&c.akid, &c.secret, Some(&c.session_token))?;

    let home = tempfile::tempdir()?;
    let auth = home.path().join("eks-pod-identity-token");
    std::fs::write(&auth, "pod-identity-jwt")?;
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ] {
        std::env::remove_var(k);
    }
    std::env::set_var("HOME", home.path());
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("{}/v1/credentials", ep.url()),
    );
    std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &auth);

    let dir = tempfile::tempdir()?;
    let source = rt
        .block_on(CredentialSource::default_chain(REGION))
        .with_fetch_timeout(Duration::from_secs(2));
    let agent = library_agent(HOST, pg.port(), USER, REGION, dir.path(), source);
    let status = agent.status();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(async move {
        agent
            .run(Duration::from_secs(1), async {
                let _ = stop_rx.await;
            })
            .await
    });
    wait_for_file(&dir.path().join("pgpass"), Duration::from_secs(10))?;
    let env = pg.libpq_env(USER, &dir.path().join("pgpass"));
    let login_for = |d: Duration| -> Result<usize> {
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed() < d {
            assert_eq!(pg.run_client(Client::Psql, &env)?, USER);
            assert!(
                status.ready(SystemTime::now()),
                "readiness must hold while the token has > 2 min"
            );
            n += 1;
        }
        Ok(n)
    };
    login_for(Duration::from_secs(2))?;
    let token_file = dir.path().join("token");
    let credential_of = |t: &str| -> String {
        t.split('&')
            .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))
            .and_then(|v| v.split("%2F").next())
            .unwrap_or_default()
            .to_owned()
    };
    let old_key = c.akid.clone();
    let outage_start = SystemTime::now();
    let seen_before = ep.seen().len();

    // 500s for 5 s (five intervals), then a hang for 6 s.
    ep.set_mode(Mode::Fail);
    login_for(Duration::from_secs(5))?;
    ep.set_mode(Mode::Hang);
    login_for(Duration::from_secs(6))?;
    // The agent kept asking, every refresh still succeeded with the cached
    // credentials, and the token they sign expires when they do (at most
    // 300 s after they were fetched, before the outage).
    assert!(
        ep.seen().len() >= seen_before + 4,
        "the endpoint was asked again and again"
    );
    assert_eq!(status.dbs[0].refresh_error.load(Ordering::Relaxed), 0);
    let t = std::fs::read_to_string(&token_file)?;
    assert_eq!(credential_of(&t), old_key);
    let exp = rds_iam_tokenagent::token::expires_at(&t)?;
    assert!(
        exp <= outage_start + Duration::from_secs(300),
        "the token never outlives its credentials"
    );

    // Back, with new credentials: the agent picks them up by itself.
    let fresh = IssuedCreds::random(900);
    pg.add_key(&fresh.akid, &fresh.secret, Some(&fresh.session_token))?;
    ep.set_creds(fresh.clone());
    ep.set_mode(Mode::Ok);
    let t = Instant::now();
    while credential_of(&std::fs::read_to_string(&token_file)?) != fresh.akid {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(35), "no recovery");
        login_for(Duration::from_millis(200))?;
    }
    login_for(Duration::from_secs(1))?;
    let seen = ep.seen();
    assert!(seen
        .iter()
        .all(|s| s.headers.get("authorization").map(String::as_str) == Some("pod-identity-jwt")));
    let _ = stop_tx.send(());
    rt.block_on(task)?;
    Ok(())
}
