//! Runs the admission handler (parse, mutate, serialize) N times on one
//! fixture, for instruction counts that do not depend on the machine's load:
//!
//!   bash webhook/benches/instructions.sh
//!
//! Usage: handler_loop N [FIXTURE]   (FIXTURE in webhook/tests/fixtures,
//! default deployment-pod.json). Prints the total response bytes.

use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;

use rds_iam_webhook::config::AgentConfig;
use rds_iam_webhook::review::{review, to_json};

// Same allocator as the rds-iam-webhook binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(Ok(n)) = args.next().map(|a| a.parse::<usize>()) else {
        eprintln!("usage: handler_loop N [FIXTURE]");
        return ExitCode::from(2);
    };
    let name = args
        .next()
        .unwrap_or_else(|| "deployment-pod.json".to_owned());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(&name);
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("handler_loop: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let cfg = AgentConfig::default();
    let mut total = 0;
    for _ in 0..n {
        let answer = review(black_box(&body), &cfg).and_then(|r| to_json(&r));
        match answer {
            Ok(json) => total += json.len(),
            Err(e) => {
                eprintln!("handler_loop: {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{total}");
    ExitCode::SUCCESS
}
