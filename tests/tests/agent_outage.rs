//! A credential outage longer than one refresh interval but shorter than the
//! token's remaining life: the Pod Identity endpoint returns 500s, then hangs,
//! then comes back. Logins never fail, readiness holds while the token has
//! more than 2 minutes, and the agent recovers by itself. Library API with a
//! 1 s interval and the real aws-config chain (one test per binary: it sets
//! process environment variables).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use rds_iam_e2e::agentproc::wait_for_file;
use rds_iam_e2e::pgrds::{Client, PgRds, HOST, REGION};
use rds_iam_e2e::stubs::{Mode, Stub};
use rds_iam_tokenagent::agent::Agent;
use rds_iam_tokenagent::creds::CredentialSource;
use rds_iam_tokenagent::signer::TokenSpec;

const USER: &str = "app_user";

#[test]
fn outage_keeps_logins_working_and_recovers() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ep = rt.block_on(Stub::pod_identity())?;
    // Credentials that live 2 s: every refresh must reach the endpoint, and
    // cached ones (used while the endpoint is down, see the unit tests of
    // `creds`) run out early in the outage, so refreshes really fail.
    ep.set_lifetime(Duration::from_secs(2));
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
    let spec = TokenSpec {
        host: HOST.into(),
        port: pg.port(),
        user: USER.into(),
        region: REGION.into(),
    };
    let source = rt
        .block_on(CredentialSource::default_chain(REGION))
        .with_fetch_timeout(Duration::from_secs(2));
    let agent = Agent::new(spec, dir.path().to_owned(), source);
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
    let ok_before = status.refresh_success.load(Ordering::Relaxed);

    // 500s for 5 s (five intervals), then a hang for 6 s.
    ep.set_mode(Mode::Fail);
    login_for(Duration::from_secs(5))?;
    ep.set_mode(Mode::Hang);
    login_for(Duration::from_secs(6))?;
    let errors = status.refresh_error.load(Ordering::Relaxed);
    assert!(errors >= 2, "refreshes failed during the outage: {errors}");
    let ok_during = status.refresh_success.load(Ordering::Relaxed);
    assert!(
        ok_during <= ok_before + 3,
        "only cached credentials can serve during the outage"
    );

    // Back: the agent recovers by itself within its backoff (at most 30 s).
    ep.set_mode(Mode::Ok);
    let t = Instant::now();
    while status.refresh_success.load(Ordering::Relaxed) <= ok_during {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(35), "no recovery");
        login_for(Duration::from_millis(200))?;
    }
    let seen = ep.seen();
    assert!(seen
        .iter()
        .all(|s| s.headers.get("authorization").map(String::as_str) == Some("pod-identity-jwt")));
    let _ = stop_tx.send(());
    rt.block_on(task)?;
    Ok(())
}
