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
