// Connect with node-postgres (npm `pg`) using only the standard libpq
// environment (PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE, PGPASSFILE) and
// no password: pg reads those itself, and takes the password from PGPASSFILE
// through its `pgpass` module. Prints current_user; exits 1 with the error on
// stderr on failure.
//
// With an argument, the connection string is read from the env variable it
// names (e.g. RDS_IAM_ORDERS_URL, a URL without a password); pg still takes
// the password from PGPASSFILE:
//   node connect_node.js RDS_IAM_ORDERS_URL
//
// Note: pg maps PGSSLMODE=require to `ssl: true`, which VERIFIES the server
// certificate against Node's CA store (unlike libpq's require). Against RDS
// that needs NODE_EXTRA_CA_CERTS=<RDS CA bundle>; the harness passes its
// self-signed server.crt the same way.
'use strict'
const path = require('path')
const { Client } = require(path.join(__dirname, '..', 'node', 'node_modules', 'pg'))

async function main() {
  const urlEnv = process.argv[2]
  if (urlEnv && !process.env[urlEnv]) {
    process.stderr.write('node-postgres: ' + urlEnv + ' is not set\n')
    process.exit(1)
  }
  const client = urlEnv ? new Client({ connectionString: process.env[urlEnv] }) : new Client()
  try {
    await client.connect()
    const res = await client.query('select current_user')
    process.stdout.write(res.rows[0].current_user + '\n')
    await client.end()
  } catch (e) {
    process.stderr.write('node-postgres: ' + (e && e.stack ? e.stack : String(e)) + '\n')
    try { await client.end() } catch (_) {}
    process.exit(1)
  }
}

main()
