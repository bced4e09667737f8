//! The webhook↔agent contract round trip: for every AdmissionReview fixture
//! the webhook injects, the agent container's env, read by the agent's own
//! command line (each variable given to the flag whose env twin it is),
//! gives back exactly the databases and settings the webhook planned.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser};
use k8s_openapi::api::core::v1::Pod;
use rds_iam_e2e::pgrds::repo_root;
use rds_iam_tokenagent::cli::Cli;
use rds_iam_webhook::config::AgentConfig;
use rds_iam_webhook::mutate::{decide, Decision};
use rds_iam_webhook::render::AGENT_CONTAINER;

fn fixtures() -> Result<Vec<PathBuf>> {
    let dir = repo_root().join("webhook/tests/fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    v.retain(|p| p.extension().is_some_and(|e| e == "json"));
    v.sort();
    Ok(v)
}

/// `--flag value` for each env variable that is the env twin of an agent flag.
fn args_from_env(env: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let cmd = Cli::command();
    let mut args = vec!["rds-iam-tokenagent".to_owned()];
    for (name, value) in env {
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
        else {
            continue;
        };
        let long = arg.get_long().context("an env twin without a long flag")?;
        args.push(format!("--{long}={value}"));
    }
    Ok(args)
}

#[test]
fn the_agent_reads_back_what_the_webhook_writes() -> Result<()> {
    let cfg = AgentConfig::default();
    let mut checked = 0;
    for path in fixtures()? {
        let review: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let pod: rds_iam_webhook::pod::Pod =
            serde_json::from_value(review["request"]["object"].clone())?;
        let Ok(Decision::Inject(plan)) = decide(&pod, &cfg) else {
            continue;
        };
        let patched = {
            let mut v = review["request"]["object"].clone();
            json_patch::patch(&mut v, &rds_iam_webhook::render::render(&plan).0)?;
            serde_json::from_value::<Pod>(v)?
        };
        let agent = patched
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .find(|c| c.name == AGENT_CONTAINER)
            .context("no agent")?;
        let mut env = BTreeMap::new();
        for e in agent.env.iter().flatten() {
            let Some(v) = &e.value else { continue };
            // The kubelet turns `$$` back into `$`; the contract's values hold none.
            if v.contains('$') && !e.name.starts_with("AWS_") {
                bail!("{}: {} holds a '$': {v}", path.display(), e.name);
            }
            env.insert(e.name.clone(), v.replace("$$", "$"));
        }
        let args = args_from_env(&env)?;
        let cli =
            Cli::try_parse_from(&args).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let got = cli
            .run
            .into_config(|k| env.get(k).cloned())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        assert_eq!(got.databases, plan.databases, "{}", path.display());
        assert_eq!(got.dir, PathBuf::from(rds_iam_webhook::plan::DIR));
        if let Some(i) = plan.interval {
            assert_eq!(got.interval, i, "{}", path.display());
        }
        let ca = plan
            .ca
            .as_ref()
            .map(|c| PathBuf::from(format!("{}/{}", rds_iam_webhook::plan::CA_DIR, c.key)));
        assert_eq!(got.proxy.ca_file, ca, "{}", path.display());
        if let Some(d) = plan.max_sigterm_delay {
            assert_eq!(got.proxy.max_sigterm_delay, d, "{}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} fixtures were injected");
    Ok(())
}
