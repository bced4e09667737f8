//! Connect with tokio-postgres, which reads no environment itself: the probe
//! builds its `Config` from the libpq variables as an application would.
//!
//! - PGHOST: a host name or IP, or an absolute Unix socket directory (required)
//! - PGPORT (default 5432), PGUSER (required), PGDATABASE (default: the user)
//! - PGSSLMODE: disable, prefer (default) or require, which encrypt without
//!   verifying like libpq; verify-ca and verify-full check the server against
//!   PGSSLROOTCERT (verify-full also the host name)
//! - PGPASSWORD: the password, if any. tokio-postgres does not read a pgpass
//!   file; through the proxy no password is needed.
//!
//! Prints current_user; exits 1 with the error on stderr on failure.

use std::env;

use native_tls::{Certificate, TlsConnector};
use postgres_native_tls::MakeTlsConnector;
use tokio_postgres::config::SslMode;
use tokio_postgres::Config;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    match current_user().await {
        Ok(user) => println!("{user}"),
        Err(e) => {
            // tokio_postgres::Error shows only its kind ("db error"): add the causes.
            let mut msg = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("tokio-postgres: {msg}");
            std::process::exit(1);
        }
    }
}

type Error = Box<dyn std::error::Error>;

fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> Result<String, Error> {
    var(name).ok_or_else(|| format!("{name} is not set").into())
}

/// How to set up TLS for a PGSSLMODE value.
enum Tls {
    Off,
    /// Encrypt; check the chain (and the host name) only when verifying.
    On {
        mode: SslMode,
        verify_chain: bool,
        verify_host: bool,
    },
}

fn tls_for(sslmode: &str) -> Result<Tls, Error> {
    let on = |mode, verify_chain, verify_host| Tls::On {
        mode,
        verify_chain,
        verify_host,
    };
    Ok(match sslmode {
        "disable" => Tls::Off,
        "prefer" => on(SslMode::Prefer, false, false),
        "require" => on(SslMode::Require, false, false),
        "verify-ca" => on(SslMode::Require, true, false),
        "verify-full" => on(SslMode::Require, true, true),
        other => {
            return Err(format!(
                "PGSSLMODE={other:?} is not supported: use disable, prefer, require, verify-ca or verify-full"
            )
            .into())
        }
    })
}

fn config() -> Result<Config, Error> {
    let host = required("PGHOST")?;
    let user = required("PGUSER")?;
    let mut config = Config::new();
    if host.starts_with('/') {
        config.host_path(&host);
    } else {
        config.host(&host);
    }
    if let Some(port) = var("PGPORT") {
        config.port(
            port.parse()
                .map_err(|_| format!("PGPORT={port:?} is not a port"))?,
        );
    }
    config.dbname(var("PGDATABASE").unwrap_or_else(|| user.clone()));
    config.user(&user);
    if let Some(password) = var("PGPASSWORD") {
        config.password(password);
    }
    config.application_name("connect_tokio_postgres");
    Ok(config)
}

fn tls_connector(verify_chain: bool, verify_host: bool) -> Result<MakeTlsConnector, Error> {
    let mut builder = TlsConnector::builder();
    builder
        .danger_accept_invalid_certs(!verify_chain)
        .danger_accept_invalid_hostnames(!verify_host);
    if verify_chain {
        let path = required("PGSSLROOTCERT")?;
        let pem = std::fs::read(&path).map_err(|e| format!("reading PGSSLROOTCERT {path}: {e}"))?;
        builder.add_root_certificate(Certificate::from_pem(&pem)?);
    }
    Ok(MakeTlsConnector::new(builder.build()?))
}

async fn current_user() -> Result<String, Error> {
    let mut config = config()?;
    let sslmode = var("PGSSLMODE").unwrap_or_else(|| "prefer".into());
    let client = match tls_for(&sslmode)? {
        Tls::Off => {
            config.ssl_mode(SslMode::Disable);
            let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client
        }
        Tls::On {
            mode,
            verify_chain,
            verify_host,
        } => {
            config.ssl_mode(mode);
            let (client, conn) = config
                .connect(tls_connector(verify_chain, verify_host)?)
                .await?;
            tokio::spawn(conn);
            client
        }
    };
    let row = client.query_one("select current_user::text", &[]).await?;
    Ok(row.get(0))
}
