//! The whole client against the deployment: handshake, ping, writes, cursors that need
//! several getMores, killCursors on close, and server errors as typed errors.
//!
//! Only behaviour MongoDB and nx-27017 share is asserted here; what nx-27017 does
//! differently (error replies without `code`, getMore on a dead cursor answered with an
//! empty batch instead of CursorNotFound) is accepted in both forms where it is observed,
//! and the MongoDB form is tested on the testkit in `crates/brook/tests/it`.

use brook::{Client, Cursor};
use bson::{Document, doc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use brook_integration_tests::{mongodb_uri, unique_name};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    #[serde(rename = "_id")]
    id: i32,
    label: String,
}

fn items(n: i32) -> Vec<Item> {
    (0..n)
        .map(|id| Item {
            id,
            label: format!("item-{id:04}"),
        })
        .collect()
}

async fn client() -> Client {
    let uri = mongodb_uri();
    Client::connect(&uri)
        .await
        .unwrap_or_else(|e| panic!("connect to {uri}: {e}"))
}

#[tokio::test]
async fn handshake_describes_the_server() {
    let client = client().await;
    // Every server brook talks to speaks OP_MSG (wire version 6 = MongoDB 3.6 and up).
    assert!(
        client.max_wire_version() >= 6,
        "max wire version {}",
        client.max_wire_version()
    );
    assert!(!client.server_address().unwrap().host.is_empty());
    client.shutdown().await;
}

#[tokio::test]
async fn ping_answers_ok() {
    let client = client().await;
    let reply = client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .expect("ping");
    let ok = reply
        .get("ok")
        .and_then(|v| v.as_f64().or(v.as_i32().map(f64::from)));
    assert_eq!(ok, Some(1.0), "ping reply {reply}");
    client.shutdown().await;
}

#[tokio::test]
async fn run_command_leaves_the_users_document_untouched() {
    let client = client().await;
    let command = doc! { "ping": 1 };
    let before = command.clone();
    client
        .database("admin")
        .run_command(command.clone())
        .await
        .expect("ping");
    assert_eq!(command, before);
    client.shutdown().await;
}

#[tokio::test]
async fn insert_then_find_in_small_batches_walks_every_getmore() {
    let client = client().await;
    let db = client.database(&unique_name("it_find"));
    let coll = db.collection::<Item>("items");
    let all = items(50);
    let result = coll.insert_many(all.clone()).await.expect("insert_many");
    assert_eq!(result.inserted_ids.len(), 50);

    let mut cursor: Cursor<Item> = coll
        .find(doc! {})
        // Sorted on a zero-padded string: every server orders strings the same way.
        .sort(doc! { "label": 1 })
        .batch_size(7)
        .await
        .expect("find");
    // The first batch holds at most 7: the other 43 need getMores on an open cursor.
    assert!(
        cursor.buffered_len() <= 7,
        "first batch of {}",
        cursor.buffered_len()
    );
    assert_ne!(
        cursor.id(),
        0,
        "a cursor with 50 documents and batchSize 7 stays open"
    );

    let mut seen = Vec::new();
    let mut batch_sizes_seen = Vec::new();
    while let Some(item) = cursor.try_next().await.expect("next") {
        seen.push(item);
        batch_sizes_seen.push(cursor.buffered_len());
    }
    assert_eq!(seen, all, "every document, in order, once");
    assert!(cursor.is_exhausted());
    // Never more than one batch buffered: the documents came in ceil(50/7) = 8 batches.
    assert!(batch_sizes_seen.iter().all(|&b| b < 7));
    db.run_command(doc! { "dropDatabase": 1 })
        .await
        .expect("drop");
    client.shutdown().await;
}

#[tokio::test]
async fn a_cursor_is_also_a_stream() {
    let client = client().await;
    let db = client.database(&unique_name("it_stream"));
    let coll = db.collection::<Item>("items");
    coll.insert_many(items(12)).await.expect("insert_many");
    let cursor = coll
        .find(doc! { "label": { "$gte": "item-0004" } })
        .sort(doc! { "label": 1 })
        .batch_size(3)
        .await
        .expect("find");
    let ids: Vec<i32> = cursor
        .map(|item| item.expect("item").id)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(ids, (4..12).collect::<Vec<_>>());
    db.run_command(doc! { "dropDatabase": 1 })
        .await
        .expect("drop");
    client.shutdown().await;
}

/// Asks the server for more of cursor `id` behind brook's back. `Some(n)` documents while
/// it lives; `None` once the server no longer has it (CursorNotFound on MongoDB, an empty
/// exhausted batch on nx-27017).
async fn raw_get_more(client: &Client, db: &str, coll: &str, id: i64) -> Option<usize> {
    let reply = client
        .database(db)
        .run_command(doc! { "getMore": id, "collection": coll, "batchSize": 1 })
        .await;
    match reply {
        Err(e) => {
            assert_eq!(e.code(), Some(43), "getMore on a killed cursor: {e}");
            None
        }
        Ok(reply) => {
            let cursor = reply.get_document("cursor").expect("cursor");
            let batch = cursor.get_array("nextBatch").expect("nextBatch").len();
            let alive = cursor
                .get("id")
                .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)))
                != Some(0);
            (alive || batch > 0).then_some(batch)
        }
    }
}

#[tokio::test]
async fn close_kills_the_cursor_on_the_server() {
    let client = client().await;
    let db_name = unique_name("it_kill");
    let db = client.database(&db_name);
    let coll = db.collection::<Item>("items");
    coll.insert_many(items(40)).await.expect("insert_many");

    let mut cursor = coll
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .batch_size(5)
        .await
        .expect("find");
    cursor.try_next().await.expect("first").expect("one item");
    let id = cursor.id();
    assert_ne!(id, 0);
    // Alive on the server before close...
    assert_eq!(raw_get_more(&client, &db_name, "items", id).await, Some(1));
    cursor.close().await.expect("close sends killCursors");
    // ...gone after it.
    assert_eq!(raw_get_more(&client, &db_name, "items", id).await, None);
    db.run_command(doc! { "dropDatabase": 1 })
        .await
        .expect("drop");
    client.shutdown().await;
}

#[tokio::test]
async fn update_and_delete_report_their_counts() {
    let client = client().await;
    let db = client.database(&unique_name("it_write"));
    let coll = db.collection::<Document>("docs");
    coll.insert_one(doc! { "_id": 1, "v": 1 })
        .await
        .expect("insert");
    let updated = coll
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "v": 2 } })
        .await
        .expect("update");
    assert_eq!((updated.matched_count, updated.modified_count), (1, 1));
    let missed = coll
        .update_one(doc! { "_id": 99 }, doc! { "$set": { "v": 2 } })
        .await
        .expect("update nothing");
    assert_eq!(missed.matched_count, 0);
    let found: Vec<Document> = coll
        .find(doc! { "_id": 1 })
        .await
        .expect("find")
        .map(|d| d.expect("doc"))
        .collect()
        .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get_i32("v").ok(), Some(2));
    assert_eq!(
        coll.delete_one(doc! { "_id": 1 })
            .await
            .expect("delete")
            .deleted_count,
        1
    );
    assert_eq!(
        coll.delete_one(doc! { "_id": 1 })
            .await
            .expect("delete")
            .deleted_count,
        0
    );
    db.run_command(doc! { "dropDatabase": 1 })
        .await
        .expect("drop");
    client.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_key_is_a_typed_write_error() {
    let client = client().await;
    let db = client.database(&unique_name("it_dup"));
    let coll = db.collection::<Document>("docs");
    coll.insert_one(doc! { "_id": 7 })
        .await
        .expect("first insert");
    let err = coll
        .insert_one(doc! { "_id": 7 })
        .await
        .expect_err("second insert of _id 7");
    assert!(!err.is_network(), "{err}");
    assert_eq!(err.code(), Some(11000), "{err:?}");
    assert_eq!(err.write_errors().len(), 1, "{err:?}");
    db.run_command(doc! { "dropDatabase": 1 })
        .await
        .expect("drop");
    client.shutdown().await;
}

#[tokio::test]
async fn a_failed_command_is_a_typed_server_error_and_the_client_goes_on() {
    let client = client().await;
    let db = client.database(&unique_name("it_err"));
    let err = db
        .collection::<Document>("docs")
        .aggregate(vec![doc! { "$noSuchStage": 1 }])
        .await
        .expect_err("an unknown stage fails");
    assert!(err.is_server_error(), "{err:?}");
    assert!(!err.is_network(), "{err:?}");
    assert!(
        err.wire_version().is_some(),
        "carries the wire version: {err:?}"
    );
    assert!(
        err.server_message().is_some_and(|m| !m.is_empty()),
        "the server's message: {err:?}"
    );
    // The connection that carried the error is still good.
    db.run_command(doc! { "ping": 1 })
        .await
        .expect("ping after error");
    client.shutdown().await;
}
