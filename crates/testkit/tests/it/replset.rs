//! The fake replica set through real sockets: hello shapes across elections, kills,
//! restarts, blackholes, streaming hello, and change streams that resume across a failover.

use std::time::{Duration, Instant};

use brook_conn::{ConnError, Connection, ConnectionOptions, ServerAddress};
use brook_testkit::shapes::RESUMABLE_CHANGE_STREAM_ERROR;
use brook_testkit::{Action, ReplicaSet, ReplicaSetConfig, TopologyVersion};
use brook_wire::{Message, MsgFlags};
use bson::oid::ObjectId;
use bson::{Bson, Document, doc};

use super::{message, options, within};

async fn start_set() -> ReplicaSet {
    ReplicaSet::start(ReplicaSetConfig::new("rs0"))
        .await
        .expect("bind three members")
}

fn address(set: &ReplicaSet, i: usize) -> ServerAddress {
    ServerAddress::new("127.0.0.1", set.member(i).port())
}

async fn connect(set: &ReplicaSet, i: usize) -> Connection {
    Connection::connect(&address(set, i), &options(None))
        .await
        .expect("handshake with the member")
}

/// Send `body` (with `$db: admin` unless it has a `$db`) and return the reply's body.
async fn raw(conn: &mut Connection, body: Document) -> Document {
    let mut body = body;
    if !body.contains_key("$db") {
        body.insert("$db", "admin");
    }
    let reply = conn
        .send(&message(body, MsgFlags::empty()))
        .await
        .expect("a reply")
        .expect("a reply, not moreToCome");
    reply.body.to_document().expect("a BSON reply")
}

async fn hello(set: &ReplicaSet, i: usize) -> Document {
    let mut conn = connect(set, i).await;
    raw(&mut conn, doc! { "hello": 1 }).await
}

fn version_of(reply: &Document) -> TopologyVersion {
    let tv = reply
        .get_document("topologyVersion")
        .expect("topologyVersion");
    TopologyVersion {
        process_id: tv.get_object_id("processId").expect("processId"),
        counter: tv.get_i64("counter").expect("counter is an int64"),
    }
}

fn labels(reply: &Document) -> Vec<String> {
    reply
        .get_array("errorLabels")
        .map(|l| {
            l.iter()
                .filter_map(Bson::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn batch<'a>(reply: &'a Document, field: &str) -> &'a Vec<Bson> {
    reply
        .get_document("cursor")
        .expect("a cursor reply")
        .get_array(field)
        .expect("a batch")
}

fn ids(batch: &[Bson]) -> Vec<i32> {
    batch
        .iter()
        .map(|e| {
            let e = e.as_document().expect("an event");
            e.get_document("fullDocument")
                .expect("fullDocument")
                .get_i32("_id")
                .expect("_id")
        })
        .collect()
}

fn cursor_id(reply: &Document) -> i64 {
    reply
        .get_document("cursor")
        .expect("a cursor reply")
        .get_i64("id")
        .expect("cursor id")
}

fn change_stream(stage: Document) -> Document {
    doc! {
        "aggregate": "orders",
        "pipeline": [{ "$changeStream": stage }],
        "cursor": {},
        "$db": "shop",
    }
}

fn get_more(id: i64, max_time_ms: i64) -> Document {
    doc! { "getMore": id, "collection": "orders", "maxTimeMS": max_time_ms, "$db": "shop" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_shapes_follow_step_down_elect_and_reconfig() {
    within(async {
        let set = start_set().await;
        let hosts: Vec<Bson> = set.hosts().iter().cloned().map(Bson::String).collect();
        assert_eq!(
            set.uri(),
            format!("mongodb://{}/?replicaSet=rs0", set.hosts().join(","))
        );
        let mut before = Vec::new();
        for i in 0..3 {
            let h = hello(&set, i).await;
            assert_eq!(h.get_str("setName").unwrap(), "rs0");
            assert_eq!(h.get_array("hosts").unwrap(), &hosts);
            assert_eq!(h.get_str("me").unwrap(), set.hosts()[i]);
            assert_eq!(h.get_str("primary").unwrap(), set.hosts()[0]);
            assert_eq!(h.get_bool("isWritablePrimary").unwrap(), i == 0);
            assert_eq!(h.get_bool("secondary").unwrap(), i != 0);
            assert_eq!(h.contains_key("electionId"), i == 0);
            assert_eq!(h.get_i32("setVersion").unwrap(), 1);
            assert_eq!(h.get_i32("maxWireVersion").unwrap(), 21);
            assert_eq!(h.get_i32("logicalSessionTimeoutMinutes").unwrap(), 30);
            assert!(h.get_document("lastWrite").is_ok());
            assert!(h.get_document("$clusterTime").is_ok());
            before.push(version_of(&h));
        }
        assert_ne!(before[0].process_id, before[1].process_id);
        let first_election = hello(&set, 0).await.get_object_id("electionId").unwrap();
        assert_eq!(first_election, set.election_id());

        set.step_down().await;
        assert_eq!(set.primary(), None);
        for (i, seen) in before.iter().enumerate() {
            let h = hello(&set, i).await;
            assert!(!h.contains_key("primary"), "no primary after a step-down");
            assert!(!h.get_bool("isWritablePrimary").unwrap());
            assert!(h.get_bool("secondary").unwrap());
            assert!(!h.contains_key("electionId"));
            let now = version_of(&h);
            assert_eq!(now.process_id, seen.process_id);
            assert_eq!(now.counter, seen.counter + 1);
        }

        set.elect(2).await.unwrap();
        for (i, seen) in before.iter().enumerate() {
            let h = hello(&set, i).await;
            assert_eq!(h.get_str("primary").unwrap(), set.hosts()[2]);
            assert_eq!(h.get_bool("isWritablePrimary").unwrap(), i == 2);
            assert_eq!(version_of(&h).counter, seen.counter + 2);
        }
        let second_election = hello(&set, 2).await.get_object_id("electionId").unwrap();
        assert!(second_election > first_election, "electionId grows");

        set.reconfig().await;
        let h = hello(&set, 1).await;
        assert_eq!(h.get_i32("setVersion").unwrap(), 2);
        assert_eq!(version_of(&h).counter, before[1].counter + 3);
        assert!(set.elect(7).await.is_err());

        // Replies the set leaves to the fake server's defaults gossip the set's clock.
        let mut conn = connect(&set, 1).await;
        let pong = raw(&mut conn, doc! { "ping": 1 }).await;
        assert_eq!(
            pong.get_timestamp("operationTime").unwrap(),
            set.cluster_time()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_closes_everything_and_restart_listens_on_the_same_port() {
    within(async {
        let set = start_set().await;
        let port = set.member(0).port();
        let old = version_of(&hello(&set, 0).await);
        let mut conn = connect(&set, 0).await;
        let survivor = version_of(&hello(&set, 1).await);

        set.kill(0).await.unwrap();
        assert_eq!(set.primary(), None, "the killed primary leaves no primary");
        assert!(conn.run("admin", &brook_command::Ping).await.is_err());
        assert!(
            Connection::connect(&address(&set, 0), &options(None))
                .await
                .is_err(),
            "nothing listens on a killed member's port"
        );
        let h = hello(&set, 1).await;
        assert!(!h.contains_key("primary"));
        assert_eq!(version_of(&h).counter, survivor.counter + 1);

        set.restart(0).await.unwrap();
        assert_eq!(set.member(0).port(), port);
        let h = hello(&set, 0).await;
        let new = version_of(&h);
        assert_ne!(new.process_id, old.process_id, "a new process");
        assert_eq!(new.counter, 0);
        assert!(
            h.get_bool("secondary").unwrap(),
            "a restarted member is secondary"
        );
        set.elect(0).await.unwrap();
        assert!(hello(&set, 0).await.get_bool("isWritablePrimary").unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_member_accepts_but_never_answers() {
    within(async {
        let set = start_set().await;
        let mut conn = connect(&set, 1).await;
        conn.set_socket_timeout(Some(Duration::from_millis(200)));
        set.blackhole(1).await.unwrap();

        let started = Instant::now();
        let err = conn.run("admin", &brook_command::Ping).await.unwrap_err();
        assert!(matches!(err, ConnError::Timeout { .. }), "got {err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // The port still accepts connections; the handshake times out.
        let quick = ConnectionOptions {
            connect_timeout: Duration::from_millis(200),
            socket_timeout: Some(Duration::from_millis(200)),
            ..ConnectionOptions::default()
        };
        let fresh = Connection::connect(&address(&set, 1), &quick).await;
        assert!(
            matches!(fresh, Err(ConnError::Timeout { .. })),
            "got {fresh:?}"
        );
        assert!(set.member(1).connections_accepted() >= 2);
        assert!(set.member(1).commands_named("ping").is_empty());

        set.unblackhole(1).await.unwrap();
        let mut conn = connect(&set, 1).await;
        conn.run("admin", &brook_command::Ping).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_stream_reads_events_in_order() {
    within(async {
        let set = start_set().await;
        set.insert_event("shop.orders", doc! { "_id": 0 });
        let mut conn = connect(&set, 0).await;
        let opened = raw(&mut conn, change_stream(doc! {})).await;
        assert!(
            batch(&opened, "firstBatch").is_empty(),
            "a new stream starts at the end"
        );
        let id = cursor_id(&opened);
        assert_ne!(id, 0);

        for i in 1..=3 {
            set.insert_event("shop.orders", doc! { "_id": i });
        }
        let reply = raw(&mut conn, get_more(id, 1000)).await;
        let events = batch(&reply, "nextBatch");
        assert_eq!(ids(events), [1, 2, 3]);
        let tokens: Vec<String> = events
            .iter()
            .map(|e| {
                let e = e.as_document().unwrap();
                e.get_document("_id")
                    .unwrap()
                    .get_str("_data")
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens grow");
        let pbrt = reply
            .get_document("cursor")
            .unwrap()
            .get_document("postBatchResumeToken")
            .unwrap();
        assert!(pbrt.get_str("_data").unwrap() >= tokens[2].as_str());

        // Nothing new: an empty batch after maxTimeMS, with a token past the last event.
        let started = Instant::now();
        let reply = raw(&mut conn, get_more(id, 100)).await;
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert!(batch(&reply, "nextBatch").is_empty());
        let hwm = reply
            .get_document("cursor")
            .unwrap()
            .get_document("postBatchResumeToken")
            .unwrap();
        assert!(hwm.get_str("_data").unwrap() > tokens[2].as_str());

        // A waiting getMore wakes as soon as an event arrives; inserts sent to the primary
        // are logged too.
        let mut writer = connect(&set, 0).await;
        let started = Instant::now();
        let (reply, inserted) = tokio::join!(raw(&mut conn, get_more(id, 5000)), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            raw(
                &mut writer,
                doc! { "insert": "orders", "documents": [{ "_id": 4 }], "$db": "shop" },
            )
            .await
        });
        assert_eq!(inserted.get_i32("n").unwrap(), 1);
        assert_eq!(ids(batch(&reply, "nextBatch")), [4]);
        assert!(started.elapsed() < Duration::from_secs(2));

        // A batchSize is honoured.
        for i in 5..=7 {
            set.insert_event("shop.orders", doc! { "_id": i });
        }
        let mut small = get_more(id, 1000);
        small.insert("batchSize", 2);
        assert_eq!(
            ids(batch(&raw(&mut conn, small).await, "nextBatch")),
            [5, 6]
        );
        assert_eq!(
            ids(batch(
                &raw(&mut conn, get_more(id, 1000)).await,
                "nextBatch"
            )),
            [7]
        );
        assert_eq!(set.events().len(), 8);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_the_new_primary_continues_exactly_after_the_token() {
    within(async {
        let set = start_set().await;
        let mut old = connect(&set, 0).await;
        let id = cursor_id(&raw(&mut old, change_stream(doc! {})).await);
        for i in 1..=4 {
            set.insert_event("shop.orders", doc! { "_id": i });
        }
        let mut first = get_more(id, 1000);
        first.insert("batchSize", 2);
        let reply = raw(&mut old, first).await;
        let events = batch(&reply, "nextBatch");
        assert_eq!(ids(events), [1, 2]);
        let token = events[1]
            .as_document()
            .unwrap()
            .get_document("_id")
            .unwrap()
            .clone();

        // A member's queued actions come first, as on any fake server.
        set.member(0).push_action(
            "getMore",
            Action::error(
                11602,
                "InterruptedDueToReplStateChange",
                &[RESUMABLE_CHANGE_STREAM_ERROR],
            ),
        );
        let scripted = raw(&mut old, get_more(id, 1000)).await;
        assert_eq!(scripted.get_i32("code").unwrap(), 11602);

        set.step_down().await;
        let refused = raw(&mut old, get_more(id, 1000)).await;
        assert_eq!(refused.get_i32("code").unwrap(), 10107);
        assert_eq!(labels(&refused), [RESUMABLE_CHANGE_STREAM_ERROR]);

        set.elect(1).await.unwrap();
        let mut new = connect(&set, 1).await;
        let lost = raw(&mut new, get_more(id, 100)).await;
        assert_eq!(
            lost.get_i32("code").unwrap(),
            43,
            "the cursor lives on member 0"
        );

        let resumed = raw(
            &mut new,
            change_stream(doc! { "resumeAfter": token.clone() }),
        )
        .await;
        let mut seen = ids(batch(&resumed, "firstBatch"));
        let id = cursor_id(&resumed);
        set.insert_event("shop.orders", doc! { "_id": 5 });
        seen.extend(ids(batch(
            &raw(&mut new, get_more(id, 1000)).await,
            "nextBatch",
        )));
        assert_eq!(seen, [3, 4, 5], "no event lost, none repeated");

        // startAfter and startAtOperationTime position the same way.
        let after = raw(&mut new, change_stream(doc! { "startAfter": token })).await;
        assert_eq!(ids(batch(&after, "firstBatch")), [3, 4, 5]);
        let third = set.events()[2].get_timestamp("clusterTime").unwrap();
        let at = raw(
            &mut new,
            change_stream(doc! { "startAtOperationTime": third }),
        )
        .await;
        assert_eq!(ids(batch(&at, "firstBatch")), [3, 4, 5]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_refuses_change_streams_and_writes_with_10107() {
    within(async {
        let set = start_set().await;
        let mut conn = connect(&set, 1).await;
        let refused = raw(&mut conn, change_stream(doc! {})).await;
        assert_eq!(refused.get_f64("ok").unwrap(), 0.0);
        assert_eq!(refused.get_i32("code").unwrap(), 10107);
        assert_eq!(refused.get_str("codeName").unwrap(), "NotWritablePrimary");
        assert_eq!(labels(&refused), [RESUMABLE_CHANGE_STREAM_ERROR]);

        let mut secondary_read = change_stream(doc! {});
        secondary_read.insert("$readPreference", doc! { "mode": "secondaryPreferred" });
        assert_eq!(
            raw(&mut conn, secondary_read).await.get_f64("ok").unwrap(),
            1.0
        );

        let write = doc! { "insert": "orders", "documents": [{ "_id": 1 }], "$db": "shop" };
        let refused = raw(&mut conn, write.clone()).await;
        assert_eq!(refused.get_i32("code").unwrap(), 10107);
        assert!(labels(&refused).is_empty());
        let mut retryable = write;
        retryable.insert("txnNumber", 1i64);
        let refused = raw(&mut conn, retryable).await;
        assert_eq!(labels(&refused), ["RetryableWriteError"]);
        assert!(set.events().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_member_interrupts_a_waiting_get_more() {
    within(async {
        let set = start_set().await;
        let mut conn = connect(&set, 0).await;
        let id = cursor_id(&raw(&mut conn, change_stream(doc! {})).await);
        let mut monitor = connect(&set, 0).await;
        let seen = set.topology_version(0).unwrap();
        let request = awaitable_hello(&seen, 5000);
        let (reply, hello, ()) = tokio::join!(
            raw(&mut conn, get_more(id, 5000)),
            monitor.send(&request),
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                set.stop(0).await.unwrap();
            }
        );
        assert_eq!(reply.get_i32("code").unwrap(), 11600);
        assert_eq!(labels(&reply), [RESUMABLE_CHANGE_STREAM_ERROR]);
        let hello = hello.unwrap().unwrap();
        assert!(
            !hello.flags.contains(MsgFlags::MORE_TO_COME),
            "an error ends the stream"
        );
        assert_eq!(body(&hello).get_i32("code").unwrap(), 91);
        assert!(!set.is_up(0).unwrap());
        assert_eq!(set.primary(), None);
    })
    .await;
}

fn awaitable_hello(seen: &TopologyVersion, max_await_ms: i64) -> Message {
    message(
        doc! {
            "hello": 1,
            "topologyVersion": { "processId": seen.process_id, "counter": seen.counter },
            "maxAwaitTimeMS": max_await_ms,
            "$db": "admin",
        },
        MsgFlags::EXHAUST_ALLOWED,
    )
}

fn body(msg: &Message) -> Document {
    msg.body.to_document().expect("a BSON reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_hello_answers_on_change_and_after_the_wait() {
    within(async {
        let set = start_set().await;
        let seen = set.topology_version(1).unwrap();
        let mut conn = connect(&set, 1).await;

        // A stale topologyVersion is answered at once.
        let stale = TopologyVersion {
            process_id: ObjectId::new(),
            counter: 0,
        };
        let started = Instant::now();
        let reply = conn
            .send(&awaitable_hello(&stale, 10_000))
            .await
            .unwrap()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(version_of(&body(&reply)), seen);
        assert!(reply.flags.contains(MsgFlags::MORE_TO_COME));
        drop(conn);

        // The current one waits for a change, then streams one reply per change or wait.
        let mut conn = connect(&set, 1).await;
        let request = awaitable_hello(&seen, 300);
        let started = Instant::now();
        let (first, ()) = tokio::join!(conn.send(&request), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            set.elect(1).await.unwrap();
        });
        let first = first.unwrap().unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(280),
            "answered on the change"
        );
        assert_eq!(first.response_to, request.request_id);
        assert!(first.flags.contains(MsgFlags::MORE_TO_COME));
        let doc = body(&first);
        assert!(doc.get_bool("isWritablePrimary").unwrap());
        assert_eq!(version_of(&doc).counter, seen.counter + 1);

        let started = Instant::now();
        let second = conn.receive_more().await.unwrap();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "waited {waited:?}");
        assert!(waited < Duration::from_secs(2));
        assert!(second.flags.contains(MsgFlags::MORE_TO_COME));
        assert_eq!(version_of(&body(&second)).counter, seen.counter + 1);

        let started = Instant::now();
        let (third, ()) = tokio::join!(conn.receive_more(), async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            set.step_down().await;
        });
        assert!(started.elapsed() < Duration::from_millis(250));
        let doc = body(&third.unwrap());
        assert!(doc.get_bool("secondary").unwrap());
        assert_eq!(version_of(&doc).counter, seen.counter + 2);

        // Without exhaustAllowed: one reply, no moreToCome.
        let mut plain = connect(&set, 2).await;
        let mut request = awaitable_hello(&set.topology_version(2).unwrap(), 100);
        request.flags = MsgFlags::empty();
        let started = Instant::now();
        let reply = plain.send(&request).await.unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert!(!reply.flags.contains(MsgFlags::MORE_TO_COME));
        plain.run("admin", &brook_command::Ping).await.unwrap();
    })
    .await;
}

fn token_of(event: &Bson) -> Document {
    event
        .as_document()
        .expect("an event")
        .get_document("_id")
        .expect("an _id")
        .clone()
}

fn pbrt(reply: &Document) -> Document {
    reply
        .get_document("cursor")
        .expect("a cursor reply")
        .get_document("postBatchResumeToken")
        .expect("a postBatchResumeToken")
        .clone()
}

/// The reply is `{ok: 0, code, codeName}` with no error label.
fn assert_error(reply: &Document, code: i32, code_name: &str) {
    assert_eq!(reply.get_f64("ok").ok(), Some(0.0), "{reply:?}");
    assert_eq!(reply.get_i32("code").ok(), Some(code), "{reply:?}");
    assert_eq!(reply.get_str("codeName").ok(), Some(code_name));
    assert!(labels(reply).is_empty(), "no error label: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_before_the_oplog_fails_with_history_lost() {
    within(async {
        let set = start_set().await;
        let mut conn = connect(&set, 0).await;
        let mut open = change_stream(doc! {});
        open.insert("cursor", doc! { "batchSize": 0 });
        let reading = cursor_id(&raw(&mut conn, open).await);
        for i in 1..=5 {
            set.insert_event("shop.orders", doc! { "_id": i });
        }
        let mut two = get_more(reading, 1000);
        two.insert("batchSize", 2);
        let reply = raw(&mut conn, two).await;
        let events = batch(&reply, "nextBatch").clone();
        assert_eq!(ids(&events), [1, 2]);
        let second = token_of(&events[1]);
        let logged = set.events();
        let time_of = |i: usize| logged[i].get_timestamp("clusterTime").unwrap();
        let third = logged[2].get_document("_id").unwrap().clone();
        let fourth = logged[3].get_document("_id").unwrap().clone();
        // A high-water mark past every event, from an idle stream.
        let idle = raw(&mut conn, change_stream(doc! {})).await;
        assert!(batch(&idle, "firstBatch").is_empty());
        let hwm = pbrt(&idle);

        // The oplog rolls over: events 1–3 are gone.
        set.truncate_history(2);
        assert_eq!(
            ids(&set
                .events()
                .into_iter()
                .map(Bson::Document)
                .collect::<Vec<_>>()),
            [4, 5]
        );

        // The open cursor's next event was dropped: 136, and the cursor is gone.
        let lost = raw(&mut conn, get_more(reading, 100)).await;
        assert_error(&lost, 136, "CappedPositionLost");
        assert_error(
            &raw(&mut conn, get_more(reading, 100)).await,
            43,
            "CursorNotFound",
        );

        // Resuming from a dropped point: 286, with the server's message, no label.
        for stage in [
            doc! { "resumeAfter": second.clone() },
            doc! { "startAfter": second.clone() },
            doc! { "resumeAfter": third.clone() },
            doc! { "startAtOperationTime": time_of(0) },
            doc! { "startAtOperationTime": time_of(2) },
        ] {
            let reply = raw(&mut conn, change_stream(stage.clone())).await;
            assert_error(&reply, 286, "ChangeStreamHistoryLost");
            assert_eq!(
                reply.get_str("errmsg").unwrap(),
                "Resume of change stream was not possible, as the resume point may no longer \
                 be in the oplog.",
                "{stage:?}"
            );
        }

        // Points still in the oplog resume as before.
        let after_fourth = raw(&mut conn, change_stream(doc! { "resumeAfter": fourth })).await;
        assert_eq!(ids(batch(&after_fourth, "firstBatch")), [5]);
        let at_fourth = raw(
            &mut conn,
            change_stream(doc! { "startAtOperationTime": time_of(3) }),
        )
        .await;
        assert_eq!(ids(batch(&at_fourth, "firstBatch")), [4, 5]);
        let from_hwm = raw(
            &mut conn,
            change_stream(doc! { "resumeAfter": hwm.clone() }),
        )
        .await;
        assert!(batch(&from_hwm, "firstBatch").is_empty());
        let id = cursor_id(&from_hwm);
        set.insert_event("shop.orders", doc! { "_id": 6 });
        assert_eq!(
            ids(batch(
                &raw(&mut conn, get_more(id, 1000)).await,
                "nextBatch"
            )),
            [6]
        );

        // Everything rolls off: only points from now on can be resumed from, and a new
        // stream (no start option) opens as ever.
        set.truncate_history(0);
        assert!(set.events().is_empty());
        assert_error(
            &raw(&mut conn, change_stream(doc! { "resumeAfter": hwm })).await,
            286,
            "ChangeStreamHistoryLost",
        );
        let fresh = raw(&mut conn, change_stream(doc! {})).await;
        assert_eq!(fresh.get_f64("ok").ok(), Some(1.0));
        let fresh_hwm = pbrt(&fresh);
        set.insert_event("shop.orders", doc! { "_id": 7 });
        let resumed = raw(&mut conn, change_stream(doc! { "resumeAfter": fresh_hwm })).await;
        assert_eq!(ids(batch(&resumed, "firstBatch")), [7]);
    })
    .await;
}

const MIB16: usize = 16 * 1024 * 1024;

fn split_stream(stage: Document) -> Document {
    doc! {
        "aggregate": "orders",
        "pipeline": [{ "$changeStream": stage }, { "$changeStreamSplitLargeEvent": {} }],
        "cursor": {},
        "$db": "shop",
    }
}

/// An update event with pre- and post-images of `len` bytes of string each.
fn large_update(id: i32, len: usize) -> Document {
    let big = "a".repeat(len);
    doc! {
        "operationType": "update",
        "clusterTime": bson::Timestamp { time: 0, increment: 0 },
        "wallTime": bson::DateTime::from_millis(0),
        "ns": { "db": "shop", "coll": "orders" },
        "documentKey": { "_id": id },
        "updateDescription": { "updatedFields": { "n": 2 }, "removedFields": [], "truncatedArrays": [] },
        "fullDocument": { "_id": id, "big": big.clone(), "n": 2 },
        "fullDocumentBeforeChange": { "_id": id, "big": big, "n": 1 },
    }
}

fn size_of(doc: &Document) -> usize {
    doc.to_vec().expect("serialisable").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_fail_unless_split_then_come_in_fragments_that_resume() {
    within(async {
        let set = start_set().await;
        let mut conn = connect(&set, 0).await;
        let start = set.cluster_time();
        set.insert_event("shop.orders", doc! { "_id": 1 });
        // Two images just under 16 MiB each: a ~32 MiB event, in three fragments, two of
        // them so close to 16 MiB that the reply carrying one is over 16 MiB.
        let logged = set.append_event(large_update(2, MIB16 - 200));
        assert!(size_of(&logged) > 2 * MIB16 - 1024);
        set.insert_event("shop.orders", doc! { "_id": 3 });

        // Without the split stage: 10334 where the stream reaches the large event.
        let mut plain = change_stream(doc! { "startAtOperationTime": start });
        plain.insert("cursor", doc! { "batchSize": 1 });
        let opened = raw(&mut conn, plain).await;
        assert_eq!(ids(batch(&opened, "firstBatch")), [1]);
        let id = cursor_id(&opened);
        let failed = raw(&mut conn, get_more(id, 1000)).await;
        assert_error(&failed, 10334, "BSONObjectTooLarge");
        assert!(failed.get_str("errmsg").unwrap().contains("BSONObj size"));
        assert_error(
            &raw(&mut conn, get_more(id, 100)).await,
            43,
            "CursorNotFound",
        );
        let refused = raw(
            &mut conn,
            change_stream(doc! { "startAtOperationTime": start }),
        )
        .await;
        assert_error(&refused, 10334, "BSONObjectTooLarge");

        // With it: the small event, then the fragments — the small fields first, then
        // each image alone, one large fragment a batch (a batch stays within 16 MiB) —
        // then the next event.
        let opened = raw(
            &mut conn,
            split_stream(doc! { "startAtOperationTime": start }),
        )
        .await;
        let id = cursor_id(&opened);
        let mut replies = vec![opened];
        for _ in 0..3 {
            replies.push(raw(&mut conn, get_more(id, 1000)).await);
        }
        let batches: Vec<Vec<Document>> = replies
            .iter()
            .zip(["firstBatch", "nextBatch", "nextBatch", "nextBatch"])
            .map(|(r, field)| {
                batch(r, field)
                    .iter()
                    .map(|d| d.as_document().unwrap().clone())
                    .collect()
            })
            .collect();
        let lens: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(lens, [2, 1, 1, 1], "{batches:?}");
        assert_eq!(
            batches[0][0]
                .get_document("fullDocument")
                .unwrap()
                .get_i32("_id")
                .ok(),
            Some(1)
        );
        assert_eq!(
            batches[3][0]
                .get_document("fullDocument")
                .unwrap()
                .get_i32("_id")
                .ok(),
            Some(3)
        );
        let fragments = [
            batches[0][1].clone(),
            batches[1][0].clone(),
            batches[2][0].clone(),
        ];
        for reply in &replies[1..=2] {
            assert!(
                size_of(reply) > MIB16,
                "a reply over 16 MiB: {}",
                size_of(reply)
            );
            assert!(size_of(reply) < MIB16 + 16 * 1024);
        }

        let event_id = logged.get_document("_id").unwrap();
        let mut reassembled = Document::new();
        for (k, fragment) in fragments.iter().enumerate() {
            let k = i32::try_from(k + 1).unwrap();
            assert_eq!(
                fragment.get_document("splitEvent").unwrap(),
                &doc! { "fragment": k, "of": 3 }
            );
            assert!(size_of(fragment) <= MIB16);
            assert_ne!(fragment.get_document("_id").unwrap(), event_id);
            let mut keys = fragment.keys();
            assert_eq!(keys.next().map(String::as_str), Some("_id"));
            assert_eq!(keys.next().map(String::as_str), Some("splitEvent"));
            for (key, value) in fragment.iter().skip(2) {
                assert!(reassembled.insert(key.clone(), value.clone()).is_none());
            }
        }
        let tokens: Vec<&Document> = fragments
            .iter()
            .map(|f| f.get_document("_id").unwrap())
            .collect();
        assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2] && tokens[0] != tokens[2]);
        assert!(fragments[0].contains_key("updateDescription"));
        assert!(fragments[1].contains_key("fullDocument"));
        assert!(fragments[2].contains_key("fullDocumentBeforeChange"));
        // Every field but _id, in the event's order.
        let mut expected = logged.clone();
        expected.remove("_id");
        assert_eq!(reassembled, expected);
        // A batch that ended on a fragment says so in its postBatchResumeToken.
        assert_eq!(&pbrt(&replies[0]), tokens[0]);
        assert_eq!(&pbrt(&replies[1]), tokens[1]);

        // Resuming after fragment 1 continues with fragment 2; after the last fragment,
        // with the next event.
        let resumed = raw(
            &mut conn,
            split_stream(doc! { "resumeAfter": tokens[0].clone() }),
        )
        .await;
        let again = batch(&resumed, "firstBatch");
        assert_eq!(again.len(), 1, "fragment 2 alone fills a batch");
        assert_eq!(again[0].as_document().unwrap(), &fragments[1]);
        let resumed = raw(
            &mut conn,
            split_stream(doc! { "resumeAfter": tokens[1].clone() }),
        )
        .await;
        assert_eq!(
            batch(&resumed, "firstBatch")[0].as_document().unwrap(),
            &fragments[2]
        );
        let resumed = raw(
            &mut conn,
            split_stream(doc! { "resumeAfter": tokens[2].clone() }),
        )
        .await;
        assert_eq!(ids(batch(&resumed, "firstBatch")), [3]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_take_a_20_mb_insert_but_its_single_field_event_cannot_be_split() {
    within(async {
        let set = start_set().await;
        let mut conn = connect(&set, 0).await;
        let split = raw(&mut conn, split_stream(doc! {})).await;
        let split_id = cursor_id(&split);
        let plain = cursor_id(&raw(&mut conn, change_stream(doc! {})).await);
        // A request of 20 MB: members accept messages up to 48,000,000 bytes.
        let big = "b".repeat(20_000_000);
        let inserted = raw(
            &mut conn,
            doc! { "insert": "orders", "documents": [{ "_id": 1, "big": big }], "$db": "shop" },
        )
        .await;
        assert_eq!(inserted.get_i32("n").unwrap(), 1);
        assert_eq!(set.events().len(), 1);
        assert_error(
            &raw(&mut conn, get_more(plain, 1000)).await,
            10334,
            "BSONObjectTooLarge",
        );
        // Only top-level fields are split: a 20 MB fullDocument alone cannot be.
        let failed = raw(&mut conn, get_more(split_id, 1000)).await;
        assert_error(&failed, 10334, "BSONObjectTooLarge");
        assert!(failed.get_str("errmsg").unwrap().contains("fullDocument"));
    })
    .await;
}
