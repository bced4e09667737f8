//! The agent's tokens against botocore's `generate_db_auth_token`: the same
//! parameters and the same signature for random hosts, users, ports,
//! regions, session tokens and times (parameter order may differ), and for
//! credentials that expire within the 15 minutes (the agent then signs
//! `X-Amz-Expires` = the whole seconds they have left; botocore presigns the
//! same request with that `expires_in`).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use aws_credential_types::Credentials;
use rds_iam_e2e::pgrds::{repo_root, venv_python};
use rds_iam_tokenagent::signer::{sign_token, TokenSpec};

const CASES: usize = 300;

fn rand_str(set: &[u8], min: usize, max: usize) -> String {
    let n = rand::random_range(min..=max);
    (0..n)
        .map(|_| set[rand::random_range(0..set.len())] as char)
        .collect()
}

fn random_host() -> String {
    const LABEL: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let region = [
        "us-east-1",
        "eu-west-3",
        "ap-southeast-2",
        "cn-north-1",
        "us-gov-west-1",
    ][rand::random_range(0..5)];
    match rand::random_range(0..5) {
        0 => format!(
            "{}.{}.{region}.rds.amazonaws.com",
            rand_str(LABEL, 1, 20),
            rand_str(LABEL, 12, 12)
        ),
        1 => format!(
            "{}.cluster-ro-{}.{region}.rds.amazonaws.com",
            rand_str(LABEL, 1, 20),
            rand_str(LABEL, 12, 12)
        ),
        2 => format!(
            "{}.proxy-{}.{region}.rds.amazonaws.com",
            rand_str(LABEL, 1, 20),
            rand_str(LABEL, 12, 12)
        ),
        3 => format!(
            "{}.{}.{region}.rds.amazonaws.com.cn",
            rand_str(LABEL, 1, 20),
            rand_str(LABEL, 12, 12)
        ),
        _ => format!(
            "{}-{}.internal",
            rand_str(LABEL, 1, 10),
            rand_str(LABEL, 1, 10)
        ),
    }
}

fn random_user() -> String {
    // Everything a PostgreSQL role name may hold except what the agent
    // rejects (':', whitespace, control characters).
    const CH: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@+=/!$&'()*,;~%#?[]\\\"";
    let mut u = rand_str(CH, 1, 40);
    if rand::random_bool(0.1) {
        u.push('é');
    }
    u
}

/// `host:port/` and the decoded query parameters.
fn split(token: &str) -> Result<(String, BTreeMap<String, String>)> {
    let (base, query) = token.split_once("/?").context("no /? in token")?;
    let mut params = BTreeMap::new();
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').context("param without =")?;
        if params.insert(decode(k)?, decode(v)?).is_some() {
            bail!("duplicate parameter {k}");
        }
    }
    Ok((base.to_owned(), params))
}

fn decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3).context("short escape")?)?;
            out.push(u8::from_str_radix(hex, 16)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

#[test]
fn tokens_match_botocore() -> Result<()> {
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for i in 0..CASES {
        let host = random_host();
        let port: u16 = rand::random_range(1..=65535);
        let user = random_user();
        let region = [
            "us-east-1",
            "eu-central-1",
            "ap-northeast-3",
            "cn-northwest-1",
            "us-gov-east-1",
        ][i % 5]
            .to_owned();
        let akid = format!(
            "AKIA{}",
            rand_str(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16, 16)
        );
        let secret = rand_str(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            40,
            40,
        );
        // Half with a session token, up to real STS lengths.
        let session_token = (i % 2 == 0).then(|| {
            rand_str(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
                16,
                1400,
            )
        });
        let time: u64 = rand::random_range(1_500_000_000..2_000_000_000);
        // A third of the credentials expire within the 15 minutes, at a
        // random millisecond after `time + life`: the token lives `life` s.
        let (expiry, expires) = if i % 3 == 1 {
            let life: u64 = rand::random_range(1..=899);
            let ms: u64 = rand::random_range(0..1000);
            (
                Some(UNIX_EPOCH + Duration::from_millis((time + life) * 1000 + ms)),
                life,
            )
        } else {
            (None, 900)
        };
        let creds = Credentials::new(&akid, &secret, session_token.clone(), expiry, "test");
        let spec = TokenSpec {
            host: host.clone(),
            port,
            user: user.clone(),
            region: region.clone(),
        };
        ours.push(sign_token(&spec, &creds, UNIX_EPOCH + Duration::from_secs(time))?.token);
        cases.push(serde_json::json!({
            "host": host, "port": port, "user": user, "region": region,
            "akid": akid, "secret": secret, "session_token": session_token, "time": time,
            "expires": expires,
        }));
    }
    let mut child = Command::new(venv_python()?)
        .arg(repo_root().join("testenv/botocore_batch.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(serde_json::to_string(&cases)?.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "botocore_batch.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let theirs: Vec<String> = serde_json::from_slice(&out.stdout)?;
    assert_eq!(theirs.len(), CASES);
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let (ours_base, ours_params) = split(a.expose())?;
        let (their_base, their_params) = split(b)?;
        assert_eq!(ours_base, their_base, "case {i}: {}", cases[i]);
        assert_eq!(ours_params, their_params, "case {i}: {}", cases[i]);
        assert_eq!(ours_params["X-Amz-Signature"].len(), 64);
        assert_eq!(
            ours_params["X-Amz-Expires"],
            cases[i]["expires"].to_string(),
            "case {i}"
        );
    }
    Ok(())
}

#[test]
fn pinned_vector_also_matches_botocore() -> Result<()> {
    // The official Rust SDK's vector, checked against botocore too so both
    // references agree with each other and with us.
    let out = Command::new(venv_python()?)
        .arg(repo_root().join("testenv/botocore_token.py"))
        .args([
            "--host",
            "prod-instance.us-east-1.rds.amazonaws.com",
            "--port",
            "3306",
            "--user",
            "peccy",
        ])
        .args([
            "--region",
            "us-east-1",
            "--akid",
            "akid",
            "--secret",
            "secret",
            "--time",
            "1724709600",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?;
    let (_, params) = split(token.trim())?;
    assert_eq!(
        params["X-Amz-Signature"],
        "dd0cba843009474347af724090233265628ace491ea17ce3eb3da098b983ad89"
    );
    Ok(())
}
