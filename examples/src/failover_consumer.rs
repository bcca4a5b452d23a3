//! A failover-safe consumer, tried against the testkit's fake replica set: while it
//! consumes, the primary steps down, the set stays without a primary for a moment, and
//! another member is elected — again and again.
//!
//! The consumer needs nothing special: brook's stream resumes after the step-down's
//! error (a getMore refused with NotWritablePrimary or a closed connection) with its last
//! token on whichever member is primary next, and [`ResumePolicy::backoff`] makes it
//! retry a resume that fails while there is no primary instead of giving up. Every
//! event arrives once, in order: [`run`] checks it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use brook::{ChangeStreamEvent, Client, ResumePolicy};
use brook_testkit::ReplicaSet;
use bson::{Document, doc};

use crate::BoxError;

/// The namespace the events are written to.
pub const NS: &str = "app.items";

/// What a run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The `n` of each event received, in order (`0..events` on success).
    pub received: Vec<i64>,
    /// How many failovers happened while consuming.
    pub failovers: usize,
    /// How many times the stream resumed.
    pub resumes: u64,
    /// How many resume attempts the policy reported (`on_resume`).
    pub resume_events: u64,
}

/// Consumes `events` events of `app.items` from the replica set `set` (at `uri`) while a
/// writer appends them and fails the primary over after every `failover_every` of them
/// (step down, 300 ms without a primary, elect the next member). Fails unless every
/// event arrived exactly once, in order.
pub async fn run(
    set: &ReplicaSet,
    uri: &str,
    events: usize,
    failover_every: usize,
) -> Result<Report, BoxError> {
    let client = Client::connect(uri).await?;
    let items = client.database("app").collection::<Document>("items");
    let attempts = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&attempts);
    let mut stream = items
        .watch()
        .max_await_time(Duration::from_millis(200))
        .resume_policy(
            ResumePolicy::backoff()
                .initial_delay(Duration::from_millis(50))
                .max_delay(Duration::from_secs(1))
                .max_elapsed(Some(Duration::from_secs(30))),
        )
        .on_resume(move |_attempt| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .await?;

    let writer = async {
        let mut failovers = 0;
        for n in 0..events {
            set.insert_event(NS, doc! { "_id": n as i64, "n": n as i64 });
            if failover_every > 0 && (n + 1) % failover_every == 0 && n + 1 < events {
                let old = set.primary().ok_or("no primary to step down")?;
                set.step_down().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                set.elect((old + 1) % set.member_count()).await?;
                failovers += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok::<usize, BoxError>(failovers)
    };
    let reader = async {
        let mut received = Vec::with_capacity(events);
        while received.len() < events {
            let event: ChangeStreamEvent<Document> = match stream.next().await {
                Some(event) => event?,
                None => return Err("the stream ended".into()),
            };
            let n = event
                .full_document
                .as_ref()
                .and_then(|d| d.get_i64("n").ok())
                .ok_or("an event without fullDocument.n")?;
            received.push(n);
        }
        Ok::<Vec<i64>, BoxError>(received)
    };
    let (failovers, received) = tokio::try_join!(writer, reader)?;

    let expected: Vec<i64> = (0..events as i64).collect();
    if received != expected {
        return Err(format!("events lost or repeated: got {received:?}").into());
    }
    let report = Report {
        received,
        failovers,
        resumes: stream.resume_count(),
        resume_events: attempts.load(Ordering::Relaxed),
    };
    stream.close().await.ok(); // the cursor may be on a member that stepped down
    client.shutdown().await;
    Ok(report)
}
