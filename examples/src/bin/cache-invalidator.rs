//! `cache-invalidator`: keeps a product cache in step with `shop.products`, continuing
//! from its checkpoint file. See `brook_examples::cache_invalidator`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use brook_examples::cache_invalidator::{self, COLL, Cache, DB, Product};
use brook_examples::{Args, BoxError, demo_replica_set, wait_for_stream, within};
use brook_testkit::shapes;
use bson::{Timestamp, doc};

const USAGE: &str =
    "usage: cache-invalidator [--uri URI] [--events N] [--checkpoint PATH] [--timeout SECONDS]
  Without --uri: starts a fake replica set and changes products itself.
  With --uri: follows shop.products there (update/replace/delete a product to see it).";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cache-invalidator: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let args = Args::parse(std::env::args().skip(1), 3, USAGE)?;
    let mut cache = Cache::default();
    for id in 1..=3 {
        cache.put(Product {
            id,
            name: format!("product {id}"),
            price_cents: 100,
        });
    }
    let limit = args.timeout;
    match args.uri {
        Some(uri) => {
            let checkpoint = PathBuf::from(
                args.path
                    .unwrap_or_else(|| "cache-invalidator.checkpoint".to_owned()),
            );
            let applied = within(
                limit,
                "cache-invalidator",
                cache_invalidator::run(&uri, &checkpoint, args.events, &mut cache),
            )
            .await?;
            check(&applied, args.events)?;
            println!(
                "applied {applied:?}; cache now holds {} products",
                cache.len()
            );
        }
        None => {
            // A fake set is new on every run: so is its checkpoint file.
            let dir = std::env::temp_dir().join(format!("brook-cache-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let checkpoint = dir.join("cache-invalidator.checkpoint");
            let (set, uri) = demo_replica_set().await?;
            let ns = format!("{DB}.{COLL}");
            let at = Timestamp {
                time: 0,
                increment: 0,
            };
            let changes = async {
                wait_for_stream(&set, Duration::from_secs(10)).await?;
                for i in 0..args.events {
                    let id = i32::try_from(i % 3 + 1)?;
                    let price = 100 + i64::try_from(i)?;
                    let product =
                        doc! { "_id": id, "name": format!("product {id}"), "price_cents": price };
                    let event = match i % 3 {
                        0 => shapes::update_event(
                            at,
                            &ns,
                            doc! { "_id": id },
                            doc! { "price_cents": price },
                            &[],
                            Some(Some(product)),
                        ),
                        1 => shapes::replace_event(at, &ns, product),
                        _ => shapes::delete_event(at, &ns, doc! { "_id": id }),
                    };
                    set.append_event(event);
                }
                Ok::<(), BoxError>(())
            };
            let follow = cache_invalidator::run(&uri, &checkpoint, args.events, &mut cache);
            let (applied, ()) = within(limit, "cache-invalidator", async {
                tokio::try_join!(follow, changes)
            })
            .await?;
            check(&applied, args.events)?;
            println!(
                "applied {applied:?}; cache now holds {} products",
                cache.len()
            );
            set.shutdown().await;
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}

/// Every event asked for was applied (a collection dropped under the stream ends it
/// sooner: that is an error here).
fn check(applied: &[cache_invalidator::Applied], events: usize) -> Result<(), BoxError> {
    if applied.len() == events {
        Ok(())
    } else {
        Err(format!("applied {} changes, expected {events}", applied.len()).into())
    }
}
