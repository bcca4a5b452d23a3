//! `outbox-relay`: relays the messages inserted into `app.outbox` to stdout, one JSON line
//! each, at least once. See `brook_examples::outbox_relay`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use brook_examples::outbox_relay;
use brook_examples::{Args, BoxError, demo_replica_set, wait_for_stream, within};

const USAGE: &str =
    "usage: outbox-relay [--uri URI] [--events N] [--checkpoint PATH] [--timeout SECONDS]
  Without --uri: starts a fake replica set and inserts N messages itself.
  With --uri: relays what is inserted into app.outbox there.";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outbox-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let args = Args::parse(std::env::args().skip(1), 10, USAGE)?;
    let mut stdout = std::io::stdout().lock();
    match args.uri {
        Some(uri) => {
            let checkpoint = PathBuf::from(
                args.path
                    .unwrap_or_else(|| "outbox-relay.checkpoint".to_owned()),
            );
            let relay = outbox_relay::run(&uri, &checkpoint, args.events, &mut stdout, false);
            let relayed = within(args.timeout, "outbox-relay", relay).await?;
            eprintln!(
                "relayed {} messages, {} checkpoints saved",
                relayed.ids.len(),
                relayed.saves
            );
        }
        None => {
            let dir = std::env::temp_dir().join(format!("brook-outbox-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let checkpoint = dir.join("outbox-relay.checkpoint");
            let (set, uri) = demo_replica_set().await?;
            let count = i64::try_from(args.events)?;
            let writes = async {
                wait_for_stream(&set, Duration::from_secs(10)).await?;
                outbox_relay::write_messages(&uri, 0, count).await
            };
            let relay = outbox_relay::run(&uri, &checkpoint, args.events, &mut stdout, false);
            let (relayed, ()) = within(args.timeout, "outbox-relay", async {
                tokio::try_join!(relay, writes)
            })
            .await?;
            let expected: Vec<i64> = (0..count).collect();
            if relayed.ids != expected {
                return Err(format!("relayed {:?}, expected {expected:?}", relayed.ids).into());
            }
            eprintln!(
                "relayed {} messages, {} checkpoints saved",
                relayed.ids.len(),
                relayed.saves
            );
            set.shutdown().await;
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}
