// Package probe holds what the Go client probes share: how they fail, the
// one-line report of a cancelled query, and the MySQL environment contract.
package probe

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Fail prints "<client>: <err>" on stderr and exits 1.
func Fail(client string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %s\n", client, oneLine(err.Error()))
	os.Exit(1)
}

// PrintCancelled prints the report of a cancel probe:
// "elapsed_ms=<N> code=<C> error=<message>", where code is the server's error
// code (SQLSTATE or MySQL error number) or "-" when the driver got none.
func PrintCancelled(elapsed time.Duration, code string, err error) {
	if code == "" {
		code = "-"
	}
	fmt.Printf("elapsed_ms=%d code=%s error=%s\n", elapsed.Milliseconds(), code, oneLine(err.Error()))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// MysqlEnv is the connection the MySQL probes take from the environment:
//
//	MYSQL_UNIX_PORT   socket path; or TCP to MYSQL_HOST (default 127.0.0.1)
//	                  and MYSQL_TCP_PORT (default 3306); not both
//	MYSQL_USER        user name (required)
//	MYSQL_DATABASE    default database (optional)
//	MYSQL_PWD         password (optional; none through the proxy)
type MysqlEnv struct {
	Socket   string
	Host     string
	Port     string
	User     string
	Database string
	Password string
}

// ReadMysqlEnv reads MysqlEnv, failing on a missing user or on both a socket
// and a host.
func ReadMysqlEnv() (MysqlEnv, error) {
	e := MysqlEnv{
		Socket:   os.Getenv("MYSQL_UNIX_PORT"),
		Host:     os.Getenv("MYSQL_HOST"),
		Port:     os.Getenv("MYSQL_TCP_PORT"),
		User:     os.Getenv("MYSQL_USER"),
		Database: os.Getenv("MYSQL_DATABASE"),
		Password: os.Getenv("MYSQL_PWD"),
	}
	if e.User == "" {
		return e, fmt.Errorf("MYSQL_USER is not set")
	}
	if e.Socket != "" && e.Host != "" {
		return e, fmt.Errorf("both MYSQL_UNIX_PORT and MYSQL_HOST are set: set one")
	}
	if e.Host == "" {
		e.Host = "127.0.0.1"
	}
	if e.Port == "" {
		e.Port = "3306"
	}
	return e, nil
}
