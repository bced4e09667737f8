//! The proxy's benchmarks (BENCHMARKS.md, "Proxy mode (PostgreSQL)"), each
//! against the release agent and printing its figures, then checking the
//! target. Ignored by `cargo test`; `bash tokenagent/benches/proxy-pg.sh`
//! builds the release binary and runs them one at a time.
//!
//! - select-only throughput: pgbench `-S`, 8 persistent clients, through the
//!   socket and directly over TLS to the same RDS-like server, in alternating
//!   pairs of runs (the order flips every pair); the median of the pairs'
//!   ratios must be at least 0.9; the agent's CPU time over the proxied runs
//!   is printed too (what a proxy-mode agent needs under load);
//! - connect latency: pgbench `-C` (a new connection per transaction), one
//!   client, against a TLS-only PostgreSQL with `trust` (the RDS-like
//!   server's PAM verifier takes about 200 ms per login and would hide the
//!   proxy's cost); the median of the pairs' differences in pgbench's average
//!   connection time must be under 1 ms;
//! - memory: the agent's RSS idle in proxy mode (under 10 MiB) and with
//!   1,000 idle proxied sessions (under 40 MiB), and its peak as `time -v`
//!   reports it.
//!
//! `RDS_IAM_BENCH_PAIRS` (default 5) and `RDS_IAM_BENCH_SECONDS` (default 20)
//! set the runs; `RDS_IAM_AGENT_BIN` the agent (default target/release).

use std::cell::Cell;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rds_iam_e2e::localdb::{TcpAuth, TrustPg};
use rds_iam_e2e::pgrds::{repo_root, PgRds};
use rds_iam_e2e::pgwire;
use rds_iam_e2e::proxyagent::{
    local_proxy_spec, raise_own_fd_limit, run, ProxyAgent, ProxyAgentBuilder, DEFAULT_DB,
};
use rds_iam_e2e::stubs::IssuedCreds;

const USER: &str = "app_user";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pairs() -> u64 {
    env_number("RDS_IAM_BENCH_PAIRS", 5)
}

fn seconds() -> u64 {
    env_number("RDS_IAM_BENCH_SECONDS", 20)
}

fn release_agent() -> Result<ProxyAgentBuilder> {
    let bin = std::env::var_os("RDS_IAM_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/rds-iam-tokenagent"));
    if !bin.is_file() {
        bail!(
            "{} is not built; run bash tokenagent/benches/proxy-pg.sh",
            bin.display()
        );
    }
    Ok(ProxyAgent::builder().bin(&bin))
}

/// Runs pgbench with exactly `env`; its standard output.
fn pgbench(env: &[(String, String)], args: &[&str]) -> Result<String> {
    let out = run(Command::new("pgbench").args(args), env)?;
    if !out.success() {
        bail!("pgbench {args:?} failed: {}", out.stderr);
    }
    Ok(out.stdout)
}

/// The number after `label` in pgbench's report.
fn figure(report: &str, label: &str) -> Result<f64> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {label:?} in\n{report}"))
}

/// The agent's CPU time over the proxied pgbench runs, and their wall time
/// and transactions.
#[derive(Default)]
struct AgentCpu(Cell<(Duration, Duration, f64)>);

impl AgentCpu {
    /// Runs pgbench through `agent` and adds its figures.
    fn pgbench(
        &self,
        agent: &ProxyAgent,
        env: &[(String, String)],
        args: &[&str],
    ) -> Result<String> {
        let (cpu, wall, txns) = self.0.get();
        let (cpu0, wall0) = (agent.cpu_time()?, Instant::now());
        let report = pgbench(env, args)?;
        self.0.set((
            cpu + agent.cpu_time()?.saturating_sub(cpu0),
            wall + wall0.elapsed(),
            txns + figure(&report, "number of transactions actually processed: ")?,
        ));
        Ok(report)
    }

    /// Prints the agent's CPU per second and per `unit` (a transaction).
    fn report(&self, unit: &str) {
        let (cpu, wall, txns) = self.0.get();
        let cpu = cpu.as_secs_f64();
        eprintln!(
            "agent CPU over the proxied runs: {:.0} ms per second, {:.1} µs per {unit}",
            cpu * 1000.0 / wall.as_secs_f64(),
            cpu * 1e6 / txns
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `a` and `b` in `pairs()` pairs, `a` first in even pairs and `b`
/// first in odd ones; each run's figure for both.
fn alternate(a: impl Fn() -> Result<f64>, b: impl Fn() -> Result<f64>) -> Result<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    for i in 0..pairs() {
        let pair = if i % 2 == 0 {
            let x = a()?;
            (x, b()?)
        } else {
            let y = b()?;
            (a()?, y)
        };
        eprintln!("pair {}: proxy {:.3}  direct {:.3}", i + 1, pair.0, pair.1);
        out.push(pair);
    }
    Ok(out)
}

#[test]
#[ignore = "benchmark: bash tokenagent/benches/proxy-pg.sh"]
fn select_only_throughput_through_the_socket_and_direct_tls() -> Result<()> {
    let pg = PgRds::start(&[USER])?;
    let c = IssuedCreds::random(600);
    pg.add_key(&c.akid, &c.secret, Some(&c.session_token))?;
    let agent = release_agent()?
        .db(local_proxy_spec(pg.port(), USER))
        .creds(&c)
        .start()?;
    let proxy = agent.env(DEFAULT_DB, USER, USER);
    // Directly over TLS with the token from the agent's pgpass.
    let mut direct = pg.libpq_env(USER, &agent.dir().join("pgpass"));
    direct.push(("PGGSSENCMODE".into(), "disable".into()));
    pgbench(&direct, &["-i", "-q", "-s", "1"])?;
    let secs = seconds().to_string();
    let args = ["-n", "-S", "-c", "8", "-j", "2", "-T", &secs];
    let tps = |report: String| figure(&report, "tps = ");
    let cpu = AgentCpu::default();
    eprintln!("pgbench {} ({} pairs)", args.join(" "), pairs());
    let runs = alternate(
        || tps(cpu.pgbench(&agent, &proxy, &args)?),
        || tps(pgbench(&direct, &args)?),
    )?;
    let ratios: Vec<f64> = runs.iter().map(|(p, d)| p / d).collect();
    let ratio = median(ratios.clone());
    eprintln!("ratios {ratios:.3?}; median proxy/direct = {ratio:.3}");
    cpu.report("transaction");
    eprintln!("agent VmHWM {} KiB", agent.status_kib("VmHWM")?);
    assert!(ratio >= 0.9, "median ratio {ratio:.3}");
    Ok(())
}

#[test]
#[ignore = "benchmark: bash tokenagent/benches/proxy-pg.sh"]
fn connect_latency_through_the_socket_and_direct_tls() -> Result<()> {
    let pg = TrustPg::start_with(&[USER], TcpAuth::TlsTrust, 100)?;
    let agent = release_agent()?
        .db(local_proxy_spec(pg.port(), USER))
        .creds(&IssuedCreds::random(0))
        .start()?;
    let proxy = agent.env(DEFAULT_DB, USER, USER);
    let direct: Vec<(String, String)> = [
        ("PGHOST", "localhost"),
        ("PGPORT", &pg.port().to_string()),
        ("PGUSER", USER),
        ("PGDATABASE", USER),
        ("PGSSLMODE", "require"),
        // libpq would first look for Kerberos credentials (gssencmode=prefer),
        // a cost of the client's, not of TLS or of the proxy.
        ("PGGSSENCMODE", "disable"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    pgbench(&direct, &["-i", "-q", "-s", "1"])?;
    let secs = seconds().to_string();
    let args = ["-n", "-C", "-S", "-c", "1", "-j", "1", "-T", &secs];
    let connect_ms = |report: String| figure(&report, "average connection time = ");
    let cpu = AgentCpu::default();
    eprintln!(
        "pgbench {} ({} pairs), average connection time in ms",
        args.join(" "),
        pairs()
    );
    let runs = alternate(
        || connect_ms(cpu.pgbench(&agent, &proxy, &args)?),
        || connect_ms(pgbench(&direct, &args)?),
    )?;
    let added: Vec<f64> = runs.iter().map(|(p, d)| p - d).collect();
    let median_added = median(added.clone());
    eprintln!("added {added:.3?} ms; median added connect latency = {median_added:.3} ms");
    cpu.report("connection");
    assert!(median_added < 1.0, "median added {median_added:.3} ms");
    Ok(())
}

#[test]
#[ignore = "benchmark: bash tokenagent/benches/proxy-pg.sh"]
fn memory_idle_and_with_1000_idle_sessions() -> Result<()> {
    const SESSIONS: usize = 1000;
    raise_own_fd_limit()?;
    let pg = TrustPg::start_with(&[USER], TcpAuth::TlsTrust, 1100)?;
    let mut agent = release_agent()?
        .db(local_proxy_spec(pg.port(), USER))
        .creds(&IssuedCreds::random(0))
        .under(&["/usr/bin/time", "-v"])
        .start()?;
    std::thread::sleep(Duration::from_secs(5));
    let idle = agent.status_kib("VmRSS")?;
    eprintln!("idle in proxy mode: VmRSS {idle} KiB");
    let addr = agent.socket(DEFAULT_DB);
    let mut sessions = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        match pgwire::login(&addr, USER, USER)? {
            Ok(s) => sessions.push(s),
            Err(e) => bail!("{e}"),
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let busy = agent.status_kib("VmRSS")?;
    eprintln!("{SESSIONS} idle sessions: VmRSS {busy} KiB");
    for s in sessions {
        s.terminate();
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = agent.status_kib("VmRSS")?;
    eprintln!("after they closed: VmRSS {after} KiB");
    agent.sigterm()?;
    agent
        .wait(Duration::from_secs(10))?
        .context("the agent did not exit")?;
    let log = agent.log();
    let peak = log
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .context("no time -v report")?;
    eprintln!("/usr/bin/time -v: Maximum resident set size {peak} KiB");
    assert!(idle < 10 * 1024, "idle {idle} KiB");
    assert!(busy < 40 * 1024, "with {SESSIONS} sessions {busy} KiB");
    Ok(())
}
