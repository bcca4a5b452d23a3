//! The everyday API against the deployment: `find_one`, the counts, `distinct`,
//! `update_many`, `replace_one`, `delete_many`, the `find_one_and_*` family, indexes and
//! the listings.
//!
//! Only what nx-27017 does as MongoDB does is asserted here. Where it deviates (see
//! `docs/nx-27017.md`), the MongoDB behaviour is tested on the testkit in
//! `crates/brook/tests/it/everyday.rs`:
//! - an update reply's `upserted` is a scalar, not `[{index, _id}]`: no upserts through
//!   `update_many` / `replace_one` here;
//! - `findAndModify` with a replacement turns an integer `_id` into a string: the replaced
//!   document's other fields are checked, not its `_id`;
//! - index names and key directions are its own (`idx_<coll>_<fields>`) and
//!   `dropIndexes` by name leaves the index: `create_index` and `list_indexes` are
//!   checked by count, `drop_index` only on the testkit;
//! - `listCollections` ignores its `filter`: the filter is checked on the testkit.

use brook::{Client, Collection, Database, ReturnDocument};
use bson::{Bson, Document, doc};

use brook_integration_tests::{mongodb_uri, unique_name};

async fn client() -> Client {
    let uri = mongodb_uri();
    Client::connect(&uri)
        .await
        .unwrap_or_else(|e| panic!("connect to {uri}: {e}"))
}

/// A fresh database with `items` holding `_id` 0..10, `k = _id % 3`, `tag = t<_id % 2>`.
async fn seeded(client: &Client, prefix: &str) -> (Database, Collection<Document>) {
    let db = client.database(&unique_name(prefix));
    let coll = db.collection::<Document>("items");
    let docs: Vec<Document> = (0..10)
        .map(|i| doc! { "_id": i, "k": i % 3, "tag": format!("t{}", i % 2) })
        .collect();
    coll.insert_many(docs).await.expect("insert_many");
    (db, coll)
}

async fn drop(db: &Database) {
    db.run_command(doc! { "dropDatabase": 1 })
        .await
        .expect("dropDatabase");
}

#[tokio::test]
async fn find_one_counts_and_distinct() {
    let client = client().await;
    let (db, coll) = seeded(&client, "it_everyday_reads").await;

    let last = coll
        .find_one(doc! {})
        .sort(doc! { "_id": -1 })
        .projection(doc! { "k": 1 })
        .await
        .expect("find_one")
        .expect("a document");
    assert_eq!(last, doc! { "_id": 9, "k": 0 });
    let second_k1 = coll
        .find_one(doc! { "k": 1 })
        .sort(doc! { "_id": 1 })
        .skip(1)
        .await
        .expect("find_one");
    assert_eq!(second_k1.and_then(|d| d.get_i32("_id").ok()), Some(4));
    assert_eq!(
        coll.find_one(doc! { "k": 99 }).await.expect("find_one"),
        None
    );

    assert_eq!(
        coll.count_documents(doc! { "k": 1 }).await.expect("count"),
        3
    );
    assert_eq!(
        coll.count_documents(doc! {})
            .skip(2)
            .limit(5)
            .await
            .expect("count"),
        5
    );
    assert_eq!(
        coll.count_documents(doc! { "k": 99 }).await.expect("count"),
        0
    );
    assert_eq!(coll.estimated_document_count().await.expect("estimate"), 10);

    let mut ks = coll.distinct("k", doc! {}).await.expect("distinct");
    ks.sort_by_key(|v| v.as_i32());
    assert_eq!(ks, vec![Bson::Int32(0), Bson::Int32(1), Bson::Int32(2)]);
    let mut tags = coll
        .distinct("tag", doc! { "k": 0 })
        .await
        .expect("distinct");
    tags.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    assert_eq!(tags, vec![Bson::from("t0"), Bson::from("t1")]);
    drop(&db).await;
    client.shutdown().await;
}

#[tokio::test]
async fn update_many_replace_one_delete_many() {
    let client = client().await;
    let (db, coll) = seeded(&client, "it_everyday_writes").await;

    let r = coll
        .update_many(doc! { "k": 0 }, doc! { "$set": { "z": 1 } })
        .await
        .expect("update_many");
    assert_eq!((r.matched_count, r.modified_count), (4, 4));
    assert_eq!(r.upserted_id, None);
    assert_eq!(
        coll.count_documents(doc! { "z": 1 }).await.expect("count"),
        4
    );

    let r = coll
        .replace_one(doc! { "_id": 1 }, doc! { "r": 1 })
        .await
        .expect("replace_one");
    assert_eq!((r.matched_count, r.modified_count), (1, 1));
    let replaced = coll
        .find_one(doc! { "_id": 1 })
        .await
        .expect("find_one")
        .expect("still there");
    assert_eq!(replaced.get_i32("r").ok(), Some(1));
    assert!(
        !replaced.contains_key("k"),
        "replaced, not merged: {replaced}"
    );

    let r = coll
        .delete_many(doc! { "k": 2 })
        .await
        .expect("delete_many");
    assert_eq!(r.deleted_count, 3);
    assert_eq!(coll.estimated_document_count().await.expect("count"), 7);
    drop(&db).await;
    client.shutdown().await;
}

#[tokio::test]
async fn find_one_and_update_replace_delete() {
    let client = client().await;
    let (db, coll) = seeded(&client, "it_everyday_fam").await;

    let before = coll
        .find_one_and_update(doc! { "_id": 0 }, doc! { "$inc": { "n": 1 } })
        .await
        .expect("fam")
        .expect("found");
    assert!(!before.contains_key("n"), "the document before: {before}");
    let after = coll
        .find_one_and_update(doc! { "_id": 0 }, doc! { "$inc": { "n": 1 } })
        .return_document(ReturnDocument::After)
        .projection(doc! { "n": 1 })
        .await
        .expect("fam")
        .expect("found");
    assert_eq!(after.get_i32("n").ok(), Some(2));
    assert!(!after.contains_key("tag"), "projected: {after}");
    let upserted = coll
        .find_one_and_update(doc! { "_id": 200 }, doc! { "$set": { "n": 1 } })
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await
        .expect("fam")
        .expect("the upserted document");
    assert_eq!(upserted.get_i32("n").ok(), Some(1));
    assert_eq!(
        coll.find_one_and_update(doc! { "_id": 999 }, doc! { "$set": { "n": 1 } })
            .await
            .expect("fam"),
        None
    );
    let highest_k0 = coll
        .find_one_and_update(doc! { "k": 0 }, doc! { "$set": { "s": 1 } })
        .sort(doc! { "_id": -1 })
        .await
        .expect("fam")
        .expect("found");
    assert_eq!(highest_k0.get_i32("_id").ok(), Some(9));

    let replaced = coll
        .find_one_and_replace(doc! { "_id": 3 }, doc! { "rep": true })
        .return_document(ReturnDocument::After)
        .await
        .expect("replace")
        .expect("found");
    assert_eq!(replaced.get_bool("rep").ok(), Some(true));
    assert!(!replaced.contains_key("k"), "replaced: {replaced}");

    let deleted = coll
        .find_one_and_delete(doc! { "_id": 4 })
        .await
        .expect("delete")
        .expect("found");
    assert_eq!(deleted.get_i32("k").ok(), Some(1));
    assert_eq!(
        coll.find_one(doc! { "_id": 4 }).await.expect("find_one"),
        None
    );
    drop(&db).await;
    client.shutdown().await;
}

#[tokio::test]
async fn indexes_and_listings() {
    let client = client().await;
    let (db, coll) = seeded(&client, "it_everyday_admin").await;

    let before = coll.list_index_names().await.expect("list_index_names");
    assert!(before.iter().any(|n| n == "_id_"), "{before:?}");
    let r = coll
        .create_index(doc! { "k": 1, "tag": -1 })
        .await
        .expect("create_index");
    assert_eq!(r.index_name, "k_1_tag_-1");
    let mut cursor = coll.list_indexes().await.expect("list_indexes");
    let mut indexes = Vec::new();
    while let Some(ix) = cursor.try_next().await.expect("next") {
        indexes.push(ix);
    }
    assert_eq!(indexes.len(), before.len() + 1, "{indexes:?}");
    assert!(indexes.iter().all(|ix| ix.contains_key("key")));

    db.collection::<Document>("other")
        .insert_one(doc! { "x": 1 })
        .await
        .expect("insert");
    let mut names = db.list_collection_names().await.expect("names");
    names.sort();
    assert_eq!(names, ["items", "other"]);
    // Entries through the cursor (nx-27017 ignores `filter`: the filter is tested on
    // the testkit).
    let mut cursor = db.list_collections().await.expect("list_collections");
    let mut entries = Vec::new();
    while let Some(entry) = cursor.try_next().await.expect("next") {
        entries.push(entry);
    }
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(
        entries
            .iter()
            .all(|e| e.get_str("type").ok() == Some("collection")),
        "{entries:?}"
    );

    let dbs = client.list_databases().await.expect("list_databases");
    assert!(dbs.iter().any(|d| d.name == db.name()), "{dbs:?}");
    assert!(
        client
            .list_database_names()
            .await
            .expect("names")
            .iter()
            .any(|n| n == db.name())
    );
    drop(&db).await;
    client.shutdown().await;
}
