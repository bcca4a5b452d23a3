//! Runs a fake replica set on loopback ports and prints its URI, for pointing a change-stream
//! consumer (brook, pymongo, any driver) at it by hand. Optionally it appends an insert event
//! to `test.events` every few milliseconds, and fails over every few milliseconds (the primary
//! steps down, or is killed, or shuts down cleanly, then the next member is elected and a
//! dead member restarted), so that one can watch the consumer resume without losing or
//! repeating an event. It serves until its standard input closes (Ctrl-D)
//! or the given number of seconds has passed.
//!
//! ```text
//! cargo run -p brook-testkit --example fake_replica_set -- [--replica-set NAME] [--members N]
//!     [--events-every MS] [--failover-every MS] [--failover step-down|kill|stop] [--seconds N]
//! ```

use std::time::Duration;

use brook_testkit::{ReplicaSet, ReplicaSetConfig};
use bson::doc;
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = ReplicaSetConfig::new("rs0");
    let mut seconds: Option<u64> = None;
    let mut events_every: Option<u64> = None;
    let mut failover_every: Option<u64> = None;
    let mut style = String::from("step-down");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--replica-set" => config.set_name = args.next().ok_or("--replica-set NAME")?,
            "--members" => config.members = args.next().ok_or("--members N")?.parse()?,
            "--events-every" => {
                events_every = Some(args.next().ok_or("--events-every MS")?.parse()?);
            }
            "--failover-every" => {
                failover_every = Some(args.next().ok_or("--failover-every MS")?.parse()?);
            }
            "--failover" => style = args.next().ok_or("--failover STYLE")?,
            "--seconds" => seconds = Some(args.next().ok_or("--seconds N")?.parse()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let set = ReplicaSet::start(config).await?;
    println!("{}", set.uri());

    let mut events = tokio::time::interval(Duration::from_millis(events_every.unwrap_or(1000)));
    let mut failovers =
        tokio::time::interval(Duration::from_millis(failover_every.unwrap_or(1000)));
    // Both intervals tick at once first: skip that tick.
    events.tick().await;
    failovers.tick().await;
    let stdin_closed = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    let deadline = async {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stdin_closed, deadline);
    let mut next_id = 0i64;
    loop {
        tokio::select! {
            () = &mut stdin_closed => break,
            () = &mut deadline => break,
            _ = events.tick(), if events_every.is_some() => {
                next_id += 1;
                set.insert_event("test.events", doc! { "_id": next_id });
            }
            _ = failovers.tick(), if failover_every.is_some() => {
                let old = set.primary().unwrap_or(0);
                let next = (old + 1) % set.member_count();
                match style.as_str() {
                    "kill" => set.kill(old).await?,
                    "stop" => set.stop(old).await?,
                    _ => set.step_down().await,
                }
                set.elect(next).await?;
                if !set.is_up(old)? {
                    set.restart(old).await?;
                }
                eprintln!("member {next} ({}) is primary", set.hosts()[next]);
            }
        }
    }
    eprintln!("{} events logged", set.events().len());
    set.shutdown().await;
    Ok(())
}
