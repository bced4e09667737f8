//! Temporary smoke test of the proxy session against the RDS-like PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rds_iam_common::{DbName, Endpoint, Engine, SslMode};
use rds_iam_e2e::pgrds::{run_client, Client, PgRds, REGION};
use rds_iam_tokenagent::proxy::cancel::CancelMap;
use rds_iam_tokenagent::proxy::listener::{self, Bind, Limits, Listener};
use rds_iam_tokenagent::proxy::metrics::ProxyMetrics;
use rds_iam_tokenagent::proxy::tls;
use rds_iam_tokenagent::proxy::upstream::Upstream;
use rds_iam_tokenagent::source::{Current, TokenSource};
use rds_iam_tokenagent::token::Token;

#[test]
fn psql_through_the_socket() {
    let pg = PgRds::start(&["app_user"]).unwrap();
    pg.add_key("AKIDSMOKE", "secretsmoke", None).unwrap();
    let token = pg
        .botocore_token("app_user", "AKIDSMOKE", "secretsmoke", None)
        .unwrap();
    let endpoint = Endpoint {
        name: DbName::default_db(),
        engine: Engine::Postgres,
        host: "localhost".into(),
        port: pg.port(),
        user: "app_user".into(),
        database: None,
        region: REGION.into(),
        sslmode: SslMode::Require,
        access: Default::default(),
    };
    let source = Arc::new(TokenSource::new(endpoint));
    source.set(Current {
        token: Token::new(token),
        expires_at: SystemTime::now() + Duration::from_secs(600),
    });
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sock = dir.path().join(".s.PGSQL.5432");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = Arc::new(ProxyMetrics::new([&DbName::default_db()]));
    let up = Arc::new(Upstream {
        source,
        tls: tls::client_config(SslMode::Require, None, false).unwrap(),
        server_name: tls::server_name("localhost").unwrap(),
        direct_tls: false,
        connect_timeout: Duration::from_secs(10),
        cancels: CancelMap::default(),
        metrics: metrics.clone(),
    });
    let server = rt.spawn(async move {
        let l = Listener::bind(&Bind::Unix(sock)).unwrap();
        listener::run(
            vec![(l, up)],
            Limits {
                max_connections: 10,
                max_sigterm_delay: Duration::ZERO,
            },
            async {
                let _ = stop_rx.await;
            },
        )
        .await
    });
    std::thread::sleep(Duration::from_millis(200));
    let env = [
        ("PGHOST", dir.path().display().to_string()),
        ("PGPORT", "5432".into()),
        ("PGUSER", "app_user".into()),
        ("PGDATABASE", "app_user".into()),
        ("PGSSLMODE", "disable".into()),
    ];
    for kind in [Client::Psql, Client::Psycopg] {
        assert_eq!(run_client(kind, &env).unwrap(), "app_user", "{kind:?}");
    }
    let bad = [
        ("PGHOST", dir.path().display().to_string()),
        ("PGUSER", "bob".into()),
        ("PGSSLMODE", "disable".into()),
    ];
    let e = run_client(Client::Psql, &bad).unwrap_err().to_string();
    assert!(e.contains("serves user \"app_user\""), "{e}");
    eprintln!("{}", metrics.render());
    stop_tx.send(()).unwrap();
    rt.block_on(server).unwrap();
}
