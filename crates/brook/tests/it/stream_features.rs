//! The change-stream features beyond the specification, end to end on the testkit: the
//! resume policy and its events, history lost, `next_batch`, and the stream's stats.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brook::{
    ChangeStreamEvent, Client, HistoryLost, RawChangeEvent, ResumeEvent, ResumeOutcome,
    ResumePolicy, ResumeToken,
};
use brook_testkit::shapes::{self, RESUMABLE_CHANGE_STREAM_ERROR};
use brook_testkit::{Action, FakeServer, Fault, ReceivedCommand, ServerConfig};
use bson::{Bson, Document, Timestamp, doc};
use serde::Deserialize;

use crate::change_stream::{NS, ev, first, n_of, next_batch, pbrt, token, ts};

async fn server() -> FakeServer {
    FakeServer::start(ServerConfig::replica_set("rs0"))
        .await
        .expect("fake server starts")
}

/// A client without the Retryable Reads retry, so that each resume attempt is one
/// `aggregate`.
async fn client_for(server: &FakeServer) -> Client {
    let uri = format!(
        "mongodb://{}/?serverSelectionTimeoutMS=5000&retryReads=false",
        server.host_port()
    );
    Client::connect(&uri).await.expect("client connects")
}

fn stage(cmd: &ReceivedCommand) -> Document {
    let pipeline = cmd.body.get_array("pipeline").expect("pipeline");
    let first = pipeline.first().and_then(Bson::as_document).expect("stage");
    first
        .get_document("$changeStream")
        .expect("$changeStream first")
        .clone()
}

fn token_doc(t: Option<&ResumeToken>) -> Document {
    t.expect("a resume token").to_document().unwrap()
}

type Seen = Arc<Mutex<Vec<(Instant, ResumeEvent)>>>;

fn recorder() -> (Seen, impl Fn(&ResumeEvent) + Send + Sync + 'static) {
    let seen: Seen = Arc::default();
    let sink = Arc::clone(&seen);
    (seen, move |e: &ResumeEvent| {
        sink.lock().unwrap().push((Instant::now(), e.clone()));
    })
}

fn not_primary() -> Action {
    Action::error(
        10107,
        "NotWritablePrimary",
        &[RESUMABLE_CHANGE_STREAM_ERROR],
    )
}

#[tokio::test]
async fn failed_resumes_back_off_and_every_attempt_is_reported() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![ev(1)], None),
            not_primary(),
            Action::fault(Fault::CloseWithoutReply),
            first(43, vec![ev(2)], None),
        ],
    );
    fake.push_actions(
        "getMore",
        [Action::error(
            91,
            "ShutdownInProgress",
            &[RESUMABLE_CHANGE_STREAM_ERROR],
        )],
    );
    let client = client_for(&fake).await;
    let (seen, handler) = recorder();
    let policy = ResumePolicy::backoff()
        .jitter(false)
        .initial_delay(Duration::from_millis(60))
        .max_attempts(Some(5));
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .resume_policy(policy)
        .on_resume(handler)
        .await
        .unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 2);
    assert_eq!(stream.failed_resume_count(), 2);
    assert_eq!(stream.resume_count(), 3, "three attempts");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    for (_, e) in &seen {
        assert_eq!(
            e.cause.code,
            Some(91),
            "the getMore's error caused them all"
        );
        assert_eq!(token_doc(e.resumed_from.as_ref()), token(1));
    }
    assert_eq!(
        seen[0].1.outcome,
        ResumeOutcome::Failed {
            error: seen_error(&seen[0].1),
            retry_in: Some(Duration::from_millis(60)),
        }
    );
    assert!(seen_error(&seen[0].1).contains("NotWritablePrimary"));
    assert_eq!(seen[0].1.attempt, 1);
    match &seen[1].1.outcome {
        ResumeOutcome::Failed { retry_in, .. } => {
            assert_eq!(*retry_in, Some(Duration::from_millis(120)), "doubled")
        }
        other => panic!("expected a failed attempt, got {other:?}"),
    }
    assert_eq!(seen[2].1.outcome, ResumeOutcome::Resumed);
    assert_eq!(seen[2].1.attempt, 3);
    assert_eq!(
        seen[2].1.server.as_ref().map(ToString::to_string),
        Some(fake.host_port())
    );
    // The back-off was waited out (a lower bound only: the machine may be slow).
    assert!(seen[1].0 - seen[0].0 >= Duration::from_millis(60));
    assert!(seen[2].0 - seen[1].0 >= Duration::from_millis(120));
    assert_eq!(stream.last_resume(), Some(&seen[2].1));
    let aggs = fake.commands_named("aggregate");
    assert_eq!(aggs.len(), 4);
    for agg in &aggs[1..] {
        assert_eq!(stage(agg), doc! { "resumeAfter": token(1) });
    }
    let stats = stream.stats();
    assert_eq!((stats.resumes, stats.failed_resumes), (3, 2));
    stream.close().await.unwrap();
}

fn seen_error(e: &ResumeEvent) -> String {
    match &e.outcome {
        ResumeOutcome::Failed { error, .. } => error.clone(),
        ResumeOutcome::Resumed => String::new(),
        other => panic!("unexpected outcome {other:?}"),
    }
}

#[tokio::test]
async fn by_default_a_failed_resume_ends_the_stream_and_is_reported() {
    let fake = server().await;
    fake.push_actions("aggregate", [first(42, vec![ev(1)], None), not_primary()]);
    fake.push_actions("getMore", [Action::fault(Fault::CloseWithoutReply)]);
    let client = client_for(&fake).await;
    let (seen, handler) = recorder();
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .on_resume(handler)
        .await
        .unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    let err = stream
        .next()
        .await
        .unwrap()
        .expect_err("the resume's error");
    assert_eq!(err.code(), Some(10107));
    assert!(!stream.is_alive());
    assert_eq!(stream.failed_resume_count(), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let e = &seen[0].1;
    assert!(e.cause.code.is_none(), "a network error: {:?}", e.cause);
    assert!(matches!(
        e.outcome,
        ResumeOutcome::Failed { retry_in: None, .. }
    ));
    assert_eq!(fake.commands_named("aggregate").len(), 2);
}

#[tokio::test]
async fn the_policy_gives_up_after_its_attempts_and_never_retries_what_cannot_heal() {
    // A cap on attempts.
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![ev(1)], None),
            not_primary(),
            not_primary(),
            not_primary(),
        ],
    );
    fake.push_actions("getMore", [Action::fault(Fault::CloseWithoutReply)]);
    let client = client_for(&fake).await;
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .resume_policy(
            ResumePolicy::backoff()
                .initial_delay(Duration::from_millis(1))
                .max_attempts(Some(2)),
        )
        .await
        .unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    let err = stream.next().await.unwrap().expect_err("gave up");
    assert_eq!(err.code(), Some(10107));
    assert_eq!(stream.failed_resume_count(), 2);
    assert_eq!(fake.commands_named("aggregate").len(), 3, "1 + 2 attempts");
    assert_eq!(fake.queued("aggregate"), 1);

    // An error a later attempt cannot cure (a bad pipeline, 280) is not retried.
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![ev(1)], None),
            Action::error(280, "ChangeStreamFatalError", &[]),
            first(43, vec![ev(2)], None),
        ],
    );
    fake.push_actions("getMore", [Action::fault(Fault::CloseWithoutReply)]);
    let client = client_for(&fake).await;
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .resume_policy(ResumePolicy::backoff().initial_delay(Duration::from_millis(1)))
        .await
        .unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    let err = stream.next().await.unwrap().expect_err("fatal");
    assert!(err.is_change_stream_fatal());
    assert!(!err.is_history_lost());
    assert_eq!(fake.commands_named("aggregate").len(), 2);
}

fn history_lost() -> Action {
    let (code, name) = shapes::codes::CHANGE_STREAM_HISTORY_LOST;
    Action::error_with_message(
        code,
        name,
        "Resume of change stream was not possible, as the resume point may no longer be in \
         the oplog.",
        &[],
    )
}

#[tokio::test]
async fn history_lost_fails_the_stream_by_default() {
    let fake = server().await;
    fake.push_actions("aggregate", [first(42, vec![ev(1)], None), history_lost()]);
    fake.push_actions("getMore", [Action::fault(Fault::CloseWithoutReply)]);
    let client = client_for(&fake).await;
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .resume_policy(ResumePolicy::backoff().initial_delay(Duration::from_millis(1)))
        .await
        .unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    let err = stream.next().await.unwrap().expect_err("history lost");
    assert!(err.is_history_lost());
    assert!(err.history_gap().is_none());
    assert!(!stream.is_alive());
    assert_eq!(token_doc(stream.resume_token().as_ref()), token(1));
    assert_eq!(fake.commands_named("aggregate").len(), 2, "not retried");
}

#[tokio::test]
async fn history_lost_on_resume_restarts_from_now_and_reports_the_gap() {
    let fake = server().await;
    let restart_time = ts(50);
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![ev(1)], None),
            history_lost(),
            Action::cursor(
                44,
                NS,
                shapes::BatchKind::First,
                vec![],
                Some(pbrt(50)),
                Some(restart_time),
            ),
        ],
    );
    fake.push_actions(
        "getMore",
        [
            Action::fault(Fault::CloseWithoutReply),
            next_batch(44, vec![ev(51)], Some(pbrt(51))),
        ],
    );
    let client = client_for(&fake).await;
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .on_history_lost(HistoryLost::RestartFromNow)
        .await
        .unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    let err = stream.next().await.unwrap().expect_err("the gap, once");
    assert!(err.is_history_lost());
    let gap = err.history_gap().expect("a gap").clone();
    assert_eq!(gap.last_delivered, Some(ts(1)));
    assert_eq!(token_doc(gap.lost_token.as_ref()), token(1));
    assert_eq!(gap.restarted_at, Some(restart_time));
    assert!(err.to_string().contains("history was lost"), "{err}");
    assert!(stream.is_alive(), "the stream goes on after the gap");
    assert_eq!(token_doc(stream.resume_token().as_ref()), pbrt(50));
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 51);
    let aggs = fake.commands_named("aggregate");
    assert_eq!(aggs.len(), 3);
    assert_eq!(stage(&aggs[1]), doc! { "resumeAfter": token(1) });
    assert_eq!(stage(&aggs[2]), doc! {}, "the restart starts from now");
    stream.close().await.unwrap();
}

#[tokio::test]
async fn a_stored_token_whose_history_is_lost_restarts_at_open() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            history_lost(),
            Action::cursor(
                44,
                NS,
                shapes::BatchKind::First,
                vec![ev(60)],
                None,
                Some(ts(60)),
            ),
        ],
    );
    let client = client_for(&fake).await;
    let stored = ResumeToken::from_document(&token(3)).unwrap();
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .resume_after(stored)
        .on_history_lost(HistoryLost::RestartFromNow)
        .await
        .expect("opens from now");
    let err = stream.next().await.unwrap().expect_err("the gap first");
    let gap = err.history_gap().expect("a gap");
    assert_eq!(token_doc(gap.lost_token.as_ref()), token(3));
    assert_eq!(gap.last_delivered, Some(ts(3)), "the stored token's time");
    assert_eq!(gap.restarted_at, Some(ts(60)));
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 60);
    let aggs = fake.commands_named("aggregate");
    assert_eq!(stage(&aggs[0]), doc! { "resumeAfter": token(3) });
    assert_eq!(stage(&aggs[1]), doc! {});
    stream.close().await.unwrap();
}

#[derive(Debug, Deserialize)]
struct Item {
    n: i32,
}

#[tokio::test]
async fn next_batch_hands_out_what_was_received_and_the_token_after_it() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [first(42, vec![ev(1), ev(2), ev(3)], Some(pbrt(3)))],
    );
    let mut bad = ev(5);
    bad.insert("fullDocument", doc! { "n": "not a number" });
    fake.push_actions(
        "getMore",
        [
            next_batch(42, vec![], Some(pbrt(4))),
            next_batch(42, vec![bad, ev(6)], Some(pbrt(6))),
            next_batch(42, vec![], Some(pbrt(7))),
        ],
    );
    let client = client_for(&fake).await;
    let mut stream = client
        .database("app")
        .collection::<Item>("items")
        .watch()
        .await
        .unwrap();
    let batch = stream.next_batch().await.unwrap();
    let ns: Vec<i32> = batch
        .events()
        .iter()
        .map(|e: &ChangeStreamEvent<Item>| e.full_document.as_ref().unwrap().n)
        .collect();
    assert_eq!(ns, [1, 2, 3]);
    assert_eq!(token_doc(batch.resume_token()), pbrt(3));
    assert!(!batch.invalidated());
    assert_eq!(
        fake.commands_named("getMore").len(),
        0,
        "nothing sent: all buffered"
    );

    // A quiet period: one getMore, no event, the token moved.
    let batch = stream.next_batch().await.unwrap();
    assert!(batch.is_empty());
    assert_eq!(token_doc(batch.resume_token()), pbrt(4));
    assert_eq!(stream.get_more_count(), 1);

    // An event that cannot be decoded: returned by the call after, the stream goes on.
    let err = stream.next_batch().await.expect_err("the decode error");
    assert!(err.is_event_decode());
    let batch = stream.next_batch().await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.events()[0].full_document.as_ref().unwrap().n, 6);
    assert_eq!(token_doc(batch.resume_token()), pbrt(6));
    assert_eq!(stream.get_more_count(), 2);
    stream.close().await.unwrap();
}

#[tokio::test]
async fn next_batch_splits_at_an_undecodable_event_and_flags_an_invalidate() {
    let fake = server().await;
    let mut bad = ev(2);
    bad.insert("fullDocument", doc! { "n": "not a number" });
    let invalidate = doc! {
        "_id": shapes::resume_token(ts(9), 1),
        "operationType": "invalidate",
        "clusterTime": ts(9),
    };
    fake.push_actions(
        "aggregate",
        [first(
            42,
            vec![ev(1), bad, ev(3), invalidate],
            Some(pbrt(10)),
        )],
    );
    let client = client_for(&fake).await;
    let mut stream = client
        .database("app")
        .collection::<Item>("items")
        .watch()
        .await
        .unwrap();
    let batch = stream.next_batch().await.unwrap();
    assert_eq!(batch.len(), 1, "ends before the undecodable event");
    assert_eq!(token_doc(batch.resume_token()), token(1));
    let err = stream.next_batch().await.expect_err("its error");
    assert_eq!(
        err.resume_token().map(|t| t.to_document().unwrap()),
        Some(token(2))
    );
    let batch = stream.next_batch().await.unwrap();
    assert_eq!(batch.len(), 2);
    assert!(batch.invalidated());
    assert_eq!(
        token_doc(batch.resume_token()),
        shapes::resume_token(ts(9), 1)
    );
    assert!(!stream.is_alive());
    assert!(stream.next_batch().await.unwrap().is_empty());
}

#[tokio::test]
async fn stats_count_and_measure_the_lag() {
    let fake = server().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let written = u32::try_from(now.as_secs()).unwrap() - 5;
    let at = |i: u32| Timestamp {
        time: written,
        increment: i,
    };
    let event = |i: u32| {
        let mut e = shapes::insert_event(at(i), NS, doc! { "_id": i, "n": i });
        e.insert(
            "wallTime",
            bson::DateTime::from_millis(i64::from(written) * 1000),
        );
        e
    };
    let server_time = Timestamp {
        time: written + 2,
        increment: 0,
    };
    fake.push_actions(
        "aggregate",
        [Action::cursor(
            42,
            NS,
            shapes::BatchKind::First,
            vec![],
            Some(shapes::post_batch_resume_token(at(0))),
            Some(server_time),
        )],
    );
    fake.push_actions(
        "getMore",
        [Action::cursor(
            42,
            NS,
            shapes::BatchKind::Next,
            vec![event(1), event(2)],
            Some(shapes::post_batch_resume_token(at(2))),
            Some(server_time),
        )],
    );
    let client = client_for(&fake).await;
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .raw()
        .await
        .unwrap();
    let before = stream.stats();
    assert_eq!(before.events, 0);
    assert_eq!(before.lag, None);
    let batch = stream.next_batch().await.unwrap();
    let events: Vec<&RawChangeEvent> = batch.events().iter().collect();
    assert_eq!(events.len(), 2);
    let stats = stream.stats();
    assert_eq!(stats.events, 2);
    assert_eq!(stats.get_mores, 1);
    assert_eq!(stats.resumes, 0);
    assert_eq!(stats.last_event_cluster_time, Some(at(2)));
    let lag = stats.lag.expect("a lag");
    assert!(
        lag >= Duration::from_secs(4) && lag < Duration::from_secs(120),
        "{lag:?}"
    );
    assert_eq!(stats.server_lag, Some(Duration::from_secs(2)));
    assert_eq!(
        stats.server.as_ref().map(ToString::to_string),
        Some(fake.host_port())
    );
    stream.close().await.unwrap();
}

const MIB16: usize = 16 * 1024 * 1024;

/// An update event with pre- and post-images of `len` bytes of string each.
fn large_update(id: i32, len: usize) -> Document {
    let big = "a".repeat(len);
    doc! {
        "operationType": "update",
        "clusterTime": Timestamp { time: 0, increment: 0 },
        "wallTime": bson::DateTime::from_millis(0),
        "ns": { "db": "shop", "coll": "orders" },
        "documentKey": { "_id": id },
        "updateDescription": { "updatedFields": { "n": 2 }, "removedFields": [], "truncatedArrays": [] },
        "fullDocument": { "_id": id, "big": big.clone(), "n": 2 },
        "fullDocumentBeforeChange": { "_id": id, "big": big, "n": 1 },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_large_events_hand_out_a_32_mib_event_whole() {
    let set = brook_testkit::ReplicaSet::start(
        brook_testkit::ReplicaSetConfig::new("rs0").with_max_await(Duration::from_millis(200)),
    )
    .await
    .expect("set starts");
    let client = Client::connect(&format!("{}&serverSelectionTimeoutMS=5000", set.uri()))
        .await
        .unwrap();
    let coll = client.database("shop").collection::<Document>("orders");

    // Without the stage, the server refuses the event: the stream ends with 10334.
    let mut plain = coll.watch().raw().await.unwrap();
    set.append_event(large_update(1, MIB16 - 200));
    let err = plain.next().await.unwrap().expect_err("too large");
    assert_eq!(err.code(), Some(10334));

    let mut stream = coll.watch().split_large_events(true).raw().await.unwrap();
    let before = stream.resume_token();
    let logged = set.append_event(large_update(2, MIB16 - 200));
    set.insert_event("shop.orders", doc! { "_id": 3 });
    let event: RawChangeEvent = stream.next().await.unwrap().expect("one whole event");
    let whole = event.as_document();
    assert!(
        whole.as_bytes().len() > 2 * (MIB16 - 200),
        "{}",
        whole.as_bytes().len()
    );
    assert!(whole.get("splitEvent").unwrap().is_none());
    let doc = bson::Document::try_from(whole).unwrap();
    let mut expected = logged.clone();
    expected.remove("_id");
    let mut got = doc.clone();
    got.remove("_id");
    assert_eq!(got, expected, "every field back, in order");
    // Its _id is the last fragment's token, which resumes after the whole event.
    let last_fragment =
        shapes::fragment_resume_token(logged.get_document("_id").unwrap(), 3).expect("a token");
    assert_eq!(doc.get_document("_id").unwrap(), &last_fragment);
    assert_ne!(stream.resume_token(), before);
    let next = stream.next().await.unwrap().unwrap();
    assert_eq!(
        next.as_document()
            .get_document("documentKey")
            .unwrap()
            .get_i32("_id")
            .unwrap(),
        3
    );
    // The stage went last in the pipeline.
    let aggs = set
        .member(set.primary().unwrap())
        .commands_named("aggregate");
    let pipeline = aggs
        .last()
        .unwrap()
        .body
        .get_array("pipeline")
        .unwrap()
        .clone();
    assert_eq!(
        pipeline.last().and_then(Bson::as_document),
        Some(&doc! { "$changeStreamSplitLargeEvent": {} })
    );
    stream.close().await.unwrap();
    client.shutdown().await;
    set.shutdown().await;
}

#[tokio::test]
async fn a_split_event_survives_a_resume_between_its_fragments() {
    let fake = server().await;
    let event = ev(2);
    let fragments = shapes::split_event(&event, 200).expect("splits");
    assert!(fragments.len() >= 3, "{} fragments", fragments.len());
    let n = fragments.len();
    let last_but_one = fragments[n - 2].get_document("_id").unwrap().clone();
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![], Some(pbrt(1))),
            first(43, vec![fragments[n - 1].clone(), ev(3)], Some(pbrt(3))),
        ],
    );
    fake.push_actions(
        "getMore",
        [
            next_batch(42, fragments[..n - 1].to_vec(), Some(last_but_one.clone())),
            Action::fault(Fault::CloseWithoutReply),
        ],
    );
    let client = client_for(&fake).await;
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .split_large_events(true)
        .await
        .unwrap();
    // One getMore brings all fragments but the last: no event yet, and the token to
    // store is still the one before the event.
    assert!(stream.next_if_any().await.unwrap().is_none());
    assert_eq!(token_doc(stream.resume_token().as_ref()), pbrt(1));
    // The next getMore fails; the resume starts after the last fragment received, the
    // server sends the rest, and the event comes out whole, once.
    let whole = stream.next().await.unwrap().unwrap();
    assert_eq!(n_of(&whole), 2);
    assert_eq!(
        token_doc(Some(&whole.id)),
        fragments[n - 1].get_document("_id").unwrap().clone()
    );
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 3);
    let aggs = fake.commands_named("aggregate");
    assert_eq!(stage(&aggs[1]), doc! { "resumeAfter": last_but_one });
    stream.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_oplog_rolled_over_restarts_from_now_on_the_replica_set() {
    let set = brook_testkit::ReplicaSet::start(
        brook_testkit::ReplicaSetConfig::new("rs0").with_max_await(Duration::from_millis(200)),
    )
    .await
    .expect("set starts");
    let client = Client::connect(&format!("{}&serverSelectionTimeoutMS=5000", set.uri()))
        .await
        .unwrap();
    let coll = client.database("shop").collection::<Document>("orders");
    let mut stream = coll
        .watch()
        .on_history_lost(HistoryLost::RestartFromNow)
        .await
        .unwrap();
    let key = |e: &ChangeStreamEvent<Document>| {
        e.document_key
            .as_ref()
            .and_then(|k| k.get_i32("_id").ok())
            .expect("documentKey._id")
    };
    let e1 = set.insert_event("shop.orders", doc! { "_id": 1 });
    assert_eq!(key(&stream.next().await.unwrap().unwrap()), 1);
    // The token after event 1 (its batch's postBatchResumeToken).
    let held = stream.resume_token();
    // The oplog rolls over past event 1 while the primary changes: the resume from
    // event 1's token finds its history gone.
    set.truncate_history(0);
    set.insert_event("shop.orders", doc! { "_id": 2 });
    set.step_down().await;
    set.elect(1).await.unwrap();
    let err = stream.next().await.unwrap().expect_err("the gap");
    let gap = err.history_gap().expect("a gap").clone();
    assert_eq!(gap.lost_token, held);
    assert_eq!(gap.last_delivered, e1.get_timestamp("clusterTime").ok());
    assert!(gap.restarted_at.is_some());
    assert!(stream.is_alive());
    set.insert_event("shop.orders", doc! { "_id": 3 });
    assert_eq!(
        key(&stream.next().await.unwrap().unwrap()),
        3,
        "event 2 fell in the gap"
    );
    stream.close().await.unwrap();
    client.shutdown().await;
    set.shutdown().await;
}

/// The stream's health as `tracing` fields: after each reply (TRACE), and with every
/// resume (INFO, with its cause, token and server).
#[tokio::test(flavor = "current_thread")]
async fn stats_and_resumes_are_tracing_fields() {
    // With one dispatcher in the process, tracing-core caches "never" for a callsite
    // first hit on a thread without a subscriber (another test's, under `cargo test`): a
    // second dispatcher makes it ask this thread's subscriber.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let captured = crate::secrets::Captured::default();
    let _guard = tracing::subscriber::set_default(captured.clone());
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![ev(1)], None),
            first(43, vec![], Some(pbrt(2))),
        ],
    );
    fake.push_actions(
        "getMore",
        [
            Action::fault(Fault::CloseWithoutReply),
            next_batch(43, vec![ev(3)], Some(pbrt(3))),
        ],
    );
    let client = client_for(&fake).await;
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .await
        .unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 3);
    stream.close().await.unwrap();
    let lines = captured.0.lock().unwrap().clone();
    let stream_lines: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("brook::change_stream"))
        .collect();
    let reply = stream_lines
        .iter()
        .find(|l| l.contains("change stream reply") && l.contains("get_mores=2"))
        .unwrap_or_else(|| panic!("no stats line: {stream_lines:#?}"));
    for field in [
        "events=1",
        "resumes=1",
        "failed_resumes=0",
        "lag_ms=",
        "events_per_second=",
        "server=",
    ] {
        assert!(reply.contains(field), "{field} in {reply}");
    }
    let resume = stream_lines
        .iter()
        .find(|l| l.contains("change stream resume"))
        .unwrap_or_else(|| panic!("no resume line: {stream_lines:#?}"));
    for field in [
        "cause=",
        "resumed_from=",
        "server=",
        "outcome=Resumed",
        "attempt=1",
    ] {
        assert!(resume.contains(field), "{field} in {resume}");
    }
}

/// Under timeoutMS a resume policy's back-off counts against the call: the call times
/// out, the stream stays alive, and a later call goes on with the resume.
#[tokio::test]
async fn a_back_off_longer_than_the_timeout_ends_the_call_not_the_stream() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![ev(1)], None),
            // Errors that leave the server selectable (no SDAM state change), so that
            // only the back-off holds the resume.
            Action::error(6, "HostUnreachable", &[RESUMABLE_CHANGE_STREAM_ERROR]),
            first(43, vec![ev(2)], None),
        ],
    );
    fake.push_actions("getMore", [Action::error(43, "CursorNotFound", &[])]);
    let client = client_for(&fake).await;
    let mut stream = client
        .database("app")
        .collection::<Document>("items")
        .watch()
        .timeout(Duration::from_millis(300))
        .resume_policy(
            ResumePolicy::backoff()
                .jitter(false)
                .initial_delay(Duration::from_millis(700)),
        )
        .await
        .unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    let err = stream
        .next()
        .await
        .unwrap()
        .expect_err("the call timed out");
    assert!(err.is_timeout(), "{err}");
    assert!(stream.is_alive());
    assert_eq!(
        fake.commands_named("aggregate").len(),
        2,
        "still backing off"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 2);
    assert_eq!(stream.failed_resume_count(), 1);
    stream.close().await.unwrap();
}
