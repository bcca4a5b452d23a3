//! Every example program, run on the testkit's fake replica set with its outcome checked
//! (`cargo nextest run --workspace`, a step of `cargo xtask test`, runs these).

use std::path::PathBuf;
use std::time::Duration;

use brook::OperationType;
use brook_examples::cache_invalidator::{self, Applied, Cache, Product};
use brook_examples::{
    BoxError, audit_log, demo_replica_set, failover_consumer, outbox_relay, wait_for_stream, within,
};
use brook_testkit::shapes;
use bson::{Bson, Document, Timestamp, doc};

/// Every test is bounded.
const LIMIT: Duration = Duration::from_secs(60);
/// How long a program may take to open its stream.
const OPEN: Duration = Duration::from_secs(10);

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("brook-examples-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// The placeholder time of an event given to `append_event` (the set sets its own).
const AT: Timestamp = Timestamp {
    time: 0,
    increment: 0,
};

fn product(id: i32, price_cents: i64) -> Product {
    Product {
        id,
        name: format!("product {id}"),
        price_cents,
    }
}

fn product_doc(id: i32, price_cents: i64) -> Document {
    doc! { "_id": id, "name": format!("product {id}"), "price_cents": price_cents }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_invalidator_applies_changes_and_continues_from_its_checkpoint() {
    let (set, uri) = demo_replica_set().await.expect("a replica set");
    let dir = scratch("cache");
    let checkpoint = dir.join("cache.checkpoint");
    let ns = format!("{}.{}", cache_invalidator::DB, cache_invalidator::COLL);
    let mut cache = Cache::default();
    for id in 1..=4 {
        cache.put(product(id, 100));
    }

    // First run: three changes while it follows.
    let changes = async {
        wait_for_stream(&set, OPEN).await?;
        set.append_event(shapes::update_event(
            AT,
            &ns,
            doc! { "_id": 1 },
            doc! { "price_cents": 150 },
            &[],
            Some(Some(product_doc(1, 150))),
        ));
        set.append_event(shapes::delete_event(AT, &ns, doc! { "_id": 2 }));
        set.append_event(shapes::replace_event(AT, &ns, product_doc(3, 90)));
        Ok::<(), BoxError>(())
    };
    let follow = cache_invalidator::run(&uri, &checkpoint, 3, &mut cache);
    let (applied, ()) = within(LIMIT, "first run", async {
        tokio::try_join!(follow, changes)
    })
    .await
    .expect("the first run");
    let op = |operation: OperationType, id| Applied { operation, id };
    assert_eq!(
        applied,
        [
            op(OperationType::Update, 1),
            op(OperationType::Delete, 2),
            op(OperationType::Replace, 3)
        ]
    );
    assert_eq!(
        cache.get(1),
        Some(&product(1, 150)),
        "refreshed from updateLookup"
    );
    assert_eq!(cache.get(2), None, "deleted: dropped");
    assert_eq!(cache.get(3), Some(&product(3, 90)), "replaced");
    assert_eq!(cache.get(4), Some(&product(4, 100)), "untouched");
    assert!(checkpoint.is_file(), "the checkpoint is saved");

    // The server got the $match stage after $changeStream, and updateLookup.
    let aggregate = set
        .members()
        .iter()
        .flat_map(|m| m.commands_named("aggregate"))
        .next()
        .expect("the stream's aggregate");
    let pipeline = aggregate.body.get_array("pipeline").expect("a pipeline");
    assert_eq!(pipeline.len(), 2, "{pipeline:?}");
    let stage = pipeline[0].as_document().expect("a stage");
    let change_stream = stage.get_document("$changeStream").expect("$changeStream");
    assert_eq!(
        change_stream.get_str("fullDocument").ok(),
        Some("updateLookup")
    );
    assert_eq!(
        pipeline[1],
        Bson::Document(cache_invalidator::pipeline()[0].clone())
    );

    // Down for a while: two more changes happen. The second run starts after the
    // checkpoint: it applies exactly those two, nothing of the first run again.
    set.append_event(shapes::delete_event(AT, &ns, doc! { "_id": 4 }));
    set.append_event(shapes::delete_event(AT, &ns, doc! { "_id": 1 }));
    let applied = within(
        LIMIT,
        "second run",
        cache_invalidator::run(&uri, &checkpoint, 2, &mut cache),
    )
    .await
    .expect("the second run");
    assert_eq!(
        applied,
        [op(OperationType::Delete, 4), op(OperationType::Delete, 1)]
    );
    assert_eq!(cache.len(), 1, "only product 3 is left");
    set.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

/// The `id`s of the JSON lines a relay wrote.
fn ids_of(lines: &[u8]) -> Vec<i64> {
    String::from_utf8(lines.to_vec())
        .expect("UTF-8")
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert!(value["topic"].is_string(), "{line}");
            assert!(value["payload"]["order"].is_number(), "{line}");
            value["id"].as_i64().expect("an id")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_relay_delivers_every_message_at_least_once() {
    let (set, uri) = demo_replica_set().await.expect("a replica set");
    let dir = scratch("outbox");
    let checkpoint = dir.join("outbox.checkpoint");

    // First run: messages 0..3 inserted (through brook) while it relays.
    let mut out = Vec::new();
    let writes = async {
        wait_for_stream(&set, OPEN).await?;
        outbox_relay::write_messages(&uri, 0, 3).await
    };
    let relay = outbox_relay::run(&uri, &checkpoint, 3, &mut out, false);
    let (first, ()) = within(LIMIT, "first run", async {
        tokio::try_join!(relay, writes)
    })
    .await
    .expect("the first run");
    assert_eq!(first.ids, [0, 1, 2]);
    assert_eq!(ids_of(&out), [0, 1, 2]);
    assert_eq!(first.saves, first.batches, "one save per batch: {first:?}");

    // While it is down, messages 3..6 arrive. Then it "crashes" right after writing a
    // batch, before saving that batch's checkpoint.
    outbox_relay::write_messages(&uri, 3, 3)
        .await
        .expect("writes");
    let mut out = Vec::new();
    let crashed = within(
        LIMIT,
        "crashing run",
        outbox_relay::run(&uri, &checkpoint, 1, &mut out, true),
    )
    .await
    .expect("the crashing run");
    assert_eq!(crashed.saves, 0);
    assert_eq!(
        crashed.ids.first(),
        Some(&3),
        "continues after the checkpoint"
    );

    // Restarted: the unsaved batch is sent again (at least once), then the rest; in all,
    // 0..6 with nothing lost.
    let mut out = Vec::new();
    let again = within(
        LIMIT,
        "restarted run",
        outbox_relay::run(&uri, &checkpoint, 3, &mut out, false),
    )
    .await
    .expect("the restarted run");
    assert_eq!(again.ids, [3, 4, 5]);
    assert!(
        again.ids.starts_with(&crashed.ids),
        "the batch written before the crash is written again: {crashed:?} then {again:?}"
    );
    set.shutdown().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_appends_every_event_of_the_database_undecoded() {
    let (set, uri) = demo_replica_set().await.expect("a replica set");
    let mut log = Vec::new();
    let writes = async {
        wait_for_stream(&set, OPEN).await?;
        let client = brook::Client::connect(&uri).await?;
        let app = client.database(audit_log::DB);
        app.collection::<Document>("users")
            .insert_one(doc! { "_id": 1, "name": "ada" })
            .await?;
        app.collection::<Document>("orders")
            .insert_one(doc! { "_id": 7, "user": 1 })
            .await?;
        set.append_event(shapes::delete_event(AT, "app.users", doc! { "_id": 1 }));
        client.shutdown().await;
        Ok::<(), BoxError>(())
    };
    let audit = audit_log::run(&uri, 3, &mut log);
    let (counts, ()) = within(LIMIT, "audit", async { tokio::try_join!(audit, writes) })
        .await
        .expect("the audit run");
    assert_eq!(counts.get("insert"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("delete"), Some(&1), "{counts:?}");

    // The log holds the events exactly as the server sent them, in order.
    let logged = audit_log::read_log(&log).expect("a BSON log");
    assert_eq!(logged, set.events(), "byte for byte what the server logged");
    let namespaces: Vec<String> = logged
        .iter()
        .map(|e| {
            let ns = e.get_document("ns").expect("ns");
            format!(
                "{}.{}",
                ns.get_str("db").unwrap(),
                ns.get_str("coll").unwrap()
            )
        })
        .collect();
    assert_eq!(namespaces, ["app.users", "app.orders", "app.users"]);
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_consumer_gets_every_event_once_across_failovers() {
    let (set, uri) = demo_replica_set().await.expect("a replica set");
    let report = within(
        LIMIT,
        "failover consumer",
        failover_consumer::run(&set, &uri, 60, 15),
    )
    .await
    .expect("every event once, in order");
    assert_eq!(report.received, (0..60).collect::<Vec<i64>>());
    assert_eq!(report.failovers, 3);
    assert!(report.resumes >= 3, "{report:?}");
    assert!(report.resume_events >= report.resumes, "{report:?}");
    set.shutdown().await;
}

/// The metrics example: a find and a change stream against the fake server, and the
/// Prometheus text that a scrape would read holds brook's command, pool and change-stream
/// metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_prometheus_renders_brook_s_metrics() {
    let text = brook_examples::metrics_prometheus::run(None)
        .await
        .expect("the example runs");
    for name in [
        "brook_command_duration_seconds",
        "brook_pool_checkouts_total",
        "brook_change_stream_events_total",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
    assert!(text.contains("command=\"find\""), "{text}");
    assert!(text.contains("command=\"getMore\""), "{text}");
}
