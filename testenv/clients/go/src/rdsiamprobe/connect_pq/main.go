// connect_pq connects with lib/pq (database/sql) using only the libpq
// environment: lib/pq reads PGHOST (a host or a Unix socket directory),
// PGPORT, PGUSER, PGDATABASE, PGSSLMODE, PGPASSWORD and PGPASSFILE itself when
// the DSN is empty. It prints current_user and exits 1 with the error on
// stderr on failure.
//
// Unlike libpq, lib/pq defaults to sslmode=require and rejects prefer/allow:
// set PGSSLMODE=disable for a Unix socket or a plain-TCP proxy listener.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	_ "github.com/lib/pq"

	"rdsiamprobe/probe"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sql.Open("postgres", "")
	if err != nil {
		probe.Fail("lib/pq", err)
	}
	defer db.Close()
	var user string
	if err := db.QueryRowContext(ctx, "select current_user").Scan(&user); err != nil {
		probe.Fail("lib/pq", err)
	}
	fmt.Println(user)
}
