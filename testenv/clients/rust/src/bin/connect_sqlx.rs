//! Connect with sqlx (PostgreSQL, runtime-tokio, native-tls) using only the
//! libpq environment: `PgConnectOptions::new()` reads PGHOST (a host or a Unix
//! socket directory), PGPORT, PGUSER, PGDATABASE, PGSSLMODE, PGSSLROOTCERT,
//! PGPASSWORD and PGPASSFILE itself. Prints current_user; exits 1 with the
//! error on stderr on failure.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    match current_user().await {
        Ok(user) => println!("{user}"),
        Err(e) => {
            eprintln!("sqlx: {e}");
            std::process::exit(1);
        }
    }
}

async fn current_user() -> Result<String, sqlx::Error> {
    let mut conn = PgConnection::connect_with(&PgConnectOptions::new()).await?;
    let user: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(user)
}
