//! The failure paths of the executor and the pool, end to end against the testkit: each
//! test names the rule it checks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use brook::monitoring::{CloseReason, CmapEvent, EventHandler, PoolEvent};
use brook::{Client, ClientOptions};

use crate::change_stream::{NS, ev, first, n_of, next_batch, ts, wait_until};
use brook_testkit::shapes;
use brook_testkit::{Action, FakeServer, Fault, Proxy, ProxyConfig, ServerConfig};
use bson::{Document, doc};

const WAIT: Duration = Duration::from_secs(10);

async fn server() -> FakeServer {
    FakeServer::start(ServerConfig::replica_set("rs0"))
        .await
        .expect("fake server starts")
}

/// A client on `uri` whose pool events are recorded.
async fn recorded_client(uri: &str) -> (Client, Arc<Mutex<Vec<PoolEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let mut options = ClientOptions::parse(uri).expect("uri");
    options.cmap_event_handler = Some(EventHandler::new(move |e: &CmapEvent| {
        sink.lock().unwrap().push(e.event.clone());
    }));
    let client = Client::with_options(options)
        .await
        .expect("client connects");
    (client, events)
}

fn uri_of(server: &FakeServer, query: &str) -> String {
    format!(
        "mongodb://{}/?serverSelectionTimeoutMS=5000{query}",
        server.host_port()
    )
}

fn killed_ids(fake: &FakeServer) -> Vec<i64> {
    fake.commands_named("killCursors")
        .iter()
        .flat_map(|c| {
            c.body
                .get_array("cursors")
                .map(|a| a.iter().filter_map(bson::Bson::as_i64).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect()
}

/// Failure path 1: a network error on a stream's getMore clears the pool; the resume's
/// aggregate never takes one of the (dead) idle connections of the old generation.
#[tokio::test]
async fn a_network_error_clears_the_pool_and_the_resume_uses_a_fresh_connection() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [first(42, vec![ev(1)], None), first(43, vec![], None)],
    );
    fake.push_actions(
        "getMore",
        [
            Action::delay(
                Duration::from_millis(400),
                next_batch(42, vec![ev(2)], None),
            ),
            next_batch(43, vec![ev(3)], None),
        ],
    );
    // Three overlapping pings leave three idle connections in the pool.
    fake.push_actions(
        "ping",
        (0..3).map(|_| Action::delay(Duration::from_millis(100), Action::ok())),
    );
    let proxy = Proxy::start(fake.addr(), ProxyConfig::pass_through())
        .await
        .unwrap();
    let (client, events) =
        recorded_client(&proxy.uri_with("serverSelectionTimeoutMS=5000&directConnection=true"))
            .await;
    let db = client.database("app");
    let pings = (0..3).map(|_| db.run_command(doc! { "ping": 1 }));
    for r in futures_util::future::join_all(pings).await {
        r.unwrap();
    }
    let coll = db.collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    let cutter = async {
        wait_until("the getMore", || !fake.commands_named("getMore").is_empty()).await;
        proxy.cut_all();
    };
    let (event, ()) = tokio::join!(stream.next(), cutter);
    assert_eq!(n_of(&event.expect("an event").expect("resumed")), 3);
    assert_eq!(stream.resume_count(), 1);
    let events = events.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PoolEvent::PoolCleared { .. })),
        "the pool was cleared: {events:?}"
    );
    // The idle connections of the old generation were closed as stale, never used.
    let stale = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                PoolEvent::ConnectionClosed {
                    reason: CloseReason::Stale,
                    ..
                }
            )
        })
        .count();
    assert!(stale >= 1, "stale idle connections were closed: {events:?}");
    stream.close().await.unwrap();
}

/// A stream (maxAwaitTimeMS 100) whose first getMore the server accepts and never
/// answers; the resume's cursor then yields event 1.
async fn stream_with_a_silent_get_more(
    query: &str,
) -> (
    FakeServer,
    brook::ChangeStream<brook::ChangeStreamEvent<Document>>,
) {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [first(42, vec![], None), first(43, vec![], None)],
    );
    fake.push_actions(
        "getMore",
        [
            Action::fault(Fault::Hang),
            next_batch(43, vec![ev(1)], None),
        ],
    );
    let client = Client::connect(&uri_of(&fake, query)).await.unwrap();
    let coll = client.database("app").collection::<Document>("items");
    let stream = coll
        .watch()
        .max_await_time(Duration::from_millis(100))
        .await
        .unwrap();
    (fake, stream)
}

/// Failure path 2: a getMore the server accepts and never answers is a network timeout
/// after maxAwaitTimeMS + the grace (here shortened by socketTimeoutMS, which bounds
/// every read): the connection is discarded and the stream resumes.
#[tokio::test]
async fn a_get_more_that_never_answers_times_out_and_the_stream_resumes() {
    let (_fake, mut stream) = stream_with_a_silent_get_more("&socketTimeoutMS=500").await;
    let event = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no hang");
    assert_eq!(n_of(&event.unwrap().unwrap()), 1);
    assert_eq!(stream.resume_count(), 1);
}

/// Failure path 2, without socketTimeoutMS: the getMore's own bound is maxAwaitTimeMS
/// plus [`brook::GET_MORE_GRACE`].
#[tokio::test]
async fn without_socket_timeout_a_silent_get_more_is_bounded_by_the_grace() {
    let (_fake, mut stream) = stream_with_a_silent_get_more("").await;
    let started = tokio::time::Instant::now();
    let bound = Duration::from_millis(100) + brook::GET_MORE_GRACE + Duration::from_secs(5);
    let event = tokio::time::timeout(bound, stream.next())
        .await
        .expect("bounded by maxAwaitTime + grace");
    assert_eq!(n_of(&event.unwrap().unwrap()), 1);
    assert!(started.elapsed() >= brook::GET_MORE_GRACE);
}

/// Failure path 2: the resume's killCursors is fire-and-forget; a server that never
/// answers it does not delay the resume.
#[tokio::test]
async fn a_hanging_kill_cursors_never_delays_the_resume() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [first(42, vec![], None), first(43, vec![ev(1)], None)],
    );
    fake.push_actions("getMore", [Action::error(43, "CursorNotFound", &[])]);
    fake.push_actions("killCursors", [Action::fault(Fault::Hang)]);
    let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(3), stream.next())
        .await
        .expect("the resume does not wait for killCursors");
    assert_eq!(n_of(&event.unwrap().unwrap()), 1);
    wait_until("the kill was sent", || killed_ids(&fake).contains(&42)).await;
}

/// Failure path 3: a reply flagged moreToCome to a request without exhaustAllowed is a
/// protocol error; the connection is closed, never reused.
#[tokio::test]
async fn an_unasked_more_to_come_breaks_the_connection_for_good() {
    let fake = server().await;
    fake.push_actions(
        "ping",
        [Action::MoreToCome(vec![
            doc! { "ok": 1.0 },
            doc! { "ok": 1.0 },
        ])],
    );
    let (client, events) = recorded_client(&uri_of(&fake, "")).await;
    let db = client.database("app");
    let err = db.run_command(doc! { "ping": 1 }).await.unwrap_err();
    assert!(err.is_protocol(), "{err}");
    for _ in 0..3 {
        db.run_command(doc! { "ping": 1 }).await.unwrap();
    }
    let events = events.lock().unwrap().clone();
    assert!(
        events.iter().any(|e| matches!(
            e,
            PoolEvent::ConnectionClosed {
                reason: CloseReason::Error,
                ..
            }
        )),
        "{events:?}"
    );
}

/// Failure path 4: any getMore error that is not a server error is resumable: a checksum
/// mismatch, a malformed frame, a wrong responseTo, an unknown required flag.
#[tokio::test]
async fn protocol_errors_on_get_more_resume_the_stream() {
    let faults = [
        Fault::BadChecksum,
        Fault::BadBson,
        Fault::WrongResponseTo,
        Fault::UnknownRequiredFlag(1 << 5),
        Fault::UnknownSectionKind(7),
    ];
    for fault in faults {
        let name = format!("{fault:?}");
        let fake = server().await;
        fake.push_actions(
            "aggregate",
            [first(42, vec![], None), first(43, vec![ev(1)], None)],
        );
        fake.push_actions("getMore", [Action::fault(fault)]);
        let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
        let coll = client.database("app").collection::<Document>("items");
        let mut stream = coll.watch().await.unwrap();
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect(&name);
        let event = event
            .expect(&name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(n_of(&event), 1, "{name}");
        assert_eq!(stream.resume_count(), 1, "{name}");
        assert!(stream.is_alive(), "{name}");
    }
}

/// Failure path 5: `batch_size(0)` goes on the aggregate only, never on a getMore.
#[tokio::test]
async fn batch_size_zero_is_sent_on_the_aggregate_only() {
    let fake = server().await;
    fake.push_actions("aggregate", [first(42, vec![], None)]);
    fake.push_actions("getMore", [next_batch(42, vec![ev(1)], None)]);
    let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().batch_size(0).await.unwrap();
    stream.next().await.unwrap().unwrap();
    let agg = &fake.commands_named("aggregate")[0];
    assert_eq!(
        agg.body.get_document("cursor").unwrap(),
        &doc! { "batchSize": 0 }
    );
    let gm = &fake.commands_named("getMore")[0];
    assert!(!gm.body.contains_key("batchSize"), "{}", gm.body);
}

/// Failure path 7: a watch() future dropped while its aggregate is in flight kills the
/// cursor when the reply arrives.
#[tokio::test]
async fn a_dropped_watch_kills_the_cursor_its_aggregate_opened() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [Action::delay(
            Duration::from_millis(300),
            first(42, vec![], None),
        )],
    );
    let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
    let coll = client.database("app").collection::<Document>("items");
    let opened = tokio::time::timeout(Duration::from_millis(50), coll.watch().into_future()).await;
    assert!(opened.is_err(), "the watch was dropped mid-aggregate");
    wait_until("the orphan cursor is killed", || killed_ids(&fake) == [42]).await;
}

/// Failure path 7: close() while a resume's aggregate is in flight kills the old cursor
/// and the one the resume opens.
#[tokio::test]
async fn close_during_a_resume_kills_whichever_cursor_exists() {
    let fake = server().await;
    fake.push_actions(
        "aggregate",
        [
            first(42, vec![], None),
            Action::delay(Duration::from_millis(300), first(43, vec![], None)),
        ],
    );
    fake.push_actions("getMore", [Action::error(43, "CursorNotFound", &[])]);
    let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
    let coll = client.database("app").collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    // The getMore fails, the resume starts and its aggregate is in flight when the
    // call is abandoned.
    let call = tokio::time::timeout(Duration::from_millis(150), stream.next()).await;
    assert!(call.is_err());
    stream.close().await.unwrap();
    wait_until("both cursors are killed", || {
        let mut ids = killed_ids(&fake);
        ids.sort_unstable();
        ids == [42, 43]
    })
    .await;
}

/// Failure path 7: an abandoned command marks its session dirty: its lsid is never used
/// again.
#[tokio::test]
async fn an_abandoned_command_never_reuses_its_session() {
    let fake = server().await;
    fake.push_actions(
        "ping",
        [Action::delay(Duration::from_millis(300), Action::ok())],
    );
    let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
    let db = client.database("app");
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        db.run_command(doc! { "ping": 1 }),
    )
    .await;
    assert!(abandoned.is_err());
    for _ in 0..3 {
        db.run_command(doc! { "ping": 1 }).await.unwrap();
    }
    let pings = fake.commands_named("ping");
    let lsids: Vec<&Document> = pings
        .iter()
        .map(|c| c.body.get_document("lsid").unwrap())
        .collect();
    assert_eq!(lsids.len(), 4);
    assert!(lsids[1..].iter().all(|l| *l != lsids[0]), "{lsids:?}");
    // A session that completed normally is reused.
    assert_eq!(lsids[1], lsids[2]);
}

/// Failure path 8: shutdown's endSessions runs on a pooled connection, not a new one.
#[tokio::test]
async fn shutdown_uses_pooled_connections() {
    let fake = server().await;
    let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
    client
        .database("app")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap();
    let accepted = fake.connections_accepted();
    client.shutdown().await;
    let ends = fake.commands_named("endSessions");
    assert_eq!(ends.len(), 1);
    assert_eq!(fake.connections_accepted(), accepted, "no new connection");
}

/// A stream's connection belongs to the pool's generation: after a clear (here caused by
/// another operation's network error) the stream's next getMore runs on a new connection.
#[tokio::test]
async fn a_stream_never_reuses_a_connection_of_an_older_generation() {
    let fake = server().await;
    fake.push_actions("aggregate", [first(42, vec![], None)]);
    fake.push_actions(
        "getMore",
        [
            next_batch(42, vec![], None),
            next_batch(42, vec![ev(1)], None),
        ],
    );
    fake.push_actions("ping", [Action::fault(Fault::CloseWithoutReply)]);
    let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
    let db = client.database("app");
    let coll = db.collection::<Document>("items");
    let mut stream = coll.watch().await.unwrap();
    assert!(stream.next_if_any().await.unwrap().is_none());
    assert!(
        db.run_command(doc! { "ping": 1 })
            .await
            .unwrap_err()
            .is_network()
    );
    assert_eq!(n_of(&stream.next().await.unwrap().unwrap()), 1);
    let gm = fake.commands_named("getMore");
    assert_eq!(gm.len(), 2);
    assert_ne!(
        gm[0].connection_id, gm[1].connection_id,
        "a new connection after the clear"
    );
    assert_eq!(stream.resume_count(), 0, "the cursor itself was fine");
}

/// CMAP events reach the handler set on the client options.
#[tokio::test]
async fn pool_events_reach_the_handler() {
    let fake = server().await;
    let (client, events) = recorded_client(&uri_of(&fake, "")).await;
    client
        .database("app")
        .run_command(doc! { "ping": 1 })
        .await
        .unwrap();
    client.shutdown().await;
    let events = events.lock().unwrap().clone();
    let names: Vec<&str> = events
        .iter()
        .map(|e| match e {
            PoolEvent::PoolCreated { .. } => "created",
            PoolEvent::PoolReady => "ready",
            PoolEvent::ConnectionCreated { .. } => "conn-created",
            PoolEvent::ConnectionReady { .. } => "conn-ready",
            PoolEvent::CheckOutStarted => "checkout",
            PoolEvent::CheckedOut { .. } => "out",
            PoolEvent::CheckedIn { .. } => "in",
            PoolEvent::ConnectionClosed { .. } => "conn-closed",
            PoolEvent::PoolClosed => "closed",
            _ => "other",
        })
        .collect();
    assert_eq!(
        names,
        [
            "created",
            "ready",
            "checkout",
            "conn-created",
            "conn-ready",
            "out",
            "in",
            "checkout",
            "out",
            "in",
            "conn-closed",
            "closed",
        ]
    );
}

/// `minPoolSize` is acted on: the pool opens that many connections in the background.
#[tokio::test]
async fn min_pool_size_fills_the_pool_in_the_background() {
    let fake = server().await;
    let (_client, events) = recorded_client(&uri_of(&fake, "&minPoolSize=3")).await;
    wait_until("three pooled connections", || {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, PoolEvent::ConnectionReady { .. }))
            .count()
            == 3
    })
    .await;
    // The discovery handshake's connection, then the pool's three.
    assert_eq!(fake.connections_accepted(), 4);
}

/// An operation on a server marked unknown waits for a check to find it again (up to
/// serverSelectionTimeoutMS) instead of failing on a cleared pool.
#[tokio::test]
async fn operations_wait_for_the_server_after_a_network_error() {
    let fake = server().await;
    fake.push_actions(
        "ping",
        [Action::fault(Fault::CloseWithoutReply), Action::ok()],
    );
    let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
    let db = client.database("app");
    let (first, second) = tokio::join!(db.run_command(doc! { "ping": 1 }), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        db.run_command(doc! { "ping": 1 }).await
    });
    assert!(first.unwrap_err().is_network());
    second.expect("waited for the server, then ran");
}

/// With the server gone for good, selection gives up after serverSelectionTimeoutMS
/// with a timeout error naming the last failure.
#[tokio::test]
async fn a_server_that_stays_down_fails_selection_in_time() {
    let fake = server().await;
    let proxy = Proxy::start(fake.addr(), ProxyConfig::pass_through())
        .await
        .unwrap();
    let client = Client::connect(
        &proxy.uri_with("serverSelectionTimeoutMS=700&connectTimeoutMS=200&directConnection=true"),
    )
    .await
    .unwrap();
    let db = client.database("app");
    db.run_command(doc! { "ping": 1 }).await.unwrap();
    // The server goes away: the listener closes with every connection.
    proxy.shutdown().await;
    let err = db.run_command(doc! { "ping": 1 }).await.unwrap_err();
    assert!(err.is_network(), "{err}");
    let started = tokio::time::Instant::now();
    let err = db.run_command(doc! { "ping": 1 }).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// The executor gossips the cluster time: every command carries the highest
/// `$clusterTime` received (a lower one never replaces it), the serialised getMore of a
/// change stream included.
#[tokio::test]
async fn the_highest_cluster_time_is_gossiped_on_every_command() {
    let fake = server().await;
    let with_time = |t: u32| {
        let mut reply = doc! { "ok": 1.0 };
        reply.insert("$clusterTime", shapes::cluster_time(ts(t)));
        Action::reply(reply)
    };
    fake.push_actions("ping", [with_time(50), with_time(20), Action::ok()]);
    fake.push_actions("aggregate", [first(42, vec![], None)]);
    fake.push_actions("getMore", [next_batch(42, vec![ev(1)], None)]);
    let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
    let db = client.database("app");
    for _ in 0..3 {
        db.run_command(doc! { "ping": 1 }).await.unwrap();
    }
    let mut stream = db.collection::<Document>("items").watch().await.unwrap();
    stream.next().await.unwrap().unwrap();
    let pings = fake.commands_named("ping");
    assert!(
        !pings[0].body.contains_key("$clusterTime"),
        "nothing seen yet"
    );
    let sent = |c: &brook_testkit::ReceivedCommand| {
        c.body
            .get_document("$clusterTime")
            .and_then(|d| d.get_timestamp("clusterTime"))
            .expect("a $clusterTime")
    };
    assert_eq!(sent(&pings[1]), ts(50));
    assert_eq!(sent(&pings[2]), ts(50), "a lower cluster time is not kept");
    assert_eq!(sent(&fake.commands_named("aggregate")[0]), ts(50));
    let gm = &fake.commands_named("getMore")[0];
    assert_eq!(sent(gm), ts(50));
    assert_eq!(
        gm.body.get_document("$clusterTime").unwrap(),
        &shapes::cluster_time(ts(50)),
        "the whole document, signature included"
    );
}

/// A typed event that does not decode is an error naming the field and carrying the
/// event's token; the stream has moved past it and goes on.
#[tokio::test]
async fn a_typed_decode_error_names_the_field_and_the_stream_goes_on() {
    #[derive(Debug, serde::Deserialize)]
    struct Item {
        n: i32,
    }
    let fake = server().await;
    let bad = shapes::insert_event(ts(1), NS, doc! { "_id": 1, "n": "one" });
    fake.push_actions("aggregate", [first(42, vec![bad, ev(2)], None)]);
    let client = Client::connect(&uri_of(&fake, "")).await.unwrap();
    let coll = client.database("app").collection::<Item>("items");
    let mut stream = coll.watch().await.unwrap();
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(err.is_event_decode(), "{err}");
    assert_eq!(err.decode_path(), Some("fullDocument.n"), "{err}");
    let token = err.resume_token().expect("the failed event's token");
    assert_eq!(token.to_document().unwrap(), shapes::resume_token(ts(1), 0));
    assert!(stream.is_alive());
    let next = stream.next().await.unwrap().unwrap();
    assert_eq!(next.full_document.map(|d| d.n), Some(2));
}

/// SDAM through the pool's manager: a handshake that fails on the network clears the
/// pool (PoolCleared before the failed connection's ConnectionClosed) and marks the
/// server unknown. The operation, whose command was never sent, waits for the check
/// (within serverSelectionTimeoutMS) and runs on a connection of the new generation.
#[tokio::test]
async fn a_failed_handshake_clears_the_pool_and_the_server_comes_back() {
    let fake = server().await;
    // Polling: the fault below must hit the pool's handshake, not the streaming
    // monitor's awaitable hello.
    let (client, events) = recorded_client(&uri_of(&fake, "&serverMonitoringMode=poll")).await;
    fake.push_actions("hello", [Action::fault(Fault::CloseWithoutReply)]);
    let db = client.database("app");
    db.run_command(doc! { "ping": 1 }).await.unwrap();
    assert_eq!(fake.queued("hello"), 0, "the failing handshake happened");
    assert_eq!(fake.commands_named("ping").len(), 1, "sent once");
    let events = events.lock().unwrap().clone();
    let cleared = events
        .iter()
        .position(|e| matches!(e, PoolEvent::PoolCleared { .. }))
        .expect("the pool was cleared");
    let closed = events
        .iter()
        .position(|e| {
            matches!(
                e,
                PoolEvent::ConnectionClosed {
                    reason: CloseReason::Error,
                    ..
                }
            )
        })
        .expect("the failed connection was closed");
    assert!(cleared < closed, "{events:?}");
    let readies = events
        .iter()
        .filter(|e| matches!(e, PoolEvent::PoolReady))
        .count();
    assert_eq!(readies, 2, "ready at creation, and again after the check");
}
