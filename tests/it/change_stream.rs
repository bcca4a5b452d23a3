//! Change streams against the deployment: events of inserts, updates and deletes in order,
//! and 10,000 inserts written concurrently while the stream is read, with and without a
//! proxy that cuts the stream's connection every few getMores.
//!
//! Only what MongoDB and nx-27017 share is asserted (see docs/nx-27017.md): event order,
//! operation types, `fullDocument` of inserts, resume tokens, and resumption with
//! `resumeAfter` from the cached token. Not asserted: `updateDescription` (nx sends
//! null), the type of `documentKey._id` (nx sends a string), `clusterTime`'s type, drop
//! and invalidate events (nx has none).
//!
//! The 10,000-event runs print (eprintln) the events, resumes, getMores, cuts and the
//! elapsed time, for the record; `cargo test … -- --nocapture` shows them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use brook::{ChangeStream, ChangeStreamEvent, Client, Collection, OperationType};
use brook_testkit::{Proxy, ProxyConfig};
use bson::{Document, doc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use brook_integration_tests::{first_seed_address, mongodb_uri, unique_name};

/// The writer's documents: a sequence number and a little padding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Numbered {
    #[serde(rename = "_id")]
    id: i64,
    seq: i64,
    pad: String,
}

/// What the consumer reads of each inserted document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Seq {
    seq: i64,
}

/// Events written by the concurrent writer.
const TOTAL: i64 = 10_000;

/// Documents per `insert_many` of the writer.
const WRITE_BATCH: i64 = 250;

/// The most events the writer may be ahead of the consumer after a write.
///
/// nx-27017 keeps only the last 1,000 change rows of a collection that no open stream
/// still needs (`_RESUME_RETENTION_ROWS` in its changestream.py); a stream resumed from
/// an older token silently restarts at the oldest row kept, where MongoDB would resume
/// from its oplog (or fail with ChangeStreamHistoryLost). A consumer whose connection is
/// cut has no open stream until it resumes, so the writer is kept within this many events
/// of the consumer: the writes stay concurrent with the reads, and a resume always falls
/// inside both servers' history.
const MAX_LAG: i64 = 750;

/// `batchSize` of the consumer's stream.
const READ_BATCH: u32 = 100;

/// The most a 10,000-event run may take before the test fails (it takes far less).
const RUN_LIMIT: Duration = Duration::from_secs(90);

async fn connect(uri: &str) -> Client {
    Client::connect(uri)
        .await
        .unwrap_or_else(|e| panic!("connect to {uri}: {e}"))
}

/// The deployment's first seed as a socket address (for the proxy's upstream).
fn upstream() -> SocketAddr {
    let seed = first_seed_address(&mongodb_uri());
    seed.to_socket_addrs()
        .unwrap_or_else(|e| panic!("resolve {seed}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{seed} resolves to no address"))
}

/// The deployment's URI rewritten to go through `proxy`, as a direct connection.
fn through(proxy: &Proxy) -> String {
    let uri = proxy.rewrite_uri(&mongodb_uri());
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}directConnection=true")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_update_delete_events_arrive_in_order() {
    let client = connect(&mongodb_uri()).await;
    let db = client.database(&unique_name("cs_iud"));
    let coll: Collection<Document> = db.collection("items");
    // Create the collection first: some servers refuse to watch a missing one.
    coll.insert_one(doc! { "_id": 0, "label": "before the stream" })
        .await
        .expect("insert before");

    let mut stream = coll.watch().await.expect("watch");
    assert!(stream.is_alive());
    coll.insert_one(doc! { "_id": 1, "label": "one", "qty": 5 })
        .await
        .expect("insert");
    coll.update_one(doc! { "_id": 1 }, doc! { "$set": { "qty": 6 } })
        .await
        .expect("update");
    coll.delete_one(doc! { "_id": 1 }).await.expect("delete");

    let mut events: Vec<ChangeStreamEvent<Document>> = Vec::new();
    let mut tokens = Vec::new();
    while events.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("an event within 20 s")
            .expect("the stream is alive")
            .expect("an event, not an error");
        tokens.push(
            stream
                .resume_token()
                .expect("a cached token after an event"),
        );
        events.push(event);
    }
    let kinds: Vec<OperationType> = events.iter().map(|e| e.operation_type.clone()).collect();
    assert_eq!(
        kinds,
        [
            OperationType::Insert,
            OperationType::Update,
            OperationType::Delete
        ]
    );
    for event in &events {
        let ns = event.ns.as_ref().expect("ns");
        assert_eq!(ns.db, db.name());
        assert_eq!(ns.coll.as_deref(), Some("items"));
        assert!(event.document_key.is_some(), "documentKey");
    }
    let inserted = events[0]
        .full_document
        .as_ref()
        .expect("insert's fullDocument");
    assert_eq!(inserted.get_str("label").ok(), Some("one"));
    assert_eq!(inserted.get_i32("qty").ok(), Some(5));
    // Each event has its own resume token.
    assert_ne!(events[0].id, events[1].id);
    assert_ne!(events[1].id, events[2].id);
    assert_eq!(tokens.len(), 3);

    // Nothing else: the pre-stream insert is not replayed.
    assert_eq!(stream.resume_count(), 0);
    stream.close().await.expect("close");
    client.shutdown().await;
}

/// Writes `TOTAL` numbered documents in batches of `WRITE_BATCH` through its own client,
/// never more than [`MAX_LAG`] events ahead of what the consumer reports in `consumed`.
async fn write_all(
    uri: String,
    coll_db: String,
    coll_name: String,
    mut consumed: watch::Receiver<i64>,
) -> Duration {
    let started = Instant::now();
    let client = connect(&uri).await;
    let coll: Collection<Numbered> = client.database(&coll_db).collection(&coll_name);
    let mut next = 0;
    while next < TOTAL {
        let end = (next + WRITE_BATCH).min(TOTAL);
        consumed
            .wait_for(|&n| n >= end - MAX_LAG)
            .await
            .expect("the consumer is reading");
        let batch = (next..end).map(|seq| Numbered {
            id: seq,
            seq,
            pad: format!("{seq:08}"),
        });
        coll.insert_many(batch)
            .await
            .unwrap_or_else(|e| panic!("insert_many at {next}: {e}"));
        next = end;
    }
    client.shutdown().await;
    started.elapsed()
}

/// What a 10,000-event run saw.
struct Run {
    events: i64,
    resumes: u64,
    get_mores: u64,
    elapsed: Duration,
    write_time: Duration,
}

/// Reads `TOTAL` insert events from `stream` while a spawned task writes them, checking
/// that each carries the next sequence number (in order, no gap, no duplicate).
async fn consume_while_writing(
    mut stream: ChangeStream<ChangeStreamEvent<Seq>>,
    db: &str,
    coll: &str,
) -> Run {
    let started = Instant::now();
    let (progress, consumed) = watch::channel(0_i64);
    let writer = tokio::spawn(write_all(
        mongodb_uri(),
        db.to_owned(),
        coll.to_owned(),
        consumed,
    ));
    let mut expected = 0_i64;
    let deadline = tokio::time::Instant::now() + RUN_LIMIT;
    while expected < TOTAL {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let event = match next {
            Err(_) => panic!(
                "only {expected} of {TOTAL} events after {RUN_LIMIT:?} ({} resumes)",
                stream.resume_count()
            ),
            Ok(None) => panic!("the stream ended after {expected} events"),
            Ok(Some(Err(e))) => panic!("the stream failed after {expected} events: {e}"),
            Ok(Some(Ok(event))) => event,
        };
        assert_eq!(event.operation_type, OperationType::Insert);
        let seq = event
            .full_document
            .as_ref()
            .unwrap_or_else(|| panic!("insert event {expected} without fullDocument"))
            .seq;
        assert_eq!(
            seq,
            expected,
            "event {expected} carries seq {seq} ({} resumes so far)",
            stream.resume_count()
        );
        expected += 1;
        progress.send_replace(expected);
    }
    let write_time = writer.await.expect("the writer task");
    // Nothing beyond the 10,000: a short look for an extra event.
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.next_if_any()).await;
    if let Ok(Ok(Some(event))) = extra {
        panic!("an event after the last one: {:?}", event.operation_type);
    }
    let run = Run {
        events: expected,
        resumes: stream.resume_count(),
        get_mores: stream.get_more_count(),
        elapsed: started.elapsed(),
        write_time,
    };
    stream.close().await.expect("close");
    run
}

async fn open_stream(
    client: &Client,
    db: &str,
    coll: &str,
) -> ChangeStream<ChangeStreamEvent<Seq>> {
    client
        .database(db)
        .collection::<Document>(coll)
        .watch()
        .batch_size(READ_BATCH)
        .with_type::<Seq>()
        .await
        .expect("watch")
}

/// Creates the collection (one document outside the sequence, deleted again).
async fn create(client: &Client, db: &str, coll: &str) {
    let c: Collection<Document> = client.database(db).collection(coll);
    c.insert_one(doc! { "_id": -1, "seq": -1 })
        .await
        .expect("create");
    c.delete_one(doc! { "_id": -1 }).await.expect("clean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_inserts_arrive_once_and_in_order() {
    let db = unique_name("cs_10k");
    let client = connect(&mongodb_uri()).await;
    create(&client, &db, "seq").await;
    let stream = open_stream(&client, &db, "seq").await;
    let run = consume_while_writing(stream, &db, "seq").await;
    eprintln!(
        "change stream, no cuts: {} events, {} resumes, {} getMores in {:.1} s (writer {:.1} s)",
        run.events,
        run.resumes,
        run.get_mores,
        run.elapsed.as_secs_f64(),
        run.write_time.as_secs_f64()
    );
    assert_eq!(run.events, TOTAL);
    assert_eq!(run.resumes, 0, "nothing to resume from");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_inserts_survive_connection_cuts() {
    let db = unique_name("cs_cuts");
    let direct = connect(&mongodb_uri()).await;
    create(&direct, &db, "seq").await;
    direct.shutdown().await;

    // Only the consumer goes through the proxy; the writer connects directly.
    let proxy = Proxy::start(
        upstream(),
        ProxyConfig::default()
            .cut_after(2, 6)
            .only_replies_to("getMore"),
    )
    .await
    .expect("start the proxy");
    let consumer = connect(&through(&proxy)).await;
    let stream = open_stream(&consumer, &db, "seq").await;
    let run = consume_while_writing(stream, &db, "seq").await;
    let cuts = proxy.cuts().len();
    eprintln!(
        "change stream, cuts every 2-6 getMores (seed {}): {} events, {} resumes, {} cuts, \
         {} getMores in {:.1} s (writer {:.1} s)",
        proxy.seed(),
        run.events,
        run.resumes,
        cuts,
        run.get_mores,
        run.elapsed.as_secs_f64(),
        run.write_time.as_secs_f64()
    );
    assert_eq!(run.events, TOTAL);
    assert!(cuts > 0, "the proxy cut no connection");
    assert!(run.resumes > 0, "the stream never resumed");
    consumer.shutdown().await;
    proxy.shutdown().await;
}
