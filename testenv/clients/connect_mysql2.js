// Connect with mysql2 (npm) from the probes' MySQL environment (README.md):
// MYSQL_UNIX_PORT, or MYSQL_HOST (default 127.0.0.1) and MYSQL_TCP_PORT
// (default 3306); MYSQL_USER; MYSQL_DATABASE and MYSQL_PWD if set. Runs
// "select current_user()" and prints it; exits 1 with the error on stderr.
'use strict'
const path = require('path')
const mysql = require(path.join(__dirname, '..', 'node', 'node_modules', 'mysql2', 'promise'))

function options() {
  const env = process.env
  if (!env.MYSQL_USER) throw new Error('MYSQL_USER is not set')
  const opts = { user: env.MYSQL_USER, connectTimeout: 30000 }
  if (env.MYSQL_UNIX_PORT) {
    if (env.MYSQL_HOST) throw new Error('both MYSQL_UNIX_PORT and MYSQL_HOST are set: set one')
    opts.socketPath = env.MYSQL_UNIX_PORT
  } else {
    opts.host = env.MYSQL_HOST || '127.0.0.1'
    opts.port = Number(env.MYSQL_TCP_PORT || '3306')
  }
  if (env.MYSQL_DATABASE) opts.database = env.MYSQL_DATABASE
  if (env.MYSQL_PWD) opts.password = env.MYSQL_PWD
  return opts
}

async function main() {
  let conn
  try {
    conn = await mysql.createConnection(options())
    const [rows] = await conn.query({ sql: 'select current_user() as u', rowsAsArray: false })
    process.stdout.write(rows[0].u + '\n')
    await conn.end()
  } catch (e) {
    process.stderr.write('mysql2: ' + (e && e.message ? e.message : String(e)) + '\n')
    if (conn) conn.destroy()
    process.exit(1)
  }
}

main()
