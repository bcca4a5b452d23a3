//! `failover-consumer`: consumes a change stream on a fake replica set while its primary
//! steps down and another is elected, and checks that every event arrived once, in
//! order. See `brook_examples::failover_consumer`.

use std::process::ExitCode;

use brook_examples::failover_consumer;
use brook_examples::{Args, BoxError, demo_replica_set, within};

const USAGE: &str = "usage: failover-consumer [--events N] [--failover-every K] [--timeout SECONDS]
  Starts a fake three-member replica set, writes N events and fails the primary over
  after every K of them, while consuming; exits 0 when all N arrived once, in order.";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failover-consumer: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let args = Args::parse(std::env::args().skip(1), 100, USAGE)?;
    if args.uri.is_some() {
        return Err(format!("--uri: this program runs its own fake replica set\n{USAGE}").into());
    }
    let every = args.every.unwrap_or(25);
    let (set, uri) = demo_replica_set().await?;
    let report = within(
        args.timeout,
        "failover-consumer",
        failover_consumer::run(&set, &uri, args.events, every),
    )
    .await?;
    println!(
        "{} events, each once and in order, across {} failovers ({} resumes, {} resume attempts)",
        report.received.len(),
        report.failovers,
        report.resumes,
        report.resume_events
    );
    set.shutdown().await;
    Ok(())
}
