//! `audit-log`: appends every change to the `app` database, undecoded, to a BSON file.
//! See `brook_examples::audit_log`.

use std::io::BufWriter;
use std::process::ExitCode;
use std::time::Duration;

use brook::bson::{Document, doc};
use brook_examples::audit_log;
use brook_examples::{Args, BoxError, demo_replica_set, wait_for_stream, within};

const USAGE: &str = "usage: audit-log [--uri URI] [--events N] [--out PATH] [--timeout SECONDS]
  Appends N change events of the app database to PATH (default audit.bson), as BSON.
  Without --uri: starts a fake replica set and writes to app.users and app.orders itself.";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audit-log: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let args = Args::parse(std::env::args().skip(1), 6, USAGE)?;
    let path = args.path.unwrap_or_else(|| "audit.bson".to_owned());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let mut log = BufWriter::new(file);
    let counts = match args.uri {
        Some(uri) => {
            within(
                args.timeout,
                "audit-log",
                audit_log::run(&uri, args.events, &mut log),
            )
            .await?
        }
        None => {
            let (set, uri) = demo_replica_set().await?;
            let writes = async {
                wait_for_stream(&set, Duration::from_secs(10)).await?;
                let client = brook::Client::connect(&uri).await?;
                let app = client.database(audit_log::DB);
                for i in 0..args.events {
                    let coll = if i % 2 == 0 { "users" } else { "orders" };
                    app.collection::<Document>(coll)
                        .insert_one(doc! { "_id": i64::try_from(i)? })
                        .await?;
                }
                client.shutdown().await;
                Ok::<(), BoxError>(())
            };
            let audit = audit_log::run(&uri, args.events, &mut log);
            let (counts, ()) = within(args.timeout, "audit-log", async {
                tokio::try_join!(audit, writes)
            })
            .await?;
            set.shutdown().await;
            counts
        }
    };
    let written: usize = counts.values().sum();
    if written != args.events {
        return Err(format!("wrote {written} events, expected {}", args.events).into());
    }
    println!("appended {written} events to {path}: {counts:?}");
    Ok(())
}
