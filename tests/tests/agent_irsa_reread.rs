//! IRSA through the real aws-config chain in-process: the projected web
//! identity token file is read again when credentials are refreshed (kubelet
//! rotates it), and long-lived credentials mean one STS call for many
//! tokens. One test per binary: it sets process environment variables.

use std::fs;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use rds_iam_e2e::stubs::Stub;
use rds_iam_tokenagent::creds::CredentialSource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_token_file_is_reread_and_credentials_cached() -> Result<()> {
    let sts = Stub::sts().await?;
    let home = tempfile::tempdir()?;
    let jwt = home.path().join("token");
    fs::write(&jwt, "jwt-generation-1")?;
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        std::env::remove_var(k);
    }
    std::env::set_var("HOME", home.path());
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/demo-app");
    std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", &jwt);
    std::env::set_var("AWS_ENDPOINT_URL_STS", sts.url());

    let dir = tempfile::tempdir()?;
    let agent = rds_iam_e2e::agentproc::library_agent(
        "db.abc.us-east-1.rds.amazonaws.com",
        5432,
        "app",
        "us-east-1",
        dir.path(),
        CredentialSource::default_chain("us-east-1").await,
    );
    let tokens_seen = || -> Vec<String> {
        sts.seen()
            .iter()
            .map(|s| rds_iam_e2e::stubs::form(&s.body)["WebIdentityToken"].clone())
            .collect()
    };

    // Credentials that expire within the refresh margin: fetched every time.
    sts.set_lifetime(Duration::from_secs(180));
    agent.refresh_once(std::future::pending()).await?;
    assert_eq!(tokens_seen(), ["jwt-generation-1"]);
    fs::write(&jwt, "jwt-generation-2")?;
    agent.refresh_once(std::future::pending()).await?;
    assert_eq!(
        tokens_seen(),
        ["jwt-generation-1", "jwt-generation-2"],
        "the rotated file was read"
    );

    // Credentials valid for an hour: one STS call for many tokens.
    sts.set_lifetime(Duration::from_secs(3600));
    fs::write(&jwt, "jwt-generation-3")?;
    for _ in 0..5 {
        let r = agent.refresh_once(std::future::pending()).await?;
        assert!(r.failures().is_empty(), "{:?}", r.failures());
        let exp = r.earliest_expiry().expect("a token");
        assert!(exp > SystemTime::now() + Duration::from_secs(890));
    }
    assert_eq!(
        tokens_seen(),
        ["jwt-generation-1", "jwt-generation-2", "jwt-generation-3"]
    );
    assert_eq!(sts.seen().len(), 3);
    Ok(())
}
