// connect_gomysql connects with go-sql-driver/mysql (database/sql) from the
// probes' MySQL environment (see rdsiamprobe/probe.MysqlEnv: MYSQL_UNIX_PORT
// or MYSQL_HOST/MYSQL_TCP_PORT, MYSQL_USER, MYSQL_DATABASE, MYSQL_PWD), runs
// "select current_user()" and prints it; exits 1 with the error on stderr.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"time"

	"github.com/go-sql-driver/mysql"

	"rdsiamprobe/probe"
)

const client = "go-sql-driver/mysql"

func main() {
	env, err := probe.ReadMysqlEnv()
	if err != nil {
		probe.Fail(client, err)
	}
	cfg := mysql.NewConfig()
	cfg.User = env.User
	cfg.Passwd = env.Password
	cfg.DBName = env.Database
	if env.Socket != "" {
		cfg.Net, cfg.Addr = "unix", env.Socket
	} else {
		cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(env.Host, env.Port)
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		probe.Fail(client, err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var user string
	if err := db.QueryRowContext(ctx, "select current_user()").Scan(&user); err != nil {
		probe.Fail(client, err)
	}
	fmt.Println(user)
}
