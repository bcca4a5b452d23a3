//! Change streams end to end against brook-testkit's fake server, through real sockets.

use std::time::Duration;

use brook::{
    ChangeStreamEvent, Client, FullDocument, FullDocumentBeforeChange, OperationType,
    RawChangeEvent, ResumeToken,
};
use brook_testkit::shapes::{self, BatchKind, RESUMABLE_CHANGE_STREAM_ERROR};
use brook_testkit::{Action, FakeServer, Fault, ReceivedCommand, ServerConfig};
use bson::{Bson, Document, Timestamp, doc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

pub(crate) const NS: &str = "app.items";
const WAIT: Duration = Duration::from_secs(5);

async fn server(config: ServerConfig) -> FakeServer {
    FakeServer::start(config).await.expect("fake server starts")
}

async fn client_for(server: &FakeServer, query: &str) -> Client {
    let uri = format!(
        "mongodb://{}/?serverSelectionTimeoutMS=5000{query}",
        server.host_port()
    );
    Client::connect(&uri).await.expect("client connects")
}

pub(crate) fn ts(i: u32) -> Timestamp {
    Timestamp {
        time: 1_700_000_000,
        increment: i,
    }
}

/// Insert event number `i` (its `_id` is `token(i)`).
pub(crate) fn ev(i: u32) -> Document {
    let n = i32::try_from(i).unwrap();
    shapes::insert_event(ts(i), NS, doc! { "_id": n, "n": n, "tag": format!("t{i}") })
}

pub(crate) fn token(i: u32) -> Document {
    shapes::resume_token(ts(i), 0)
}

pub(crate) fn pbrt(i: u32) -> Document {
    shapes::post_batch_resume_token(ts(i))
}

pub(crate) fn first(id: i64, batch: Vec<Document>, post: Option<Document>) -> Action {
    Action::cursor(id, NS, BatchKind::First, batch, post, None)
}

pub(crate) fn next_batch(id: i64, batch: Vec<Document>, post: Option<Document>) -> Action {
    Action::cursor(id, NS, BatchKind::Next, batch, post, None)
}

fn stage(cmd: &ReceivedCommand) -> Document {
    let pipeline = cmd.body.get_array("pipeline").expect("pipeline");
    let first = pipeline.first().and_then(Bson::as_document).expect("stage");
    first
        .get_document("$changeStream")
        .expect("$changeStream first")
        .clone()
}

fn token_doc(t: Option<ResumeToken>) -> Document {
    t.expect("a resume token").to_document().unwrap()
}

pub(crate) fn n_of(e: &ChangeStreamEvent<Document>) -> i32 {
    e.full_document
        .as_ref()
        .and_then(|d| d.get_i32("n").ok())
        .expect("fullDocument.n")
}

pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    #[serde(rename = "_id")]
    id: i32,
    n: i32,
    tag: String,
}

#[tokio::test]
async fn collection_stream_sends_every_option_in_the_right_place() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let start = ResumeToken::from_document(&token(7)).unwrap();
    let mut stream = coll
        .watch()
        .pipeline(vec![doc! { "$match": { "operationType": "insert" } }])
        .full_document(FullDocument::UpdateLookup)
        .full_document_before_change(FullDocumentBeforeChange::WhenAvailable)
        .resume_after(start)
        .max_await_time(Duration::from_millis(30))
        .batch_size(10)
        .collation(doc! { "locale": "fr" })
        .comment("tail")
        .show_expanded_events(true)
        .await
        .unwrap();
    assert!(stream.next_if_any().await.unwrap().is_none());

    let agg = fake.commands_named("aggregate");
    assert_eq!(agg.len(), 1);
    let body = &agg[0].body;
    assert_eq!(body.get_str("aggregate").unwrap(), "items");
    assert_eq!(agg[0].db, "app");
    assert_eq!(
        stage(&agg[0]),
        doc! {
            "fullDocument": "updateLookup",
            "fullDocumentBeforeChange": "whenAvailable",
            "resumeAfter": token(7),
            "showExpandedEvents": true,
        }
    );
    let pipeline = body.get_array("pipeline").unwrap();
    assert_eq!(pipeline.len(), 2);
    assert_eq!(
        pipeline[1],
        Bson::Document(doc! { "$match": { "operationType": "insert" } })
    );
    assert_eq!(
        body.get_document("cursor").unwrap(),
        &doc! { "batchSize": 10 }
    );
    assert_eq!(
        body.get_document("collation").unwrap(),
        &doc! { "locale": "fr" }
    );
    assert_eq!(body.get_str("comment").unwrap(), "tail");
    assert!(
        !body.contains_key("maxTimeMS"),
        "maxAwaitTimeMS is never on the aggregate"
    );
    let lsid = body.get_document("lsid").unwrap().clone();

    let gm = fake.commands_named("getMore");
    assert_eq!(gm.len(), 1);
    let g = &gm[0].body;
    assert!(matches!(g.get("getMore"), Some(Bson::Int64(_))));
    assert_eq!(g.get_str("collection").unwrap(), "items");
    assert_eq!(g.get_i32("batchSize").unwrap(), 10);
    assert!(
        matches!(g.get("maxTimeMS"), Some(Bson::Int32(30) | Bson::Int64(30))),
        "{g}"
    );
    assert_eq!(
        g.get_str("comment").unwrap(),
        "tail",
        "wire 21 takes a comment"
    );
    assert_eq!(g.get_document("lsid").unwrap(), &lsid);
    assert_eq!(gm[0].connection_id, agg[0].connection_id);
    stream.close().await.unwrap();
}

#[tokio::test]
async fn database_and_cluster_streams_and_start_options() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let client = client_for(&fake, "").await;
    let db = client.database("app");
    let s1 = db
        .watch()
        .full_document(FullDocument::from("someFutureMode"))
        .full_document_before_change(FullDocumentBeforeChange::Other("later".into()))
        .start_at_operation_time(ts(3))
        .await
        .unwrap();
    let s2 = client
        .watch()
        .start_after(ResumeToken::from_document(&token(9)).unwrap())
        .await
        .unwrap();
    let agg = fake.commands_named("aggregate");
    assert_eq!(agg.len(), 2);
    assert_eq!(agg[0].body.get_i32("aggregate").unwrap(), 1);
    assert_eq!(agg[0].db, "app");
    assert_eq!(
        stage(&agg[0]),
        doc! {
            "fullDocument": "someFutureMode",
            "fullDocumentBeforeChange": "later",
            "startAtOperationTime": ts(3),
        }
    );
    assert_eq!(agg[0].body.get_document("cursor").unwrap(), &doc! {});
    assert_eq!(agg[1].body.get_i32("aggregate").unwrap(), 1);
    assert_eq!(agg[1].db, "admin");
    assert_eq!(
        stage(&agg[1]),
        doc! { "allChangesForCluster": true, "startAfter": token(9) }
    );
    s1.close().await.unwrap();
    s2.close().await.unwrap();
    let kills = fake.commands_named("killCursors");
    assert_eq!(kills.len(), 2);
    assert_eq!(kills[1].db, "admin");
}

#[tokio::test]
async fn empty_batches_move_the_token_and_next_if_any_sends_one_get_more() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions("aggregate", [first(42, vec![], Some(pbrt(1)))]);
    fake.push_actions(
        "getMore",
        [
            next_batch(42, vec![], Some(pbrt(2))),
            next_batch(42, vec![], Some(pbrt(3))),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    assert_eq!(token_doc(stream.resume_token()), pbrt(1));
    assert!(stream.next_if_any().await.unwrap().is_none());
    assert_eq!(fake.commands_named("getMore").len(), 1);
    assert_eq!(stream.get_more_count(), 1);
    assert_eq!(token_doc(stream.resume_token()), pbrt(2));
    assert!(stream.next_if_any().await.unwrap().is_none());
    assert_eq!(fake.commands_named("getMore").len(), 2);
    assert_eq!(token_doc(stream.resume_token()), pbrt(3));
    assert!(stream.is_alive());
    assert_eq!(stream.resume_count(), 0);
    stream.close().await.unwrap();
}

#[tokio::test]
async fn next_if_any_returns_a_get_more_s_first_event_and_buffers_the_rest() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions("aggregate", [first(42, vec![], Some(pbrt(0)))]);
    fake.push_actions(
        "getMore",
        [next_batch(42, vec![ev(1), ev(2)], Some(pbrt(2)))],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    let e1 = stream.next_if_any().await.unwrap().expect("first event");
    assert_eq!(n_of(&e1), 1);
    assert_eq!(token_doc(stream.resume_token()), token(1));
    let e2 = stream.next_if_any().await.unwrap().expect("buffered event");
    assert_eq!(n_of(&e2), 2);
    // Last event of a batch with a postBatchResumeToken: the token is the pbrt.
    assert_eq!(token_doc(stream.resume_token()), pbrt(2));
    assert_eq!(fake.commands_named("getMore").len(), 1);
    stream.close().await.unwrap();
}

/// Runs a stream whose first getMore fails with `failure`, then checks it resumed with
/// `resumeAfter` = the last event's token and yields the next event once.
async fn resumes_after(config: ServerConfig, failure: Action) -> FakeServer {
    let fake = server(config).await;
    fake.push_actions(
        "aggregate",
        [first(42, vec![ev(1)], None), first(43, vec![ev(2)], None)],
    );
    fake.push_actions(
        "getMore",
        [failure, next_batch(43, vec![ev(3)], Some(pbrt(3)))],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = stream.next().await.expect("an event").expect("no error");
        seen.push(n_of(&e));
    }
    assert_eq!(seen, [1, 2, 3], "nothing lost or repeated");
    assert_eq!(stream.resume_count(), 1);
    assert_eq!(token_doc(stream.resume_token()), pbrt(3));
    let agg = fake.commands_named("aggregate");
    assert_eq!(agg.len(), 2);
    assert_eq!(stage(&agg[1]), doc! { "resumeAfter": token(1) });
    let lsid = agg[0].body.get_document("lsid").unwrap();
    assert_eq!(agg[1].body.get_document("lsid").unwrap(), lsid);
    // The old cursor's kill runs in the background, on a pooled connection.
    wait_until("the old cursor's kill", || {
        !fake.commands_named("killCursors").is_empty()
    })
    .await;
    let kills = fake.commands_named("killCursors");
    assert_eq!(kills.len(), 1);
    assert_eq!(
        kills[0].body.get_array("cursors").unwrap(),
        &vec![Bson::Int64(42)]
    );
    assert_eq!(kills[0].body.get_document("lsid").unwrap(), lsid);
    // The getMore after the resume names the new cursor (the serialised getMore is cached
    // per command, so this catches a stale cache), and every getMore carries the lsid.
    let get_mores = fake.commands_named("getMore");
    let ids: Vec<i64> = get_mores
        .iter()
        .map(|c| c.body.get_i64("getMore").unwrap())
        .collect();
    assert_eq!(ids, [42, 43]);
    for g in &get_mores {
        assert_eq!(g.body.get_document("lsid").unwrap(), lsid);
    }
    // The kill is fire and forget: it may land before or after the new aggregate,
    // which never waits for it.
    let mut names: Vec<String> = fake
        .commands()
        .into_iter()
        .map(|c| c.name)
        .filter(|n| n != "hello" && n != "isMaster")
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "aggregate",
            "aggregate",
            "getMore",
            "getMore",
            "killCursors"
        ]
    );
    stream.close().await.unwrap();
    fake
}

#[tokio::test]
async fn connection_reset_mid_get_more_resumes_on_a_new_connection() {
    let fake = resumes_after(
        ServerConfig::replica_set("rs0"),
        Action::fault(Fault::CloseMidReply),
    )
    .await;
    let gm = fake.commands_named("getMore");
    let agg = fake.commands_named("aggregate");
    assert_eq!(gm[0].connection_id, agg[0].connection_id);
    assert_ne!(agg[1].connection_id, gm[0].connection_id, "reconnected");
    assert_eq!(gm[1].connection_id, agg[1].connection_id);
    let kill = &fake.commands_named("killCursors")[0];
    assert_ne!(
        kill.connection_id, gm[0].connection_id,
        "never the dead one"
    );
}

#[tokio::test]
async fn connection_closed_without_reply_resumes() {
    resumes_after(
        ServerConfig::replica_set("rs0"),
        Action::fault(Fault::CloseWithoutReply),
    )
    .await;
}

#[tokio::test]
async fn cursor_not_found_resumes_and_kills_on_the_old_cursor_s_server() {
    let fake = resumes_after(
        ServerConfig::replica_set("rs0"),
        Action::error(43, "CursorNotFound", &[]),
    )
    .await;
    // The kill went to the one server, on a pooled connection (the stream's own
    // connection is busy with the resume's aggregate by then).
    let kill = &fake.commands_named("killCursors")[0];
    assert_eq!(
        kill.body.get_array("cursors").unwrap(),
        &vec![Bson::Int64(42)]
    );
}

#[tokio::test]
async fn labelled_error_at_wire_21_resumes() {
    resumes_after(
        ServerConfig::replica_set("rs0"),
        Action::error(91, "ShutdownInProgress", &[RESUMABLE_CHANGE_STREAM_ERROR]),
    )
    .await;
}

#[tokio::test]
async fn allow_listed_code_at_wire_8_resumes() {
    resumes_after(
        ServerConfig::replica_set("rs0").with_max_wire_version(shapes::WIRE_VERSION_4_2),
        Action::error(189, "PrimarySteppedDown", &[]),
    )
    .await;
}

/// A stream whose first getMore fails with `failure`, which must be fatal.
async fn fatal(config: ServerConfig, failure: Action, code: i32) {
    let fake = server(config).await;
    fake.push_actions("aggregate", [first(42, vec![ev(1)], None)]);
    fake.push_actions("getMore", [failure]);
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    let err = stream.next().await.expect("the error").expect_err("fatal");
    assert_eq!(err.code(), Some(code));
    assert!(err.is_server_error());
    assert!(!stream.is_alive());
    assert_eq!(token_doc(stream.resume_token()), token(1), "token kept");
    assert!(stream.next().await.is_none());
    assert_eq!(stream.resume_count(), 0);
    assert_eq!(fake.commands_named("aggregate").len(), 1, "no resume");
    stream.close().await.unwrap();
}

#[tokio::test]
async fn unlabelled_error_at_wire_21_is_fatal() {
    fatal(
        ServerConfig::replica_set("rs0"),
        Action::error(91, "ShutdownInProgress", &[]),
        91,
    )
    .await;
}

#[tokio::test]
async fn fatal_codes_surface_and_close() {
    for (code, name) in [
        shapes::codes::CHANGE_STREAM_FATAL_ERROR,
        shapes::codes::CHANGE_STREAM_HISTORY_LOST,
        shapes::codes::ELECTION_IN_PROGRESS,
    ] {
        fatal(
            ServerConfig::replica_set("rs0"),
            Action::error(code, name, &[]),
            code,
        )
        .await;
        fatal(
            ServerConfig::replica_set("rs0").with_max_wire_version(shapes::WIRE_VERSION_4_2),
            Action::error(code, name, &[]),
            code,
        )
        .await;
    }
}

#[tokio::test]
async fn invalidate_ends_the_stream() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions("aggregate", [first(42, vec![ev(1)], None)]);
    fake.push_actions(
        "getMore",
        [next_batch(
            0,
            vec![
                shapes::drop_event(ts(2), NS),
                shapes::invalidate_event(ts(3)),
            ],
            None,
        )],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    let mut kinds = Vec::new();
    while let Some(e) = stream.next().await {
        kinds.push(e.unwrap().operation_type);
    }
    assert_eq!(
        kinds,
        [
            OperationType::Insert,
            OperationType::Drop,
            OperationType::Invalidate
        ]
    );
    assert!(!stream.is_alive());
    assert_eq!(token_doc(stream.resume_token()), token(3));
    assert!(stream.next_if_any().await.unwrap().is_none());
    stream.close().await.unwrap();
    assert!(fake.commands_named("killCursors").is_empty(), "cursor id 0");
}

#[tokio::test]
async fn start_after_is_resent_until_an_event_then_resume_after() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![], None),
            first(43, vec![ev(1)], None),
            first(44, vec![], None),
        ],
    );
    fake.push_actions(
        "getMore",
        [
            Action::error(43, "CursorNotFound", &[]),
            Action::error(43, "CursorNotFound", &[]),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll
        .watch()
        .start_after(ResumeToken::from_document(&token(0)).unwrap())
        .await
        .unwrap();
    // getMore → 43 → resume with startAfter (no event yet); its batch has event 1.
    assert_eq!(n_of(&stream.next_if_any().await.unwrap().unwrap()), 1);
    // getMore → 43 → resume with resumeAfter = event 1's token; empty batch.
    assert!(stream.next_if_any().await.unwrap().is_none());
    let agg = fake.commands_named("aggregate");
    assert_eq!(agg.len(), 3);
    assert_eq!(stage(&agg[0]), doc! { "startAfter": token(0) });
    assert_eq!(stage(&agg[1]), doc! { "startAfter": token(0) });
    assert_eq!(stage(&agg[2]), doc! { "resumeAfter": token(1) });
    assert_eq!(stream.resume_count(), 2);
    assert_eq!(
        fake.commands_named("getMore").len(),
        2,
        "one getMore per call"
    );
    stream.close().await.unwrap();
}

#[tokio::test]
async fn initial_aggregate_errors_are_returned_not_resumed() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions(
        "aggregate",
        [
            Action::error(91, "ShutdownInProgress", &[RESUMABLE_CHANGE_STREAM_ERROR]),
            Action::fault(Fault::CloseWithoutReply),
        ],
    );
    // Without retryable reads: the first error is final.
    let client = client_for(&fake, "&retryReads=false").await;
    let coll = client.database("app").collection::<Document>("items");
    let err = coll.watch().await.expect_err("aggregate fails");
    assert_eq!(err.code(), Some(91));
    assert!(err.has_label(RESUMABLE_CHANGE_STREAM_ERROR));
    assert!(
        err.is_resumable_change_stream_error(),
        "resumable, yet not resumed"
    );
    assert_eq!(err.wire_version(), Some(shapes::WIRE_VERSION_7_0));
    assert_eq!(fake.commands_named("aggregate").len(), 1);
    let err = coll.watch().await.expect_err("network error");
    assert!(err.is_network());
    assert_eq!(fake.commands_named("aggregate").len(), 2);
    assert!(fake.commands_named("getMore").is_empty());
}

#[tokio::test]
async fn initial_aggregate_is_retried_once_on_a_retryable_error() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    // A retryable error, then success: the stream opens on the retry.
    fake.push_actions(
        "aggregate",
        [
            Action::error(11600, "InterruptedAtShutdown", &[]),
            first(42, vec![ev(1)], None),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.expect("opened on the retry");
    let e = stream.next().await.unwrap().unwrap();
    assert_eq!(e.id.to_document().unwrap(), token(1));
    assert_eq!(fake.commands_named("aggregate").len(), 2);
    assert_eq!(stream.resume_count(), 0, "a retry is not a resume");
    stream.close().await.unwrap();

    // A network error, then another retryable error: one retry only, its error returned.
    fake.push_actions(
        "aggregate",
        [
            Action::fault(Fault::CloseWithoutReply),
            Action::error(189, "PrimarySteppedDown", &[]),
        ],
    );
    let err = coll.watch().await.expect_err("both attempts fail");
    assert_eq!(err.code(), Some(189), "the retry's error: {err}");
    assert_eq!(fake.commands_named("aggregate").len(), 4);

    // A non-retryable error is not retried.
    fake.push_actions(
        "aggregate",
        [Action::error(280, "ChangeStreamFatalError", &[])],
    );
    let err = coll.watch().await.expect_err("fatal");
    assert_eq!(err.code(), Some(280));
    assert_eq!(fake.commands_named("aggregate").len(), 5);
}

#[tokio::test]
async fn raw_mode_yields_the_bytes_as_sent() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    // An event whose fullDocument would not decode as anything typed: raw does not care.
    let mut odd = ev(1);
    odd.insert("fullDocument", "not a document");
    fake.push_actions("aggregate", [first(42, vec![odd.clone()], None)]);
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Item>("items");
    let mut stream = coll.watch().raw().await.unwrap();
    let e: RawChangeEvent = stream.next().await.unwrap().unwrap();
    assert_eq!(
        e.as_bytes(),
        bson::serialize_to_vec(&odd).unwrap().as_slice()
    );
    assert_eq!(e.resume_token().unwrap().to_document().unwrap(), token(1));
    stream.close().await.unwrap();
}

#[tokio::test]
async fn with_type_decodes_full_documents() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let mut bad = ev(2);
    bad.insert("fullDocument", doc! { "_id": 2, "n": "two" });
    fake.push_actions("aggregate", [first(42, vec![ev(1), bad, ev(3)], None)]);
    let client = client_for(&fake, "").await;
    let db = client.database("app");
    let mut stream = db.watch().with_type::<Item>().await.unwrap();
    let e = stream.next().await.unwrap().unwrap();
    assert_eq!(
        e.full_document,
        Some(Item {
            id: 1,
            n: 1,
            tag: "t1".into()
        })
    );
    // An event that does not fit is an error for that event only.
    let err = stream.next().await.unwrap().expect_err("n is a string");
    assert!(!err.is_server_error());
    assert_eq!(token_doc(stream.resume_token()), token(2));
    let e = stream.next().await.unwrap().unwrap();
    assert_eq!(e.full_document.map(|i| i.n), Some(3));
    assert!(stream.is_alive());
    stream.close().await.unwrap();
}

#[tokio::test]
async fn close_kills_reports_and_drop_after_close_sends_nothing() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions("aggregate", [first(42, vec![ev(1)], None)]);
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let stream = coll.watch().await.unwrap();
    assert!(stream.is_alive());
    stream.close().await.unwrap();
    let kills = fake.commands_named("killCursors");
    assert_eq!(kills.len(), 1);
    assert_eq!(
        kills[0].body.get_array("cursors").unwrap(),
        &vec![Bson::Int64(42)]
    );
    assert_eq!(kills[0].body.get_str("killCursors").unwrap(), "items");
    assert_eq!(
        kills[0].connection_id,
        fake.commands_named("aggregate")[0].connection_id,
        "on the cursor's connection"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.commands_named("killCursors").len(), 1, "nothing twice");

    // A failing killCursors is reported.
    fake.push_actions("aggregate", [first(50, vec![], None)]);
    fake.push_actions("killCursors", [Action::error(13, "Unauthorized", &[])]);
    let stream = coll.watch().await.unwrap();
    let err = stream.close().await.expect_err("reported");
    assert_eq!(err.code(), Some(13));
}

#[tokio::test]
async fn dropping_an_open_stream_kills_its_cursor_in_the_background() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions("aggregate", [first(42, vec![], Some(pbrt(1)))]);
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let stream = coll.watch().await.unwrap();
    let lsid = fake.commands_named("aggregate")[0]
        .body
        .get_document("lsid")
        .unwrap()
        .clone();
    drop(stream);
    wait_until("killCursors after drop", || {
        !fake.commands_named("killCursors").is_empty()
    })
    .await;
    let kill = &fake.commands_named("killCursors")[0];
    assert_eq!(
        kill.body.get_array("cursors").unwrap(),
        &vec![Bson::Int64(42)]
    );
    assert_eq!(kill.body.get_document("lsid").unwrap(), &lsid);
}

#[tokio::test]
async fn an_event_without_id_closes_the_stream() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    let mut no_id = ev(2);
    no_id.remove("_id");
    fake.push_actions("aggregate", [first(42, vec![ev(1), no_id, ev(3)], None)]);
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    stream.next().await.unwrap().unwrap();
    let err = stream.next().await.unwrap().expect_err("missing token");
    assert!(err.is_missing_resume_token());
    assert!(err.to_string().contains("resume token is missing"), "{err}");
    assert!(!stream.is_alive());
    assert_eq!(token_doc(stream.resume_token()), token(1));
    assert!(stream.next().await.is_none());
    // The machine queued the cursor's kill when it closed: it runs on the next poll.
    wait_until("killCursors after the fatal error", || {
        !fake.commands_named("killCursors").is_empty()
    })
    .await;
    stream.close().await.unwrap();
    assert_eq!(fake.commands_named("killCursors").len(), 1);
}

#[tokio::test]
async fn a_dropped_next_mid_get_more_loses_nothing_and_needs_no_resume() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions("aggregate", [first(42, vec![ev(1)], None)]);
    fake.push_actions(
        "getMore",
        [
            Action::delay(Duration::from_secs(1), next_batch(42, vec![ev(2)], None)),
            next_batch(42, vec![ev(3)], None),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    let timed_out = tokio::time::timeout(Duration::from_millis(150), stream.next()).await;
    assert!(timed_out.is_err(), "the getMore was still in flight");
    assert_eq!(fake.commands_named("getMore").len(), 1);
    // Between the dropped call and the next one, the stream's state is sound.
    assert_eq!(token_doc(stream.resume_token()), token(1));
    assert!(stream.is_alive());
    // The next call picks up the reply of the getMore the dropped call sent.
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 2);
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 3);
    assert_eq!(stream.resume_count(), 0);
    assert_eq!(fake.commands_named("aggregate").len(), 1);
    let get_mores = fake.commands_named("getMore");
    assert_eq!(get_mores.len(), 2);
    assert_eq!(
        get_mores[0].connection_id, get_mores[1].connection_id,
        "the stream kept its connection"
    );
    stream.close().await.unwrap();
}

#[tokio::test]
async fn a_dropped_next_if_any_mid_resume_picks_up_the_aggregate() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![ev(1)], None),
            // The resume's aggregate is slow: the call that sent it is dropped.
            Action::delay(
                Duration::from_secs(1),
                first(43, vec![ev(2)], Some(pbrt(2))),
            ),
        ],
    );
    fake.push_actions("getMore", [Action::error(43, "CursorNotFound", &[])]);
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    assert_eq!(n_of(&stream.next_if_any().await.unwrap().unwrap()), 1);
    let timed_out = tokio::time::timeout(Duration::from_millis(200), stream.next_if_any()).await;
    assert!(timed_out.is_err(), "the resume's aggregate was in flight");
    assert_eq!(fake.commands_named("aggregate").len(), 2);
    assert!(stream.is_alive());
    assert_eq!(token_doc(stream.resume_token()), token(1));
    assert_eq!(n_of(&stream.next_if_any().await.unwrap().unwrap()), 2);
    assert_eq!(token_doc(stream.resume_token()), pbrt(2));
    let agg = fake.commands_named("aggregate");
    assert_eq!(agg.len(), 2, "the aggregate was not sent again");
    assert_eq!(stage(&agg[1]), doc! { "resumeAfter": token(1) });
    assert_eq!(stream.resume_count(), 1);
    assert_eq!(fake.commands_named("getMore").len(), 1);
    stream.close().await.unwrap();
}

#[tokio::test]
async fn a_dropped_stream_next_keeps_the_get_more_for_the_next_poll() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions("aggregate", [first(42, vec![], None)]);
    fake.push_actions(
        "getMore",
        [Action::delay(
            Duration::from_millis(300),
            next_batch(42, vec![ev(1)], None),
        )],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    let timed_out =
        tokio::time::timeout(Duration::from_millis(50), StreamExt::next(&mut stream)).await;
    assert!(timed_out.is_err());
    let e = StreamExt::next(&mut stream).await.unwrap().unwrap();
    assert_eq!(n_of(&e), 1);
    assert_eq!(
        stream.resume_count(),
        0,
        "the reply was picked up, no resume"
    );
    assert_eq!(fake.commands_named("getMore").len(), 1);
    stream.close().await.unwrap();
}

#[tokio::test]
async fn a_long_poll_does_not_starve_the_pool() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions("aggregate", [first(42, vec![], None)]);
    fake.push_actions(
        "getMore",
        [Action::delay(
            Duration::from_secs(1),
            next_batch(42, vec![ev(1)], None),
        )],
    );
    let client = client_for(&fake, "&maxPoolSize=1&waitQueueTimeoutMS=5000").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    let poller = tokio::spawn(async move {
        let e = stream.next().await;
        (e.map(|r| r.is_ok()), stream)
    });
    wait_until("the getMore is sent", || {
        !fake.commands_named("getMore").is_empty()
    })
    .await;
    let mut cursor = coll.find(doc! {}).await.unwrap();
    assert!(cursor.next().await.is_none());
    assert!(
        !poller.is_finished(),
        "the find completed while the getMore was still waiting for its reply"
    );
    let names: Vec<String> = fake
        .commands()
        .into_iter()
        .map(|c| c.name)
        .filter(|n| n == "getMore" || n == "find")
        .collect();
    assert_eq!(names, ["getMore", "find"]);
    let gm = &fake.commands_named("getMore")[0];
    let find = &fake.commands_named("find")[0];
    assert_ne!(gm.connection_id, find.connection_id);
    let (event, stream) = poller.await.unwrap();
    assert_eq!(event, Some(true));
    stream.close().await.unwrap();
}

#[tokio::test]
async fn an_explicit_session_s_lsid_is_on_every_command() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions(
        "aggregate",
        [first(42, vec![ev(1)], None), first(43, vec![], None)],
    );
    fake.push_actions("getMore", [Action::error(43, "CursorNotFound", &[])]);
    let client = client_for(&fake, "").await;
    let session = client.start_session().await.unwrap();
    let lsid = session.id().clone();
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().session(&session).await.unwrap();
    drop(session);
    stream.next().await.unwrap().unwrap();
    assert!(stream.next_if_any().await.unwrap().is_none());
    stream.close().await.unwrap();
    let sent: Vec<ReceivedCommand> = fake
        .commands()
        .into_iter()
        .filter(|c| matches!(c.name.as_str(), "aggregate" | "getMore" | "killCursors"))
        .collect();
    let mut names: Vec<&str> = sent.iter().map(|c| c.name.as_str()).collect();
    // The resume's kill runs in the background: before or after the new aggregate.
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "aggregate",
            "aggregate",
            "getMore",
            "killCursors",
            "killCursors"
        ]
    );
    for c in &sent {
        assert_eq!(c.body.get_document("lsid").unwrap(), &lsid, "{}", c.name);
    }
}

#[tokio::test]
async fn a_proxy_cut_mid_get_more_resumes_from_the_post_batch_token() {
    use brook_testkit::{Proxy, ProxyConfig};
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![ev(1)], Some(pbrt(1))),
            first(43, vec![], None),
        ],
    );
    fake.push_actions(
        "getMore",
        [
            next_batch(42, vec![], Some(pbrt(4))),
            Action::delay(
                Duration::from_millis(300),
                next_batch(42, vec![ev(5)], None),
            ),
            next_batch(43, vec![ev(5)], None),
        ],
    );
    let proxy = Proxy::start(fake.addr(), ProxyConfig::pass_through())
        .await
        .unwrap();
    let client =
        Client::connect(&proxy.uri_with("serverSelectionTimeoutMS=5000&directConnection=true"))
            .await
            .unwrap();
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    assert!(stream.next_if_any().await.unwrap().is_none());
    assert_eq!(token_doc(stream.resume_token()), pbrt(4));
    let cutter = async {
        wait_until("second getMore", || {
            fake.commands_named("getMore").len() >= 2
        })
        .await;
        proxy.cut_all();
    };
    let (event, ()) = tokio::join!(stream.next(), cutter);
    assert_eq!(n_of(&event.unwrap().unwrap()), 5);
    let agg = fake.commands_named("aggregate");
    assert_eq!(stage(&agg[1]), doc! { "resumeAfter": pbrt(4) });
    assert_eq!(stream.resume_count(), 1);
    stream.close().await.unwrap();
}

/// A cursor's getMore is serialised once and sent again unchanged: every round trip
/// carries the same command (cursor id, collection, maxTimeMS, lsid, `$db`) under a new
/// requestID, and a resume to a new cursor switches to that cursor's getMore.
#[tokio::test]
async fn repeated_get_mores_are_the_same_command_until_the_cursor_changes() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions(
        "aggregate",
        [first(42, vec![ev(1)], None), first(43, vec![], None)],
    );
    fake.push_actions(
        "getMore",
        [
            next_batch(42, vec![], Some(pbrt(1))),
            next_batch(42, vec![], Some(pbrt(1))),
            Action::error(43, "CursorNotFound", &[]),
            next_batch(43, vec![], Some(pbrt(1))),
            next_batch(43, vec![ev(2)], None),
        ],
    );
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll
        .watch()
        .max_await_time(Duration::from_millis(250))
        .await
        .unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 2);
    stream.close().await.unwrap();
    let get_mores = fake.commands_named("getMore");
    let ids: Vec<i64> = get_mores
        .iter()
        .map(|c| c.body.get_i64("getMore").unwrap())
        .collect();
    assert_eq!(ids, [42, 42, 42, 43, 43]);
    let lsid = fake.commands_named("aggregate")[0]
        .body
        .get_document("lsid")
        .unwrap()
        .clone();
    for g in &get_mores {
        let id = g.body.get_i64("getMore").unwrap();
        let want = doc! {
            "getMore": id, "collection": "items", "maxTimeMS": 250,
            "lsid": lsid.clone(), "$db": "app",
        };
        assert_eq!(g.body, want);
    }
    let request_ids: std::collections::HashSet<i32> =
        get_mores.iter().map(|c| c.request_id).collect();
    assert_eq!(
        request_ids.len(),
        get_mores.len(),
        "a new requestID each time"
    );
}

/// The stream tells which server its cursor is on, and nothing once it ended.
#[tokio::test]
async fn the_stream_names_the_server_of_its_cursor() {
    let fake = server(ServerConfig::replica_set("rs0")).await;
    fake.push_actions("aggregate", [first(42, vec![], None)]);
    fake.push_actions("getMore", [next_batch(0, vec![ev(1)], None)]);
    let client = client_for(&fake, "").await;
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    assert_eq!(stream.server_address().cloned(), client.server_address());
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    assert!(stream.next().await.is_none(), "the cursor was exhausted");
    assert_eq!(stream.server_address(), None);
}
