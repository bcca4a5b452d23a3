//! An outbox relay: messages inserted into `app.outbox` (in the same transaction as the
//! business write, in a real service) are relayed, at least once, to a sink — here one
//! JSON line per message on stdout.
//!
//! It reads whole batches with [`ChangeStream::next_batch`](brook::ChangeStream::next_batch),
//! writes and flushes every message of a batch, and only then saves the batch's
//! checkpoint, once ([`Checkpoint::of_batch`]): one fsynced save per batch rather than per
//! message. A crash after the write and before the save sends that batch again on
//! restart (at-least-once: consumers deduplicate on the message `_id`); nothing is ever
//! skipped, and a clean restart sends nothing twice.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use brook::checkpoint::{Checkpoint, CheckpointStore, FileCheckpoint};
use brook::{ChangeStreamEvent, Client};
use bson::{Bson, Document, doc};
use serde::{Deserialize, Serialize};

use crate::BoxError;

/// The database of the outbox.
pub const DB: &str = "app";
/// The outbox collection.
pub const COLL: &str = "outbox";

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The message's `_id`: consumers deduplicate on it.
    #[serde(rename = "_id")]
    pub id: i64,
    /// Where it goes.
    pub topic: String,
    /// What it says.
    pub payload: Document,
}

/// What a run relayed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relayed {
    /// The `_id`s of the messages written to the sink, in order.
    pub ids: Vec<i64>,
    /// How many batches `next_batch` returned (empty ones included).
    pub batches: usize,
    /// How many checkpoints were saved (one per batch with a token).
    pub saves: usize,
}

/// Relays the messages inserted into `app.outbox` on `uri` to `sink`, one JSON line
/// each, starting after the checkpoint in `checkpoint` (from now if there is none), until
/// at least `messages` were written (the last batch is always finished). With
/// `crash_before_save`, the run stops after writing its first batch without saving its
/// checkpoint, as a process killed at that moment would.
pub async fn run(
    uri: &str,
    checkpoint: &Path,
    messages: usize,
    sink: &mut impl Write,
    crash_before_save: bool,
) -> Result<Relayed, BoxError> {
    let client = Client::connect(uri).await?;
    let outbox = client.database(DB).collection::<Message>(COLL);
    let mut store = FileCheckpoint::new(checkpoint)?;
    let watch = outbox
        .watch()
        .pipeline(vec![doc! { "$match": { "operationType": "insert" } }])
        .max_await_time(Duration::from_millis(500));
    let watch = match store.load().await? {
        Some(saved) => saved.apply_to(watch),
        None => watch,
    };
    let mut stream = watch.await?;

    let mut relayed = Relayed::default();
    while relayed.ids.len() < messages {
        if !stream.is_alive() {
            return Err("the stream ended before enough messages came".into());
        }
        let batch = stream.next_batch().await?;
        relayed.batches += 1;
        for event in batch.events() {
            let message = message_of(event)?;
            writeln!(sink, "{}", to_json_line(message))?;
            relayed.ids.push(message.id);
        }
        sink.flush()?;
        if crash_before_save && !batch.is_empty() {
            return Ok(relayed); // "killed" here: the batch is out, its checkpoint is not
        }
        // Every message of the batch is out: the batch's token (also after an empty
        // batch, whose postBatchResumeToken moved on) is where to continue.
        if let Some(next) = Checkpoint::of_batch(&batch) {
            store.save(&next).await?;
            relayed.saves += 1;
        }
    }
    stream.close().await?;
    client.shutdown().await;
    Ok(relayed)
}

fn message_of(event: &ChangeStreamEvent<Message>) -> Result<&Message, BoxError> {
    event
        .full_document
        .as_ref()
        .ok_or_else(|| "an insert event without fullDocument".into())
}

/// `{"id":…,"topic":…,"payload":{…}}` (the payload in relaxed extended JSON).
pub fn to_json_line(message: &Message) -> String {
    let payload = Bson::Document(message.payload.clone()).into_relaxed_extjson();
    serde_json::json!({ "id": message.id, "topic": message.topic, "payload": payload }).to_string()
}

/// Inserts `count` messages numbered from `first` into `app.outbox` on `uri`, through
/// brook (`insert_one`), each a little after the other.
pub async fn write_messages(uri: &str, first: i64, count: i64) -> Result<(), BoxError> {
    let client = Client::connect(uri).await?;
    let outbox = client.database(DB).collection::<Message>(COLL);
    for id in first..first + count {
        let message = Message {
            id,
            topic: if id % 2 == 0 { "orders" } else { "billing" }.to_owned(),
            payload: doc! { "order": id * 10, "status": "created" },
        };
        outbox.insert_one(message).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client.shutdown().await;
    Ok(())
}
