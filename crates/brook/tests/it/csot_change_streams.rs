//! `timeoutMS` on change streams: every case of the CSOT specification's
//! `client-side-operations-timeout/tests/change-streams.json` (and the `watch` cases of
//! `tailable-awaitData.json`), mirrored on the testkit. A `failCommand` failpoint with
//! `blockConnection`/`blockTimeMS` is a delayed reply here; the times are scaled up from
//! the spec's (200 ms timeouts become 500 ms, blocks grow with them) so that a loaded
//! two-core machine cannot turn a pass into a fail; every assertion on time is a lower
//! bound.
//!
//! | spec case (change-streams.json)                                  | test |
//! |---|---|
//! | error if maxAwaitTimeMS is greater than timeoutMS                | `error_if_max_await_time_is_greater_than_or_equal_to_the_timeout` |
//! | error if maxAwaitTimeMS is equal to timeoutMS                    | same |
//! | timeoutMS applied to initial aggregate                           | `timeout_applied_to_initial_aggregate` |
//! | timeoutMS is refreshed for getMore if maxAwaitTimeMS is not set   | `timeout_refreshed_for_get_more_without_max_await_time` |
//! | timeoutMS is refreshed for getMore if maxAwaitTimeMS is set       | `timeout_refreshed_for_get_more_with_max_await_time` |
//! | timeoutMS applies to full resume attempt in a next call           | `timeout_applies_to_the_full_resume_attempt_in_a_next_call` |
//! | change stream can be iterated again if previous iteration times out | `can_be_iterated_again_after_a_timed_out_iteration` |
//! | timeoutMS is refreshed for getMore - failure                     | `timeout_refreshed_for_get_more_failure` |
//! | (tailable-awaitData) error on watch if maxAwaitTimeMS is greater / equal | `error_if_max_await_time_is_greater_than_or_equal_to_the_timeout` |

use std::time::{Duration, Instant};

use brook::{Client, Collection};
use brook_testkit::shapes::RESUMABLE_CHANGE_STREAM_ERROR;
use brook_testkit::{Action, FakeServer, ReceivedCommand, ServerConfig};
use bson::{Bson, Document, doc};
use futures_util::StreamExt;

use crate::change_stream::{ev, first, n_of, next_batch, pbrt};

const TIMEOUT: Duration = Duration::from_millis(500);

async fn server() -> FakeServer {
    FakeServer::start(ServerConfig::replica_set("rs0"))
        .await
        .expect("fake server starts")
}

async fn collection(server: &FakeServer, query: &str) -> (Client, Collection<Document>) {
    let uri = format!(
        "mongodb://{}/?serverSelectionTimeoutMS=5000{query}",
        server.host_port()
    );
    let client = Client::connect(&uri).await.expect("client connects");
    let coll = client.database("test").collection::<Document>("coll");
    (client, coll)
}

fn blocked(ms: u64, then: Action) -> Action {
    Action::delay(Duration::from_millis(ms), then)
}

/// Whether the command carries `maxTimeMS` as an int or a long.
fn has_max_time(cmd: &ReceivedCommand) -> bool {
    matches!(
        cmd.body.get("maxTimeMS"),
        Some(Bson::Int32(_) | Bson::Int64(_))
    )
}

/// The commands the stream sent, but the handshake's and monitoring's and the
/// background killCursors (ignored by the spec file's `ignoreCommandMonitoringEvents`).
fn sent(server: &FakeServer) -> Vec<ReceivedCommand> {
    server
        .commands()
        .into_iter()
        .filter(|c| {
            !matches!(
                c.name.as_str(),
                "hello" | "isMaster" | "killCursors" | "endSessions"
            )
        })
        .collect()
}

fn names(cmds: &[ReceivedCommand]) -> Vec<&str> {
    cmds.iter().map(|c| c.name.as_str()).collect()
}

#[tokio::test]
async fn error_if_max_await_time_is_greater_than_or_equal_to_the_timeout() {
    let fake = server().await;
    let (_client, coll) = collection(&fake, "").await;
    for wait in [10, 5] {
        let err = coll
            .watch()
            .timeout(Duration::from_millis(5))
            .max_await_time(Duration::from_millis(wait))
            .await
            .expect_err("a client error");
        assert!(err.is_invalid_argument(), "{err}");
        assert!(err.to_string().contains("maxAwaitTimeMS"), "{err}");
    }
    // Also when the timeout comes from the collection.
    let err = coll
        .clone()
        .with_timeout(Duration::from_millis(5))
        .watch()
        .max_await_time(Duration::from_millis(5))
        .await
        .expect_err("a client error");
    assert!(err.is_invalid_argument());
    assert!(fake.commands_named("aggregate").is_empty(), "nothing sent");
    // timeoutMS=0 is no limit: any maxAwaitTimeMS goes.
    fake.push_action("aggregate", first(42, vec![], Some(pbrt(1))));
    let stream = coll
        .watch()
        .timeout(Duration::ZERO)
        .max_await_time(Duration::from_millis(5))
        .await
        .expect("no limit");
    stream.close().await.unwrap();
}

#[tokio::test]
async fn timeout_applied_to_initial_aggregate() {
    let fake = server().await;
    fake.push_action(
        "aggregate",
        blocked(1_500, first(42, vec![], Some(pbrt(1)))),
    );
    // timeoutMS from the connection string.
    let (_client, coll) = collection(&fake, "&timeoutMS=500").await;
    let started = Instant::now();
    let err = coll.watch().await.expect_err("timed out");
    assert!(err.is_timeout(), "{err}");
    assert!(err.is_operation_timeout(), "{err}");
    assert!(started.elapsed() >= TIMEOUT);
    let cmds = sent(&fake);
    assert_eq!(names(&cmds), ["aggregate"]);
    assert!(has_max_time(&cmds[0]), "{:?}", cmds[0].body);
    let max_time = cmds[0]
        .body
        .get_i64("maxTimeMS")
        .unwrap_or_else(|_| i64::from(cmds[0].body.get_i32("maxTimeMS").unwrap()));
    assert!(max_time > 0 && max_time <= 500, "{max_time}");
}

#[tokio::test]
async fn timeout_refreshed_for_get_more_without_max_await_time() {
    let fake = server().await;
    fake.push_action("aggregate", blocked(30, first(42, vec![], Some(pbrt(1)))));
    fake.push_action(
        "getMore",
        blocked(30, next_batch(42, vec![], Some(pbrt(2)))),
    );
    let (_client, coll) = collection(&fake, "").await;
    let mut stream = coll
        .watch()
        .timeout(Duration::from_millis(1050))
        .await
        .unwrap();
    assert!(stream.next_if_any().await.unwrap().is_none());
    let cmds = sent(&fake);
    assert_eq!(names(&cmds), ["aggregate", "getMore"]);
    assert!(has_max_time(&cmds[0]));
    assert!(
        cmds[1].body.get("maxTimeMS").is_none(),
        "a getMore never carries a maxTimeMS derived from timeoutMS"
    );
    stream.close().await.unwrap();
}

#[tokio::test]
async fn timeout_refreshed_for_get_more_with_max_await_time() {
    let fake = server().await;
    // Each command takes more than half the timeout: together they exceed it, so the
    // getMore passes only with a fresh timeout of its own.
    fake.push_action("aggregate", blocked(300, first(42, vec![], Some(pbrt(1)))));
    fake.push_action(
        "getMore",
        blocked(300, next_batch(42, vec![ev(2)], Some(pbrt(2)))),
    );
    let (_client, coll) = collection(&fake, "").await;
    let mut stream = coll
        .watch()
        .timeout(TIMEOUT)
        .batch_size(2)
        .max_await_time(Duration::from_millis(1))
        .await
        .unwrap();
    let event = stream.next_if_any().await.unwrap().expect("the event");
    assert_eq!(n_of(&event), 2);
    let cmds = sent(&fake);
    assert_eq!(names(&cmds), ["aggregate", "getMore"]);
    assert!(has_max_time(&cmds[0]));
    assert!(
        matches!(
            cmds[1].body.get("maxTimeMS"),
            Some(Bson::Int32(1) | Bson::Int64(1))
        ),
        "maxAwaitTimeMS: {:?}",
        cmds[1].body
    );
    stream.close().await.unwrap();
}

#[tokio::test]
async fn timeout_applies_to_the_full_resume_attempt_in_a_next_call() {
    let fake = server().await;
    let host_not_found = || Action::error(7, "HostNotFound", &[RESUMABLE_CHANGE_STREAM_ERROR]);
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![], Some(pbrt(1))),
            blocked(300, host_not_found()),
        ],
    );
    fake.push_action("getMore", blocked(300, host_not_found()));
    let (_client, coll) = collection(&fake, "").await;
    let mut stream = coll.watch().timeout(TIMEOUT).await.unwrap();
    let started = Instant::now();
    let err = stream
        .next()
        .await
        .expect("an item")
        .expect_err("timed out");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= TIMEOUT);
    let cmds = sent(&fake);
    assert_eq!(names(&cmds), ["aggregate", "getMore", "aggregate"]);
    assert!(has_max_time(&cmds[0]));
    assert!(cmds[1].body.get("maxTimeMS").is_none());
    assert!(has_max_time(&cmds[2]), "the resume's aggregate too");
    // The stream is still alive, its token intact.
    assert!(stream.is_alive());
    assert_eq!(
        stream.resume_token().unwrap().to_document().unwrap(),
        pbrt(1)
    );
}

#[tokio::test]
async fn can_be_iterated_again_after_a_timed_out_iteration() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![], Some(pbrt(1))),
            first(43, vec![], Some(pbrt(3))),
        ],
    );
    fake.push_actions(
        "getMore",
        [
            blocked(1_500, next_batch(42, vec![], Some(pbrt(2)))),
            next_batch(43, vec![ev(4)], Some(pbrt(4))),
        ],
    );
    let (_client, coll) = collection(&fake, "").await;
    let mut stream = coll
        .watch()
        .max_await_time(Duration::from_millis(1))
        .timeout(TIMEOUT)
        .await
        .unwrap();
    // iterateUntilDocumentOrError, through the Stream trait.
    let err = StreamExt::next(&mut stream)
        .await
        .expect("an item")
        .expect_err("timed out");
    assert!(err.is_timeout(), "{err}");
    assert!(stream.is_alive());
    assert_eq!(
        stream.resume_token().unwrap().to_document().unwrap(),
        pbrt(1),
        "the token is intact"
    );
    // iterateOnce: the stream resumes from its token.
    let event = stream.next_if_any().await.unwrap().expect("an event");
    assert_eq!(n_of(&event), 4);
    let cmds = sent(&fake);
    assert_eq!(
        names(&cmds),
        ["aggregate", "getMore", "aggregate", "getMore"]
    );
    let stage = cmds[2].body.get_array("pipeline").unwrap()[0]
        .as_document()
        .unwrap()
        .get_document("$changeStream")
        .unwrap()
        .clone();
    assert_eq!(stage, doc! { "resumeAfter": pbrt(1) });
    assert!(has_max_time(&cmds[2]));
    assert_eq!(stream.resume_count(), 1);
    stream.close().await.unwrap();
}

#[tokio::test]
async fn timeout_refreshed_for_get_more_failure() {
    let fake = server().await;
    fake.push_action("aggregate", first(42, vec![], Some(pbrt(1))));
    fake.push_action(
        "getMore",
        blocked(1_500, next_batch(42, vec![], Some(pbrt(2)))),
    );
    let (_client, coll) = collection(&fake, "").await;
    let mut stream = coll.with_timeout(TIMEOUT).watch().await.unwrap();
    let started = Instant::now();
    let err = stream
        .next()
        .await
        .expect("an item")
        .expect_err("timed out");
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "not the server's reply"
    );
    assert_eq!(names(&sent(&fake)), ["aggregate", "getMore"]);
}

#[tokio::test]
async fn next_batch_is_bounded_too_and_a_timeout_never_loses_a_buffered_event() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![ev(1)], None),
            first(43, vec![ev(2)], Some(pbrt(2))),
        ],
    );
    fake.push_action(
        "getMore",
        blocked(1_500, next_batch(42, vec![], Some(pbrt(9)))),
    );
    let (_client, coll) = collection(&fake, "").await;
    let mut stream = coll.watch().timeout(TIMEOUT).await.unwrap();
    let batch = stream.next_batch().await.unwrap();
    assert_eq!(batch.len(), 1);
    let err = stream.next_batch().await.expect_err("timed out");
    assert!(err.is_timeout());
    let batch = stream.next_batch().await.unwrap();
    assert_eq!(batch.len(), 1, "resumed after event 1: event 2 next");
    assert_eq!(n_of(&batch.events()[0]), 2);
    stream.close().await.unwrap();
}
