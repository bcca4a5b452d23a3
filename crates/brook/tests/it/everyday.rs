//! The everyday API against the testkit: the exact command each operation sends (fields,
//! `$db`, options, `lsid`, `txnNumber` for the retryable writes on a replica set), how
//! its reply is read, which operations are retried, and odd replies as typed errors.

use std::time::Duration;

use brook::{Client, ReturnDocument};
use brook_testkit::shapes::BatchKind;
use brook_testkit::{Action, FakeServer, Fault, ReceivedCommand, ServerConfig};
use bson::{Bson, Document, doc};
use serde::{Deserialize, Serialize};

async fn server() -> FakeServer {
    FakeServer::start(ServerConfig::replica_set("rs0"))
        .await
        .expect("fake server starts")
}

async fn client_for(server: &FakeServer, query: &str) -> Client {
    let uri = format!(
        "mongodb://{}/?serverSelectionTimeoutMS=5000{query}",
        server.host_port()
    );
    Client::connect(&uri).await.expect("client connects")
}

/// The one `name` command the server got.
fn only(server: &FakeServer, name: &str) -> ReceivedCommand {
    let sent = server.commands_named(name);
    assert_eq!(sent.len(), 1, "one {name}: {sent:?}");
    sent.into_iter().next().expect("one command")
}

fn txn_number(c: &ReceivedCommand) -> Option<i64> {
    match c.body.get("txnNumber") {
        Some(Bson::Int64(n)) => Some(*n),
        None => None,
        Some(other) => panic!("txnNumber must be an int64: {other:?}"),
    }
}

/// The body without what the executor adds to every command.
fn own_fields(c: &ReceivedCommand) -> Document {
    let mut body = c.body.clone();
    for k in ["lsid", "$clusterTime", "txnNumber", "$readPreference"] {
        body.remove(k);
    }
    body
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    #[serde(rename = "_id")]
    id: i32,
    name: String,
}

#[tokio::test]
async fn find_one_sends_limit_1_single_batch_and_decodes_the_first_document() {
    let fake = server().await;
    fake.push_actions(
        "find",
        [
            Action::cursor(
                0,
                "app.items",
                BatchKind::First,
                vec![doc! { "_id": 7, "name": "seven" }],
                None,
                None,
            ),
            Action::cursor(0, "app.items", BatchKind::First, vec![], None, None),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    let found = coll
        .find_one(doc! { "name": { "$exists": true } })
        .sort(doc! { "_id": -1 })
        .projection(doc! { "name": 1 })
        .skip(2)
        .hint("name_1")
        .collation(doc! { "locale": "fr" })
        .max_time(Duration::from_millis(1500))
        .comment("c")
        .await
        .expect("find_one");
    assert_eq!(
        found,
        Some(Item {
            id: 7,
            name: "seven".into()
        })
    );
    let sent = only(&fake, "find");
    assert_eq!(sent.db, "app");
    assert!(sent.body.contains_key("lsid"), "{:?}", sent.body);
    assert_eq!(
        own_fields(&sent),
        doc! {
            "find": "items",
            "filter": { "name": { "$exists": true } },
            "sort": { "_id": -1 },
            "projection": { "name": 1 },
            "hint": "name_1",
            "skip": 2,
            "limit": 1,
            "singleBatch": true,
            "comment": "c",
            "maxTimeMS": 1500,
            "collation": { "locale": "fr" },
            "$db": "app",
        }
    );
    // Nothing matched: None.
    assert_eq!(coll.find_one(doc! {}).await.expect("find_one"), None);
    fake.shutdown().await;
}

#[tokio::test]
async fn find_one_is_a_retryable_read_and_reports_undecodable_documents() {
    let fake = server().await;
    fake.push_actions(
        "find",
        [
            Action::error(91, "ShutdownInProgress", &[]),
            Action::cursor(
                0,
                "app.items",
                BatchKind::First,
                vec![doc! { "_id": 1, "name": "one" }],
                None,
                None,
            ),
            Action::cursor(
                0,
                "app.items",
                BatchKind::First,
                vec![doc! { "_id": "not an int" }],
                None,
                None,
            ),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    let found = coll.find_one(doc! {}).await.expect("retried");
    assert_eq!(found.map(|i| i.id), Some(1));
    assert_eq!(fake.commands_named("find").len(), 2);
    let err = coll.find_one(doc! {}).await.expect_err("a string _id");
    assert!(!err.is_server_error(), "{err}");
    fake.shutdown().await;
}

#[tokio::test]
async fn update_many_sends_multi_and_is_not_retried() {
    let fake = server().await;
    fake.push_actions(
        "update",
        [
            Action::reply(doc! { "n": 3, "nModified": 2, "ok": 1.0 }),
            Action::fault(Fault::CloseWithoutReply),
        ],
    );
    let client = client_for(&fake, "&w=majority").await;
    let coll = client.database("app").collection::<Document>("items");
    let r = coll
        .update_many(doc! { "a": 1 }, doc! { "$set": { "b.$[e]": 2 } })
        .upsert(true)
        .array_filters([doc! { "e": { "$gt": 1 } }])
        .collation(doc! { "locale": "en" })
        .hint(doc! { "a": 1 })
        .await
        .expect("update_many");
    assert_eq!(
        (r.matched_count, r.modified_count, r.upserted_id),
        (3, 2, None)
    );
    let sent = only(&fake, "update");
    assert_eq!(sent.body.get_bool("ordered").ok(), Some(true));
    assert_eq!(
        sent.body.get_document("writeConcern").ok(),
        Some(&doc! { "w": "majority" })
    );
    assert_eq!(txn_number(&sent), None, "update_many is not retryable");
    assert_eq!(
        sent.sequence("updates").expect("updates"),
        &[doc! {
            "q": { "a": 1 },
            "u": { "$set": { "b.$[e]": 2 } },
            "upsert": true,
            "multi": true,
            "collation": { "locale": "en" },
            "arrayFilters": [{ "e": { "$gt": 1 } }],
            "hint": { "a": 1 },
        }]
    );
    // A network error: not retried.
    fake.clear_commands();
    let err = coll
        .update_many(doc! {}, doc! { "$set": { "b": 1 } })
        .await
        .expect_err("not retried");
    assert!(err.is_network(), "{err}");
    assert_eq!(fake.commands_named("update").len(), 1);
    // Not an update document: refused before anything is sent.
    fake.clear_commands();
    let err = coll
        .update_many(doc! {}, doc! { "b": 1 })
        .await
        .expect_err("no operator");
    assert!(err.is_invalid_argument(), "{err}");
    assert!(fake.commands_named("update").is_empty());
    fake.shutdown().await;
}

#[tokio::test]
async fn update_many_with_a_pipeline_reports_the_upsert() {
    let fake = server().await;
    fake.push_action(
        "update",
        Action::reply(
            doc! { "n": 1, "nModified": 0, "upserted": [{ "index": 0, "_id": 5 }], "ok": 1.0 },
        ),
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let r = coll
        .update_many_with_pipeline(doc! { "_id": 5 }, [doc! { "$set": { "x": "$y" } }])
        .upsert(true)
        .await
        .expect("update");
    assert_eq!(r.upserted_id, Some(Bson::Int32(5)));
    assert_eq!(r.matched_count, 0);
    let sent = only(&fake, "update");
    let u = &sent.sequence("updates").expect("updates")[0];
    assert_eq!(u.get_array("u").map(Vec::len).ok(), Some(1));
    fake.shutdown().await;
}

#[tokio::test]
async fn replace_one_is_a_retryable_write_with_a_txn_number() {
    let fake = server().await;
    fake.push_actions(
        "update",
        [
            Action::error(10107, "NotWritablePrimary", &["RetryableWriteError"]),
            Action::reply(doc! { "n": 1, "nModified": 1, "ok": 1.0 }),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    let item = Item {
        id: 1,
        name: "uno".into(),
    };
    let r = coll
        .replace_one(doc! { "_id": 1 }, &item)
        .upsert(true)
        .collation(doc! { "locale": "it" })
        .hint("_id_")
        .await
        .expect("retried");
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    let sent = fake.commands_named("update");
    assert_eq!(sent.len(), 2);
    assert!(txn_number(&sent[0]).is_some(), "{:?}", sent[0].body);
    assert_eq!(txn_number(&sent[0]), txn_number(&sent[1]));
    assert_eq!(
        sent[0].sequence("updates").expect("updates"),
        &[doc! {
            "q": { "_id": 1 },
            "u": { "_id": 1, "name": "uno" },
            "upsert": true,
            "collation": { "locale": "it" },
            "hint": "_id_",
        }]
    );
    // Update operators in a replacement: refused, nothing sent.
    fake.clear_commands();
    let raw = client.database("app").collection::<Document>("items");
    let err = raw
        .replace_one(doc! {}, doc! { "$set": { "a": 1 } })
        .await
        .expect_err("operators");
    assert!(err.is_invalid_argument(), "{err}");
    assert!(fake.commands_named("update").is_empty());
    fake.shutdown().await;
}

#[tokio::test]
async fn delete_many_sends_limit_0_and_is_not_retried() {
    let fake = server().await;
    fake.push_actions(
        "delete",
        [
            Action::reply(doc! { "n": 4, "ok": 1.0 }),
            Action::error(10107, "NotWritablePrimary", &["RetryableWriteError"]),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let r = coll
        .delete_many(doc! { "old": true })
        .collation(doc! { "locale": "de" })
        .hint("old_1")
        .await
        .expect("delete_many");
    assert_eq!(r.deleted_count, 4);
    let sent = only(&fake, "delete");
    assert_eq!(txn_number(&sent), None);
    assert_eq!(
        sent.sequence("deletes").expect("deletes"),
        &[
            doc! { "q": { "old": true }, "limit": 0, "collation": { "locale": "de" }, "hint": "old_1" }
        ]
    );
    fake.clear_commands();
    let err = coll.delete_many(doc! {}).await.expect_err("not retried");
    assert_eq!(err.code(), Some(10107));
    assert_eq!(fake.commands_named("delete").len(), 1);
    fake.shutdown().await;
}

#[tokio::test]
async fn count_documents_aggregates_match_skip_limit_group() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            Action::cursor(
                0,
                "app.items",
                BatchKind::First,
                vec![doc! { "_id": 1, "n": 12 }],
                None,
                None,
            ),
            Action::cursor(0, "app.items", BatchKind::First, vec![], None, None),
            Action::cursor(
                0,
                "app.items",
                BatchKind::First,
                vec![doc! { "_id": 1 }],
                None,
                None,
            ),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let n = coll
        .count_documents(doc! { "a": 1 })
        .skip(5)
        .limit(100)
        .hint("a_1")
        .collation(doc! { "locale": "fr" })
        .max_time(Duration::from_secs(2))
        .comment("count")
        .await
        .expect("count");
    assert_eq!(n, 12);
    let sent = only(&fake, "aggregate");
    assert!(sent.body.contains_key("lsid"));
    assert_eq!(
        own_fields(&sent),
        doc! {
            "aggregate": "items",
            "pipeline": [
                { "$match": { "a": 1 } },
                { "$skip": 5 },
                { "$limit": 100 },
                { "$group": { "_id": 1, "n": { "$sum": 1 } } },
            ],
            "cursor": {},
            "hint": "a_1",
            "collation": { "locale": "fr" },
            "maxTimeMS": 2000,
            "comment": "count",
            "$db": "app",
        }
    );
    // No group document: nothing matched.
    assert_eq!(coll.count_documents(doc! {}).await.expect("count"), 0);
    // A group document without `n`: a clear error, not a zero.
    let err = coll.count_documents(doc! {}).await.expect_err("no n");
    assert!(err.to_string().contains("`n`"), "{err}");
    fake.shutdown().await;
}

#[tokio::test]
async fn estimated_document_count_runs_count_and_is_retried() {
    let fake = server().await;
    fake.push_actions(
        "count",
        [
            Action::fault(Fault::CloseWithoutReply),
            Action::reply(doc! { "n": 42, "ok": 1.0 }),
            Action::reply(doc! { "ok": 1.0 }),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let n = coll
        .estimated_document_count()
        .comment("est")
        .await
        .expect("retried");
    assert_eq!(n, 42);
    let sent = fake.commands_named("count");
    assert_eq!(sent.len(), 2);
    assert_eq!(
        own_fields(&sent[1]),
        doc! { "count": "items", "comment": "est", "$db": "app" }
    );
    let err = coll
        .estimated_document_count()
        .await
        .expect_err("no n in the reply");
    assert!(err.to_string().contains("`n`"), "{err}");
    fake.shutdown().await;
}

#[tokio::test]
async fn distinct_returns_the_values() {
    let fake = server().await;
    fake.push_actions(
        "distinct",
        [
            Action::reply(doc! { "values": ["a", 2, null], "ok": 1.0 }),
            Action::reply(doc! { "ok": 1.0 }),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let values = coll
        .distinct("tag", doc! { "on": true })
        .collation(doc! { "locale": "fr" })
        .hint("tag_1")
        .await
        .expect("distinct");
    assert_eq!(values, vec![Bson::from("a"), Bson::Int32(2), Bson::Null]);
    let sent = only(&fake, "distinct");
    assert_eq!(
        own_fields(&sent),
        doc! {
            "distinct": "items",
            "key": "tag",
            "query": { "on": true },
            "hint": "tag_1",
            "collation": { "locale": "fr" },
            "$db": "app",
        }
    );
    let err = coll.distinct("tag", doc! {}).await.expect_err("no values");
    assert!(err.to_string().contains("values"), "{err}");
    fake.shutdown().await;
}

#[tokio::test]
async fn find_one_and_update_sends_find_and_modify_with_a_txn_number() {
    let fake = server().await;
    fake.push_actions(
        "findAndModify",
        [
            Action::fault(Fault::CloseWithoutReply),
            Action::reply(doc! {
                "lastErrorObject": { "n": 1, "updatedExisting": true },
                "value": { "_id": 3, "name": "after" },
                "ok": 1.0,
            }),
            Action::reply(doc! { "value": null, "ok": 1.0 }),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    let got = coll
        .find_one_and_update(doc! { "_id": 3 }, doc! { "$set": { "name": "after" } })
        .upsert(true)
        .return_document(ReturnDocument::After)
        .sort(doc! { "_id": 1 })
        .projection(doc! { "name": 1 })
        .array_filters([doc! { "x": 1 }])
        .collation(doc! { "locale": "fr" })
        .hint("_id_")
        .comment("fam")
        .bypass_document_validation(true)
        .await
        .expect("retried");
    assert_eq!(
        got,
        Some(Item {
            id: 3,
            name: "after".into()
        })
    );
    let sent = fake.commands_named("findAndModify");
    assert_eq!(sent.len(), 2);
    assert!(txn_number(&sent[0]).is_some());
    assert_eq!(txn_number(&sent[0]), txn_number(&sent[1]));
    assert_eq!(sent[0].body.get("lsid"), sent[1].body.get("lsid"));
    assert_eq!(
        own_fields(&sent[1]),
        doc! {
            "findAndModify": "items",
            "query": { "_id": 3 },
            "sort": { "_id": 1 },
            "update": { "$set": { "name": "after" } },
            "new": true,
            "fields": { "name": 1 },
            "upsert": true,
            "bypassDocumentValidation": true,
            "collation": { "locale": "fr" },
            "arrayFilters": [{ "x": 1 }],
            "hint": "_id_",
            "comment": "fam",
            "$db": "app",
        }
    );
    // Nothing matched: None; the default returns the document before (no `new`).
    fake.clear_commands();
    let got = coll
        .find_one_and_update(doc! { "_id": 4 }, doc! { "$set": { "name": "x" } })
        .await
        .expect("fam");
    assert_eq!(got, None);
    let sent = only(&fake, "findAndModify");
    assert!(!sent.body.contains_key("new") && !sent.body.contains_key("upsert"));
    // Not an update document: refused before anything is sent.
    fake.clear_commands();
    let err = coll
        .find_one_and_update(doc! {}, doc! { "name": "x" })
        .await
        .expect_err("no operator");
    assert!(err.is_invalid_argument(), "{err}");
    assert!(fake.commands_named("findAndModify").is_empty());
    fake.shutdown().await;
}

#[tokio::test]
async fn find_one_and_replace_and_delete() {
    let fake = server().await;
    fake.push_actions(
        "findAndModify",
        [
            Action::reply(doc! { "value": { "_id": 1, "name": "before" }, "ok": 1.0 }),
            Action::reply(doc! { "value": { "_id": 2, "name": "gone" }, "ok": 1.0 }),
            Action::reply(doc! {
                "value": null,
                "writeConcernError": { "code": 64, "codeName": "WriteConcernFailed", "errmsg": "timed out" },
                "ok": 1.0,
            }),
            Action::reply(doc! { "value": 5, "ok": 1.0 }),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    let replacement = Item {
        id: 1,
        name: "after".into(),
    };
    let got = coll
        .find_one_and_replace(doc! { "_id": 1 }, &replacement)
        .return_document(ReturnDocument::Before)
        .await
        .expect("replace");
    assert_eq!(got.map(|i| i.name), Some("before".to_owned()));
    let got = coll
        .find_one_and_delete(doc! { "_id": 2 })
        .sort(doc! { "_id": -1 })
        .max_time(Duration::from_millis(300))
        .await
        .expect("delete");
    assert_eq!(got.map(|i| i.name), Some("gone".to_owned()));
    let sent = fake.commands_named("findAndModify");
    assert_eq!(
        own_fields(&sent[0]),
        doc! {
            "findAndModify": "items",
            "query": { "_id": 1 },
            "update": { "_id": 1, "name": "after" },
            "$db": "app",
        }
    );
    assert_eq!(
        own_fields(&sent[1]),
        doc! {
            "findAndModify": "items",
            "query": { "_id": 2 },
            "sort": { "_id": -1 },
            "remove": true,
            "maxTimeMS": 300,
            "$db": "app",
        }
    );
    assert!(txn_number(&sent[0]).is_some() && txn_number(&sent[1]).is_some());
    // A write concern error is an error.
    let err = coll
        .find_one_and_delete(doc! {})
        .await
        .expect_err("write concern error");
    assert_eq!(err.code(), Some(64), "{err}");
    // A `value` that is no document: a typed error, no panic.
    let err = coll.find_one_and_delete(doc! {}).await.expect_err("odd");
    assert!(err.to_string().contains("value"), "{err}");
    fake.shutdown().await;
}

#[tokio::test]
async fn index_management_commands() {
    let fake = server().await;
    fake.push_actions(
        "createIndexes",
        [
            Action::reply(doc! { "numIndexesBefore": 1, "numIndexesAfter": 2, "ok": 1.0 }),
            Action::reply(doc! { "ok": 1.0 }),
        ],
    );
    fake.push_actions(
        "dropIndexes",
        [
            Action::reply(doc! { "nIndexesWas": 3, "ok": 1.0 }),
            Action::reply(doc! { "nIndexesWas": 2, "ok": 1.0 }),
            Action::error(27, "IndexNotFound", &[]),
        ],
    );
    fake.push_action(
        "listIndexes",
        Action::cursor(
            0,
            "app.items",
            BatchKind::First,
            vec![
                doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" },
                doc! { "v": 2, "key": { "a": 1, "b": -1 }, "name": "a_1_b_-1" },
            ],
            None,
            None,
        ),
    );
    let client = client_for(&fake, "&w=1").await;
    let coll = client.database("app").collection::<Document>("items");
    let r = coll
        .create_index(doc! { "a": 1, "b": -1 })
        .unique(true)
        .sparse(false)
        .expire_after(Duration::from_secs(3600))
        .partial_filter_expression(doc! { "a": { "$exists": true } })
        .await
        .expect("create_index");
    assert_eq!(r.index_name, "a_1_b_-1");
    let r = coll
        .create_index(doc! { "t": "text" })
        .name("by_text")
        .option("weights", doc! { "t": 2 })
        .await
        .expect("named");
    assert_eq!(r.index_name, "by_text");
    let sent = fake.commands_named("createIndexes");
    assert_eq!(
        own_fields(&sent[0]),
        doc! {
            "createIndexes": "items",
            "indexes": [{
                "key": { "a": 1, "b": -1 },
                "name": "a_1_b_-1",
                "unique": true,
                "sparse": false,
                "expireAfterSeconds": 3600,
                "partialFilterExpression": { "a": { "$exists": true } },
            }],
            "writeConcern": { "w": 1i64 },
            "$db": "app",
        }
    );
    assert_eq!(
        sent[1].body.get_array("indexes").expect("indexes")[0],
        Bson::Document(doc! { "key": { "t": "text" }, "name": "by_text", "weights": { "t": 2 } })
    );
    assert!(sent.iter().all(|c| txn_number(c).is_none()));

    coll.drop_index("a_1_b_-1").await.expect("drop_index");
    coll.drop_indexes().await.expect("drop_indexes");
    let err = coll.drop_index("nope").await.expect_err("not found");
    assert_eq!(err.code(), Some(27));
    let sent = fake.commands_named("dropIndexes");
    assert_eq!(
        own_fields(&sent[0]),
        doc! { "dropIndexes": "items", "index": "a_1_b_-1", "writeConcern": { "w": 1i64 }, "$db": "app" }
    );
    assert_eq!(sent[1].body.get_str("index").ok(), Some("*"));
    assert_eq!(sent.len(), 3, "an IndexNotFound is not retried");

    let names = coll.list_index_names().await.expect("list");
    assert_eq!(names, ["_id_", "a_1_b_-1"]);
    let sent = only(&fake, "listIndexes");
    assert_eq!(
        own_fields(&sent),
        doc! { "listIndexes": "items", "cursor": {}, "$db": "app" }
    );
    let err = coll
        .create_index(doc! {})
        .await
        .expect_err("an index needs keys");
    assert!(err.is_invalid_argument());
    fake.shutdown().await;
}

#[tokio::test]
async fn list_indexes_follows_the_cursor_with_getmore() {
    let fake = server().await;
    fake.push_action(
        "listIndexes",
        Action::cursor(
            77,
            "app.items",
            BatchKind::First,
            vec![doc! { "v": 2, "key": { "_id": 1 }, "name": "_id_" }],
            None,
            None,
        ),
    );
    fake.push_action(
        "getMore",
        Action::cursor(
            0,
            "app.items",
            BatchKind::Next,
            vec![doc! { "v": 2, "key": { "a": 1 }, "name": "a_1" }],
            None,
            None,
        ),
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut cursor = coll
        .list_indexes()
        .batch_size(1)
        .comment("ix")
        .await
        .expect("list");
    let mut names = Vec::new();
    while let Some(ix) = cursor.try_next().await.expect("next") {
        names.push(ix.get_str("name").expect("name").to_owned());
    }
    assert_eq!(names, ["_id_", "a_1"]);
    let gm = only(&fake, "getMore");
    assert_eq!(gm.body.get_i64("getMore").ok(), Some(77));
    assert_eq!(gm.body.get_str("collection").ok(), Some("items"));
    assert_eq!(gm.body.get_i32("batchSize").ok(), Some(1));
    // The getMore inherits the comment on the server: it is not sent again.
    assert!(!gm.body.contains_key("comment"), "{:?}", gm.body);
    let li = only(&fake, "listIndexes");
    assert_eq!(li.body.get_str("comment").ok(), Some("ix"));
    assert_eq!(li.body.get("lsid"), gm.body.get("lsid"));
    fake.shutdown().await;
}

#[tokio::test]
async fn list_collections_and_databases() {
    let fake = server().await;
    fake.push_actions(
        "listCollections",
        [
            Action::fault(Fault::CloseWithoutReply),
            Action::cursor(
                0,
                "app.$cmd.listCollections",
                BatchKind::First,
                vec![
                    doc! { "name": "a", "type": "collection" },
                    doc! { "name": "b", "type": "view" },
                ],
                None,
                None,
            ),
            Action::cursor(
                0,
                "app.$cmd.listCollections",
                BatchKind::First,
                vec![doc! { "name": "a", "type": "collection" }],
                None,
                None,
            ),
        ],
    );
    fake.push_actions(
        "listDatabases",
        [
            Action::reply(doc! {
                "databases": [
                    { "name": "admin", "sizeOnDisk": 40960i64, "empty": false },
                    { "name": "app", "sizeOnDisk": 8192, "empty": false },
                ],
                "totalSize": 49152,
                "ok": 1.0,
            }),
            Action::reply(
                doc! { "databases": [{ "name": "admin" }, { "name": "app" }], "ok": 1.0 },
            ),
            Action::reply(doc! { "totalSize": 0, "ok": 1.0 }),
        ],
    );
    let client = client_for(&fake, "").await;
    let db = client.database("app");
    let mut cursor = db
        .list_collections()
        .filter(doc! { "type": { "$ne": "system" } })
        .authorized_collections(true)
        .await
        .expect("a retried read");
    let mut names = Vec::new();
    while let Some(c) = cursor.try_next().await.expect("next") {
        names.push(c.get_str("name").expect("name").to_owned());
    }
    assert_eq!(names, ["a", "b"]);
    assert_eq!(db.list_collection_names().await.expect("names"), ["a"]);
    let sent = fake.commands_named("listCollections");
    assert_eq!(sent.len(), 3);
    assert_eq!(
        own_fields(&sent[1]),
        doc! {
            "listCollections": 1,
            "filter": { "type": { "$ne": "system" } },
            "authorizedCollections": true,
            "cursor": {},
            "$db": "app",
        }
    );
    assert_eq!(sent[2].body.get_bool("nameOnly").ok(), Some(true));

    let dbs = client.list_databases().await.expect("list_databases");
    assert_eq!(dbs.len(), 2);
    assert_eq!(dbs[0].name, "admin");
    assert_eq!(dbs[0].size_on_disk, Some(40960));
    assert_eq!(dbs[1].empty, Some(false));
    assert_eq!(
        client.list_database_names().await.expect("names"),
        ["admin", "app"]
    );
    let sent = fake.commands_named("listDatabases");
    assert_eq!(sent[0].db, "admin");
    assert_eq!(
        own_fields(&sent[0]),
        doc! { "listDatabases": 1, "$db": "admin" }
    );
    assert_eq!(
        own_fields(&sent[1]),
        doc! { "listDatabases": 1, "nameOnly": true, "$db": "admin" }
    );
    let err = client.list_databases().await.expect_err("no databases");
    assert!(err.to_string().contains("databases"), "{err}");
    fake.shutdown().await;
}

#[tokio::test]
async fn timeout_ms_bounds_the_everyday_operations() {
    let fake = server().await;
    fake.push_action("count", Action::reply(doc! { "n": 1, "ok": 1.0 }));
    fake.push_action(
        "findAndModify",
        Action::delay(
            Duration::from_millis(2000),
            Action::reply(doc! { "value": null, "ok": 1.0 }),
        ),
    );
    let client = client_for(&fake, "&timeoutMS=5000").await;
    let coll = client.database("app").collection::<Document>("items");
    // Under timeoutMS the legacy maxTimeMS gives way to the computed one.
    coll.estimated_document_count()
        .max_time(Duration::from_secs(60))
        .await
        .expect("count");
    let sent = only(&fake, "count");
    let ms = sent.body.get_i64("maxTimeMS").expect("computed maxTimeMS");
    assert!(ms > 0 && ms <= 5000, "{ms}");
    // A builder's own timeout wins over the client's.
    let err = coll
        .find_one_and_delete(doc! {})
        .timeout(Duration::from_millis(200))
        .await
        .expect_err("times out");
    assert!(err.is_timeout(), "{err}");
    let sent = only(&fake, "findAndModify");
    let ms = sent.body.get_i64("maxTimeMS").expect("computed maxTimeMS");
    assert!(ms <= 200, "{ms}");
    fake.shutdown().await;
}

#[tokio::test]
async fn aggregate_takes_any_iterator_of_stages() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            Action::cursor(0, "app.items", BatchKind::First, vec![], None, None),
            Action::cursor(
                0,
                "app.$cmd.aggregate",
                BatchKind::First,
                vec![],
                None,
                None,
            ),
        ],
    );
    let client = client_for(&fake, "").await;
    let db = client.database("app");
    let coll = db.collection::<Document>("items");
    // An array, then an iterator: no Vec needed.
    coll.aggregate([doc! { "$match": { "a": 1 } }, doc! { "$limit": 2 }])
        .await
        .expect("aggregate");
    db.aggregate(std::iter::once(doc! { "$currentOp": {} }))
        .await
        .expect("aggregate");
    // The change stream builder takes the same.
    let _builder = client.watch().pipeline([doc! { "$match": {} }]);
    let sent = fake.commands_named("aggregate");
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].body.get_array("pipeline").ok(),
        Some(&vec![
            Bson::Document(doc! { "$match": { "a": 1 } }),
            Bson::Document(doc! { "$limit": 2 }),
        ])
    );
    assert_eq!(sent[1].body.get_i32("aggregate").ok(), Some(1));
    assert_eq!(
        sent[1].body.get_array("pipeline").map(Vec::len).ok(),
        Some(1)
    );
    fake.shutdown().await;
}
