// connect_pgx connects with pgx v4 using only the libpq environment:
// pgx.ParseConfig("") reads PGHOST (a host or a Unix socket directory),
// PGPORT, PGUSER, PGDATABASE, PGSSLMODE, PGPASSWORD, PGPASSFILE, PGSERVICE and
// PGSERVICEFILE. It prints current_user and exits 1 with the error on stderr.
//
//	connect_pgx [CONNSTRING]                 e.g. "service=orders"
//	connect_pgx -cancel-after-ms N [CONNSTRING]
//
// With -cancel-after-ms, it runs "select pg_sleep(30)" under a context that
// times out after N ms. pgx then returns at once and, asynchronously, sends a
// CancelRequest and closes the connection: it never reads the server's reply,
// so the probe watches the backend from a second connection (opened before
// the query) until pg_stat_activity no longer shows it running. It prints
// "elapsed_ms=<until the backend stopped> code=- error=<pgx's error>", or
// fails if the backend still runs the query 5 s after the start.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"

	"rdsiamprobe/probe"
)

const client = "pgx"

func main() {
	cancelAfterMs := flag.Int("cancel-after-ms", 0, "run pg_sleep(30) and cancel it through the context after this many ms")
	flag.Parse()
	connString := ""
	if flag.NArg() > 0 {
		connString = flag.Arg(0)
	}
	config, err := pgx.ParseConfig(connString)
	if err != nil {
		probe.Fail(client, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, config)
	if err != nil {
		probe.Fail(client, err)
	}
	if *cancelAfterMs > 0 {
		cancelSleep(conn, config, time.Duration(*cancelAfterMs)*time.Millisecond)
		return
	}
	defer conn.Close(ctx)
	var user string
	if err := conn.QueryRow(ctx, "select current_user").Scan(&user); err != nil {
		probe.Fail(client, err)
	}
	fmt.Println(user)
}

func cancelSleep(conn *pgx.Conn, config *pgx.ConnConfig, after time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var pid int32
	if err := conn.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		probe.Fail(client, err)
	}
	watcher, err := pgx.ConnectConfig(ctx, config)
	if err != nil {
		probe.Fail(client, fmt.Errorf("second connection to watch the backend: %w", err))
	}
	defer watcher.Close(ctx)

	start := time.Now()
	sleepCtx, stop := context.WithTimeout(context.Background(), after)
	_, sleepErr := conn.Exec(sleepCtx, "select pg_sleep(30)")
	stop()
	if sleepErr == nil {
		probe.Fail(client, errors.New("pg_sleep(30) finished: the query was not cancelled"))
	}
	select {
	case <-conn.PgConn().CleanupDone():
	case <-time.After(15 * time.Second):
		probe.Fail(client, errors.New("pgx did not finish closing the connection within 15 s"))
	}
	for {
		var running bool
		err := watcher.QueryRow(ctx,
			"select exists (select from pg_stat_activity where pid = $1 and state = 'active')", pid,
		).Scan(&running)
		if err != nil {
			probe.Fail(client, fmt.Errorf("watching backend %d: %w", pid, err))
		}
		if !running {
			break
		}
		if time.Since(start) > 5*time.Second {
			probe.Fail(client, fmt.Errorf(
				"backend %d still runs pg_sleep 5 s after the query started: the CancelRequest did not reach the server (pgx: %v)",
				pid, sleepErr))
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	code := ""
	var pgErr *pgconn.PgError
	if errors.As(sleepErr, &pgErr) {
		code = pgErr.Code
	}
	probe.PrintCancelled(elapsed, code, sleepErr)
}
